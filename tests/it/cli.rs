//! The command line as a person meets it: usage errors, completions, man pages, human
//! output that cannot be forged (snapshots in `snapshots/`, so a change of wording is a
//! reviewed diff: `SNAPSHOTS=overwrite cargo test --test it cli::` rewrites them), `--json`
//! everywhere, paths that would block, the state home's permissions, `doctor`, and the
//! life cycle of logs and events.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use snapbox::{file, Assert, Redactions};

use crate::util::*;

/// Compares `actual` with a snapshot; the home, work directory and fixture paths are
/// shown as `[HOME]`, `[WORK]`, `[FIXTURE]`, and `[..]` in a snapshot matches anything
/// within a line (pids, times).
fn snap(env: &Env) -> Assert {
    let mut r = Redactions::new();
    r.insert("[HOME]", env.home().to_string_lossy().into_owned())
        .unwrap();
    r.insert("[WORK]", env.work().to_string_lossy().into_owned())
        .unwrap();
    r.insert("[FIXTURE]", FIXTURE.to_string()).unwrap();
    Assert::new().action_env("SNAPSHOTS").redact_with(r)
}

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}\nstderr: {}", out.stdout, out.stderr))
}

#[test]
fn usage_errors_keep_clap_detail_with_the_tend_prefix() {
    let env = Env::new();
    let out = env.tend(&["add"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .starts_with("tend: the following required arguments were not provided:"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("<NAME>"),
        "missing argument named: {out:?}"
    );
    assert!(!out.stderr.contains("error:"), "one prefix only: {out:?}");

    let out = env.tend(&["lsit"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out
        .stderr
        .starts_with("tend: unrecognized subcommand 'lsit'"));
    assert!(
        out.stderr.contains("similar") && out.stderr.contains("'list'"),
        "a suggestion: {out:?}"
    );

    let out = env.tend(&["list", "--jsn"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("'--json'"), "{out:?}");
    // Nothing was created for a command that never ran.
    assert!(!env.db().exists());
}

#[test]
fn completions_for_every_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = env.ok(&["completions", shell]);
        assert!(
            out.stdout.contains("doctor") && out.stdout.contains("completions"),
            "{shell}: {}",
            out.stdout
        );
    }
    // bash really loads it and registers it for `tend`.
    let script = env.work().join("tend.bash");
    std::fs::write(&script, env.ok(&["completions", "bash"]).stdout).unwrap();
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!("source {} && complete -p tend", script.display()));
    let out = run(c);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("tend"), "{out:?}");
    let out = env.tend(&["completions", "tcsh"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(!env.db().exists(), "completions need no state home");
}

#[test]
fn man_pages_for_tend_and_its_subcommands() {
    let env = Env::new();
    let out = env.ok(&["man"]);
    assert!(out.stdout.contains(".TH tend 1"), "{}", out.stdout);
    assert!(out.stdout.contains("doctor"));
    let dir = env.work().join("man1");
    let out = env.ok(&["man", "--dir", dir.to_str().unwrap()]);
    for page in [
        "tend.1",
        "tend-add.1",
        "tend-doctor.1",
        "tend-daemon-status.1",
    ] {
        let text = read(&dir.join(page));
        assert!(text.contains(".TH"), "{page}: {text}");
        assert!(out.stdout.contains(page), "{out:?}");
    }
    let add = read(&dir.join("tend-add.1"));
    assert!(add.contains("stdout") && add.contains("home"), "{add}");
    if Command::new("man").arg("--version").output().is_ok() {
        let mut c = Command::new("man");
        c.arg("-l")
            .arg(dir.join("tend-add.1"))
            .env("MANPAGER", "cat");
        let out = run(c);
        assert_eq!(out.code, 0, "{out:?}");
    }
}

#[test]
fn human_output_snapshots() {
    let env = Env::without_cgroups();
    snap(&env).eq(env.ok(&["list"]).stdout, file!["snapshots/list_empty.txt"]);
    env.add_fixture("web", &["--env", "MODE=prod", "--restart", "always"], &[]);
    env.ok(&["add", "ticker", "--cmd", "sh -c 'sleep 30'", "--autostart"]);
    env.ok(&["start", "web"]);
    snap(&env).eq(env.ok(&["list"]).stdout, file!["snapshots/list.txt"]);
    snap(&env).eq(
        env.ok(&["status", "web"]).stdout,
        file!["snapshots/status_running.txt"],
    );
    let out = env.tend(&["status", "ticker"]);
    assert_eq!(out.code, 3);
    snap(&env).eq(out.stdout, file!["snapshots/status_stopped.txt"]);
    snap(&env).eq(env.ok(&["events"]).stdout, file!["snapshots/events.txt"]);
    snap(&env).eq(
        env.ok(&["config", "list"]).stdout,
        file!["snapshots/config_list.txt"],
    );
    env.ok(&["stop", "web"]);
}

/// A newline, tab or escape sequence in a command, path, environment value or detail is
/// shown escaped: it can never forge a row or repaint the terminal.
#[test]
fn control_characters_cannot_forge_rows() {
    let env = Env::new();
    let forged = "x\nevil  running  1  9d  /bin/login";
    env.ok(&[
        "add",
        "victim",
        "--env",
        "K=a\u{1b}[2Jb",
        "--",
        "sh",
        "-c",
        forged,
    ]);
    let list = env.ok(&["list"]).stdout;
    assert_eq!(list.lines().count(), 2, "header + one row: {list}");
    assert!(list.contains(r"x\nevil  running"), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("evil")), "{list}");

    let status = env.tend(&["status", "victim"]).stdout;
    assert!(!status.contains('\u{1b}'), "{status:?}");
    assert!(status.contains(r"\x1b[2J"), "{status}");
    assert!(!status.lines().any(|l| l.starts_with("evil")), "{status}");

    let events = env.ok(&["events"]).stdout;
    assert_eq!(events.lines().count(), 2, "{events}");
    assert!(events.contains(r"\nevil"), "{events}");

    // --json keeps the text exactly.
    let v = json(&env.ok(&["list", "--json"]));
    assert_eq!(v[0]["argv"][2], forged);
}

/// Run `tend ARGS` under a pseudo-terminal `cols` wide (util-linux `script`); returns what
/// the terminal showed, without carriage returns.
fn on_tty(env: &Env, cols: u32, envs: &[(&str, &str)], args: &str) -> String {
    let mut c = Command::new("script");
    c.arg("-qec")
        .arg(format!(
            "stty cols {cols} rows 50; {TEND} --home {} {args}",
            env.home().display()
        ))
        .arg("/dev/null")
        .current_dir(env.work())
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = run(c);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout.replace('\r', "")
}

#[test]
fn terminal_output_is_cut_to_width_and_coloured() {
    let env = Env::new();
    let long = "y".repeat(300);
    env.add_fixture("web", &[], &["--marker", &long]);
    env.ok(&["start", "web"]);

    let shown = on_tty(&env, 60, &[], "list");
    let plain = strip_ansi(&shown);
    assert!(plain.lines().all(|l| l.chars().count() <= 60), "{plain}");
    assert!(plain.contains('…'), "{plain}");
    assert!(shown.contains("\u{1b}[32mrunning\u{1b}[0m"), "{shown:?}");

    let shown = on_tty(&env, 60, &[("NO_COLOR", "1")], "list");
    assert!(!shown.contains('\u{1b}'), "NO_COLOR: {shown:?}");

    let wide = on_tty(&env, 60, &[], "list --wide");
    assert!(strip_ansi(&wide).contains(&long), "{wide}");
    let status = on_tty(&env, 60, &[], "status web");
    assert!(
        strip_ansi(&status).lines().all(|l| l.chars().count() <= 60),
        "{status}"
    );
    // Not a terminal: whole lines, no colour.
    let piped = env.ok(&["list"]).stdout;
    assert!(piped.contains(&long) && !piped.contains('\u{1b}'));
    env.ok(&["stop", "web"]);
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn json_on_every_listing_and_json_errors() {
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    let v = json(&env.ok(&["config", "list", "--json"]));
    let keys: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"postgres.url") && keys.contains(&"events.keep_per_service"));
    assert!(v[0]["value"].is_null() && v[0]["description"].is_string());

    let out = env.tend(&["status", "nosuch", "--json"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.starts_with("tend: unknown service: nosuch"));
    let v = json(&out);
    assert_eq!(v["error"]["code"], 4);
    assert_eq!(v["error"]["message"], "unknown service: nosuch");

    let v = json(&env.ok(&["events", "--json"]));
    assert_eq!(v[0]["kind"], "added");
    assert!(env.ok(&["events", "--help"]).stdout.contains("--json"));
    let help = env.ok(&["events", "--help"]).stdout;
    let line = help.lines().find(|l| l.contains("--json")).unwrap();
    assert!(line.contains("JSON"), "--json has a help text: {line}");
    let v = json(&env.ok(&["doctor", "--json"]));
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["check"].is_string() && c["status"].is_string() && c["message"].is_string()));
    let out = env.tend(&["daemon", "status", "--json"]);
    assert_eq!(out.code, 3);
    assert_eq!(json(&out)["running"], false);
}

