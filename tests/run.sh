#!/bin/sh
# Runs every test program in BUILD/tests (built by `make`) from the project root, prints each one's
# output, and ends with the summed "N passed, N failed, N skipped" (each program ends with such a
# line, tests/check.h). A program that crashes, times out or exits non-zero without a failed check,
# or prints no summary line, counts as one failure.
#
# Skips: "SKIP (no CUDA device) ..." (SKIP_NO_GPU) is the one expected skip. Any other SKIP line is
# an unexpected skip: they are listed at the end, and under CI=true or GDN2_STRICT_SKIPS=1 one of
# them fails the run (a fresh clone must run every check but the GPU ones).
BUILD=${1:-build}
TIMEOUT=${GDN2_TEST_TIMEOUT:-600}
STRICT=0
{ [ "${CI:-}" = true ] || [ "${GDN2_STRICT_SKIPS:-0}" = 1 ]; } && STRICT=1
pass=0; fail=0; skip=0
unexpected=$(mktemp "${TMPDIR:-/tmp}/gdn2_skips.XXXXXX") || exit 1
trap 'rm -f "$unexpected"' EXIT
found=0
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    found=1
    name=$(basename "$t")
    echo "== $name"
    start=$(date +%s)
    out=$(timeout "$TIMEOUT" "$t" 2>&1); rc=$?
    echo "$out"
    line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
        f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
        s=$(echo "$line" | sed -E 's/^.* failed, ([0-9]+) skipped$/\1/')
        pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail=$((fail + 1)); echo "FAIL $name exited $rc"; fi
    else
        fail=$((fail + 1))
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL $name timed out after ${TIMEOUT}s (exit $rc)"
        else echo "FAIL $name exited $rc without a summary line"; fi
    fi
    echo "$out" | grep -E '^SKIP ' | grep -v -E '^SKIP \(no CUDA device\)' | sed "s/^/$name: /" >> "$unexpected"
    echo "-- $name: $(( $(date +%s) - start ))s"
done
if [ "$found" -eq 0 ]; then
    fail=$((fail + 1)); echo "FAIL no test programs in $BUILD/tests (run make first)"
fi
n_unexp=$(wc -l < "$unexpected" | tr -d ' ')
if [ "$n_unexp" -gt 0 ]; then
    echo "unexpected skips ($n_unexp; only 'SKIP (no CUDA device)' is expected):"
    cat "$unexpected"
    if [ "$STRICT" -eq 1 ]; then echo "FAIL unexpected skips under CI=true / GDN2_STRICT_SKIPS=1"; fi
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && { [ "$STRICT" -eq 0 ] || [ "$n_unexp" -eq 0 ]; }
