#!/usr/bin/env bash
# Builds the kubesplit images offline with hack/imagebuild (Go and
# go-containerregistry: no Dockerfile, no docker build, nothing pulled) from
# the binaries hack/build.sh put in bin/OS-ARCH/, writes them as one archive
# (an OCI layout with one multi-platform index per image, which `ctr images
# import --all-platforms` reads, plus a manifest.json for `docker load`), loads
# it into Docker and prints every image's size.
#   PLATFORMS="linux/amd64 linux/arm64" (default: the host's)
#   IMAGES="apiserver node ..." limits the set; TAG defaults to the project version
#   PUSH=REGISTRY/PREFIX also pushes the multi-platform indexes
#   LOAD=0 skips docker load; OUT_ARCHIVE=FILE names the archive (parallel builds)
# Docker gets the host platform's images as kubesplit/NAME:TAG and
# kubesplit/NAME:TAG-k8sVERSION; when the host's platform is not built,
# the others' under TAG-ARCH (e.g. kubesplit/apiserver:v0.1.0-arm64).
# kubesplit/postgres (PostgreSQL for the datastore's postgres backend in test
# clusters) is built for the host's platform only, and needs nothing from
# bin/: IMAGES=postgres builds it alone; a PLATFORMS without the host's skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/versions.env
BIN=${BIN:-bin}
TAG=${TAG:-$KUBESPLIT_VERSION}
host=$(go env GOHOSTOS)/$(go env GOHOSTARCH)
PLATFORMS=${PLATFORMS:-$host}
read -r -a platforms <<<"$PLATFORMS"
if [ -n "${OUT_ARCHIVE:-}" ]; then
  out=$OUT_ARCHIVE
elif [ ${#platforms[@]} -eq 1 ]; then
  out=dist/kubesplit-images-$TAG-${platforms[0]/\//-}.tar
else
  out=dist/kubesplit-images-$TAG.tar
fi
args=(--bin-dir "$BIN" --platforms "$PLATFORMS" --images "${IMAGES:-}" --tag "$TAG" --out "$out"
  --version "$KUBESPLIT_VERSION" --kubernetes-version "$KUBERNETES_VERSION")
if [ -z "${IMAGES:-}" ] || [[ " $IMAGES " == *" node "* ]]; then
  for p in $PLATFORMS; do base=$(hack/node-base.sh --arch "${p#*/}"); done
  args+=(--node-base "${base%-*}-{arch}.tar")
fi
# the local-path helper is Debian's busybox-static (the node preloads it)
if [ -z "${IMAGES:-}" ] || [[ " $IMAGES " == *" node "* ]] || [[ " $IMAGES " == *" local-path-helper "* ]]; then
  for p in $PLATFORMS; do base=$(hack/node-base.sh --flavour busybox --arch "${p#*/}"); done
  args+=(--busybox-base "${base%-*}-{arch}.tar")
fi
if [ -z "${IMAGES:-}" ] || [[ " $IMAGES " == *" postgres "* ]]; then
  if [[ " $PLATFORMS " == *" $host "* ]]; then
    base=$(hack/node-base.sh --flavour postgres)
    args+=(--postgres-base "$base")
  fi
fi
[ -z "${PUSH:-}" ] || args+=(--push "$PUSH")
# images are dated by the last commit (reproducible: the same tree builds the same images)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)} \
go run ./hack/imagebuild "${args[@]}"
if [ "${LOAD:-1}" != 0 ]; then
  # (a reload replaces the tags of the previous build: docker says so per tag, which is noise here)
  docker load -q -i "$out" | sed '/already exists, renaming the old one/d'
  # reloading leaves the previous builds' images untagged: drop those (ours only)
  docker image prune -f --filter label=io.kubesplit.image >/dev/null
fi
