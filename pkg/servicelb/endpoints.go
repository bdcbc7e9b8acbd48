package servicelb

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// EndpointsAnnotation is the forwarder pod's annotation in which the
// controller keeps that node's ready endpoints (externalTrafficPolicy
// Local); a downward API volume shows it to the forwarder as its
// EndpointsFile, so the forwarder needs no API access of its own.
const EndpointsAnnotation = "kubesplit.io/servicelb-endpoints"

// Endpoints are, per listen port, the addresses a Local forwarder may send
// that port's traffic to.
type Endpoints map[int][]netip.AddrPort

// Encode is the annotation's value: JSON, each list sorted, so that equal
// endpoints encode equally (the controller patches only changes).
func (e Endpoints) Encode() string {
	if len(e) == 0 {
		return ""
	}
	sorted := Endpoints{}
	for port, addrs := range e {
		if len(addrs) > 0 {
			sorted[port] = slices.SortedFunc(slices.Values(addrs), func(a, b netip.AddrPort) int { return a.Compare(b) })
		}
	}
	if len(sorted) == 0 {
		return ""
	}
	b, _ := json.Marshal(sorted) // (map keys come out sorted)
	return string(b)
}

// ParseEndpoints reads what Encode wrote; empty is no endpoints.
func ParseEndpoints(b []byte) (Endpoints, error) {
	e := Endpoints{}
	if len(b) == 0 {
		return e, nil
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("endpoints %q: %w", b, err)
	}
	return e, nil
}

// Any says whether there is an endpoint for any port.
func (e Endpoints) Any() bool {
	return slices.ContainsFunc(slices.Collect(maps.Values(e)), func(a []netip.AddrPort) bool { return len(a) > 0 })
}
