#!/usr/bin/env bash
# How fast the tend binary starts, beside /bin/true (issue 15: `tend --version` within
# 1.3 x /bin/true).
#
#     cargo build --release && bench/startup.sh            # target/release/tend
#     bench/startup.sh path/to/tend [RUNS]                 # another binary, RUNS each
#
# Prints hyperfine's wall time (mean ± σ, min, median) of /bin/true, `tend --version`,
# `tend list` on an empty home (its database already made, no services), and
# `tend start` / `tend stop` of a `sleep` service; the ratios to /bin/true; and
# callgrind's instruction counts (load-independent) of `tend --version`, `tend list` on
# that empty home, and the very first `tend list` of a new home (which creates the
# database). Needs hyperfine; valgrind is optional. Everything runs in a temporary
# home, removed at the end (its service stopped first).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
tend=$(realpath "${1:-$here/target/release/tend}")
runs=${2:-1000}
[ -x "$tend" ] || { echo "no tend binary at $tend (cargo build --release)" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine is needed" >&2; exit 1; }

work=$(mktemp -d)
home=$work/home   # one `sleep` service, for start and stop
empty=$work/empty # a database and no service, for list
cleanup() {
    "$tend" --home "$home" stop --all >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$tend" --home "$empty" list >/dev/null # makes the database: later lists find it made
"$tend" --home "$home" add s -- sleep 1000 >/dev/null

echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "tend: $tend ($(stat -c %s "$tend") bytes)"
echo
hyperfine -N -w 50 -r "$runs" --export-json "$work/a.json" \
    /bin/true "$tend --version" "$tend --home $empty list" >/dev/null 2>&1
# start with the service stopped before each run; stop with it started.
hyperfine -N -w 5 -r $((runs / 5)) --export-json "$work/b.json" \
    -p "$tend --home $home stop s" "$tend --home $home start s" >/dev/null 2>&1
hyperfine -N -w 5 -r $((runs / 5)) --export-json "$work/c.json" \
    -p "$tend --home $home start s" "$tend --home $home stop s" >/dev/null 2>&1

python3 - "$work" "$tend" "$home" "$empty" <<'EOF'
import json, sys
work, tend, home, empty = sys.argv[1:]
rows = []
for f in ("a", "b", "c"):
    rows += json.load(open(f"{work}/{f}.json"))["results"]
def stats(r):
    t = sorted(r["times"])
    return r["mean"] * 1e3, r["stddev"] * 1e3, t[0] * 1e3, t[len(t) // 2] * 1e3
base = stats(rows[0])
print(f"{'command':<22} {'mean ± σ (ms)':>16} {'min':>7} {'median':>7}   x /bin/true (mean, median)")
for r in rows:
    mean, sd, lo, med = stats(r)
    name = r["command"].replace(tend, "tend").replace(f"--home {home} ", "")
    name = name.replace(f"--home {empty} ", "")
    print(f"{name:<22} {mean:8.3f} ± {sd:5.3f} {lo:7.3f} {med:7.3f}   {mean / base[0]:5.2f}  {med / base[3]:5.2f}")
EOF

if command -v valgrind >/dev/null; then
    echo
    count() { valgrind --tool=callgrind --callgrind-out-file="$work/cg" "$@" 2>&1 >/dev/null |
        sed -n 's/.*Collected : //p'; }
    echo "instructions (callgrind):"
    echo "  /bin/true                  $(count /bin/true)"
    echo "  tend --version             $(count "$tend" --version)"
    echo "  tend list (empty home)     $(count "$tend" --home "$empty" list)"
    echo "  tend list (new home)       $(count "$tend" --home "$work/new" list)"
    rm -rf "$work/new"
fi
