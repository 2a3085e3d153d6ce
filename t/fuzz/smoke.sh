#!/bin/sh
# t/fuzz/smoke.sh: runs each libFuzzer harness for a while, one after the
# other (the machine is shared: one core each), and says what it found.
#
#   t/fuzz/smoke.sh FUZZ_BIN_DIR [SECONDS] [HARNESS...]
#
# FUZZ_BIN_DIR holds fuzz_NAME binaries (t/fuzz/build.sh BUILD fuzz, or
# `make` with --enable-fuzz). SECONDS defaults to 60, HARNESS to all eight.
# The working corpus is FUZZ_BIN_DIR/corpus/NAME, started from
# t/fuzz/make_seeds.py's full set when the shared corpus is there, else
# from t/fuzz/seeds/NAME; new inputs libFuzzer finds are kept there for
# the next run. Crashes, leaks, timeouts and out-of-memory inputs go to
# FUZZ_BIN_DIR/artifacts/NAME/; copy the ones worth keeping into
# t/fuzz/regress/NAME/ (the regression driver runs them in make check).
#
# t/fuzz/NAME.dict, when there is one, is the harness's dictionary.
# Exits 1 if any harness found something. FUZZ_SKIP_KNOWN=1 steps around
# the known library bugs (t/fuzz/fuzz_known.h) to look for the next ones.
set -u

[ $# -ge 1 ] || { sed -n '2,18p' "$0"; exit 2; }
bin=$(cd "$1" && pwd)
secs=${2:-60}
[ $# -ge 2 ] && shift 2 || shift 1
harnesses=${*:-sip sdp conf normalize digest crm rtp http}
src=$(cd "$(dirname "$0")/../.." && pwd)
status=0

for h in $harnesses; do
	[ -x "$bin/fuzz_$h" ] || { echo "$h: no $bin/fuzz_$h" >&2; status=1; continue; }
	corpus=$bin/corpus/$h
	art=$bin/artifacts/$h
	mkdir -p "$art"
	if [ ! -d "$corpus" ]; then
		mkdir -p "$bin/corpus"
		[ -d "$bin/seeds-full" ] ||
			python3 "$src/t/fuzz/make_seeds.py" "$bin/seeds-full" >/dev/null 2>&1 ||
			rm -rf "$bin/seeds-full"
		if [ -d "$bin/seeds-full/$h" ]; then
			cp -r "$bin/seeds-full/$h" "$corpus"
		else
			cp -r "$src/t/fuzz/seeds/$h" "$corpus"
		fi
	fi
	dict=
	[ -f "$src/t/fuzz/$h.dict" ] && dict=-dict=$src/t/fuzz/$h.dict
	log=$bin/fuzz-$h.log
	# libFuzzer's own limits; the outer timeout only guards a stuck run
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
	timeout -k 10 $((secs + 120)) "$bin/fuzz_$h" -max_total_time="$secs" \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$art/" $dict "$corpus" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, features \2, corpus \3/p')
	found=$(grep -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' "$log" | head -2 | tr '\n' ' ')
	if [ $rc -eq 0 ]; then
		echo "$h: ok, $execs runs in ${secs}s ($rate/s); $cov"
	else
		status=1
		echo "$h: FOUND (exit $rc) after $execs runs ($rate/s): $found"
		grep -E '^(artifact_prefix|Test unit written)' "$log" | sed 's/^/    /'
		# the input itself, so that a find on a CI machine can be
		# replayed elsewhere: base64 -d > t/fuzz/regress/NAME/...
		for f in "$art"/*; do
			[ -f "$f" ] || continue
			echo "    $(basename "$f") ($(wc -c < "$f") bytes), base64:"
			head -c 65536 "$f" | base64 -w 76 | sed 's/^/      /'
		done
	fi
done
exit $status
