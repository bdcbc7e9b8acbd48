#!/usr/bin/env bash
# Lists the folders of every Go module in the repository.
cd "$(dirname "$0")/.." && find . -name go.mod -not -path './.git/*' -printf '%h\n' | sed 's#^\./##' | sort
