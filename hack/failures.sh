#!/usr/bin/env bash
# Prints, for each failed test in a `go test -v` log, the last lines its own
# test code logged (the failure's reason), so the end of a CI run's output
# says why, not just which. Used by hack/test.sh when a phase fails.
#   hack/failures.sh LOG [LINES per test, default 20]
set -euo pipefail
log=$1 keep=${2:-20}
awk -v keep="$keep" '
  # the test whose output follows: go test -v heads a switch with === RUN/CONT/NAME/PAUSE
  /^=== (RUN|CONT|NAME|PAUSE) / { cur = $3; inmsg = 0; next }
  /^ *--- FAIL: / { if (!(($3) in seen)) { seen[$3] = 1; failed[++nf] = $3 }; next }
  /^ *--- (PASS|SKIP): / { next }
  # a test'"'"'s own message (file_test.go:N:) and its continuation lines, indented deeper
  /^ +[^ ]+_test\.go:[0-9]+:/ { inmsg = 1; match($0, /^ +/); ind[cur] = RLENGTH; add(cur, $0); next }
  inmsg && match($0, /^ +/) && RLENGTH > ind[cur] { add(cur, $0); next }
  { inmsg = 0 }
  function add(t, line) { n[t]++; lines[t, n[t]] = line }
  END {
    if (nf == 0) exit
    print "== failed tests and the last lines they logged (the whole output is in " FILENAME ")"
    for (i = 1; i <= nf; i++) {
      t = failed[i]; leaf = 1
      for (j = 1; j <= nf; j++) if (index(failed[j], t "/") == 1) leaf = 0
      if (!leaf) continue
      print "--- " t
      from = n[t] - keep + 1; if (from < 1) from = 1
      if (n[t] == 0) print "    (it logged nothing of its own)"
      for (k = from; k <= n[t]; k++) print lines[t, k]
    }
  }' "$log"
