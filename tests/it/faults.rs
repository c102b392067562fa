//! Process-level corners staged for real: recycled session numbers, services that leave
//! their session, what a service inherits, and a start that is honest about a service
//! that exits at once.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Deadline for anything that happens on its own (a log line, a restart, a number freed).
const LONG: Duration = Duration::from_secs(20);

/// Tests that write `/proc/sys/kernel/ns_last_pid` take this first, so they never aim
/// for a pid at the same time (other tests may still fork meanwhile: see [`stranger_at`]).
static NS_LAST_PID: Mutex<()> = Mutex::new(());

pub(crate) fn ns_lock() -> MutexGuard<'static, ()> {
    // A test that failed while holding it poisons it; the next one may still go ahead.
    NS_LAST_PID.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fields of `/proc/PID/stat` after the command name: state, ppid, pgrp, session...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// (ppid, pgrp, session) of a live process.
fn ids(pid: i32) -> Option<(i32, i32, i32)> {
    let f = stat_fields(pid)?;
    Some((f[1].parse().ok()?, f[2].parse().ok()?, f[3].parse().ok()?))
}

/// Every process (zombies included) whose session or process group is `n`.
fn in_session_or_group(n: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((_, pgrp, session)) = ids(pid) {
            if pgrp == n || session == n {
                out.push(pid);
            }
        }
    }
    out
}

/// True while something holds the number `n`: a process or thread with that id, or a
/// session or group of that number.
fn number_in_use(n: i32) -> bool {
    Path::new(&format!("/proc/{n}")).exists() || !in_session_or_group(n).is_empty()
}

const NS_LAST_PID_PATH: &str = "/proc/sys/kernel/ns_last_pid";

fn last_pid() -> i32 {
    std::fs::read_to_string(NS_LAST_PID_PATH)
        .expect("read ns_last_pid")
        .trim()
        .parse()
        .expect("ns_last_pid is a number")
}

