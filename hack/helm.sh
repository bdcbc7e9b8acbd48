#!/usr/bin/env bash
# Builds bin/helm, the helm CLI, from the same Helm module (and version) the
# controllers' HelmChart controller links: no helm package exists for this
# machine's distribution, and one version of Helm per project is enough.
# Prints the binary's path. Kept when it is newer than the module files.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$PWD/bin/helm
if [ -x "$out" ] && [ "$out" -nt services/controllers/go.mod ] && [ "$out" -nt services/controllers/go.sum ]; then
  echo "$out"; exit 0
fi
version=$(go list -C services/controllers -m -f '{{.Version}}' helm.sh/helm/v4)
CGO_ENABLED=0 go build -C services/controllers -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" -o "$out" helm.sh/helm/v4/cmd/helm
echo "$out"
