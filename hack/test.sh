#!/usr/bin/env bash
# The test entry point of `make test` and CI.
#   hack/test.sh all|unit|integration|nodes|compose|e2eframework|suite|multiarch
set -euo pipefail
cd "$(dirname "$0")/.."
# Same compiler settings as hack/build.sh (no cgo, -trimpath), so vet, unit
# tests and the binaries share one build cache: on a cold cache Kubernetes
# compiles once, not once per setting. (The datastore's cgo build is separate.)
export CGO_ENABLED=0
case " ${GOFLAGS:-} " in *" -trimpath "*) ;; *) export GOFLAGS="${GOFLAGS:-} -trimpath" ;; esac
what=${1:-all}
start=$(date +%s)

hack/deps.sh
unit_pkgs=()
for m in $(hack/modules.sh); do [ "$m" = e2e ] || unit_pkgs+=("./$m/..."); done

if [ "$what" = all ]; then
  hack/verify.sh
fi
if [ "$what" = all ] || [ "$what" = unit ]; then
  echo "== unit tests"
  go test -short -count=1 "${unit_pkgs[@]}"
  for m in $(hack/modules.sh standalone); do (cd "$m" && GOWORK=off go test -short -count=1 ./...); done
fi
if [ "$what" = all ] || [ "$what" = integration ]; then
  echo "== building binaries once for every test package"
  hack/build.sh
  export KUBESPLIT_BIN_DIR=$PWD/bin
  trap 'hack/postgres.sh stop; hack/mysql.sh stop' EXIT
  KUBESPLIT_TEST_POSTGRES_DSN=$(hack/postgres.sh)
  KUBESPLIT_TEST_MYSQL_DSN=$(hack/mysql.sh)
  export KUBESPLIT_TEST_POSTGRES_DSN KUBESPLIT_TEST_MYSQL_DSN
  echo "== integration tests (real processes)"
  go test -count=1 -timeout 30m -v ./e2e/integration/... 2>&1 | tee /tmp/kubesplit-integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)' 
  test "${PIPESTATUS[0]}" -eq 0
fi
if [ "$what" = all ] || [ "$what" = nodes ]; then
  [ -n "${KUBESPLIT_BIN_DIR:-}" ] || { echo "== building binaries"; hack/build.sh; export KUBESPLIT_BIN_DIR=$PWD/bin; }
  echo "== images (offline, from bin/)"
  hack/images.sh
  . hack/versions.env
  export KUBESPLIT_TAG=$KUBESPLIT_VERSION   # the tag hack/images.sh just built
  echo "== node tests (node containers behind the tunnel gateway) and the postgres image"
  go test -count=1 -timeout 30m -v ./e2e/nodes/... ./e2e/postgresimage/... 2>&1 | tee /tmp/kubesplit-nodes.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)'
  test "${PIPESTATUS[0]}" -eq 0
fi
if [ "$what" = all ] || [ "$what" = compose ]; then
  if [ "$what" = compose ]; then
    echo "== binaries and images"; hack/build.sh; hack/images.sh
  fi
  . hack/versions.env
  export KUBESPLIT_TAG=$KUBESPLIT_VERSION KUBESPLIT_BIN_DIR=$PWD/bin
  echo "== compose cluster (make up, load, restarts, down/up)"
  go test -count=1 -timeout 30m -v ./e2e/compose/... 2>&1 | tee /tmp/kubesplit-compose.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)'
  test "${PIPESTATUS[0]}" -eq 0
fi
if [ "$what" = all ] || [ "$what" = e2eframework ]; then
  if [ "$what" = e2eframework ]; then
    echo "== binaries and images"; hack/build.sh; hack/images.sh
  fi
  . hack/versions.env
  echo "== sigs.k8s.io/e2e-framework suite on the kubesplit provider (testcluster/e2eframework)"
  (cd testcluster/e2eframework && TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1 KUBESPLIT_TAG=$KUBESPLIT_VERSION \
    GOWORK=off go test -count=1 -timeout 15m -v ./...) 2>&1 | tee /tmp/kubesplit-e2eframework.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)'
  test "${PIPESTATUS[0]}" -eq 0
fi
if [ "$what" = all ] || [ "$what" = suite ]; then
  if [ "$what" = suite ]; then
    echo "== binaries and images"; hack/build.sh; hack/images.sh
  fi
  . hack/versions.env
  # testcontainers-go on this machine: no reaper image to pull, no host guessing
  export KUBESPLIT_TAG=$KUBESPLIT_VERSION TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
  echo "== e2e suite on testcluster (every backend, role upgrades, partition, version skew, the hosted chart)"
  hack/helm.sh >/dev/null # bin/helm: the hosted-control-plane scenario installs deploy/helm with it
  (cd e2e/suite && GOWORK=off go test -count=1 -timeout 40m -v .) 2>&1 | tee /tmp/kubesplit-suite.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)'
  test "${PIPESTATUS[0]}" -eq 0
fi
if [ "$what" = all ] || [ "$what" = multiarch ]; then
  # the host runs `kubesplit init`; the roles are the arm64 images, emulated
  [ -n "${KUBESPLIT_BIN_DIR:-}" ] || { echo "== building the CLI"; IMAGES=kubesplit hack/build.sh; export KUBESPLIT_BIN_DIR=$PWD/bin; }
  echo "== arm64 apiserver and datastore images (cross-compiled, loaded as TAG-arm64)"
  hack/binfmt.sh arm64
  PLATFORMS=linux/arm64 IMAGES="apiserver datastore" hack/build.sh
  PLATFORMS=linux/arm64 IMAGES="apiserver datastore" hack/images.sh
  . hack/versions.env
  export KUBESPLIT_TAG=$KUBESPLIT_VERSION
  echo "== arm64 images under emulation (qemu-user-static)"
  go test -count=1 -timeout 20m -v ./e2e/multiarch/... 2>&1 | tee /tmp/kubesplit-multiarch.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)'
  test "${PIPESTATUS[0]}" -eq 0
fi
echo "== tests done in $(( $(date +%s) - start ))s"
