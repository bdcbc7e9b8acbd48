#!/usr/bin/env bash
# Makes a Debian base for our images offline from Debian's packages with
# debootstrap (no container registry), as a root file system tarball per
# flavour and architecture, cached: made once, then reused. Prints its path.
#   hack/node-base.sh [--flavour node|postgres|busybox] [--arch amd64|arm64]
#     (default: node, the host's architecture)  FORCE=1 remakes it
# Flavours:
#   node      the node image's base: a minimal Debian with the host tools the
#             kubelet, runc and kube-proxy call (runc, iptables, mount, ip) and
#             nft, which the agent's NetworkPolicy rules are loaded with
#   postgres  the postgres image's base: Debian's PostgreSQL 15 server and
#             client, no cluster, the postgres user renumbered to 999:999
#             (the conventional uid of PostgreSQL images, so a volume's owner
#             is the same everywhere), an empty /var/lib/postgresql/data owned
#             by it; without LLVM, perl, locales and the snakeoil key
#   busybox   the local-path helper image's whole content: Debian's
#             busybox-static alone (/bin/busybox, /bin/sh linking to it, its
#             copyright). debootstrap only downloads and verifies the packages
#             of a minimal base, for any architecture without emulation; the
#             tarball takes the one package's files.
# Another architecture is bootstrapped in two stages: debootstrap --foreign
# here, then its second stage in a chroot under qemu-user-static (hack/binfmt.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(dpkg --print-architecture)
arch=$host
flavour=node
usage="usage: hack/node-base.sh [--flavour node|postgres|busybox] [--arch amd64|arm64]"
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=${2:?--arch needs a value}; shift 2 ;;
    --arch=*) arch=${1#--arch=}; shift ;;
    --flavour) flavour=${2:?--flavour needs a value}; shift 2 ;;
    --flavour=*) flavour=${1#--flavour=}; shift ;;
    *) echo "$usage" >&2; exit 1 ;;
  esac
done
case $flavour in
  node) pkgs=runc,iptables,nftables,iproute2,util-linux,mount,kmod,conntrack,ca-certificates,procps ;;
  # postgresql-15 brings its client (psql, pg_isready) and tzdata
  postgres) pkgs=postgresql-15 ;;
  busybox) pkgs=busybox-static ;;
  *) echo "$usage" >&2; exit 1 ;;
esac
cache=${KUBESPLIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubesplit}
# the package list is part of the name: adding a package makes a new base
out=$cache/$flavour-base-bookworm-$(echo "$pkgs" | sha256sum | cut -c1-8)-$arch.tar
if [ -z "${FORCE:-}" ] && [ -s "$out" ]; then echo "$out"; exit 0; fi
command -v debootstrap >/dev/null || { echo "$flavour-base: debootstrap is missing (make deps)" >&2; exit 1; }
mkdir -p "$cache"
root=$(mktemp -d "/tmp/kubesplit-$flavour-base.XXXXXX")
log=/tmp/kubesplit-debootstrap-$flavour-$arch.log
cleanup() {
  for m in proc sys dev/pts dev; do mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"; done
  rm -rf "$root" "$out.tmp"
}
trap cleanup EXIT
start=$(date +%s)
if [ "$flavour" = busybox ]; then
  echo "$flavour-base: debootstrap --download-only bookworm $arch ($pkgs)" >&2
  debootstrap --download-only --variant=minbase --arch="$arch" --include="$pkgs" bookworm "$root/download" >"$log" 2>&1 || {
    tail -20 "$log" >&2; exit 1; }
  dpkg-deb -x "$(ls "$root"/download/var/cache/apt/archives/busybox-static_*_"$arch".deb)" "$root/pkg"
  tree=$root/busybox # what the tarball holds
  install -D -m 0755 "$root/pkg/bin/busybox" "$tree/bin/busybox"
  # Debian builds it as a standalone shell: sh runs every applet (mkdir, rm,
  # chmod, ...) by its name, with no link for it in PATH
  ln -s busybox "$tree/bin/sh"
  install -D -m 0644 "$root/pkg/usr/share/doc/busybox-static/copyright" "$tree/usr/share/doc/busybox-static/copyright"
  find "$tree" -exec touch -h -d @0 {} + # the same tarball wherever it is made
