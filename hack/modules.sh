#!/usr/bin/env bash
# Lists the folders of the repository's Go modules.
#   hack/modules.sh             the workspace's modules: what go.work must use
#   hack/modules.sh standalone  modules kept out of go.work on purpose, so
#                               their dependency versions cannot move the
#                               roles': addons/* (upstream programs such as
#                               CoreDNS), testcluster (the public
#                               testcontainers-go package, importable by other
#                               projects), testcluster/e2eframework (its
#                               e2e-framework cluster provider, apart so that
#                               testcluster's users do not get
#                               controller-runtime) and e2e/suite (the e2e
#                               tests on it).
#                               Build and test them with GOWORK=off.
cd "$(dirname "$0")/.." || exit 1
all=$(find . -name go.mod -not -path './.git/*' -printf '%h\n' | sed 's#^\./##' | sort)
standalone='^(addons/|testcluster$|testcluster/e2eframework$|e2e/suite$)'
case "${1:-workspace}" in
  workspace) grep -Ev "$standalone" <<<"$all" || true ;;
  standalone|addons) grep -E "$standalone" <<<"$all" || true ;;
  *) echo "usage: hack/modules.sh [workspace|standalone]" >&2; exit 2 ;;
esac
