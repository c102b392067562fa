//! Issue 11: services described in a file (`apply`, `export`, `import`), env files,
//! dependency order, readiness (`start --wait`) and the daemon's health checks.

use std::path::Path;
use std::time::Duration;

use crate::util::{alive, dump, read, wait_until, Env, FIXTURE};

/// Deadline for anything that happens on its own (a check, a restart).
const LONG: Duration = Duration::from_secs(20);

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The port accepts connections now (the fixture never closes its listener, so a port
/// found open right after tend said `ready` was open when it said so).
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A TOML string.
fn q(s: &str) -> String {
    toml_quote(s)
}

fn toml_quote(s: &str) -> String {
    format!("{:?}", s)
}

fn fixture_cmd(args: &str) -> String {
    q(&format!("{FIXTURE} {args}"))
}

fn names(env: &Env) -> Vec<String> {
    let out = env.ok(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn apply_is_idempotent_and_changes_only_what_the_file_owns() {
    let env = Env::new();
    env.add_fixture("manual", &[], &[]);
    let file = env.work().join("tend.toml");
    write(
        &file,
        &format!(
            "[services.a]\ncmd = {}\n\n[services.b]\ncmd = {}\nstop_timeout = \"2s\"\n",
            fixture_cmd("--marker a"),
            fixture_cmd("--marker b")
        ),
    );
    let dry = env.ok(&["apply", "--dry-run"]);
    assert!(
        dry.stdout.contains("a: add") && dry.stdout.contains("b: add"),
        "{dry:?}"
    );
    assert_eq!(names(&env), ["manual"], "a dry run changes nothing");

    let first = env.ok(&["apply"]);
    assert!(first.stdout.contains("2 added"), "{first:?}");
    assert!(!first.stdout.contains("manual"), "{first:?}");
    let before = dump(&env.db());
    let again = env.ok(&["apply"]);
    assert!(
        again.stdout.contains("a: unchanged") && again.stdout.contains("0 added, 0 changed"),
        "{again:?}"
    );
    assert_eq!(dump(&env.db()), before, "a second apply writes nothing");

    // A change to a running service: kept until restarted, unless --restart-changed.
    env.ok(&["start", "a"]);
    let pid = env.pid("a").unwrap();
    write(
        &file,
        &format!("[services.a]\ncmd = {}\n", fixture_cmd("--marker a2")),
    );
    let changed = env.ok(&["apply"]);
    assert!(
        changed
            .stdout
            .contains("a: change command; running: keeps the old definition"),
        "{changed:?}"
    );
    assert!(changed.stdout.contains("b: remove"), "{changed:?}");
    assert_eq!(env.pid("a"), Some(pid));
    assert_eq!(
        names(&env),
        ["a", "manual"],
        "b (owned) removed, manual kept"
    );

    write(
        &file,
        &format!("[services.a]\ncmd = {}\n", fixture_cmd("--marker a3")),
    );
    env.ok(&["apply", "--restart-changed"]);
    let new = env.pid("a").unwrap();
    assert_ne!(new, pid, "restarted with the new definition");
    assert!(!alive(pid));

    // --prune removes what the file does not own, stopping it first.
    env.ok(&["start", "manual"]);
    let pruned = env.ok(&["apply", "--prune"]);
    assert!(
        pruned
            .stdout
            .contains("manual: remove (running: stopped first)"),
        "{pruned:?}"
    );
    assert_eq!(names(&env), ["a"]);
}

#[test]
fn a_bad_file_changes_nothing() {
    let env = Env::new();
    let file = env.work().join("tend.toml");
    write(&file, "[services.keep]\ncmd = \"sleep 5\"\n");
    env.ok(&["apply"]);
    env.add_fixture("hand", &[], &[]);
    let before = dump(&env.db());
    let good = "[services.keep]\ncmd = \"sleep 6\"\n";
    for (text, line, word) in [
        (format!("{good}[services.x]\ncmd = \"true\"\nstop_timeout = \"soon\"\n"), 5, "invalid duration"),
        (format!("{good}[services.x]\ncmd = \"true\"\nrestrat = \"always\"\n"), 5, "unknown key \"restrat\""),
        (format!("{good}[services.x]\ncmd = \"true\"\ncwd = \"/no/such/dir\"\n"), 5, "/no/such/dir"),
        (format!("{good}[services.x]\ncmd = \"true\"\nrequires = [\"ghost\"]\n"), 5, "ghost, which is not defined"),
        (format!("{good}[services.x]\ncmd = \"true\"\nrequires = [\"y\"]\n[services.y]\ncmd = \"true\"\nafter = [\"x\"]\n"), 5, "dependency cycle"),
        (format!("{good}[services.x]\ncmd = 'unterminated\n"), 4, ""),
        (format!("{good}[services.x]\ncmd = \"echo 'oops\"\n"), 4, "unbalanced quotes"),
        (format!("{good}[services.x]\ncmd = \"true\"\nready = {{ tcp = 0 }}\n"), 5, "not a port"),
    ] {
        write(&file, &text);
        let out = env.tend(&["apply"]);
        assert_eq!(out.code, 2, "{text}\n{out:?}");
        assert!(
            out.stderr.starts_with(&format!("tend: tend.toml:{line}: ")) && out.stderr.contains(word),
            "{text}\n{out:?}"
        );
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
        assert_eq!(dump(&env.db()), before, "{text}: the state changed");
    }
    let missing = env.tend(&["apply", "-f", "nope.toml"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("nope.toml"), "{missing:?}");
    assert_eq!(dump(&env.db()), before);
}

#[test]
fn export_round_trips_through_apply() {
    let env = Env::new();
    let port = free_port();
    let envf = env.work().join("app.env");
    write(&envf, "A=1\n");
    env.ok(&[
        "add",
        "web",
        "--stop-signal",
        "INT",
        "--stop-timeout",
        "1500ms",
        "--restart",
        "always",
        "--autostart",
        "--log-max-size",
        "1M",
        "--env",
        "X=two words",
        "--env-file",
        "app.env",
        "--ready",
        &format!("tcp={port} timeout=5s"),
        "--health",
        "cmd='true' every=3s failures=2",
        "--",
        FIXTURE,
        "--marker",
        "it's",
    ]);
    env.ok(&["add", "db", "-o", "db.out", "--cmd", "sleep 10"]);
    env.ok(&["edit", "web", "--requires", "db", "--after", "db"]);
    let exported = env.ok(&["export"]).stdout;
    let file = env.work().join("exported.toml");
    write(&file, &exported);

    // The same home: nothing to change (the file takes the services over).
    let before = env.ok(&["list", "--json"]).stdout;
    let same = env.ok(&["apply", "-f", "exported.toml"]);
    assert!(
        same.stdout
            .contains("0 added, 0 changed, 0 removed, 2 unchanged"),
        "{same:?}"
    );
    assert!(same.stdout.contains("taken over"), "{same:?}");
    assert_eq!(env.ok(&["list", "--json"]).stdout, before);

    // Another home: the same definitions, and the same export.
    let other = Env::new();
    other.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(
        other.ok(&["export"]).stdout,
        exported.replace(
            &env.home().join("logs").display().to_string(),
            &other.home().join("logs").display().to_string(),
        )
    );
}

#[test]
fn env_file_is_read_at_every_start() {
    let env = Env::new();
    let envf = env.work().join(".env");
    write(&envf, "# secrets\nTOKEN=\"first value\"\nexport OTHER=x\n");
    env.add_fixture(
        "svc",
        &["--env-file", ".env", "--env", "OTHER=wins"],
        &["--print-env", "TOKEN", "--print-env", "OTHER"],
    );
    env.ok(&["start", "svc"]);
    let log = env.log_path("svc");
    assert!(wait_until(Duration::from_secs(10), || read(&log).contains("ENV OTHER")));
    assert!(
        read(&log).contains("ENV TOKEN=first value"),
        "{}",
        read(&log)
    );
    assert!(
        read(&log).contains("ENV OTHER=wins"),
        "--env wins over the file"
    );
    write(&envf, "TOKEN=second\n");
    env.ok(&["restart", "svc"]);
    assert!(wait_until(Duration::from_secs(10), || read(&log)
        .contains("ENV TOKEN=second")));

    env.ok(&["stop", "svc"]);
    std::fs::remove_file(&envf).unwrap();
    let before = dump(&env.db());
    let out = env.tend(&["start", "svc"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("svc: env file")
            && out.stderr.contains(".env")
            && out.stderr.contains("no such file"),
        "{out:?}"
    );
    assert_eq!(dump(&env.db()), before);
}

/// The order services were started in, by their `start` events.
fn start_events(env: &Env) -> Vec<String> {
    let out = env.ok(&["events", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "start" || e["kind"] == "stop")
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap(),
                e["service"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_chain_of_three_starts_in_order_and_stops_in_reverse() {
    let env = Env::new();
    env.add_fixture("c", &[], &[]);
    env.add_fixture("a", &["--requires", "b"], &[]);
    env.add_fixture("b", &["--requires", "c"], &[]);
    env.add_fixture("z", &["--after", "a"], &[]);
    let out = env.ok(&["start", "a"]);
    let order: Vec<&str> = out
        .stdout
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(order, ["c", "b", "a"], "{out:?}");
    assert!(env.pid("z").is_none(), "`after` does not pull a service in");
    env.ok(&["stop", "--all"]);
    assert_eq!(
        start_events(&env),
        ["start c", "start b", "start a", "stop a", "stop b", "stop c"]
    );
    let all = env.ok(&["start", "--all"]);
    let order: Vec<&str> = all
        .stdout
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(order, ["c", "b", "a", "z"], "{all:?}");
    let stop = env.ok(&["stop", "--all"]);
    let order: Vec<&str> = stop
        .stdout
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(order, ["z", "a", "b", "c"], "{stop:?}");
}

#[test]
fn a_requirement_that_cannot_start_keeps_its_dependant_down() {
    let env = Env::new();
    env.ok(&["add", "db", "--", "/no/such/program"]);
    env.add_fixture("api", &["--requires", "db"], &[]);
    let out = env.tend(&["start", "api"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("db: no such program"), "{out:?}");
    assert!(
        out.stderr
            .contains("api: not started: its requirement db did not start"),
        "{out:?}"
    );
    assert!(env.pid("api").is_none());
}

#[test]
fn cycles_are_refused_naming_the_cycle() {
    let env = Env::new();
    env.add_fixture("a", &["--requires", "b"], &[]);
    env.add_fixture("b", &["--after", "c"], &[]);
    let before = dump(&env.db());
    let out = env.tend(&["add", "c", "--requires", "a", "--", FIXTURE]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("dependency cycle: a -> b -> c -> a"),
        "{out:?}"
    );
    assert_eq!(dump(&env.db()), before);
    env.add_fixture("c", &[], &[]);
    let before = dump(&env.db());
    let out = env.tend(&["edit", "c", "--after", "a"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("dependency cycle"), "{out:?}");
    assert_eq!(dump(&env.db()), before);
}

fn state(env: &Env, name: &str) -> String {
    env.status_json(name)["state"].as_str().unwrap().to_string()
}

#[test]
fn each_kind_of_ready_check_against_a_real_listener() {
    let env = Env::new();
    // tcp: the fixture binds after 300 ms.
    let port = free_port();
    env.add_fixture(
        "tcp",
        &["--ready", &format!("tcp={port} timeout=20s")],
        &["--sleep", "300", "--listen", &port.to_string()],
    );
    let out = env.ok(&["start", "tcp", "--wait"]);
    assert!(out.stdout.contains("tcp: ready"), "{out:?}");
    assert!(listening(port), "ready only once listening");
    assert_eq!(state(&env, "tcp"), "running");

    // http: a real HTTP server.
    let port = free_port();
    env.ok(&[
        "add",
        "http",
        "--ready",
        &format!("http=http://127.0.0.1:{port}/ timeout=30s"),
        "--",
        "python3",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &port.to_string(),
    ]);
    let out = env.ok(&["start", "http", "--wait"]);
    assert!(out.stdout.contains("http: ready"), "{out:?}");

    // cmd: a command exiting 0 once the service wrote its pid file.
    let pidfile = env.work().join("svc.pid");
    env.add_fixture(
        "cmd",
        &["--ready", &format!("cmd='test -s {}'", pidfile.display())],
        &["--sleep", "200", "--pidfile", pidfile.to_str().unwrap()],
    );
    let out = env.ok(&["start", "cmd", "--wait", "20s"]);
    assert!(out.stdout.contains("cmd: ready"), "{out:?}");
    assert!(pidfile.exists());

    // log: a line the service writes; a line from an earlier run does not count.
    env.add_fixture(
        "log",
        &["--ready", "log='^STARTED pid=[0-9]+ up and ready$'"],
        &["--sleep", "200", "--marker", "up and ready"],
    );
    env.ok(&["start", "log", "--wait"]);
    env.ok(&["stop", "log"]);
    env.ok(&["start", "log"]);
    assert_eq!(
        state(&env, "log"),
        "starting",
        "the earlier run's line is not this one's"
    );
    let out = env.ok(&["start", "log", "--wait"]);
    assert!(out.stdout.contains("log: ready"), "{out:?}");
    assert_eq!(
        read(&env.log_path("log")).matches("up and ready").count(),
        2,
        "ready only once the running instance wrote its own line"
    );
    assert_eq!(state(&env, "log"), "running");
}

#[test]
fn a_service_is_starting_until_ready_and_wait_gives_up_at_its_timeout() {
    let env = Env::new();
    let port = free_port();
    env.add_fixture("never", &["--ready", &format!("tcp={port}")], &[]);
    env.ok(&["start", "never"]);
    let st = env.status_json("never");
    assert_eq!(st["state"], "starting", "{st}");
    let list = env.ok(&["list"]).stdout;
    assert!(list.contains("starting"), "{list}");
    let out = env.tend(&["start", "never", "--wait", "300ms"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("not ready after 300ms"), "{out:?}");
    assert!(env.pid("never").is_some(), "left running");
}

fn exits_with_3(env: &Env) {
    env.add_fixture(
        "bad",
        &["--restart", "never"],
        &["--lines", "3", "--exit-after", "150", "--exit-code", "3"],
    );
    let out = env.tend(&["start", "bad", "--wait"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("code 3"), "{out:?}");
    assert!(out.stderr.contains("line 2"), "the end of its log: {out:?}");
    assert!(!out.stdout.contains("ready"), "{out:?}");
}

#[test]
fn wait_reports_a_service_that_exits_with_3_without_a_daemon() {
    exits_with_3(&Env::new());
}

#[test]
fn wait_reports_a_service_that_exits_with_3_through_the_daemon() {
    let env = Env::new();
    env.ok(&["daemon"]);
    exits_with_3(&env);
    assert!(env.daemon_pid().is_some());
}

#[test]
fn import_maps_procfile_and_supervisord_and_lists_the_rest() {
    let env = Env::new();
    write(
        &env.work().join("Procfile"),
        "# web and a worker\nweb: echo \"port $PORT\" && sleep 1\nworker: sleep 2\n",
    );
    let out = env.ok(&["import", "Procfile"]);
    write(&env.work().join("tend.toml"), &out.stdout);
    env.ok(&["apply"]);
    assert_eq!(names(&env), ["web", "worker"]);
    let st = env.status_json("web");
    assert_eq!(st["argv"][0], "/bin/sh");
    assert_eq!(st["cwd"], env.work().to_str().unwrap());

    write(
        &env.work().join("supervisord.conf"),
        "[supervisord]\nlogfile=/tmp/x\n\n[program:api]\ncommand=sleep 30\n\
         directory=%(here)s\nenvironment=A=\"1,2\",B=b\nautorestart=true\nstartsecs=2\n\
         stopsignal=INT\nstopwaitsecs=3\nstdout_logfile=%(here)s/api.log\n\
         redirect_stderr=true\nnumprocs=2\npriority=5\n",
    );
    let out = env.ok(&["import", "supervisord.conf"]);
    for skipped in ["numprocs = 2", "priority = 5", "[supervisord] logfile"] {
        assert!(out.stderr.contains(skipped), "{skipped}: {out:?}");
    }
    write(&env.work().join("sv.toml"), &out.stdout);
    env.ok(&["apply", "-f", "sv.toml"]);
    let st = env.status_json("api");
    assert_eq!(st["restart"], "always");
    assert_eq!(st["stop_signal"], "INT");
    assert_eq!(st["stop_timeout_ms"], 3000);
    assert_eq!(st["autostart"], true, "supervisord's default");
    assert_eq!(st["env"]["A"], "1,2");
    assert_eq!(st["ready"]["grace"], "2s");
    let log = env.work().join("api.log");
    assert_eq!(st["stdout"], log.to_str().unwrap());
    assert_eq!(st["stderr"], log.to_str().unwrap());
}

/// Processes whose command line contains `marker`.
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

fn events_of(env: &Env, name: &str) -> String {
    env.ok(&["events", name]).stdout
}

#[test]
fn failing_health_checks_restart_the_service_through_the_daemon() {
    let env = Env::new();
    let flag = env.work().join("healthy");
    // One line per check run, so the test knows checks ran (and passed) meanwhile.
    let runs = env.work().join("runs");
    write(&flag, "");
    env.add_fixture(
        "svc",
        &[
            "--restart",
            "on-failure",
            "--health",
            &format!(
                "cmd='echo run >> {}; test -e {} || {{ echo gone-missing; exit 1; }}' every=100ms failures=3",
                runs.display(),
                flag.display()
            ),
        ],
        &[],
    );
    let checks = || read(&runs).lines().count();
    env.ok(&["daemon"]);
    env.ok(&["start", "svc"]);
    let pid = env.pid("svc").unwrap();
    // Healthy: left alone while five checks pass.
    let before = checks();
    assert!(
        wait_until(LONG, || {
            assert_eq!(env.pid("svc"), Some(pid), "{}", events_of(&env, "svc"));
            checks() >= before + 5
        }),
        "the health check did not run"
    );
    std::fs::remove_file(&flag).unwrap();
    // Healthy again as soon as it is found unhealthy: the next instance passes.
    assert!(
        wait_until(LONG, || events_of(&env, "svc").contains("unhealthy")),
        "{}",
        events_of(&env, "svc")
    );
    write(&flag, "");
    let new = env.wait_new_pid("svc", pid);
    assert!(!alive(pid));
    let ev = events_of(&env, "svc");
    assert!(
        ev.contains("unhealthy")
            && ev.contains("3 health check(s) failed in a row")
            && ev.contains("gone-missing"),
        "{ev}"
    );
    assert!(
        ev.contains("signal KILL"),
        "the exit went through the policy: {ev}"
    );
    // The new instance stays while five checks pass.
    let before = checks();
    assert!(
        wait_until(LONG, || {
            assert_eq!(env.pid("svc"), Some(new), "{}", events_of(&env, "svc"));
            checks() >= before + 5
        }),
        "the health check did not run"
    );
}

#[test]
fn a_hanging_health_check_is_killed_at_its_timeout() {
    let env = Env::new();
    // A duration no other process uses: both the shell and its `sleep` carry it on their
    // command lines (the `; true` keeps the shell from exec'ing `sleep` in its place).
    let marker = format!("1000.{}", std::process::id());
    env.add_fixture(
        "svc",
        &[
            "--restart",
            "always",
            "--restart-delay",
            "0",
            "--health",
            &format!("cmd='sleep {marker}; true' timeout=300ms every=100ms failures=2"),
        ],
        &[],
    );
    env.ok(&["daemon"]);
    env.ok(&["start", "svc"]);
    let pid = env.pid("svc").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || with_marker(&marker).len() >= 2),
        "the check never ran"
    );
    env.wait_new_pid("svc", pid);
    let ev = events_of(&env, "svc");
    assert!(ev.contains("killed after its timeout (300ms)"), "{ev}");
    env.ok(&["stop", "svc"]);
    // Every check command was killed with its group: none is left behind.
    assert!(
        wait_until(Duration::from_secs(5), || with_marker(&marker).is_empty()),
        "left behind: {:?}",
        with_marker(&marker)
    );
    // The daemon answered all along.
    env.ok(&["daemon", "status"]);
}

#[test]
fn the_daemon_marks_a_starting_service_ready() {
    let env = Env::new();
    let port = free_port();
    env.add_fixture(
        "svc",
        &["--ready", &format!("tcp={port}")],
        &["--sleep", "300", "--listen", &port.to_string()],
    );
    env.ok(&["daemon"]);
    env.ok(&["start", "svc"]);
    assert!(
        wait_until(Duration::from_secs(10), || state(&env, "svc") == "running"),
        "{}",
        env.status_json("svc")
    );
    assert!(listening(port));
}

#[test]
fn the_daemon_autostarts_in_dependency_order() {
    let env = Env::new();
    env.add_fixture("web", &["--autostart", "--requires", "api"], &[]);
    env.add_fixture("api", &["--requires", "db"], &[]);
    env.add_fixture("db", &[], &[]);
    env.ok(&["daemon"]);
    assert!(
        wait_until(Duration::from_secs(10), || ["web", "api", "db"]
            .iter()
            .all(|n| env.pid(n).is_some())),
        "{}",
        env.daemon_log()
    );
    assert_eq!(start_events(&env), ["start db", "start api", "start web"]);
}

#[test]
fn wait_through_the_daemon_waits_for_the_ready_check() {
    let env = Env::new();
    let port = free_port();
    env.add_fixture(
        "svc",
        &["--ready", &format!("tcp={port} timeout=20s")],
        &["--sleep", "300", "--listen", &port.to_string()],
    );
    env.ok(&["daemon"]);
    let out = env.ok(&["start", "svc", "--wait"]);
    assert!(out.stdout.contains("svc: ready"), "{out:?}");
    assert!(listening(port), "ready only once listening");
    assert_eq!(state(&env, "svc"), "running");
}