#[test]
fn fifos_and_devices_are_refused_not_waited_on() {
    let env = Env::new();
    let fifo = env.work().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let f = fifo.to_str().unwrap();
    for opt in ["--stdout", "--stderr", "--stdin"] {
        let out = env.tend(&["add", "f", opt, f, "--", "true"]);
        assert_eq!(out.code, 2, "{opt}: {out:?}");
        assert!(out.stderr.contains("FIFO"), "{opt}: {out:?}");
    }
    let out = env.tend(&["add", "f", "--stdout", "/dev/tty", "--", "true"]);
    if Path::new("/dev/tty").exists() {
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("device"), "{out:?}");
    }
    env.ok(&["add", "n", "--stdout", "/dev/null", "--", "sleep", "30"]);
    // A FIFO put in place after `add`: `start` refuses it at once and records nothing.
    let log = env.work().join("out.log");
    env.ok(&[
        "add",
        "later",
        "--stdout",
        log.to_str().unwrap(),
        "--",
        "sleep",
        "30",
    ]);
    let _ = std::fs::remove_file(&log);
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = env.tend(&["start", "later"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("FIFO"), "{out:?}");
    assert!(env.pid("later").is_none());
    let out = env.tend(&["edit", "n", "--stdin", f]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn state_home_writable_by_others_and_relative_tend_home() {
    let env = Env::new();
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.tend(&["list"]);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(
        out.stderr.contains("writable by others")
            && out
                .stderr
                .contains(&format!("chmod go-w {}", env.home().display())),
        "{out:?}"
    );
    assert!(!env.db().exists(), "nothing written into it");
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o770)).unwrap();
    assert!(env.tend(&["list"]).stderr.contains("writable by the group"));
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o700)).unwrap();
    env.ok(&["list"]);

    // A relative TEND_HOME is refused; a relative --home is made absolute once.
    let mut c = Command::new(TEND);
    c.arg("list")
        .env("TEND_HOME", "rel")
        .current_dir(env.work());
    let out = run(c);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("TEND_HOME") && out.stderr.contains("absolute"));
    assert!(!env.work().join("rel").exists());
    let mut c = Command::new(TEND);
    c.args(["--home", "rel", "add", "x", "--", "true"])
        .env_remove("TEND_HOME")
        .current_dir(env.work());
    assert_eq!(run(c).code, 0);
    assert!(env.work().join("rel/tend.db").exists());
}

