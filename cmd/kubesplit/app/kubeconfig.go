package app

import (
	"archive/tar"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/roles"
)

type kubeconfigOptions struct {
	dataDir, kubeconfig, cluster, server, output string
	user                                         string
	groups                                       []string
	validity                                     time.Duration
}

func kubeconfigCommand() *cobra.Command {
	var o kubeconfigOptions
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the admin kubeconfig, or make one for a new user with a client certificate",
		Long: `Without --user, kubeconfig prints the cluster's admin kubeconfig. With --user it
makes a key here, has the cluster sign a client certificate for that user and its
--group(s) (a CertificateSigningRequest for kubernetes.io/kube-apiserver-client,
approved with the admin's rights and deleted once issued: the key never leaves
this machine) and prints a kubeconfig with both. What the user may do is up to
RBAC: bind a Role or ClusterRole to the user or one of its groups.

The admin credentials come from --data-dir (a box, 'make run'), --kubeconfig, or
a Docker-wired cluster (--cluster, or the only one on the Docker host; its server
address is the apiserver's published port). Without any of them, the default data
directory is tried, then the Docker host.`,
		Example: `  kubesplit kubeconfig > ~/.kube/config
  kubesplit kubeconfig --cluster kubesplit --server https://10.0.0.5:6443 -o admin.kubeconfig
  kubesplit kubeconfig --user dev --group viewers -o dev.kubeconfig
  kubectl create clusterrolebinding viewers --clusterrole view --group viewers`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			return runKubeconfig(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "", "read the admin kubeconfig from this data directory")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "use this admin kubeconfig")
	f.StringVar(&o.cluster, "cluster", "", "a Docker-wired cluster (compose project name or testcluster ID)")
	f.StringVar(&o.server, "server", "", "the API address written into the kubeconfig (default: the one the cluster gives)")
	f.StringVarP(&o.output, "output", "o", "", "write to this file (mode 0600) instead of standard output")
	f.StringVar(&o.user, "user", "", "make a kubeconfig for this user name instead of the admin's")
	f.StringSliceVar(&o.groups, "group", nil, "with --user: a group of the user (repeat or comma-separate)")
	f.DurationVar(&o.validity, "validity", 365*24*time.Hour, "with --user: how long the certificate lasts (the cluster caps it at its signing duration, one year by default)")
	return cmd
}

func runKubeconfig(ctx context.Context, stdout, stderr io.Writer, o kubeconfigOptions) error {
	if o.user == "" && (len(o.groups) > 0 || o.validity != 365*24*time.Hour) {
		return errors.New("--group and --validity go with --user NAME")
	}
	if o.user != "" && o.validity < 10*time.Minute {
		return fmt.Errorf("--validity %v: a certificate lasts at least 10m", o.validity)
	}
	admin, err := adminKubeconfig(ctx, o)
	if err != nil {
		return err
	}
	ctxName := admin.CurrentContext
	kctx := admin.Contexts[ctxName]
	if kctx == nil || admin.Clusters[kctx.Cluster] == nil {
		return fmt.Errorf("the admin kubeconfig has no usable current context %q", ctxName)
	}
	cl := admin.Clusters[kctx.Cluster]
	if o.server != "" {
		if !strings.HasPrefix(o.server, "https://") {
			return fmt.Errorf("--server %s: give an https:// URL", o.server)
		}
		cl.Server = o.server
	}
	out := admin
	if o.user != "" {
		cfg, err := clientcmd.NewDefaultClientConfig(*admin, nil).ClientConfig()
		if err != nil {
			return err
		}
		cfg.Timeout = 30 * time.Second
		api, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		cert, key, err := issueClientCert(ctx, api, o.user, o.groups, o.validity)
		if err != nil {
			return err
		}
		if c, err := x509.ParseCertificate(cert); err == nil {
			fmt.Fprintf(stderr, "kubeconfig: user %s, groups [%s], certificate valid until %s\n",
				o.user, strings.Join(o.groups, ", "), c.NotAfter.UTC().Format(time.RFC3339))
		}
		name := o.user + "@" + kctx.Cluster
		out = clientcmdapi.NewConfig()
		out.Clusters[kctx.Cluster] = cl
		out.AuthInfos[o.user] = &clientcmdapi.AuthInfo{
			ClientCertificateData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}),
			ClientKeyData:         key,
		}
		out.Contexts[name] = &clientcmdapi.Context{Cluster: kctx.Cluster, AuthInfo: o.user}
		out.CurrentContext = name
	}
	data, err := clientcmd.Write(*out)
	if err != nil {
		return err
	}
	if o.output == "" {
		_, err = stdout.Write(data)
		return err
	}
	tmp := o.output + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, o.output); err != nil {
		os.Remove(tmp)
		return err
	}
	fmt.Fprintf(stderr, "kubeconfig: wrote %s\n", o.output)
	return nil
}

