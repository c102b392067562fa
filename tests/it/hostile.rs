//! Files that are not files, check commands that leave processes behind, and a `log`
//! readiness check across a rotation, staged for real: FIFOs, `/dev/zero` and a huge
//! sparse file where tend reads an env file, a pid file or a services file; check
//! commands whose child ignores SIGTERM; a log rotated between the start and the ready
//! line.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::faults::start_daemon;
use crate::util::*;

/// How long a command that meets a hostile file may take to say so. It never waits on
/// the file, so this only bounds a slow, busy machine.
const PROMPT: Duration = Duration::from_secs(15);
/// Deadline for what happens on its own (a daemon's check, a kill).
const LONG: Duration = Duration::from_secs(20);
/// How long a test watches for something that must not happen.
const WINDOW: Duration = Duration::from_millis(1500);
/// The address space a tend command may have in these tests: far more than it needs
/// (about 30 MB here), far less than reading `/dev/zero` or a huge file whole takes.
const AS_LIMIT: u64 = 1 << 30;

/// Runs `c` with its address space capped at [`AS_LIMIT`]; `None` if it did not finish
/// within [`PROMPT`] (it is then killed).
fn run_prompt(mut c: Command) -> Option<Out> {
    // SAFETY: setrlimit is async-signal-safe and touches only the new process.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: AS_LIMIT,
                rlim_max: AS_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn tend");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PROMPT) {
        Ok(o) => {
            let o = o.expect("wait for tend");
            Some(Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            })
        }
        Err(_) => {
            // SAFETY: SIGKILL to the child this test spawned and has not reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = rx.recv_timeout(LONG);
            None
        }
    }
}

/// `tend ARGS`, which must end within [`PROMPT`].
fn prompt(env: &Env, args: &[&str]) -> Out {
    let mut c = env.cmd();
    c.args(args);
    run_prompt(c).unwrap_or_else(|| panic!("tend {args:?} did not finish within {PROMPT:?}"))
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// True when some process has `path` open for reading: a non-blocking open for writing
/// fails with ENXIO exactly when nobody does.
fn fifo_has_reader(path: &Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .is_ok()
}

/// Writes `text` into the FIFO `path` and closes it: whoever was waiting in `open()` on
/// it goes on (O_RDWR opens a FIFO without waiting for a reader).
fn write_into_fifo(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A sparse regular file of `len` bytes (zeros, no line ends).
fn huge_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Asserts that `name` does not run, and keeps asserting it for [`WINDOW`].
fn never_runs(env: &Env, name: &str) {
    let end = Instant::now() + WINDOW;
    loop {
        assert_eq!(
            env.status_json(name)["state"],
            "stopped",
            "{name} was started after all: {:?}",
            env.tend(&["events", name]).stdout
        );
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A FIFO as env file: `start` says so at once (exit 1) and records nothing, with and
/// without the daemon; writing into the FIFO afterwards starts nothing (nobody waits on
/// it); `daemon stop` returns.
#[test]
fn env_file_fifo_is_refused_at_once_and_never_acted_on_later() {
    let env = Env::new();
    let fifo = env.work().join("env.fifo");
    mkfifo(&fifo);
    env.ok(&[
        "add",
        "e",
        "--env-file",
        fifo.to_str().unwrap(),
        "--",
        "sleep",
        "300",
    ]);
    for daemon in [false, true] {
        if daemon {
            start_daemon(&env);
        }
        let before = dump(&env.db());
        let out = prompt(&env, &["start", "e"]);
        assert_eq!(out.code, 1, "daemon {daemon}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "tend: e: env file {}: it is a FIFO (named pipe), not a regular file",
                fifo.display()
            )),
            "daemon {daemon}: {out:?}"
        );
        assert_eq!(dump(&env.db()), before, "daemon {daemon}: state changed");
        assert!(
            !fifo_has_reader(&fifo),
            "daemon {daemon}: tend waits on the FIFO"
        );
        write_into_fifo(&fifo, "A=1\n");
        never_runs(&env, "e");
    }
    let out = prompt(&env, &["daemon", "stop"]);
    assert_eq!(out.code, 0, "{out:?}");
    never_runs(&env, "e");
}

/// `/dev/zero` and a 4 GiB sparse file as env file: refused unread, in a tend whose
/// address space is capped at 1 GiB (reading either whole would need more).
#[test]
fn env_file_dev_zero_and_huge_file_are_refused_with_bounded_memory() {
    let env = Env::new();
    let huge = env.work().join("huge.env");
    huge_file(&huge, 4 << 30);
    env.ok(&["add", "z", "--env-file", "/dev/zero", "--", "sleep", "300"]);
    env.ok(&[
        "add",
        "h",
        "--env-file",
        huge.to_str().unwrap(),
        "--",
        "sleep",
        "300",
    ]);
    for daemon in [false, true] {
        if daemon {
            start_daemon(&env);
        }
        let before = dump(&env.db());
        let out = prompt(&env, &["start", "z"]);
        assert_eq!(out.code, 1, "daemon {daemon}: {out:?}");
        assert!(
            out.stderr.contains(
                "tend: z: env file /dev/zero: it is a character device, not a regular file"
            ),
            "daemon {daemon}: {out:?}"
        );
        let out = prompt(&env, &["start", "h"]);
        assert_eq!(out.code, 1, "daemon {daemon}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "tend: h: env file {}: it is larger than 1 MiB",
                huge.display()
            )),
            "daemon {daemon}: {out:?}"
        );
        assert_eq!(dump(&env.db()), before, "daemon {daemon}: state changed");
    }
    // The daemon read nothing whole either: it is still there, and small.
    let pid = env.daemon_pid().expect("the daemon still runs");
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 256 * 1024, "daemon peak RSS {rss_kb} kB");
    assert_eq!(prompt(&env, &["daemon", "stop"]).code, 0);
}

