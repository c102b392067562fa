//! Starting, stopping, identity checks, process groups, concurrency and logs, with real
//! processes and real signals.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::*;

const LONG: Duration = Duration::from_secs(10);

fn stat_field(pid: i32, index_after_paren: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .nth(index_after_paren)
        .map(str::to_string)
}

/// Start runs the program detached (own session, not a session leader, stdio to the log,
/// stdin from /dev/null) and records its pid; stop ends it and clears the record.
#[test]
fn start_status_stop() {
    let env = Env::new();
    env.add_fixture("web", &[], &["--marker", "hello"]);
    let out = env.ok(&["start", "web"]);
    let pid = env.pid("web").expect("running");
    assert!(out.stdout.contains(&format!("web: started (pid {pid})")));
    assert!(alive(pid));
    assert!(wait_until(LONG, || read(&env.log_path("web"))
        .contains(&format!("STARTED pid={pid} hello"))));

    // Session and group belong to the intermediate process, which has exited.
    let pgrp: i32 = stat_field(pid, 2).unwrap().parse().unwrap();
    let session: i32 = stat_field(pid, 3).unwrap().parse().unwrap();
    assert_eq!(pgrp, session);
    assert_ne!(pgrp, pid, "the service must not be a session leader");
    let fd0 = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(fd0.to_str().unwrap(), "/dev/null");
    let fd1 = std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert_eq!(fd1, env.log_path("web"));

    let st = env.tend(&["status", "web"]);
    assert_eq!(st.code, 0);
    assert!(st.stdout.contains("running"));

    let out = env.ok(&["stop", "web"]);
    assert!(out.stdout.contains("web: stopped"), "{}", out.stdout);
    assert!(!alive(pid));
    let st = env.tend(&["status", "web"]);
    assert_eq!(st.code, 3, "{}", st.stdout);
    assert!(env.status_json("web")["pid"].is_null());

    // Stopping a stopped service is not an error.
    let out = env.ok(&["stop", "web"]);
    assert!(out.stdout.contains("web: not running"));
}

/// Starting a running service does not start a second one.
#[test]
fn start_twice_is_a_no_op() {
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();
    let out = env.ok(&["start", "web"]);
    assert!(out.stdout.contains(&format!("already running (pid {pid})")));
    assert_eq!(env.pid("web"), Some(pid));
}

/// The intermediate child of the double fork is reaped by the CLI: no zombie is left
/// (on this machine nothing else would ever reap it).
#[test]
fn intermediate_is_reaped() {
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    env.ok(&["start", "web"]);
    let pgid = env.status_json("web")["pgid"].as_i64().unwrap() as i32;
    assert!(
        !std::path::Path::new(&format!("/proc/{pgid}")).exists(),
        "intermediate process {pgid} still exists (zombie?)"
    );
}

/// `--cmd` is split with shell-word rules and run without a shell; `--env` and `--cwd`
/// reach the service.
#[test]
fn command_env_and_cwd() {
    let env = Env::new();
    let dir = env.work().join("app dir");
    std::fs::create_dir(&dir).unwrap();
    let cmd = format!(
        "{FIXTURE} --marker 'high prio' --print-env GREETING --print-env TEND_HOME --print-cwd"
    );
    env.ok(&[
        "add",
        "web",
        "--cmd",
        &cmd,
        "--env",
        "GREETING=hello world",
        "--cwd",
        dir.to_str().unwrap(),
    ]);
    env.ok(&["start", "web"]);
    let log = env.log_path("web");
    assert!(wait_until(LONG, || read(&log).contains("CWD ")));
    let text = read(&log);
    assert!(text.contains(" high prio\n"), "{text}");
    assert!(text.contains("ENV GREETING=hello world\n"), "{text}");
    assert!(text.contains(&format!("CWD {}\n", dir.display())), "{text}");
}

