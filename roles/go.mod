// The one description of each control-plane role (image, flags, ports,
// health, data volume) that every wiring renders: compose, testcluster,
// `kubesplit run`, the static pods of one box and the Helm chart. Its own
// module without dependencies, so that testcluster's users import it without
// the Kubernetes dependency tree.
module github.com/kubesplit/kubesplit/roles

go 1.26.8
