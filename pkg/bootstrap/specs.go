package bootstrap

import (
	"net"
	"os"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
)

type caSpec struct {
	name       string
	pair       layout.Pair
	dependents []string // files signed by this CA: their presence forbids a new CA
}

func caSpecs(d layout.Dir) []caSpec {
	return []caSpec{
		{"cluster", d.ClusterCA(), []string{d.APIServerServing().Cert, d.APIServerKubeletClient().Cert, d.TunnelGateway().Cert, d.APIServerEgressClient().Cert,
			d.Kubeconfig(layout.Admin), d.Kubeconfig(layout.Scheduler), d.Kubeconfig(layout.Controllers), d.Kubeconfig(layout.Addons),
			d.Kubeconfig(layout.TunnelGateway), d.RoleServing(layout.Scheduler).Cert, d.RoleServing(layout.Controllers).Cert}},
		{"front-proxy", d.FrontProxyCA(), []string{d.FrontProxyClient().Cert}},
		{"datastore", d.DatastoreCA(), []string{d.DatastoreServer().Cert, d.DatastorePeer().Cert, d.DatastoreClient().Cert}},
	}
}

type leafSpec struct {
	ca   string
	pair layout.Pair
	spec pki.Spec
}

// Identities of the roles. The apiserver's authorizers key on these names.
const (
	APIServerKubeletClientCN = "kube-apiserver-kubelet-client"
	APIServerEgressClientCN  = "kube-apiserver-egress"
	FrontProxyClientCN       = "front-proxy-client"
	DatastoreClientCN        = "kube-apiserver-datastore-client"
	AdminCN                  = "kubesplit-admin"
	SchedulerCN              = "system:kube-scheduler"
	ControllersCN            = "system:kube-controller-manager"
	// AddonsCN applies the cluster's bootstrap RBAC and addon manifests; like
	// k3s's deployer it needs full rights (it grants roles), so it is in system:masters.
	AddonsCN = "kubesplit:addon-manager"
	// TunnelGatewayCN may read Nodes: the gateway routes by their addresses
	// and pod ranges, never by what a node declares.
	TunnelGatewayCN = "kubesplit:tunnel-gateway"
)

func leafSpecs(d layout.Dir, o Options, serviceIP net.IP) []leafSpec {
	hostname, _ := os.Hostname()
	apiDNS, apiIPs := splitSANs(append([]string{"localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc." + DefaultClusterDNS, "apiserver", hostname}, o.APIServerSANs...))
	apiIPs = append(apiIPs, net.IPv4(127, 0, 0, 1), serviceIP)
	gwDNS, gwIPs := splitSANs(append([]string{"localhost", "tunnel-gateway", hostname}, o.GatewaySANs...))
	gwIPs = append(gwIPs, net.IPv4(127, 0, 0, 1))
	dsDNS, dsIPs := splitSANs(append([]string{"localhost", "datastore", hostname}, o.DatastoreSANs...))
	dsIPs = append(dsIPs, net.IPv4(127, 0, 0, 1))
	roleServing := func(role string) leafSpec {
		dns, ips := splitSANs([]string{"localhost", role, hostname})
		return leafSpec{"cluster", d.RoleServing(role), pki.Spec{CommonName: "kubesplit-" + role, DNSNames: dns,
			IPs: append(ips, net.IPv4(127, 0, 0, 1)), Usage: pki.UsageServer}}
	}
	return []leafSpec{
		{"cluster", d.APIServerServing(), pki.Spec{CommonName: "kube-apiserver", DNSNames: apiDNS, IPs: apiIPs, Usage: pki.UsageServer}},
		{"cluster", d.APIServerKubeletClient(), pki.Spec{CommonName: APIServerKubeletClientCN, Usage: pki.UsageClient}},
		{"cluster", d.APIServerEgressClient(), pki.Spec{CommonName: APIServerEgressClientCN, Usage: pki.UsageClient}},
		{"cluster", d.TunnelGateway(), pki.Spec{CommonName: "kubesplit-tunnel-gateway", DNSNames: gwDNS, IPs: gwIPs, Usage: pki.UsageServer}},
		{"front-proxy", d.FrontProxyClient(), pki.Spec{CommonName: FrontProxyClientCN, Usage: pki.UsageClient}},
		{"datastore", d.DatastoreServer(), pki.Spec{CommonName: "kubesplit-datastore", DNSNames: dsDNS, IPs: dsIPs, Usage: pki.UsageServer | pki.UsageClient}},
		{"datastore", d.DatastorePeer(), pki.Spec{CommonName: "kubesplit-datastore-peer", DNSNames: dsDNS, IPs: dsIPs, Usage: pki.UsageServer | pki.UsageClient}},
		{"datastore", d.DatastoreClient(), pki.Spec{CommonName: DatastoreClientCN, Usage: pki.UsageClient}},
		// the HTTPS ports of the scheduler and controllers: from the cluster
		// CA, so scrapers can verify them and renewal keeps them (upstream's
		// self-signed fallback in --cert-dir lasts a year and is never renewed)
		roleServing(layout.Scheduler),
		roleServing(layout.Controllers),
	}
}

func splitSANs(sans []string) (dns []string, ips []net.IP) {
	seen := map[string]bool{}
	for _, s := range sans {
		if s == "" || seen[s] {
			continue
		}
		seen[s] = true
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, s)
		}
	}
	return dns, ips
}

type kubeconfigSpec struct {
	name   string
	server string
	// serverName is the cluster's tls-server-name (empty: none)
	serverName string
	spec       pki.Spec
}

func kubeconfigSpecs(o Options) []kubeconfigSpec {
	return []kubeconfigSpec{
		{layout.Admin, o.Server, o.ServerName, pki.Spec{CommonName: AdminCN, Organization: []string{"system:masters"}, Usage: pki.UsageClient}},
		{layout.Scheduler, o.InternalServer, "", pki.Spec{CommonName: SchedulerCN, Usage: pki.UsageClient}},
		{layout.Controllers, o.InternalServer, "", pki.Spec{CommonName: ControllersCN, Usage: pki.UsageClient}},
		{layout.Addons, o.InternalServer, "", pki.Spec{CommonName: AddonsCN, Organization: []string{"system:masters"}, Usage: pki.UsageClient}},
		{layout.TunnelGateway, o.InternalServer, "", pki.Spec{CommonName: TunnelGatewayCN, Usage: pki.UsageClient}},
	}
}
