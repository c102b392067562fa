#!/usr/bin/env python3
"""The fleet at scale: many real daemons on this machine against a private PostgreSQL.

    python3 bench/fleet.py                 # 200 daemons, 10 samples, a 60 s idle window
    python3 bench/fleet.py --hosts 20 --samples 3 --idle 30

Each daemon has a state home and a host id of its own (b0, b1, ...) and one service
(`sleep`, which exits at once on SIGTERM). The cluster is initdb'd in the run's temporary
directory, listens on a free port of 127.0.0.1 with trust authentication and
`max_connections` = hosts + 30 (as root it runs as the `postgres` OS user). Measured and
printed:

1. server connections per host: backends named `tend daemon HOST` in pg_stat_activity,
   and every client backend of the database, divided by the hosts;
2. transactions per idle host per second: xact_commit + xact_rollback of the database
   (pg_stat_database) over the idle window, after a settling pause (an idle backend
   flushes its statistics within 10 s);
3. what a one-host command wakes: every daemon's counters (`daemon status --json`:
   fleet wake-ups, claim attempts, sweeps) before and after `fleet restart svc --host b0
   --wait 30s`; a daemon counts as woken when it received a wake-up, and as having
   claimed when it made more claim attempts than sweeps (a sweep is one claim);
4. `tend fleet restart svc --wait 30s` across every host until every result is printed
   (each run must print one `done` line per host): median, min and max of the samples
   (one more run first, not counted);
5. a model for 1,000 hosts from the per-host figures.

As root it raises `fs.inotify.max_user_instances` (each daemon holds two inotify
instances) for the run, and puts it back. Everything it starts carries the run's mark and is ended by pid at the end (Ctrl-C
included); the cluster is stopped and the directory removed (`--keep` keeps it).
Exit status 0 when every figure was measured and every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path

import benchlib as B


def pg_bindir() -> Path:
    need = ("initdb", "pg_ctl", "postgres")
    if os.environ.get("TEND_TEST_PG_BINDIR"):
        return Path(os.environ["TEND_TEST_PG_BINDIR"])
    w = shutil.which("initdb")
    if w:
        d = Path(os.path.realpath(w)).parent
        if all((d / n).exists() for n in need):
            return d
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                   key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    for d in reversed(found):
        if all((Path(d) / n).exists() for n in need):
            return Path(d)
    raise SystemExit("fleet bench: PostgreSQL server programs (initdb, pg_ctl) not found; "
                     "install postgresql or set TEND_TEST_PG_BINDIR")


class Cluster:
    def __init__(self, base: Path, max_connections: int):
        self.bin = pg_bindir()
        self.dir = base / "pg"
        self.dir.mkdir()
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.user = None
        if os.geteuid() == 0:
            import pwd
            self.user = pwd.getpwnam("postgres")
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"
        self.server("initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-E", "UTF8",
                    "--locale=C", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    f"max_connections = {max_connections}\n")
        self.server("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def server(self, prog, *args, check=True):
        argv = [str(self.bin / prog), *map(str, args)]
        if self.user:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return B.run(argv, check=check, timeout=120, cwd=self.dir)

    def stop(self):
        self.server("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "60", "stop",
                    check=False)

    def query(self, sql: str) -> str:
        return B.run(["psql", "-X", "-q", "-A", "-t", "-d", self.url, "-c", sql]).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--idle", type=int, default=60, help="idle window in seconds")
    ap.add_argument("--tend", help="the tend binary (default: cargo build --release)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    ok = True
    with B.Run("fleet", max_seconds=3600, keep=a.keep) as run:
        tend = B.build_tend(a.tend)
        # Every daemon holds inotify instances (two, here: it watches its files); the
        # usual per-user limit is 128. As root the bench raises it for the run.
        limit = Path("/proc/sys/fs/inotify/max_user_instances")
        was = int(limit.read_text())
        need = a.hosts * 2 + 512  # others of this user hold instances too
        if was < need:
            if os.geteuid() != 0:
                raise SystemExit(f"fleet bench: fs.inotify.max_user_instances is {was}; "
                                 f"{a.hosts} daemons need {need} (sysctl -w, as root)")
            limit.write_text(str(need))
            run.cleanups.append(lambda: limit.write_text(str(was)))
        cluster = Cluster(run.dir, a.hosts + 30)
        run.cleanups.append(cluster.stop)
        schema = "tend_fleet"
        env = dict(os.environ)
        env.pop("TEND_POSTGRES_URL", None)
        admin = run.dir / "admin"

        def fleet(*args, timeout=60.0):
            return B.run([str(tend), "--home", str(admin), "fleet", *args, "--postgres",
                          cluster.url, "--schema", schema], timeout=timeout, env=env)

        fleet("init")
        homes = []
        t0 = time.monotonic()
        for i in range(a.hosts):
            home = run.dir / f"h{i}"
            homes.append(home)
            t = lambda *args: B.run([str(tend), "--home", str(home), *args], env=env)
            t("add", "svc", "--", "sleep", "1000000")
            t("start", "svc")
            t("daemon", "--postgres", cluster.url, "--schema", schema, "--host-id", f"b{i}",
              "--channel", "tend_bench_quick")
        joined_sql = (f"SELECT count(*) FROM {schema}.services WHERE state = 'running' "
                      f"AND host_id IN (SELECT id FROM {schema}.hosts "
                      f"WHERE last_seen > now() - interval '30 seconds')")
        B.wait_for(lambda: int(cluster.query(joined_sql)) == a.hosts, 300,
                   f"{a.hosts} hosts to join", step=0.5)
        print(f"{a.hosts} daemons started and joined in {time.monotonic() - t0:.1f} s "
              f"(2 cores, load {os.getloadavg()[0]:.1f})", flush=True)

        # 1. Connections.
        named = int(cluster.query(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'tend daemon %'"))
        clients = int(cluster.query(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()"))
        conns = named / a.hosts
        print(f"connections per host: {conns:.2f} (daemons' {named}, every client backend "
              f"{clients}, for {a.hosts} hosts)")
        ok &= conns <= 1.0

        # 2. Idle cost.
        xacts_sql = ("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                     "WHERE datname = current_database()")
        time.sleep(15)
        x0, w0 = int(cluster.query(xacts_sql)), time.monotonic()
        time.sleep(a.idle)
        x1, w1 = int(cluster.query(xacts_sql)), time.monotonic()
        tx = (x1 - x0) / (w1 - w0) / a.hosts
        print(f"idle: {tx:.3f} transactions/s per host ({x1 - x0} in {w1 - w0:.0f} s, "
              f"{a.hosts} hosts)")
        ok &= tx <= 0.2

        # 3. A one-host command.
        def counters():
            out = {}
            for i, home in enumerate(homes):
                p = json.loads(B.run([str(tend), "--home", str(home), "daemon", "status",
                                      "--json"], env=env).stdout)["postgres"]
                out[i] = (p["fleet_wakeups"], p["fleet_claims"], p["fleet_sweeps"])
            return out
        before = counters()
        r = fleet("restart", "svc", "--host", "b0", "--wait", "30s")
        time.sleep(1)
        after = counters()
        woken = [i for i in before if after[i][0] > before[i][0]]
        claimed = [i for i in before
                   if (after[i][1] - before[i][1]) > (after[i][2] - before[i][2])]
        print(f"one-host command: {len(woken)} daemon(s) woken {['b%d' % i for i in woken]}, "
              f"{len(claimed)} claimed beyond their sweeps {['b%d' % i for i in claimed]}; "
              f"b0: {after[0][1] - before[0][1]} claim attempt(s); result {r.stdout.strip()!r}")
        ok &= woken == [0] and claimed == [0]

        # 4. fleet restart --wait across every host.
        samples = []
        for k in range(a.samples + 1):
            s0 = B.now()
            r = fleet("restart", "svc", "--wait", "30s", timeout=120)
            took = (B.now() - s0) / 1e9
            done = sum(1 for l in r.stdout.splitlines() if "\tdone\t" in l)
            if done != a.hosts:
                print(f"sample {k}: only {done} of {a.hosts} done:\n{r.stdout}{r.stderr}")
                ok = False
            if k > 0:
                samples.append(took)
        med = statistics.median(samples)
        print(f"fleet restart svc --wait across {a.hosts} hosts, every result printed: "
              f"median {med * 1e3:.0f} ms, min {min(samples) * 1e3:.0f}, max "
              f"{max(samples) * 1e3:.0f} (n={len(samples)}, load {os.getloadavg()[0]:.1f})")
        ok &= med <= 1.5

        # 5. The model.
        print(f"model, 1,000 hosts: {conns * 1000:.0f} connections, "
              f"{tx * 1000:.0f} transactions/s idle")
        for home in homes:
            B.run([str(tend), "--home", str(home), "daemon", "stop"], check=False, env=env)
    print("all targets met" if ok else "SOME TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
