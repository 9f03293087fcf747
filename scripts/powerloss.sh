#!/bin/sh
# The power-loss tests for longer:
#   scripts/powerloss.sh [--cuts N] [--seed S] [--model M]
# First the hub model (tests/hub_model.rs, `powercut_*`): M power cuts per test (default
# 1000000, five tests: mem, mapped and lazy under -f 0 and -f MS), each recovered in a new
# boot and compared with the model; a failure prints YAAD_POWERCUT_SEED to replay it. Then the
# binary (tests/powerloss_binary.rs): N power cuts per mode (default 100000; mapped, lazy and
# mem side by side), each followed by a restart on the cut's image and a check of every
# acknowledged change over the wire. A failure prints the seed and the YAAD_POWERCUT value of
# the round; the same --seed replays the same plan (thread timing differs). Progress every
# 100 cuts.
set -eu
cuts=100000
model=1000000
seed=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cuts) cuts="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --model) model="$2"; shift 2 ;;
        *) echo "usage: $0 [--cuts N] [--seed S] [--model M]" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."
export YAAD_POWERLOSS_CUTS="$cuts" YAAD_POWERLOSS_PROGRESS=100
if [ -n "$seed" ]; then
    export YAAD_POWERLOSS_SEED="$seed"
fi
YAAD_POWERCUTS="$model" cargo test --release --test hub_model powercut -- --nocapture
# One test thread per mode (the default, one per CPU, would leave mem mode waiting).
exec cargo test --release --test powerloss_binary -- --nocapture --test-threads 4
