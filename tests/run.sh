#!/bin/sh
# Runs every test program in BUILD/tests (built by `make`), prints each one's output, and ends with
# the summed "N passed, N failed". A program that crashes or times out counts as one failure.
BUILD=${1:-build}
TIMEOUT=${GDN2_TEST_TIMEOUT:-600}
pass=0; fail=0
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    echo "== $name"
    start=$(date +%s)
    out=$(timeout "$TIMEOUT" "$t" 2>&1); rc=$?
    echo "$out"
    line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
        f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
        pass=$((pass + p)); fail=$((fail + f))
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail=$((fail + 1)); echo "FAIL $name exited $rc"; fi
    else
        fail=$((fail + 1)); echo "FAIL $name exited $rc without a summary line"
    fi
    echo "-- $name: $(( $(date +%s) - start ))s"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
