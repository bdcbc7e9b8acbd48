#!/usr/bin/env bash
# make bench: control-plane benchmarks, SQLite vs embedded etcd, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBESPLIT_BIN_DIR=$PWD/bin
go run ./e2e/cmd/bench -out results "$@"
