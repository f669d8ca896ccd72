#!/usr/bin/env bash
# Runs every fuzz target of the module for a short while each: go test can
# fuzz only one target of one package per run, so this lists them and runs
# them one after another. Usage: tools/fuzz.sh [DURATION] (default 30s).
# Stops at the first target that finds a failure; go test then writes the
# input that failed under the package's testdata/fuzz for a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-30s}"
mapfile -t pkgs < <(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
if [ ${#pkgs[@]} -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
count=0
for pkg in "${pkgs[@]}"; do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz'); do
		echo "fuzz: $pkg $target for $fuzztime"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
		count=$((count + 1))
	done
done
echo "fuzz: $count targets ran for $fuzztime each without a failure"
