#!/usr/bin/env bash
# Builds keyhole and the bench tool, then runs the comparison with wrk.
# Usage: bench/run.sh [bench flags, e.g. -rounds 3 -duration 5s]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench: wrk is not installed (Debian package wrk)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go build -o "$out/keyhole" .
go build -o "$out/bench" ./bench
"$out/bench" -keyhole "$out/keyhole" "$@"
