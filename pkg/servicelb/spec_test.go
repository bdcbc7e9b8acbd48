package servicelb

import (
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestArgsParseRoundTrip(t *testing.T) {
	t.Parallel()
	for _, s := range []Spec{
		{Service: "default/web", ClusterIP: "10.43.0.20", HealthPort: 10200,
			Ports:        []Port{{"TCP", 10201, 80}, {"UDP", 10202, 53}},
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}},
		{Service: "ns/dns", Local: true, EndpointsFile: "/etc/servicelb/endpoints", HealthPort: 10200,
			Ports: []Port{{"TCP", 10201, 53}}},
	} {
		got, err := Parse(s.Args(), io.Discard)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s.Args(), err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, s)
		}
	}
}

func TestParseErrorsSayWhatIsWrong(t *testing.T) {
	t.Parallel()
	for args, want := range map[string]string{
		"--health-port=1 --cluster-ip=10.0.0.1":                                         "no --port",
		"--health-port=1 --cluster-ip=x --port=TCP/2/80":                                `--cluster-ip "x"`,
		"--health-port=1 --cluster-ip=10.0.0.1 --port=SCTP/2/80":                        "protocol must be TCP or UDP",
		"--health-port=1 --cluster-ip=10.0.0.1 --port=TCP/2":                            "PROTOCOL/LISTEN/PORT",
		"--health-port=1 --cluster-ip=10.0.0.1 --port=TCP/2/80 --port=TCP/2/81":         "used twice",
		"--health-port=1 --local --port=TCP/2/80":                                       "--endpoints-file",
		"--health-port=1 --cluster-ip=10.0.0.1 --port=TCP/2/80 --source-range=10.0.0.0": "not a CIDR",
	} {
		if _, err := Parse(strings.Fields(args), io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s): %v, want an error containing %q", args, err, want)
		}
	}
}

func TestAllowed(t *testing.T) {
	t.Parallel()
	open := Spec{}
	ranged := Spec{SourceRanges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	for addr, want := range map[string]bool{"192.0.2.7": true, "::ffff:192.0.2.7": true, "198.51.100.1": false} {
		a := netip.MustParseAddr(addr)
		if !open.Allowed(a) {
			t.Errorf("no ranges: %s refused", addr)
		}
		if got := ranged.Allowed(a); got != want {
			t.Errorf("192.0.2.0/24: Allowed(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestEndpointsEncodeSortedAndParse(t *testing.T) {
	t.Parallel()
	a, b := netip.MustParseAddrPort("10.42.1.9:8080"), netip.MustParseAddrPort("10.42.1.10:8080")
	e := Endpoints{10201: {a, b}, 10202: nil}
	enc := e.Encode()
	if enc != (Endpoints{10201: {b, a}}).Encode() || enc != `{"10201":["10.42.1.9:8080","10.42.1.10:8080"]}` {
		t.Errorf("Encode = %s", enc)
	}
	got, err := ParseEndpoints([]byte(enc))
	if err != nil || !got.Any() || len(got[10201]) != 2 {
		t.Errorf("ParseEndpoints(%s) = %v, %v", enc, got, err)
	}
	if (Endpoints{}).Encode() != "" || (Endpoints{1: nil}).Any() {
		t.Error("no endpoints must encode empty and have none")
	}
}
