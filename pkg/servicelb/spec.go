// Package servicelb is ServiceLB's forwarder, the small program each node
// runs (one pod per LoadBalancer Service, in a DaemonSet the controllers'
// servicelb controller renders) to carry the Service's ports from the
// node's address to the Service, and the contract between the two: the
// Spec the controller renders into the pod's arguments and the forwarder
// parses back, and the endpoints file of externalTrafficPolicy Local.
//
// The forwarder is a userspace TCP and UDP proxy. Its pod publishes each
// port with hostPort, which the node's portmap CNI plugin turns into a DNAT
// from the node's addresses to the pod: the client's source address reaches
// the forwarder unchanged, so loadBalancerSourceRanges are checked here,
// and the pod needs no capability, no root and no API credentials (the
// klipper way, iptables inside the pod, needs NET_ADMIN and an iptables
// binary; a userspace proxy is portable and keeps the image one static
// binary).
package servicelb

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Spec is what one forwarder does.
type Spec struct {
	// Service is namespace/name, for logs.
	Service string
	// ClusterIP is where the ports go (ClusterIP:Port) unless Local.
	ClusterIP string
	// Local (externalTrafficPolicy: Local): forward only to this node's
	// ready endpoints, listed in EndpointsFile; with none, refuse.
	Local         bool
	EndpointsFile string
	// SourceRanges are the client prefixes allowed in
	// (loadBalancerSourceRanges); empty allows every source.
	SourceRanges []netip.Prefix
	Ports        []Port
	// HealthPort serves /healthz and /readyz (ready: every port listens
	// and, when Local, the node has an endpoint for each).
	HealthPort int
}

// Port is one Service port.
type Port struct {
	Protocol string // "TCP" or "UDP"
	Listen   int    // the forwarder's port in its pod; the hostPort maps to it
	Port     int    // the Service port: ClusterIP:Port
}

// String is the flag form, PROTOCOL/LISTEN/PORT.
func (p Port) String() string { return fmt.Sprintf("%s/%d/%d", p.Protocol, p.Listen, p.Port) }

// Args renders the forwarder's command line.
func (s Spec) Args() []string {
	a := []string{"--service=" + s.Service, "--health-port=" + strconv.Itoa(s.HealthPort)}
	if s.Local {
		a = append(a, "--local", "--endpoints-file="+s.EndpointsFile)
	} else {
		a = append(a, "--cluster-ip="+s.ClusterIP)
	}
	for _, p := range s.Ports {
		a = append(a, "--port="+p.String())
	}
	for _, r := range s.SourceRanges {
		a = append(a, "--source-range="+r.String())
	}
	return a
}

// Parse reads a command line made by Args.
func Parse(args []string, stderr io.Writer) (Spec, error) {
	var s Spec
	fs := flag.NewFlagSet("servicelb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.Service, "service", "", "the Service, namespace/name (for logs)")
	fs.StringVar(&s.ClusterIP, "cluster-ip", "", "the Service's cluster IP, where the ports go")
	fs.BoolVar(&s.Local, "local", false, "externalTrafficPolicy Local: forward to this node's endpoints only (--endpoints-file)")
	fs.StringVar(&s.EndpointsFile, "endpoints-file", "", "with --local: this node's ready endpoints per listen port (JSON), kept current by the controller")
	fs.IntVar(&s.HealthPort, "health-port", 0, "port of /healthz and /readyz")
	fs.Func("port", "PROTOCOL/LISTEN/PORT: listen on LISTEN, forward to the Service's PORT (repeatable)", func(v string) error {
		p, err := parsePort(v)
		if err == nil {
			s.Ports = append(s.Ports, p)
		}
		return err
	})
	fs.Func("source-range", "CIDR allowed to connect (repeatable; none: every source)", func(v string) error {
		r, err := netip.ParsePrefix(v)
		if err != nil {
			return fmt.Errorf("%q is not a CIDR (like 192.0.2.0/24)", v)
		}
		s.SourceRanges = append(s.SourceRanges, r.Masked())
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return s, s.validate()
}

func parsePort(v string) (Port, error) {
	f := strings.Split(v, "/")
	if len(f) != 3 {
		return Port{}, fmt.Errorf("--port %q: want PROTOCOL/LISTEN/PORT, like TCP/10001/80", v)
	}
	p := Port{Protocol: f[0]}
	var err1, err2 error
	p.Listen, err1 = strconv.Atoi(f[1])
	p.Port, err2 = strconv.Atoi(f[2])
	if err := errors.Join(err1, err2); err != nil {
		return Port{}, fmt.Errorf("--port %q: ports must be numbers: %w", v, err)
	}
	return p, nil
}

func (s Spec) validate() error {
	var errs []error
	if len(s.Ports) == 0 {
		errs = append(errs, errors.New("no --port given: nothing to forward"))
	}
	if s.Local && s.EndpointsFile == "" {
		errs = append(errs, errors.New("--local needs --endpoints-file"))
	}
	if !s.Local {
		if _, err := netip.ParseAddr(s.ClusterIP); err != nil {
			errs = append(errs, fmt.Errorf("--cluster-ip %q is not an IP address", s.ClusterIP))
		}
	}
	if s.HealthPort < 1 || s.HealthPort > 65535 {
		errs = append(errs, fmt.Errorf("--health-port %d is not a port", s.HealthPort))
	}
	seen := map[string]bool{}
	for _, p := range s.Ports {
		if p.Protocol != "TCP" && p.Protocol != "UDP" {
			errs = append(errs, fmt.Errorf("--port %s: protocol must be TCP or UDP", p))
		}
		if p.Listen < 1 || p.Listen > 65535 || p.Port < 1 || p.Port > 65535 {
			errs = append(errs, fmt.Errorf("--port %s: ports must be 1-65535", p))
		}
		k := p.Protocol + "/" + strconv.Itoa(p.Listen)
		if seen[k] || (p.Listen == s.HealthPort && p.Protocol == "TCP") {
			errs = append(errs, fmt.Errorf("--port %s: listen port used twice", p))
		}
		seen[k] = true
	}
	return errors.Join(errs...)
}

// Allowed says whether a client at addr may connect.
func (s Spec) Allowed(addr netip.Addr) bool {
	if len(s.SourceRanges) == 0 {
		return true
	}
	addr = addr.Unmap()
	return slices.ContainsFunc(s.SourceRanges, func(r netip.Prefix) bool { return r.Contains(addr) })
}
