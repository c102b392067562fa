#!/usr/bin/env bash
# From `tend up` to every service ready: a services file of N services, each the test
# fixture listening on its own port with a `tcp` readiness check, service i requiring
# service i-1 for the first three (a chain: each starts only once the one before is
# ready), the rest independent. The time is taken from just before `tend up` is started
# to the moment it prints `ready in` on stderr (read as it is written), RUNS times; then
# SIGINT, and the next run waits for that one to have stopped everything.
#
#     cargo build --release --bins && bench/up.sh            # 3 and 10 services, 20 runs
#     bench/up.sh path/to/tend path/to/tend-test-service [RUNS]
#
# Prints, for each N, the median, the fastest and the slowest run in ms, and up's own
# figure (it measures from its start to the last ready, so the difference is the time
# to read the file, open the home and start the daemon before it begins counting).
# Everything runs in a temporary directory (and state home), removed at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
tend=$(realpath "${1:-$here/target/release/tend}")
fixture=$(realpath "${2:-$here/target/release/tend-test-service}")
runs=${3:-20}
[ -x "$tend" ] || { echo "no tend binary at $tend (cargo build --release --bins)" >&2; exit 1; }
[ -x "$fixture" ] || { echo "no fixture at $fixture" >&2; exit 1; }

work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

base=$((20000 + RANDOM % 20000))
for n in 3 10; do
    times=()
    own=()
    for r in $(seq 1 "$runs"); do
        # Fresh ports each run: the readiness checks' connections leave TIME_WAIT behind.
        file=$work/tend-$n.toml
        : >"$file"
        for i in $(seq 1 "$n"); do
            port=$((base + i))
            {
                echo "[services.s$i]"
                echo "cmd = [\"$fixture\", \"--listen\", \"$port\"]"
                echo "ready = { tcp = \"$port\" }"
                if [ "$i" -ge 2 ] && [ "$i" -le 3 ]; then echo "requires = [\"s$((i - 1))\"]"; fi
                echo
            } >>"$file"
        done
        err=$work/err
        : >"$err"
        t0=$(date +%s%N)
        "$tend" --home "$work/home-$n" up -f "$file" >/dev/null 2>"$err" &
        pid=$!
        while ! grep -q 'ready in\|did not start' "$err"; do
            if ! kill -0 "$pid" 2>/dev/null; then cat "$err" >&2; exit 1; fi
            sleep 0.001
        done
        t1=$(date +%s%N)
        grep -q 'ready in' "$err" || { cat "$err" >&2; exit 1; }
        times+=($(((t1 - t0) / 1000000)))
        own+=("$(sed -n 's/.*ready in \([0-9]*\) ms.*/\1/p' "$err")")
        kill -INT "$pid"
        wait "$pid" || { echo "tend up exited $?" >&2; cat "$err" >&2; exit 1; }
        pid=
        base=$((base + n))
    done
    sorted=($(printf '%s\n' "${times[@]}" | sort -n))
    osorted=($(printf '%s\n' "${own[@]}" | sort -n))
    mid=$((runs / 2))
    echo "$n services: median ${sorted[$mid]} ms (min ${sorted[0]}, max ${sorted[$((runs - 1))]}) from launch to all ready; up's own count: median ${osorted[$mid]} ms ($runs runs)"
done
