#!/usr/bin/env bash
# The test entry point of `make test` and CI.
#   hack/test.sh all|unit|integration|nodes|compose|e2eframework|suite|multiarch
# `all` (make test, CI) is every phase but multiarch: its arm64 cross-build of
# the apiserver alone costs about 10 minutes on an empty build cache, which
# CI's budget cannot carry; run it with `make test-multiarch` (and
# `make images-all`) when images or their build change.
set -euo pipefail
cd "$(dirname "$0")/.."
# Same compiler settings as hack/build.sh (no cgo, -trimpath), so vet, unit
# tests and the binaries share one build cache: on a cold cache Kubernetes
# compiles once, not once per setting. (The datastore's cgo build is separate.)
export CGO_ENABLED=0
case " ${GOFLAGS:-} " in *" -trimpath "*) ;; *) export GOFLAGS="${GOFLAGS:-} -trimpath" ;; esac
what=${1:-all}
start=$(date +%s)
# each header says how many seconds into the run its phase starts
say() { echo "== [$(( $(date +%s) - start ))s] $*"; }

# gotest LOG COMMAND...: one `go test -v` phase. Its whole output goes to
# LOG and the test lines to the terminal; if it fails, the run ends with each
# failed test's last messages (CI shows the end of the output).
gotest() {
  local log=$1 rc; shift
  set +e
  "$@" 2>&1 | tee "$log" | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)'
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || { hack/failures.sh "$log"; exit "$rc"; }
}

hack/deps.sh
unit_pkgs=()
for m in $(hack/modules.sh); do [ "$m" = e2e ] || unit_pkgs+=("./$m/..."); done

checks_pid= rest_pid= bases_pid=
stop_all() {
  for p in $checks_pid $rest_pid; do kill -- -"$p" 2>/dev/null || true; done
  if [ "$what" = all ] || [ "$what" = integration ]; then hack/postgres.sh stop; hack/mysql.sh stop; fi
}
trap stop_all EXIT
if [ "$what" = all ]; then
  # What costs CPU and nothing else (vet, the GOWORK=off builds, the unit
  # tests: compiling and linking) runs at the lowest priority beside the
  # end-to-end phases, which mostly wait on clusters; the binaries those
  # phases need are built first, which also compiles most of what the checks
  # compile.
  hack/verify.sh quick
  say "the control plane's binaries (what the integration tests run)"
  # The images' Debian bases (debootstrap: mostly downloading and unpacking,
  # about 6 minutes on a fresh machine, cached after) are made beside the
  # compile, which keeps both cores busy; hack/images.sh then finds them made.
  (hack/node-base.sh && hack/node-base.sh --flavour busybox && hack/node-base.sh --flavour postgres) >/tmp/kubesplit-bases.log 2>&1 &
  bases_pid=$!
  IMAGES="kubesplit datastore apiserver scheduler controllers tunnel-gateway" hack/build.sh
  export KUBESPLIT_BIN_DIR=$PWD/bin
  # The rest (node agent, containerd, the addons from their own modules,
  # kubectl, helm: about 17 minutes on an empty cache with the module
  # downloads, Traefik most of it)
  # compiles at the lowest priority beside the integration tests, which
  # need none of it and leave a core idle much of the time; the binaries
  # already built are up to date and left as they are.
  say "the other binaries and helm in the background (nice 19): /tmp/kubesplit-build.log"
  set -m
  (nice -n 19 hack/build.sh && nice -n 19 hack/helm.sh) >/tmp/kubesplit-build.log 2>&1 &
  rest_pid=$!
  set +m
fi
# images: what the phases after the integration tests need, once
images() {
  [ -z "${images_built:-}" ] || return 0
  if [ -n "$rest_pid" ]; then
    say "waiting for the other binaries"
    wait "$rest_pid" || { echo "hack/build.sh or hack/helm.sh failed:"; cat /tmp/kubesplit-build.log; exit 1; }
    rest_pid=
  fi
  if [ -n "$bases_pid" ]; then
    wait "$bases_pid" || { echo "the images' Debian bases failed:"; cat /tmp/kubesplit-bases.log; exit 1; }
    bases_pid=
  fi
  say "images (offline, from bin/)"
  hack/images.sh
  images_built=1
  if [ "$what" = all ]; then
    say "verify (chart, vet, GOWORK=off builds) and unit tests in the background (nice 19): /tmp/kubesplit-checks.log"
    set -m   # its own process group, so that stop_all ends all of it
    (nice -n 19 hack/verify.sh slow && nice -n 19 hack/test.sh unit) >/tmp/kubesplit-checks.log 2>&1 &
    checks_pid=$!
    set +m
  fi
}
if [ "$what" = unit ]; then
  say "unit tests"
  go test -short -count=1 "${unit_pkgs[@]}"
  for m in $(hack/modules.sh standalone); do (cd "$m" && GOWORK=off go test -short -count=1 ./...); done
