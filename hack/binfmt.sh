#!/usr/bin/env bash
# Lets this machine run another architecture's Linux binaries through
# Debian's qemu-user-static: binfmt_misc mounted and the qemu handler for
# ARCH registered and enabled with the F flag (the kernel opens the emulator
# at registration, so it also works in containers and chroots that do not
# contain it). Nothing to do for the host's own architecture.
#   hack/binfmt.sh arm64|amd64        (as root; `make deps` installs the packages)
set -euo pipefail
arch=${1:?usage: hack/binfmt.sh arm64|amd64}
case $arch in
  arm64) q=aarch64 ;;
  amd64) q=x86_64 ;;
  *) echo "binfmt: unsupported architecture $arch (arm64, amd64)" >&2; exit 1 ;;
esac
[ "$(dpkg --print-architecture 2>/dev/null || uname -m)" = "$arch" ] && exit 0
mnt=/proc/sys/fs/binfmt_misc
entry=$mnt/qemu-$q
ready() { [ -f "$entry" ] && grep -qx enabled "$entry" && grep -q '^flags:.*F' "$entry"; }
ready && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "binfmt: $arch binaries cannot run here (qemu-$q is not registered with binfmt_misc); as root: hack/binfmt.sh $arch" >&2
  exit 1
fi
[ -x "/usr/bin/qemu-$q-static" ] && command -v update-binfmts >/dev/null || {
  echo "binfmt: qemu-user-static and binfmt-support are missing (make deps)" >&2; exit 1; }
[ -f "$mnt/register" ] || mount -t binfmt_misc binfmt_misc "$mnt"
# a handler registered without F (it would look for the emulator inside
# every container) is replaced by Debian's definition, which has it
if [ -f "$entry" ] && ! grep -q '^flags:.*F' "$entry"; then echo -1 >"$entry"; fi
update-binfmts --import "qemu-$q" >/dev/null 2>&1 || true
update-binfmts --enable "qemu-$q" >/dev/null 2>&1 || true
ready || { echo "binfmt: could not register qemu-$q with the F flag:" >&2; cat "$entry" >&2 2>/dev/null || true; exit 1; }
echo "binfmt: $arch binaries run through /usr/bin/qemu-$q-static" >&2
