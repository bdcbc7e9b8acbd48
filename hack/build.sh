#!/usr/bin/env bash
# Builds the kubesplit binaries: per platform one `go build` call, so the
# Kubernetes packages the three upstream roles share compile once.
#   OUT=dir (default bin)   GOWORK=off is honoured per module by hack/verify.sh
#   PLATFORMS="linux/amd64 linux/arm64" (default: the host's). The host's
#     binaries go into OUT/ as always, another platform's into OUT/linux-ARCH/;
#     OUT/linux-HOSTARCH is a link to OUT/, so OUT/OS-ARCH/ holds every
#     platform's binaries (what hack/imagebuild reads).
#   IMAGES="apiserver datastore" builds only what those images need (default:
#     everything, and kubectl for the host). A cold arm64 build of everything
#     takes about 20 minutes on 2 cores; CI builds only what its test needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/versions.env

# The compiler collects garbage less often with more room: about 7% less CPU
# for a cold build (k8s.io/client-go/kubernetes, measured with two empty
# caches), at up to about 1.5x the compiler's memory. Only for these builds.
export GOGC=${GOGC:-400}

OUT=${OUT:-bin}
host=$(go env GOHOSTOS)/$(go env GOHOSTARCH)
PLATFORMS=${PLATFORMS:-$host}
all_images="datastore apiserver scheduler controllers tunnel-gateway kubesplit coredns metrics-server local-path-provisioner local-path-helper servicelb traefik pause testapp node"
for i in ${IMAGES:-}; do
  [[ " $all_images " == *" $i "* ]] || { echo "build: unknown image $i (one of: $all_images)" >&2; exit 1; }
done
want() { # image: is it to be built?
  [ -z "${IMAGES:-}" ] || [[ " $IMAGES " == *" $1 "* ]]
}

k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
ldflags="-s -w"
ldflags+=" -X github.com/kubesplit/kubesplit/pkg/version.Version=${KUBESPLIT_VERSION}"
ldflags+=" -X github.com/kubesplit/kubesplit/pkg/version.Kubernetes=${KUBERNETES_VERSION}"
# what upstream's /version and --version report (k8s sets these at release)
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=${KUBERNETES_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${k8s_minor}"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
# containerd without the snapshotters that need cgo or host tools
tags="no_btrfs no_devmapper no_zfs"

pkgs=()
{ want kubesplit || want node; } && pkgs+=(./cmd/kubesplit)   # the node image carries the CLI for boxes
for r in apiserver scheduler controllers tunnel-gateway; do want $r && pkgs+=(./services/$r); done
# the health check inside the five role images (compose healthchecks)
for r in datastore apiserver scheduler controllers tunnel-gateway; do want $r && { pkgs+=(./cmd/kubesplit-probe); break; }; done
{ want pause || want node; } && pkgs+=(./node/cmd/pause)   # the node image preloads pause
{ want servicelb || want node; } && pkgs+=(./cmd/servicelb)   # and ServiceLB's forwarder
want testapp && pkgs+=(./e2e/cmd/testapp)
want node && pkgs+=(./node/cmd/kubesplit-node ./node/cmd/kubesplit-node-supervisor
  # containerd v2 and its runc shim, built from their module at the version node/go.mod pins
  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
  github.com/containerd/containerd/v2/cmd/ctr)
# the standard CNI plugins the node's overlay delegates veth, bridge and IPAM to
cni=(github.com/containernetworking/plugins/plugins/main/bridge github.com/containernetworking/plugins/plugins/ipam/host-local
  github.com/containernetworking/plugins/plugins/main/loopback github.com/containernetworking/plugins/plugins/meta/portmap)

# cross C toolchains (Debian's gcc-ARCH-linux-gnu and libc6-dev-ARCH-cross) for the datastore
triple() { case $1 in amd64) echo x86_64-linux-gnu ;; arm64) echo aarch64-linux-gnu ;; *) echo "build: no C toolchain known for $1" >&2; return 1 ;; esac; }

