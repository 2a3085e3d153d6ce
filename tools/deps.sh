#!/usr/bin/env bash
# Installs the Debian packages sipcrm needs to build (and, with --test, to
# run its test suite). Only what is missing is installed.
set -euo pipefail

build_pkgs=(build-essential autoconf automake libtool pkg-config
	libsofia-sip-ua-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev
	libsrtp2-dev libmicrohttpd-dev libssl-dev)
# clang and its runtimes: the libFuzzer build that .ci/run smoke-tests;
# sipvicious: t/scanners.py
test_pkgs=(sip-tester python3 sqlite3 curl baresip-core sipvicious
	clang libclang-rt-dev)

pkgs=("${build_pkgs[@]}")
if [ "${1:-}" = "--test" ]; then
	pkgs+=("${test_pkgs[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
	SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