#[test]
fn remove_deletes_logs_unless_kept() {
    let env = Env::new();
    env.add_fixture("web", &[], &["--marker", "first-life"]);
    env.ok(&["start", "web"]);
    assert!(wait_until(Duration::from_secs(10), || read(
        &env.log_path("web")
    )
    .contains("first-life")));
    let out = env.ok(&["remove", "web", "--stop"]);
    assert!(out.stdout.contains("log file(s) deleted"), "{out:?}");
    assert!(!env.log_path("web").exists());
    env.ok(&["add", "web", "--", "true"]);
    let logs = env.ok(&["logs", "web"]).stdout;
    assert!(!logs.contains("first-life"), "{logs}");

    env.add_fixture("api", &[], &["--marker", "kept"]);
    env.ok(&["start", "api"]);
    assert!(wait_until(Duration::from_secs(10), || read(
        &env.log_path("api")
    )
    .contains("kept")));
    env.ok(&["remove", "api", "--stop", "--keep-logs"]);
    assert!(read(&env.log_path("api")).contains("kept"));
}

#[test]
fn events_are_kept_by_count_and_by_age() {
    let env = Env::new();
    env.ok(&["add", "a", "--", "true"]);
    env.ok(&["add", "b", "--", "true"]);
    env.ok(&["config", "set", "events.keep_per_service", "5"]);
    for i in 0..12 {
        env.ok(&["edit", "a", "--env", &format!("N={i}")]);
    }
    let count = |name: &str| {
        json(&env.ok(&["events", name, "--json", "-n", "1000"]))
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count("a"), 5);
    assert_eq!(count("b"), 1, "another service's events are its own");
    let v = json(&env.ok(&["events", "a", "--json"]));
    assert!(v[4]["detail"].is_string());
    assert_eq!(
        env.tend(&["config", "set", "events.keep_for", "soon"]).code,
        2
    );

    // By age: once the oldest event is past 2 s, the next event deletes the old ones.
    env.ok(&["config", "set", "events.keep_for", "2s"]);
    env.ok(&["config", "set", "events.keep_per_service", "0"]);
    let mut i = 100;
    let ok = wait_until(Duration::from_secs(20), || {
        i += 1;
        env.ok(&["edit", "a", "--env", &format!("N={i}")]);
        count("b") == 0
    });
    assert!(ok, "b's event was never aged out");
    assert!(count("a") >= 1);
}

