"""What bench/compare.py and bench/soak.py share: clocks, /proc readers, the service
program, and the cleanup that ends every process a run started.

Every process a run starts carries one environment variable, ``TEND_BENCH_MARK=<run id>``
(set in this process's environment, so every child inherits it, and every child of a
supervisor too: supervisord, runsv, s6-supervise, PM2 and tend all pass their environment
on). Cleanup finds the marked processes in /proc, opens a pidfd on each (so a recycled pid
is never signalled) and SIGKILLs them, round after round until none is left — whatever
the supervisors did or failed to do. A run is bounded by SIGALRM; SIGINT, SIGTERM and
SIGHUP end it through the same cleanup.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MARK = "TEND_BENCH_MARK"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def now() -> int:
    """CLOCK_MONOTONIC in ns: the clock the service program stamps its start with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class Interrupted(Exception):
    """A signal or the run's time limit ended the run."""


def _raise(signum, _frame):
    raise Interrupted(
        "time limit reached" if signum == signal.SIGALRM else signal.Signals(signum).name
    )


class Run:
    """One run: a temporary directory, the mark, a time limit, and the cleanup."""

    def __init__(self, name: str, max_seconds: int, keep: bool = False):
        self.id = f"{name}-{uuid.uuid4().hex[:12]}"
        os.environ[MARK] = self.id
        self.dir = Path(tempfile.mkdtemp(prefix=f"tend-{name}-"))
        os.chmod(self.dir, 0o755)
        self.keep = keep
        self.cleanups: list = []
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
            signal.signal(s, _raise)
        signal.alarm(max_seconds)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # Cleanup runs to the end: further signals are held off.
        signal.alarm(0)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                print(f"cleanup step failed: {e}", file=sys.stderr)
        left = kill_marked(self.id)
        if left:
            print(f"cleanup: {left} process(es) could not be ended", file=sys.stderr)
        remove_cgroups(self.dir)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


def remove_cgroups(base: Path):
    """Removes the cgroups tend created for state homes under `base` (as root, tend puts
    each home's services in `<its cgroup>/tend-<16 hex digits of sha256(home path)>`),
    killing whatever is still in them."""
    import hashlib

    mount = None
    for line in read("/proc/self/mountinfo").splitlines():
        pre, _, post = line.partition(" - ")
        if post.split()[:1] == ["cgroup2"]:
            mount = pre.split()[4]
            break
    if mount is None:
        return
    own = next(
        (l[3:] for l in read("/proc/self/cgroup").splitlines() if l.startswith("0::")), "/"
    )
    parent = Path(mount + own.rstrip("/"))
    homes = [base] + [p for p in base.rglob("*") if p.is_dir() and len(p.relative_to(base).parts) <= 3]
    for home in homes:
        cg = parent / ("tend-" + hashlib.sha256(bytes(home)).hexdigest()[:16])
        if not cg.is_dir():
            continue
        try:
            (cg / "cgroup.kill").write_text("1")
        except OSError:
            pass
        deadline = time.monotonic() + 10
        while "populated 1" in read(cg / "cgroup.events") and time.monotonic() < deadline:
            time.sleep(0.01)
        for d in sorted(cg.rglob("*"), key=lambda p: len(p.parts), reverse=True) + [cg]:
            if d.is_dir():
                try:
                    d.rmdir()
                except OSError:
                    pass


# ---------------------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------------------


def read(path, default=""):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return default


