#!/bin/sh
# Instruction counts (valgrind's callgrind: repeatable whatever else the machine does)
# of tend's start-up, of `tend list`, of the CLI's side of a start and a stop that go
# through the daemon, and of the daemon's side of one request (the daemon runs under
# callgrind; its counters are zeroed before and dumped after the request).
#
# Valgrind 3.19 (Debian 12's) does not know pidfd_open (syscall 434): under it every
# spawn fails at the pinning step, so a start that spawns cannot be counted, neither in
# the CLI without a daemon nor in the daemon. The daemon's request is therefore a start
# of a service that already runs: the whole request path (connection, request thread,
# state database, liveness check, answer) without the spawn itself.
#
#     bench/callgrind.sh [TEND_BINARY]      (default: target/release/tend)
#
# Everything runs in a temporary state home, which is removed at the end with
# everything it started.
set -eu
TEND=$(realpath "${1:-target/release/tend}")
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
H=$(mktemp -d /tmp/tend-callgrind.XXXXXX)
OUT=$H/out
mkdir -p "$OUT"
DPID=
cleanup() {
    "$TEND" --home "$H/home" stop --all >/dev/null 2>&1 || true
    [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $H" >&2 || rm -rf "$H"
}
trap cleanup EXIT INT TERM
t() { "$TEND" --home "$H/home" "$@"; }
count() { # label, command...
    label=$1; shift
    valgrind --tool=callgrind --callgrind-out-file="$OUT/cli.%p" "$@" >/dev/null 2>"$OUT/cli.err" ||
        { cat "$OUT/cli.err" >&2; exit 1; }
    main=$(sed -n 's/^==\([0-9]*\)== Command:.*/\1/p' "$OUT/cli.err" | head -n 1)
    printf '%-44s %12s instructions\n' "$label" \
        "$(sed -n "s/^==$main== Collected : *//p" "$OUT/cli.err")"
}
total() { # sum of the "summary:" / "totals:" lines of every dump part of one run
    awk '/^(summary|totals):/ {s += $2} END {print s}' "$@"
}
t add svc -- /bin/sleep 1000000 >/dev/null
t start svc >/dev/null
count "tend --version" "$TEND" --version
count "list (1 running service)" "$TEND" --home "$H/home" list
count "status svc (running)" "$TEND" --home "$H/home" status svc
t stop svc >/dev/null

# The daemon under callgrind, in the foreground.
valgrind --tool=callgrind --callgrind-out-file="$OUT/daemon.%p" --dump-instr=no \
    "$TEND" --home "$H/home" daemon --foreground >/dev/null 2>"$OUT/daemon.err" &
DPID=$!
i=0
until t daemon status >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 600 ] || { echo "callgrind.sh: the daemon did not come up" >&2; cat "$OUT/daemon.err" >&2; exit 1; }
    sleep 0.1
done
one() { # label, tend args: one request, the CLI's and the daemon's instructions for it
    what=$1; shift
    sleep 1 # let the daemon settle (heartbeat, rotation) before zeroing
    callgrind_control --zero "$DPID" >/dev/null
    count "$what, CLI side" "$TEND" --home "$H/home" "$@"
    sleep 1.5 # the request thread ends and the loop goes back to sleep
    rm -f "$OUT"/daemon.$DPID.*
    callgrind_control --dump "$DPID" >/dev/null
    printf '%-44s %12s instructions\n' "$what, daemon side" "$(total "$OUT"/daemon.$DPID.*)"
}
one "stop (not running; warm-up)" stop svc
one "stop (not running), daemon" stop svc
one "stop (not running), daemon, again" stop svc
