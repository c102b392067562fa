//! Hooks (`on_start`, `on_exit`, `on_failed`, `on_unhealthy`): run by the real daemon for
//! real exits, with the event on stdin and in the environment; a hook that hangs is
//! killed whole; a crash loop stays bounded and every exit is counted; a hook never
//! touches its service; a killed daemon's running hook is cleaned up by the next one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::util::{alive, holds_for, read, require_root, wait_until, Env};

/// Generous: the suite runs in parallel on 2 busy cores.
const LONG: Duration = Duration::from_secs(60);

/// `MAX_RUNNING` in `daemon::hooks`.
const MAX_RUNNING: usize = 4;
/// `MAX_WAITING` in `daemon::hooks`.
const MAX_WAITING: usize = 4;

fn start_daemon(env: &Env) {
    let out = env.ok(&["daemon"]);
    assert!(out.stdout.starts_with("daemon: started"), "{out:?}");
}

/// The service's events as JSON objects, oldest first.
fn events(env: &Env, name: &str) -> Vec<Value> {
    let out = env.ok(&["events", name, "--json", "-n", "10000"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("events --json is JSON");
    v.as_array().expect("an array").clone()
}

fn of_kind(env: &Env, name: &str, kind: &str) -> Vec<Value> {
    events(env, name)
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// A hook command that keeps its stdin as `DIR/EVENT-ID.json` and its `TEND_*`
/// environment as `DIR/EVENT-ID.env`, written whole and then renamed, so a file that
/// exists is complete.
fn keeper(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "f={d}/$TEND_EVENT-$TEND_EVENT_ID; cat > $f.part && env | grep ^TEND_ | sort > $f.envpart \
         && mv $f.envpart $f.env && mv $f.part $f.json"
    )
}

/// The JSON files a [`keeper`] wrote for `event`, parsed, with their environment.
fn kept(dir: &Path, event: &str) -> Vec<(Value, Vec<String>)> {
    let mut out: Vec<(i64, Value, Vec<String>)> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{event}-")))
        })
        .map(|p| {
            let v: Value = serde_json::from_str(&read(&p))
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", p.display(), read(&p)));
            let env = read(&p.with_extension("env"))
                .lines()
                .map(String::from)
                .collect();
            (v["id"].as_i64().unwrap_or(0), v, env)
        })
        .collect();
    out.sort_by_key(|(id, _, _)| *id);
    out.into_iter().map(|(_, v, e)| (v, e)).collect()
}

/// A marker no other process has on its command line: a `sleep` of it is ours.
fn marker(variant: u32) -> String {
    format!("4321.{}0{variant}", std::process::id())
}

/// The `sleep` processes of `marker` (the shell that started them has it on its command
/// line too, and is not counted).
fn sleeps(marker: &str) -> Vec<i32> {
    with_marker(marker)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
        })
        .collect()
}

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