def stat(pid: int):
    """(state, ppid, utime+stime ticks, starttime) or None when gone."""
    s = read(f"/proc/{pid}/stat")
    if not s:
        return None
    rest = s[s.rfind(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[19])


def alive(pid: int) -> bool:
    st = stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def pids():
    for e in os.listdir("/proc"):
        if e.isdigit():
            yield int(e)


def environ_has(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read()
    except OSError:
        return False


def marked(run_id: str) -> list[int]:
    needle = f"{MARK}={run_id}\0".encode()
    me = os.getpid()
    return [p for p in pids() if p != me and environ_has(p, needle) and alive(p)]


def exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    return [a for a in read(f"/proc/{pid}/cmdline").split("\0") if a]


def children_map() -> dict[int, list[int]]:
    m: dict[int, list[int]] = {}
    for p in pids():
        st = stat(p)
        if st and st[0] not in ("Z", "X"):
            m.setdefault(st[1], []).append(p)
    return m


def supervisor_tree(roots: list[int], service_exe: str) -> list[int]:
    """The supervisor's own processes: `roots` and their descendants, except the service
    processes (whose executable is `service_exe`) and everything below them."""
    m = children_map()
    out, todo = [], [r for r in roots if alive(r)]
    while todo:
        p = todo.pop()
        if exe(p) == service_exe:
            continue
        out.append(p)
        todo.extend(m.get(p, []))
    return out


def count_exe(service_exe: str, among: list[int] | None = None) -> int:
    return sum(1 for p in (among if among is not None else pids()) if exe(p) == service_exe and alive(p))


def memory(ps: list[int]) -> tuple[int, int]:
    """Summed RSS and PSS in bytes (smaps_rollup)."""
    rss = pss = 0
    for p in ps:
        for line in read(f"/proc/{p}/smaps_rollup").splitlines():
            k, _, v = line.partition(":")
            if k == "Rss":
                rss += int(v.split()[0]) * 1024
            elif k == "Pss":
                pss += int(v.split()[0]) * 1024
    return rss, pss


def rss(pid: int) -> int:
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_ticks(ps: list[int]) -> dict[int, int]:
    out = {}
    for p in ps:
        st = stat(p)
        if st:
            out[p] = st[2]
    return out


# ---------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------


def pidfd(pid: int):
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def kill(pid: int, sig=signal.SIGKILL) -> bool:
    """Signals `pid` through a pidfd (never a recycled pid once the pidfd is open)."""
    fd = pidfd(pid)
    if fd is None:
        return False
    try:
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def kill_marked(run_id: str, rounds: int = 50) -> int:
    """SIGKILLs every live process carrying this run's mark, until none is left (a
    process may fork between the scan and the kill: the next round takes the child).
    Returns how many are left."""
    left = []
    for _ in range(rounds):
        left = marked(run_id)
        if not left:
            return 0
        for p in left:
            kill(p, signal.SIGSTOP)
        for p in left:
            kill(p, signal.SIGKILL)
        time.sleep(0.05)
    return len(left)


def wait_gone(pid_fd: int, timeout: float) -> bool:
    r, _, _ = select.select([pid_fd], [], [], timeout)
    return bool(r)


def run(argv, timeout=60.0, check=True, env=None, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        env=env, **kw,
    )
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p


def timed(argv, timeout=60.0, env=None) -> tuple[int, int, subprocess.CompletedProcess]:
    """(start ns, end ns, result) of running argv to completion."""
    t0 = now()
    p = run(argv, timeout=timeout, check=False, env=env)
    t1 = now()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return t0, t1, p


def wait_for(cond, timeout: float, what: str, step=0.001):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def start_lines(path: Path) -> list[tuple[int, int]]:
    """The (pid, monotonic ns) lines the service program appended to `path`."""
    out = []
    for line in read(path).splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), int(parts[1])))
    return out


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------


def build_service(dest: Path) -> Path:
    out = dest / "svc"
    cc = os.environ.get("CC", "cc")
    run([cc, "-O2", "-Wall", "-o", str(out), str(HERE / "svc.c")])
    return out


def build_tend(given: str | None) -> Path:
    if given:
        return Path(given).resolve()
    print("building tend (cargo build --release --bin tend) ...", flush=True)
    run(["cargo", "build", "--release", "--bin", "tend"], timeout=1800, cwd=REPO)
    meta = json.loads(run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO).stdout)
    return Path(meta["target_directory"]) / "release" / "tend"


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def machine() -> dict:
    cpu = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_mb": mem,
        "kernel": read("/proc/sys/kernel/osrelease").strip(),
        "os": next(
            (l.split("=", 1)[1].strip('"') for l in read("/etc/os-release").splitlines() if l.startswith("PRETTY_NAME=")),
            "",
        ),
    }
