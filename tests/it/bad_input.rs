//! Bad input: every case gets one clear line on stderr, a documented exit code, and an unchanged database.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Names that break `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` and reach tend's own validation.
fn bad_names() -> Vec<String> {
    ["", "a b", "a/b", "é", ".x", &"x".repeat(65)]
        .map(String::from)
        .to_vec()
}

/// Asserts the failure contract: exit `code`, nothing on stdout, and exactly one stderr
/// line, starting with `tend: ` and containing every one of `needles`.
#[track_caller]
fn assert_fails(out: &Out, args: &[&str], code: i32, needles: &[&str]) {
    assert_eq!(
        out.code, code,
        "tend {args:?}: exit code\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    if args.contains(&"--json") {
        // A JSON caller gets the error as JSON on stdout too (besides the one line).
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("tend {args:?}: stdout is not JSON ({e}): {out:?}"));
        assert_eq!(v["error"]["code"], code, "tend {args:?}: {out:?}");
    } else {
        assert_eq!(
            out.stdout, "",
            "tend {args:?}: a failure prints nothing on stdout"
        );
    }
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "tend {args:?}: stderr must be exactly one line, got:\n{}",
        out.stderr
    );
    assert!(
        lines[0].starts_with("tend: "),
        "tend {args:?}: stderr must start with `tend: `, got: {}",
        lines[0]
    );
    for n in needles {
        assert!(
            lines[0].contains(n),
            "tend {args:?}: stderr should mention {n:?}, got: {}",
            lines[0]
        );
    }
}

/// Runs `tend ARGS`, which must fail as [`assert_fails`] describes without changing
/// anything in the (existing) database.
#[track_caller]
fn rejected(env: &Env, args: &[&str], code: i32, needles: &[&str]) {
    let before = dump(&env.db());
    let out = env.tend(args);
    assert_eq!(
        out.code, code,
        "tend {args:?}: exit code\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    assert_eq!(
        dump(&env.db()),
        before,
        "tend {args:?} changed the database"
    );
    assert_fails(&out, args, code, needles);
}