#[test]
fn doctor_checks_and_fails_when_something_is_wrong() {
    let env = Env::new();
    env.ok(&["add", "a", "--", "true"]);
    let out = env.ok(&["doctor"]);
    for check in [
        "state home",
        "database",
        "integrity",
        "journal",
        "wal",
        "daemon",
        "systemd",
        "postgres",
        "containment",
    ] {
        assert!(
            out.stdout.lines().any(|l| l[6..].starts_with(check)),
            "{check}: {}",
            out.stdout
        );
    }
    // As root here tend may create cgroups; as another user it falls back and says why.
    let line = out
        .stdout
        .lines()
        .find(|l| l[6..].starts_with("containment"))
        .unwrap();
    assert!(
        line.contains("cgroup /") || line.contains("process-group ("),
        "{line}"
    );

    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o775)).unwrap();
    let out = env.tend(&["doctor", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let v = json(&out);
    let home = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "state home")
        .unwrap();
    assert_eq!(home["status"], "fail");
    assert!(home["fix"].as_str().unwrap().starts_with("chmod go-w"));
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o700)).unwrap();

    // A journal mode other than WAL is a warning (the next command switches it back).
    {
        let conn = rusqlite::Connection::open(env.db()).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
    }
    let out = env.ok(&["doctor"]);
    let journal = out.stdout.lines().find(|l| l[6..].starts_with("journal"));
    assert!(
        journal.is_some_and(|l| l.starts_with("warn") && l.contains("delete")),
        "{}",
        out.stdout
    );
    env.ok(&["list"]);

    // The systemd user unit: installed, enabled, lingering (looked up under
    // $XDG_CONFIG_HOME and /var/lib/systemd/linger/$USER).
    let config = env.work().join("config");
    let units = config.join("systemd/user");
    std::fs::create_dir_all(units.join("default.target.wants")).unwrap();
    let doctor_with = |user: &str| {
        let mut c = env.cmd();
        c.args(["doctor"])
            .env("XDG_CONFIG_HOME", &config)
            .env("USER", user);
        run(c).stdout
    };
    let line = |out: &str, check: &str| -> String {
        out.lines()
            .find(|l| l[6..].starts_with(check))
            .unwrap_or_default()
            .to_string()
    };
    let out = doctor_with("nobody-tend-test");
    assert!(line(&out, "systemd").starts_with("info"), "{out}");
    std::fs::write(units.join("tend.service"), "[Service]\n").unwrap();
    let out = doctor_with("nobody-tend-test");
    assert!(
        line(&out, "systemd").starts_with("warn") && line(&out, "systemd").contains("not enabled"),
        "{out}"
    );
    std::os::unix::fs::symlink(
        units.join("tend.service"),
        units.join("default.target.wants/tend.service"),
    )
    .unwrap();
    let out = doctor_with("nobody-tend-test");
    assert!(line(&out, "systemd").starts_with("ok"), "{out}");
    assert!(
        line(&out, "linger").contains("loginctl enable-linger nobody-tend-test"),
        "{out}"
    );

    // A database that is not one.
    std::fs::write(env.db(), vec![0x42u8; 8192]).unwrap();
    let _ = std::fs::remove_file(env.home().join("tend.db-wal"));
    let _ = std::fs::remove_file(env.home().join("tend.db-shm"));
    let out = env.tend(&["doctor"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("integrity")),
        "{}",
        out.stdout
    );
}

/// The `-wal` file deleted under a running daemon: every command fails, but the daemon is
/// alive, so `daemon status` says "alive but unhealthy" (never "not running", never Rust
/// debug text), `doctor` names the process and how to put the WAL back, and `daemon stop`
/// stops it.
#[test]
fn deleted_wal_under_a_live_daemon() {
    let env = Env::new();
    env.ok(&["add", "a", "--", "sleep", "30"]);
    env.ok(&["daemon"]);
    let dpid = env.daemon_pid().expect("daemon pid");
    std::fs::remove_file(env.home().join("tend.db-wal")).unwrap();
    let out = env.tend(&["daemon", "status"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .starts_with(&format!("daemon: alive but unhealthy (pid {dpid})")),
        "{out:?}"
    );
    assert!(!out.stdout.contains("Error {") && !out.stderr.contains("Error {"));
    let v = json(&env.tend(&["daemon", "status", "--json"]));
    assert_eq!(v["running"], true);
    assert_eq!(v["healthy"], false);
    assert_eq!(v["pid"], dpid);

    let out = env.tend(&["doctor"]);
    assert_eq!(out.code, 1);
    let wal = out
        .stdout
        .lines()
        .find(|l| l[6..].starts_with("wal"))
        .unwrap();
    assert!(
        wal.starts_with("FAIL") && wal.contains(&format!("cp /proc/{dpid}/fd/")),
        "{wal}"
    );
    let daemon = out
        .stdout
        .lines()
        .find(|l| l[6..].starts_with("daemon"))
        .unwrap();
    assert!(daemon.contains("alive but unhealthy"), "{daemon}");

    let out = env.tend(&["daemon", "stop"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("stopped (pid {dpid})")),
        "{out:?}"
    );
    assert!(wait_until(Duration::from_secs(10), || !alive(dpid)));
}
