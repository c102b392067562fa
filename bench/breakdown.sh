#!/bin/sh
# Where the time of a `tend start` / `tend stop` through the daemon goes, measured as
# differences of commands that each add one step:
#
#   /bin/true                         exec and exit of a minimal dynamic binary
#   tend --version                    + tend's own start-up (loader, runtime, arguments)
#   tend stop idle   (through daemon) + a round trip to the daemon with a database read
#   tend start svc   (through daemon) + spawn, commit, exec confirmed (svc = /bin/sleep)
#   tend stop svc    (through daemon) + finding the service's processes, TERM, death seen
#   tend start/stop svc, no daemon    the same work in the CLI itself
#
#     bench/breakdown.sh [TEND_BINARY] [RUNS]     (default: target/release/tend, 200)
#
# hyperfine runs each command RUNS times (start and stop alternate through --prepare);
# everything runs in a temporary state home, removed at the end with what it started.
set -eu
TEND=$(realpath "${1:-target/release/tend}")
RUNS=${2:-200}
command -v hyperfine >/dev/null || { echo "breakdown.sh: hyperfine is not installed (apt-get install hyperfine)" >&2; exit 2; }
H=$(mktemp -d /tmp/tend-breakdown.XXXXXX)
cleanup() {
    "$TEND" --home "$H/d" stop --all >/dev/null 2>&1 || true
    "$TEND" --home "$H/d" daemon stop >/dev/null 2>&1 || true
    "$TEND" --home "$H/n" stop --all >/dev/null 2>&1 || true
    rm -rf "$H"
}
trap cleanup EXIT INT TERM
for h in d n; do
    "$TEND" --home "$H/$h" add svc -- /bin/sleep 1000000 >/dev/null
    "$TEND" --home "$H/$h" add idle -- /bin/sleep 1000000 >/dev/null
done
"$TEND" --home "$H/d" daemon >/dev/null
d="$TEND --home $H/d"
n="$TEND --home $H/n"
hf() { hyperfine -N -w 10 -r "$RUNS" --style none --export-json "$H/out.json" "$@" >/dev/null 2>"$H/err" ||
           { cat "$H/err" >&2; exit 1; }
       python3 - "$H/out.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    t = sorted(r["times"])
    print(f"{r['command'].split(' --home ')[0].rsplit('/', 1)[-1] + (' ' + r['command'].split(' ', 3)[-1] if ' --home ' in r['command'] else ''):<44} median {1e3 * t[len(t) // 2]:6.2f} ms   min {1e3 * t[0]:6.2f} ms")
PY
}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
hf /bin/true "$TEND --version"
hf "$d stop idle"
hf --prepare "$d stop svc" "$d start svc"
hf --prepare "$d start svc" "$d stop svc"
echo "(no daemon)"
hf --prepare "$n stop svc" "$n start svc"
hf --prepare "$n start svc" "$n stop svc"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