fn hook_leaves(env: &Env) -> Vec<PathBuf> {
    let Some(dir) = env.cgroup().map(|c| c.join("hooks")) else {
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

/// A service that reaches its start limit: `on_start` for each start, `on_exit` with
/// the exit code for each exit, `on_failed` exactly once, each with its event as JSON on
/// stdin and `TEND_*` in its environment. A kill by signal sets `TEND_SIGNAL`, not
/// `TEND_EXIT_CODE`; an unhealthy instance runs the home-wide `on_unhealthy`.
#[test]
fn each_hook_fires_with_its_event_on_stdin_and_in_env() {
    let env = Env::new();
    let dir = env.work().join("kept");
    std::fs::create_dir(&dir).unwrap();
    let hook = keeper(&dir);
    env.add_fixture(
        "crash",
        &[
            "--restart",
            "on-failure",
            "--restart-delay",
            "50ms",
            "--start-limit",
            "3",
            "--start-limit-interval",
            "1h",
            "--on-start",
            &hook,
            "--on-exit",
            &hook,
            "--on-failed",
            &hook,
        ],
        &["--exit-after", "200", "--exit-code", "3"],
    );
    env.add_fixture(
        "sick",
        &[
            "--restart",
            "never",
            "--health",
            "cmd=false every=200ms failures=2",
            "--on-exit",
            &hook,
        ],
        &[],
    );
    env.add_fixture("victim", &["--restart", "never", "--on-exit", &hook], &[]);
    env.ok(&["config", "set", "hooks.on_unhealthy", &hook]);
    start_daemon(&env);
    env.start_brief(&["crash"]);
    env.ok(&["start", "sick", "victim"]);
    let victim_pid = env.pid("victim").expect("victim runs");
    env.ok(&["signal", "KILL", "victim"]);

    assert!(
        wait_until(LONG, || kept(&dir, "failed").len() == 1
            && kept(&dir, "unhealthy").len() == 1
            && kept(&dir, "exit").len() >= 5),
        "hooks ran: start {} exit {} failed {} unhealthy {}\nevents: {:?}\ndaemon.log:\n{}",
        kept(&dir, "start").len(),
        kept(&dir, "exit").len(),
        kept(&dir, "failed").len(),
        kept(&dir, "unhealthy").len(),
        events(&env, "crash"),
        env.daemon_log()
    );
    // Nothing more comes for events already handled: on_failed once, over 2 s.
    assert!(holds_for(Duration::from_secs(2), || kept(&dir, "failed")
        .len()
        == 1));

    // crash: 3 starts, 3 exits with code 3, one failed; each hook's JSON names its
    // recorded event.
    let starts = of_kind(&env, "crash", "start").len() + of_kind(&env, "crash", "restart").len();
    assert_eq!(starts, 3);
    let crash_exits = of_kind(&env, "crash", "exit");
    assert_eq!(crash_exits.len(), 3);
    let by_service = |event: &str, service: &str| -> Vec<(Value, Vec<String>)> {
        kept(&dir, event)
            .into_iter()
            .filter(|(v, _)| v["service"] == service)
            .collect()
    };
    let runs = by_service("start", "crash");
    assert_eq!(runs.len(), 3, "{runs:?}");
    for (v, e) in &runs {
        assert_eq!(v["event"], "start");
        assert!(v["pid"].as_i64().unwrap() > 1, "{v}");
        assert!(v["kind"] == "start" || v["kind"] == "restart", "{v}");
        assert!(e.contains(&"TEND_SERVICE=crash".to_string()), "{e:?}");
        assert!(e.contains(&"TEND_EVENT=start".to_string()), "{e:?}");
        assert!(e.contains(&"TEND_INSTANCE=0".to_string()), "{e:?}");
        assert!(e.contains(&format!("TEND_PID={}", v["pid"])), "{e:?}");
    }
    let runs = by_service("exit", "crash");
    assert_eq!(runs.len(), 3, "{runs:?}");
    for ((v, e), recorded) in runs.iter().zip(&crash_exits) {
        assert_eq!(v["id"], recorded["id"], "{v} vs {recorded}");
        assert_eq!(v["detail"], recorded["detail"]);
        assert_eq!(v["exit_code"], 3, "{v}");
        assert_eq!(v["merged"], 0, "{v}");
        assert!(v.get("signal").is_none(), "{v}");
        assert!(e.contains(&"TEND_EXIT_CODE=3".to_string()), "{e:?}");
        assert!(!e.iter().any(|l| l.starts_with("TEND_SIGNAL=")), "{e:?}");
    }
    let (failed, e) = &kept(&dir, "failed")[0];
    assert_eq!(failed["service"], "crash");
    assert_eq!(failed["kind"], "failed");
    assert!(
        failed["detail"].as_str().unwrap().contains("start limit"),
        "{failed}"
    );
    assert_eq!(failed["id"], of_kind(&env, "crash", "failed")[0]["id"]);
    assert!(e.contains(&"TEND_EVENT=failed".to_string()), "{e:?}");

    // victim: killed by a signal.
    let runs = by_service("exit", "victim");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (v, e) = &runs[0];
    assert_eq!(v["signal"], "KILL", "{v}");
    assert_eq!(v["pid"], victim_pid);
    assert!(v.get("exit_code").is_none(), "{v}");
    assert!(e.contains(&"TEND_SIGNAL=KILL".to_string()), "{e:?}");
    assert!(!e.iter().any(|l| l.starts_with("TEND_EXIT_CODE=")), "{e:?}");

    // sick: the home-wide on_unhealthy, then its own on_exit for the kill.
    let (v, e) = &kept(&dir, "unhealthy")[0];
    assert_eq!(v["service"], "sick");
    assert_eq!(v["home_default"], true);
    assert!(e.contains(&"TEND_EVENT=unhealthy".to_string()), "{e:?}");
    assert!(
        wait_until(LONG, || by_service("exit", "sick").len() == 1),
        "sick's on_exit did not run"
    );
    // No hook failed.
    for s in ["crash", "sick", "victim"] {
        assert!(of_kind(&env, s, "hook-failed").is_empty(), "{s}");
    }
}

/// A hook that hangs (and whose child ignores SIGTERM) is killed whole at its timeout,
/// a `hook-failed` event says so, and its service keeps running: not restarted, not
/// signalled.
#[test]
fn a_hook_that_hangs_is_killed_whole_at_its_timeout() {
    let env = Env::new();
    hanging_hook(&env, 1);
}

/// The same without cgroups: the hook's session is the boundary.
#[test]
fn a_hook_that_hangs_is_killed_whole_without_cgroups() {
    let env = Env::without_cgroups();
    hanging_hook(&env, 2);
}

fn hanging_hook(env: &Env, variant: u32) {
    let mark = marker(variant);
    let ran = env.work().join("ran");
    let hook = format!(
        "echo $$ > {}; (trap '' TERM; exec sleep {mark}) & trap '' TERM; sleep {mark}",
        ran.display()
    );
    env.add_fixture("web", &["--on-start", &hook, "--hook-timeout", "1s"], &[]);
    start_daemon(env);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").expect("web runs");
    assert!(
        wait_until(LONG, || sleeps(&mark).len() == 2),
        "the hook did not start its two sleeps: {:?}\n{}",
        sleeps(&mark),
        env.daemon_log()
    );
    assert!(
        wait_until(LONG, || !of_kind(env, "web", "hook-failed").is_empty()),
        "no hook-failed event: {:?}",
        events(env, "web")
    );
    let failed = &of_kind(env, "web", "hook-failed")[0];
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .starts_with("on_start: killed at its timeout of 1s"),
        "{failed}"
    );
    assert!(
        wait_until(LONG, || with_marker(&mark).is_empty()),
        "left behind: {:?}",
        with_marker(&mark)
    );
    let sh: i32 = read(&ran).trim().parse().unwrap();
    assert!(!alive(sh));
    // The service was never touched: same pid, running, no restart or stop, over 1 s.
    assert!(holds_for(Duration::from_secs(1), || env.pid("web")
        == Some(pid)
        && alive(pid)));
    let kinds: Vec<String> = events(env, "web")
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["added", "start", "hook-failed"], "{kinds:?}");
    assert!(hook_leaves(env).is_empty(), "{:?}", hook_leaves(env));
}

