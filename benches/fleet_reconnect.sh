#!/bin/sh
# How long fleet daemons take to be back after PostgreSQL returns (issue 10).
#
#   sudo benches/fleet_reconnect.sh [HOSTS] [DOWN_SECONDS]
#
# Needs root and Debian's postgresql-common (pg_createcluster): it creates a throwaway
# cluster on port 5499, joins HOSTS daemons (default 10) to a fleet there, stops the
# server for DOWN_SECONDS (default 20, so every daemon's backoff reaches its cap),
# starts it again and prints, per daemon, the seconds from the server accepting
# connections to that daemon having joined again (its log's "joined the fleet"), then
# the median and the maximum. Everything it created is removed at the end.
set -eu
HOSTS=${1:-10}
DOWN=${2:-20}
VER=$(ls /usr/lib/postgresql | sort -n | tail -1)
PORT=5499
NAME=tend_reconnect_$$
TEND=${TEND_BIN:-$(dirname "$0")/../target/release/tend}
WORK=$(mktemp -d)
URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"
cleanup() {
    for i in $(seq 1 "$HOSTS"); do
        "$TEND" --home "$WORK/h$i" daemon stop --all >/dev/null 2>&1 || true
    done
    pg_dropcluster --stop "$VER" "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
pg_createcluster "$VER" "$NAME" -p "$PORT" -- --auth=trust >/dev/null
pg_ctlcluster "$VER" "$NAME" start
"$TEND" --home "$WORK/admin" fleet init --postgres "$URL" --schema rc >/dev/null
for i in $(seq 1 "$HOSTS"); do
    "$TEND" --home "$WORK/h$i" add svc -- sleep 1000000 >/dev/null
    "$TEND" --home "$WORK/h$i" start svc >/dev/null
    "$TEND" --home "$WORK/h$i" daemon --postgres "$URL" --schema rc --host-id "h$i" \
        --channel rc_quick >/dev/null
done
sleep 3
pg_ctlcluster "$VER" "$NAME" stop -m fast
sleep "$DOWN"
pg_ctlcluster "$VER" "$NAME" start &
# The moment the server accepts connections (pg_ctlcluster itself returns later).
until pg_isready -q -h 127.0.0.1 -p "$PORT"; do sleep 0.01; done
BACK=$(date +%s.%N)
wait
sleep 8
for i in $(seq 1 "$HOSTS"); do
    # The last "joined the fleet" line of each daemon's log (RFC 3339 UTC timestamp).
    T=$(grep "joined the fleet" "$WORK/h$i/daemon.log" | tail -1 | cut -d' ' -f1)
    echo "$(date -d "$T" +%s.%N) $BACK" | awk '{ printf "%.3f\n", $1 - $2 }'
done | sort -n | awk '
    { v[NR] = $1; printf "back after %s s\n", $1 }
    END { printf "median %.3f s, max %.3f s (n=%d, server down '"$DOWN"' s)\n", v[int((NR + 1) / 2)], v[NR], NR }'
