#!/bin/sh
# The kill -9 test (tests/kill_test.rs) for longer: scripts/killtest.sh [--duration SECS]
# (default 300 s per mode; mapped and lazy run side by side).
set -eu
secs=300
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) secs="$2"; shift 2 ;;
        *) echo "usage: $0 [--duration SECS]" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
YAAD_KILL_SECS="$secs" exec cargo test --release --test kill_test -- --nocapture
