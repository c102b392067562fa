//! Shared helpers: a fresh state home per test, running the real binary with a deadline,
//! waiting on conditions, and making sure every process a test started is gone at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

pub const TEND: &str = env!("CARGO_BIN_EXE_tend");
pub const FIXTURE: &str = env!("CARGO_BIN_EXE_tend-test-service");

/// How long one tend invocation may take before the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// A fresh state home plus a scratch directory. Dropping it stops every service the
/// test started (through tend, then by SIGKILL to every recorded process group).
pub struct Env {
    pub home: tempfile::TempDir,
    pub work: tempfile::TempDir,
    /// Set on every tend command (e.g. `TEND_CGROUP=off`).
    pub vars: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        Env {
            home: tempfile::tempdir().expect("temp home"),
            work: tempfile::tempdir().expect("temp work dir"),
            vars: Vec::new(),
        }
    }

    /// An env whose tend uses process-group containment only (`TEND_CGROUP=off`): for
    /// tests of the session-based proofs, which cgroups otherwise make unnecessary.
    pub fn without_cgroups() -> Env {
        let mut e = Env::new();
        e.vars.push(("TEND_CGROUP".into(), "off".into()));
        e
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn db(&self) -> PathBuf {
        self.home().join("tend.db")
    }

    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// A `tend` command with this env's home, run from the work directory.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(TEND);
        c.arg("--home")
            .arg(self.home())
            .current_dir(self.work())
            .env_remove("TEND_HOME")
            .env_remove("TEND_CGROUP")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    /// Runs `tend ARGS` to completion (bounded by a deadline).
    pub fn tend(&self, args: &[&str]) -> Out {
        let mut c = self.cmd();
        c.args(args);
        run(c)
    }

    /// Runs `tend ARGS` and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Out {
        let out = self.tend(args);
        assert_eq!(
            out.code, 0,
            "tend {args:?} failed\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        out
    }

    /// `tend start NAMES` for services that exit on their own quickly: the start either
    /// succeeded, or was honest that a service had already exited when tend looked
    /// (exit 1, `exited at once`), which depends on scheduling.
    pub fn start_brief(&self, names: &[&str]) -> Out {
        let mut args = vec!["start"];
        args.extend_from_slice(names);
        let out = self.tend(&args);
        assert!(
            out.code == 0 || (out.code == 1 && out.stderr.contains("exited at once")),
            "tend {args:?}: {out:?}"
        );
        out
    }

    /// Defines `name` as the fixture service with `fixture_args`.
    pub fn add_fixture(&self, name: &str, extra: &[&str], fixture_args: &[&str]) {
        let mut args = vec!["add", name];
        args.extend_from_slice(extra);
        args.push("--");
        args.push(FIXTURE);
        args.extend_from_slice(fixture_args);
        self.ok(&args);
    }

    pub fn status_json(&self, name: &str) -> serde_json::Value {
        let out = self.tend(&["status", name, "--json"]);
        assert!(
            out.code == 0 || out.code == 3,
            "status {name}: {}",
            out.stderr
        );
        serde_json::from_str(&out.stdout).expect("status --json is JSON")
    }

    /// The recorded pid of a running service, via `tend status --json`.
    pub fn pid(&self, name: &str) -> Option<i32> {
        self.status_json(name)["pid"].as_i64().map(|p| p as i32)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.home().join("logs").join(format!("{name}.log"))
    }

    /// What the background daemon wrote to its log.
    pub fn daemon_log(&self) -> String {
        read(&self.home().join("daemon.log"))
    }

    /// Waits (up to 30 s) for a running instance of `name` whose pid differs from `old`,
    /// and returns its pid.
    pub fn wait_new_pid(&self, name: &str, old: i32) -> i32 {
        let mut new = None;
        let ok = wait_until(Duration::from_secs(30), || {
            new = self.pid(name).filter(|&p| p != old && alive(p));
            new.is_some()
        });
        assert!(
            ok,
            "{name} was not restarted; events:\n{}\ndaemon.log:\n{}",
            self.tend(&["events", name]).stdout,
            self.daemon_log()
        );
        new.expect("checked above")
    }

    /// The pid written in the daemon lock file, if a daemon holds the lock (a pid left
    /// in the file by a dead daemon may belong to another process by now).
    pub fn daemon_pid(&self) -> Option<i32> {
        let lock = self.home().join("daemon.lock");
        if !lock_held(&lock) {
            return None;
        }
        // The pid is the file's first line (the daemon notes more below it).
        let text = std::fs::read_to_string(&lock).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// SIGKILLs this home's daemon, if one runs (services are stopped separately).
    pub fn kill_daemon(&self) {
        if let Some(pid) = self.daemon_pid() {
            // SAFETY: kill on a pid read from this test's own daemon lock file.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            wait_until(Duration::from_secs(10), || !alive(pid));
        }
    }

    /// Every recorded instance: (pid, process group, start time).
    fn recorded_instances(&self) -> Vec<(i32, i32, u64)> {
        let Ok(conn) = rusqlite::Connection::open(self.db()) else {
            return Vec::new();
        };
        let Ok(mut stmt) = conn.prepare("SELECT pid, pgid, start_time FROM instances") else {
            return Vec::new();
        };
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
    }
}

impl Env {
    /// The cgroup tend creates for this home under `parent` (`tend-` and 16 hex digits of
    /// the SHA-256 of the home's path; see `process::cgroup`).
    pub fn cgroup_in(&self, parent: &Path) -> PathBuf {
        use sha2::Digest;
        use std::os::unix::ffi::OsStrExt;
        let digest = sha2::Sha256::digest(self.home().as_os_str().as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        parent.join(format!("tend-{hex}"))
    }

    /// This home's cgroup when tend runs from the test's own cgroup (as tend does here).
    pub fn cgroup(&self) -> Option<PathBuf> {
        own_cgroup().map(|p| self.cgroup_in(&p))
    }

    /// Kills whatever is left in this home's cgroup and removes it, deepest first.
    fn remove_cgroup(&self) {
        let Some(root) = self.cgroup().filter(|p| p.is_dir()) else {
            return;
        };
        let _ = std::fs::write(root.join("cgroup.kill"), "1");
        wait_until(Duration::from_secs(10), || !cgroup_populated(&root));
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// `populated 1` in `cgroup.events`.
pub fn cgroup_populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// The cgroup v2 mount point (from /proc/self/mountinfo).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap_or("")))
    })
}

/// The directory of this process's own cgroup v2.
pub fn own_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rel = rel.trim().trim_start_matches('/');
    let mount = cgroup2_mount()?;
    Some(if rel.is_empty() {
        mount
    } else {
        mount.join(rel)
    })
}

