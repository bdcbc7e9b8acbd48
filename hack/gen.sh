#!/usr/bin/env bash
# Writes the files generated from the role descriptions (roles/), which are
# checked in so that users need no Go to run them.
#   hack/gen.sh          rewrite them
#   hack/gen.sh --check  fail, naming the file, when one is stale (make verify)
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/versions.env
check=false
[ "${1:-}" = --check ] && check=true
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd roles && GOWORK=off go run ./cmd/kubesplit-render compose "$KUBESPLIT_VERSION") >"$tmp/docker-compose.yml"
(cd roles && GOWORK=off go run ./cmd/kubesplit-render helm "$KUBESPLIT_VERSION") >"$tmp/roles.json"
for pair in "$tmp/docker-compose.yml:deploy/compose/docker-compose.yml" "$tmp/roles.json:deploy/helm/files/roles.json"; do
  new=${pair%%:*} dst=${pair#*:}
  if $check; then
    diff -u "$dst" "$new" >&2 || { echo "$dst is stale: run hack/gen.sh (it is generated from roles/)" >&2; exit 1; }
  else
    cp "$new" "$dst"
  fi
done