/// Separate stdout and stderr files, and a stdin file.
#[test]
fn separate_stdio_files() {
    let env = Env::new();
    let out_path = env.work().join("w.out");
    let err_path = env.work().join("w.err");
    env.add_fixture(
        "w",
        &[
            "-o",
            out_path.to_str().unwrap(),
            "-e",
            err_path.to_str().unwrap(),
        ],
        &["--marker", "m", "--stderr", "to-stderr"],
    );
    env.ok(&["start", "w"]);
    assert!(wait_until(LONG, || read(&err_path).contains("to-stderr")));
    assert!(wait_until(LONG, || read(&out_path).contains("STARTED")));
    assert!(!read(&out_path).contains("to-stderr"));
    assert!(!env.log_path("w").exists());
}

/// A service that ignores SIGTERM is killed with SIGKILL after its stop timeout.
#[test]
fn ignoring_term_gets_killed_after_timeout() {
    let env = Env::new();
    env.add_fixture(
        "stubborn",
        &["--stop-timeout", "700ms"],
        &["--ignore-term", "--marker", "x"],
    );
    env.ok(&["start", "stubborn"]);
    let pid = env.pid("stubborn").unwrap();
    // Wait until the handler is installed (the marker is printed after it).
    assert!(wait_until(LONG, || read(&env.log_path("stubborn")).contains("STARTED")));
    let t = Instant::now();
    let out = env.ok(&["stop", "stubborn"]);
    let took = t.elapsed();
    assert!(out.stdout.contains("killed"), "{}", out.stdout);
    assert!(took >= Duration::from_millis(700), "stopped after {took:?}");
    assert!(!alive(pid));
    let events = env.ok(&["events", "stubborn"]).stdout;
    assert!(events.contains("killed with KILL"), "{events}");
}

/// `sh -c "sleep 600 & sleep 600"` leaves no process behind: the whole group is stopped.
#[test]
fn stop_leaves_no_process_in_the_group() {
    let env = Env::new();
    env.ok(&["add", "sh", "--cmd", "sh -c 'sleep 600 & sleep 600'"]);
    env.ok(&["start", "sh"]);
    let pgid = env.status_json("sh")["pgid"].as_i64().unwrap() as i32;
    assert!(wait_until(LONG, || group_members(pgid).len() >= 3));
    env.ok(&["stop", "sh"]);
    assert_eq!(group_members(pgid), Vec::<i32>::new());
}

/// A forked helper that ignores TERM too is killed with the group after the timeout.
#[test]
fn stop_kills_stubborn_grandchild() {
    let env = Env::new();
    env.add_fixture(
        "fam",
        &["--stop-timeout", "300ms"],
        &["--ignore-term", "--grandchild"],
    );
    env.ok(&["start", "fam"]);
    let pgid = env.status_json("fam")["pgid"].as_i64().unwrap() as i32;
    assert!(wait_until(LONG, || read(&env.log_path("fam")).contains("CHILD pid=")));
    assert_eq!(group_members(pgid).len(), 2);
    env.ok(&["stop", "fam"]);
    assert_eq!(group_members(pgid), Vec::<i32>::new());
}

