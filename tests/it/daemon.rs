//! The resident daemon: starting and stopping it, restarts by policy, backoff and the
//! start limit, adoption after a daemon dies, stale sockets, log rotation and sd_notify,
//! with the real binary, real processes and real signals.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// Deadline for anything the daemon does on its own (restarts, adoption, rotation).
const LONG: Duration = Duration::from_secs(20);
/// How long to watch for something that must NOT happen (a restart after a clean exit).
const GRACE: Duration = Duration::from_millis(700);

/// Sends `sig` to `pid`, a process this test started (directly or through tend).
fn signal(pid: i32, sig: i32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) touches no memory; the pid belongs to this test.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// `tend daemon`; asserts it worked and returns the daemon's pid from its message.
fn start_daemon(env: &Env) -> i32 {
    let out = env.ok(&["daemon"]);
    let pid = out
        .stdout
        .strip_prefix("daemon: started (pid ")
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `tend daemon` output: {out:?}"));
    assert!(
        out.stdout
            .contains(&format!("log: {}", env.home().join("daemon.log").display())),
        "{}",
        out.stdout
    );
    pid
}

/// `tend daemon status --json`, whatever its exit code.
fn daemon_json(env: &Env) -> Value {
    let out = env.tend(&["daemon", "status", "--json"]);
    assert!(out.code == 0 || out.code == 3, "{out:?}");
    serde_json::from_str(&out.stdout).expect("daemon status --json is JSON")
}

