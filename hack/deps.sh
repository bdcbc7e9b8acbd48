#!/usr/bin/env bash
# Installs what the tests need from Debian's packages, when missing.
# Idempotent and quick when everything is there.
#   hack/deps.sh         everything (builds and every test)
#   hack/deps.sh build   only what building the host's binaries and images and
#                        running the compose cluster need (what `make up` runs)
set -euo pipefail
mode=${1:-all}
need=()
if [ "$mode" != build ]; then
  ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need+=(postgresql)
  [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
  command -v nft >/dev/null || need+=(nftables)  # the NetworkPolicy unit test has the kernel check its rules
fi
command -v runuser >/dev/null || need+=(util-linux)
command -v gcc >/dev/null || need+=(gcc)            # the datastore links SQLite with cgo
[ -f "/usr/lib/$(gcc -dumpmachine 2>/dev/null)/libc.a" ] || need+=(libc6-dev)  # ...statically
command -v debootstrap >/dev/null || need+=(debootstrap)  # the node and postgres images' Debian bases, built offline
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)  # copied into the control-plane images
# the other architecture's images: a cross C toolchain for the datastore (cgo),
# qemu-user-static to run them (the arm64 image test, the node base's second stage)
case $(dpkg --print-architecture) in
  arm64) cross=x86_64-linux-gnu other=amd64 qemu=x86_64 ;;
  *) cross=aarch64-linux-gnu other=arm64 qemu=aarch64 ;;
esac
if [ "$mode" != build ]; then
  command -v "$cross-gcc" >/dev/null || need+=("gcc-${cross//_/-}")
  [ -f "/usr/$cross/lib/libc.a" ] || need+=("libc6-dev-$other-cross")
  [ -x "/usr/bin/qemu-$qemu-static" ] || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null || need+=(binfmt-support)
fi
command -v docker >/dev/null || need+=(docker.io)
# make up / the compose tests: the compose v2 plugin if there is one, else Debian's v1
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]}; install them (as root: apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # the package starts a cluster of its own on 5432; the tests use their own
  command -v pg_ctlcluster >/dev/null && pg_ctlcluster --help >/dev/null 2>&1 && \
    for c in $(ls /etc/postgresql 2>/dev/null); do pg_ctlcluster "$c" main stop 2>/dev/null || true; done
fi
# the node tests run node containers: the engine must be up
if ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
    echo "starting dockerd"
    (dockerd >/var/log/kubesplit-dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  docker info >/dev/null 2>&1 || { echo "the Docker engine is not running (start dockerd)" >&2; exit 1; }
fi
command -v go >/dev/null || { echo "Go is not installed (need go 1.26+)" >&2; exit 1; }
