// Package layout names every file of a kubesplit data directory. It is the
// one place that knows where init writes things and where each role reads
// them, so the compose, static-pod and Helm wirings all agree.
package layout

import "path/filepath"

// Dir is the root of a data directory (./.kubesplit for `make run`).
type Dir string

func (d Dir) path(elem ...string) string {
	return filepath.Join(append([]string{string(d)}, elem...)...)
}

// PKI returns the folder holding certificates and keys.
func (d Dir) PKI() string { return d.path("pki") }

// Pair is the certificate and key file of one identity.
type Pair struct{ Cert, Key string }

func (d Dir) pair(name string) Pair {
	return Pair{Cert: d.path("pki", name+".crt"), Key: d.path("pki", name+".key")}
}

// Certificate authorities.
func (d Dir) ClusterCA() Pair    { return d.pair("ca") }
func (d Dir) FrontProxyCA() Pair { return d.pair("front-proxy-ca") }
func (d Dir) DatastoreCA() Pair  { return d.pair("datastore-ca") }

// Datastore identities.
func (d Dir) DatastoreServer() Pair { return d.pair("datastore-server") }
func (d Dir) DatastorePeer() Pair   { return d.pair("datastore-peer") }

// DatastoreClient is the apiserver's (and the operator's snapshot tool's)
// client certificate for the datastore.
func (d Dir) DatastoreClient() Pair { return d.pair("datastore-client") }

// Apiserver identities.
func (d Dir) APIServerServing() Pair       { return d.pair("apiserver") }
func (d Dir) APIServerKubeletClient() Pair { return d.pair("apiserver-kubelet-client") }
func (d Dir) FrontProxyClient() Pair       { return d.pair("front-proxy-client") }

// APIServerEgressClient is the apiserver's client identity at the gateway's
// egress (HTTP CONNECT) endpoint.
func (d Dir) APIServerEgressClient() Pair { return d.pair("apiserver-egress-client") }

// RoleServing is the serving certificate of the scheduler's or the
// controllers' HTTPS port (health, metrics), issued by the cluster CA.
func (d Dir) RoleServing(role string) Pair { return d.pair(role + "-serving") }

// TunnelGateway is the gateway's serving identity for nodes.
func (d Dir) TunnelGateway() Pair { return d.pair("tunnel-gateway") }

// ServiceAccountKey is the token signing key; ServiceAccountPub its public half.
func (d Dir) ServiceAccountKey() string { return d.path("pki", "sa.key") }
func (d Dir) ServiceAccountPub() string { return d.path("pki", "sa.pub") }

// KubeconfigClient is the client certificate a role's kubeconfig (NAME.kubeconfig)
// refers to; client-go reloads it when it is renewed.
func (d Dir) KubeconfigClient(name string) Pair { return d.pair(name + "-kubeconfig") }

// Kubeconfig is the kubeconfig of a client identity (admin, scheduler, controllers).
func (d Dir) Kubeconfig(name string) string { return d.path(name + ".kubeconfig") }

// Config files for the apiserver.
func (d Dir) EncryptionConfig() string     { return d.path("config", "encryption-config.yaml") }
func (d Dir) AuthenticationConfig() string { return d.path("config", "authentication-config.yaml") }
func (d Dir) AuditPolicy() string          { return d.path("config", "audit-policy.yaml") }
func (d Dir) AuditLog() string             { return d.path("logs", "audit.log") }

// Datastore state.
func (d Dir) DatastoreData() string { return d.path("datastore") }
func (d Dir) SQLiteFile() string    { return d.path("datastore", "state.db") }
func (d Dir) EtcdData() string      { return d.path("datastore", "etcd") }

// Snapshots holds the datastore snapshots that kubesplit snapshot save and a
// box upgrade take, and that kubesplit snapshot restore finds by name.
func (d Dir) Snapshots() string { return d.path("snapshots") }

// NodeToken is the cluster's default join token (init --node-token); the
// controllers keep its bootstrap-token Secret in the cluster.
func (d Dir) NodeToken() string { return d.path("config", "node-token") }

// Manifests is the directory the controllers' addon deployer applies and
// keeps in sync (bundled addons such as CoreDNS are written there too).
func (d Dir) Manifests() string { return d.path("manifests") }

// Role state (scheduler/controllers self-signed serving certs and the like).
func (d Dir) RoleState(role string) string { return d.path("state", role) }

// Kubeconfig identities that init creates.
const (
	Admin       = "admin"
	Scheduler   = "scheduler"
	Controllers = "controllers"
	// Addons is the controllers service's addon and RBAC deployer identity.
	Addons = "addons"
	// TunnelGateway is the gateway's identity for its Node watch (which
	// node owns which addresses and pod range).
	TunnelGateway = "tunnel-gateway"
)
