#!/usr/bin/env bash
# Builds every kubesplit binary in one `go build` call, so the Kubernetes
# packages the three upstream roles share compile once.
#   OUT=dir (default bin)   GOWORK=off is honoured per module by hack/verify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/versions.env

OUT=${OUT:-bin}
k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
pkgs=(./cmd/kubesplit ./services/apiserver ./services/scheduler ./services/controllers ./services/datastore ./services/tunnel-gateway)
[ $# -gt 0 ] && pkgs=("$@")

ldflags="-s -w"
ldflags+=" -X github.com/kubesplit/kubesplit/pkg/version.Version=${KUBESPLIT_VERSION}"
ldflags+=" -X github.com/kubesplit/kubesplit/pkg/version.Kubernetes=${KUBERNETES_VERSION}"
# what upstream's /version and --version report (k8s sets these at release)
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=${KUBERNETES_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${k8s_minor}"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$OUT"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$OUT/" "${pkgs[@]}"
