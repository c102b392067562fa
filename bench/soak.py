#!/usr/bin/env python3
"""A bounded fault soak of tend's daemon.

    python3 bench/soak.py                  # 10 minutes
    python3 bench/soak.py --duration 60    # what CI runs

Over 200 services run under the daemon (long runners, crash loops, `--restart always`
services killed at random, services that fork a child, services driven by the CLI and by
NOTIFY, services whose output goes through a log writer) while the soak SIGKILLs and
restarts the daemon (every third time under a descriptor limit below the number of
services), SIGSTOPs and continues it, runs concurrent `tend start/stop/restart`, SIGKILLs
log writers at random, keeps asking to start services whose env file is a FIFO, sends
NOTIFY commands in bursts, and stops its private PostgreSQL cluster (fast and immediate)
and starts it again. After every fault, and at the end, it checks and prints:

- duplicates: no service has two live instances (at every sample);
- records: the pid recorded for every running service is its live process, and every
  live service process is the one recorded (a mismatch must persist over 1.5 s to count:
  a record is allowed to trail an exit the daemon is handling);
- NOTIFY: every command sent while the daemon was connected (or stopped by SIGSTOP,
  its connection open) was carried out exactly once (one new start of the service);
- log writers: a service whose writer was killed is never restarted or killed for it,
  and its log grows again after the last kill;
- FIFO env files: every `tend start` of such a service fails at once (exit 1, naming the
  file) and nothing of it ever runs;
- after `tend stop --all`, no process of any service is left;
- `PRAGMA integrity_check` is ok;
- the daemon's RSS at the start and at the end;
- after each daemon restart, the time until every `always` service killed while no
  daemon ran runs again;
- panics and ERROR lines in the daemon log (a panic fails; ERROR lines are listed).

Exit status 0 when every check passed, 1 otherwise, 2 on a setup failure. Everything it
starts (services, daemons, the cluster) carries a mark in its environment and is ended by
pid at the end, Ctrl-C included; the temporary directory is removed (`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

CHANNEL = "tend_soak"


def log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failures:
    def __init__(self):
        self.items: list[str] = []
        self.lock = threading.Lock()

    def add(self, what: str):
        with self.lock:
            self.items.append(what)
        log(f"FAIL: {what}")


# ---------------------------------------------------------------------------------------
# The private PostgreSQL cluster
# ---------------------------------------------------------------------------------------


def pg_bindir() -> Path:
    need = ("initdb", "pg_ctl", "postgres")
    if os.environ.get("TEND_TEST_PG_BINDIR"):
        return Path(os.environ["TEND_TEST_PG_BINDIR"])
    w = shutil.which("initdb")
    if w:
        d = Path(os.path.realpath(w)).parent
        if all((d / n).exists() for n in need):
            return d
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    for d in reversed(found):
        if all((Path(d) / n).exists() for n in need):
            return Path(d)
    raise SystemExit("soak: PostgreSQL server programs (initdb, pg_ctl) not found; install postgresql "
                     "or set TEND_TEST_PG_BINDIR, or run with --no-postgres")


class Cluster:
    """initdb'd in the run's directory, on a free port of 127.0.0.1, trust auth; as root
    run as the `postgres` OS user (initdb refuses root)."""

    def __init__(self, base: Path):
        self.bin = pg_bindir()
        self.dir = base / "pg"
        self.dir.mkdir()
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.user = None
        if os.geteuid() == 0:
            import pwd
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise SystemExit("soak: as root the cluster runs as the `postgres` user, which does not exist")
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"
        self.server("initdb", "-D", self.data, "--auth=trust", "-U", "postgres", "-E", "UTF8",
                    "--locale=C", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.dir}'\nfsync = off\n")
        self.start()

    def server(self, prog, *args, check=True, timeout=120):
        argv = [str(self.bin / prog), *map(str, args)]
        if self.user:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return B.run(argv, check=check, timeout=timeout, cwd=self.dir)

    def start(self):
        self.server("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def stop(self, mode: str, check=True):
        self.server("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", check=check)

    def psql(self, *commands: str, check=True):
        argv = ["psql", "-X", "-q", "-d", self.url]
        for c in commands:  # every -c is a transaction of its own
            argv += ["-c", c]
        return B.run(argv, check=check, timeout=30)


# ---------------------------------------------------------------------------------------
# The soak
# ---------------------------------------------------------------------------------------


class Soak:
    def __init__(self, a, run: B.Run):
        self.a = a
        self.r = run
        self.fail = Failures()
        self.stop_chaos = threading.Event()
        self.pause_kills = threading.Event()
        self.daemon_down = threading.Event()  # set while no daemon runs (for the records)
        self.tend = str(B.build_tend(a.tend))
        self.svc = str(B.build_service(run.dir))
        self.home = run.dir / "home"
        self.times = run.dir / "times"
        self.times.mkdir()
        self.rng = random.Random(a.seed)
        self.cli_results: collections.Counter = collections.Counter()
        self.cli_unexpected: list[str] = []
        self.cli_fail_msgs: collections.Counter = collections.Counter()
        self.kills = 0
        self.writer_kills = 0
        self.fifo_starts: collections.Counter = collections.Counter()
        self.fifo_slowest = 0.0
        self.lowfd_daemons = 0
        self.notify_sent = self.notify_checked = self.notify_done = 0
        self.recoveries: list[float] = []
        self.answered: list[float] = []
        self.samples = 0
        self.lock = threading.Lock()
        self.cluster: Cluster | None = None

    # --- helpers --------------------------------------------------------------------
    def t(self, *args, check=True, timeout=60):
        return B.run([self.tend, "--home", str(self.home), *args], check=check, timeout=timeout)

    def lines(self, name):
        return B.start_lines(self.times / name)

    def live_service_procs(self, children=False) -> dict[str, list[int]]:
        """Service name -> live pids of the service program, found in /proc: the main
        processes, and with `children` also the children the gc-* services fork."""
        out: dict[str, list[int]] = collections.defaultdict(list)
        for p in B.pids():
            if B.exe(p) != self.svc or not B.alive(p):
                continue
            st = B.stat(p)
            if not children and st and B.exe(st[1]) == self.svc:
                continue
            argv = B.cmdline(p)
            if len(argv) > 1:
                out[Path(argv[1]).name].append(p)
        return out

    def daemon_pid(self) -> int | None:
        p = self.t("daemon", "status", "--json", check=False)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout).get("pid")

    def pg_state(self):
        p = self.t("daemon", "status", "--json", check=False)
        if p.returncode != 0:
            return None
        pg = json.loads(p.stdout).get("postgres") or {}
        return pg.get("state")

    # --- setup ----------------------------------------------------------------------
    def setup(self):
        a = self.a
        self.groups = {
            "long": [f"long-{i:03d}" for i in range(a.services - 100)],
            "crash": [f"crash-{i:02d}" for i in range(20)],
            "always": [f"always-{i:02d}" for i in range(40)],
            "churn": [f"churn-{i:02d}" for i in range(15)],
            "notif": [f"notif-{i:02d}" for i in range(15)],
            "gc": [f"gc-{i:02d}" for i in range(10)],
            "logw": [f"logw-{i:02d}" for i in range(10)],
        }
        if not a.no_postgres:
            log("starting a private PostgreSQL cluster ...")
            self.cluster = Cluster(self.r.dir)
            self.r.cleanups.append(lambda: self.cluster.stop("immediate", check=False))
            self.t("config", "set", "postgres.url", self.cluster.url)
            self.t("config", "set", "postgres.channel", CHANNEL)
        # Last in, first out: stop the services and the daemon before the cluster goes.
        self.r.cleanups.append(self.final_stop_quiet)
        log(f"defining {sum(map(len, self.groups.values()))} services ...")
        for g, names in self.groups.items():
            for n in names:
                mode = {"crash": "crash", "gc": "grandchild", "logw": "chatter"}.get(g, "run")
                opts = {
                    "crash": ["--restart", "on-failure", "--restart-delay", "0", "--start-limit", "0"],
                    "always": ["--restart", "always", "--restart-delay", "0", "--start-limit", "0"],
                    "logw": ["--log-timestamps", "on"],
                }.get(g, [])
                self.t("add", n, *opts, "--stop-timeout", "5s", "--", self.svc, str(self.times / n), mode)
        self.start_daemon()
        log("starting them ...")
        self.t("start", "--all", timeout=300)
        B.wait_for(lambda: all(self.lines(n) for ns in self.groups.values() for n in ns), 120,
                   "every service to run", 0.2)
        # Services whose env file is a FIFO (put in place after `add`): defined after the
        # start of everything, so only the FIFO thread asks to start them.
        self.fifos = [f"fifo-{i}" for i in range(3)]
        for n in self.fifos:
            env = self.r.dir / f"{n}.env"
            env.write_text("A=1\n")
            self.t("add", n, "--env-file", str(env), "--", self.svc, str(self.times / n))
            env.unlink()
            os.mkfifo(env)
        if self.cluster:
            B.wait_for(lambda: self.pg_state() == "connected", 60, "the daemon's PostgreSQL connection", 0.2)
        time.sleep(1)
        self.rss_start = B.rss(self.daemon_pid())
        log(f"running: {len(self.live_service_procs())} services; daemon RSS {self.rss_start / 1e6:.1f} MB")

    def start_daemon(self, nofile: int | None = None):
        if nofile:
            # Soft and hard: the daemon cannot raise it, and watches fewer services
            # than run.
            B.run(["prlimit", f"--nofile={nofile}:{nofile}", self.tend, "--home", str(self.home), "daemon"],
                  timeout=60)
        else:
            self.t("daemon", timeout=60)
        self.daemon_down.clear()

    def final_stop_quiet(self):
        self.t("stop", "--all", check=False, timeout=300)
        self.t("daemon", "stop", check=False, timeout=60)

    # --- chaos threads --------------------------------------------------------------
    def killer(self):
        """SIGKILLs a random `always` service a few times a second."""
        rng = random.Random(self.rng.random())
        while not self.stop_chaos.wait(rng.uniform(0.1, 0.4)):
            if self.pause_kills.is_set():
                continue
            n = rng.choice(self.groups["always"])
            ls = self.lines(n)
            if not ls:
                continue
            pid = ls[-1][0]
            argv = B.cmdline(pid)
            if B.alive(pid) and len(argv) > 1 and Path(argv[1]).name == n and B.kill(pid):
                with self.lock:
                    self.kills += 1

    def churn(self):
        """Concurrent CLI start/stop/restart (several threads on the same services)."""
        rng = random.Random(self.rng.random())
        while not self.stop_chaos.wait(rng.uniform(0.0, 0.15)):
            op = rng.choice(["start", "stop", "restart"])
            names = rng.sample(self.groups["churn"], rng.choice([1, 1, 2, 3]))
            p = self.t(op, *names, check=False, timeout=120)
            with self.lock:
                self.cli_results[f"{op} exit {p.returncode}"] += 1
                if p.returncode == 1:
                    # Documented failures (e.g. the daemon died mid-request): keep a
                    # few distinct messages to print.
                    msg = re.sub(r"\d+", "N", p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "")
                    self.cli_fail_msgs[msg] += 1
                if p.returncode not in (0, 1) or "panicked" in p.stderr:
                    self.cli_unexpected.append(f"tend {op} {' '.join(names)}: exit {p.returncode}: {p.stderr.strip()}")

    def writer_killer(self):
        """SIGKILLs a random log writer process (keeper or worker) of the home a few
        times a second."""
        rng = random.Random(self.rng.random())
        logs = str(self.home / "logs")
        while not self.stop_chaos.wait(rng.uniform(0.2, 0.6)):
            writers = [p for p in B.pids()
                       if (lambda a: len(a) > 1 and a[1] == "log-writer" and any(logs in x for x in a))(B.cmdline(p))]
            if writers and B.kill(rng.choice(writers)):
                with self.lock:
                    self.writer_kills += 1

    def fifo_starts_thread(self):
        """Asks to start a service whose env file is a FIFO: it must fail at once."""
        rng = random.Random(self.rng.random())
        while not self.stop_chaos.wait(rng.uniform(0.3, 1.0)):
            n = rng.choice(self.fifos)
            t0 = time.monotonic()
            p = self.t("start", n, check=False, timeout=60)
            took = time.monotonic() - t0
            # The daemon may be SIGKILLed with the request in flight (a documented exit 1,
            # as for any command); whether it ran is what the samples check.
            died = p.returncode == 1 and "daemon" in p.stderr and (
                "closed the connection" in p.stderr or "did not accept" in p.stderr
                or "stopped answering" in p.stderr)
            with self.lock:
                self.fifo_slowest = max(self.fifo_slowest, took)
                ok = p.returncode == 1 and "not a regular file" in p.stderr
                self.fifo_starts["refused" if ok else "daemon died mid-request" if died
                                 else f"exit {p.returncode}"] += 1
            if not ok and not died:
                self.fail.add(f"tend start {n} (env file a FIFO): exit {p.returncode}: {p.stderr.strip()}")
            # Generous for a debug build on a busy machine: a hang is what is caught.
            if took > 10:
                self.fail.add(f"tend start {n} (env file a FIFO) took {took:.1f} s")

    # --- checks ---------------------------------------------------------------------
    def sample(self, why: str):
        """Duplicates (now) and records vs live processes (persisting over 1.5 s)."""
        self.samples += 1
        live = self.live_service_procs()
        dups = {n: ps for n, ps in live.items() if len(ps) > 1}
        for n, ps in dups.items():
            # A duplicate is two live service processes at the same moment: check again
            # that both are still alive (not one exiting between our reads).
            ps = [p for p in ps if B.alive(p)]
            if len(ps) > 1:
                self.fail.add(f"{why}: duplicate instances of {n}: pids {ps}")
        for n in self.groups["logw"]:
            starts = len(self.lines(n))
            if starts != 1:
                self.fail.add(f"{why}: {n} (its log writer killed at random) started {starts} times")
        for n in self.fifos:
            if self.lines(n) or live.get(n):
                self.fail.add(f"{why}: {n} (env file a FIFO) ran")
        bad = self.record_mismatches()
        for _ in range(3):
            if not bad:
                break
            time.sleep(0.5)
            again = self.record_mismatches()
            bad = bad & again
        for m in sorted(bad):
            self.fail.add(f"{why}: {m}")
        log(f"sample {self.samples} ({why}): {sum(map(len, live.values()))} service processes, "
            f"{len(dups)} duplicates, {len(bad)} record mismatches")

    def record_mismatches(self) -> set[str]:
        out = set()
        p = self.t("list", "--json", check=False)
        if p.returncode != 0:
            return {f"tend list failed: {p.stderr.strip()}"}
        recorded = {s["name"]: s.get("pid") for s in json.loads(p.stdout) if s["state"] == "running"}
        live = self.live_service_procs()
        for n, pid in recorded.items():
            if pid not in live.get(n, []):
                out.add(f"{n}: recorded pid {pid} is not its live process (live: {live.get(n, [])})")
        for n, ps in live.items():
            for pid in ps:
                if recorded.get(n) != pid:
                    out.add(f"{n}: live pid {pid} is not the recorded one ({recorded.get(n)})")
        return out

    # --- faults ---------------------------------------------------------------------
    def notify_burst(self, why: str, expect: bool = True, during=None):
        """Sends `restart` for a random half of the notif services, one transaction each,
        and checks that each restarted exactly once."""
        names = self.rng.sample(self.groups["notif"], len(self.groups["notif"]) // 2 + 1)
        before = {n: len(self.lines(n)) for n in names}
        self.cluster.psql(*[f"NOTIFY {CHANNEL}, 'restart {n}'" for n in names])
        self.notify_sent += len(names)
        if during:
            during()
        if not expect:
            return
        self.notify_checked += len(names)
        try:
            B.wait_for(lambda: all(len(self.lines(n)) > before[n] for n in names), 30, "NOTIFY restarts", 0.05)
        except TimeoutError:
            pass
        time.sleep(1.0)  # a second restart of the same command would show by now
        for n in names:
            got = len(self.lines(n)) - before[n]
            if got == 1:
                self.notify_done += 1
            else:
                self.fail.add(f"{why}: NOTIFY 'restart {n}' carried out {got} times (expected 1)")
        log(f"NOTIFY burst ({why}): {len(names)} sent, {sum(1 for n in names if len(self.lines(n)) - before[n] == 1)} carried out once")

    def daemon_kill_restart(self):
        pid = self.daemon_pid()
        self.daemon_down.set()
        B.kill(pid)
        B.wait_for(lambda: not B.alive(pid), 10, "the daemon to die")
        # Kill some `always` services while no daemon runs.
        self.pause_kills.set()
        victims = self.rng.sample(self.groups["always"], 10)
        for n in victims:
            ls = self.lines(n)
            if ls and B.alive(ls[-1][0]):
                B.kill(ls[-1][0])
        time.sleep(self.rng.uniform(0.2, 1.0))
        t0 = time.monotonic()
        self.start_daemon()
        answered = time.monotonic() - t0

        def all_back():
            live = self.live_service_procs()
            return all(live.get(n) for n in self.groups["always"])

        try:
            B.wait_for(all_back, 60, "every always service to run again", 0.005)
            took = time.monotonic() - t0
            self.recoveries.append(took)
            self.answered.append(answered)
            log(f"daemon SIGKILLed and restarted: `tend daemon` returned after {answered * 1000:.0f} ms; "
                f"every always service ran again {took * 1000:.0f} ms after it was run")
        except TimeoutError:
            self.fail.add("after a daemon restart, not every always service ran again within 60 s")
        self.pause_kills.clear()

    def daemon_low_limit(self):
        """The daemon SIGKILLed and started again with a descriptor limit below the
        number of services, for a while: it must start nothing twice and clear nothing;
        then a normal daemon takes over (daemon_kill_restart)."""
        pid = self.daemon_pid()
        self.daemon_down.set()
        B.kill(pid)
        B.wait_for(lambda: not B.alive(pid), 10, "the daemon to die")
        self.start_daemon(nofile=100)
        self.lowfd_daemons += 1
        log("daemon started again with RLIMIT_NOFILE 100:100")
        time.sleep(self.rng.uniform(2, 4))
        self.sample("daemon at RLIMIT_NOFILE 100")
        self.daemon_kill_restart()

    def daemon_stop_cont(self):
        pid = self.daemon_pid()
        B.kill(pid, signal.SIGSTOP)
        log("daemon SIGSTOPped")
        time.sleep(self.rng.uniform(0.5, 2.5))
        B.kill(pid, signal.SIGCONT)
        log("daemon continued")

    def pg_bounce(self, mode: str):
        self.cluster.stop(mode)
        log(f"PostgreSQL stopped ({mode})")
        time.sleep(self.rng.uniform(1, 3))
        self.cluster.start()
        t0 = time.monotonic()
        try:
            B.wait_for(lambda: self.pg_state() == "connected", 60, "reconnect", 0.1)
            log(f"PostgreSQL started; the daemon reconnected in {time.monotonic() - t0:.1f} s")
        except TimeoutError:
            self.fail.add(f"the daemon did not reconnect to PostgreSQL within 60 s after a {mode} stop")

    def wait_connected(self):
        if self.cluster:
            B.wait_for(lambda: self.pg_state() == "connected", 60, "the daemon's PostgreSQL connection", 0.1)

    # --- the run --------------------------------------------------------------------
    def run(self):
        self.setup()
        if self.a.inject_duplicate:
            # Proof that the checks can fail: a second, unrecorded instance of a service,
            # started behind tend's back.
            n = self.groups["long"][0]
            subprocess.Popen([self.svc, str(self.times / n), "run"], stdin=subprocess.DEVNULL,
                             start_new_session=True)
            log(f"injected a second instance of {n} (--inject-duplicate): this run must fail")
        threads = [threading.Thread(target=self.killer, daemon=True)]
        threads += [threading.Thread(target=self.churn, daemon=True) for _ in range(3)]
        threads += [threading.Thread(target=self.writer_killer, daemon=True),
                    threading.Thread(target=self.fifo_starts_thread, daemon=True)]
        for th in threads:
            th.start()
        t_end = time.monotonic() + self.a.duration
        steps = (["kill"] + (["pg-fast"] if self.cluster else []) + ["stop"]
                 + (["pg-immediate"] if self.cluster else []) + ["lowfd"])
        i = 0
        while time.monotonic() < t_end:
            step = steps[i % len(steps)]
            i += 1
            if self.cluster:
                self.wait_connected()
                self.notify_burst("daemon connected")
            if step == "kill":
                self.daemon_kill_restart()
            elif step == "lowfd":
                self.daemon_low_limit()
            elif step == "stop":
                if self.cluster:
                    # Commands sent while the daemon is stopped wait in its open
                    # connection: they must be carried out once it continues.
                    self.notify_burst("daemon SIGSTOPped", during=self.daemon_stop_cont)
                else:
                    self.daemon_stop_cont()
            elif step == "pg-fast":
                self.pg_bounce("fast")
            elif step == "pg-immediate":
                self.pg_bounce("immediate")
            self.sample(f"after {step}")
            time.sleep(min(2.0, max(0.0, t_end - time.monotonic())))
        self.stop_chaos.set()
        for th in threads:
            th.join(timeout=150)
        return self.finish()

    def finish(self):
        log("chaos over; final checks")
        self.wait_connected()
        self.sample("end")
        self.rss_end = B.rss(self.daemon_pid())
        # Every log-writer service writes on: its log grows after the last writer kill.
        sizes = {n: os.path.getsize(self.home / "logs" / f"{n}.log") for n in self.groups["logw"]}
        try:
            B.wait_for(lambda: all(os.path.getsize(self.home / "logs" / f"{n}.log") > sizes[n]
                                   for n in self.groups["logw"]), 30, "the log-writer services' logs to grow", 0.1)
        except TimeoutError:
            stuck = [n for n in self.groups["logw"] if os.path.getsize(self.home / "logs" / f"{n}.log") <= sizes[n]]
            self.fail.add(f"logs that stopped growing after the writer kills: {stuck}")
        p = self.t("stop", "--all", check=False, timeout=300)
        if p.returncode != 0:
            self.fail.add(f"tend stop --all: exit {p.returncode}: {p.stderr.strip()}")
        left = self.live_service_procs(children=True)
        left_n = sum(map(len, left.values()))
        # A service's child (gc-*) is a process of the service program too.
        if left_n:
            self.fail.add(f"{left_n} service processes left after tend stop --all: {dict(left)}")
        t0 = time.monotonic()
        dpid = self.daemon_pid()
        stopper = subprocess.Popen([self.tend, "--home", str(self.home), "daemon", "stop"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stopper.wait(5)
        except subprocess.TimeoutExpired:
            # Slow: say what the daemon's threads are waiting on.
            log(f"tend daemon stop is still running after 5 s; the daemon's threads (pid {dpid}):")
            for task in sorted(glob.glob(f"/proc/{dpid}/task/*")):
                stack = B.read(f"{task}/stack").strip().splitlines()[:4]
                print(f"    {B.read(task + '/comm').strip():16} wchan={B.read(task + '/wchan').strip():24} "
                      + " < ".join(l.split()[-1] for l in stack), flush=True)
        try:
            out, err = stopper.communicate(timeout=60)
            if stopper.returncode != 0:
                self.fail.add(f"tend daemon stop: exit {stopper.returncode}: {err.strip()}")
        except subprocess.TimeoutExpired:
            stopper.kill()
            stopper.wait()
            self.fail.add("tend daemon stop did not return within 65 s")
        daemon_stop_secs = time.monotonic() - t0
        # Nothing runs and nothing is due: 10 s is ample even for a debug build on a busy
        # machine (the bug this caught made it 14 to 65 s).
        if daemon_stop_secs > 10:
            self.fail.add(f"tend daemon stop took {daemon_stop_secs:.1f} s with no service running")
        db = sqlite3.connect(f"file:{self.home / 'tend.db'}?mode=ro", uri=True)
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        db.close()
        if integrity != "ok":
            self.fail.add(f"PRAGMA integrity_check: {integrity}")
        text = B.read(self.home / "daemon.log")
        panics = [l for l in text.splitlines() if "panic" in l.lower()]
        errors = [l for l in text.splitlines() if re.search(r"\bERROR\b", l)]
        for l in panics:
            self.fail.add(f"daemon log: {l}")
        if self.cli_unexpected:
            for u in self.cli_unexpected[:10]:
                self.fail.add(f"CLI: {u}")

        def ms(v):
            return f"{v * 1000:.0f} ms"

        print()
        print("== soak results")
        print(f"duration                         {self.a.duration:g} s, {sum(map(len, self.groups.values()))} services, seed {self.a.seed}")
        print(f"samples                          {self.samples} (duplicates and records checked at each)")
        print(f"always services SIGKILLed       {self.kills} at random (+10 per daemon kill)")
        print(f"log writers SIGKILLed            {self.writer_kills} at random; log-writer services restarted: "
              f"{sum(max(0, len(self.lines(n)) - 1) for n in self.groups['logw'])}")
        print(f"starts with a FIFO env file      {dict(self.fifo_starts)}; slowest {self.fifo_slowest:.2f} s")
        print(f"daemon at RLIMIT_NOFILE 100      {self.lowfd_daemons} time(s)")
        print(f"daemon SIGKILL+restart           {len(self.recoveries)}; every killed always service ran again after: "
              + (f"median {ms(sorted(self.recoveries)[len(self.recoveries) // 2])}, max {ms(max(self.recoveries))} "
                 f"(`tend daemon` itself returned after median {ms(sorted(self.answered)[len(self.answered) // 2])})"
                 if self.recoveries else "—"))
        print(f"CLI commands                     {dict(sorted(self.cli_results.items()))}")
        for m, c in self.cli_fail_msgs.most_common(8):
            print(f"    exit 1 ×{c}: {m}")
        if self.cluster:
            print(f"NOTIFY restarts                  {self.notify_sent} sent, {self.notify_checked} checked, {self.notify_done} carried out exactly once")
        print(f"left after tend stop --all       {left_n}")
        print(f"tend daemon stop                 returned after {daemon_stop_secs:.1f} s")
        print(f"PRAGMA integrity_check           {integrity}")
        print(f"daemon RSS                       start {self.rss_start / 1e6:.1f} MB, end {self.rss_end / 1e6:.1f} MB")
        print(f"daemon log                       {len(panics)} panic lines, {len(errors)} ERROR lines")
        for l in sorted(set(re.sub(r"^\S+\s+", "", l) for l in errors))[:15]:
            print(f"    {l}")
        print(f"RESULT                           {'FAIL' if self.fail.items else 'ok'}"
              + (f" ({len(self.fail.items)} failed checks)" if self.fail.items else ""))
        for f in self.fail.items:
            print(f"    {f}")
        return not self.fail.items


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600, help="seconds of chaos (default 600)")
    ap.add_argument("--services", type=int, default=210, help="services in all (at least 120; default 210)")
    ap.add_argument("--tend", help="the tend binary (default: cargo build --release)")
    ap.add_argument("--no-postgres", action="store_true", help="no cluster, no NOTIFY")
    ap.add_argument("--seed", type=int, default=int(time.time()), help="random seed (printed)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--inject-duplicate", action="store_true",
                    help="start a second instance of one service behind tend's back, to see the checks fail")
    a = ap.parse_args()
    if a.services < 120:
        sys.exit("soak: --services must be at least 120")
    ok = False
    try:
        # Bounded: the chaos, plus setup and the final checks.
        with B.Run("soak", int(a.duration + 600), keep=a.keep) as r:
            if a.keep:
                log(f"directory: {r.dir}")
            ok = Soak(a, r).run()
    except B.Interrupted as e:
        sys.exit(f"soak: stopped ({e}); everything it started has been ended")
    except (RuntimeError, TimeoutError, OSError) as e:
        print(f"soak: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
