#!/bin/sh
# Runs each test program given as an argument, then every example in
# $B/examples; prints a summary and fails if any failed.  Criterion programs
# report their own per-test results; a program that exits 77 was skipped and
# says why.
B=${B:-build}
fail=0; ran=0; skipped=0
run() {
	ran=$((ran + 1))
	echo "=== $*"
	"$@"
	rc=$?
	if [ $rc -eq 77 ]; then skipped=$((skipped + 1)); echo "--- SKIPPED $1";
	elif [ $rc -ne 0 ]; then fail=$((fail + 1)); echo "--- FAILED $1 (exit $rc)"; fi
}
for t in "$@"; do run "$t" --jobs=1; done
for e in "$B"/examples/*; do [ -x "$e" ] && run "$e"; done
echo "=== $ran programs, $fail failed, $skipped skipped"
[ $fail -eq 0 ]
