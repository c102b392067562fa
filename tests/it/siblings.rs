//! Services of one home never take one another's processes for their own. A service
//! whose main process left its session (`setsid()`) leaves the session number `N` free;
//! the next service the daemon starts may be handed `N` for its intermediate, and then
//! its processes are the daemon's children in session `N` with no process of pid `N`,
//! which is exactly how orphans of the first service look. A stop of the first service,
//! or the cleanup after its crash, must leave the second alone.
//!
//! Staged for real in a private pid namespace (`unshare`), where the test sets the next
//! pid through the namespace's own `ns_last_pid`: the daemon, its services and every tend
//! command of these tests run inside it (a tend outside would read other processes
//! under the same numbers). The namespace and everything in it are killed when a test
//! ends, pass or fail (see [`Ns`]).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::Value;

use crate::util::*;

/// Deadline for anything that happens on its own (a restart, a number freed).
const LONG: Duration = Duration::from_secs(30);
/// How long a sibling is watched for a wrongly sent signal to take effect.
const WATCH: Duration = Duration::from_millis(500);
/// Tries at handing the sibling's intermediate the number `N`.
const ATTEMPTS: usize = 20;

/// A private pid (and mount) namespace whose first process is a shell running
/// `tend daemon --foreground` for the test's home. Dropped: the namespace's first
/// process is killed through a pidfd, which makes the kernel kill everything else in
/// it, and the drop returns once it is all gone.
struct Ns {
    unshare: Child,
    /// The namespace's first process (its init), as the host sees it.
    init: i32,
    /// A pidfd on it: signalled through this, never through a number.
    init_fd: Option<OwnedFd>,
    home: PathBuf,
    vars: Vec<(String, String)>,
}

impl Ns {
    fn start(env: &Env) -> Ns {
        let script = r#""$0" --home "$1" daemon --foreground 2>>"$1/daemon.log" & wait"#;
        let mut c = Command::new("unshare");
        c.args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
        ])
        .arg(script)
        .arg(TEND)
        .arg(env.home())
        .env_remove("TEND_HOME")
        .env_remove("TEND_CGROUP")
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut ns = Ns {
            unshare: c.spawn().expect("spawn unshare"),
            init: 0,
            init_fd: None,
            home: env.home().to_path_buf(),
            vars: env.vars.clone(),
        };
        let parent = ns.unshare.id() as i32;
        assert!(
            wait_until(LONG, || {
                ns.init = children_of(parent).first().copied().unwrap_or(0);
                ns.init > 0
            }),
            "unshare started no process"
        );
        let fd = pidfd_open(ns.init).expect("pidfd_open on the namespace's init");
        // Still unshare's child after the pidfd was opened: the pidfd is on that process.
        assert_eq!(
            ppid(ns.init),
            Some(parent),
            "the namespace's init went away"
        );
        ns.init_fd = Some(fd);
        assert!(
            wait_until(LONG, || ns.tend(&["daemon", "status"]).code == 0),
            "the daemon in the namespace did not answer; daemon.log:\n{}",
            read(&ns.home.join("daemon.log"))
        );
        ns
    }

    /// A command run inside the namespace (`nsenter`), with the env's variables.
    fn cmd(&self, program: &str) -> Command {
        assert!(self.alive(), "the namespace is gone");
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.init.to_string())
            .args(["--pid", "--mount", "--"])
            .arg(program)
            .env_remove("TEND_HOME")
            .env_remove("TEND_CGROUP")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    fn tend(&self, args: &[&str]) -> Out {
        let mut c = self.cmd(TEND);
        c.arg("--home").arg(&self.home).args(args);
        run(c)
    }

    fn ok(&self, args: &[&str]) -> Out {
        let out = self.tend(args);
        assert_eq!(out.code, 0, "tend {args:?} (in the namespace): {out:?}");
        out
    }

    /// `sh -c SCRIPT` inside the namespace.
    fn sh(&self, script: &str) {
        let mut c = self.cmd("sh");
        c.arg("-c").arg(script);
        let out = run(c);
        assert_eq!(out.code, 0, "sh -c {script:?} (in the namespace): {out:?}");
    }

    fn status(&self, name: &str) -> Value {
        let out = self.tend(&["status", name, "--json"]);
        assert!(out.code == 0 || out.code == 3, "status {name}: {out:?}");
        serde_json::from_str(&out.stdout).expect("status --json is JSON")
    }

    /// The recorded (pid, session) of `name`'s instance, as the namespace numbers them.
    fn instance(&self, name: &str) -> Option<(i32, i32)> {
        let v = self.status(name);
        Some((v["pid"].as_i64()? as i32, v["pgid"].as_i64()? as i32))
    }

    fn events(&self, name: &str) -> Vec<(String, String)> {
        let out = self.ok(&["events", name, "--json", "-n", "1000"]);
        let v: Value = serde_json::from_str(&out.stdout).expect("events --json is JSON");
        v.as_array()
            .expect("an array")
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["detail"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn daemon_log(&self) -> String {
        read(&self.home.join("daemon.log"))
    }

    fn alive(&self) -> bool {
        self.init_fd.as_ref().is_some_and(|fd| !readable(fd, 0))
    }

    /// Every process in the namespace (zombies included): (host pid, pid, group,
    /// session), the last three as the namespace numbers them.
    fn processes(&self) -> Vec<(i32, i32, i32, i32)> {
        let Ok(ours) = std::fs::read_link(format!("/proc/{}/ns/pid", self.init)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(host) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{host}/ns/pid")).ok() != Some(ours.clone()) {
                continue;
            }
            let status = read(&PathBuf::from(format!("/proc/{host}/status")));
            // The last number of NSpid/NSpgid/NSsid is the innermost namespace's.
            let inner = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().last()?.parse::<i32>().ok())
            };
            if let (Some(pid), Some(pgid), Some(sid)) =
                (inner("NSpid:"), inner("NSpgid:"), inner("NSsid:"))
            {
                out.push((host, pid, pgid, sid));
            }
        }
        out
    }

    /// The host's pid of the namespace's process `pid`.
    fn host_pid(&self, pid: i32) -> Option<i32> {
        self.processes()
            .into_iter()
            .find(|p| p.1 == pid)
            .map(|p| p.0)
    }

    /// Whether anything in the namespace holds the number `n` (as a pid, group or
    /// session).
    fn in_use(&self, n: i32) -> bool {
        self.processes()
            .iter()
            .any(|&(_, pid, pgid, sid)| pid == n || pgid == n || sid == n)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Some(fd) = self.init_fd.take() {
            // SAFETY: pidfd_send_signal on our own pidfd, with no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
            // The init exits only once the kernel has killed and reaped everything
            // else in its namespace.
            readable(&fd, 30_000);
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: the pidfd_open syscall takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the pidfd reports its process exited, waiting up to `ms`.
fn readable(fd: &OwnedFd, ms: i32) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    )
    .is_ok_and(|n| n > 0)
}

