#!/usr/bin/env bash
# tend list / tend status beside runit's `sv status`, measured side by side (issue 15).
#
#   bench/list.sh                       # uses target/release/tend
#   TEND_BIN=path/to/tend bench/list.sh
#
# Prints, each from hyperfine (-N: no shell; stdout to /dev/null):
#   1. runit `sv status` of 100 service directories, each running `sleep`;
#   2. `tend list` and `tend status` of the middle one with 100 running `sleep` services, and their
#      ratio to (1) (target: <= 1.0);
#   3. `tend list` of 1,000 services, defined and not started, then all 1,000 running
#      (target: <= 10 ms);
#   4. callgrind instruction counts (Ir) of `tend list` and `tend status` with 100 running,
#      and the syscalls of one `tend list` (strace -c -f), when valgrind / strace exist.
#
# Environment: TEND_BIN (binary), N (services beside runit, default 100), BIG (default
# 1000), RUNS (hyperfine --runs, default 300; the 1,000 lists use a third).
#
# Everything it starts is gone at the end, however it ends: the tend homes are stopped
# with `tend stop --all`, runsvdir and every runsv get `sv exit`/SIGTERM by pid, the
# `sleep`s started under runit are killed by the pids runsv recorded, the homes' emptied
# cgroups are removed (rmdir, deepest first) and the temporary directory is removed.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
TEND=${TEND_BIN:-$here/target/release/tend}
N=${N:-100}
BIG=${BIG:-1000}
RUNS=${RUNS:-300}
[ "$RUNS" -ge 6 ] || RUNS=6 # the 1,000 lists run a third as often; hyperfine needs 2
[ -x "$TEND" ] || { echo "no tend binary at $TEND (cargo build --release)" >&2; exit 2; }
for t in hyperfine sv runsvdir python3; do
    command -v "$t" >/dev/null || { echo "$t is needed" >&2; exit 2; }
done

tmp=$(mktemp -d /tmp/tend-list-bench.XXXXXX)
runsvdir_pid=
cleanup() {
    set +e
    for h in "$tmp"/home-*; do
        [ -d "$h" ] && "$TEND" --home "$h" stop --all >/dev/null 2>&1
    done
    # The homes' cgroups (tend-<key>, where it runs services in cgroups), now empty:
    # rmdir removes only empty ones, deepest first.
    for c in "$tmp"/cgroup-*; do
        [ -f "$c" ] && find "$(cat "$c")" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    if [ -d "$tmp/sv" ]; then
        # Take the sleeps down first, then each runsv, then runsvdir.
        sv force-stop "$tmp"/sv/* >/dev/null 2>&1
        sv exit "$tmp"/sv/* >/dev/null 2>&1
        [ -n "$runsvdir_pid" ] && kill -TERM "$runsvdir_pid" 2>/dev/null
        [ -n "$runsvdir_pid" ] && wait "$runsvdir_pid" 2>/dev/null
        for p in "$tmp"/sleep-pids/*; do
            [ -f "$p" ] || continue
            pid=$(cat "$p")
            # Only a sleep of ours: its cmdline names the marker argument.
            if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "sleep 1000077"; then
                kill -KILL "$pid" 2>/dev/null
            fi
        done
    fi
    # (The brackets keep this grep from matching its own command line.)
    left=$(grep -l "100007[7]\|100008[8]" /proc/[0-9]*/cmdline 2>/dev/null | wc -l)
    [ "$left" -gt 0 ] && echo "warning: $left benchmark process(es) still running" >&2
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

stats() { # FILE LABEL: mean ± sd (min) in ms, from hyperfine's JSON
    python3 - "$1" "$2" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print(f"  {sys.argv[2]:<44} {r['mean']*1e3:7.3f} ms ± {(r['stddev'] or 0)*1e3:6.3f}  "
      f"(min {r['min']*1e3:6.3f}, median {r['median']*1e3:6.3f}, {len(r['times'])} runs)")
EOF
}
mean() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["mean"])' "$1"; }
median() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$1"; }
hf() { # JSON RUNS COMMAND
    hyperfine -N --style none --warmup 20 --runs "$2" --export-json "$1" "$3" >/dev/null
}

home_cgroup() { # HOME TAG: note the home's cgroup (from a running instance's) for cleanup
    local path
    path=$("$TEND" --home "$1" list --json |
        python3 -c 'import json,sys; print(next((s["cgroup"]["path"] for s in json.load(sys.stdin) if s.get("cgroup")), ""))')
    # .../tend-<key>/NAME.service/run-...: keep .../tend-<key>.
    [ -n "$path" ] && dirname "$(dirname "$path")" >"$tmp/cgroup-$2"
    return 0
}