/// A fresh home whose database already holds one service (`keep`), so a failed
/// command has stored state it could wrongly change.
fn env_with_state() -> Env {
    let env = Env::new();
    env.ok(&["add", "keep", "--env", "A=1", "--", "true"]);
    env
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// `status` of an undefined service is LSB "unknown": exit 4.
#[test]
fn status_of_unknown_service_is_exit_4() {
    let env = env_with_state();
    rejected(
        &env,
        &["status", "nosuch"],
        4,
        &["unknown service", "nosuch"],
    );
    rejected(&env, &["status", "nosuch", "--json"], 4, &["nosuch"]);
}

/// Every other command that names an undefined service fails with exit 4 too.
#[test]
fn every_command_on_unknown_service_is_exit_4() {
    let env = env_with_state();
    let commands: [&[&str]; 9] = [
        &["start", "nosuch"],
        &["stop", "nosuch"],
        &["restart", "nosuch"],
        &["remove", "nosuch"],
        &["remove", "nosuch", "--stop"],
        &["edit", "nosuch"],
        &["edit", "nosuch", "--restart", "never"],
        &["logs", "nosuch"],
        &["logs", "nosuch", "-n", "5"],
    ];
    for args in commands {
        rejected(&env, args, 4, &["unknown service", "nosuch"]);
    }
}

/// Adding a name that exists is a conflict (exit 5) and keeps the first definition.
#[test]
fn duplicate_add_is_a_conflict_and_keeps_the_original() {
    let env = env_with_state();
    rejected(
        &env,
        &["add", "keep", "--env", "A=2", "--", "false"],
        5,
        &["keep", "already exists"],
    );
    let st = env.status_json("keep");
    assert_eq!(st["argv"], serde_json::json!(["true"]));
    assert_eq!(st["env"], serde_json::json!({"A": "1"}));
}

/// `add` refuses invalid names with exit 2, quoting the name.
#[test]
fn add_refuses_invalid_names() {
    let env = env_with_state();
    for name in bad_names() {
        let quoted = format!("{name:?}");
        rejected(
            &env,
            &["add", &name, "--", "true"],
            2,
            &["invalid service name", &quoted],
        );
    }
}

/// `start` and `status` refuse invalid names with exit 2 (not 4: the name could never
/// have been defined).
#[test]
fn start_and_status_refuse_invalid_names() {
    let env = env_with_state();
    let mut names = bad_names();
    names.push("-x".into());
    for name in &names {
        let quoted = format!("{name:?}");
        for cmd in ["start", "status"] {
            rejected(
                &env,
                &[cmd, "--", name],
                2,
                &["invalid service name", &quoted],
            );
        }
    }
}

/// `tend add -x`: a name that looks like an option is refused with exit 2 and nothing
/// stored, and — like every other error — reported as one `tend: ` line.
#[test]
fn add_refuses_option_like_name_with_one_tend_line() {
    let env = env_with_state();
    rejected(&env, &["add", "-x", "--", "true"], 2, &["-x"]);
}

/// Bad input is checked before the database is opened: an invalid name on a fresh home
/// creates neither the database nor anything else there.
#[test]
fn invalid_name_on_fresh_home_creates_nothing() {
    let env = Env::new();
    let args = ["add", "a b", "--", "true"];
    let out = env.tend(&args);
    assert_fails(&out, &args, 2, &["\"a b\""]);
    assert!(!env.db().exists(), "the database was created");
    let entries: Vec<_> = std::fs::read_dir(env.home()).unwrap().flatten().collect();
    assert!(entries.is_empty(), "the home was written to: {entries:?}");
}

/// `--cmd` with an unbalanced quote is refused with exit 2.
#[test]
fn unbalanced_quotes_are_refused() {
    let env = env_with_state();
    rejected(
        &env,
        &["add", "w", "--cmd", "echo 'oops"],
        2,
        &["unbalanced quotes", "echo 'oops"],
    );
}

/// A working directory that does not exist is refused at add time with exit 2.
#[test]
fn missing_cwd_is_refused_at_add() {
    let env = env_with_state();
    rejected(
        &env,
        &["add", "w", "--cwd", "/nonexistent/dir", "--", "true"],
        2,
        &["/nonexistent/dir"],
    );
}

/// A working directory deleted after add makes `start` fail (exit 1) naming it, with no
/// instance or event recorded.
#[test]
fn cwd_deleted_after_add_fails_start_and_records_nothing() {
    let env = env_with_state();
    let dir = env.work().join("gone");
    std::fs::create_dir(&dir).unwrap();
    env.add_fixture("w", &["--cwd", path_str(&dir)], &[]);
    std::fs::remove_dir(&dir).unwrap();
    rejected(&env, &["start", "w"], 1, &["w", path_str(&dir)]);
}

/// Log paths that cannot be created are refused at add time (exit 2), for stdout and
/// stderr alike: parent is a file, parent is missing, the path is a directory.
#[test]
fn unwritable_log_path_is_refused_at_add() {
    let env = env_with_state();
    let afile = env.work().join("afile");
    std::fs::write(&afile, "").unwrap();
    let paths = [
        afile.join("x.log"),
        env.work().join("missing").join("x.log"),
        env.work().to_path_buf(),
    ];
    for flag in ["-o", "-e", "--stdout", "--stderr"] {
        for p in &paths {
            let p = path_str(p);
            rejected(&env, &["add", "w", flag, p, "--", "true"], 2, &[p]);
        }
    }
}

/// A log directory replaced by a file after add makes `start` fail (exit 1) naming the
/// log path, with nothing recorded; for stdout and for stderr.
#[test]
fn log_dir_replaced_after_add_fails_start_and_records_nothing() {
    let env = env_with_state();
    for flag in ["-o", "-e"] {
        let dir = env.work().join(format!("logs{flag}"));
        std::fs::create_dir(&dir).unwrap();
        let log = dir.join("w.log");
        let name = format!("w{flag}");
        env.add_fixture(&name, &[flag, path_str(&log)], &[]);
        std::fs::remove_dir(&dir).unwrap();
        std::fs::write(&dir, "now a file").unwrap();
        rejected(&env, &["start", &name], 1, &[&name, path_str(&log)]);
    }
}

/// A program that does not exist: add only warns, but `start` fails with exit 1 and
/// "no such program", and no pid is recorded.
#[test]
fn missing_program_fails_start_and_records_no_pid() {
    let env = env_with_state();
    let out = env.tend(&["add", "w", "--cmd", "nosuchprog"]);
    assert_eq!(out.code, 0, "add only warns: {}", out.stderr);
    rejected(
        &env,
        &["start", "w"],
        1,
        &["w", "no such program: nosuchprog"],
    );
    let out = env.tend(&["status", "w", "--json"]);
    assert_eq!(out.code, 3, "not running: {}", out.stderr);
    let st: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(st["state"], "stopped");
    assert!(st["pid"].is_null(), "pid recorded: {st}");
}

/// A file that is not an SQLite database is refused (exit 6) by reading and writing
/// commands alike, and its bytes are left exactly as they were.
#[test]
fn garbage_database_is_refused_and_left_alone() {
    let env = Env::new();
    let garbage = "not a database\n".repeat(4096 / 15 + 1).into_bytes();
    std::fs::write(env.db(), &garbage).unwrap();
    let db = env.db();
    let commands: [&[&str]; 4] = [
        &["list"],
        &["status", "w"],
        &["add", "w", "--", "true"],
        &["start", "w"],
    ];
    for args in commands {
        let out = env.tend(args);
        assert_fails(&out, args, 6, &[path_str(&db)]);
        assert!(
            std::fs::read(&db).unwrap() == garbage,
            "tend {args:?} modified the file"
        );
    }
}

/// A database written by a newer tend (higher user_version) is refused with exit 6 and
/// a message naming the version, and is not touched.
#[test]
fn newer_schema_is_refused() {
    let env = env_with_state();
    rusqlite::Connection::open(env.db())
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let db = env.db();
    let commands: [&[&str]; 3] = [&["list"], &["add", "w", "--", "true"], &["start", "keep"]];
    for args in commands {
        rejected(&env, args, 6, &[path_str(&db), "newer", "99"]);
    }
}

/// While another process holds the write lock, a change fails with exit 6 and a
/// "locked" message after the busy timeout, instead of hanging; nothing is written.
#[test]
fn locked_database_fails_with_exit_6() {
    let env = env_with_state();
    let before = dump(&env.db());
    let holder = rusqlite::Connection::open(env.db()).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let args = ["add", "x", "--", "true"];
    // `run` fails the test if tend takes longer than its 60 s deadline.
    let out = env.tend(&args);
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert_fails(&out, &args, 6, &["locked", path_str(&env.db())]);
    assert_eq!(
        dump(&env.db()),
        before,
        "the locked add changed the database"
    );
}

/// A state home that cannot be created (its parent is a regular file) is exit 6, named
/// in the message; nothing is created.
#[test]
fn unusable_state_home_is_exit_6() {
    let env = Env::new();
    let afile = env.work().join("afile");
    std::fs::write(&afile, "").unwrap();
    for home in [afile.clone(), afile.join("home")] {
        let mut cmd = Command::new(TEND);
        cmd.arg("--home")
            .arg(&home)
            .args(["add", "w", "--", "true"])
            .env_remove("TEND_HOME")
            .current_dir(env.work())
            .stdin(Stdio::null());
        let out = run(cmd);
        assert_fails(
            &out,
            &["--home", path_str(&home), "add"],
            6,
            &[path_str(&home)],
        );
        assert_eq!(
            std::fs::read(&afile).unwrap(),
            b"",
            "the file was written to"
        );
    }
}

/// Malformed option values are refused with exit 2 by add and by edit.
#[test]
fn bad_option_values_are_refused() {
    let env = env_with_state();
    let cases = [
        ["--env", "NOEQUALS"],
        ["--env", "=value"],
        ["--stop-signal", "BOGUS"],
        ["--stop-signal", "KILL"],
        ["--stop-timeout", "soon"],
        ["--restart", "sometimes"],
    ];
    for [opt, value] in cases {
        rejected(
            &env,
            &["add", "w", opt, value, "--", "true"],
            2,
            &[opt, value],
        );
        rejected(&env, &["edit", "keep", opt, value], 2, &[opt, value]);
    }
}

/// `add` without any command, or with an empty `--cmd`, is refused with exit 2.
#[test]
fn add_without_a_command_is_refused() {
    let env = env_with_state();
    rejected(&env, &["add", "w"], 2, &["command"]);
    rejected(&env, &["add", "w", "--cmd", ""], 2, &["command"]);
    rejected(&env, &["add", "w", "--cmd", "   "], 2, &["command"]);
}

/// Removing a running service without --stop is a conflict (exit 5); it keeps running
/// and stays defined.
#[test]
fn remove_refuses_a_running_service() {
    let env = env_with_state();
    env.add_fixture("w", &[], &[]);
    env.ok(&["start", "w"]);
    let pid = env.pid("w").expect("w runs");
    rejected(&env, &["remove", "w"], 5, &["w", "running", "--stop"]);
    assert!(alive(pid), "the refused remove stopped the service");
    assert_eq!(env.pid("w"), Some(pid));
}

/// `remove --stop` stops a running service and then removes it.
#[test]
fn remove_with_stop_stops_and_removes() {
    let env = env_with_state();
    env.add_fixture("w", &[], &[]);
    env.ok(&["start", "w"]);
    let pid = env.pid("w").expect("w runs");
    env.ok(&["remove", "w", "--stop"]);
    assert!(
        wait_until(Duration::from_secs(10), || !alive(pid)),
        "pid {pid} survived remove --stop"
    );
    assert_eq!(env.tend(&["status", "w"]).code, 4, "w is still defined");
}

/// Runs `cmd` with its stdout on a pipe whose read end is already closed; returns the
/// exit code and stderr.
fn run_into_closed_pipe(mut cmd: Command) -> (i32, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    cmd.stdout(writer).stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("spawn tend"));
    let mut status = None;
    let done = wait_until(Duration::from_secs(60), || {
        status = child.0.try_wait().expect("try_wait");
        status.is_some()
    });
    assert!(done, "tend did not finish writing into a closed pipe");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.unwrap().code().unwrap_or(-1), stderr)
}