/// Every pid in a cgroup directory and below.
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs);
    dirs.iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Drop for Env {
    fn drop(&mut self) {
        self.kill_daemon();
        if self.db().exists() {
            let mut c = self.cmd();
            c.args(["stop", "--all"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = c.status();
            // Only what tend could not stop is left, and only while the recorded main
            // process is still that very process is its group known to be this test's.
            for (pid, pgid, start_time) in self.recorded_instances() {
                if start_time_of(pid) == Some(start_time) && alive(pid) {
                    kill_group(pgid);
                    // SAFETY: kill on a pid whose identity was just checked.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
        self.remove_cgroup();
    }
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks.
pub fn start_time_of(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// True when someone holds the daemon's lock at `path`. Probes with `F_OFD_GETLK`, which
/// takes nothing, as tend itself does (a test that took the lock to look would be exactly
/// the kind of reader that must never make `tend daemon` fail).
pub fn lock_held(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut probe = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match nix::fcntl::fcntl(
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_OFD_GETLK(&mut probe),
    ) {
        Ok(_) => probe.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => false,
    }
}

/// SIGKILL a process group this test created through tend, unless its number has been
/// reused. tend's intermediate process (whose pid is the group's number) exits at once,
/// so a live process with pid `pgid` means the number now belongs to someone else: the
/// pid space wraps during a test run, and another test's new service may hold it. (This
/// is the very mistake tend itself must never make; the harness must not make it either.)
pub fn kill_group(pgid: i32) {
    // SAFETY: getpgrp has no preconditions.
    let own = unsafe { libc::getpgrp() };
    // Never the test runner's own group, whatever a test recorded.
    if pgid <= 1 || pgid == own {
        return;
    }
    if Path::new(&format!("/proc/{pgid}")).exists() {
        return;
    }
    // SAFETY: kill with a negative pid signals a process group; no memory involved.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Kills a single process on drop (for unrelated processes a test spawns itself).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion with a deadline; the child is killed if it overruns.
pub fn run(mut c: Command) -> Out {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn tend");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output: Output = match rx.recv_timeout(RUN_DEADLINE) {
        Ok(o) => o.expect("wait for tend"),
        Err(_) => {
            // SAFETY: signalling the child we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            panic!("tend did not finish within {RUN_DEADLINE:?}: {c:?}");
        }
    };
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Polls `cond` until it holds or `deadline` passes; returns whether it held.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks `cond` again and again for the whole of `window`: true if it held every time,
/// false at the first time it did not. An assertion of absence ("nothing restarts it")
/// watches over a stated window with this, rather than sleeping and looking once.
pub fn holds_for(window: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + window;
    loop {
        if !cond() {
            return false;
        }
        if Instant::now() >= end {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("X");
    !matches!(state, "Z" | "X")
}

/// Live (non-zombie) members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 3 && f[2] == pgid.to_string() && f[0] != "Z" && f[0] != "X" {
            out.push(pid);
        }
    }
    out
}

/// The file's bytes, or empty if it does not exist.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A snapshot of everything stored (every row of every table, in order), for checking
/// that a failed command changed nothing.
pub fn dump(db: &Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db read-only");
    let mut out = String::new();
    for table in ["services", "instances", "events"] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
            .expect("prepare");
        let cols = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut line = String::new();
                for i in 0..cols {
                    let v: rusqlite::types::Value = r.get(i)?;
                    line.push_str(&format!("{v:?}|"));
                }
                Ok(line)
            })
            .expect("query");
        out.push_str(table);
        out.push('\n');
        for r in rows {
            out.push_str(&r.expect("row"));
            out.push('\n');
        }
    }
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    out.push_str(&format!("user_version {v}\n"));
    out
}

/// True when the test runs as root. A test that can only stage its corner as root (writing
/// `/proc/sys/kernel/ns_last_pid`, scheduling classes) calls this first and, when it says
/// no, returns at once: it is then recorded as not run, with `why`, and listed in the
/// summary the test binary prints when it exits (see [`print_not_run`]).
pub fn require_root(test: &str, why: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("{test}: not run: needs root to {why}");
    record_not_run(Some(test), format!("needs root to {why}"));
    false
}

/// True when program `tool` can be run; otherwise records the calling test as not run
/// (a test that needs it cannot stage its corner without it) and returns false.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("not run: needs {tool}, which is not installed");
        record_not_run(None, format!("needs {tool}, which is not installed"));
    }
    found
}

/// Records the calling test as not run because `why` (it cannot stage its corner here),
/// for the list printed at the end (see [`print_not_run`]).
pub fn not_run(why: &str) {
    eprintln!("not run: {why}");
    record_not_run(None, why.to_string());
}

/// Tests that did not run: (name, what they need).
static NOT_RUN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn record_not_run(test: Option<&str>, why: String) {
    // libtest names each test's thread after the test's full path (`faults::name`);
    // elsewhere the bare name is all there is.
    let thread = std::thread::current();
    let name = thread
        .name()
        .filter(|n| test.is_none_or(|t| n.ends_with(t)))
        .or(test)
        .unwrap_or("a test")
        .to_string();
    NOT_RUN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name, why));
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: registers a function without arguments that only reads a static.
        unsafe {
            libc::atexit(print_not_run);
        }
    });
}

/// Prints, once the test binary is done, which tests were not run and why, so that a
/// test that returned early is never taken for a pass. libtest runs every test on a
/// thread of this one process and leaves through `exit()` whatever the outcome (an
/// `atexit` handler runs after its `test result:` line); Rust never drops statics, so
/// a `Drop` could not do this. A run cut short (Ctrl-C, a crash) prints nothing: it
/// passed nothing either. Under cargo-nextest each test is a process of its own, so each
/// not-run test prints its own one-line summary into its output.
extern "C" fn print_not_run() {
    // Never wait at exit: a test thread still running could hold the lock.
    let list = match NOT_RUN.try_lock() {
        Ok(list) => list,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    if list.is_empty() {
        return;
    }
    let mut list = list.clone();
    list.sort();
    let n = list.len();
    let (tests, were) = if n == 1 {
        ("test", "was")
    } else {
        ("tests", "were")
    };
    let mut text = format!("\n{n} {tests} {were} not run:\n");
    for (name, why) in &list {
        text.push_str(&format!("    {name} ({why})\n"));
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
}