/// A crash loop of several services while every hook is held back: exactly
/// `MAX_RUNNING` hooks run, each service's later exits wait in at most `MAX_WAITING`
/// runs (the last one absorbing the rest, with the count), and once the hooks may end,
/// every exit is in exactly one run (`1 + merged` summed over a service's runs equals
/// its `exit` events); never more than `MAX_RUNNING` at once, nor two of one service.
#[test]
fn a_crash_loop_runs_at_most_the_bound_and_counts_every_exit() {
    let env = Env::new();
    let log = env.work().join("runs.log");
    let go = env.work().join("go");
    // Each run notes its start, waits until the test lets it go, and notes its end: the
    // order of the lines shows how many ran at once.
    let hook = format!(
        "echo \"start $TEND_SERVICE $TEND_MERGED\" >> {l}; \
         while [ ! -e {g} ]; do sleep 0.05; done; echo \"end $TEND_SERVICE\" >> {l}",
        l = log.display(),
        g = go.display()
    );
    const STARTS: usize = 10;
    let names: Vec<String> = (0..6).map(|i| format!("loop{i}")).collect();
    for n in &names {
        env.add_fixture(
            n,
            &[
                "--restart",
                "always",
                "--restart-delay",
                "10ms",
                "--start-limit",
                &STARTS.to_string(),
                "--start-limit-interval",
                "1h",
                "--on-exit",
                &hook,
                "--hook-timeout",
                "10m",
            ],
            &["--exit-now", "1"],
        );
    }
    start_daemon(&env);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut args = vec!["start"];
    args.extend(&refs);
    let _ = env.tend(&args);
    let started = |text: &str| text.lines().filter(|l| l.starts_with("start ")).count();
    // Every service crashed all the way to `failed` while the hooks were held.
    assert!(
        wait_until(Duration::from_secs(120), || names
            .iter()
            .all(|n| !of_kind(&env, n, "failed").is_empty())),
        "the crash loops did not end\n{}",
        env.daemon_log()
    );
    for n in &names {
        assert_eq!(of_kind(&env, n, "exit").len(), STARTS, "{n}");
    }
    // Exactly the bound runs, no more, over 2 s.
    assert!(
        wait_until(LONG, || started(&read(&log)) == MAX_RUNNING),
        "{}",
        read(&log)
    );
    assert!(
        holds_for(Duration::from_secs(2), || started(&read(&log))
            == MAX_RUNNING),
        "{}",
        read(&log)
    );
    std::fs::write(&go, "").unwrap();
    let counted = |text: &str, name: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.strip_prefix("start "))
            .filter_map(|l| l.split_once(' '))
            .filter(|(s, _)| *s == name)
            .map(|(_, m)| m.trim().parse::<u64>().unwrap())
            .collect()
    };
    let settled = || {
        let text = read(&log);
        let ends = text.lines().filter(|l| l.starts_with("end ")).count();
        started(&text) == ends
            && names
                .iter()
                .all(|n| counted(&text, n).iter().map(|m| 1 + m).sum::<u64>() == STARTS as u64)
    };
    assert!(
        wait_until(Duration::from_secs(120), settled),
        "not settled\nruns:\n{}\ndaemon.log:\n{}",
        read(&log),
        env.daemon_log()
    );
    // Nothing more runs, over 1 s.
    let text = read(&log);
    assert!(holds_for(Duration::from_secs(1), || read(&log) == text));
    for n in &names {
        // MAX_WAITING waiting runs, the last of which absorbed every later exit, after
        // the first exit's run if that one had begun by the second exit.
        let merged = counted(&text, n);
        let runs = merged.len();
        assert!(
            runs == MAX_WAITING || runs == MAX_WAITING + 1,
            "{n}: {merged:?}\n{text}"
        );
        let mut want = vec![0; runs - 1];
        want.push((STARTS - runs) as u64);
        assert_eq!(merged, want, "{n}:\n{text}");
        assert!(of_kind(&env, n, "hook-failed").is_empty(), "{n}");
    }
    let (mut running, mut most) = (0usize, 0usize);
    let mut busy = std::collections::HashSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("start ") {
            let service = rest.split(' ').next().unwrap().to_string();
            assert!(
                busy.insert(service.clone()),
                "two runs of {service} at once"
            );
            running += 1;
            most = most.max(running);
        } else if let Some(service) = l.strip_prefix("end ") {
            busy.remove(service);
            running -= 1;
        }
    }
    assert!(most <= MAX_RUNNING, "{most} hooks ran at once:\n{text}");
    eprintln!(
        "{} exits ran on_exit {} time(s), at most {most} at once",
        names.len() * STARTS,
        started(&text)
    );
}