// adminKubeconfig finds the admin credentials (see the command's help).
func adminKubeconfig(ctx context.Context, o kubeconfigOptions) (*clientcmdapi.Config, error) {
	switch {
	case o.dataDir != "":
		return loadKubeconfig(layout.Dir(o.dataDir).Kubeconfig(layout.Admin), "--data-dir")
	case o.kubeconfig != "":
		return loadKubeconfig(o.kubeconfig, "--kubeconfig")
	case o.cluster != "":
		return dockerAdminKubeconfig(ctx, o.cluster)
	}
	if p := layout.Dir(defaultDataDir()).Kubeconfig(layout.Admin); fileExists(p) {
		return loadKubeconfig(p, "the default data directory")
	}
	cfg, err := dockerAdminKubeconfig(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("%w; or pass --data-dir or --kubeconfig", err)
	}
	return cfg, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func loadKubeconfig(path, from string) (*clientcmdapi.Config, error) {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return cfg, nil
}

// dockerAdminKubeconfig reads the admin kubeconfig out of a Docker-wired
// cluster's apiserver (or box) container, pointed at its published port.
func dockerAdminKubeconfig(ctx context.Context, name string) (*clientcmdapi.Config, error) {
	c, err := findCluster(ctx, name)
	if err != nil {
		return nil, err
	}
	var m member
	if as := c.role(roles.APIServer); len(as) > 0 {
		m = as[0]
	} else if bs := c.role(roles.Box); len(bs) > 0 {
		m = bs[0]
	} else {
		return nil, fmt.Errorf("cluster %s has no apiserver container", c.Name)
	}
	dataDir := m.flag("data-dir")
	if dataDir == "" {
		dataDir = roles.DataDir
	}
	raw, err := dockerCmd(ctx, nil, "cp", m.ID+":"+layout.Dir(dataDir).Kubeconfig(layout.Admin), "-")
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(strings.NewReader(raw))
	if _, err := tr.Next(); err != nil {
		return nil, fmt.Errorf("reading the admin kubeconfig from %s: %w", m.Name, err)
	}
	data, err := io.ReadAll(tr)
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("the admin kubeconfig of %s: %w", m.Name, err)
	}
	if hostPort := m.Ports[fmt.Sprintf("%d/tcp", roles.DefaultPorts().APIServer)]; hostPort != "" {
		for _, cl := range cfg.Clusters {
			cl.Server = "https://" + hostPort
		}
	}
	return cfg, nil
}

// issueClientCert has the cluster sign a client certificate for a new key:
// a CSR to the kube-apiserver-client signer, approved with the caller's
// rights, read back and deleted. It returns the DER certificate and the
// PEM key.
func issueClientCert(ctx context.Context, api kubernetes.Interface, user string, groups []string, validity time.Duration) ([]byte, []byte, error) {
	if strings.ContainsAny(user, "/\n") || strings.TrimSpace(user) != user {
		return nil, nil, fmt.Errorf("--user %q: a user name without slashes or surrounding spaces", user)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: user, Organization: groups},
	}, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	csrs := api.CertificatesV1().CertificateSigningRequests()
	csr, err := csrs.Create(ctx, &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "kubesplit-kubeconfig-" + safeName(user) + "-"},
		Spec: certv1.CertificateSigningRequestSpec{
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName:        certv1.KubeAPIServerClientSignerName,
			Usages:            []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageClientAuth},
			ExpirationSeconds: ptr.To(int32(validity / time.Second)),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("asking the cluster to sign: %w", err)
	}
	defer func() { _ = csrs.Delete(context.WithoutCancel(ctx), csr.Name, metav1.DeleteOptions{}) }()
	csr.Status.Conditions = append(csr.Status.Conditions, certv1.CertificateSigningRequestCondition{
		Type: certv1.CertificateApproved, Status: corev1.ConditionTrue,
		Reason: "KubesplitKubeconfig", Message: "approved by kubesplit kubeconfig for its caller",
	})
	if _, err := csrs.UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
		return nil, nil, fmt.Errorf("approving %s: %w", csr.Name, err)
	}
	var cert []byte
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := csrs.Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range got.Status.Conditions {
			if c.Type == certv1.CertificateFailed || c.Type == certv1.CertificateDenied {
				return false, fmt.Errorf("the cluster did not sign %s: %s %s", csr.Name, c.Reason, c.Message)
			}
		}
		if len(got.Status.Certificate) == 0 {
			return false, nil
		}
		b, _ := pem.Decode(got.Status.Certificate)
		if b == nil {
			return false, fmt.Errorf("%s: the issued certificate is not PEM", csr.Name)
		}
		cert = b.Bytes
		return true, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("waiting for the certificate (the controllers sign it): %w", err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// safeName makes a user name usable inside an object name.
func safeName(s string) string {
	s = strings.ToLower(unsafeName.ReplaceAllString(s, "-"))
	s = strings.Map(func(r rune) rune {
		if r == '_' || r == '.' {
			return '-'
		}
		return r
	}, s)
	s = strings.Trim(s, "-")
	if len(s) > 40 {
		s = s[:40]
	}
	if s == "" {
		s = "user"
	}
	return s
}