fi
if [ "$what" = all ] || [ "$what" = integration ]; then
  [ -n "${KUBESPLIT_BIN_DIR:-}" ] || { say "building binaries once for every test package"; hack/build.sh; export KUBESPLIT_BIN_DIR=$PWD/bin; }
  KUBESPLIT_TEST_POSTGRES_DSN=$(hack/postgres.sh)
  KUBESPLIT_TEST_MYSQL_DSN=$(hack/mysql.sh)
  export KUBESPLIT_TEST_POSTGRES_DSN KUBESPLIT_TEST_MYSQL_DSN
  say "integration tests (real processes)"
  gotest /tmp/kubesplit-integration.log go test -count=1 -timeout 30m -v ./e2e/integration/...
fi
if [ "$what" = all ] || [ "$what" = nodes ]; then
  [ -n "${KUBESPLIT_BIN_DIR:-}" ] || { say "building binaries"; hack/build.sh; export KUBESPLIT_BIN_DIR=$PWD/bin; }
  images
  . hack/versions.env
  export KUBESPLIT_TAG=$KUBESPLIT_VERSION   # the tag hack/images.sh just built
  say "node tests (node containers behind the tunnel gateway) and the postgres image"
  gotest /tmp/kubesplit-nodes.log go test -count=1 -timeout 30m -v ./e2e/nodes/... ./e2e/postgresimage/...
fi
if [ "$what" = all ] || [ "$what" = compose ]; then
  if [ "$what" = compose ]; then
    say "binaries and images"; hack/build.sh; hack/images.sh
  fi
  . hack/versions.env
  export KUBESPLIT_TAG=$KUBESPLIT_VERSION KUBESPLIT_BIN_DIR=$PWD/bin
  say "compose cluster (make up, load, restarts, down/up)"
  gotest /tmp/kubesplit-compose.log go test -count=1 -timeout 30m -v ./e2e/compose/...
fi
if [ "$what" = all ] || [ "$what" = e2eframework ]; then
  if [ "$what" = e2eframework ]; then
    say "binaries and images"; hack/build.sh; hack/images.sh
  fi
  . hack/versions.env
  say "sigs.k8s.io/e2e-framework suite on the kubesplit provider (testcluster/e2eframework)"
  gotest /tmp/kubesplit-e2eframework.log env TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 \
    KUBESPLIT_TAG=$KUBESPLIT_VERSION GOWORK=off go -C testcluster/e2eframework test -count=1 -timeout 15m -v ./...
fi
if [ "$what" = all ] || [ "$what" = suite ]; then
  if [ "$what" = suite ]; then
    say "binaries and images"; hack/build.sh; hack/images.sh
  fi
  . hack/versions.env
  # testcontainers-go on this machine: no reaper image to pull, no host guessing
  export KUBESPLIT_TAG=$KUBESPLIT_VERSION TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
  say "e2e suite on testcluster (every backend, role upgrades, partition, version skew, the hosted chart)"
  hack/helm.sh >/dev/null # bin/helm: the hosted-control-plane scenario installs deploy/helm with it (kept when built)
  gotest /tmp/kubesplit-suite.log env GOWORK=off go -C e2e/suite test -count=1 -timeout 50m -v .
fi
if [ "$what" = multiarch ]; then
  # the host runs `kubesplit init`; the roles are the arm64 images, emulated
  [ -n "${KUBESPLIT_BIN_DIR:-}" ] || { say "building the CLI"; IMAGES=kubesplit hack/build.sh; export KUBESPLIT_BIN_DIR=$PWD/bin; }
  say "arm64 apiserver and datastore images (cross-compiled, loaded as TAG-arm64)"
  hack/binfmt.sh arm64
  PLATFORMS=linux/arm64 IMAGES="apiserver datastore" hack/build.sh
  PLATFORMS=linux/arm64 IMAGES="apiserver datastore" hack/images.sh
  . hack/versions.env
  export KUBESPLIT_TAG=$KUBESPLIT_VERSION
  say "arm64 images under emulation (qemu-user-static)"
  gotest /tmp/kubesplit-multiarch.log go test -count=1 -timeout 20m -v ./e2e/multiarch/...
fi
if [ -n "$checks_pid" ]; then
  say "waiting for verify and the unit tests"
  rc=0; wait "$checks_pid" || rc=$?
  checks_pid=
  grep -E '^(==|ok|FAIL|---|panic|\s+\S+_test.go)|\.go:[0-9]+' /tmp/kubesplit-checks.log || true
  [ "$rc" -eq 0 ] || { echo "verify or unit tests failed (exit $rc); the whole log:"; cat /tmp/kubesplit-checks.log; exit "$rc"; }
fi
say "tests done"