/// A services file or Procfile that is a FIFO, `/dev/zero` or a huge file: `apply` and
/// `import` refuse it at once (exit 1), unread, and change nothing.
#[test]
fn services_file_fifo_dev_zero_and_huge_file_are_refused() {
    let env = Env::new();
    let fifo = env.work().join("tend.toml");
    mkfifo(&fifo);
    let huge = env.work().join("Procfile");
    huge_file(&huge, 4 << 30);
    env.ok(&["add", "x", "--", "sleep", "300"]);
    let before = dump(&env.db());
    let f = fifo.to_str().unwrap();
    let h = huge.to_str().unwrap();
    let cases: [(&[&str], String); 6] = [
        (
            &["apply", "-f", f],
            format!("{f}: it is a FIFO (named pipe)"),
        ),
        (&["import", f], format!("{f}: it is a FIFO (named pipe)")),
        (
            &["apply", "-f", "/dev/zero"],
            "/dev/zero: it is a character device".into(),
        ),
        (
            &["import", "/dev/zero"],
            "/dev/zero: it is a character device".into(),
        ),
        (
            &["apply", "-f", h],
            format!("{h}: it is larger than 16 MiB"),
        ),
        (&["import", h], format!("{h}: it is larger than 16 MiB")),
    ];
    for (args, message) in cases {
        let out = prompt(&env, args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr.starts_with(&format!("tend: {message}")) && out.stderr.lines().count() == 1,
            "{args:?}: {out:?}"
        );
        assert!(!fifo_has_reader(&fifo), "{args:?}: tend waits on the FIFO");
    }
    assert_eq!(dump(&env.db()), before);
}

/// A FIFO as pid file (a `--pidfile` service needs cgroup containment): the start says
/// so at once (exit 1), what the program daemonized is killed with its cgroup, nothing
/// runs afterwards even once something writes a pid into the FIFO; with and without the
/// daemon, and `daemon stop` returns.
#[test]
fn pidfile_fifo_is_refused_at_once() {
    if !require_root(
        "pidfile_fifo_is_refused_at_once",
        "create cgroups on the machine's cgroup2 mount (--pidfile needs them)",
    ) {
        return;
    }
    let env = Env::new();
    let fifo = env.work().join("d.pid");
    mkfifo(&fifo);
    let marker = env.work().join("daemonized");
    // The daemonized child marks itself, so the test can find it and see it killed.
    let script = format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 300' & exit 0",
        marker.display()
    );
    env.ok(&[
        "add",
        "d",
        "--pidfile",
        fifo.to_str().unwrap(),
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    for daemon in [false, true] {
        if daemon {
            start_daemon(&env);
        }
        let _ = std::fs::remove_file(&marker);
        let out = prompt(&env, &["start", "d"]);
        assert_eq!(out.code, 1, "daemon {daemon}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "pid file {}: it is a FIFO (named pipe), not a regular file",
                fifo.display()
            )),
            "daemon {daemon}: {out:?}"
        );
        assert!(
            !fifo_has_reader(&fifo),
            "daemon {daemon}: tend waits on the FIFO"
        );
        // What the program daemonized went with the start's cgroup.
        if let Some(pid) = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            assert!(
                wait_until(LONG, || !alive(pid)),
                "daemon {daemon}: the daemonized process {pid} was left running"
            );
        }
        write_into_fifo(&fifo, "1\n");
        never_runs(&env, "d");
    }
    let out = prompt(&env, &["daemon", "stop"]);
    assert_eq!(out.code, 0, "{out:?}");
}