/// Spawns an unrelated process with pid `n` that makes itself the leader of session `n`
/// (`setsid sleep 1000`), the way a recycled number would be taken. The caller holds
/// [`ns_lock`]. Other tests fork concurrently and may be handed `n` first: then the
/// staging is tried again once the number is free, up to 50 times.
///
/// Afterwards the kernel's pid counter is put back where it was, so that the other
/// tests' next processes do not get numbers that were freed a moment ago (whose old
/// owners someone may still be cleaning up by number).
pub(crate) fn stranger_at(n: i32) -> KillOnDrop {
    assert!(n > 2, "session number {n}");
    for attempt in 1..=50 {
        assert!(
            wait_until(Duration::from_secs(30), || !number_in_use(n)),
            "number {n} stayed in use (attempt {attempt}): processes {:?}",
            in_session_or_group(n)
        );
        let counter = last_pid();
        let restore = || {
            if last_pid() < counter {
                let _ = std::fs::write(NS_LAST_PID_PATH, counter.to_string());
            }
        };
        std::fs::write(NS_LAST_PID_PATH, (n - 1).to_string()).expect("write ns_last_pid");
        let spawned = Command::new("setsid")
            .args(["sleep", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        restore();
        let child = KillOnDrop(spawned.expect("spawn setsid sleep"));
        if child.0.id() as i32 != n {
            // Someone else forked in between; kill ours and aim again.
            eprintln!(
                "stranger_at({n}): attempt {attempt} got pid {}; retrying",
                child.0.id()
            );
            drop(child);
            continue;
        }
        // `setsid` (not a group leader: it is in our group) calls setsid() and execs.
        assert!(
            wait_until(LONG, || ids(n).is_some_and(|(_, pg, s)| pg == n && s == n)),
            "the stranger (pid {n}) did not become leader of session {n}: {:?}",
            stat_fields(n)
        );
        return child;
    }
    panic!("could not stage a stranger with pid {n}: other processes took it 50 times");
}

/// Asserts the stranger was never signalled: still running (not reaped, not a zombie)
/// and nothing pending for it.
pub(crate) fn assert_untouched(stranger: &mut KillOnDrop, n: i32) {
    // A wrongly sent signal would land within this window (or show as pending below).
    assert!(
        holds_for(Duration::from_millis(100), || alive(n)),
        "the stranger with pid {n} died"
    );
    assert!(
        stranger.0.try_wait().expect("try_wait").is_none(),
        "the stranger with pid {n} was killed"
    );
    assert!(alive(n), "the stranger with pid {n} is not running");
    let status = std::fs::read_to_string(format!("/proc/{n}/status")).unwrap();
    for key in ["SigPnd", "ShdPnd"] {
        assert_eq!(
            status_mask(&status, key),
            0,
            "a signal is pending for the stranger (pid {n}):\n{status}"
        );
    }
    assert_eq!(
        ids(n).map(|(_, pg, s)| (pg, s)),
        Some((n, n)),
        "the stranger is still leader of session {n}"
    );
}

/// A hex mask line (`SigBlk:\t0000...`) of `/proc/PID/status`.
fn status_mask(status: &str, key: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in\n{status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// The service's events as (kind, detail), oldest first.
pub(crate) fn events(env: &Env, name: &str) -> Vec<(String, String)> {
    let out = env.ok(&["events", name, "--json", "-n", "1000"]);
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

fn pgid(env: &Env, name: &str) -> i32 {
    env.status_json(name)["pgid"]
        .as_i64()
        .expect("a recorded pgid") as i32
}

/// Starts `name` (defined with `--setsid`), waits until it has left its session, and
/// returns (main pid, the session number N tend created, now free of processes).
pub(crate) fn start_setsid_service(env: &Env, name: &str) -> (i32, i32) {
    env.ok(&["start", name]);
    let pid = env.pid(name).expect("running");
    assert!(
        wait_until(LONG, || read(&env.log_path(name)).contains("SETSID")),
        "log: {}",
        read(&env.log_path(name))
    );
    let n = pgid(env, name);
    assert_ne!(n, pid);
    assert_eq!(
        ids(pid).map(|(_, pg, s)| (pg, s)),
        Some((pid, pid)),
        "main must lead a session of its own after setsid()"
    );
    // The intermediate exited and was reaped; main left: nothing holds N now.
    assert!(
        wait_until(LONG, || !number_in_use(n)),
        "number {n} still in use: {:?}",
        in_session_or_group(n)
    );
    (pid, n)
}

/// `tend daemon`, checked.
pub(crate) fn start_daemon(env: &Env) {
    let out = env.ok(&["daemon"]);
    assert!(out.stdout.contains("daemon: started"), "{out:?}");
}

// ---------------------------------------------------------------------------------------
// 1-3. The session number N of a service that left it is reused by a stranger.
// ---------------------------------------------------------------------------------------

/// The main process left its session and the number was handed to an unrelated session
/// leader: `tend stop` stops main through its pidfd and never signals the stranger.
#[test]
fn stop_spares_a_stranger_holding_the_recycled_session_number() {
    if !require_root(
        "stop_spares_a_stranger_holding_the_recycled_session_number",
        "write /proc/sys/kernel/ns_last_pid",
    ) {
        return;
    }
    let env = Env::without_cgroups();
    env.add_fixture("web", &[], &["--setsid", "--marker", "m"]);
    let _guard = ns_lock();
    let (pid, n) = start_setsid_service(&env, "web");
    let mut stranger = stranger_at(n);

    let out = env.ok(&["stop", "web"]);
    assert!(
        out.stdout.contains("web: stopped (") && out.stdout.contains(&format!("pid {pid}")),
        "{out:?}"
    );
    assert!(!alive(pid), "main (pid {pid}) survived the stop");
    assert_untouched(&mut stranger, n);
    assert!(
        out.stderr.contains(&format!(
            "tend: web: pid {pid} had left the session tend created for it"
        )),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(
            "tend: web: 1 process(es) in the service's old session/group number could not \
             be proven to be its own"
        ) && out.stderr.contains("left alone"),
        "{out:?}"
    );
    let ev = events(&env, "web");
    let stop = ev
        .iter()
        .rev()
        .find(|(k, _)| k == "stop")
        .unwrap_or_else(|| panic!("no stop event: {ev:?}"));
    assert!(
        stop.1
            .contains(&format!("it had left session {n} (setsid)"))
            && stop.1.contains("not proven to be the service's")
            && stop.1.contains("left alone"),
        "{stop:?}"
    );
    assert!(env.status_json("web")["pid"].is_null());
}

/// The same corner through `tend restart`: the old instance is stopped, a new one runs,
/// the stranger lives on.
#[test]
fn restart_spares_a_stranger_holding_the_recycled_session_number() {
    if !require_root(
        "restart_spares_a_stranger_holding_the_recycled_session_number",
        "write /proc/sys/kernel/ns_last_pid",
    ) {
        return;
    }
    let env = Env::without_cgroups();
    env.add_fixture("web", &[], &["--setsid", "--marker", "m"]);
    let _guard = ns_lock();
    let (pid, n) = start_setsid_service(&env, "web");
    let mut stranger = stranger_at(n);

    let out = env.ok(&["restart", "web"]);
    assert!(
        !alive(pid),
        "the old instance (pid {pid}) survived: {out:?}"
    );
    let new = env.pid("web").expect("a new instance is recorded");
    assert_ne!(new, pid);
    assert!(alive(new), "the new instance (pid {new}) is not running");
    assert!(
        out.stdout.contains(&format!("web: started (pid {new})")),
        "{out:?}"
    );
    assert_ne!(pgid(&env, "web"), n);
    assert_untouched(&mut stranger, n);
    assert!(
        out.stderr.contains("could not be proven") && out.stderr.contains("left alone"),
        "{out:?}"
    );
    let ev = events(&env, "web");
    assert!(
        ev.iter().any(|(k, d)| k == "stop"
            && d.contains(&format!("it had left session {n} (setsid)"))
            && d.contains("left alone")),
        "{ev:?}"
    );
}

/// The daemon cleans up after a crash (an unrequested exit) before it restarts the
/// service: with main gone and the number reused, nothing proves the stranger is the
/// service's, so it is left alone.
#[test]
fn crash_cleanup_spares_a_stranger_holding_the_recycled_session_number() {
    if !require_root(
        "crash_cleanup_spares_a_stranger_holding_the_recycled_session_number",
        "write /proc/sys/kernel/ns_last_pid",
    ) {
        return;
    }
    let env = Env::without_cgroups();
    start_daemon(&env);
    env.add_fixture(
        "web",
        &[
            "--restart",
            "always",
            "--restart-delay",
            "0",
            "--start-limit",
            "0",
        ],
        &["--setsid", "--marker", "m"],
    );
    let _guard = ns_lock();
    let (pid, n) = start_setsid_service(&env, "web");
    let mut stranger = stranger_at(n);

    assert!(alive(pid));
    // SAFETY: kill(2) touches no memory; pid is this test's service, checked alive.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let new = env.wait_new_pid("web", pid);
    assert_ne!(pgid(&env, "web"), n);
    assert!(alive(new));
    assert_untouched(&mut stranger, n);
    // The daemon did look at session N and saw the stranger there.
    assert!(
        wait_until(LONG, || env
            .daemon_log()
            .contains("not proven to be its own; left alone")),
        "daemon.log:\n{}",
        env.daemon_log()
    );
    let ev = events(&env, "web");
    assert!(
        ev.iter()
            .any(|(k, d)| k == "exit" && d.contains("signal KILL")),
        "{ev:?}"
    );
    assert!(ev.iter().any(|(k, _)| k == "restart"), "{ev:?}");
}

// ---------------------------------------------------------------------------------------
// 4. Main left its session, a helper it forked before did not.
// ---------------------------------------------------------------------------------------

/// Starts `name` (`--grandchild --setsid`) and returns (main, helper, N), checking the
/// corner: main left session N, the helper is main's child and still in N.
pub(crate) fn start_split_service(env: &Env, name: &str) -> (i32, i32, i32) {
    let out = env.ok(&["start", name]);
    let pid = env.pid(name).expect("running");
    assert!(
        out.stdout.contains(&format!("started (pid {pid})")),
        "{out:?}"
    );
    assert!(
        wait_until(LONG, || read(&env.log_path(name)).contains("SETSID")),
        "log: {}",
        read(&env.log_path(name))
    );
    let log = read(&env.log_path(name));
    let helper: i32 = log
        .lines()
        .find_map(|l| l.strip_prefix("CHILD pid="))
        .unwrap_or_else(|| panic!("no CHILD line: {log}"))
        .trim()
        .parse()
        .unwrap();
    let n = pgid(env, name);
    assert_eq!(ids(pid).map(|(_, pg, s)| (pg, s)), Some((pid, pid)));
    assert_eq!(
        ids(helper),
        Some((pid, n, n)),
        "the helper is main's child, in session {n}"
    );
    (pid, helper, n)
}

fn assert_split_stopped(out: &Out, name: &str, pid: i32, helper: i32, n: i32) {
    assert!(
        out.stdout.contains(&format!("{name}: stopped (pid {pid}"))
            && out.stdout.contains("; 1 other process(es))"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(&format!(
            "tend: {name}: pid {pid} had left the session tend created for it"
        )),
        "{out:?}"
    );
    assert!(!out.stderr.contains("could not be proven"), "{out:?}");
    assert!(!alive(pid), "main (pid {pid}) survived");
    assert!(!alive(helper), "the helper (pid {helper}) survived");
    assert!(
        wait_until(LONG, || in_session_or_group(n)
            .into_iter()
            .all(|p| !alive(p))),
        "left in session {n}: {:?}",
        in_session_or_group(n)
    );
}

/// `tend stop` (no daemon) stops main and the helper it left in session N.
#[test]
fn stop_takes_the_helper_left_in_the_session_main_left() {
    let env = Env::without_cgroups();
    env.add_fixture("split", &[], &["--grandchild", "--setsid"]);
    let (pid, helper, n) = start_split_service(&env, "split");
    let out = env.ok(&["stop", "split"]);
    assert_split_stopped(&out, "split", pid, helper, n);
    let ev = events(&env, "split");
    assert!(
        ev.iter().any(|(k, d)| k == "stop"
            && d.contains("1 other process(es) of the service stopped")
            && d.contains(&format!("it had left session {n} (setsid)"))
            && !d.contains("left alone")),
        "{ev:?}"
    );
}

/// The same, with the daemon running: it starts the service and carries out the stop.
#[test]
fn daemon_stop_takes_the_helper_left_in_the_session_main_left() {
    let env = Env::without_cgroups();
    start_daemon(&env);
    let daemon = env.daemon_pid().expect("daemon runs");
    env.add_fixture("split", &[], &["--grandchild", "--setsid"]);
    let (pid, helper, n) = start_split_service(&env, "split");
    assert_eq!(
        ids(pid).map(|(ppid, _, _)| ppid),
        Some(daemon),
        "the daemon is main's parent"
    );
    let out = env.ok(&["stop", "split"]);
    assert_split_stopped(&out, "split", pid, helper, n);
    assert_eq!(env.daemon_pid(), Some(daemon), "the daemon still runs");
}

// ---------------------------------------------------------------------------------------
// 5. What a service inherits from a hostile tend.
// ---------------------------------------------------------------------------------------

/// The descriptor number the hostile parent leaves open (not close-on-exec).
const STRAY_FD: i32 = 7;

/// glibc's two internal signals (SIGCANCEL and SIGSETXID): its `sigaction` and
/// `sigprocmask` wrappers refuse or skip them, so only the raw system calls reach them.
const GLIBC_INTERNAL: [i32; 2] = [32, 33];

/// How hostile the parent of a `tend` is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hostility {
    /// SIGUSR1 and SIGTERM blocked; SIGINT, SIGHUP, SIGPIPE, SIGUSR2 and SIGRTMIN+3
    /// ignored; `/dev/null` open at fd 7 without CLOEXEC. Signals 32 and 33 are set to
    /// their default, so that the result does not depend on how the test runner itself
    /// was started (glibc's `posix_spawn`, which cargo uses to run the tests, leaves them
    /// ignored in the program it starts).
    Listed,
    /// As `Listed`, and glibc's internal signals 32 and 33 blocked and ignored too (as a
    /// program started by glibc's `posix_spawn` has them ignored).
    WithGlibcInternal,
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout) for `rt_sigaction`.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Sets the disposition of `sig` with the raw system call (glibc refuses 32 and 33).
///
/// # Safety
/// `handler` must be `SIG_DFL` or `SIG_IGN`.
unsafe fn raw_disposition(sig: i32, handler: libc::sighandler_t) -> std::io::Result<()> {
    let act = KernelSigaction {
        handler,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: rt_sigaction with a valid kernel sigaction and the kernel's 8-byte sigset
    // size; no handler function is installed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &act as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            8usize,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// (blocked, ignored): the bits of the signals a hostile parent blocks and ignores, in
/// the masks of /proc/PID/status.
fn hostile_masks(h: Hostility) -> (u64, u64) {
    let mut blocked = bit(libc::SIGUSR1) | bit(libc::SIGTERM);
    let mut ignored = bit(libc::SIGINT)
        | bit(libc::SIGHUP)
        | bit(libc::SIGPIPE)
        | bit(libc::SIGUSR2)
        | bit(libc::SIGRTMIN() + 3);
    if h == Hostility::WithGlibcInternal {
        for sig in GLIBC_INTERNAL {
            blocked |= bit(sig);
            ignored |= bit(sig);
        }
    }
    (blocked, ignored)
}

/// Makes `c` start its program hostile (see [`Hostility`]).
fn make_hostile(c: &mut Command, devnull: &File, h: Hostility) {
    let fd = devnull.as_raw_fd();
    let (blocked, ignored) = hostile_masks(h);
    let internal = if h == Hostility::WithGlibcInternal {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // Runs between fork and exec: only async-signal-safe system calls (rt_sigprocmask,
    // rt_sigaction, dup2, fcntl) on values computed before the fork; no allocation.
    let hook = move || -> std::io::Result<()> {
        // SAFETY: rt_sigprocmask with a valid 8-byte mask, the kernel's sigset size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_BLOCK,
                &blocked as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for sig in 1..=64 {
            if ignored & bit(sig) != 0 {
                // SAFETY: SIG_IGN, no handler.
                unsafe { raw_disposition(sig, libc::SIG_IGN)? };
            }
        }
        for sig in GLIBC_INTERNAL {
            // SAFETY: SIG_IGN or SIG_DFL, no handler.
            unsafe { raw_disposition(sig, internal)? };
        }
        if fd == STRAY_FD {
            // Already there (with CLOEXEC, as Rust opens files): clear the flag.
            // SAFETY: fcntl on a descriptor this process owns.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        // SAFETY: dup2 of a descriptor this process owns; the copy has no CLOEXEC.
        } else if unsafe { libc::dup2(fd, STRAY_FD) } != STRAY_FD {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook is async-signal-safe (see above), as pre_exec requires.
    unsafe {
        c.pre_exec(hook);
    }
}

/// The open descriptors of `pid`, sorted.
fn fds(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    v.sort_unstable();
    v
}

/// Waits until `pid` has exec'd `/bin/sleep` and sleep is done starting up (it opens
/// locale files on the way): it sits in its (clock_)nanosleep system call.
fn wait_sleeping(pid: i32) {
    let sleeping = || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        let nr: Option<libc::c_long> = call.split_whitespace().next().and_then(|t| t.parse().ok());
        comm.trim() == "sleep"
            && matches!(nr, Some(n) if n == libc::SYS_clock_nanosleep || n == libc::SYS_nanosleep)
    };
    assert!(
        wait_until(LONG, sleeping),
        "pid {pid} did not get to sleep: {:?}",
        std::fs::read_to_string(format!("/proc/{pid}/syscall"))
    );
}

/// The staging itself works: a program started through [`make_hostile`] does get
/// exactly the blocked and ignored signals, and the stray descriptor.
fn check_hostile_staging(devnull: &File, h: Hostility) {
    let (blocked, ignored) = hostile_masks(h);
    let mut c = Command::new("/bin/sleep");
    c.arg("1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    make_hostile(&mut c, devnull, h);
    let control = KillOnDrop(c.spawn().expect("spawn the control"));
    let pid = control.0.id() as i32;
    wait_sleeping(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(status_mask(&status, "SigBlk"), blocked, "{status}");
    assert_eq!(status_mask(&status, "SigIgn"), ignored, "{status}");
    assert!(fds(pid).contains(&STRAY_FD), "{:?}", fds(pid));
}

/// The service runs `/bin/sleep` with fds 0-2 only, nothing blocked, nothing ignored.
fn assert_clean(pid: i32) {
    wait_sleeping(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let blocked = status_mask(&status, "SigBlk");
    let ignored = status_mask(&status, "SigIgn");
    let names = |mask: u64| -> Vec<i32> { (1..=64).filter(|&s| mask & bit(s) != 0).collect() };
    assert_eq!(
        blocked,
        0,
        "the service has signals {:?} blocked:\n{status}",
        names(blocked)
    );
    assert_eq!(
        ignored,
        0,
        "the service has signals {:?} ignored (32/33 are glibc's internal SIGCANCEL and \
         SIGSETXID, which glibc's sigaction refuses to reset):\n{status}",
        names(ignored)
    );
    let open = fds(pid);
    assert_eq!(
        open,
        vec![0, 1, 2],
        "descriptors of the service: {:?}",
        open.iter()
            .map(|fd| (fd, std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))))
            .collect::<Vec<_>>()
    );
}

/// `tend start` run by a hostile parent; returns the service's pid.
fn hostile_cli_start(h: Hostility) {
    let env = Env::new();
    let devnull = File::open("/dev/null").unwrap();
    check_hostile_staging(&devnull, h);
    env.ok(&["add", "nap", "--", "/bin/sleep", "1000"]);
    let mut c = env.cmd();
    c.args(["start", "nap"]);
    make_hostile(&mut c, &devnull, h);
    let out = run(c);
    assert_eq!(out.code, 0, "{out:?}");
    let pid = env.pid("nap").expect("running");
    assert!(
        out.stdout.contains(&format!("nap: started (pid {pid})")),
        "{out:?}"
    );
    assert_clean(pid);
}

/// `tend daemon` run by a hostile parent, then `tend start` through that daemon.
fn hostile_daemon_start(h: Hostility) {
    let env = Env::new();
    let devnull = File::open("/dev/null").unwrap();
    check_hostile_staging(&devnull, h);
    let mut c = env.cmd();
    c.arg("daemon");
    make_hostile(&mut c, &devnull, h);
    let out = run(c);
    assert_eq!(out.code, 0, "{out:?}");
    let daemon = env.daemon_pid().expect("the daemon runs");
    env.ok(&["add", "nap", "--", "/bin/sleep", "1000"]);
    let out = env.ok(&["start", "nap"]);
    let pid = env.pid("nap").expect("running");
    assert!(
        out.stdout.contains(&format!("nap: started (pid {pid})")),
        "{out:?}"
    );
    assert_eq!(
        ids(pid).map(|(ppid, _, _)| ppid),
        Some(daemon),
        "the daemon started it"
    );
    assert_clean(pid);
}

/// `tend start` run by a hostile parent: the service inherits none of it.
#[test]
fn service_inherits_nothing_from_a_hostile_cli() {
    hostile_cli_start(Hostility::Listed);
}

/// The daemon started by a hostile parent, then `tend start` through it: the service
/// inherits none of it either.
#[test]
fn service_inherits_nothing_from_a_hostile_daemon() {
    hostile_daemon_start(Hostility::Listed);
}

/// A `tend` started with glibc's internal signals ignored and blocked (as anything
/// started by glibc's `posix_spawn` has them ignored, `cargo test` among them): the
/// service must still get them at their default.
#[test]
fn service_gets_glibc_internal_signals_at_default_from_the_cli() {
    hostile_cli_start(Hostility::WithGlibcInternal);
}

/// The same through a daemon started that way.
#[test]
fn service_gets_glibc_internal_signals_at_default_from_the_daemon() {
    hostile_daemon_start(Hostility::WithGlibcInternal);
}

// ---------------------------------------------------------------------------------------
// 6. A service that exits at once.
// ---------------------------------------------------------------------------------------

/// `chrt -f 10 taskset -c 0 tend ARGS...`: on one CPU with SCHED_FIFO at one priority, a
/// new process runs until it blocks or exits before its parent gets the CPU back.
fn fifo_on_cpu0(env: &Env, args: &[&str]) -> Command {
    let mut c = Command::new("chrt");
    c.args(["-f", "10", "taskset", "-c", "0", TEND, "--home"])
        .arg(env.home())
        .args(args)
        .current_dir(env.work())
        .env_remove("TEND_HOME")
        .stdin(Stdio::null());
    c
}

/// Defines `name` as `--exit-now 3` run from a private copy of the fixture. The new
/// process must not block before it exits (then tend would get the CPU back and find it
/// still running): its page faults must not wait for a page that another test's fixture
/// process is faulting in at the same moment, or that writeback holds. So the copy is
/// written, synced, and run once before.
fn add_brief_service(env: &Env, name: &str) {
    use std::io::Write;
    let copy = env.work().join("brief-service");
    {
        let bytes = std::fs::read(FIXTURE).expect("read the fixture");
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o755)
            .open(&copy)
            .expect("create the fixture copy");
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
    }
    // Another thread of this test binary may fork while the copy is open for writing;
    // until that child execs, the copy is "busy" (ETXTBSY).
    let mut warm = None;
    assert!(
        wait_until(LONG, || {
            match Command::new(&copy).args(["--exit-now", "3"]).status() {
                Ok(st) => warm = Some(st),
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
                Err(e) => panic!("run the fixture copy: {e}"),
            }
            warm.is_some()
        }),
        "the fixture copy stayed busy"
    );
    let warm = warm.expect("checked above");
    assert_eq!(warm.code(), Some(3));
    let copy = copy.to_str().unwrap();
    env.ok(&[
        "add",
        name,
        "--restart",
        "never",
        "--",
        copy,
        "--exit-now",
        "3",
    ]);
}

/// How many starts one round may take. Each should find the service gone; but if the
/// new process blocks before it exits (a page fault waiting for a page another process
/// holds locked at that instant: every process maps the same libc), tend gets the CPU
/// back first and, rightly, reports it started. Such a start is checked too (the pid it
/// names does exit with code 3) and the round goes on; it may not happen every time.
const TRIES: usize = 5;

/// The pid in `... started (pid P)...`.
fn started_pid(text: &str) -> Option<i32> {
    text.split("started (pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
}

/// Runs `start` until tend reports that the service exited at once; checks the starts
/// that did not (see [`TRIES`]) and returns the honest report and its pid.
fn start_until_reported(env: &Env, round: usize, mut start: impl FnMut() -> Out) -> (Out, i32) {
    for attempt in 1..=TRIES {
        let out = start();
        if out.code == 0 {
            let pid = started_pid(&out.stdout)
                .unwrap_or_else(|| panic!("round {round}, attempt {attempt}: {out:?}"));
            assert!(
                out.stdout.contains(&format!("brief: started (pid {pid})")),
                "round {round}: {out:?}"
            );
            assert!(
                wait_until(LONG, || !alive(pid)),
                "pid {pid} did not exit at once"
            );
            eprintln!(
                "round {round}, attempt {attempt}: tend got the CPU back before pid {pid} \
                 exited; trying again"
            );
            continue;
        }
        assert_eq!(out.code, 1, "round {round}, attempt {attempt}: {out:?}");
        let pid = started_pid(&out.stderr)
            .unwrap_or_else(|| panic!("round {round}, attempt {attempt}: {out:?}"));
        return (out, pid);
    }
    panic!(
        "round {round}: in {TRIES} starts tend never reported that the service exited at \
         once; events: {:?}",
        events(env, "brief")
    );
}

/// `tend start` of a service that is gone by the time tend looks says so, with the
/// exit status, fails, and records the exit.
#[test]
fn start_reports_a_service_that_exits_at_once() {
    if !require_root(
        "start_reports_a_service_that_exits_at_once",
        "run tend with SCHED_FIFO (chrt)",
    ) {
        return;
    }
    let env = Env::new();
    add_brief_service(&env, "brief");
    for round in 1..=5 {
        let (out, pid) =
            start_until_reported(&env, round, || run(fifo_on_cpu0(&env, &["start", "brief"])));
        assert!(
            out.stderr.contains(&format!(
                "tend: brief: started (pid {pid}) but exited at once (code 3)"
            )),
            "round {round}: {out:?}"
        );
        assert!(env.status_json("brief")["pid"].is_null());
        let ev = events(&env, "brief");
        assert!(
            ev.iter()
                .any(|(k, d)| k == "exit" && d.contains(&format!("pid {pid}: code 3"))),
            "round {round}: {ev:?}"
        );
    }
}

/// The same with the daemon doing the start (the daemon runs SCHED_FIFO on CPU 0, so the
/// services it starts do too).
#[test]
fn daemon_start_reports_a_service_that_exits_at_once() {
    if !require_root(
        "daemon_start_reports_a_service_that_exits_at_once",
        "run the daemon with SCHED_FIFO (chrt)",
    ) {
        return;
    }
    let env = Env::new();
    let out = run(fifo_on_cpu0(&env, &["daemon"]));
    assert_eq!(out.code, 0, "{out:?}");
    let daemon = env.daemon_pid().expect("the daemon runs");
    // SAFETY: sched_getscheduler only reads the policy of the given pid.
    let policy = unsafe { libc::sched_getscheduler(daemon) };
    assert_eq!(policy, libc::SCHED_FIFO, "the daemon is not SCHED_FIFO");
    add_brief_service(&env, "brief");
    for round in 1..=5 {
        let (out, pid) = start_until_reported(&env, round, || env.tend(&["start", "brief"]));
        assert!(
            out.stderr.contains(&format!(
                "tend: brief: started (pid {pid}) but exited at once"
            )),
            "round {round}: {out:?}"
        );
        // The daemon's loop records the exit it reaped.
        assert!(
            wait_until(LONG, || events(&env, "brief").iter().any(|(k, d)| k
                == "exit"
                && d.contains(&format!("pid {pid}: code 3")))),
            "round {round}: {:?}",
            events(&env, "brief")
        );
        assert!(env.status_json("brief")["pid"].is_null());
    }
    assert_eq!(env.daemon_pid(), Some(daemon), "the daemon still runs");
}

// ---------------------------------------------------------------------------------------
// 7. A start at the process limit.
// ---------------------------------------------------------------------------------------

/// A cgroup v1 `pids` group for one test, removed when dropped.
struct PidsGroup(std::path::PathBuf);

impl PidsGroup {
    /// A new group under the v1 `pids` hierarchy with `pids.max = max`, or `None` where
    /// there is none to create one in (then the test is recorded as not run).
    fn new(test: &str, max: u32) -> Option<PidsGroup> {
        let root = Path::new("/sys/fs/cgroup/pids");
        if !root.join("cgroup.procs").exists() {
            not_run(&format!("{test}: needs a cgroup v1 pids hierarchy"));
            return None;
        }
        let dir = root.join(format!("tend-test-{}-{test}", std::process::id()));
        std::fs::create_dir(&dir).expect("create the pids cgroup");
        let g = PidsGroup(dir);
        std::fs::write(g.0.join("pids.max"), max.to_string()).expect("set pids.max");
        Some(g)
    }
}

impl Drop for PidsGroup {
    fn drop(&mut self) {
        // Empty once the command in it has exited (and been reaped).
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(self.0.join("cgroup.procs")).is_ok_and(|t| t.trim().is_empty())
        });
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `tend start` in a pids group that has room for tend and the intermediate process but
/// not for the service: the fork of the service fails with EAGAIN. tend reports that
/// (one line, exit 1), records nothing, and never falls back to another way of forking
/// that could reach the same limit differently; with cgroup containment (clone3 into the
/// instance's cgroup) and without (a plain fork).
#[test]
fn a_start_at_the_process_limit_fails_clearly_and_records_nothing() {
    if !require_root(
        "a_start_at_the_process_limit_fails_clearly_and_records_nothing",
        "create a pids cgroup",
    ) {
        return;
    }
    for env in [Env::new(), Env::without_cgroups()] {
        env.ok(&["add", "svc", "--", "sleep", "1000"]);
        let before = dump(&env.db());
        let Some(group) = PidsGroup::new("process-limit", 2) else {
            return;
        };
        // The shell moves itself into the group and becomes tend: task 1; the
        // intermediate (a CLONE_VM child) is task 2; the service would be task 3.
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\" --home \"$1\" start svc",
                group.0.display()
            ))
            .arg(TEND)
            .arg(env.home())
            .current_dir(env.work())
            .env_remove("TEND_HOME")
            .envs(env.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        let out = run(c);
        assert_eq!(out.code, 1, "{out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{out:?}");
        assert!(
            lines[0].starts_with("tend: svc:") && lines[0].contains("fork failed"),
            "{out:?}"
        );
        assert_eq!(dump(&env.db()), before, "the database changed");
        drop(group);
        assert_eq!(env.tend(&["status", "svc"]).code, 3);
    }
}
