#!/usr/bin/env bash
# Builds the kubesplit images from the binaries in bin/ (hack/build.sh),
# offline: the control-plane roles, pause and testapp are FROM scratch, the
# node image sits on the debootstrap'd base from hack/node-base.sh.
#   IMAGES="apiserver node ..." limits the set; TAG defaults to the project version.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/versions.env
BIN=${BIN:-bin}
TAG=${TAG:-$KUBESPLIT_VERSION}
all="datastore apiserver scheduler controllers tunnel-gateway pause testapp node"
images=${IMAGES:-$all}
stage=$(mktemp -d /tmp/kubesplit-images.XXXXXX)
trap 'rm -rf "$stage"' EXIT

build() { # image context-dir
  local log; log=$(mktemp)
  # (the legacy builder's deprecation notice is noise here: print the log only on failure)
  docker build -q -f "images/$1.Dockerfile" -t "kubesplit/$1:$TAG" \
    -t "kubesplit/$1:$TAG-k8s${KUBERNETES_VERSION#v}" "$2" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
  rm -f "$log"
  echo "images: kubesplit/$1:$TAG $(docker image inspect -f '{{.Size}}' "kubesplit/$1:$TAG" | awk '{printf "%.1f MB", $1/1e6}')"
}
stage_bins() { # dir bins...
  local d=$1; shift; mkdir -p "$d"
  for b in "$@"; do ln -f "$BIN/$b" "$d/$b" 2>/dev/null || cp "$BIN/$b" "$d/$b"; done
}

for img in $images; do
  case $img in
    datastore|apiserver|scheduler|controllers|tunnel-gateway|pause|testapp)
      stage_bins "$stage/$img" "$img"; build "$img" "$stage/$img" ;;
    node)
      bash hack/node-base.sh
      [[ " $images " == *" pause "* ]] || { stage_bins "$stage/pause" pause; build pause "$stage/pause"; }
      d=$stage/node
      stage_bins "$d" kubesplit-node kubesplit-node-supervisor containerd containerd-shim-runc-v2 ctr
      mkdir -p "$d/cni" "$d/images"
      for p in "$BIN"/cni/*; do ln -f "$p" "$d/cni/" 2>/dev/null || cp "$p" "$d/cni/"; done
      docker save "kubesplit/pause:$TAG" -o "$d/images/pause.tar"
      build node "$d" ;;
    *) echo "images: unknown image $img (one of: $all)" >&2; exit 1 ;;
  esac
done
# rebuilding leaves the previous builds' images untagged: drop those (ours only)
docker image prune -f --filter label=io.kubesplit.image >/dev/null