/// `tend daemon stop` while a hook runs and more wait: the running one is ended (killed
/// whole) and the waiting ones are not run, and `hook-failed` events account for every
/// exit they stood for.
#[test]
fn a_stopping_daemon_accounts_for_every_hook_it_does_not_run() {
    let env = Env::new();
    let mark = marker(4);
    let ran = env.work().join("ran");
    let hook = format!("echo run >> {}; trap '' TERM; sleep {mark}", ran.display());
    const STARTS: usize = 8;
    env.add_fixture(
        "crash",
        &[
            "--restart",
            "always",
            "--restart-delay",
            "10ms",
            "--start-limit",
            &STARTS.to_string(),
            "--start-limit-interval",
            "1h",
            "--on-exit",
            &hook,
            "--hook-timeout",
            "10m",
        ],
        &["--exit-now", "1"],
    );
    start_daemon(&env);
    let _ = env.tend(&["start", "crash"]);
    assert!(
        wait_until(LONG, || !of_kind(&env, "crash", "failed").is_empty()
            && !sleeps(&mark).is_empty()),
        "{:?}",
        events(&env, "crash")
    );
    assert_eq!(of_kind(&env, "crash", "exit").len(), STARTS);
    env.ok(&["daemon", "stop"]);
    // `on_exit: ended early (N event(s))...` and `on_exit: R run(s) not carried out (N
    // event(s))...`: the Ns add up to the exits.
    let accounted = || -> usize {
        of_kind(&env, "crash", "hook-failed")
            .iter()
            .filter_map(|e| {
                let d = e["detail"].as_str().unwrap();
                assert!(d.starts_with("on_exit: "), "{d}");
                let (_, rest) = d.split_once(" (")?;
                rest.split(' ').next()?.parse::<usize>().ok()
            })
            .sum()
    };
    assert!(
        wait_until(LONG, || accounted() == STARTS),
        "{} of {STARTS} exits accounted for: {:?}",
        accounted(),
        of_kind(&env, "crash", "hook-failed")
    );
    assert_eq!(lines(&ran), 1, "only the first run began");
    assert!(
        wait_until(LONG, || sleeps(&mark).is_empty()),
        "left behind: {:?}",
        sleeps(&mark)
    );
}