elif [ "$arch" = "$host" ]; then
  echo "$flavour-base: debootstrap bookworm $arch ($pkgs)" >&2
  debootstrap --variant=minbase --arch="$arch" --include="$pkgs" bookworm "$root" >"$log" 2>&1 || {
    tail -20 "$log" >&2; exit 1; }
else
  hack/binfmt.sh "$arch"
  echo "$flavour-base: debootstrap bookworm $arch ($pkgs), second stage under emulation" >&2
  debootstrap --foreign --variant=minbase --arch="$arch" --include="$pkgs" bookworm "$root" >"$log" 2>&1 || {
    tail -20 "$log" >&2; exit 1; }
  chroot "$root" /debootstrap/debootstrap --second-stage >>"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
fi

# renumber NAME's user and group to ID:ID, and the files they own
renumber() {
  local name=$1 id=$2 uid gid
  uid=$(awk -F: -v n="$name" '$1==n{print $3}' "$root/etc/passwd")
  gid=$(awk -F: -v n="$name" '$1==n{print $3}' "$root/etc/group")
  [ -n "$uid" ] && [ -n "$gid" ] || { echo "$flavour-base: no user or group $name" >&2; exit 1; }
  if awk -F: -v n="$name" -v i="$id" '$1!=n && $3==i{f=1} END{exit !f}' "$root/etc/passwd" "$root/etc/group"; then
    echo "$flavour-base: uid or gid $id is taken" >&2; exit 1
  fi
  [ "$uid" = "$id" ] || find "$root" -xdev -uid "$uid" -exec chown -h "$id" {} +
  [ "$gid" = "$id" ] || find "$root" -xdev -gid "$gid" -exec chgrp -h "$id" {} +
  awk -F: -v OFS=: -v n="$name" -v i="$id" '$1==n{$3=i; $4=i} {print}' "$root/etc/passwd" >"$root/etc/passwd.new"
  awk -F: -v OFS=: -v n="$name" -v i="$id" '$1==n{$3=i} {print}' "$root/etc/group" >"$root/etc/group.new"
  cat "$root/etc/passwd.new" >"$root/etc/passwd"
  cat "$root/etc/group.new" >"$root/etc/group"
  rm "$root/etc/passwd.new" "$root/etc/group.new"
}

if [ "$flavour" = postgres ]; then
  # the package's postinst made a "main" cluster: the image's entrypoint makes its own
  rm -rf "$root"/etc/postgresql/* "$root"/var/lib/postgresql/* "$root"/var/log/postgresql/*
  renumber postgres 999
  install -d -o 999 -g 999 -m 0700 "$root/var/lib/postgresql/data"
  install -d -o 999 -g 999 -m 2775 "$root/run/postgresql"
  # Left out, half the size: LLVM and Z3, which only JIT uses (the image turns
  # jit off); perl, which only postgresql-common's wrappers use (the image
  # runs the binaries of /usr/lib/postgresql/15/bin); locales, as the image's
  # clusters use the C locale. The package scripts are not run in the image.
  chroot "$root" dpkg --purge --force-depends libllvm14 libz3-4 perl perl-modules-5.36 libperl5.36 locales >>"$log" 2>&1 || {
    tail -20 "$log" >&2; exit 1; }
  rm -rf "$root"/usr/lib/postgresql/*/lib/llvmjit* "$root"/usr/lib/postgresql/*/lib/bitcode "$root"/usr/share/i18n
  # ssl-cert made a key pair: one every container of the image would share; ssl is off
  rm -f "$root"/etc/ssl/private/ssl-cert-snakeoil.key "$root"/etc/ssl/certs/ssl-cert-snakeoil.pem
fi
if [ "$flavour" = busybox ]; then
  tar -C "$tree" --numeric-owner --owner=0 --group=0 --sort=name -cf "$out.tmp" .
else
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
  tar -C "$root" --numeric-owner -cf "$out.tmp" .
fi
mv "$out.tmp" "$out"
echo "$flavour-base: $out $(du -m "$out" | cut -f1) MB in $(( $(date +%s) - start ))s" >&2
echo "$out"
