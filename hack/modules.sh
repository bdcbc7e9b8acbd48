#!/usr/bin/env bash
# Lists the folders of the repository's Go modules.
#   hack/modules.sh          the workspace's modules: what go.work must use
#   hack/modules.sh addons   addons/*: upstream programs (CoreDNS) kept out of
#                            go.work on purpose, so their dependency versions
#                            cannot move the roles'; build them with GOWORK=off
cd "$(dirname "$0")/.." || exit 1
all=$(find . -name go.mod -not -path './.git/*' -printf '%h\n' | sed 's#^\./##' | sort)
case "${1:-workspace}" in
  workspace) grep -v '^addons/' <<<"$all" || true ;;
  addons) grep '^addons/' <<<"$all" || true ;;
  *) echo "usage: hack/modules.sh [workspace|addons]" >&2; exit 2 ;;
esac
