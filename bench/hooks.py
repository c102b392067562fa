#!/usr/bin/env python3
"""Hooks never delay supervision: how late a crashed service's automatic restart comes
after its scheduled delay, with and without an `on_exit` hook that takes 2 s, and the
time from the recorded exit to the hook's first instruction.

    cargo build && python3 bench/hooks.py [--runs 8] [--tend target/debug/tend]

Each pass: a service that exits with code 1 after 100 ms (restart always, restart delay
10 ms, doubling per quick crash; start limit off) crashes `runs` times. Lateness: the
`restart` event's time minus the `exit` event's, minus the delay its `backoff` event
announced. The hook writes its clock as it starts.
"""
import argparse, datetime, json, os, statistics, subprocess, tempfile, time


def at_ms(e):
    t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def delay_ms(detail):
    d = detail.rsplit(" in ", 1)[1]
    return float(d[:-2]) if d.endswith("ms") else float(d[:-1]) * 1000


def tend(home, *args):
    return subprocess.run([TEND, "--home", home, *args], check=True,
                          capture_output=True, text=True).stdout


def measure(with_hook, runs):
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as work:
        stamps = os.path.join(work, "stamps")
        args = ["add", "crash", "--restart", "always", "--restart-delay", "10ms",
                "--start-limit", "0"]
        if with_hook:
            args += ["--on-exit",
                     f"echo $TEND_EVENT_ID $(date +%s%3N) >> {stamps}; sleep 2"]
        tend(home, *args, "--", "sh", "-c", "sleep 0.1; exit 1")
        tend(home, "daemon")
        try:
            subprocess.run([TEND, "--home", home, "start", "crash"], capture_output=True)
            deadline = time.time() + 120
            while time.time() < deadline:
                ev = json.loads(tend(home, "events", "crash", "--json", "-n", "100000"))
                if sum(e["kind"] == "restart" for e in ev) >= runs:
                    break
                time.sleep(0.2)
            tend(home, "stop", "crash")
        finally:
            tend(home, "daemon", "stop")
        ev = json.loads(tend(home, "events", "crash", "--json", "-n", "100000"))
        at = {e["id"]: at_ms(e) for e in ev}
        restart, exit_at, delay = [], None, None
        for e in ev:
            if e["kind"] == "exit" and "stop requested" not in e["detail"]:
                exit_at = at_ms(e)
            elif e["kind"] == "backoff":
                delay = delay_ms(e["detail"])
            elif e["kind"] == "restart" and exit_at is not None and delay is not None:
                restart.append(at_ms(e) - exit_at - delay)
                exit_at = delay = None
        hook = []
        if with_hook and os.path.exists(stamps):
            for line in open(stamps):
                eid, t = line.split()
                if int(eid) in at:
                    hook.append(int(t) - at[int(eid)])
        return restart[:runs], hook


def main():
    global TEND
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--tend", default="target/debug/tend")
    a = p.parse_args()
    TEND = os.path.abspath(a.tend)
    for with_hook in (False, True):
        restart, hook = measure(with_hook, a.runs)
        line = (f"{'with' if with_hook else 'without'} a 2 s on_exit hook: restart late by "
                f"median {statistics.median(restart):.0f} ms, max {max(restart):.0f} ms "
                f"({len(restart)} restarts)")
        if hook:
            line += (f"; exit to the first hook's start {hook[0]} ms (later runs wait "
                     f"their turn behind it)")
        print(line)


if __name__ == "__main__":
    main()
