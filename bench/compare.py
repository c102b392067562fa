#!/usr/bin/env python3
"""tend beside supervisord, runit, s6 and PM2: the same service program, the same
figures, one table.

    python3 bench/compare.py                     # everything (about 15-20 minutes)
    python3 bench/compare.py --idle-secs 10 --samples 10 --only tend,runit

Installs what is missing (supervisor with pip, runit and s6 with apt-get, pm2 with npm;
`--no-install` to refuse), builds tend in release (`--tend BIN` to use another binary),
runs each supervisor in a temporary directory of its own, and writes the results as JSON
and as a Markdown table (`--out DIR`, default target/compare). See the README, section
"Compared with supervisord, runit, s6 and PM2", for what each figure means.

Figures, each the median of its samples (min-max and n beside it):

- start_ret / start_run: the start command's return / the service's own start stamp
  (CLOCK_MONOTONIC), from the command's exec; stop_ret / stop_gone: the stop command's
  return / the service's exit seen through a pidfd; crash: SIGKILL to the service's new
  start stamp (configurations that restart only);
- list100 / status1: the status command of 100 running services / of one among them
  (`tend list`, `tend status NAME`; `sv status`, `s6-svstat` per directory,
  `supervisorctl status [NAME]`, `pm2 list` / `pm2 describe NAME`);
- memN_rss/pss, idle_cpu, then listN: the supervisor's own processes with --services
  running, its CPU over --idle-secs, then --list-samples runs of the status of all;
- version / bin_true: `tend --version` and `/bin/true`, run to their exit the same way
  and interleaved (--exec-samples each).

A second table, "Targets", checks the targets of issue 15 against this one run: each
ratio of tend's median to the reference's median (runit `sv up`, s6 `s6-svc -d`, s6's
waiting `-wu`/`-wd`, runit `sv status`, PM2's crash restart, tend without its daemon,
`/bin/true`) or absolute figure (`tend list` of 1,000 services, daemon RSS with 1,000:
they need --services 1000), with its bound, "met" or "missed: X× the bound", or why it
was not measured (peer not in --only, phase failed). It is in compare.md, and in
compare.json under "targets".

The targets alone (13 minutes once, on a loaded 2-core machine; each phase prints how
long it took):

    python3 bench/compare.py --only tend,runit,s6,pm2 --samples 20 --crash-samples 5 --idle-secs 10

Every process it starts carries a mark in its environment and is ended by pid (through a
pidfd) at the end, whatever happened; the run is bounded by `--max-minutes`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

MS = 1e6  # ns per ms


# ---------------------------------------------------------------------------------------
# The supervisors
# ---------------------------------------------------------------------------------------


class Peer:
    """One supervisor in one configuration, set up in its own directory."""

    system = ""
    label = ""
    config = ""
    cid = ""  # short id of the configuration, used by the targets ("runit-wait")
    restarts = True  # restarts a crashed service
    primary = True  # the configuration used for the system-wide figures

    def __init__(self, svc: Path):
        self.svc = svc
        self.dir: Path | None = None

    # set up with `services` (name -> mode), started or not
    def setup(self, base: Path, services: dict[str, str], autostart: bool): ...
    def start_cmd(self, name: str) -> list[str]: ...
    def stop_cmd(self, name: str) -> list[str]: ...
    def list_cmd(self, names: list[str]) -> list[str]: ...
    def status_cmd(self, name: str) -> list[str]: ...
    def roots(self) -> list[int]: ...
    def teardown(self): ...

    def times(self, name: str) -> Path:
        return self.dir / "times" / name

    def fresh_dir(self, base: Path, tag: str) -> Path:
        d = base / f"{self.key()}-{tag}-{time.monotonic_ns()}"
        (d / "times").mkdir(parents=True)
        os.chmod(d, 0o755)
        self.dir = d
        return d

    def key(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in f"{self.system}-{self.label}")

    def title(self) -> str:
        return f"{self.system} ({self.label})" if self.label else self.system


class Tend(Peer):
    system = "tend"

    def __init__(self, svc, tend: Path, daemon: bool, zero_delay: bool):
        super().__init__(svc)
        self.tend = str(tend)
        self.daemon = daemon
        self.zero = zero_delay
        self.primary = daemon and not zero_delay
        self.restarts = daemon
        self.cid = "tend" + ("" if daemon else "-nodaemon") + ("-zero" if zero_delay else "")
        self.label = ("daemon" if daemon else "no daemon") + (", --restart-delay 0" if zero_delay else "")
        self.config = (
            ("daemon running: start/stop/restart go through it; " if daemon else "no daemon: the CLI does the work; nothing restarts a crash; ")
            + ("--restart-delay 0 --start-limit 0" if zero_delay else "defaults (--restart-delay 100ms, doubling per quick crash)")
        )

    def t(self, *args) -> list[str]:
        return [self.tend, "--home", str(self.dir / "home"), *args]

    def setup(self, base, services, autostart):
        self.fresh_dir(base, "x")
        for name, mode in services.items():
            extra = ["--restart-delay", "0", "--start-limit", "0"] if self.zero else []
            B.run(self.t("add", name, *extra, "--", str(self.svc), str(self.times(name)), mode))
        if self.daemon:
            B.run(self.t("daemon"))
        if autostart:
            B.run(self.t("start", "--all"), timeout=600)

    def start_cmd(self, name):
        return self.t("start", name)

    def stop_cmd(self, name):
        return self.t("stop", name)

    def list_cmd(self, names):
        return self.t("list")

    def status_cmd(self, name):
        return self.t("status", name)

    def roots(self):
        if not self.daemon:
            return []
        return [json.loads(B.run(self.t("daemon", "status", "--json")).stdout)["pid"]]

    def teardown(self):
        B.run(self.t("stop", "--all"), timeout=600, check=False)
        if self.daemon:
            B.run(self.t("daemon", "stop"), check=False)


def _python_bin(name: str) -> str:
    """supervisord/supervisorctl beside this Python (not a pyenv shim, which is a shell
    script and would add its own start-up to every command)."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else (shutil.which(name) or name)