# The datastore links SQLite through cgo (mattn/go-sqlite3), statically.
# kine's pure-Go SQLite variant can only run PASSIVE WAL checkpoints, which
# never catch up while the apiserver's watch poller keeps reading, so its WAL
# grew without bound (TestSQLiteCompactionBoundsFile). netgo/osusergo keep
# the static binary off glibc's NSS.
build_datastore() { # os arch out
  local cc libc
  if [ "$1/$2" = "$host" ]; then
    cc=gcc libc=/usr/lib/$(gcc -dumpmachine 2>/dev/null)/libc.a
    command -v gcc >/dev/null && [ -f "$libc" ] || {
      echo "build: the datastore needs gcc and static glibc (Debian: apt-get install gcc libc6-dev, or 'make deps')" >&2; return 1; }
  else
    local t; t=$(triple "$2"); cc=$t-gcc libc=/usr/$t/lib/libc.a
    command -v "$cc" >/dev/null && [ -f "$libc" ] || {
      echo "build: the $2 datastore needs $cc and its static glibc (Debian: apt-get install gcc-${t//_/-} libc6-dev-$2-cross, or 'make deps')" >&2; return 1; }
  fi
  # (an unused dlopen in a kine dependency makes the static linker warn; it is never called)
  GOOS=$1 GOARCH=$2 CC=$cc CGO_ENABLED=1 go build -trimpath -tags "netgo osusergo sqlite_omit_load_extension" \
    -ldflags "$ldflags -linkmode external -extldflags -static" -o "$3/" ./services/datastore \
    2> >(grep -v -e "in function .*dlopen" -e "Using 'dlopen' in statically linked" -e "^# github.com/kubesplit/kubesplit/services/datastore$" >&2)
}

for platform in $PLATFORMS; do
  os=${platform%/*} arch=${platform#*/}
  if [ "$platform" = "$host" ]; then out=$OUT; else out=$OUT/$os-$arch; fi
  p=("${pkgs[@]}")
  # kubectl, for the tests and for users who have none
  [ -z "${IMAGES:-}" ] && [ "$platform" = "$host" ] && p+=(k8s.io/kubernetes/cmd/kubectl)
  mkdir -p "$out"
  start=$(date +%s)
  if [ ${#p[@]} -gt 0 ]; then
    GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out/" "${p[@]}"
  fi
  if want node; then
    mkdir -p "$out/cni"
    GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "-s -w" -o "$out/cni/" "${cni[@]}"
  fi
  # CoreDNS, the cluster DNS, from its own module: addons/coredns is not in
  # go.work, so CoreDNS's dependency versions never reach the roles' build.
  if want coredns || want node; then   # the node image preloads CoreDNS too
    GOWORK=off GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -C addons/coredns -trimpath \
      -ldflags "-s -w -X main.kubesplitVersion=${KUBESPLIT_VERSION}" -o "$(cd "$out" && pwd)/coredns" .
  fi
  # metrics-server, likewise from its own module (addons/metrics-server:
  # upstream's command plus --kubelet-via-apiserver); -X sets the version it
  # reports, as upstream's Makefile does.
  if want metrics-server || want node; then   # preloaded on nodes
    ms=sigs.k8s.io/metrics-server
    GOWORK=off GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -C addons/metrics-server -trimpath \
      -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$(GOWORK=off go list -C addons/metrics-server -m -f '{{.Version}}' $ms)" \
      -o "$(cd "$out" && pwd)/metrics-server" .
  fi
  # The local-storage addon's provisioner, likewise from its own module
  # (addons/local-path), where it is a tool: its main is its module root.
  # (local-path-helper is Debian's busybox-static: nothing to build.)
  if want local-path-provisioner || want node; then   # preloaded on nodes
    lpp=github.com/rancher/local-path-provisioner
    GOWORK=off GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -C addons/local-path -trimpath \
      -ldflags "-s -w -X main.VERSION=$(GOWORK=off go list -C addons/local-path -m -f '{{.Version}}' $lpp)" \
      -o "$(cd "$out" && pwd)/local-path-provisioner" $lpp
  fi
  # Traefik, the bundled ingress controller, likewise from its own module
  # (addons/traefik: upstream's command with its replace lines, about 400
  # modules of its own); -X sets the version it reports.
  if want traefik || want node; then   # preloaded on nodes
    tr=github.com/traefik/traefik/v3
    GOWORK=off GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -C addons/traefik -trimpath \
      -ldflags "-s -w -X $tr/pkg/version.Version=$(GOWORK=off go list -C addons/traefik -m -f '{{.Version}}' $tr)" \
      -o "$(cd "$out" && pwd)/traefik" $tr/cmd/traefik
  fi
  want datastore && build_datastore "$os" "$arch" "$out"
  [ "$platform" = "$host" ] || echo "build: $platform binaries in $out/ ($(( $(date +%s) - start ))s)"
done
# every platform's binaries at OUT/OS-ARCH/, the host's included
ln -sfn . "$OUT/${host/\//-}"