fn lines(path: &Path) -> usize {
    read(path).lines().count()
}

/// A hook whose program does not exist, and one whose output never ends: both are
/// recorded as `hook-failed` (with their output cut short), and the service's crash
/// restarts go on meanwhile as if there were no hook.
#[test]
fn a_failing_or_flooding_hook_blocks_nothing() {
    let env = Env::new();
    env.add_fixture(
        "missing",
        &[
            "--restart",
            "never",
            "--on-exit",
            "/nonexistent/notify-ops --now",
        ],
        &["--exit-after", "100", "--exit-code", "1"],
    );
    env.add_fixture(
        "flood",
        &[
            "--restart",
            "always",
            "--restart-delay",
            "50ms",
            "--start-limit",
            "0",
            "--on-start",
            "yes 'endless output'; cat /dev/zero",
            "--hook-timeout",
            "3s",
        ],
        &["--exit-after", "100"],
    );
    start_daemon(&env);
    env.start_brief(&["missing"]);
    env.start_brief(&["flood"]);
    assert!(
        wait_until(LONG, || !of_kind(&env, "missing", "hook-failed").is_empty()),
        "{:?}",
        events(&env, "missing")
    );
    let detail = of_kind(&env, "missing", "hook-failed")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.starts_with("on_exit: exited (code 127)") && detail.contains("not found"),
        "{detail}"
    );
    // While flood's first hook floods its pipes, flood keeps being restarted.
    assert!(
        wait_until(LONG, || of_kind(&env, "flood", "restart").len() >= 5),
        "{:?}",
        events(&env, "flood")
    );
    assert!(
        wait_until(LONG, || !of_kind(&env, "flood", "hook-failed").is_empty()),
        "{:?}",
        events(&env, "flood")
    );
    let detail = of_kind(&env, "flood", "hook-failed")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.starts_with("on_start: killed at its timeout of 3s"),
        "{detail}"
    );
    assert!(detail.len() < 8192, "{} bytes kept", detail.len());
    env.ok(&["stop", "flood"]);
    env.ok(&["daemon", "stop"]);
}

