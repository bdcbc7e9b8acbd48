#!/usr/bin/env bash
# Builds the node image's base, a minimal Debian with the host tools the
# kubelet, runc and kube-proxy call (runc, iptables, mount, ip), offline from
# Debian's packages with debootstrap: no container registry is needed.
#   NODE_BASE (image name, default kubesplit/node-base:bookworm)  FORCE=1 rebuilds
set -euo pipefail
cd "$(dirname "$0")/.."
image=${NODE_BASE:-kubesplit/node-base:bookworm}
if [ -z "${FORCE:-}" ] && docker image inspect "$image" >/dev/null 2>&1; then exit 0; fi
command -v debootstrap >/dev/null || { echo "node-base: debootstrap is missing (make deps)" >&2; exit 1; }
root=$(mktemp -d /tmp/kubesplit-node-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
pkgs=runc,iptables,iproute2,util-linux,mount,kmod,conntrack,ca-certificates,procps
echo "node-base: debootstrap bookworm ($pkgs)"
debootstrap --variant=minbase --include="$pkgs" bookworm "$root" >/tmp/kubesplit-debootstrap.log 2>&1 || {
  tail -20 /tmp/kubesplit-debootstrap.log >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "node-base: $image $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