wait_for() { # SECONDS COMMAND...
    local until=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $until ] || { echo "timed out waiting for: $*" >&2; return 1; }
        sleep 0.1
    done
}

echo "tend:   $TEND ($("$TEND" --version))"
echo "runit:  $(command -v sv)"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# 1. runit: N service directories under one runsvdir.
mkdir -p "$tmp/sv" "$tmp/sleep-pids"
for i in $(seq -f %03g 0 $((N - 1))); do
    mkdir "$tmp/sv/s$i"
    printf '#!/bin/sh\nexec sleep 1000077\n' >"$tmp/sv/s$i/run"
    chmod +x "$tmp/sv/s$i/run"
done
setsid runsvdir "$tmp/sv" </dev/null >/dev/null 2>&1 &
runsvdir_pid=$!
all_up() {
    local n
    n=$(cat "$tmp"/sv/*/supervise/stat 2>/dev/null | grep -c '^run$' || true)
    [ "$n" -eq "$N" ]
}
wait_for 30 all_up
for d in "$tmp"/sv/*; do cp "$d/supervise/pid" "$tmp/sleep-pids/$(basename "$d")"; done
sv_cmd="sv status $(echo "$tmp"/sv/*)"
hf "$tmp/sv.json" "$RUNS" "$sv_cmd"

# 2. tend: N running services.
H="$tmp/home-100"
for i in $(seq -f %03g 0 $((N - 1))); do
    "$TEND" --home "$H" add "s$i" -- /bin/sleep 1000088 >/dev/null
done
"$TEND" --home "$H" start --all >/dev/null
home_cgroup "$H" 100
running=$("$TEND" --home "$H" list | grep -c ' running ' || true)
[ "$running" -eq "$N" ] || { echo "only $running of $N tend services run" >&2; exit 1; }
hf "$tmp/list.json" "$RUNS" "$TEND --home $H list"
mid=s$(printf %03d $((N / 2)))
hf "$tmp/status.json" "$RUNS" "$TEND --home $H status $mid"

# 3. tend list of BIG services: defined only, then all running.
B="$tmp/home-big"
for i in $(seq -f %04g 0 $((BIG - 1))); do
    "$TEND" --home "$B" add "s$i" -- /bin/sleep 1000088 >/dev/null
done
hf "$tmp/big-defined.json" $((RUNS / 3)) "$TEND --home $B list"
"$TEND" --home "$B" start --all >/dev/null
home_cgroup "$B" big
hf "$tmp/big-running.json" $((RUNS / 3)) "$TEND --home $B list"
"$TEND" --home "$B" stop --all >/dev/null

echo "side by side, $N services each (hyperfine -N, warm-up 20):"
stats "$tmp/sv.json" "runit: sv status of $N dirs"
stats "$tmp/list.json" "tend list, $N running"
stats "$tmp/status.json" "tend status $mid, $N running"
python3 - "$tmp" <<'EOF'
import json, sys
d = sys.argv[1]
r = lambda f: json.load(open(f"{d}/{f}.json"))["results"][0]
sv = r("sv")
for f, label in (("list", "tend list"), ("status", "tend status")):
    t = r(f)
    print(f"  ratio {label} / sv status: {t['mean']/sv['mean']:.2f} (mean), "
          f"{t['median']/sv['median']:.2f} (median), {t['min']/sv['min']:.2f} (min)"
          f"   target <= 1.0")
EOF
echo
echo "tend list of $BIG services (target <= 10 ms):"
stats "$tmp/big-defined.json" "tend list, $BIG defined, none running"
stats "$tmp/big-running.json" "tend list, $BIG running"

# 4. Instruction counts and syscalls: stable where wall time is not.
if command -v valgrind >/dev/null; then
    echo
    echo "callgrind, $N running (instructions, whole process):"
    for what in list "status $mid"; do
        # shellcheck disable=SC2086
        valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
            "$TEND" --home "$H" $what >/dev/null 2>"$tmp/cg.err"
        ir=$(grep -m1 '^summary:' "$tmp/cg.out" | awk '{print $2}')
        printf '  %-44s %12s Ir\n' "tend $what" "$(printf "%'d" "$ir")"
    done
fi
if command -v strace >/dev/null; then
    echo
    echo "syscalls, one tend list with $N running (strace -c -f):"
    strace -c -f -o "$tmp/strace.txt" "$TEND" --home "$H" list >/dev/null
    total=$(awk '$NF == "total" {print $4}' "$tmp/strace.txt")
    echo "  total $total ($(python3 -c "print(f'{$total/$N:.1f}')") per service, fixed costs included); top calls:"
    grep -E '^ +[0-9]' "$tmp/strace.txt" | sort -k4 -n -r | head -8 |
        awk '{printf "    %-16s %6d\n", $NF, $4}'
fi