/// The service's events as (kind, detail), oldest first.
fn events(env: &Env, name: &str) -> Vec<(String, String)> {
    let out = env.ok(&["events", name, "--json", "-n", "1000"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("events --json is JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            assert_eq!(e["service"], name);
            (
                e["kind"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(env: &Env, name: &str, kind: &str) -> usize {
    events(env, name).iter().filter(|(k, _)| k == kind).count()
}

fn has_event(env: &Env, name: &str, kind: &str, detail: &str) -> bool {
    events(env, name)
        .iter()
        .any(|(k, d)| k == kind && d.contains(detail))
}

/// The kinds of events, oldest first, for assertions on their order.
fn kinds(env: &Env, name: &str) -> Vec<String> {
    events(env, name).into_iter().map(|(k, _)| k).collect()
}

fn state(env: &Env, name: &str) -> String {
    env.status_json(name)["state"]
        .as_str()
        .expect("state is a string")
        .to_string()
}

/// Number of `STARTED` markers in the service's log: how many times it was started.
fn started_markers(env: &Env, name: &str) -> usize {
    read(&env.log_path(name)).matches("STARTED pid=").count()
}

/// `tend daemon` returns with the daemon already answering; its status (human and JSON)
/// names it; a second daemon is refused; `daemon stop` ends it, removes the socket and
/// leaves the services running.
#[test]
fn daemon_start_status_stop() {
    let env = Env::new();
    let out = env.tend(&["daemon", "status"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout.trim(), "daemon: not running");
    assert_eq!(daemon_json(&env)["running"], false);

    let dpid = start_daemon(&env);
    // Answering at once: no wait.
    let out = env.tend(&["daemon", "status"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("daemon: running (pid {dpid}, tend 0.1.0)")),
        "{}",
        out.stdout
    );
    assert!(alive(dpid));
    assert_eq!(env.daemon_pid(), Some(dpid), "the lock file holds its pid");
    let sock = env.home().join("daemon.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    env.add_fixture("web", &[], &["--marker", "m"]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();

    let j = daemon_json(&env);
    assert_eq!(j["running"], true, "{j}");
    assert_eq!(j["pid"], dpid, "{j}");
    assert_eq!(j["version"], "0.1.0", "{j}");
    assert!(
        j["started_at"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{j}"
    );
    assert!(j["uptime_secs"].as_u64().is_some(), "{j}");
    assert_eq!(j["services_running"], 1, "{j}");
    assert_eq!(j["services_adopted"], 0, "{j}");
    assert_eq!(j["pending_restarts"], 0, "{j}");

    let second = env.tend(&["daemon"]);
    assert_eq!(second.code, 5, "{second:?}");
    assert!(
        second.stderr.contains(&format!(
            "tend: a daemon is already running for {} (pid {dpid})",
            env.home().display()
        )),
        "{}",
        second.stderr
    );
    assert_eq!(
        daemon_json(&env)["pid"],
        dpid,
        "the first daemon is untouched"
    );

    let out = env.ok(&["daemon", "stop"]);
    assert!(
        out.stdout
            .contains(&format!("daemon: stopped (pid {dpid})")),
        "{}",
        out.stdout
    );
    assert!(!alive(dpid));
    let out = env.tend(&["daemon", "status"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(!sock.exists(), "the socket file is removed");

    // The service lives on, untouched.
    assert!(alive(pid));
    assert_eq!(env.pid("web"), Some(pid));
    assert_eq!(started_markers(&env, "web"), 1);

    // Stopping when none runs is not an error.
    let out = env.ok(&["daemon", "stop"]);
    assert_eq!(out.stdout.trim(), "daemon: not running");
}

/// `daemon stop --all` stops every service before the daemon exits.
#[test]
fn daemon_stop_all_stops_services() {
    let env = Env::new();
    let dpid = start_daemon(&env);
    env.add_fixture("a", &[], &[]);
    env.add_fixture("b", &[], &[]);
    env.ok(&["start", "a", "b"]);
    let (pa, pb) = (env.pid("a").unwrap(), env.pid("b").unwrap());

    let out = env.ok(&["daemon", "stop", "--all"]);
    assert!(out.stdout.contains("a: stopped"), "{}", out.stdout);
    assert!(out.stdout.contains("b: stopped"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("daemon: stopped (pid {dpid})")),
        "{}",
        out.stdout
    );
    assert!(!alive(dpid));
    assert!(!alive(pa) && !alive(pb));
    assert_eq!(state(&env, "a"), "stopped");
    assert_eq!(state(&env, "b"), "stopped");
    assert_eq!(env.tend(&["daemon", "status"]).code, 3);
}

/// A service killed by SIGKILL is restarted after a backoff; the exit is recorded with
/// its signal, and the restart is counted.
#[test]
fn crash_is_restarted() {
    let env = Env::new();
    start_daemon(&env);
    env.add_fixture("web", &[], &["--marker", "m"]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();

    signal(pid, libc::SIGKILL);
    let new = env.wait_new_pid("web", pid);
    assert!(alive(new));
    assert!(wait_until(LONG, || started_markers(&env, "web") == 2));

    let ev = events(&env, "web");
    let exit = ev
        .iter()
        .position(|(k, d)| k == "exit" && d == &format!("pid {pid}: signal KILL"))
        .unwrap_or_else(|| panic!("no exit event: {ev:?}"));
    let backoff = ev
        .iter()
        .position(|(k, d)| k == "backoff" && d == "restart 1 in 100ms")
        .unwrap_or_else(|| panic!("no backoff event: {ev:?}"));
    let restart = ev
        .iter()
        .position(|(k, d)| k == "restart" && d.starts_with(&format!("pid {new} ")))
        .unwrap_or_else(|| panic!("no restart event: {ev:?}"));
    assert!(exit < backoff && backoff < restart, "{ev:?}");

    let st = env.status_json("web");
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["restarts"], 1, "{st}");
    assert_eq!(st["last_exit"], "signal KILL", "{st}");
    assert!(st["next_retry_at"].is_null(), "{st}");
}

/// The daemon records the exit code of the services it started; `--restart never` leaves
/// a failed service stopped.
#[test]
fn exit_code_is_recorded() {
    let env = Env::new();
    start_daemon(&env);
    env.add_fixture(
        "job",
        &["--restart", "never"],
        &["--exit-after", "50", "--exit-code", "3"],
    );
    env.start_brief(&["job"]);
    assert!(
        wait_until(LONG, || has_event(&env, "job", "exit", ": code 3")),
        "{:?}",
        events(&env, "job")
    );
    // Nothing follows the exit: watched over GRACE (a restart would come after 100 ms).
    assert!(
        holds_for(GRACE, || kinds(&env, "job") == ["added", "start", "exit"]),
        "{:?}",
        events(&env, "job")
    );
    let st = env.status_json("job");
    assert_eq!(st["state"], "stopped", "{st}");
    assert!(st["pid"].is_null(), "{st}");
    assert_eq!(st["last_exit"], "code 3", "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
}

/// on-failure (the default) leaves a clean exit (code 0) alone; always restarts it.
#[test]
fn on_failure_ignores_clean_exit_always_restarts() {
    let env = Env::new();
    start_daemon(&env);
    env.add_fixture("clean", &[], &["--exit-after", "50"]);
    env.add_fixture(
        "looper",
        &["--restart", "always"],
        &["--exit-after", "50", "--marker", "m"],
    );
    env.start_brief(&["clean", "looper"]);

    assert!(wait_until(LONG, || has_event(
        &env, "clean", "exit", ": code 0"
    )));
    assert!(
        wait_until(LONG, || has_event(&env, "looper", "restart", "")),
        "{:?}",
        events(&env, "looper")
    );
    assert!(has_event(&env, "looper", "exit", ": code 0"));
    assert!(has_event(&env, "looper", "backoff", "restart 1 in 100ms"));
    // End the loop: a person's stop also cancels a pending restart.
    env.ok(&["stop", "looper"]);

    // The clean exit is left alone: watched over GRACE.
    assert!(
        holds_for(GRACE, || kinds(&env, "clean") == ["added", "start", "exit"]),
        "{:?}",
        events(&env, "clean")
    );
    let st = env.status_json("clean");
    assert_eq!(st["state"], "stopped", "{st}");
    assert_eq!(st["last_exit"], "code 0", "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
}

/// A service that crashes at once is restarted with growing delays until the start limit
/// (5 starts in 10 s) marks it failed; the daemon then leaves it alone, and a person's
/// `tend start` clears the mark.
#[test]
fn crash_loop_backs_off_then_fails() {
    let env = Env::new();
    start_daemon(&env);
    env.add_fixture("crash", &[], &["--exit-after", "0", "--exit-code", "1"]);
    env.start_brief(&["crash"]);

    assert!(
        wait_until(LONG, || state(&env, "crash") == "failed"),
        "{:?}\ndaemon.log:\n{}",
        events(&env, "crash"),
        env.daemon_log()
    );
    let ev = events(&env, "crash");
    let failed: Vec<_> = ev.iter().filter(|(k, _)| k == "failed").collect();
    assert_eq!(failed.len(), 1, "{ev:?}");
    assert!(failed[0].1.contains("start limit"), "{ev:?}");
    assert_eq!(count(&env, "crash", "restart"), 4, "{ev:?}");
    assert_eq!(count(&env, "crash", "exit"), 5, "{ev:?}");
    // Delays double: 100ms, 200ms, 400ms, 800ms.
    let backoffs: Vec<&str> = ev
        .iter()
        .filter(|(k, _)| k == "backoff")
        .map(|(_, d)| d.as_str())
        .collect();
    assert_eq!(
        backoffs,
        [
            "restart 1 in 100ms",
            "restart 2 in 200ms",
            "restart 3 in 400ms",
            "restart 4 in 800ms"
        ],
        "{ev:?}"
    );
    let st = env.status_json("crash");
    assert!(st["pid"].is_null(), "{st}");
    assert!(st["next_retry_at"].is_null(), "{st}");
    assert!(
        st["failed_reason"]
            .as_str()
            .is_some_and(|r| r.contains("start limit")),
        "{st}"
    );
    assert_eq!(st["restarts"], 4, "{st}");

    // Left alone (watched over GRACE), and the daemon is fine.
    assert!(
        holds_for(GRACE, || events(&env, "crash") == ev),
        "something happened to a failed service: {:?}",
        events(&env, "crash")
    );
    let d = env.tend(&["daemon", "status"]);
    assert_eq!(d.code, 0, "{d:?}");

    // A fixed program, then a person's start clears the mark and the counters.
    env.ok(&["edit", "crash", "--", FIXTURE, "--marker", "fixed"]);
    assert_eq!(
        state(&env, "crash"),
        "failed",
        "an edit does not clear failed"
    );
    env.ok(&["start", "crash"]);
    let st = env.status_json("crash");
    assert_eq!(st["state"], "running", "{st}");
    assert!(st["failed_reason"].is_null(), "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
    assert!(wait_until(LONG, || read(&env.log_path("crash")).contains(" fixed\n")));
}

/// A service stopped by a person is not restarted, and its exit says so.
#[test]
fn requested_stop_is_not_restarted() {
    let env = Env::new();
    start_daemon(&env);
    env.add_fixture("web", &[], &["--marker", "m"]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();
    let out = env.ok(&["stop", "web"]);
    assert!(out.stdout.contains("web: stopped"), "{}", out.stdout);
    assert!(!alive(pid));
    assert!(
        wait_until(LONG, || has_event(
            &env,
            "web",
            "exit",
            &format!("pid {pid}: signal TERM (stop requested)")
        )),
        "{:?}",
        events(&env, "web")
    );
    // Not restarted: watched over GRACE.
    assert!(
        holds_for(GRACE, || state(&env, "web") == "stopped"
            && count(&env, "web", "restart") == 0
            && count(&env, "web", "backoff") == 0
            && started_markers(&env, "web") == 1),
        "{:?}",
        events(&env, "web")
    );
}

/// A daemon killed with SIGKILL takes no service with it; its successor adopts them all
/// (starting none twice) and restarts an adopted one that dies, with an unknown status.
#[test]
fn killed_daemon_is_succeeded_by_adoption() {
    let env = Env::new();
    let dpid = start_daemon(&env);
    let names = ["a", "b", "c"];
    for n in names {
        env.add_fixture(n, &[], &["--marker", n]);
    }
    env.ok(&["start", "a", "b", "c"]);
    let pids: Vec<i32> = names.iter().map(|n| env.pid(n).unwrap()).collect();
    for n in names {
        assert!(wait_until(LONG, || started_markers(&env, n) == 1));
    }

    signal(dpid, libc::SIGKILL);
    assert!(wait_until(LONG, || !alive(dpid)));
    for (n, &p) in names.iter().zip(&pids) {
        assert!(alive(p), "{n} died with the daemon");
    }

    let dpid2 = start_daemon(&env);
    assert_ne!(dpid, dpid2);
    let j = daemon_json(&env);
    assert_eq!(j["services_adopted"], 3, "{j}");
    assert_eq!(j["services_running"], 3, "{j}");
    for (n, &p) in names.iter().zip(&pids) {
        assert_eq!(env.pid(n), Some(p), "{n}");
        assert!(alive(p), "{n}");
        let adopted: Vec<_> = events(&env, n)
            .into_iter()
            .filter(|(k, _)| k == "adopted")
            .collect();
        assert_eq!(adopted, [("adopted".into(), format!("pid {p}"))], "{n}");
        assert_eq!(count(&env, n, "start"), 1, "{n}");
        assert_eq!(started_markers(&env, n), 1, "{n} was started twice");
    }

    // An adopted service is not the daemon's child: its status cannot be known.
    signal(pids[1], libc::SIGKILL);
    let new = env.wait_new_pid("b", pids[1]);
    assert!(alive(new));
    assert!(
        has_event(&env, "b", "exit", &format!("pid {}: unknown", pids[1])),
        "{:?}",
        events(&env, "b")
    );
    assert!(has_event(&env, "b", "restart", &format!("pid {new} ")));
    let st = env.status_json("b");
    assert_eq!(st["last_exit"], "unknown", "{st}");
    assert_eq!(st["restarts"], 1, "{st}");
    assert!(wait_until(LONG, || started_markers(&env, "b") == 2));
    // The others are untouched.
    assert_eq!(env.pid("a"), Some(pids[0]));
    assert_eq!(env.pid("c"), Some(pids[2]));
    let j = daemon_json(&env);
    assert_eq!(j["services_adopted"], 2, "{j}");
    assert_eq!(j["services_running"], 3, "{j}");
}

/// Services started by the CLI with no daemon are adopted by a daemon started later; one
/// that died meanwhile is restarted by the new daemon as it comes up.
#[test]
fn cli_started_services_are_adopted_or_restarted() {
    let env = Env::new();
    env.add_fixture("live", &[], &["--marker", "live"]);
    env.add_fixture("dead", &[], &["--marker", "dead"]);
    env.ok(&["start", "live", "dead"]);
    let live = env.pid("live").unwrap();
    let dead = env.pid("dead").unwrap();
    // Killed while no daemon runs; nothing reads its status before the daemon does
    // (a local `tend status` would clear the record itself).
    signal(dead, libc::SIGKILL);
    assert!(wait_until(LONG, || !alive(dead)));

    start_daemon(&env);
    assert_eq!(env.pid("live"), Some(live));
    assert!(has_event(&env, "live", "adopted", &format!("pid {live}")));
    assert_eq!(started_markers(&env, "live"), 1);

    let new = env.wait_new_pid("dead", dead);
    assert!(alive(new));
    let ev = events(&env, "dead");
    assert!(
        ev.contains(&("exit".into(), format!("pid {dead}: unknown"))),
        "{ev:?}"
    );
    assert!(
        ev.contains(&("backoff".into(), "restart 1 in 100ms".into())),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|(k, _)| k == "adopted"), "{ev:?}");
    let st = env.status_json("dead");
    assert_eq!(st["restarts"], 1, "{st}");
    assert_eq!(st["last_exit"], "unknown", "{st}");
    assert_eq!(st["restart"], "on-failure", "{st}");
}

/// More adopted services than the event loop takes from its epoll set in one turn (64)
/// exit at once: every exit is recorded, and the loop goes on (a pidfd stays readable
/// until it is removed, so asking the set again in the same turn would return the same
/// ones for ever).
#[test]
fn many_adopted_services_exiting_at_once_are_each_recorded() {
    const N: usize = 70;
    let env = Env::new();
    let names: Vec<String> = (0..N).map(|i| format!("s{i:02}")).collect();
    for n in &names {
        env.add_fixture(n, &["--restart", "never"], &["--marker", n]);
    }
    env.ok(&["start", "--all"]);
    let pids: Vec<i32> = names.iter().map(|n| env.pid(n).unwrap()).collect();
    start_daemon(&env);
    let adopted = |env: &Env| {
        let out = env.ok(&["events", "--json", "-n", "10000"]);
        let v: Value = serde_json::from_str(&out.stdout).expect("events --json is JSON");
        v.as_array()
            .expect("an array")
            .iter()
            .filter(|e| e["kind"] == "adopted")
            .count()
    };
    assert!(
        wait_until(LONG, || adopted(&env) == N),
        "adopted {} of {N}",
        adopted(&env)
    );
    for &pid in &pids {
        signal(pid, libc::SIGKILL);
    }
    let exits = |env: &Env| {
        let out = env.ok(&["events", "--json", "-n", "10000"]);
        let v: Value = serde_json::from_str(&out.stdout).expect("events --json is JSON");
        v.as_array()
            .expect("an array")
            .iter()
            .filter(|e| e["kind"] == "exit")
            .count()
    };
    assert!(
        wait_until(LONG, || exits(&env) == N),
        "{} of {N} exits recorded\ndaemon.log:\n{}",
        exits(&env),
        env.daemon_log()
    );
    // The loop still answers.
    let out = env.tend(&["daemon", "status"]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// The socket file of a SIGKILLed daemon stays behind: the CLI falls back to acting
/// locally, and a new daemon replaces it.
#[test]
fn stale_socket() {
    let env = Env::new();
    let dpid = start_daemon(&env);
    let sock = env.home().join("daemon.sock");
    signal(dpid, libc::SIGKILL);
    assert!(wait_until(LONG, || !alive(dpid)));
    assert!(sock.exists(), "a killed daemon cannot remove its socket");

    let out = env.tend(&["daemon", "status"]);
    assert_eq!(out.code, 3, "{out:?}");
    // Nobody listens on the socket: the CLI starts the service itself.
    env.add_fixture("web", &[], &["--marker", "m"]);
    let out = env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();
    assert!(out.stdout.contains(&format!("web: started (pid {pid})")));
    assert!(alive(pid));
    assert_eq!(count(&env, "web", "start"), 1);

    let dpid2 = start_daemon(&env);
    assert_ne!(dpid, dpid2);
    assert!(sock.exists());
    assert_eq!(env.tend(&["daemon", "status"]).code, 0);
    assert!(has_event(&env, "web", "adopted", &format!("pid {pid}")));
    assert!(
        env.daemon_log()
            .contains("removed the socket of a previous daemon"),
        "{}",
        env.daemon_log()
    );
}

/// SIGKILLs a service's process group on drop, even when the test fails.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

/// The instance's `stopping` flag (set by a stop before it signals anything).
fn stopping(db: &Path) -> bool {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return false;
    };
    conn.query_row("SELECT stopping FROM instances", [], |r| r.get::<_, i64>(0))
        .is_ok_and(|v| v != 0)
}

/// A CLI whose daemon dies in the middle of its request is told so, promptly.
#[test]
fn daemon_dying_mid_request() {
    let env = Env::new();
    let dpid = start_daemon(&env);
    env.add_fixture(
        "stubborn",
        &["--stop-timeout", "30s"],
        &["--ignore-term", "--marker", "m"],
    );
    env.ok(&["start", "stubborn"]);
    let pid = env.pid("stubborn").unwrap();
    let pgid = env.status_json("stubborn")["pgid"].as_i64().unwrap() as i32;
    // Whatever happens, the service must not outlive the test (a local `stop --all` in
    // Env's drop would wait out its 30 s timeout).
    let _group = KillGroupOnDrop(pgid);
    // The marker is printed after SIGTERM is ignored.
    assert!(wait_until(LONG, || started_markers(&env, "stubborn") == 1));

    let (out, took) = std::thread::scope(|s| {
        let cli = s.spawn(|| env.tend(&["stop", "stubborn"]));
        // The daemon marks the instance stopping, then sends TERM and waits 30 s.
        assert!(
            wait_until(LONG, || stopping(&env.db())),
            "the stop never began"
        );
        // ... and waits: the request thread polls the service's pidfd.
        assert!(
            wait_until(LONG, || request_thread_polls(dpid)),
            "the stop never waited"
        );
        let killed_at = Instant::now();
        signal(dpid, libc::SIGKILL);
        let out = cli.join().unwrap();
        (out, killed_at.elapsed())
    });
    assert!(wait_until(LONG, || !alive(dpid)));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "tend: daemon: the daemon closed the connection without answering (did it die?"
        ),
        "{}",
        out.stderr
    );
    assert!(took < Duration::from_secs(5), "the CLI took {took:?}");
    assert!(alive(pid), "the service ignores TERM");
    kill_group(pgid);
    assert!(wait_until(LONG, || !alive(pid)));
}

/// `--autostart` services are started when the daemon comes up; others are not.
#[test]
fn autostart() {
    let env = Env::new();
    env.add_fixture("auto", &["--autostart"], &["--marker", "auto"]);
    env.add_fixture("manual", &[], &["--marker", "manual"]);
    assert_eq!(env.status_json("auto")["autostart"], true);
    start_daemon(&env);
    assert!(wait_until(LONG, || env.pid("auto").is_some_and(alive)));
    assert!(wait_until(LONG, || started_markers(&env, "auto") == 1));
    assert!(has_event(&env, "auto", "start", ""));
    // `manual` is not started: watched over GRACE.
    assert!(
        holds_for(GRACE, || state(&env, "manual") == "stopped"
            && count(&env, "manual", "start") == 0
            && (!env.log_path("manual").exists()
                || started_markers(&env, "manual") == 0)),
        "{:?}",
        events(&env, "manual")
    );
    assert_eq!(env.tend(&["status", "manual"]).code, 3);
}

/// SIGTERM ends the daemon in order (socket removed, lock released); services live on and
/// the next daemon adopts them.
#[test]
fn sigterm_exits_and_keeps_services() {
    let env = Env::new();
    let dpid = start_daemon(&env);
    env.add_fixture("web", &[], &["--marker", "m"]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();

    signal(dpid, libc::SIGTERM);
    assert!(wait_until(LONG, || !alive(dpid)), "SIGTERM did not end it");
    // The lock goes with the last of its threads, a moment after the main one.
    let lock = env.home().join("daemon.lock");
    assert!(
        wait_until(LONG, || !lock_held(&lock)),
        "the lock outlived the daemon"
    );
    assert!(!env.home().join("daemon.sock").exists());
    assert!(alive(pid));
    assert_eq!(env.pid("web"), Some(pid));
    assert!(
        env.daemon_log()
            .contains("daemon stopped; services keep running"),
        "{}",
        env.daemon_log()
    );

    let dpid2 = start_daemon(&env);
    assert_ne!(dpid, dpid2);
    assert_eq!(daemon_json(&env)["services_adopted"], 1);
    assert_eq!(env.pid("web"), Some(pid));
    assert_eq!(started_markers(&env, "web"), 1);
}

/// `tend daemon reload` and SIGHUP re-adopt without disturbing anything: the daemon keeps
/// answering, and services it already watches (adopted or its own children) are not
/// adopted again.
#[test]
fn reload_and_sighup() {
    let env = Env::new();
    // One started locally before the daemon (adopted), one started by the daemon.
    env.add_fixture("old", &[], &["--marker", "old"]);
    env.add_fixture("new", &[], &["--marker", "new"]);
    env.ok(&["start", "old"]);
    let dpid = start_daemon(&env);
    env.ok(&["start", "new"]);
    let (p_old, p_new) = (env.pid("old").unwrap(), env.pid("new").unwrap());
    assert_eq!(count(&env, "old", "adopted"), 1);

    let out = env.ok(&["daemon", "reload"]);
    assert_eq!(out.stdout.trim(), "daemon: reloaded");
    let j = daemon_json(&env);
    assert_eq!(j["pid"], dpid, "{j}");
    assert_eq!(j["services_adopted"], 1, "{j}");

    signal(dpid, libc::SIGHUP);
    assert!(
        wait_until(LONG, || env.daemon_log().contains("SIGHUP: reloading")),
        "{}",
        env.daemon_log()
    );
    assert!(alive(dpid), "SIGHUP killed the daemon");
    let j = daemon_json(&env);
    assert_eq!(j["running"], true, "{j}");
    assert_eq!(j["pid"], dpid, "{j}");
    assert_eq!(j["services_adopted"], 1, "{j}");
    assert_eq!(j["services_running"], 2, "{j}");

    assert_eq!(count(&env, "old", "adopted"), 1);
    assert_eq!(count(&env, "new", "adopted"), 0);
    assert_eq!(env.pid("old"), Some(p_old));
    assert_eq!(env.pid("new"), Some(p_new));

    // Still watching the adopted one after the reloads: its death is noticed.
    signal(p_old, libc::SIGKILL);
    let again = env.wait_new_pid("old", p_old);
    assert!(alive(again));
    assert!(has_event(
        &env,
        "old",
        "exit",
        &format!("pid {p_old}: unknown")
    ));
}

/// Bytes `pid` has written so far (`wchar` of /proc/PID/io).
fn bytes_written(pid: i32) -> u64 {
    read(Path::new(&format!("/proc/{pid}/io")))
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A log past `--log-max-size` is rotated by copy and truncate while the service keeps
/// writing; at most 3 backups are kept and `tend logs` reads across them.
#[test]
fn log_rotation() {
    let env = Env::new();
    const LINES: usize = 2000;
    let written: usize = (0..LINES).map(|i| format!("line {i}\n").len()).sum();
    env.add_fixture(
        "chatty",
        &["--log-max-size", "2K"],
        &["--lines", &LINES.to_string()],
    );
    assert_eq!(env.status_json("chatty")["log_max_bytes"], 2048);
    // The daemon first, so it watches the log as the service writes it.
    start_daemon(&env);
    env.ok(&["start", "chatty"]);
    let pid = env.pid("chatty").unwrap();

    let log = env.log_path("chatty");
    let b1 = Path::new(&format!("{}.1", log.display())).to_path_buf();
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() as usize);
    let backups = |n: u32| Path::new(&format!("{}.{n}", log.display())).to_path_buf();
    // Until the service has written everything (it then sleeps), and the daemon has
    // caught up: nothing over the limit is left unrotated.
    assert!(
        wait_until(LONG, || bytes_written(pid) >= written as u64),
        "the service wrote only {} of {written} bytes",
        bytes_written(pid)
    );
    // Rotation moves whole file-system blocks (4 KiB), so what stays in the current
    // file is less than one block.
    assert!(
        wait_until(LONG, || b1.exists() && size(&log) < 4096),
        "no rotation; log size {}\ndaemon.log:\n{}",
        size(&log),
        env.daemon_log()
    );
    assert!(env.daemon_log().contains("rotated log"));
    assert!(!backups(4).exists(), "only 3 backups are kept");
    // Nothing is lost or duplicated: the backups and the file, oldest first, are exactly
    // the end of what the service wrote.
    let all: String = (0..LINES).map(|i| format!("line {i}\n")).collect();
    let kept: String = (1..=3)
        .rev()
        .map(|n| read(&backups(n)))
        .chain(std::iter::once(read(&log)))
        .collect();
    assert!(!kept.is_empty() && kept.len() <= written);
    assert!(
        all.ends_with(&kept),
        "the retained logs are not a contiguous suffix of the output ({} bytes kept)",
        kept.len()
    );

    assert_eq!(env.pid("chatty"), Some(pid), "rotation never restarts it");
    assert!(alive(pid));

    let out = env.ok(&["logs", "chatty", "-n", "5"]);
    let want: String = (LINES - 5..LINES).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        out.stdout,
        want,
        "files (size, first line, last line): {:?}\ndaemon.log:\n{}",
        (0..=3)
            .map(|n| {
                let p = if n == 0 { log.clone() } else { backups(n) };
                let text = read(&p);
                let first = text.lines().next().unwrap_or("").to_string();
                let last = text.lines().last().unwrap_or("").to_string();
                (n, text.len(), first, last)
            })
            .collect::<Vec<_>>(),
        env.daemon_log()
    );
}

/// The daemon's rotation re-reads the definitions only when they changed (a version the
/// database's triggers keep): a limit set with `tend edit` while the daemon runs, without
/// telling it, is in force from the next start it carries out.
#[test]
fn log_rotation_follows_an_edit_made_while_the_daemon_runs() {
    let env = Env::new();
    const LINES: usize = 2000;
    let written: usize = (0..LINES).map(|i| format!("line {i}\n").len()).sum();
    env.add_fixture("chatty", &[], &["--lines", "1"]);
    start_daemon(&env);
    // The daemon has read the definitions (no limit) after this request.
    env.ok(&["start", "chatty"]);
    env.ok(&["stop", "chatty"]);
    env.ok(&[
        "edit",
        "chatty",
        "--log-max-size",
        "2K",
        "--",
        FIXTURE,
        "--lines",
        &LINES.to_string(),
    ]);
    env.ok(&["start", "chatty"]);
    let pid = env.pid("chatty").unwrap();
    assert!(
        wait_until(LONG, || bytes_written(pid) >= written as u64),
        "the service wrote only {} of {written} bytes",
        bytes_written(pid)
    );
    let log = env.log_path("chatty");
    let b1 = Path::new(&format!("{}.1", log.display())).to_path_buf();
    let size = std::fs::metadata(&log).map_or(0, |m| m.len());
    assert!(
        wait_until(LONG, || b1.exists()
            && std::fs::metadata(&log).map_or(0, |m| m.len()) < 4096),
        "the edited limit was not applied; log size {size}\ndaemon.log:\n{}",
        env.daemon_log()
    );
}

/// `daemon --foreground` tells a NOTIFY_SOCKET it is ready, and that it is stopping when
/// SIGTERM ends it (exit 0).
#[test]
fn sd_notify_ready_and_stopping() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();

    let mut c = env.cmd();
    c.args(["daemon", "--foreground"])
        .env("NOTIFY_SOCKET", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = KillOnDrop(c.spawn().unwrap());
    let pid = child.0.id() as i32;

    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 within the deadline");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    // Ready means answering.
    let st = env.ok(&["daemon", "status", "--json"]);
    let j: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(j["pid"], pid, "{j}");

    signal(pid, libc::SIGTERM);
    let n = sock.recv(&mut buf).expect("STOPPING=1 within the deadline");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "STOPPING=1"), "{msg:?}");

    let mut status = None;
    assert!(wait_until(LONG, || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(0), "{status:?}");
    assert_eq!(env.tend(&["daemon", "status"]).code, 3);
}

/// A start through the daemon fails like a local one when the program does not exist.
#[test]
fn start_missing_program_through_daemon() {
    let env = Env::new();
    env.ok(&["add", "ghost", "--cmd", "nosuchprog"]);
    let local = env.tend(&["start", "ghost"]);
    assert_eq!(local.code, 1, "{local:?}");

    start_daemon(&env);
    let out = env.tend(&["start", "ghost"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("tend: ghost: no such program: nosuchprog"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr, local.stderr,
        "same error with and without daemon"
    );
    assert_eq!(state(&env, "ghost"), "stopped");
    assert_eq!(env.tend(&["daemon", "status"]).code, 0);
}

/// A stranger process for a record to point at (a recycled pid): alive, in a group of its
/// own, created in a later clock tick than `not_at` so that its start time differs.
fn stranger_not_started_at(not_at: u64) -> KillOnDrop {
    use std::os::unix::process::CommandExt;
    loop {
        let s = KillOnDrop(
            std::process::Command::new("sleep")
                .arg("600")
                .process_group(0)
                .spawn()
                .unwrap(),
        );
        let st = std::fs::read_to_string(format!("/proc/{}/stat", s.0.id())).unwrap();
        let start: u64 = st
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        if start != not_at {
            return s;
        }
        // Same 10 ms tick as the service: try again in the next one.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A service that died while no daemon ran, and whose pid now belongs to another process:
/// the daemon that comes up clears the record without signalling that process, and the
/// exit goes through the restart policy like any other (an `always` service comes back).
#[test]
fn stale_record_goes_through_the_policy() {
    let env = Env::new();
    env.add_fixture("web", &["--restart", "always"], &["--marker", "web"]);
    env.ok(&["start", "web"]);
    let old = env.pid("web").unwrap();
    let pgid = env.status_json("web")["pgid"].as_i64().unwrap() as i32;
    kill_group(pgid);
    assert!(wait_until(LONG, || group_members(pgid).is_empty()));
    let recorded_start: i64 = rusqlite::Connection::open(env.db())
        .unwrap()
        .query_row("SELECT start_time FROM instances", [], |r| r.get(0))
        .unwrap();
    let stranger = stranger_not_started_at(recorded_start as u64);
    let spid = stranger.0.id() as i32;
    let n = rusqlite::Connection::open(env.db())
        .unwrap()
        .execute(
            "UPDATE instances SET pid = ?1, pgid = ?1",
            rusqlite::params![spid],
        )
        .unwrap();
    assert_eq!(n, 1);

    start_daemon(&env);
    let new = env.wait_new_pid("web", old);
    assert_ne!(new, spid);
    assert!(
        alive(spid),
        "the stranger holding the recorded pid was signalled"
    );
    let ev = kinds(&env, "web");
    let stale = ev
        .iter()
        .position(|k| k == "stale-cleared")
        .expect("stale-cleared");
    let restart = ev.iter().position(|k| k == "restart").expect("restart");
    assert!(stale < restart, "{ev:?}");
    assert!(ev.contains(&"backoff".to_string()), "{ev:?}");
    // The record comes first, the log line after it.
    assert!(
        wait_until(LONG, || env.daemon_log().contains("restarted")),
        "the daemon log says nothing: {}",
        env.daemon_log()
    );
}

/// A stop that waits out its whole timeout runs on its own thread: another service's
/// crash restarts keep their schedule meanwhile.
#[test]
fn slow_stop_does_not_delay_restarts() {
    let env = Env::new();
    start_daemon(&env);
    env.add_fixture(
        "stubborn",
        &["--stop-timeout", "4s"],
        &["--ignore-term", "--marker", "s"],
    );
    env.add_fixture(
        "flappy",
        &[
            "--restart",
            "always",
            "--restart-delay",
            "0",
            "--start-limit",
            "0",
        ],
        &["--exit-after", "100", "--exit-code", "1"],
    );
    env.start_brief(&["stubborn", "flappy"]);
    assert!(wait_until(LONG, || started_markers(&env, "stubborn") == 1));
    std::thread::scope(|s| {
        let stop = s.spawn(|| env.tend(&["stop", "stubborn"]));
        assert!(
            wait_until(LONG, || stopping(&env.db())),
            "the stop never began"
        );
        let before = count(&env, "flappy", "restart");
        let began = Instant::now();
        // Watch for two seconds of the four the stop takes.
        assert!(wait_until(Duration::from_secs(10), || began.elapsed()
            >= Duration::from_secs(2)));
        let during = count(&env, "flappy", "restart") - before;
        assert!(
            !stop.is_finished(),
            "the stop ended early; nothing was measured"
        );
        // One restart every ~100 ms when nothing delays them; a stalled daemon gives 0.
        assert!(
            during >= 5,
            "only {during} restarts of flappy in 2 s while a stop was waiting"
        );
        let out = stop.join().unwrap();
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("killed"), "{}", out.stdout);
    });
}

/// `tend daemon stop` right after a crash: a restart due within the grace second is
/// carried out before the daemon exits (the README's example ends with the service
/// running), and one due later is named as left down, which `tend list` then shows.
#[test]
fn daemon_stop_with_restarts_pending() {
    let env = Env::new();
    start_daemon(&env);
    env.add_fixture("soon", &["--restart", "always"], &["--marker", "soon"]);
    env.add_fixture(
        "late",
        &["--restart", "always", "--restart-delay", "30s"],
        &["--marker", "late"],
    );
    env.ok(&["start", "soon", "late"]);
    let soon = env.pid("soon").unwrap();
    let late = env.pid("late").unwrap();
    signal(late, libc::SIGKILL);
    assert!(wait_until(LONG, || state(&env, "late") == "restarting"));
    signal(soon, libc::SIGKILL);
    assert!(wait_until(LONG, || state(&env, "soon") != "running"
        || env.pid("soon") != Some(soon)));
    let out = env.ok(&["daemon", "stop"]);
    assert!(out.stdout.contains("daemon: stopped"), "{out:?}");
    assert!(
        out.stderr.contains("late: its automatic restart (due in"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("soon:"), "{out:?}");
    // `soon` was restarted by the daemon before it went.
    let now = env.pid("soon").expect("soon runs");
    assert_ne!(now, soon);
    assert!(alive(now));
    assert!(has_event(&env, "soon", "restart", &format!("pid {now}")));
    // `late` stays down, and says why.
    let list = env.ok(&["list"]).stdout;
    let row = list.lines().find(|l| l.starts_with("late ")).unwrap();
    assert!(row.contains("restarting (no daemon)"), "{list}");
    assert_eq!(env.status_json("late")["waiting_for_daemon"], true);
}

/// A state home whose path is longer than a socket address can hold: the CLI works
/// without a daemon (it never touches the socket then), and the daemon binds and answers
/// through a short path to the same socket.
#[test]
fn long_state_home_path() {
    let base = tempfile::tempdir().unwrap();
    let long = base.path().join("h".repeat(60)).join("i".repeat(60));
    std::fs::create_dir_all(&long).unwrap();
    assert!(long.join("daemon.sock").as_os_str().len() > 108);
    let tend = |args: &[&str]| {
        let mut c = std::process::Command::new(TEND);
        c.arg("--home")
            .arg(&long)
            .args(args)
            .env("TEND_CGROUP", "off")
            .stdin(Stdio::null());
        run(c)
    };
    let ok = |args: &[&str]| {
        let out = tend(args);
        assert_eq!(out.code, 0, "tend {args:?}: {out:?}");
        out
    };
    ok(&["add", "w", "--", FIXTURE, "--marker", "w"]);
    ok(&["start", "w"]);
    ok(&["stop", "w"]);
    let out = ok(&["daemon"]);
    assert!(out.stdout.starts_with("daemon: started"), "{out:?}");
    ok(&["start", "w"]);
    let st = ok(&["daemon", "status", "--json"]);
    let v: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(v["services_running"], 1, "{v}");
    let out = ok(&["daemon", "stop", "--all"]);
    assert!(out.stdout.contains("w: stopped"), "{out:?}");
    assert_eq!(tend(&["daemon", "status"]).code, 3);
}

/// A new instance is recorded before it execs (it waits at tend's gate). Killing it the
/// moment its pid appears, before or after exec, is an exit like any other: the restart
/// policy carries on, and the service is never given up on as a failed start.
#[test]
fn killed_as_soon_as_recorded_is_an_exit() {
    let env = Env::new();
    start_daemon(&env);
    env.add_fixture(
        "target",
        &[
            "--restart",
            "always",
            "--restart-delay",
            "0",
            "--start-limit",
            "0",
        ],
        &["--marker", "t"],
    );
    env.ok(&["start", "target"]);
    let db =
        rusqlite::Connection::open_with_flags(env.db(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let pid_now = || -> Option<i32> {
        db.query_row("SELECT pid FROM instances", [], |r| r.get(0))
            .ok()
    };
    let mut last = 0;
    for round in 0..60 {
        let mut pid = None;
        assert!(
            wait_until(LONG, || {
                pid = pid_now().filter(|&p| p != last && alive(p));
                pid.is_some()
            }),
            "round {round}: not restarted; state {}; events:\n{}",
            state(&env, "target"),
            env.tend(&["events", "target", "-n", "8"]).stdout
        );
        last = pid.unwrap();
        signal(last, libc::SIGKILL);
    }
    assert_ne!(state(&env, "target"), "failed");
    assert_eq!(
        count(&env, "target", "failed"),
        0,
        "{:?}",
        events(&env, "target")
    );
}

/// Many timed restarts due at once are each carried out once. The worker tells the event
/// loop which restarts the database lists as pending after every job; a list taken before
/// a queued restart ran used to re-arm it, so a busy worker queued the same restarts
/// again and again (hundreds of `restart ... AlreadyRunning` in the log, and a
/// `tend daemon stop` that waited tens of seconds for the queue; found by bench/soak.py).
#[test]
fn many_due_restarts_are_each_queued_once() {
    let env = Env::new();
    start_daemon(&env);
    let names: Vec<String> = (0..40).map(|i| format!("svc{i:02}")).collect();
    for n in &names {
        env.add_fixture(
            n,
            &[
                "--restart",
                "always",
                "--restart-delay",
                "300ms",
                "--start-limit",
                "0",
            ],
            &[],
        );
    }
    env.ok(&["start", "--all"]);
    let pids: Vec<i32> = names.iter().map(|n| env.pid(n).unwrap()).collect();
    // All at once: forty exits, then forty restarts due within a few milliseconds.
    for &p in &pids {
        signal(p, libc::SIGKILL);
    }
    for (n, &p) in names.iter().zip(&pids) {
        env.wait_new_pid(n, p);
    }
    // Let anything queued behind the restarts run, then look: the daemon logs a restart
    // that found its service already running.
    assert!(wait_until(LONG, || daemon_json(&env)["pending_restarts"] == 0));
    env.ok(&["stop", "--all"]);
    env.ok(&["daemon", "stop"]);
    let log = read(&env.home().join("daemon.log"));
    let again = log.lines().filter(|l| l.contains("AlreadyRunning")).count();
    assert_eq!(again, 0, "restarts queued more than once:\n{log}");
    for n in &names {
        assert_eq!(count(&env, n, "restart"), 1, "{:?}", events(&env, n));
    }
}

/// True while a request thread of daemon `pid` sleeps in poll(2) (ppoll on arm64): a stop
/// waiting for its service's exit.
fn request_thread_polls(pid: i32) -> bool {
    let poll = if cfg!(target_arch = "aarch64") {
        "73"
    } else {
        "7"
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "tend-request")
            && std::fs::read_to_string(t.path().join("syscall"))
                .is_ok_and(|s| s.split_whitespace().next() == Some(poll))
    })
}