class Supervisord(Peer):
    system = "supervisord"

    def __init__(self, svc, startsecs: int):
        super().__init__(svc)
        self.startsecs = startsecs
        self.primary = startsecs == 1
        self.cid = f"supervisord-startsecs{startsecs}"
        self.label = f"startsecs={startsecs}" + (" (default)" if startsecs == 1 else "")
        self.config = (
            f"startsecs={startsecs}, autorestart=true, log to a file per program; "
            "`supervisorctl start` returns once the program has run startsecs"
        )
        self.proc = None

    def ctl(self, *args):
        return [_python_bin("supervisorctl"), "-c", str(self.dir / "supervisord.conf"), *args]

    def setup(self, base, services, autostart):
        d = self.fresh_dir(base, "x")
        (d / "logs").mkdir()
        conf = [
            "[unix_http_server]", f"file={d}/supervisor.sock",
            "[supervisord]", f"logfile={d}/supervisord.log", f"pidfile={d}/supervisord.pid",
            f"childlogdir={d}/logs", "minfds=16384", "minprocs=4096",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]", f"serverurl=unix://{d}/supervisor.sock",
        ]
        for name, mode in services.items():
            conf += [
                f"[program:{name}]", f"command={self.svc} {self.times(name)} {mode}",
                f"autostart={'true' if autostart else 'false'}", "autorestart=true",
                f"startsecs={self.startsecs}", "stopsignal=TERM",
                f"stdout_logfile={d}/logs/{name}.log", "redirect_stderr=true",
            ]
        (d / "supervisord.conf").write_text("\n".join(conf) + "\n")
        self.proc = subprocess.Popen(
            [_python_bin("supervisord"), "-n", "-c", str(d / "supervisord.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        def answers():
            # With 1,000 programs to start, supervisord can take minutes to answer.
            try:
                return B.run(self.ctl("pid"), check=False, timeout=30).returncode == 0
            except subprocess.TimeoutExpired:
                return False

        B.wait_for(answers, 900, "supervisord to answer", 0.05)

    def start_cmd(self, name):
        return self.ctl("start", name)

    def stop_cmd(self, name):
        return self.ctl("stop", name)

    def list_cmd(self, names):
        return self.ctl("status")

    def status_cmd(self, name):
        return self.ctl("status", name)

    def roots(self):
        return [self.proc.pid]

    def teardown(self):
        B.run(self.ctl("shutdown"), check=False, timeout=120)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass


class Runit(Peer):
    system = "runit"

    def __init__(self, svc, wait: bool):
        super().__init__(svc)
        self.wait = wait
        self.primary = not wait
        self.cid = "runit-wait" if wait else "runit"
        self.label = "sv start/stop: waits" if wait else "sv up/down: no wait"
        self.config = (
            "`sv -w 10 start|stop`: waits until runsv reports the state" if wait
            else "`sv up|down`: returns once runsv took the command"
        ) + "; ./run is the service program itself (no shell)"
        self.proc = None

    def sdir(self, name):
        return self.dir / "service" / name

    def times(self, name):
        return self.sdir(name) / "times"

    def setup(self, base, services, autostart):
        d = self.fresh_dir(base, "x")
        for name, mode in services.items():
            s = self.sdir(name)
            s.mkdir(parents=True)
            if mode == "run":
                os.symlink(self.svc, s / "run")  # argv[0] ./run: writes ./times
            else:
                (s / "run").write_text(f"#!/bin/sh\nexec {self.svc} times {mode}\n")
                os.chmod(s / "run", 0o755)
            if not autostart:
                (s / "down").touch()
        self.proc = subprocess.Popen(
            ["runsvdir", "-P", str(d / "service")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        B.wait_for(
            lambda: all((self.sdir(n) / "supervise" / "ok").exists() for n in services),
            120, "runsv of every service", 0.05,
        )

    def start_cmd(self, name):
        return ["sv", "-w", "10", "start", str(self.sdir(name))] if self.wait else ["sv", "up", str(self.sdir(name))]

    def stop_cmd(self, name):
        return ["sv", "-w", "10", "stop", str(self.sdir(name))] if self.wait else ["sv", "down", str(self.sdir(name))]

    def list_cmd(self, names):
        return ["sv", "status", *[str(self.sdir(n)) for n in names]]

    def status_cmd(self, name):
        return ["sv", "status", str(self.sdir(name))]

    def roots(self):
        return [self.proc.pid]

    def teardown(self):
        # runsvdir on SIGHUP sends TERM to every runsv, which stops its service.
        self.proc.send_signal(signal.SIGHUP)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass


class S6(Peer):
    system = "s6"

    def __init__(self, svc, wait: bool):
        super().__init__(svc)
        self.wait = wait
        self.primary = not wait
        self.cid = "s6-wait" if wait else "s6"
        self.label = "s6-svc -wu/-wd: waits" if wait else "s6-svc -u/-d: no wait"
        self.config = (
            "`s6-svc -wu -u` / `s6-svc -wd -d`: waits for the up/down event" if wait
            else "`s6-svc -u|-d`: returns once s6-supervise took the command"
        ) + "; ./run is the service program itself; status of 100 = one s6-svstat per service (no list command)"
        self.proc = None

    def sdir(self, name):
        return self.dir / "scan" / name

    def times(self, name):
        # s6-supervise runs `./run NAME`: the program writes to the file named by its
        # first argument, in the service directory.
        return self.sdir(name) / name

    def setup(self, base, services, autostart):
        d = self.fresh_dir(base, "x")
        (d / "scan").mkdir()
        for name, mode in services.items():
            s = self.sdir(name)
            s.mkdir(parents=True)
            if mode == "run":
                os.symlink(self.svc, s / "run")
            else:
                (s / "run").write_text(f"#!/bin/sh\nexec {self.svc} {name} {mode}\n")
                os.chmod(s / "run", 0o755)
            if not autostart:
                (s / "down").touch()
        self.proc = subprocess.Popen(
            # -c: s6-svscan supervises at most 500 services unless told otherwise.
            ["s6-svscan", "-c", str(max(500, 2 * len(services))), str(d / "scan")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        B.wait_for(
            lambda: all((self.sdir(n) / "supervise" / "status").exists() for n in services),
            120, "s6-supervise of every service", 0.05,
        )

    def start_cmd(self, name):
        return ["s6-svc", "-wu", "-T", "10000", "-u", str(self.sdir(name))] if self.wait else ["s6-svc", "-u", str(self.sdir(name))]

    def stop_cmd(self, name):
        return ["s6-svc", "-wd", "-T", "10000", "-d", str(self.sdir(name))] if self.wait else ["s6-svc", "-d", str(self.sdir(name))]

    def list_cmd(self, names):
        dirs = " ".join(f"'{self.sdir(n)}'" for n in names)
        return ["sh", "-c", f'for d in {dirs}; do s6-svstat "$d" || exit 1; done']

    def status_cmd(self, name):
        return ["s6-svstat", str(self.sdir(name))]

    def roots(self):
        return [self.proc.pid]

    def teardown(self):
        B.run(["s6-svscanctl", "-t", str(self.dir / "scan")], check=False)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass


class Pm2(Peer):
    system = "pm2"
    label = ""
    cid = "pm2"
    config = "fork mode, interpreter none, autorestart (restart_delay 0); `pm2 start/stop NAME`"

    def env(self):
        return {**os.environ, "PM2_HOME": str(self.dir / "pm2")}

    def p(self, *args):
        return ["pm2", *args]

    def setup(self, base, services, autostart):
        d = self.fresh_dir(base, "x")
        apps = [
            {
                "name": n, "script": str(self.svc), "args": [str(self.times(n)), m],
                "interpreter": "none", "exec_mode": "fork", "autorestart": True,
                "out_file": str(d / "logs" / f"{n}.log"), "error_file": str(d / "logs" / f"{n}.log"),
            }
            for n, m in services.items()
        ]
        (d / "ecosystem.config.js").write_text("module.exports = " + json.dumps({"apps": apps}) + ";\n")
        B.run(self.p("start", str(d / "ecosystem.config.js")), env=self.env(), timeout=900)
        if not autostart:
            B.run(self.p("stop", "all"), env=self.env(), timeout=300)

    def run_env(self):
        return self.env()

    def start_cmd(self, name):
        return self.p("start", name)

    def stop_cmd(self, name):
        return self.p("stop", name)

    def list_cmd(self, names):
        return self.p("list")

    def status_cmd(self, name):
        return self.p("describe", name)

    def roots(self):
        try:
            return [int(B.read(self.dir / "pm2" / "pm2.pid").strip())]
        except ValueError:
            return []

    def teardown(self):
        # With 1,000 apps `pm2 kill` can take minutes; what it leaves is ended by pid.
        try:
            B.run(self.p("kill"), env=self.env(), check=False, timeout=60)
        except subprocess.TimeoutExpired:
            pass


def env_of(peer: Peer):
    return peer.run_env() if hasattr(peer, "run_env") else None


# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------


def new_line(path: Path, before: int, timeout=15.0):
    lines = B.wait_for(lambda: (l := B.start_lines(path)) and len(l) > before and l, timeout, f"a start in {path}")
    return lines[before]


def stop_and_watch(peer: Peer, name: str, pid: int) -> tuple[float, float]:
    """Runs the stop command; returns (ms until it returned, ms until the service's
    process had exited, seen through a pidfd opened before the stop)."""
    fd = B.pidfd(pid)
    if fd is None:
        raise RuntimeError(f"{peer.title()}: service pid {pid} gone before the stop")
    try:
        t0 = B.now()
        p = subprocess.Popen(peer.stop_cmd(name), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env_of(peer))
        cfd = os.pidfd_open(p.pid)
        done: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while len(done) < 2:
            want = [f for f, k in ((fd, "gone"), (cfd, "ret")) if k not in done]
            r, _, _ = select.select(want, [], [], max(0.0, deadline - time.monotonic()))
            t = B.now()
            if not r:
                p.kill()
                raise RuntimeError(f"{peer.title()}: stop did not finish within 30 s")
            for f in r:
                done["gone" if f == fd else "ret"] = t
        os.close(cfd)
        err = p.stderr.read().decode(errors="replace")
        if p.wait() != 0:
            raise RuntimeError(f"{peer.title()}: stop failed: {err}")
        return (done["ret"] - t0) / MS, (done["gone"] - t0) / MS
    finally:
        os.close(fd)


def pace(peer: Peer, name: str):
    """Waits until the service's last start is 1.1 s old."""
    lines = B.start_lines(peer.times(name))
    if lines:
        time.sleep(max(0.0, (lines[-1][1] + 1.1e9 - B.now()) / 1e9))


def start_once(peer: Peer, name: str) -> tuple[float, float, int, int]:
    """(ms until the command returned, ms until the service stamped its start, pid, ts)."""
    f = peer.times(name)
    before = len(B.start_lines(f))
    t0, t1, _ = B.timed(peer.start_cmd(name), env=env_of(peer))
    pid, ts = new_line(f, before)
    return (t1 - t0) / MS, (ts - t0) / MS, pid, ts


def latencies(peer: Peer, base: Path, n: int, n_crash: int, res: dict):
    """start, stop, crash-to-restart, grandchild, memory with one service."""
    peer.setup(base, {"svc0": "run", "gc": "grandchild"}, autostart=False)
    try:
        # Memory with one service running.
        _, _, pid, _ = start_once(peer, "svc0")
        time.sleep(1.0)
        if peer.roots():
            own = B.supervisor_tree(peer.roots(), str(peer.svc))
            rss, pss = B.memory(own)
            res["mem1_rss"] = [rss / 1e6]
            res["mem1_pss"] = [pss / 1e6]
            res["mem1_procs"] = len(own)
        stop_and_watch(peer, "svc0", pid)
        time.sleep(0.1)

        sr, srun, pr, pg = [], [], [], []
        for i in range(n + 2):
            # runsv and s6-supervise never start a service again within a second of its
            # last start (they would delay this start, not refuse it): pace the samples.
            pace(peer, "svc0")
            a, b, pid, _ = start_once(peer, "svc0")
            time.sleep(0.05)
            c, d = stop_and_watch(peer, "svc0", pid)
            if i >= 2:  # two to warm up
                sr.append(a), srun.append(b), pr.append(c), pg.append(d)
            time.sleep(0.1)
        res.update(start_ret=sr, start_run=srun, stop_ret=pr, stop_gone=pg)

        if peer.restarts:
            crash = []
            for _ in range(n_crash):
                pace(peer, "svc0")
                _, _, pid, ts = start_once(peer, "svc0")
                # Every supervisor counts a run of at least a second as a good start
                # (supervisord startsecs, runit/s6's one-second respawn guard, PM2's
                # min_uptime): only then is the restart immediate.
                time.sleep(max(0.0, (ts + 1.2e9 - B.now()) / 1e9))
                f = peer.times("svc0")
                before = len(B.start_lines(f))
                t0 = B.now()
                B.kill(pid)
                pid2, ts2 = new_line(f, before)
                crash.append((ts2 - t0) / MS)
                time.sleep(0.05)
                stop_and_watch(peer, "svc0", pid2)
                time.sleep(0.1)
            res["crash"] = crash

        # Does a stop leave the service's child behind?
        gc_file = Path(str(peer.times("gc")) + ".gc")
        _, _, pid, _ = start_once(peer, "gc")
        gc_pid = int(B.wait_for(lambda: B.read(gc_file).strip(), 10, "the grandchild").splitlines()[-1])
        time.sleep(0.3)
        stop_and_watch(peer, "gc", pid)
        time.sleep(1.0)
        left = B.alive(gc_pid)
        res["grandchild_left"] = left
        if left:
            B.kill(gc_pid)
    finally:
        peer.teardown()


def wait_all_running(peer: Peer, names: list[str], timeout: float):
    B.wait_for(lambda: all(B.start_lines(peer.times(n)) for n in names), timeout,
               f"{len(names)} services of {peer.title()} to run", 0.2)


def timed_ms(argv, n: int, warm: int, env=None, timeout=60.0) -> list[float]:
    """ms of `n` runs of argv to completion, after `warm` runs that are not kept."""
    out = []
    for i in range(n + warm):
        t0, t1, _ = B.timed(argv, env=env, timeout=timeout)
        if i >= warm:
            out.append((t1 - t0) / MS)
    return out


def list_figure(peer: Peer, base: Path, n: int, res: dict):
    """The status of 100 running services (list100), and of one of them (status1)."""
    names = [f"s{i:04d}" for i in range(100)]
    peer.setup(base, {k: "run" for k in names}, autostart=True)
    try:
        wait_all_running(peer, names, 300)
        time.sleep(1.0)
        res["list100"] = timed_ms(peer.list_cmd(names), n, 2, env_of(peer))
        res["status1"] = timed_ms(peer.status_cmd(names[50]), n, 2, env_of(peer))
    finally:
        peer.teardown()


def exec_figure(tend: Path, n: int, res: dict):
    """`tend --version` and `/bin/true` run to completion the same way (B.timed),
    interleaved so that both see the same load."""
    true = shutil.which("true") or "/bin/true"
    v, t = [], []
    for i in range(n + 5):
        a0, a1, _ = B.timed([true])
        b0, b1, _ = B.timed([str(tend), "--version"])
        if i >= 5:
            t.append((a1 - a0) / MS)
            v.append((b1 - b0) / MS)
    res["bin_true"] = t
    res["version"] = v


def footprint(peer: Peer, base: Path, count: int, idle: float, list_n: int, res: dict):
    """Memory and idle CPU with `count` running services, then (after the idle window,
    which it would disturb) the status of all of them (listN)."""
    names = [f"s{i:04d}" for i in range(count)]
    t0 = time.monotonic()
    peer.setup(base, {k: "run" for k in names}, autostart=True)
    try:
        wait_all_running(peer, names, 900)
        print(f"   {count} services set up and running in {time.monotonic() - t0:.0f} s", flush=True)
        time.sleep(3.0)
        own = B.supervisor_tree(peer.roots(), str(peer.svc))
        rss, pss = B.memory(own)
        res["memN_rss"] = [rss / 1e6]
        res["memN_pss"] = [pss / 1e6]
        res["memN_procs"] = len(own)
        before = B.cpu_ticks(own)
        time.sleep(idle)
        after = B.cpu_ticks(own)
        ticks = sum(after[p] - before[p] for p in before if p in after)
        res["idle_cpu"] = [ticks / B.TICK]
        res["idle_secs"] = idle
        if list_n:
            res["listN"] = timed_ms(peer.list_cmd(names), list_n, 1, env_of(peer), timeout=300)
    finally:
        t0 = time.monotonic()
        peer.teardown()
        print(f"   torn down in {time.monotonic() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------
# Installing the peers
# ---------------------------------------------------------------------------------------


def have_supervisor():
    return Path(_python_bin("supervisord")).exists() and Path(_python_bin("supervisorctl")).exists()


def install(systems: set[str], allowed: bool):
    missing = []
    if "supervisord" in systems and not have_supervisor():
        missing.append(("supervisor (pip)", [sys.executable, "-m", "pip", "install", "-q", "supervisor"]))
    apt = [p for s, p, probe in (("runit", "runit", "runsvdir"), ("s6", "s6", "s6-svscan"))
           if s in systems and not shutil.which(probe)]
    if apt:
        missing.append((" ".join(apt) + " (apt-get)", ["sh", "-c", f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {' '.join(apt)}"]))
    if "pm2" in systems and not shutil.which("pm2"):
        missing.append(("pm2 (npm)", ["npm", "install", "-g", "--silent", "pm2"]))
    for what, argv in missing:
        if not allowed:
            sys.exit(f"compare: {what} is not installed (and --no-install was given)")
        print(f"installing {what} ...", flush=True)
        B.run(argv, timeout=900)


def versions(systems):
    def first(argv):
        try:
            p = B.run(argv, check=False, timeout=60)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"
    v = {}
    if "supervisord" in systems:
        v["supervisord"] = first([_python_bin("supervisord"), "--version"])
    if "runit" in systems:
        v["runit"] = first(["sh", "-c", "dpkg-query -W -f '${Version}' runit"])
    if "s6" in systems:
        v["s6"] = first(["sh", "-c", "dpkg-query -W -f '${Version}' s6"])
    if "pm2" in systems:
        # (`pm2 --version` prints a banner first and creates ~/.pm2: read its package.json)
        pkg = Path(os.path.realpath(shutil.which("pm2") or "pm2")).parent.parent / "package.json"
        v["pm2"] = json.loads(B.read(pkg, "{}")).get("version", "?")
    return v


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

FIGURES = [
    ("start_ret", "start: command returns", "ms"),
    ("start_run", "start: service running (its own timestamp)", "ms"),
    ("stop_ret", "stop: command returns", "ms"),
    ("stop_gone", "stop: service gone (pidfd)", "ms"),
    ("crash", "crash (SIGKILL) → restarted (its own timestamp)", "ms"),
    ("list100", "status of 100 services", "ms"),
    ("status1", "status of one service among 100", "ms"),
    ("listN", "status of {N} services (after the idle window)", "ms"),
    ("version", "`tend --version`, run to its exit", "ms"),
    ("bin_true", "`/bin/true`, run to its exit beside it", "ms"),
    ("mem1_rss", "supervisor RSS, 1 service", "MB"),
    ("mem1_pss", "supervisor PSS, 1 service", "MB"),
    ("memN_rss", "supervisor RSS, {N} services", "MB"),
    ("memN_pss", "supervisor PSS, {N} services", "MB"),
    ("idle_cpu", "supervisor CPU idle {S} s, {N} services", "s"),
]


def fmt(v, unit):
    if unit == "ms":
        return f"{v:.1f}" if v >= 10 else f"{v:.2f}"
    if unit == "MB":
        return f"{v:.1f}"
    return f"{v:.2f}"


def table(results: list[dict], count: int, idle: float) -> str:
    rows = ["| figure | supervisor (configuration) | median | min–max | n | × tend |",
            "| --- | --- | --- | --- | --- | --- |"]
    for key, title, unit in FIGURES:
        title = title.replace("{N}", f"{count:,}").replace("{S}", f"{idle:g}")
        ref = next((r for r in results if r["system"] == "tend" and r["primary"] and r.get(key)), None)
        refmed = B.summary(ref[key])["median"] if ref else None
        for r in results:
            vals = r.get(key)
            if vals is None:
                if r["system"] == "tend" and not r["daemon"] and key.startswith(("mem", "idle")):
                    rows.append(f"| {title} ({unit}) | {r['title']} | 0 (no resident process) | | | |")
                continue
            s = B.summary(vals)
            ratio = "—" if not refmed else f"{s['median'] / refmed:.2f}"
            mm = f"{fmt(s['min'], unit)}–{fmt(s['max'], unit)}" if s["n"] > 1 else ""
            rows.append(f"| {title} ({unit}) | {r['title']} | {fmt(s['median'], unit)} | {mm} | {s['n']} | {ratio} |")
    rows.append("| stop leaves the service's child behind | " + "; ".join(
        f"{r['title']}: **{'yes' if r['grandchild_left'] else 'no'}**" for r in results if "grandchild_left" in r
    ) + " | | | | |")
    errors = [f"- {r['title']}: {e}" for r in results for e in r.get("errors", [])]
    if errors:
        rows += ["", "Phases that failed (their figures are missing above):", "", *errors]
    return "\n".join(rows)


MIB = 1024 * 1024 / 1e6  # MB (the unit of the memory figures) per MiB

# The targets of issue 15, each measured in this one run: (what, tend's configuration,
# its figure, the reference configuration and figure, the bound). With a reference, the
# ratio of the medians must be at most the bound; without one (None), tend's median
# itself (ms, or MiB for memory).
TARGETS = [
    ("1. start → service running", "tend", "start_run", ("runit", "start_run"), 0.6),
    ("2. stop → service gone", "tend", "stop_gone", ("s6", "stop_gone"), 1.0),
    ("3. start that confirms (command returns)", "tend", "start_ret", ("s6-wait", "start_ret"), 0.33),
    ("3. stop that confirms (command returns)", "tend", "stop_ret", ("s6-wait", "stop_ret"), 0.33),
    ("4. status of 100 services", "tend", "list100", ("runit", "list100"), 1.0),
    ("4. status of one service among 100 (bound: as for 100)", "tend", "status1", ("runit", "status1"), 1.0),
    ("4. `tend list` of 1,000 services", "tend", "listN", None, 10.0),
    ("5. crash → restarted, --restart-delay 0", "tend-zero", "crash", ("pm2", "crash"), 0.5),
    ("6. daemon ≤ no daemon: start returns", "tend", "start_ret", ("tend-nodaemon", "start_ret"), 1.0),
    ("6. daemon ≤ no daemon: stop returns", "tend", "stop_ret", ("tend-nodaemon", "stop_ret"), 1.0),
    ("6. daemon ≤ no daemon: status of 100", "tend", "list100", ("tend-nodaemon", "list100"), 1.0),
    ("7. `tend --version` vs `/bin/true`", "tend", "version", ("tend", "bin_true"), 1.3),
    ("8. daemon RSS, 1,000 services", "tend", "memN_rss", None, 7.0),
]
COMMANDS = {  # what each figure runs, for the targets table
    ("runit", "start_run"): "`sv up`", ("runit", "list100"): "`sv status` of 100 dirs",
    ("runit", "status1"): "`sv status DIR`", ("s6", "stop_gone"): "`s6-svc -d`",
    ("s6-wait", "start_ret"): "`s6-svc -wu -u`", ("s6-wait", "stop_ret"): "`s6-svc -wd -d`",
}
TITLES = {("tend", "bin_true"): "`/bin/true` (run beside `tend --version`)"}  # instead of the configuration


def targets(results: list[dict], systems: set[str], count: int) -> list[dict]:
    """One entry per target: the medians, the ratio, the bound and whether it is met, or
    why it was not measured."""
    by = {r["id"]: r for r in results}

    def median(cid, key):
        """(result, median, None) or (result or None, None, why not measured)."""
        r = by.get(cid)
        if r is None:
            system = cid.split("-")[0]
            why = f"{system} not run (--only)" if system not in systems else f"{cid} not run"
            return None, None, why
        if not r.get(key):
            errs = "; ".join(r.get("errors", [])) or "no figure"
            return r, None, f"{r['title']}: {key} missing ({errs})"
        return r, B.summary(r[key])["median"], None

    out = []
    for what, cid, key, ref, bound in TARGETS:
        t = {"target": what, "figure": key, "config": cid, "bound": bound,
             "reference": None, "met": None, "why": None}
        r, med, why = median(cid, key)
        t["tend"] = {"title": r["title"] if r else cid, "median": med}
        if ref:
            rr, rmed, rwhy = median(*ref)
            t["reference"] = {"config": ref[0], "figure": ref[1],
                              "title": TITLES.get(ref) or (rr["title"] if rr else ref[0]),
                              "command": COMMANDS.get(ref), "median": rmed}
            why = why or rwhy
            if why is None and not rmed:
                why = f"{rr['title']}: {ref[1]} median is 0"
            value = None if why else med / rmed
        else:
            if key.startswith(("memN", "listN")) and count != 1000:
                why = why or f"needs --services 1000 (this run: {count})"
            value = None if why else (med / MIB if key.startswith("mem") else med)
        t["value"] = value
        if why:
            t["why"] = why
        else:
            t["of_bound"] = value / bound
            t["met"] = value <= bound
        out.append(t)
    return out


def targets_table(ts: list[dict]) -> str:
    rows = ["| target | tend: median | reference: median | ratio (or figure) | bound | result |",
            "| --- | --- | --- | --- | --- | --- |"]
    for t in ts:
        absolute = t["reference"] is None
        unit = ("MiB" if t["figure"].startswith("mem") else "ms") if absolute else "×"

        def side(s, key):
            unit_ = "MB" if key.startswith("mem") else "ms"
            return f"{s['title']}: {fmt(s['median'], unit_) + ' ' + unit_ if s['median'] is not None else '—'}"

        tend = side(t["tend"], t["figure"])
        if absolute:
            ref = "— (absolute)"
        else:
            x = t["reference"]
            ref = (x["command"] + ", " if x["command"] else "") + side(x, x["figure"])
        bound = f"≤ {t['bound']:g} {unit}" if absolute else f"≤ {t['bound']:g}×"
        if t["why"]:
            value, verdict = "—", f"not measured: {t['why']}"
        else:
            value = f"{t['value']:.2f} {unit}" if absolute else f"{t['value']:.2f}×"
            verdict = (f"**met** ({t['of_bound']:.2f}× the bound)" if t["met"]
                       else f"**missed**: {t['of_bound']:.2f}× the bound")
        rows.append(f"| {t['target']} (`{t['figure']}`) | {tend} | {ref} | {value} | {bound} | {verdict} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20, help="start/stop/status samples per configuration (default 20)")
    ap.add_argument("--crash-samples", type=int, default=10, help="crash-to-restart samples (default 10; each takes over 1.2 s)")
    ap.add_argument("--services", type=int, default=1000, help="services for the memory and idle figures (default 1000)")
    ap.add_argument("--idle-secs", type=float, default=60, help="idle CPU window (default 60)")
    ap.add_argument("--list-samples", type=int, default=5,
                    help="status-of-all samples with --services running, after the idle window (default 5)")
    ap.add_argument("--exec-samples", type=int, default=200,
                    help="`tend --version` and `/bin/true` samples (default 200)")
    ap.add_argument("--only", default="tend,supervisord,runit,s6,pm2", help="comma-separated systems")
    ap.add_argument("--tend", help="the tend binary (default: cargo build --release)")
    ap.add_argument("--out", default=str(B.REPO / "target" / "compare"), help="where to write compare.json and compare.md")
    ap.add_argument("--no-install", action="store_true", help="fail instead of installing a missing peer")
    ap.add_argument("--max-minutes", type=float, default=45, help="the whole run is stopped after this (default 45)")
    a = ap.parse_args()
    systems = set(a.only.split(","))
    unknown = systems - {"tend", "supervisord", "runit", "s6", "pm2"}
    if unknown:
        sys.exit(f"compare: unknown system(s): {', '.join(sorted(unknown))}")

    started = time.monotonic()
    with B.Run("compare", int(a.max_minutes * 60)) as r:
        install(systems, not a.no_install)
        tend = B.build_tend(a.tend)
        svc = B.build_service(r.dir)
        peers: list[Peer] = []
        if "tend" in systems:
            peers += [Tend(svc, tend, True, False), Tend(svc, tend, True, True), Tend(svc, tend, False, False)]
        if "supervisord" in systems:
            peers += [Supervisord(svc, 1), Supervisord(svc, 0)]
        if "runit" in systems:
            peers += [Runit(svc, False), Runit(svc, True)]
        if "s6" in systems:
            peers += [S6(svc, False), S6(svc, True)]
        if "pm2" in systems:
            peers += [Pm2(svc)]
        results = []
        for p in peers:
            res = {"system": p.system, "id": p.cid, "title": p.title(), "config": p.config,
                   "primary": p.primary, "daemon": getattr(p, "daemon", True)}
            phases = []
            if p.system == "tend" and p.primary:
                phases.append(("`tend --version` beside `/bin/true`", lambda: exec_figure(tend, a.exec_samples, res)))
            phases.append(("start/stop/crash", lambda: latencies(p, r.dir, a.samples, a.crash_samples, res)))
            if p.primary or (p.system == "tend" and not p.daemon):
                phases.append(("status of 100 and of one", lambda: list_figure(p, r.dir, a.samples, res)))
            if p.primary:
                phases.append((f"{a.services} services, idle {a.idle_secs:g} s, status of all",
                               lambda: footprint(p, r.dir, a.services, a.idle_secs, a.list_samples, res)))
            for what, fn in phases:
                print(f"== {p.title()}: {what} ...", flush=True)
                t0 = time.monotonic()
                try:
                    fn()
                    print(f"   done in {time.monotonic() - t0:.0f} s", flush=True)
                except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as e:
                    # One supervisor failing a phase does not lose the others' figures.
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    res.setdefault("errors", []).append(f"{what}: {msg}")
                    print(f"   failed: {msg}", flush=True)
                B.kill_marked(r.id)  # nothing of one supervisor is left for the next
            results.append(res)
            out = Path(a.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "compare.partial.json").write_text(json.dumps(results, indent=1) + "\n")
        md = table(results, a.services, a.idle_secs)
        goals = targets(results, systems, a.services)
        md += "\n\n## Targets (issue 15), from this run\n\n" + targets_table(goals)
        info = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": B.machine(),
            "versions": {"tend": B.run([str(tend), "--version"]).stdout.strip().removeprefix("tend "), **versions(systems)},
            "settings": {"samples": a.samples, "crash_samples": a.crash_samples, "services": a.services,
                         "idle_secs": a.idle_secs, "list_samples": a.list_samples,
                         "exec_samples": a.exec_samples},
            "duration_secs": round(time.monotonic() - started),
        }
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps({**info, "results": results, "targets": goals}, indent=1) + "\n")
        m = info["machine"]
        head = (
            f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_mb']} MB, {m['os']}, kernel {m['kernel']}. "
            + "Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".\n\n"
            + "Configurations:\n\n" + "\n".join(f"- **{x['title']}**: {x['config']}" for x in results) + "\n\n"
        )
        (out / "compare.md").write_text(head + md + "\n")
        print()
        print(head + md)
        print(f"\nwritten: {out / 'compare.json'}, {out / 'compare.md'} ({info['duration_secs']} s)")


if __name__ == "__main__":
    try:
        main()
    except B.Interrupted as e:
        sys.exit(f"compare: stopped ({e}); everything it started has been ended")