/// A daemon killed with SIGKILL while a hook runs: the hook keeps running in its cgroup
/// leaf until the next daemon comes up, which kills it whole and removes the leaf.
#[test]
fn a_killed_daemons_running_hook_is_ended_by_the_next_daemon() {
    if !require_root(
        "hooks::a_killed_daemons_running_hook_is_ended_by_the_next_daemon",
        "create cgroups on the machine's cgroup2 mount",
    ) {
        return;
    }
    let env = Env::new();
    let mark = marker(3);
    let hook = format!("(trap '' TERM; exec sleep {mark}) & trap '' TERM; sleep {mark}");
    env.add_fixture("web", &["--on-start", &hook, "--hook-timeout", "10m"], &[]);
    start_daemon(&env);
    env.ok(&["start", "web"]);
    assert!(
        wait_until(LONG, || sleeps(&mark).len() == 2),
        "the hook did not start: {}",
        env.daemon_log()
    );
    if hook_leaves(&env).is_empty() {
        crate::util::not_run("no cgroup containment here: hooks/run-* leaves were not made");
        return;
    }
    env.kill_daemon();
    // What the killed daemon ran is still there: nothing killed it yet.
    assert_eq!(sleeps(&mark).len(), 2);
    start_daemon(&env);
    assert!(
        wait_until(LONG, || with_marker(&mark).is_empty()),
        "left behind: {:?}",
        with_marker(&mark)
    );
    assert!(
        wait_until(LONG, || hook_leaves(&env).is_empty()),
        "{:?}",
        hook_leaves(&env)
    );
}

/// The hook settings as a person types them: checked (one `tend:` line, exit 2, nothing
/// stored), shown in `--json`, exported and applied back unchanged; `tend config` checks
/// its `hooks.*` keys.
#[test]
fn hook_settings_are_checked_and_round_trip() {
    let env = Env::new();
    env.add_fixture(
        "web",
        &[
            "--on-exit",
            "logger -t tend \"$TEND_SERVICE\"",
            "--hook-timeout",
            "2500ms",
        ],
        &[],
    );
    let before = env.ok(&["export"]).stdout;
    assert!(
        before.contains("on_exit = 'logger -t tend \"$TEND_SERVICE\"'")
            || before.contains("on_exit = \"logger -t tend \\\"$TEND_SERVICE\\\"\""),
        "{before}"
    );
    assert!(before.contains("hook_timeout = \"2500ms\""), "{before}");
    let json = env.status_json("web");
    assert_eq!(
        json["on_exit"], "logger -t tend \"$TEND_SERVICE\"",
        "{json}"
    );
    assert_eq!(json["hook_timeout_ms"], 2500, "{json}");

    // Hooks but no daemon: doctor warns that none fire.
    let doctor = env.tend(&["doctor"]);
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.contains("hooks"))
        .unwrap_or_else(|| panic!("no hooks line: {doctor:?}"));
    assert!(
        line.starts_with("warn") && line.contains("no daemon runs"),
        "{line}"
    );

    let long = "x".repeat(5000);
    for bad in [
        vec!["edit", "web", "--on-exit", long.as_str()],
        vec!["edit", "web", "--hook-timeout", "0"],
        vec!["edit", "web", "--hook-timeout", "soon"],
    ] {
        let out = env.tend(&bad);
        assert_eq!(out.code, 2, "{bad:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
        assert!(out.stderr.starts_with("tend: "), "{out:?}");
    }
    assert_eq!(env.ok(&["export"]).stdout, before);

    let file = env.work().join("tend.toml");
    std::fs::write(&file, &before).unwrap();
    env.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(env.ok(&["export"]).stdout, before);
    env.ok(&["edit", "web", "--on-exit", ""]);
    assert!(env.status_json("web")["on_exit"].is_null());

    for (key, value) in [
        ("hooks.timeout", "0"),
        ("hooks.timeout", "x"),
        ("hooks.on_exit", " "),
    ] {
        let out = env.tend(&["config", "set", key, value]);
        assert_ne!(out.code, 0, "{key}={value:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    }
    env.ok(&["config", "set", "hooks.timeout", "45s"]);
    assert_eq!(
        env.ok(&["config", "get", "hooks.timeout"]).stdout.trim(),
        "45s"
    );
}
