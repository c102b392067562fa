//! `tend up`: a services file in the foreground. Each test runs the real binary on a
//! real file, sends real signals, and checks what runs (and what no longer does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{self, alive, holds_for, wait_until, Env, FIXTURE, TEND};

/// A `tend up` running in the background, its output in files (a pipe nobody reads
/// would fill); killed on drop if a test failed before it ended.
struct Up {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Up {
    fn start(env: &Env, args: &[&str]) -> Up {
        Up::start_cmd(env.cmd(), env.work(), args)
    }

    fn start_cmd(mut c: Command, work: &Path, args: &[&str]) -> Up {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = work.join(format!("up{k}.out"));
        let err = work.join(format!("up{k}.err"));
        c.arg("up")
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        Up {
            child: Some(c.spawn().expect("spawn tend up")),
            out,
            err,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn out(&self) -> String {
        util::read(&self.out)
    }

    fn err(&self) -> String {
        util::read(&self.err)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: our own child, not reaped yet.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits (up to 60 s) until every service is ready, as `up` says on stderr.
    fn wait_ready(&self) {
        assert!(
            wait_until(Duration::from_secs(60), || self.err().contains("ready in")),
            "not ready; stderr: {}\nstdout: {}",
            self.err(),
            self.out()
        );
    }

    /// Waits (up to 60 s) for `up` to exit; its exit code (-1 for a signal).
    fn wait(&mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        let mut code = None;
        let ended = wait_until(Duration::from_secs(60), || {
            if let Ok(Some(st)) = child.try_wait() {
                code = Some(st.code().unwrap_or(-1));
            }
            code.is_some()
        });
        if !ended {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tend up did not exit; stderr: {}", self.err());
        }
        code.unwrap()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `(service, kind)` of every event, oldest first.
fn events(env: &Env) -> Vec<(String, String, String)> {
    let out = env.ok(&["events", "-n", "1000", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["service"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn position(ev: &[(String, String, String)], service: &str, kind: &str) -> usize {
    ev.iter()
        .position(|(s, k, _)| s == service && k == kind)
        .unwrap_or_else(|| panic!("no {kind} event of {service}: {ev:?}"))
}

fn count(ev: &[(String, String, String)], service: &str, kind: &str) -> usize {
    ev.iter()
        .filter(|(s, k, _)| s == service && k == kind)
        .count()
}

fn write_file(env: &Env, name: &str, text: &str) -> PathBuf {
    let p = env.work().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Pids of the services a test's home recorded (running ones).
fn pids(env: &Env, names: &[&str]) -> Vec<i32> {
    names.iter().filter_map(|n| env.pid(n)).collect()
}

const THREE: &str = r#"
[services.db]
cmd = ["FIXTURE", "--sleep", "300", "--marker", "db ready", "--lines", "2"]
ready = { log = "db ready" }

[services.web]
cmd = ["FIXTURE", "--marker", "web up"]
requires = ["db"]

[services.worker]
cmd = ["FIXTURE", "--marker", "worker up"]
"#;

/// Three services, one requiring another that has a readiness check: started in
/// dependency order (web only after db is ready), their output merged with each line
/// prefixed by its service; SIGINT stops all in reverse order and `up` exits 0.
#[test]
fn up_starts_in_order_merges_output_and_stops_in_reverse_on_sigint() {
    let env = Env::new();
    let file = write_file(&env, "tend.toml", &THREE.replace("FIXTURE", FIXTURE));
    let mut up = Up::start(&env, &["-f", file.to_str().unwrap()]);
    up.wait_ready();
    let running = pids(&env, &["db", "web", "worker"]);
    assert_eq!(running.len(), 3, "{}", up.err());
    assert!(
        wait_until(Duration::from_secs(30), || {
            let o = up.out();
            o.contains("db     | STARTED")
                && o.contains("web    | STARTED")
                && o.contains("worker | STARTED")
                && o.contains("db     | line 1")
        }),
        "merged output: {}",
        up.out()
    );
    let ev = events(&env);
    // web started only once db was ready (its marker in the log), so after db's start.
    assert!(position(&ev, "db", "start") < position(&ev, "web", "start"));
    up.signal(libc::SIGINT);
    assert_eq!(up.wait(), 0, "stderr: {}", up.err());
    assert!(up.err().contains("tend: up: stopped"), "{}", up.err());
    let ev = events(&env);
    assert!(
        position(&ev, "web", "stop") < position(&ev, "db", "stop"),
        "web (requires db) stops before db: {ev:?}"
    );
    for pid in running {
        assert!(!alive(pid), "pid {pid} still runs after up exited");
    }
    assert!(!util::lock_held(&env.home().join("daemon.lock")));
}

/// With --exit-on-failure, a service that exits ends the run: everything else is
/// stopped and `up` exits with that service's status.
#[test]
fn exit_on_failure_exits_with_the_failing_status() {
    let env = Env::new();
    let text = format!(
        r#"
[services.short]
cmd = ["{FIXTURE}", "--exit-after", "1500", "--exit-code", "7"]
restart = "never"

[services.long]
cmd = ["{FIXTURE}", "--marker", "long"]
"#
    );
    let file = write_file(&env, "tend.toml", &text);
    let mut up = Up::start(&env, &["-f", file.to_str().unwrap(), "--exit-on-failure"]);
    assert_eq!(up.wait(), 7, "stderr: {}", up.err());
    assert!(up.err().contains("short exited"), "{}", up.err());
    let ev = events(&env);
    assert_eq!(count(&ev, "long", "stop"), 1, "{ev:?}");
    assert!(env.pid("long").is_none());
}

/// A service that cannot start ends the run with `tend start`'s code, and what did
/// start is stopped.
#[test]
fn a_service_that_cannot_start_ends_the_run() {
    let env = Env::new();
    let text = format!(
        r#"
[services.good]
cmd = ["{FIXTURE}"]

[services.bad]
cmd = ["/nonexistent/program"]
"#
    );
    let file = write_file(&env, "tend.toml", &text);
    let mut up = Up::start(&env, &["-f", file.to_str().unwrap()]);
    let code = up.wait();
    assert_ne!(code, 0, "stderr: {}", up.err());
    assert!(
        up.err().contains("tend: bad: no such program"),
        "{}",
        up.err()
    );
    assert!(env.pid("good").is_none());
}

/// `up` killed with SIGKILL (no handler runs): the kernel's SIGTERM to the tied daemon
/// makes it stop every service; nothing of the run is left.
#[test]
fn up_killed_leaves_nothing_running() {
    let env = Env::new();
    let file = write_file(&env, "tend.toml", &THREE.replace("FIXTURE", FIXTURE));
    let mut up = Up::start(&env, &["-f", file.to_str().unwrap()]);
    up.wait_ready();
    let running = pids(&env, &["db", "web", "worker"]);
    assert_eq!(running.len(), 3);
    let daemon = env.daemon_pid().expect("the daemon runs");
    up.signal(libc::SIGKILL);
    up.wait();
    assert!(
        wait_until(Duration::from_secs(60), || {
            !alive(daemon) && running.iter().all(|p| !alive(*p))
        }),
        "left running: daemon {} services {:?}",
        alive(daemon),
        running.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    let ev = events(&env);
    for s in ["db", "web", "worker"] {
        assert_eq!(count(&ev, s, "stop"), 1, "{s}: {ev:?}");
    }
}

/// A second `tend up` of the same home is refused with one clear line (exit 5); the
/// first keeps running.
#[test]
fn a_second_up_of_the_same_file_is_refused() {
    let env = Env::new();
    let file = write_file(
        &env,
        "tend.toml",
        &format!("[services.a]\ncmd = [\"{FIXTURE}\"]\n"),
    );
    let mut up = Up::start(&env, &["-f", file.to_str().unwrap()]);
    up.wait_ready();
    let pid = env.pid("a").unwrap();
    let second = env.tend(&["up", "-f", file.to_str().unwrap()]);
    assert_eq!(second.code, 5, "{second:?}");
    assert!(
        second
            .stderr
            .starts_with("tend: another tend up is running"),
        "{}",
        second.stderr
    );
    assert_eq!(second.stderr.lines().count(), 1, "{}", second.stderr);
    assert!(alive(pid));
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait(), 0, "{}", up.err());
    assert!(!alive(pid));
}

/// Without --home, each file gets a home of its own under the state directory; a
/// FIFO or an oversized services file is refused with one line, before anything runs.
#[test]
fn homes_are_per_file_and_hostile_files_are_refused() {
    let env = Env::new();
    let state = tempfile::tempdir().unwrap();
    let cmd = || {
        let mut c = Command::new(TEND);
        c.current_dir(env.work())
            .env_remove("TEND_HOME")
            .env("XDG_STATE_HOME", state.path())
            .stdin(Stdio::null());
        c
    };
    std::fs::create_dir(env.work().join("p1")).unwrap();
    std::fs::create_dir(env.work().join("p2")).unwrap();
    for p in ["p1", "p2"] {
        std::fs::write(
            env.work().join(p).join("tend.toml"),
            format!(
                "[services.a]\ncmd = [\"{FIXTURE}\", \"--exit-after\", \"1500\"]\n\
                 restart = \"never\"\n"
            ),
        )
        .unwrap();
    }
    for p in ["p1", "p2"] {
        let mut c = cmd();
        c.current_dir(env.work().join(p))
            .args(["up", "--exit-on-failure"]);
        let out = util::run(c);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let homes: Vec<_> = std::fs::read_dir(state.path().join("tend/up"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(homes.len(), 2, "{homes:?}");
    for h in &homes {
        let name = h.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(name.len(), 16, "{name}");
        assert!(h.join("tend.db").exists());
    }

    // A name the file lacks: refused (exit 4) before anything is created.
    std::fs::create_dir(env.work().join("p3")).unwrap();
    std::fs::write(
        env.work().join("p3/tend.toml"),
        format!("[services.a]\ncmd = [\"{FIXTURE}\"]\n"),
    )
    .unwrap();
    let out = util::run({
        let mut c = cmd();
        c.current_dir(env.work().join("p3")).args(["up", "nosuch"]);
        c
    });
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(out.stderr, "tend: unknown service: nosuch\n");
    assert_eq!(
        std::fs::read_dir(state.path().join("tend/up"))
            .unwrap()
            .count(),
        2
    );

    // A FIFO: never opened for reading (that would block), refused at once.
    let fifo = env.work().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = util::run({
        let mut c = cmd();
        c.args(["up", "-f", fifo.to_str().unwrap()]);
        c
    });
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.starts_with("tend: "), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // A huge file: past the cap, refused without reading it all.
    let huge = env.work().join("huge.toml");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(1 << 30).unwrap();
    let out = util::run({
        let mut c = cmd();
        c.args(["up", "-f", huge.to_str().unwrap()]);
        c
    });
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.starts_with("tend: "), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

/// `watch`: a watched file changed five times within 100 ms is one restart of the
/// service and one of the service that requires it (counted in the events, then none
/// more over 3 s); editor swap files, `4913` and `.git` restart nothing (over 2 s).
#[test]
fn a_burst_of_changes_is_one_restart() {
    let env = Env::new();
    let src = env.work().join("src/pkg");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(env.work().join(".git")).unwrap();
    std::fs::write(src.join("app.py"), "v0").unwrap();
    let text = format!(
        r#"
[services.app]
cmd = ["{FIXTURE}"]
watch = ["src/**/*.py", ".git/*"]

[services.front]
cmd = ["{FIXTURE}"]
requires = ["app"]

[services.other]
cmd = ["{FIXTURE}"]
"#
    );
    let file = write_file(&env, "tend.toml", &text);
    let mut up = Up::start(&env, &["-f", file.to_str().unwrap()]);
    up.wait_ready();
    let ev = events(&env);
    let (app0, front0, other0) = (
        count(&ev, "app", "start"),
        count(&ev, "front", "start"),
        count(&ev, "other", "start"),
    );
    let first = env.pid("app").unwrap();
    // Ignored: swap files, vim's 4913 probe, emacs lock files, anything in .git.
    for name in [".app.py.swp", "4913", "app.py~", ".#app.py"] {
        std::fs::write(src.join(name), "x").unwrap();
    }
    std::fs::write(env.work().join(".git/index"), "x").unwrap();
    assert!(
        holds_for(Duration::from_secs(2), || env.pid("app") == Some(first)),
        "an ignored file restarted the service"
    );
    // Five saves within about 100 ms (15 ms apart; a busy machine may stretch the
    // gaps, which stay well under the 300 ms of quiet a restart waits for).
    for i in 1..=5 {
        std::fs::write(src.join("app.py"), format!("v{i}")).unwrap();
        std::thread::sleep(Duration::from_millis(15));
    }
    let second = env.wait_new_pid("app", first);
    assert!(wait_until(Duration::from_secs(30), || {
        let ev = events(&env);
        count(&ev, "front", "start") == front0 + 1
    }));
    assert!(
        holds_for(Duration::from_secs(3), || {
            let ev = events(&env);
            count(&ev, "app", "start") == app0 + 1
                && count(&ev, "front", "start") == front0 + 1
                && count(&ev, "other", "start") == other0
        }),
        "{:?}",
        events(&env)
    );
    assert_eq!(env.pid("app"), Some(second));
    let ev = events(&env);
    assert_eq!(count(&ev, "app", "watch"), 1, "{ev:?}");
    up.signal(libc::SIGINT);
    assert_eq!(up.wait(), 0, "{}", up.err());
}

/// A watch over thousands of files in hundreds of directories works (one change, one
/// restart), and a directory that cannot be read is named in the daemon's log while the
/// rest is watched.
#[test]
fn a_wide_watch_and_an_unreadable_directory() {
    let env = Env::new();
    let tree = env.work().join("tree");
    for d in 0..300 {
        let dir = tree.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..10 {
            std::fs::write(dir.join(format!("f{f}.txt")), "x").unwrap();
        }
    }
    let text = format!(
        "[services.wide]\ncmd = [\"{FIXTURE}\"]\nwatch = [\"tree/**/*.txt\", \"/proc/1/fd/*\"]\n"
    );
    let file = write_file(&env, "tend.toml", &text);
    let mut up = Up::start(&env, &["-f", file.to_str().unwrap()]);
    up.wait_ready();
    let first = env.pid("wide").unwrap();
    std::fs::write(tree.join("d299/f9.txt"), "changed").unwrap();
    env.wait_new_pid("wide", first);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait(), 0, "{}", up.err());
    let log = env.daemon_log();
    assert!(log.contains("watching files"), "{log}");
    // /proc/1/fd: unreadable to anyone but root and pid 1's owner; as root, watchable
    // only if inotify supports procfs directories, which it may: either way no crash.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(log.contains("/proc/1/fd"), "{log}");
    }
}

/// The pid namespace of process `pid` (the target of /proc/PID/ns/pid).
fn pid_ns(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Every process of the namespace `ns` (seen from outside): (pid, state letter).
fn processes_in(ns: &Path) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid_ns(pid).as_deref() != Some(ns) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        out.push((pid, state));
    }
    out
}

/// `tend up --init` as PID 1 of a private pid namespace (`unshare -fp --mount-proc`).
fn up_as_pid1(env: &Env, file: &Path) -> (Up, i32, PathBuf) {
    let mut c = Command::new("unshare");
    c.args(["-fp", "--mount-proc", TEND, "--home"])
        .arg(env.home())
        .current_dir(env.work())
        .env_remove("TEND_HOME")
        .stdin(Stdio::null());
    let up = Up::start_cmd(c, env.work(), &["--init", "-f", file.to_str().unwrap()]);
    // unshare forks: tend is its child, PID 1 inside.
    let unshare = up.pid();
    let mut tend = None;
    assert!(wait_until(Duration::from_secs(30), || {
        tend = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
        tend.is_some()
    }));
    let tend = tend.unwrap();
    let ns = pid_ns(tend).unwrap();
    assert_ne!(Some(&ns), pid_ns(std::process::id() as i32).as_ref());
    (up, tend, ns)
}

/// As PID 1: 100 grandchildren orphaned by a service and 100 processes orphaned inside
/// the namespace from outside its tree (they re-parent to PID 1 itself) are all reaped:
/// no zombie is left; SIGTERM stops everything and the exit status is 0; nothing of
/// the namespace is left.
#[test]
fn pid1_reaps_orphans_and_forwards_sigterm() {
    if !util::require_root(
        "up::pid1_reaps_orphans_and_forwards_sigterm",
        "create a pid namespace",
    ) || !util::require_tool("unshare")
        || !util::require_tool("nsenter")
    {
        return;
    }
    let env = Env::new();
    let text = format!(
        r#"
[services.spawner]
cmd = ["sh", "-c", "for i in $(seq 100); do (sleep 0.5 &); done; echo orphaned; exec {FIXTURE}"]

[services.app]
cmd = ["{FIXTURE}", "--marker", "app"]
required = true
"#
    );
    let file = write_file(&env, "tend.toml", &text);
    let (mut up, tend, ns) = up_as_pid1(&env, &file);
    up.wait_ready();
    assert!(
        up.out().contains("spawner | orphaned")
            || wait_until(Duration::from_secs(10), || up
                .out()
                .contains("spawner | orphaned"))
    );
    // 100 more, whose parent (a shell entered from outside) exits at once: their
    // reaper is the namespace's init, `tend up` itself.
    let status = Command::new("nsenter")
        .args(["-t", &tend.to_string(), "-p", "-m", "--", "sh", "-c"])
        .arg("for i in $(seq 100); do sleep 0.5 & done")
        .status()
        .unwrap();
    assert!(status.success());
    // Once every sleep has ended (0.5 s each), no zombie: each was reaped.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let p = processes_in(&ns);
            !p.iter().any(|(_, s)| s == "Z") && p.len() < 20
        }),
        "left in the namespace: {:?}",
        processes_in(&ns)
    );
    // (A process is a zombie for the moment between its exit and its reaping, so this
    // is not asserted over a window: that all 200 ended and fewer than 20 processes,
    // none a zombie, are left proves each was reaped.)
    // SIGTERM to PID 1 (from outside: a handler is installed, so it is delivered).
    // SAFETY: kill with plain integers; `tend` is the namespace's init, alive.
    unsafe {
        libc::kill(tend, libc::SIGTERM);
    }
    assert_eq!(up.wait(), 0, "stderr: {}", up.err());
    assert!(
        wait_until(Duration::from_secs(30), || processes_in(&ns).is_empty()),
        "{:?}",
        processes_in(&ns)
    );
    let ev = events(&env);
    assert_eq!(count(&ev, "app", "stop"), 1, "{ev:?}");
    assert_eq!(count(&ev, "spawner", "stop"), 1, "{ev:?}");
}

/// As PID 1, the end of a `required` service ends the run with that service's status.
#[test]
fn pid1_exits_with_a_required_service_status() {
    if !util::require_root(
        "up::pid1_exits_with_a_required_service_status",
        "create a pid namespace",
    ) || !util::require_tool("unshare")
    {
        return;
    }
    let env = Env::new();
    let text = format!(
        r#"
[services.main]
cmd = ["{FIXTURE}", "--exit-after", "1500", "--exit-code", "3"]
required = true
restart = "never"

[services.side]
cmd = ["{FIXTURE}"]
"#
    );
    let file = write_file(&env, "tend.toml", &text);
    let (mut up, _tend, ns) = up_as_pid1(&env, &file);
    assert_eq!(up.wait(), 3, "stderr: {}", up.err());
    assert!(up.err().contains("main exited"), "{}", up.err());
    assert!(
        wait_until(Duration::from_secs(30), || processes_in(&ns).is_empty()),
        "{:?}",
        processes_in(&ns)
    );
}

/// The limit on inotify watches reached (set to 5 in a user namespace of the test's
/// own, `/proc/sys/user/max_inotify_watches`, so nothing else on the machine is
/// touched): the daemon names the limit in its log and goes on; `up` runs and stops as
/// usual.
#[test]
fn the_inotify_watch_limit_is_a_warning() {
    if !util::require_tool("unshare") {
        return;
    }
    let probe = Command::new("unshare")
        .args([
            "-Ur",
            "sh",
            "-c",
            "echo 5 > /proc/sys/user/max_inotify_watches",
        ])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        util::not_run("cannot set the inotify limit in a user namespace");
        return;
    }
    let env = Env::new();
    for d in 0..50 {
        std::fs::create_dir_all(env.work().join(format!("tree/d{d}"))).unwrap();
    }
    let text = format!("[services.w]\ncmd = [\"{FIXTURE}\"]\nwatch = [\"tree/**/*.txt\"]\n");
    let file = write_file(&env, "tend.toml", &text);
    let mut c = Command::new("unshare");
    c.args([
        "-Ur",
        "sh",
        "-c",
        "echo 5 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"",
        TEND,
        "--home",
    ])
    .arg(env.home())
    .current_dir(env.work())
    .env_remove("TEND_HOME")
    .stdin(Stdio::null());
    let mut up = Up::start_cmd(c, env.work(), &["-f", file.to_str().unwrap()]);
    up.wait_ready();
    assert!(
        wait_until(Duration::from_secs(30), || env
            .daemon_log()
            .contains("the limit on inotify watches is reached")),
        "{}",
        env.daemon_log()
    );
    let pid = env.pid("w").unwrap();
    assert!(alive(pid));
    up.signal(libc::SIGINT);
    assert_eq!(up.wait(), 0, "{}", up.err());
    assert!(!alive(pid));
}

/// A second Ctrl-C kills at once: a service that ignores SIGTERM, with a stop timeout of
/// ten minutes, is killed and `up` exits well within that.
#[test]
fn a_second_ctrl_c_kills_at_once() {
    let env = Env::new();
    let text = format!(
        "[services.stubborn]\ncmd = [\"{FIXTURE}\", \"--ignore-term\", \"--grandchild\"]\n\
         stop_timeout = \"10m\"\n"
    );
    let file = write_file(&env, "tend.toml", &text);
    let mut up = Up::start(&env, &["-f", file.to_str().unwrap()]);
    up.wait_ready();
    let pid = env.pid("stubborn").unwrap();
    up.signal(libc::SIGINT);
    assert!(wait_until(Duration::from_secs(30), || up
        .err()
        .contains("stopping every service")));
    // Still running: it ignores SIGTERM (over 1 s).
    assert!(holds_for(Duration::from_secs(1), || alive(pid)));
    up.signal(libc::SIGINT);
    // Within the test's 60 s deadline, far under the 10 minutes of the stop timeout.
    assert_eq!(up.wait(), 0, "{}", up.err());
    assert!(up.err().contains("killing every service"), "{}", up.err());
    assert!(!alive(pid));
    let ev = events(&env);
    let (_, _, detail) = ev
        .iter()
        .find(|(s, k, _)| s == "stubborn" && k == "exit")
        .expect("an exit event");
    assert!(detail.contains("signal KILL"), "{ev:?}");
}

/// `--tui`: `tend top` shows the services `up` started; `q` ends the view, everything
/// is stopped, the terminal is given back, and `up` exits 0.
#[test]
fn tui_shows_top_and_q_stops_everything() {
    let env = Env::new();
    let file = write_file(
        &env,
        "tend.toml",
        &format!("[services.shown]\ncmd = [\"{FIXTURE}\"]\n"),
    );
    let Some(t) = crate::top::Tmux::start_command(
        &env,
        &format!("up --tui -f '{}'", file.display()),
        100,
        30,
    ) else {
        return;
    };
    t.wait("the service running", |s| {
        crate::top::row_has(s, "shown", "running")
    });
    let pid = env.pid("shown").unwrap();
    t.keys(&["q"]);
    crate::top::assert_restored(&t);
    assert!(!alive(pid));
    assert!(t.screen().contains("tend: up: stopped"), "{}", t.screen());
}

/// A Procfile is run as it is (`./Procfile` when there is no `./tend.toml`), and SIGHUP
/// to `up` reaches every service.
#[test]
fn a_procfile_runs_and_sighup_is_forwarded() {
    let env = Env::new();
    write_file(
        &env,
        "Procfile",
        "web: trap 'echo web got HUP' HUP; echo web up; while :; do sleep 0.1; done\n\
         worker: trap 'echo worker got HUP' HUP; echo worker up; while :; do sleep 0.1; done\n",
    );
    let mut up = Up::start(&env, &[]);
    up.wait_ready();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let o = up.out();
            o.contains("web    | web up") && o.contains("worker | worker up")
        }),
        "{}",
        up.out()
    );
    up.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(30), || {
            let o = up.out();
            o.contains("web    | web got HUP") && o.contains("worker | worker got HUP")
        }),
        "{}\n{}",
        up.out(),
        up.err()
    );
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait(), 0, "{}", up.err());
}

/// `watch` works under a plain `tend daemon` too, and a bad pattern is refused by
/// `add` with one line (exit 2), nothing stored.
#[test]
fn watch_under_the_daemon_and_bad_patterns() {
    let env = Env::new();
    let out = env.tend(&["add", "bad", "--watch", "src/[", "--", FIXTURE]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.starts_with("tend: invalid --watch: "),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1);
    assert_eq!(env.tend(&["status", "bad"]).code, 4);

    std::fs::create_dir(env.work().join("conf")).unwrap();
    env.add_fixture("svc", &["--watch", "conf/*.toml"], &[]);
    env.ok(&["daemon"]);
    env.ok(&["start", "svc"]);
    let first = env.pid("svc").unwrap();
    // Created after the daemon began watching: a new file matches too.
    assert!(wait_until(Duration::from_secs(30), || env
        .daemon_log()
        .contains("watching files")));
    std::fs::write(env.work().join("conf/app.toml"), "x = 1").unwrap();
    let second = env.wait_new_pid("svc", first);
    assert_ne!(first, second);
    // Not matched: another extension.
    std::fs::write(env.work().join("conf/notes.txt"), "x").unwrap();
    assert!(holds_for(Duration::from_secs(2), || env.pid("svc") == Some(second)));

    // A pattern whose directory does not exist yet: its nearest existing ancestor is
    // watched, and the directory joins the watch once created. (The file is written
    // again until the restart: one written before the new directory's watch was added
    // is, rightly, not seen.)
    env.ok(&["edit", "svc", "--watch", "later/sub/*.toml"]);
    env.ok(&["restart", "svc"]);
    let third = env.pid("svc").unwrap();
    std::fs::create_dir_all(env.work().join("later/sub")).unwrap();
    let mut n = 0;
    assert!(wait_until(Duration::from_secs(30), || {
        n += 1;
        std::fs::write(env.work().join("later/sub/a.toml"), n.to_string()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        env.pid("svc").is_some_and(|p| p != third)
    }));
}

/// The daemon `up` started is killed (SIGKILL): `up` notices, stops every service
/// itself, says so, and exits 1; nothing is left running.
#[test]
fn the_daemon_killed_under_up() {
    let env = Env::new();
    let file = write_file(&env, "tend.toml", &THREE.replace("FIXTURE", FIXTURE));
    let mut up = Up::start(&env, &["-f", file.to_str().unwrap()]);
    up.wait_ready();
    let running = pids(&env, &["db", "web", "worker"]);
    assert_eq!(running.len(), 3);
    let daemon = env.daemon_pid().expect("the daemon runs");
    // SAFETY: kill with plain integers; the pid was just read from the held lock.
    unsafe {
        libc::kill(daemon, libc::SIGKILL);
    }
    assert_eq!(up.wait(), 1, "{}", up.err());
    assert!(
        up.err().contains("the daemon ended unexpectedly"),
        "{}",
        up.err()
    );
    for pid in running {
        assert!(!alive(pid), "pid {pid} still runs");
    }
}
