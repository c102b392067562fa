//! cgroup containment, staged for real (as root, on the machine's cgroup2 mount): helpers
//! that call setsid(), programs that daemonize, ten nested forks, a crash under the
//! daemon, a stranger holding a recycled session number, a removed service, limits, and
//! the fallback when cgroups are off. Every cgroup a test creates is removed when its
//! `Env` is dropped (see `util::Env::remove_cgroup`), pass or fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::faults::{
    assert_untouched, events, ns_lock, start_daemon, start_setsid_service, stranger_at,
};
use crate::util::*;

const LONG: Duration = Duration::from_secs(20);

fn needs_cgroups(test: &str) -> bool {
    require_root(test, "create cgroups on the machine's cgroup2 mount")
}

/// The running instance's cgroup, from `status --json`.
fn instance_cgroup(env: &Env, name: &str) -> PathBuf {
    let v = env.status_json(name);
    PathBuf::from(
        v["cgroup"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no cgroup: {v}")),
    )
}

fn service_cgroup(env: &Env, name: &str) -> PathBuf {
    env.cgroup()
        .expect("a cgroup v2")
        .join(format!("{name}.service"))
}

fn all_dead(pids: &[i32]) -> bool {
    pids.iter().all(|&p| !alive(p))
}

/// A shell script that starts `levels` more copies of itself, each in a new session
/// (so none of them is in the service's session), then sleeps.
fn nest_script(dir: &Path) -> PathBuf {
    let p = dir.join("nest.sh");
    std::fs::write(
        &p,
        "#!/bin/sh\nn=$1\nif [ \"$n\" -gt 0 ]; then setsid \"$0\" $((n - 1)) & fi\nexec sleep 1000\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A helper that left the session (setsid) and a chain of ten nested forks, each in a
/// session of its own: `tend stop` takes every one, and the cgroup is empty and removed.
#[test]
fn stop_takes_setsid_helpers_and_ten_nested_forks() {
    if !needs_cgroups("stop_takes_setsid_helpers_and_ten_nested_forks") {
        return;
    }
    let env = Env::new();
    let script = nest_script(env.work());
    env.ok(&["add", "nest", "--", script.to_str().unwrap(), "10"]);
    env.ok(&["start", "nest"]);
    let cg = instance_cgroup(&env, "nest");
    assert!(
        wait_until(LONG, || cgroup_pids(&cg).len() == 11),
        "expected 11 processes in {}: {:?}",
        cg.display(),
        cgroup_pids(&cg)
    );
    let pids = cgroup_pids(&cg);
    let out = env.ok(&["stop", "nest"]);
    assert!(out.stdout.contains("nest: stopped"), "{out:?}");
    assert!(
        all_dead(&pids),
        "survivors: {:?}",
        pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
    assert!(
        !cg.exists(),
        "the instance's cgroup {} was not removed",
        cg.display()
    );
}

/// A program that daemonizes itself (forks a child into a new session and exits): its
/// child is listed as left over by `status`, killed by the next `stop`.
#[test]
fn a_self_daemonizing_program_is_followed_and_stopped() {
    if !needs_cgroups("a_self_daemonizing_program_is_followed_and_stopped") {
        return;
    }
    let env = Env::new();
    env.ok(&[
        "add",
        "forker",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "setsid sleep 1000 & exit 0",
    ]);
    env.start_brief(&["forker"]);
    let svc = service_cgroup(&env, "forker");
    // The cgroup's only pid is the detached sleep only once `sh` has forked it and
    // exited and `setsid` has exec'd: until then that pid may be `sh` or `setsid`. So
    // wait for the state the status reports (stopped, one leftover that is `sleep`).
    let mut left: Vec<i32> = Vec::new();
    assert!(
        wait_until(LONG, || {
            let v = env.status_json("forker");
            left = v["cgroup"]["leftovers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_i64())
                        .map(|p| p as i32)
                        .collect()
                })
                .unwrap_or_default();
            v["state"] == "stopped"
                && left.len() == 1
                && cgroup_pids(&svc) == left
                && comm(left[0]) == "sleep"
        }),
        "status: {}, cgroup: {:?}",
        env.status_json("forker"),
        cgroup_pids(&svc)
    );
    let child = left[0];
    let human = env.tend(&["status", "forker"]);
    assert!(
        human.stdout.contains(&format!(
            "1 process(es) of an earlier instance still run (pid {child})"
        )),
        "{human:?}"
    );
    let out = env.ok(&["stop", "forker"]);
    assert!(
        out.stderr
            .contains("forker: killed 1 leftover process(es) in its cgroup"),
        "{out:?}"
    );
    assert!(
        wait_until(LONG, || !alive(child)),
        "pid {child} survived the stop"
    );
    assert!(!cgroup_populated(&svc));
}

/// Under the daemon, a crash takes down what the instance left in its cgroup (a helper
/// in a session of its own) before the restart, and the old cgroup goes.
#[test]
fn crash_under_the_daemon_leaves_nothing_behind() {
    if !needs_cgroups("crash_under_the_daemon_leaves_nothing_behind") {
        return;
    }
    let env = Env::new();
    start_daemon(&env);
    env.ok(&[
        "add",
        "web",
        "--restart",
        "always",
        "--restart-delay",
        "0",
        "--",
        "sh",
        "-c",
        "setsid sleep 1000 & exec sleep 1000",
    ]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").expect("running");
    let cg = instance_cgroup(&env, "web");
    assert!(
        wait_until(LONG, || cgroup_pids(&cg).len() == 2),
        "{:?}",
        cgroup_pids(&cg)
    );
    let helper = cgroup_pids(&cg).into_iter().find(|&p| p != pid).unwrap();
    // SAFETY: kill(2) on this test's own service, checked alive above.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let new = env.wait_new_pid("web", pid);
    assert!(
        wait_until(LONG, || !alive(helper)),
        "the helper {helper} survived the crash"
    );
    let new_cg = instance_cgroup(&env, "web");
    assert_ne!(new_cg, cg);
    assert!(
        wait_until(LONG, || !cg.exists()),
        "{} not removed",
        cg.display()
    );
    assert!(alive(new));
}

/// The service left its session and a stranger took the session number: with a cgroup,
/// membership is the proof, so the stranger (outside tend's cgroup) is never touched.
#[test]
fn a_stranger_outside_the_cgroup_is_never_touched() {
    if !needs_cgroups("a_stranger_outside_the_cgroup_is_never_touched") {
        return;
    }
    let env = Env::new();
    env.add_fixture("web", &[], &["--setsid", "--grandchild"]);
    let _guard = ns_lock();
    let (pid, n) = {
        // The fixture's helper stays in session N, so N stays in use: wait for it by
        // hand instead of start_setsid_service's "N is free" check.
        env.ok(&["start", "web"]);
        let pid = env.pid("web").expect("running");
        (pid, env.status_json("web")["pgid"].as_i64().unwrap() as i32)
    };
    let cg = instance_cgroup(&env, "web");
    assert!(
        wait_until(LONG, || cgroup_pids(&cg).len() == 2),
        "{:?}",
        cgroup_pids(&cg)
    );
    let members = cgroup_pids(&cg);
    // Kill the helper by hand so that N is free, then let a stranger take it.
    let helper = members.iter().copied().find(|&p| p != pid).unwrap();
    // SAFETY: kill(2) on the helper of this test's own service, a member of its cgroup.
    unsafe {
        libc::kill(helper, libc::SIGKILL);
    }
    assert!(wait_until(LONG, || !alive(helper)));
    let mut stranger = stranger_at(n);
    let out = env.ok(&["stop", "web"]);
    assert!(out.stdout.contains("web: stopped"), "{out:?}");
    assert!(!alive(pid));
    assert_untouched(&mut stranger, n);
}

/// The same corner through the process-group fallback's own staging helper: the main
/// process left its session, the number went to a stranger, and a restart spares it.
#[test]
fn restart_with_cgroups_spares_a_stranger_holding_the_session_number() {
    if !needs_cgroups("restart_with_cgroups_spares_a_stranger_holding_the_session_number") {
        return;
    }
    let env = Env::new();
    env.add_fixture("web", &[], &["--setsid", "--marker", "m"]);
    let _guard = ns_lock();
    let (pid, n) = start_setsid_service(&env, "web");
    let mut stranger = stranger_at(n);
    env.ok(&["restart", "web"]);
    assert!(!alive(pid));
    assert_untouched(&mut stranger, n);
    let ev = events(&env, "web");
    assert!(ev.iter().any(|(k, _)| k == "stop"), "{ev:?}");
}

/// A removed service's cgroup is removed, and what was left in it is killed.
#[test]
fn removing_a_service_removes_its_cgroup() {
    if !needs_cgroups("removing_a_service_removes_its_cgroup") {
        return;
    }
    let env = Env::new();
    env.ok(&[
        "add",
        "gone",
        "--",
        "sh",
        "-c",
        "setsid sleep 1000 & exec sleep 1000",
    ]);
    env.ok(&["start", "gone"]);
    let svc = service_cgroup(&env, "gone");
    assert!(wait_until(LONG, || cgroup_pids(&svc).len() == 2));
    let pids = cgroup_pids(&svc);
    env.ok(&["remove", "--stop", "gone"]);
    assert!(all_dead(&pids), "{pids:?}");
    assert!(!svc.exists(), "{} still exists", svc.display());
}

/// The daemon says which containment it uses and moves itself out of the services' way.
#[test]
fn the_daemon_reports_cgroup_containment() {
    if !needs_cgroups("the_daemon_reports_cgroup_containment") {
        return;
    }
    let env = Env::new();
    start_daemon(&env);
    let root = env.cgroup().unwrap();
    let v: Value = serde_json::from_str(&env.ok(&["daemon", "status", "--json"]).stdout).unwrap();
    assert_eq!(
        v["containment"].as_str(),
        Some(format!("cgroup {}", root.display()).as_str()),
        "{v}"
    );
    let human = env.ok(&["daemon", "status"]);
    assert!(
        human
            .stdout
            .contains(&format!("contain:  cgroup {}", root.display())),
        "{human:?}"
    );
    let daemon = env.daemon_pid().unwrap();
    let own = std::fs::read_to_string(format!("/proc/{daemon}/cgroup")).unwrap();
    assert!(own.trim_end().ends_with("/supervisor"), "{own}");
    // A service the daemon starts runs in its own instance cgroup under the root.
    env.ok(&["add", "s", "--", "sleep", "1000"]);
    env.ok(&["start", "s"]);
    assert!(instance_cgroup(&env, "s").starts_with(root.join("s.service")));
}

/// A limit needs its controller: applied where it is available, refused with the reason
/// (and nothing stored) where it is not, as on a machine whose memory controller is
/// bound to the cgroup v1 hierarchy.
#[test]
fn a_limit_is_applied_or_refused_with_the_reason() {
    if !needs_cgroups("a_limit_is_applied_or_refused_with_the_reason") {
        return;
    }
    let env = Env::new();
    let parent = own_cgroup().unwrap();
    let controllers = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap();
    env.ok(&["add", "other", "--", "sleep", "1000"]);
    let before = dump(&env.db());
    let out = env.tend(&["add", "lim", "--memory-max", "64M", "--", "sleep", "1000"]);
    if controllers.split_whitespace().any(|c| c == "memory") {
        assert_eq!(out.code, 0, "{out:?}");
        env.ok(&["start", "lim"]);
        let max = std::fs::read_to_string(service_cgroup(&env, "lim").join("memory.max")).unwrap();
        assert_eq!(max.trim(), (64u64 << 20).to_string());
    } else {
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr.starts_with(
                "tend: invalid --memory-max: the memory controller is not available in"
            ),
            "{out:?}"
        );
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
        assert_eq!(dump(&env.db()), before, "the state changed");
    }
}

/// Without a usable cgroup (turned off, or a path that is not one), tend falls back to
/// process groups, says so, and refuses limits. Runs as any user.
#[test]
fn without_cgroups_tend_falls_back_and_says_so() {
    let env = Env::without_cgroups();
    start_daemon(&env);
    let v: Value = serde_json::from_str(&env.ok(&["daemon", "status", "--json"]).stdout).unwrap();
    assert_eq!(v["containment"], "process-group (TEND_CGROUP=off)", "{v}");
    env.ok(&["add", "s", "--", "sleep", "1000"]);
    env.ok(&["start", "s"]);
    assert_eq!(env.status_json("s")["cgroup"], Value::Null);
    let before = dump(&env.db());
    let out = env.tend(&["edit", "s", "--cpu-max", "50%"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "tend: invalid --cpu-max: needs cgroup containment, and this tend uses process groups: TEND_CGROUP=off"
    );
    assert_eq!(dump(&env.db()), before);
    env.ok(&["stop", "s"]);
    env.ok(&["daemon", "stop"]);

    // A path that is not on a cgroup2 mount.
    let mut env2 = Env::new();
    env2.vars.push(("TEND_CGROUP".into(), "/proc".into()));
    start_daemon(&env2);
    let v: Value = serde_json::from_str(&env2.ok(&["daemon", "status", "--json"]).stdout).unwrap();
    assert_eq!(
        v["containment"], "process-group (TEND_CGROUP=/proc is not a directory on a cgroup2 mount)",
        "{v}"
    );
}

/// `--pidfile`: a program that daemonizes itself is followed to the process it forked
/// (named by its pid file, proven by the cgroup), stopped, and — under the daemon —
/// restarted after a crash; a pid file naming a process outside the cgroup is refused.
#[test]
fn a_pidfile_service_is_followed_to_its_daemonized_process() {
    if !needs_cgroups("a_pidfile_service_is_followed_to_its_daemonized_process") {
        return;
    }
    let env = Env::new();
    let pidfile = env.work().join("d.pid");
    let script = format!(
        "setsid sleep 1000 & echo $! > {}; exit 0",
        pidfile.display()
    );
    let pf = pidfile.to_str().unwrap();
    env.ok(&[
        "add",
        "d",
        "--pidfile",
        pf,
        "--restart",
        "always",
        "--restart-delay",
        "0",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    // Without a daemon.
    let out = env.ok(&["start", "d"]);
    let named: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        out.stdout.contains(&format!("d: started (pid {named})")),
        "{out:?}"
    );
    assert_eq!(env.pid("d"), Some(named));
    assert_eq!(env.status_json("d")["state"], "running");
    env.ok(&["stop", "d"]);
    assert!(wait_until(LONG, || !alive(named)));
    // Under the daemon: a crash of the daemonized process is restarted and followed.
    start_daemon(&env);
    env.ok(&["start", "d"]);
    let first = env.pid("d").unwrap();
    assert_eq!(
        first,
        std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap()
    );
    // SAFETY: kill(2) on this test's own service, recorded and alive.
    unsafe {
        libc::kill(first, libc::SIGKILL);
    }
    // The record names the daemonized process again (the first process of the restart
    // is recorded only while it hands over).
    let mut second = 0;
    assert!(
        wait_until(LONG, || {
            let named = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            second = env.pid("d").unwrap_or(0);
            second != first && named == Some(second) && alive(second)
        }),
        "not followed after the crash; events: {:?}",
        events(&env, "d")
    );
    let ev = events(&env, "d");
    assert!(
        ev.iter()
            .any(|(k, d)| k == "exit" && d.contains(&format!("pid {first}: signal KILL"))),
        "{ev:?}"
    );
    env.ok(&["stop", "d"]);
    assert!(!alive(second));

    // A pid file that names a process outside the cgroup (this test's own) is refused.
    let me = std::process::id().to_string();
    let liar = format!("echo {me} > {}; exit 0", pidfile.display());
    env.ok(&[
        "add",
        "liar",
        "--pidfile",
        pf,
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        &liar,
    ]);
    let out = env.tend(&["start", "liar"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "names pid {me}, which is not in the service's cgroup"
        )),
        "{out:?}"
    );
    assert_eq!(env.status_json("liar")["state"], "stopped");
}

/// The command name of a process, or "" once it is gone.
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A cgroup v1 `freezer` group for one test: frozen processes put in it cannot exit, not
/// even on SIGKILL, until it is thawed. Thawed and removed when dropped.
struct Freezer(PathBuf);

impl Freezer {
    fn new(test: &str) -> Option<Freezer> {
        let root = Path::new("/sys/fs/cgroup/freezer");
        if !root.join("cgroup.procs").exists() {
            not_run(&format!("{test}: needs a cgroup v1 freezer hierarchy"));
            return None;
        }
        let dir = root.join(format!("tend-test-{}-{test}", std::process::id()));
        std::fs::create_dir(&dir).expect("create the freezer cgroup");
        Some(Freezer(dir))
    }

    fn freeze(&self, pid: i32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).expect("join freezer");
        std::fs::write(self.0.join("freezer.state"), "FROZEN").expect("freeze");
        assert!(
            wait_until(LONG, || std::fs::read_to_string(
                self.0.join("freezer.state")
            )
            .is_ok_and(|s| s.trim() == "FROZEN")),
            "the freezer did not freeze"
        );
    }

    fn thaw(&self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.thaw();
        wait_until(LONG, || {
            std::fs::read_to_string(self.0.join("cgroup.procs")).is_ok_and(|t| t.trim().is_empty())
        });
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A start whose new process another command stops before it runs says so, never that
/// the program exited at once. Staged: the start has committed and waits for what
/// an earlier instance left in its cgroup (held frozen, so it cannot die yet) before it
/// lets the new process exec; meanwhile `tend stop` marks the new instance stopping and
/// sends TERM, which waits, blocked, until the new process is let go.
#[test]
fn a_start_stopped_by_another_command_says_so() {
    if !needs_cgroups("a_start_stopped_by_another_command_says_so") {
        return;
    }
    let Some(freezer) = Freezer::new("stopped-at-once") else {
        return;
    };
    let env = Env::new();
    env.ok(&[
        "add",
        "svc",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "sleep 1000 & exec sleep 999",
    ]);
    env.ok(&["start", "svc"]);
    let old = env.pid("svc").expect("running");
    let old_leaf = instance_cgroup(&env, "svc");
    let mut helper = Vec::new();
    assert!(wait_until(LONG, || {
        helper = cgroup_pids(&old_leaf)
            .into_iter()
            .filter(|&p| p != old && comm(p) == "sleep")
            .collect();
        helper.len() == 1
    }));
    freezer.freeze(helper[0]);
    // SAFETY: kill(2) on the service this test started.
    unsafe {
        libc::kill(old, libc::SIGKILL);
    }
    assert!(wait_until(LONG, || !alive(old)));

    let mut start = env.cmd();
    start
        .args(["start", "svc"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // Ends on its own: the freezer is thawed when dropped, even on failure.
    let start = start.spawn().expect("spawn tend start");
    // Committed: the record names the new process, which waits at the gate while the
    // start waits for the frozen leftover.
    let mut new = None;
    assert!(wait_until(LONG, || {
        new = recorded_pid(&env).filter(|&p| p != old);
        new.is_some()
    }));
    let mut stop = env.cmd();
    stop.args(["stop", "svc"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let stop = stop.spawn().expect("spawn tend stop");
    assert!(
        wait_until(LONG, || recorded_stopping(&env)),
        "the stop never marked the new instance"
    );
    // ... and its TERM waits, blocked, at the new process.
    let new_pid = new.expect("checked above");
    assert!(
        wait_until(LONG, || term_pending(new_pid)),
        "the stop's TERM never reached pid {new_pid}"
    );
    freezer.thaw();
    let start = start.wait_with_output().expect("tend start");
    let stop = stop.wait_with_output().expect("tend stop");
    let start_err = String::from_utf8_lossy(&start.stderr);
    // The TERM ends the new process the moment it unblocks its signals, right before
    // exec: the start then says another command stopped it. Only if the start looked in
    // the instant between the end of its report pipe and the kernel's notice of the exit
    // (a loaded machine widens it) does it find the process still there and call it
    // started. It never says that the program exited at once on its own.
    assert!(
        !start_err.contains("exited at once"),
        "start blamed the program: {start_err}"
    );
    match start.status.code() {
        Some(1) => assert!(
            start_err.contains("another command stopped it"),
            "start: {start_err}"
        ),
        Some(0) => eprintln!("the start looked before the exit was noticed: {start_err}"),
        other => panic!("start: exit {other:?}: {start_err}"),
    }
    assert_eq!(
        stop.status.code(),
        Some(0),
        "stop: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(!alive(new_pid));
    assert_eq!(env.tend(&["status", "svc"]).code, 3);
}

/// Whether SIGTERM is pending for process `pid` (blocked, not yet delivered).
fn term_pending(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status.lines().any(|l| {
        ["ShdPnd:", "SigPnd:"].iter().any(|k| {
            l.strip_prefix(k)
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .is_some_and(|m| m & (1 << (libc::SIGTERM - 1)) != 0)
        })
    })
}

/// The pid of `svc`'s recorded instance, read from the database.
fn recorded_pid(env: &Env) -> Option<i32> {
    let conn = rusqlite::Connection::open(env.db()).ok()?;
    conn.query_row("SELECT pid FROM instances", [], |r| r.get(0))
        .ok()
}

/// Whether the recorded instance is marked stopping.
fn recorded_stopping(env: &Env) -> bool {
    rusqlite::Connection::open(env.db())
        .ok()
        .and_then(|c| {
            c.query_row("SELECT stopping FROM instances", [], |r| {
                r.get::<_, bool>(0)
            })
            .ok()
        })
        .unwrap_or(false)
}

/// The names of the cgroups directly in `dir`.
fn cgroups_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Nothing of the home is left on the cgroup hierarchy once nothing runs: a stopped
/// service's cgroup goes with the stop (with or without a daemon), a crashed one's with
/// the daemon's cleanup, and the home's own (with `supervisor` and `log-writers`) when
/// the daemon stops.
#[test]
fn cgroups_of_the_home_are_removed_once_unused() {
    if !needs_cgroups("cgroups_of_the_home_are_removed_once_unused") {
        return;
    }
    let env = Env::new();
    let root = env.cgroup().expect("a cgroup v2");
    // Without a daemon.
    env.ok(&["add", "plain", "--", "sleep", "1000"]);
    env.ok(&["start", "plain"]);
    let plain = service_cgroup(&env, "plain");
    assert!(plain.is_dir(), "{}", plain.display());
    env.ok(&["stop", "plain"]);
    assert!(
        !plain.exists(),
        "{} is left: {:?}",
        plain.display(),
        cgroups_in(&plain)
    );
    // Nothing else of the home was in use: its cgroup went with the stop.
    assert!(
        !root.exists(),
        "{} is left after the last stop without a daemon: {:?}",
        root.display(),
        cgroups_in(&root)
    );

    // Under the daemon: a plain service, one with a helper in a session of its own, one
    // whose output goes through a log writer, and one that exits at once leaving a
    // helper behind (the daemon's cleanup takes it; it is never restarted).
    start_daemon(&env);
    env.ok(&["add", "a", "--", "sleep", "1000"]);
    env.ok(&[
        "add",
        "b",
        "--",
        "sh",
        "-c",
        "setsid sleep 1000 & exec sleep 1000",
    ]);
    env.ok(&[
        "add",
        "c",
        "--log-timestamps",
        "on",
        "--",
        "sh",
        "-c",
        "echo up; exec sleep 1000",
    ]);
    env.ok(&[
        "add",
        "once",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "setsid sleep 1000 & sleep 0.2; exit 3",
    ]);
    env.ok(&["start", "a", "b", "c"]);
    env.start_brief(&["once"]);
    for name in ["a", "b", "c"] {
        assert!(service_cgroup(&env, name).is_dir(), "{name}");
    }
    let once = service_cgroup(&env, "once");
    assert!(
        wait_until(LONG, || !once.exists()),
        "{} is left after the cleanup: {:?}; events: {}",
        once.display(),
        cgroups_in(&once),
        env.tend(&["events", "once"]).stdout
    );
    env.ok(&["stop", "--all"]);
    assert_eq!(
        cgroups_in(&root),
        vec!["log-writers".to_string(), "supervisor".to_string()],
        "after stop --all"
    );
    // c's log writer ends once nothing holds c's output any more.
    let writers = root.join("log-writers");
    assert!(
        wait_until(LONG, || !cgroup_populated(&writers)),
        "log writers still run: {:?}",
        cgroup_pids(&writers)
    );
    env.ok(&["daemon", "stop"]);
    assert!(
        wait_until(LONG, || !root.exists()),
        "{} is left after daemon stop: {:?}",
        root.display(),
        cgroups_in(&root)
    );
}

/// Removing unused cgroups never breaks a start running at the same time: starts and
/// stops of one service, and starts and stops of another that keep removing and
/// re-creating the home's cgroup under them, all succeed, and every instance runs in its
/// cgroup.
#[test]
fn removing_unused_cgroups_never_breaks_a_concurrent_start() {
    if !needs_cgroups("removing_unused_cgroups_never_breaks_a_concurrent_start") {
        return;
    }
    let env = Env::new();
    env.ok(&["add", "s", "--", "sleep", "1000"]);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for args in [["start", "s"], ["stop", "s"]].repeat(3) {
            let (env, failures) = (&env, &failures);
            sc.spawn(move || {
                for _ in 0..30 {
                    let out = env.tend(&args);
                    // A stop may end an instance right after its start went ahead, and
                    // a start that won kills what a concurrent one holds at the gate in
                    // its cgroup (it cannot tell it from an earlier instance's leftover):
                    // the losing start then says its process exited or never reported
                    // in, and if a stop ended the winner meanwhile, it fails. Those are
                    // races of starts with starts, not of the cleanup; a cgroup that went
                    // under a start would say `cgroup`.
                    let raced = args[0] == "start"
                        && out.code == 1
                        && !out.stderr.contains("cgroup")
                        && (out.stderr.contains("exited at once (signal ")
                            || out.stderr.contains("another command stopped it at once")
                            || out.stderr.contains("did not report in"));
                    if out.code != 0 && !raced {
                        failures.lock().unwrap().push((args, out));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    env.ok(&["start", "s"]);
    let pid = env.pid("s").expect("running");
    let cg = instance_cgroup(&env, "s");
    assert_eq!(cgroup_pids(&cg), vec![pid]);
    env.ok(&["stop", "s"]);
    assert!(!service_cgroup(&env, "s").exists());
}