/// `tend list | head -0`: a reader that went away is not an error; exit 0, stderr quiet.
#[test]
fn list_into_closed_pipe_is_not_an_error() {
    let env = Env::new();
    for i in 0..200 {
        env.ok(&["add", &format!("svc-{i:03}"), "--", "true"]);
    }
    for args in [&["list"][..], &["list", "--json"], &["events"]] {
        let mut cmd = env.cmd();
        cmd.args(args);
        let (code, stderr) = run_into_closed_pipe(cmd);
        assert_eq!(
            code, 0,
            "tend {args:?} into a closed pipe; stderr: {stderr}"
        );
        assert_eq!(stderr, "", "tend {args:?} complained about the closed pipe");
    }
}

const SERVICE_KEYS: [&str; 18] = [
    "name",
    "state",
    "pid",
    "pgid",
    "started_at",
    "uptime_secs",
    "argv",
    "command",
    "cwd",
    "stdin",
    "stdout",
    "stderr",
    "env",
    "stop_signal",
    "stop_timeout_ms",
    "restart",
    "created_at",
    "updated_at",
];

/// Checks one service object of `list --json` / `status --json`.
#[track_caller]
fn check_service_json(v: &Value, name: &str, running: bool) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    for k in SERVICE_KEYS {
        assert!(obj.contains_key(k), "{name}: key {k} missing in {v}");
    }
    assert_eq!(v["name"], name);
    assert_eq!(v["state"], if running { "running" } else { "stopped" });
    for k in ["pid", "pgid", "uptime_secs"] {
        assert_eq!(v[k].is_u64(), running, "{name}: {k} = {}", v[k]);
    }
    assert_eq!(v["started_at"].is_string(), running, "{name}: started_at");
    if !running {
        for k in ["pid", "pgid", "started_at", "uptime_secs"] {
            assert!(v[k].is_null(), "{name}: {k} should be null, is {}", v[k]);
        }
    }
    let argv = v["argv"].as_array().expect("argv is an array");
    assert_eq!(argv[0], FIXTURE);
    assert!(argv.iter().all(Value::is_string));
    for k in [
        "command",
        "cwd",
        "stdin",
        "stdout",
        "stderr",
        "created_at",
        "updated_at",
    ] {
        assert!(v[k].is_string(), "{name}: {k} = {}", v[k]);
    }
    for k in ["created_at", "updated_at", "started_at"] {
        if let Some(t) = v[k].as_str() {
            assert!(t.ends_with('Z'), "{name}: {k} = {t} is not RFC 3339 UTC");
        }
    }
    assert!(v["env"].is_object(), "{name}: env = {}", v["env"]);
    assert_eq!(v["stop_signal"], "TERM");
    assert_eq!(v["stop_timeout_ms"], 10_000);
    assert_eq!(v["restart"], "on-failure");
}