/// The recorded PID now belongs to an unrelated process (the service died and the PID was
/// recycled): tend must clear the record, say so, and never signal that process.
#[test]
fn recycled_pid_is_never_signalled() {
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    env.ok(&["start", "web"]);
    let pgid = env.status_json("web")["pgid"].as_i64().unwrap() as i32;
    kill_group(pgid);
    assert!(wait_until(LONG, || group_members(pgid).is_empty()));

    // An unrelated live process in a group of its own. A recycled PID always belongs to
    // a process created later than the original (the PID space must wrap first), so its
    // start time differs; start times count 10 ms clock ticks, so make sure this one
    // was not created within the service's tick.
    use std::os::unix::process::CommandExt;
    let service_start: u64 = {
        let conn = rusqlite::Connection::open(env.db()).unwrap();
        let t: i64 = conn
            .query_row("SELECT start_time FROM instances", [], |r| r.get(0))
            .unwrap();
        t as u64
    };
    let mut stranger;
    loop {
        stranger = KillOnDrop(
            std::process::Command::new("sleep")
                .arg("600")
                .process_group(0)
                .spawn()
                .unwrap(),
        );
        let start: u64 = stat_field(stranger.0.id() as i32, 19)
            .unwrap()
            .parse()
            .unwrap();
        if start != service_start {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let spid = stranger.0.id() as i32;
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let n = conn
        .execute(
            "UPDATE instances SET pid = ?1, pgid = ?1",
            rusqlite::params![spid],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);

    let out = env.ok(&["stop", "web"]);
    assert!(out.stdout.contains("not running"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!("pid {spid}")) && out.stderr.contains("not signalled"),
        "{}",
        out.stderr
    );
    // A wrongly sent signal would land within this window.
    assert!(
        holds_for(Duration::from_millis(200), || alive(spid)),
        "the unrelated process was signalled"
    );
    assert!(env.status_json("web")["pid"].is_null());
    let events = env.ok(&["events", "web"]).stdout;
    assert!(events.contains("stale-cleared"), "{events}");
}

/// A record from another boot is stale even if the PID is alive.
#[test]
fn record_from_an_earlier_boot_is_stale() {
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();
    let pgid = env.status_json("web")["pgid"].as_i64().unwrap() as i32;
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.execute("UPDATE instances SET boot_id = 'another-boot'", [])
        .unwrap();
    drop(conn);
    let st = env.tend(&["status", "web"]);
    assert_eq!(st.code, 3);
    assert!(st.stderr.contains("reboot"), "{}", st.stderr);
    assert!(alive(pid), "a stale record must not be signalled");
    kill_group(pgid);
}

/// A service that exits on its own is seen as stopped, and the exit is recorded.
#[test]
fn exit_is_noticed() {
    let env = Env::new();
    env.add_fixture("brief", &[], &[]);
    env.ok(&["start", "brief"]);
    let pid = env.pid("brief").unwrap();
    // It ends after `start` returned, with nobody to reap it but init.
    // SAFETY: kill(2) on the service this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    assert!(wait_until(LONG, || !alive(pid)));
    let st = env.tend(&["status", "brief"]);
    assert_eq!(st.code, 3);
    assert!(st.stderr.contains("is gone"), "{}", st.stderr);
    let events = env.ok(&["events", "brief", "--json"]).stdout;
    let v: serde_json::Value = serde_json::from_str(&events).unwrap();
    let kinds: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    // The exit went through the restart policy (on-failure, and an unknown status
    // counts as a failure), and the state says that no daemon will carry it out.
    assert_eq!(kinds, ["added", "start", "exit", "backoff"]);
    let st = env.tend(&["status", "brief"]);
    assert_eq!(st.code, 3);
    assert!(
        st.stdout.contains("restarting (no daemon)"),
        "{}",
        st.stdout
    );
    assert_eq!(env.status_json("brief")["waiting_for_daemon"], true);
}

/// Ten `tend start web` at the same moment start exactly one instance.
#[test]
fn concurrent_starts_start_one_instance() {
    let env = Env::new();
    env.add_fixture("web", &[], &["--marker", "once"]);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(10));
    let outs: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let b = barrier.clone();
                let env = &env;
                s.spawn(move || {
                    let mut c = env.cmd();
                    c.args(["start", "web"]);
                    b.wait();
                    run(c)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert_eq!(o.code, 0, "{o:?}");
    }
    let started = outs.iter().filter(|o| o.stdout.contains("started")).count();
    let already = outs
        .iter()
        .filter(|o| o.stdout.contains("already running"))
        .count();
    assert_eq!((started, already), (1, 9));
    assert!(wait_until(LONG, || read(&env.log_path("web")).contains("STARTED")));
    let pgid = env.status_json("web")["pgid"].as_i64().unwrap() as i32;
    assert_eq!(group_members(pgid).len(), 1);
    assert_eq!(read(&env.log_path("web")).matches("STARTED").count(), 1);
}

/// CLI calls racing on one database lose nothing and leave it intact.
#[test]
fn concurrent_adds_lose_nothing() {
    let env = Env::new();
    env.ok(&["list"]);
    std::thread::scope(|s| {
        for i in 0..20 {
            let env = &env;
            s.spawn(move || {
                let name = format!("s{i}");
                let out = env.tend(&["add", &name, "--", "sleep", "1"]);
                assert_eq!(out.code, 0, "{out:?}");
                let out = env.tend(&["edit", &name, "--env", "N=1"]);
                assert_eq!(out.code, 0, "{out:?}");
                env.tend(&["list"]);
            });
        }
    });
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["list", "--json"]).stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 20);
    assert!(v.as_array().unwrap().iter().all(|s| s["env"]["N"] == "1"));
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// restart gives a new pid; start/stop --all act on every service.
#[test]
fn restart_and_all() {
    let env = Env::new();
    env.add_fixture("a", &[], &[]);
    env.add_fixture("b", &[], &[]);
    env.ok(&["start", "--all"]);
    let (a, b) = (env.pid("a").unwrap(), env.pid("b").unwrap());
    env.ok(&["restart", "a"]);
    let a2 = env.pid("a").unwrap();
    assert_ne!(a, a2);
    assert!(!alive(a));
    env.ok(&["stop", "--all"]);
    assert!(!alive(a2) && !alive(b));
    // restart of a stopped service starts it.
    env.ok(&["restart", "b"]);
    assert!(env.pid("b").is_some());
}

/// An edit is stored at once and used at the next start; the running instance is untouched.
#[test]
fn edit_takes_effect_on_next_start() {
    let env = Env::new();
    env.add_fixture("web", &["--env", "V=1"], &["--print-env", "V"]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();
    let out = env.ok(&["edit", "web", "--env", "V=2"]);
    assert!(out.stdout.contains("restart"), "{}", out.stdout);
    assert_eq!(env.pid("web"), Some(pid));
    env.ok(&["restart", "web"]);
    assert!(wait_until(LONG, || read(&env.log_path("web")).contains("ENV V=2")));
    let out = env.ok(&["edit", "web", "--env", "V=2"]);
    assert!(out.stdout.contains("no changes"));
    let events = env.ok(&["events", "web"]).stdout;
    assert!(events.contains("changed"), "{events}");
}

/// `remove` deletes the definition but keeps the history.
#[test]
fn remove_keeps_events() {
    let env = Env::new();
    env.add_fixture("old", &[], &[]);
    env.ok(&["remove", "old"]);
    assert_eq!(env.tend(&["status", "old"]).code, 4);
    let events = env.ok(&["events", "old"]).stdout;
    assert!(
        events.contains("added") && events.contains("removed"),
        "{events}"
    );
}

/// `logs -n` prints the last lines; `-f` follows what is appended.
#[test]
fn logs_tail_and_follow() {
    let env = Env::new();
    env.add_fixture("chatty", &[], &["--lines", "100", "--exit-after", "0"]);
    env.tend(&["start", "chatty"]);
    assert!(wait_until(LONG, || read(&env.log_path("chatty")).contains("line 99")));
    let out = env.ok(&["logs", "chatty", "-n", "3"]);
    assert_eq!(out.stdout, "line 97\nline 98\nline 99\n");

    let mut c = env.cmd();
    c.args(["logs", "chatty", "-n", "1", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = KillOnDrop(c.spawn().unwrap());
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "line 99");
    std::fs::OpenOptions::new()
        .append(true)
        .open(env.log_path("chatty"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"appended\n"))
        .unwrap();
    // The follower polls; reading blocks until the line arrives (bounded by the
    // child being killed on drop if the test fails).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lines.next().map(|l| l.unwrap()));
    });
    assert_eq!(rx.recv_timeout(LONG).unwrap().as_deref(), Some("appended"));
}
