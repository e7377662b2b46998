#!/usr/bin/env bash
# run.sh: runs each unit-test binary and prints one summary line.
#
# Usage: run.sh BUILD_DIR test_name...  Each binary is a cmocka runner; its
# "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)" lines are summed.
# A binary that crashes or exits non-zero without a FAILED line counts as
# one failure, so a crash can never pass silently.
set -u
dir=$1; shift
passed=0; failed=0; bad=()
for t in "$@"; do
    out=$("$dir/$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -n1)
    passed=$((passed + ${p:-0}))
    if [ -n "$f" ]; then
        failed=$((failed + f)); bad+=("$t")
    elif [ "$rc" -ne 0 ]; then
        failed=$((failed + 1)); bad+=("$t (exit $rc)")
    fi
done
echo "unit tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || { echo "failing: ${bad[*]}"; exit 1; }
