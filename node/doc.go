// Package node will hold the node agent: kubelet, containerd, the VXLAN CNI,
// a service proxy and the tunnel client. It is built in the node issue.
package node
