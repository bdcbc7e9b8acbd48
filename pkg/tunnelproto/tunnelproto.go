// Package tunnelproto holds what the gateway and the node agent must agree on
// for the reverse tunnel.
package tunnelproto

const (
	// Path is where a node opens its tunnel on the gateway's node port.
	Path = "/v1/tunnel"
	// AddressesHeader carries the node's IPs (comma separated) when it opens
	// its tunnel; the apiserver CONNECTs to those.
	AddressesHeader = "X-Kubesplit-Node-Addresses"
)
