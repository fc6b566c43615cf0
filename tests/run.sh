#!/bin/sh
# Runs each test program given as an argument, then the examples; prints a
# summary and fails if any test failed.  Criterion programs report their own
# per-test results; a program that exits 77 was skipped and says why.
B=${B:-build}
fail=0; ran=0; skipped=0
for t in "$@"; do
	ran=$((ran + 1))
	echo "=== $t"
	"$t" --jobs=1
	rc=$?
	if [ $rc -eq 77 ]; then skipped=$((skipped + 1)); echo "--- SKIPPED $t";
	elif [ $rc -ne 0 ]; then fail=$((fail + 1)); echo "--- FAILED $t (exit $rc)"; fi
done
echo "=== $ran test programs, $fail failed, $skipped skipped"
[ $fail -eq 0 ]