// ---------------------------------------------------------------------------------------
// Check commands whose children ignore SIGTERM.
// ---------------------------------------------------------------------------------------

/// Live processes whose command line holds `marker`.
fn with_marker(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// `pid`, its state, parent, process group and session, as /proc/PID/stat has them: what
/// a failure needs to say whose process was left behind.
fn describe(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().take(5).collect())
        .unwrap_or_default();
    format!("pid {pid} state/ppid/pgrp/session {f:?}")
}

/// A duration no other process has on its command line (`sleep 320.PID0N`).
fn marker(variant: u32) -> String {
    format!("320.{}0{variant}", std::process::id())
}

/// A check command that leaves a child behind which ignores SIGTERM, and exits `code`.
/// Each run appends a line to `runs`.
fn leaky_check(marker: &str, runs: &Path, code: i32) -> String {
    format!(
        "cmd='echo run >> {}; (trap \"\" TERM; exec sleep {marker}) & exit {code}'",
        runs.display()
    )
}

/// The check leaves of this home's cgroup (`checks/run-*`) still there.
fn check_leaves(env: &Env) -> Vec<std::path::PathBuf> {
    let Some(dir) = env.cgroup().map(|c| c.join("checks")) else {
        return Vec::new();
    };
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn lines(path: &Path) -> usize {
    read(path).lines().count()
}

/// The home for a check test: with cgroup containment (needs root) or without.
fn check_env(test: &str, cgroups: bool) -> Option<Env> {
    if cgroups {
        require_root(test, "create cgroups on the machine's cgroup2 mount").then(Env::new)
    } else {
        Some(Env::without_cgroups())
    }
}

/// `start --wait` tries a failing `ready` command many times: the TERM-ignoring child of
/// each run is killed with it, and none is left once the command returns; `stop --all`
/// leaves nothing either.
fn ready_check_leaves_nothing(test: &str, cgroups: bool, variant: u32) {
    let Some(env) = check_env(test, cgroups) else {
        return;
    };
    let mark = marker(variant);
    let runs = env.work().join("runs");
    env.add_fixture(
        "r",
        &[
            "--ready",
            &format!("{} timeout=30s", leaky_check(&mark, &runs, 1)),
        ],
        &[],
    );
    let out = env.tend(&["start", "r", "--wait", "1500ms"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not ready after"), "{out:?}");
    assert!(lines(&runs) >= 3, "the check ran {} time(s)", lines(&runs));
    assert!(
        wait_until(LONG, || with_marker(&mark).is_empty()),
        "{} of {} check runs left their child behind: {:?}",
        with_marker(&mark).len(),
        lines(&runs),
        with_marker(&mark)
    );
    assert!(check_leaves(&env).is_empty(), "{:?}", check_leaves(&env));
    env.ok(&["stop", "--all"]);
    assert!(with_marker(&mark).is_empty());
}

#[test]
fn ready_check_children_are_killed_with_each_run_with_cgroups() {
    ready_check_leaves_nothing(
        "ready_check_children_are_killed_with_each_run_with_cgroups",
        true,
        1,
    );
}

#[test]
fn ready_check_children_are_killed_with_each_run_without_cgroups() {
    ready_check_leaves_nothing(
        "ready_check_children_are_killed_with_each_run_without_cgroups",
        false,
        2,
    );
}

/// The daemon's health check (every 100 ms) leaves a TERM-ignoring child at each run: at
/// most the child of the run in progress is ever alive, and after `daemon stop` (which
/// may meet a check in the middle) and `stop --all`, nothing of the checks is left.
fn health_check_leaves_nothing(test: &str, cgroups: bool, variant: u32) {
    let Some(env) = check_env(test, cgroups) else {
        return;
    };
    let mark = marker(variant);
    let runs = env.work().join("runs");
    env.add_fixture(
        "h",
        &[
            "--health",
            &format!("{} every=100ms failures=1000", leaky_check(&mark, &runs, 0)),
        ],
        &[],
    );
    start_daemon(&env);
    env.ok(&["start", "h"]);
    assert!(
        wait_until(LONG, || lines(&runs) >= 6),
        "the health check ran {} time(s)",
        lines(&runs)
    );
    // The run in progress may have its `sleep` child (and its shell) alive; no earlier
    // run's child is.
    let left: Vec<i32> = with_marker(&mark)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
        })
        .collect();
    assert!(
        left.len() <= 1,
        "after {} runs, {} check children alive: {:?}\ndaemon log:\n{}",
        lines(&runs),
        left.len(),
        left.iter().map(|p| describe(*p)).collect::<Vec<_>>(),
        read(&env.home().join("daemon.log"))
    );
    let out = prompt(&env, &["daemon", "stop"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        wait_until(LONG, || with_marker(&mark).is_empty()),
        "left after daemon stop: {:?}",
        with_marker(&mark)
    );
    assert!(check_leaves(&env).is_empty(), "{:?}", check_leaves(&env));
    env.ok(&["stop", "--all"]);
    assert!(with_marker(&mark).is_empty());
}

#[test]
fn health_check_children_are_killed_with_each_run_with_cgroups() {
    health_check_leaves_nothing(
        "health_check_children_are_killed_with_each_run_with_cgroups",
        true,
        3,
    );
}

#[test]
fn health_check_children_are_killed_with_each_run_without_cgroups() {
    health_check_leaves_nothing(
        "health_check_children_are_killed_with_each_run_without_cgroups",
        false,
        4,
    );
}

// ---------------------------------------------------------------------------------------
// A `log` readiness check after a rotation.
// ---------------------------------------------------------------------------------------

/// What an earlier instance left in the log: a ready line of its own, which must never
/// count for the next one.
const OLD_LOG: &str = "an earlier instance was READY\nand wrote some more\n";

/// Two services whose log rotates at 4 KiB: `yes` writes `READY` and then about 6 KB,
/// `no` the same without `READY`; both end with `END` and sleep. Their logs start with
/// [`OLD_LOG`]. Started without waiting (nothing checks them meanwhile).
fn rotating_services(env: &Env, extra: &[&str]) {
    for (name, first) in [("yes", "READY"), ("no", "nothing")] {
        std::fs::create_dir_all(env.home().join("logs")).unwrap();
        std::fs::write(env.log_path(name), OLD_LOG).unwrap();
        let script = format!(
            "echo {first}; yes 0123456789012345678901234567890123456789 | head -n 150; \
             echo END; exec sleep 300"
        );
        let mut args = vec![
            "add",
            name,
            "--log-max-size",
            "4K",
            "--ready",
            "log=READY timeout=1s",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", &script]);
        env.ok(&args);
    }
    env.ok(&["start", "yes", "no"]);
    for name in ["yes", "no"] {
        let log = env.log_path(name);
        assert!(
            wait_until(LONG, || read(&log).contains("END")),
            "{name} did not write its log: {:?}",
            read(&log)
        );
    }
}

fn rotated(env: &Env, name: &str) -> bool {
    Path::new(&format!("{}.1", env.log_path(name).display())).exists()
}

/// Asserts that `yes` is found ready (its ready line is in a rotated part of the log)
/// and `no` is not (the earlier instance's ready line, rotated too, does not count).
fn ready_across_the_rotation(env: &Env) {
    for name in ["yes", "no"] {
        assert!(rotated(env, name), "{name}: the log was not rotated");
    }
    let out = env.tend(&["start", "yes", "--wait", "5s"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("yes: ready"), "{out:?}");
    assert_eq!(env.status_json("yes")["state"], "running");
    let out = env.tend(&["start", "no", "--wait", "1s"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no line of"), "{out:?}");
    env.ok(&["stop", "--all"]);
}

/// The log writer rotates by renaming (the log tend started the instance on is now a
/// backup, its ready line in it): `start --wait` finds the line, without a daemon.
#[test]
fn log_check_finds_the_ready_line_after_the_log_writer_rotated() {
    let env = Env::new();
    rotating_services(&env, &["--log-timestamps", "on"]);
    ready_across_the_rotation(&env);
}

/// The daemon's rotation copies the log's first whole blocks to a new `NAME.log.1` and
/// cuts them out of the log, ready line included: `start --wait` through the daemon
/// finds it there.
#[test]
fn log_check_finds_the_ready_line_after_the_daemon_rotated() {
    let env = Env::new();
    rotating_services(&env, &[]);
    let began = Instant::now();
    // Past the ready timeout, the daemon's own readiness tries leave the services alone:
    // only `start --wait` below checks them, after the rotation.
    assert!(wait_until(LONG, || began.elapsed() > Duration::from_millis(1500)));
    start_daemon(&env);
    assert!(
        wait_until(LONG, || rotated(&env, "yes") && rotated(&env, "no")),
        "the daemon did not rotate the logs\n{}",
        env.daemon_log()
    );
    ready_across_the_rotation(&env);
}

// ---------------------------------------------------------------------------------------
// A request whose client gave up while the daemon was held up before the spawn.
// ---------------------------------------------------------------------------------------

/// Threads of `pid` stopped by a tracer (state `t`).
fn traced_stops(pid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            (state == "t").then_some(tid)
        })
        .collect()
}

/// A thread of `pid` that stays stopped by its tracer for 300 ms: held in the delayed
/// system call (the tracer stops every thread at each system call, but only for a
/// moment).
fn held_thread(pid: i32) -> Option<i32> {
    let first = traced_stops(pid);
    let end = Instant::now() + Duration::from_millis(300);
    let mut held = first;
    while Instant::now() < end && !held.is_empty() {
        std::thread::sleep(Duration::from_millis(20));
        let now = traced_stops(pid);
        held.retain(|t| now.contains(t));
    }
    held.first().copied()
}

/// The daemon's request thread is held up in the `open()` of the env file (strace delays
/// that one system call by 4 s) and the client is killed meanwhile: when the thread goes
/// on, the start is not carried out (the supervisor asks right before the spawn whether
/// the client is still there), and `daemon stop` returns.
#[test]
fn a_start_whose_client_left_is_never_carried_out_later() {
    if !require_root(
        "a_start_whose_client_left_is_never_carried_out_later",
        "trace the daemon with strace to hold its request thread up",
    ) || !require_tool("strace")
    {
        return;
    }
    let env = Env::new();
    let envf = env.work().join("app.env");
    std::fs::write(&envf, "A=1\n").unwrap();
    env.ok(&[
        "add",
        "w",
        "--env-file",
        envf.to_str().unwrap(),
        "--",
        "sleep",
        "300",
    ]);
    start_daemon(&env);
    let daemon = env.daemon_pid().expect("the daemon runs");
    let strace = KillOnDrop(
        Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-P"])
            .arg(&envf)
            .args([
                "-e",
                "trace=openat",
                "-e",
                "inject=openat:delay_enter=4000000",
                "-p",
                &daemon.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn strace"),
    );
    let traced = || {
        std::fs::read_to_string(format!("/proc/{daemon}/status"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
    };
    assert!(wait_until(LONG, traced), "strace did not attach");
    let mut cli = KillOnDrop(
        env.cmd()
            .args(["start", "w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tend"),
    );
    let mut held = None;
    assert!(
        wait_until(LONG, || {
            held = held_thread(daemon);
            held.is_some()
        }),
        "the daemon never opened the env file"
    );
    // The client gives up while the daemon is held up before the spawn.
    let _ = cli.0.kill();
    let _ = cli.0.wait();
    let tid = held.expect("checked above");
    assert!(
        wait_until(LONG, || !traced_stops(daemon).contains(&tid)),
        "the held thread never went on"
    );
    never_runs(&env, "w");
    let ev = env.ok(&["events", "w"]).stdout;
    assert!(!ev.contains("start"), "{ev}");
    drop(strace);
    assert!(wait_until(LONG, || !traced()), "strace did not detach");
    let out = prompt(&env, &["daemon", "stop"]);
    assert_eq!(out.code, 0, "{out:?}");
}