fn children_of(pid: i32) -> Vec<i32> {
    read(&PathBuf::from(format!("/proc/{pid}/task/{pid}/children")))
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A hex mask line (`SigPnd:\t0000...`) of `/proc/PID/status`.
fn mask(pid: i32, key: &str) -> u64 {
    let status = read(&PathBuf::from(format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// Two services of one home in a namespace: `a`'s main process left session `n`, and
/// `b`'s instance was handed `n` for its session. Fields drop in order: the namespace
/// before the home.
struct Staged {
    ns: Ns,
    _env: Env,
    /// `a`'s main process (the namespace's number) and the session `n` it left.
    a: i32,
    n: i32,
    /// `b`'s main process: the namespace's number, the host's, its start time.
    b: i32,
    b_host: i32,
    b_start: u64,
    /// `b`'s exit events so far.
    b_exits: usize,
}

fn stage(env: Env) -> Staged {
    let ns = Ns::start(&env);
    let always = [
        "--restart",
        "always",
        "--restart-delay",
        "0",
        "--start-limit",
        "0",
        "--",
        FIXTURE,
    ];
    let add = |name: &str, args: &[&str]| {
        let mut v = vec!["add", name];
        v.extend_from_slice(&always);
        v.extend_from_slice(args);
        ns.ok(&v);
    };
    add("a", &["--setsid", "--marker", "a"]);
    add("b", &["--marker", "b"]);
    ns.ok(&["start", "a"]);
    let log_a = env.log_path("a");
    assert!(
        wait_until(LONG, || read(&log_a).contains("SETSID")),
        "a did not leave its session; log: {}",
        read(&log_a)
    );
    let (a, n) = ns.instance("a").expect("a runs");
    assert_ne!(a, n, "a's main process is not its intermediate");
    ns.ok(&["start", "b"]);
    let log_b = env.log_path("b");
    let starts = || read(&log_b).matches("STARTED pid=").count();
    // b crashes with the namespace's next pid set to N: the daemon restarts it at once,
    // and the restart's intermediate (the first process the namespace creates) gets N.
    // Until the restarted b has written its first line, nothing is run in the
    // namespace (a tend command there would take a pid); if something took N all the
    // same, try again.
    for attempt in 1..=ATTEMPTS {
        assert!(
            wait_until(LONG, || !ns.in_use(n)),
            "number {n} stayed in use in the namespace (attempt {attempt}): {:?}",
            ns.processes()
        );
        let (old, _) = ns.instance("b").expect("b runs");
        let before = starts();
        ns.sh(&format!(
            "echo {} > /proc/sys/kernel/ns_last_pid && kill -KILL {old}",
            n - 1
        ));
        assert!(
            wait_until(LONG, || starts() > before),
            "b was not restarted; log: {}\ndaemon.log:\n{}",
            read(&log_b),
            ns.daemon_log()
        );
        let (b, session) = ns.instance("b").expect("b was restarted");
        if session != n {
            eprintln!("attempt {attempt}: b's intermediate got {session}, not {n}; again");
            continue;
        }
        let b_host = ns.host_pid(b).expect("b runs");
        // The corner: b runs in session N as the daemon's child, and no process has
        // pid N (its intermediate is gone).
        assert!(
            wait_until(LONG, || !ns.processes().iter().any(|p| p.1 == n)),
            "pid {n} stayed in the namespace: {:?}",
            ns.processes()
        );
        let b_exits = ns.events("b").iter().filter(|(k, _)| k == "exit").count();
        return Staged {
            b_start: start_time_of(b_host).expect("b runs"),
            a,
            n,
            b,
            b_host,
            b_exits,
            ns,
            _env: env,
        };
    }
    panic!("b's intermediate never got pid {n} in {ATTEMPTS} attempts");
}

impl Staged {
    /// `b` was never signalled: the same process runs, nothing is pending for it, it
    /// stays up for [`WATCH`], it is still the recorded instance and did not exit.
    fn assert_b_untouched(&self, after: &str) {
        let h = self.b_host;
        for key in ["SigPnd:", "ShdPnd:"] {
            assert_eq!(mask(h, key), 0, "a signal is pending for b after {after}");
        }
        assert!(
            !wait_until(WATCH, || !alive(h)
                || start_time_of(h) != Some(self.b_start)),
            "b (pid {} in the namespace) died within {WATCH:?} after {after}",
            self.b
        );
        assert_eq!(
            self.ns.instance("b"),
            Some((self.b, self.n)),
            "b's instance changed after {after}"
        );
        let exits = self
            .ns
            .events("b")
            .iter()
            .filter(|(k, _)| k == "exit")
            .count();
        assert_eq!(exits, self.b_exits, "b exited after {after}");
    }

    /// `tend stop a`: a is stopped on its own, b is neither signalled nor counted.
    fn stop_a(&self, cgroups: bool) {
        let out = self.ns.ok(&["stop", "a"]);
        assert!(
            out.stdout.contains(&format!("a: stopped (pid {}", self.a)),
            "{out:?}"
        );
        assert!(!out.stdout.contains("other process"), "{out:?}");
        self.assert_b_untouched("tend stop a");
        let ev = self.ns.events("a");
        let stop = ev
            .iter()
            .rev()
            .find(|(k, _)| k == "stop")
            .unwrap_or_else(|| panic!("no stop event: {ev:?}"));
        assert!(!stop.1.contains("other process"), "{stop:?}");
        if !cgroups {
            // The stop did look at session N, saw b there and left it alone.
            assert!(
                stop.1.contains(&format!("now in session/group {}", self.n))
                    && stop.1.contains("left alone"),
                "{stop:?}"
            );
        }
    }

    /// a's main process crashes: the daemon cleans up after it and restarts it, and b
    /// is neither signalled nor taken for a's leftover.
    fn crash_a(&self, cgroups: bool) {
        let host = self.ns.host_pid(self.a).expect("a runs");
        // SAFETY: kill(2) on the host's pid of this test's own service, found a moment
        // ago in the namespace that only this test's processes live in.
        unsafe {
            libc::kill(host, libc::SIGKILL);
        }
        // The cleanup comes before the restart: once a new instance is recorded, it is
        // over.
        assert!(
            wait_until(LONG, || self
                .ns
                .instance("a")
                .is_some_and(|(p, _)| p != self.a)),
            "a was not restarted; events: {:?}\ndaemon.log:\n{}",
            self.ns.events("a"),
            self.ns.daemon_log()
        );
        self.assert_b_untouched("a's crash");
        let log = self.ns.daemon_log();
        assert!(
            !log.contains("killed processes the service left behind"),
            "{log}"
        );
        if !cgroups {
            assert!(
                log.contains("not proven to be its own; left alone"),
                "{log}"
            );
        }
    }
}

fn can_stage(test: &str) -> bool {
    require_root(test, "create a pid namespace and write its ns_last_pid")
        && require_tool("unshare")
        && require_tool("nsenter")
}

#[test]
fn stop_spares_a_sibling_holding_the_session_number() {
    if !can_stage("stop_spares_a_sibling_holding_the_session_number") {
        return;
    }
    stage(Env::without_cgroups()).stop_a(false);
}

#[test]
fn crash_cleanup_spares_a_sibling_holding_the_session_number() {
    if !can_stage("crash_cleanup_spares_a_sibling_holding_the_session_number") {
        return;
    }
    stage(Env::without_cgroups()).crash_a(false);
}

/// With cgroups, membership is the only proof: the sibling, in a cgroup of its own,
/// is never signalled by a's stop.
#[test]
fn with_cgroups_stop_spares_a_sibling_holding_the_session_number() {
    if !can_stage("with_cgroups_stop_spares_a_sibling_holding_the_session_number") {
        return;
    }
    let s = stage(Env::new());
    assert!(
        s.ns.status("a")["cgroup"]["path"].is_string(),
        "a runs in a cgroup"
    );
    s.stop_a(true);
}

#[test]
fn with_cgroups_crash_cleanup_spares_a_sibling_holding_the_session_number() {
    if !can_stage("with_cgroups_crash_cleanup_spares_a_sibling_holding_the_session_number") {
        return;
    }
    let s = stage(Env::new());
    assert!(
        s.ns.status("a")["cgroup"]["path"].is_string(),
        "a runs in a cgroup"
    );
    s.crash_a(true);
}

/// The number `N` a's main process left is taken by a start not recorded yet: b's
/// automatic restart, held at the gate while its record cannot be committed (the test
/// holds the database's write lock meanwhile). A stop of a, waiting for a (which
/// ignores TERM) to exit, looks at session `N` again and again while b's process sits
/// there as the daemon's child with no process of pid `N`: it must leave it alone,
/// although no record names `N` yet.
#[test]
fn stop_spares_a_sibling_whose_start_is_in_flight() {
    if !can_stage("stop_spares_a_sibling_whose_start_is_in_flight") {
        return;
    }
    for attempt in 1..=5 {
        if stage_in_flight() {
            return;
        }
        eprintln!("attempt {attempt}: the staging missed its moment; again");
    }
    panic!("could not stage a start in flight in session N in 5 attempts");
}

/// One try at [`stop_spares_a_sibling_whose_start_is_in_flight`]; false when the
/// staging missed (b's restart was not handed `N`, or came too late for the stop to
/// look at it for a while).
fn stage_in_flight() -> bool {
    let env = Env::without_cgroups();
    let ns = Ns::start(&env);
    ns.ok(&[
        "add",
        "a",
        "--stop-timeout",
        "6s",
        "--",
        FIXTURE,
        "--setsid",
        "--ignore-term",
        "--marker",
        "a",
    ]);
    ns.ok(&[
        "add",
        "b",
        "--restart",
        "always",
        "--restart-delay",
        "1s",
        "--start-limit",
        "0",
        "--",
        FIXTURE,
        "--marker",
        "b",
    ]);
    ns.ok(&["start", "a"]);
    let log_a = env.log_path("a");
    assert!(
        wait_until(LONG, || read(&log_a).contains("SETSID")),
        "a did not leave its session; log: {}",
        read(&log_a)
    );
    let (a, n) = ns.instance("a").expect("a runs");
    let a_host = ns.host_pid(a).expect("a runs");
    ns.ok(&["start", "b"]);
    let (b_old, _) = ns.instance("b").expect("b runs");
    let b_old_host = ns.host_pid(b_old).expect("b runs");
    assert!(
        wait_until(LONG, || !ns.in_use(n)),
        "number {n} stayed in use in the namespace: {:?}",
        ns.processes()
    );
    let daemon = children_of(ns.init)
        .first()
        .copied()
        .expect("the daemon is the namespace init's child");
    let db = rusqlite::Connection::open(env.db()).expect("open the database");
    let instance = |name: &str| -> Option<bool> {
        db.query_row(
            "SELECT i.stopping FROM instances i JOIN services s ON s.id = i.service_id \
             WHERE s.name = ?1",
            [name],
            |r| r.get(0),
        )
        .ok()
    };
    let log_b = env.log_path("b");
    let starts = || read(&log_b).matches("STARTED pid=").count();
    std::thread::scope(|s| {
        let stop = s.spawn(|| ns.tend(&["stop", "a"]));
        assert!(
            wait_until(LONG, || instance("a") == Some(true)),
            "the stop of a did not begin"
        );
        // b crashes; its restart is due in 1 s.
        let b_starts = starts();
        // SAFETY: kill(2) on the host's pid of this test's own service, found a moment
        // ago in the namespace that only this test's processes live in.
        unsafe {
            libc::kill(b_old_host, libc::SIGKILL);
        }
        assert!(
            wait_until(LONG, || instance("b").is_none()),
            "b's exit was not recorded"
        );
        // Its own connection, inside this closure: on a failure it is dropped (and the
        // lock released) before the scope waits for the stop.
        let lock = rusqlite::Connection::open(env.db()).expect("open the database");
        lock.execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        ns.sh(&format!("echo {} > /proc/sys/kernel/ns_last_pid", n - 1));
        // b's restart: a copy of the daemon (not exec'd yet) held at the gate.
        let mut held = 0;
        assert!(
            wait_until(LONG, || {
                held = children_of(daemon)
                    .into_iter()
                    .find(|&p| p != a_host)
                    .unwrap_or(0);
                held > 0
            }),
            "b's restart did not come"
        );
        let session = ns
            .processes()
            .into_iter()
            .find(|p| p.0 == held)
            .map(|p| p.3);
        let at_gate = std::fs::read_link(format!("/proc/{held}/exe"))
            .is_ok_and(|e| e == std::path::Path::new(TEND));
        let since = std::time::Instant::now();
        if session != Some(n) || !at_gate || !alive(a_host) {
            eprintln!(
                "b's restart: session {session:?} (not {n}), held at the gate: {at_gate}, \
                 a still stopping: {}",
                alive(a_host)
            );
            lock.execute_batch("ROLLBACK")
                .expect("release the write lock");
            let _ = stop.join();
            return false;
        }
        // The stop ends a with SIGKILL at its timeout, having looked at session N every
        // few milliseconds meanwhile.
        assert!(wait_until(LONG, || !alive(a_host)), "a survived its stop");
        if since.elapsed() < Duration::from_secs(1) {
            eprintln!(
                "b was held only {:?} before a's stop ended",
                since.elapsed()
            );
            lock.execute_batch("ROLLBACK")
                .expect("release the write lock");
            let _ = stop.join();
            return false;
        }
        for key in ["SigPnd:", "ShdPnd:"] {
            assert_eq!(
                mask(held, key),
                0,
                "a signal is pending for b's process held at the gate"
            );
        }
        assert!(
            !wait_until(WATCH, || !alive(held)),
            "b's process held at the gate died within {WATCH:?} after a's stop"
        );
        lock.execute_batch("ROLLBACK")
            .expect("release the write lock");
        let out = stop.join().expect("the stop thread");
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(&format!("a: stopped (pid {a}")),
            "{out:?}"
        );
        assert!(!out.stdout.contains("other process"), "{out:?}");
        // Its record committed at last, b's restart goes ahead with the process held.
        assert!(
            wait_until(LONG, || starts() > b_starts),
            "b did not run; log: {}\ndaemon.log:\n{}",
            read(&log_b),
            ns.daemon_log()
        );
        let (b, session) = ns.instance("b").expect("b runs");
        assert_eq!(session, n);
        assert_eq!(ns.host_pid(b), Some(held));
        assert!(
            !wait_until(WATCH, || !alive(held)),
            "b died within {WATCH:?} of its start"
        );
        true
    })
}
