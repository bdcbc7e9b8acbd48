#!/usr/bin/env bash
# After changing a dependency anywhere: raise every module's requirements to
# the workspace build list, so a module built alone (GOWORK=off) compiles the
# same package versions as the workspace build and reuses its build cache;
# then tidy each module.
set -euo pipefail
cd "$(dirname "$0")/.."
for m in $(hack/modules.sh) $(hack/modules.sh standalone); do (cd "$m" && GOWORK=off go mod tidy); done
# (addons keep their own versions: only the workspace's modules are raised below)
go work sync
declare -A ws
# only modules whose packages are compiled matter
deps='{{with .Module}}{{if not .Replace}}{{.Path}} {{.Version}}{{end}}{{end}}'
patterns=(); for m in $(hack/modules.sh); do patterns+=("./$m/..."); done
while read -r path ver; do ws[$path]=$ver; done < <(go list -deps -test -f "$deps" "${patterns[@]}" | awk 'NF==2' | sort -u)
for m in $(hack/modules.sh); do
  ups=()
  while read -r path ver; do
    want=${ws[$path]:-}
    [ -n "$want" ] && [ "$want" != "$ver" ] && ups+=("$path@$want")
  done < <(cd "$m" && GOWORK=off go list -deps -test -f "$deps" ./... | awk 'NF==2' | sort -u)
  if [ ${#ups[@]} -gt 0 ]; then
    echo "$m: raising ${#ups[@]} requirements to the workspace's versions"
    (cd "$m" && GOWORK=off go get "${ups[@]}" >/dev/null)
  fi
  (cd "$m" && GOWORK=off go mod tidy)
done
