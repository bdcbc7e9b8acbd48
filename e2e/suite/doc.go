// Package suite is kubesplit's end-to-end suite on the public testcluster
// package: each test gets its own cluster of containers from
// testcluster.Run, the way another project's CI would, and drives it with
// client-go and Docker. Tests skip only under -short; hack/test.sh runs them
// in the `suite` phase.
package suite
