#!/usr/bin/env bash
# Rewrites the replace block of every module that imports k8s.io/kubernetes.
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, ...) at
# v0.0.0 and expects a replace to the published vX.Y.Z tags. The list comes from
# k8s.io/kubernetes's own go.mod so it is never hand-typed.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/versions.env

gomod=$(GOWORK=off GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
staging=$(awk '/^require \(/{r=1;next} r&&/^\)/{r=0} r&&$2=="v0.0.0"{print $1}' "$gomod" | sort -u)
staging_version="v0.${KUBERNETES_VERSION#v1.}"

for mod in "$@"; do
  f="$mod/go.mod"
  # drop any earlier generated block, then append a fresh one
  awk '/^\/\/ BEGIN generated k8s staging replaces/{skip=1} !skip{print} /^\/\/ END generated k8s staging replaces/{skip=0}' "$f" > "$f.tmp"
  {
    echo "// BEGIN generated k8s staging replaces (hack/gen-k8s-replace.sh)"
    echo "replace ("
    for s in $staging; do printf '\t%s => %s %s\n' "$s" "$s" "$staging_version"; done
    echo ")"
    echo "// END generated k8s staging replaces"
  } >> "$f.tmp"
  mv "$f.tmp" "$f"
done
