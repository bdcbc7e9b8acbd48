#!/usr/bin/env bash
# Builds every kubesplit binary in one `go build` call, so the Kubernetes
# packages the three upstream roles share compile once.
#   OUT=dir (default bin)   GOWORK=off is honoured per module by hack/verify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/versions.env

OUT=${OUT:-bin}
k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
pkgs=(./cmd/kubesplit ./services/apiserver ./services/scheduler ./services/controllers ./services/tunnel-gateway
  ./node/cmd/kubesplit-node ./node/cmd/kubesplit-node-supervisor ./node/cmd/pause ./e2e/cmd/testapp
  # containerd v2 and its runc shim, built from their module at the version node/go.mod pins
  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
  github.com/containerd/containerd/v2/cmd/ctr
  # kubectl, for the tests and for users who have none
  k8s.io/kubernetes/cmd/kubectl)
# the standard CNI plugins the node's overlay delegates veth, bridge and IPAM to
cni=(github.com/containernetworking/plugins/plugins/main/bridge github.com/containernetworking/plugins/plugins/ipam/host-local
  github.com/containernetworking/plugins/plugins/main/loopback github.com/containernetworking/plugins/plugins/meta/portmap)
# containerd without the snapshotters that need cgo or host tools
tags="no_btrfs no_devmapper no_zfs"

ldflags="-s -w"
ldflags+=" -X github.com/kubesplit/kubesplit/pkg/version.Version=${KUBESPLIT_VERSION}"
ldflags+=" -X github.com/kubesplit/kubesplit/pkg/version.Kubernetes=${KUBERNETES_VERSION}"
# what upstream's /version and --version report (k8s sets these at release)
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=${KUBERNETES_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${k8s_minor}"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$OUT/cni"
CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$OUT/" "${pkgs[@]}"
CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "-s -w" -o "$OUT/cni/" "${cni[@]}"

# The datastore links SQLite through cgo (mattn/go-sqlite3), statically.
# kine's pure-Go SQLite variant can only run PASSIVE WAL checkpoints, which
# never catch up while the apiserver's watch poller keeps reading, so its WAL
# grew without bound (TestSQLiteCompactionBoundsFile). netgo/osusergo keep
# the static binary off glibc's NSS.
if ! command -v gcc >/dev/null || [ ! -f "/usr/lib/$(gcc -dumpmachine)/libc.a" ]; then
  echo "build: the datastore needs gcc and static glibc (Debian: apt-get install gcc libc6-dev, or 'make deps')" >&2
  exit 1
fi
CGO_ENABLED=1 go build -trimpath -tags "netgo osusergo sqlite_omit_load_extension" \
  -ldflags "$ldflags -linkmode external -extldflags -static" -o "$OUT/" ./services/datastore \
  2> >(grep -v -e "in function .*dlopen" -e "Using 'dlopen' in statically linked" -e "^# github.com/kubesplit/kubesplit/services/datastore$" >&2)
# (an unused dlopen in a kine dependency makes the static linker warn; it is never called)
