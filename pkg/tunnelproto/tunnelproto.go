// Package tunnelproto holds what the gateway and the node agent must agree on
// for the reverse tunnel.
package tunnelproto

// Path is where a node opens its tunnel on the gateway's node port. (The
// gateway routes by the Node objects' addresses and pod ranges; a node
// declares nothing.)
const Path = "/v1/tunnel"
