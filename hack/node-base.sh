#!/usr/bin/env bash
# Makes the node image's base, a minimal Debian with the host tools the
# kubelet, runc and kube-proxy call (runc, iptables, mount, ip), offline from
# Debian's packages with debootstrap (no container registry), as a root file
# system tarball per architecture, cached: made once, then reused. Prints its path.
#   hack/node-base.sh [--arch amd64|arm64]   (default: the host's)  FORCE=1 remakes it
# Another architecture is bootstrapped in two stages: debootstrap --foreign
# here, then its second stage in a chroot under qemu-user-static (hack/binfmt.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(dpkg --print-architecture)
arch=$host
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    --arch=*) arch=${1#--arch=}; shift ;;
    *) echo "usage: hack/node-base.sh [--arch amd64|arm64]" >&2; exit 1 ;;
  esac
done
cache=${KUBESPLIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesplit}
out=$cache/node-base-bookworm-$arch.tar
if [ -z "${FORCE:-}" ] && [ -s "$out" ]; then echo "$out"; exit 0; fi
command -v debootstrap >/dev/null || { echo "node-base: debootstrap is missing (make deps)" >&2; exit 1; }
mkdir -p "$cache"
root=$(mktemp -d /tmp/kubesplit-node-base.XXXXXX)
log=/tmp/kubesplit-debootstrap-$arch.log
cleanup() {
  for m in proc sys dev/pts dev; do mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"; done
  rm -rf "$root" "$out.tmp"
}
trap cleanup EXIT
pkgs=runc,iptables,iproute2,util-linux,mount,kmod,conntrack,ca-certificates,procps
start=$(date +%s)
if [ "$arch" = "$host" ]; then
  echo "node-base: debootstrap bookworm $arch ($pkgs)" >&2
  debootstrap --variant=minbase --arch="$arch" --include="$pkgs" bookworm "$root" >"$log" 2>&1 || {
    tail -20 "$log" >&2; exit 1; }
else
  hack/binfmt.sh "$arch"
  echo "node-base: debootstrap bookworm $arch ($pkgs), second stage under emulation" >&2
  debootstrap --foreign --variant=minbase --arch="$arch" --include="$pkgs" bookworm "$root" >"$log" 2>&1 || {
    tail -20 "$log" >&2; exit 1; }
  chroot "$root" /debootstrap/debootstrap --second-stage >>"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
tar -C "$root" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "node-base: $out $(du -m "$out" | cut -f1) MB in $(( $(date +%s) - start ))s" >&2
echo "$out"
