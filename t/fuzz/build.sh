#!/bin/sh
# t/fuzz/build.sh: builds the harnesses by hand against a configured and
# built tree, until Makefile.am builds them (see t/fuzz/README).
#
#   t/fuzz/build.sh BUILD_DIR regress [HARNESS...]
#       each harness with t/fuzz/driver.c, using the tree's compiler and
#       flags (gcc + ASan in CI): BUILD_DIR/t/fuzz/regress_NAME
#   t/fuzz/build.sh BUILD_DIR fuzz [HARNESS...]
#       libFuzzer targets (the tree must be configured with CC=clang, and
#       its CFLAGS should hold -fsanitize=fuzzer-no-link so that sipcrm's
#       own code is coverage-instrumented): BUILD_DIR/t/fuzz/fuzz_NAME
#
# HARNESS is sip, sdp, conf, normalize, digest, crm, rtp or http; default
# all of them.
set -eu

[ $# -ge 2 ] || { sed -n '2,14p' "$0"; exit 2; }
build=$(cd "$1" && pwd)
mode=$2
shift 2
src=$(cd "$(dirname "$0")/../.." && pwd)
harnesses=${*:-sip sdp conf normalize digest crm rtp http}

# the tree's own variables, as make expands them (the last line: make may
# first regenerate the Makefile when Makefile.am changed, and say so)
var() {
	printf 'print-var:\n\t@echo "VAR=$(%s)"\n' "$1" |
		make -s --no-print-directory -C "$build" -f Makefile -f - print-var |
		sed -n 's/^VAR=//p' | tail -1
}
CC=$(var CC)
CPPFLAGS="-I$build -I$src/src -I$src/src/core $(var SOFIA_CFLAGS) $(var CRYPTO_CFLAGS)"
CFLAGS="$(var AM_CFLAGS) $(var CFLAGS)"
LDFLAGS="$(var AM_LDFLAGS) $(var LDFLAGS)"
LIBS="$build/libsipcrm.a $(var DEPS_LIBS)"

# the library must match the headers the harnesses are compiled against
make -s -j2 -C "$build" libsipcrm.a >/dev/null 2>&1 ||
	{ echo "make libsipcrm.a failed in $build" >&2; exit 1; }
mkdir -p "$build/t/fuzz"
for h in $harnesses; do
	case $mode in
	regress)
		out=$build/t/fuzz/regress_$h
		# shellcheck disable=SC2086
		$CC $CPPFLAGS $CFLAGS -o "$out" "$src/t/fuzz/fuzz_$h.c" \
			"$src/t/fuzz/driver.c" $LDFLAGS $LIBS
		;;
	fuzz)
		out=$build/t/fuzz/fuzz_$h
		# shellcheck disable=SC2086
		$CC $CPPFLAGS $CFLAGS -fsanitize=fuzzer -o "$out" \
			"$src/t/fuzz/fuzz_$h.c" $LDFLAGS $LIBS
		;;
	*)
		echo "mode is regress or fuzz" >&2
		exit 2
		;;
	esac
	echo "built $out"
done
