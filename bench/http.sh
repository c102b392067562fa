#!/usr/bin/env bash
# The HTTP API's cost: a scrape of /metrics with N running services (median and spread
# of 50 scrapes, curl's own timer), and the daemon's CPU time while idle with the API on
# (its utime+stime over a quiet minute).
#
#   cargo build --release && bench/http.sh [N] [IDLE_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
IDLE=${2:-60}
TEND=${TEND:-target/release/tend}
home=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    "$TEND" --home "$home" daemon stop --all >/dev/null 2>&1 || true
    "$TEND" --home "$home" stop --all >/dev/null 2>&1 || true
    rm -rf "$home"
}
trap cleanup EXIT
{
    for i in $(seq 1 "$N"); do
        printf '[services.s%04d]\ncmd = "sleep 100000"\n\n' "$i"
    done
} > "$home/tend.toml"
"$TEND" --home "$home" apply -f "$home/tend.toml" >/dev/null
"$TEND" --home "$home" daemon --http "127.0.0.1:$port" >/dev/null
"$TEND" --home "$home" start --all >/dev/null
pid=$("$TEND" --home "$home" daemon status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
lines=$(curl -s "127.0.0.1:$port/metrics" | wc -l)
for _ in $(seq 1 5); do curl -s -o /dev/null "127.0.0.1:$port/metrics"; done
times=$(for _ in $(seq 1 50); do curl -s -o /dev/null -w '%{time_total}\n' "127.0.0.1:$port/metrics"; done | sort -n)
median=$(echo "$times" | sed -n 25p)
p10=$(echo "$times" | sed -n 5p)
p90=$(echo "$times" | sed -n 45p)
printf 'scrape of /metrics, %d services (%d lines): median %.1f ms (p10 %.1f, p90 %.1f)\n' \
    "$N" "$lines" "$(echo "$median*1000" | bc -l)" "$(echo "$p10*1000" | bc -l)" "$(echo "$p90*1000" | bc -l)"
ticks() { awk '{print $14+$15}' "/proc/$pid/stat"; }
sleep 2
before=$(ticks)
sleep "$IDLE"
after=$(ticks)
printf 'daemon CPU while idle with the API on: %d ticks (1/%s s) over %d s\n' \
    "$((after - before))" "$(getconf CLK_TCK)" "$IDLE"
