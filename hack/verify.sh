#!/usr/bin/env bash
# Checks that keep the workspace honest: gofmt, go.work lists every module,
# and every module builds and vets on its own (GOWORK=off) as well as in the
# workspace.
#   hack/verify.sh [all|quick|slow]  quick: the checks that build nothing
#   (gofmt, go.work, versions, generated files), which `make test` runs first;
#   slow: the rest (the chart, vet, GOWORK=off builds), which it runs beside
#   the end-to-end tests once the binaries are built
set -euo pipefail
part=${1:-all}
case $part in all|quick|slow) ;; *) echo "usage: hack/verify.sh [all|quick|slow]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
# Same compiler settings as hack/build.sh (no cgo, -trimpath), so vet, unit
# tests and the binaries share one build cache: on a cold cache Kubernetes
# compiles once, not once per setting. (The datastore's cgo build is separate.)
export CGO_ENABLED=0
case " ${GOFLAGS:-} " in *" -trimpath "*) ;; *) export GOFLAGS="${GOFLAGS:-} -trimpath" ;; esac

mods=$(hack/modules.sh)
if [ "$part" != slow ]; then
echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
[ -z "$bad" ] || { echo "gofmt needed on:"; echo "$bad"; exit 1; }

echo "== go.work lists every module"
used=$(go work edit -json | sed -n 's/.*"DiskPath": "\(.*\)".*/\1/p' | sed 's#^\./##' | sort)
[ "$mods" = "$used" ] || { echo "go.work is out of date:"; diff <(echo "$mods") <(echo "$used"); exit 1; }

echo "== every module requires the workspace's versions (go work sync)"
# so that each module's GOWORK=off build below compiles what the workspace
# compiled (cache hits) instead of its own older versions of Kubernetes & co.
mods_sum() { for m in $mods; do sha256sum "$m/go.mod"; done; }
before=$(mods_sum)
go work sync
[ "$before" = "$(mods_sum)" ] || {
  echo "go work sync changed go.mod files (git diff shows which): run go mod tidy in them and commit both"; exit 1; }

echo "== testcluster.DefaultTag is the release in hack/versions.env"
. hack/versions.env
grep -q "^const DefaultTag = \"$KUBESPLIT_VERSION\"" testcluster/options.go || {
  echo "testcluster/options.go: DefaultTag is not $KUBESPLIT_VERSION (hack/versions.env)"; exit 1; }

echo "== generated files are up to date (hack/gen.sh)"
hack/gen.sh --check
fi
[ "$part" != quick ] || exit 0
. hack/versions.env

echo "== the Helm chart (deploy/helm): its version, helm lint in each datastore mode, a bad value refused"
grep -q "^appVersion: $KUBESPLIT_VERSION\$" deploy/helm/Chart.yaml && grep -q "^version: ${KUBESPLIT_VERSION#v}\$" deploy/helm/Chart.yaml || {
  echo "deploy/helm/Chart.yaml: version/appVersion are not $KUBESPLIT_VERSION (hack/versions.env)"; exit 1; }
helm=$(hack/helm.sh)
for set in datastore.mode=sqlite datastore.mode=etcd,backup.enabled=true datastore.mode=external,datastore.external.secretName=pg \
  gateway.service.type=NodePort,gateway.address=192.0.2.10,gateway.service.nodePorts.api=30443 \
  backup.restoreFrom=snapshot-20261206T101500Z.db datastore.mode=etcd,backup.restoreFrom=snapshot-20261206T101500Z.db gateway.sni.host=cp1.example.test,datastore.mode=etcd pki.renewal.enabled=false,pki.renewal.before=720h; do
  "$helm" lint --strict --quiet deploy/helm --set "$set" >/dev/null || { "$helm" lint --strict deploy/helm --set "$set"; exit 1; }
done
for bad in "datastore.mode=mysql:value must be one of" "apiserver.replica=3:additional properties 'replica' not allowed" \
  "datastore.mode=external:/datastore/external/secretName" "gateway.service.type=NodePort,gateway.service.nodePorts.api=30443:set gateway.address" \
  "gateway.service.type=NodePort,gateway.address=192.0.2.10:fix the api node port" \
  "datastore.mode=external,datastore.external.secretName=pg,backup.enabled=true:backed up with its own tools" \
  "backup.restoreFrom=../etc/passwd:/backup/restoreFrom" "datastore.mode=external,datastore.external.secretName=pg,backup.restoreFrom=s.db:restore the external database with its own tools" \
  "gateway.sni.host=203.0.113.7:/gateway/sni/host" "pki.renewal.before=90d:/pki/renewal/before" "gateway.sni.host=cp1.example.test,gateway.sni.nodeLocalAddress=169.254.0.1:/gateway/sni/nodeLocalAddress"; do
  if out=$("$helm" template deploy/helm --set "${bad%%:*}" 2>&1); then
    echo "helm template --set ${bad%%:*} was accepted; the chart must refuse it"; exit 1
  fi
  grep -qF -- "${bad#*:}" <<<"$out" || { echo "helm template --set ${bad%%:*}: error does not say '${bad#*:}':"; echo "$out"; exit 1; }
done

echo "== workspace vet (every module)"
patterns=()
for m in $mods; do patterns+=("./$m/..."); done
go vet "${patterns[@]}"

for m in $mods; do
  echo "== GOWORK=off: $m"
  (cd "$m" && GOWORK=off go build ./... && GOWORK=off go vet ./...)
done

# Modules kept out of go.work (hack/modules.sh standalone) only ever build alone;
# their go.mod pins versions by hand, so check it is tidy too.
for m in $(hack/modules.sh standalone); do
  echo "== GOWORK=off (not in go.work): $m"
  # (-o /dev/null: a module of one main package would leave its binary here)
  (cd "$m" && GOWORK=off go mod tidy -diff && GOWORK=off go build -o /dev/null ./... && GOWORK=off go vet ./...)
done