/// An env with `up` running and `down` defined but stopped, both the fixture.
fn env_up_and_down() -> Env {
    let env = Env::new();
    env.add_fixture("down", &[], &[]);
    env.add_fixture("up", &[], &[]);
    env.ok(&["start", "up"]);
    env
}

/// `list --json` is an array with one documented object per service.
#[test]
fn list_json_shape() {
    let env = env_up_and_down();
    let out = env.ok(&["list", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("list --json is JSON");
    let items = v.as_array().expect("list --json is an array");
    assert_eq!(items.len(), 2);
    check_service_json(&items[0], "down", false);
    check_service_json(&items[1], "up", true);
    assert_eq!(items[1]["pid"].as_i64().map(|p| p as i32), env.pid("up"));
}

/// `status NAME --json` is one service object, with exit 0 running and 3 stopped.
#[test]
fn status_json_shape() {
    let env = env_up_and_down();
    let out = env.ok(&["status", "up", "--json"]);
    check_service_json(&serde_json::from_str(&out.stdout).unwrap(), "up", true);
    let out = env.tend(&["status", "down", "--json"]);
    assert_eq!(out.code, 3, "stopped: {}", out.stderr);
    check_service_json(&serde_json::from_str(&out.stdout).unwrap(), "down", false);
}

/// `events --json` is an array of {id, time, service, kind, detail}.
#[test]
fn events_json_shape() {
    let env = env_up_and_down();
    let out = env.ok(&["events", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("events --json is JSON");
    let events = v.as_array().expect("events --json is an array");
    for e in events {
        assert!(e["id"].is_i64(), "id in {e}");
        for k in ["time", "service", "kind", "detail"] {
            assert!(e[k].is_string(), "{k} in {e}");
        }
    }
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "not oldest first: {ids:?}"
    );
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["service"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    for want in [("down", "added"), ("up", "added"), ("up", "start")] {
        assert!(kinds.contains(&want), "{want:?} missing in {kinds:?}");
    }
    let out = env.ok(&["events", "up", "--json"]);
    let only_up: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(only_up
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["service"] == "up"));
}
