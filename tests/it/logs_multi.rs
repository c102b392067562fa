//! `tend logs` over several services: the last lines merged by time, `--since`, `--json`,
//! the name prefix, unknown names, and following many files (interleaving, rotation).
//! Timestamped lines are written by the services themselves (or by the test into their
//! log files) in the shared format, so these tests do not need the log writer.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::*;

const LONG: Duration = Duration::from_secs(20);

/// A shell snippet printing the current time in the shared prefix format.
const NOW: &str = "$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)";

fn add_sh(env: &Env, name: &str, script: &str) {
    env.ok(&["add", name, "--", "sh", "-c", script]);
}

/// Waits until `name`'s log holds `text`.
fn wait_log(env: &Env, name: &str, text: &str) {
    assert!(
        wait_until(LONG, || read(&env.log_path(name)).contains(text)),
        "{name}'s log never showed {text:?}: {:?}",
        read(&env.log_path(name))
    );
}

fn append(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// A running `tend logs ... -f`, its stdout read line by line on a thread of its own.
struct Follow {
    _child: KillOnDrop,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    fn start(env: &Env, args: &[&str]) -> Follow {
        let mut c = env.cmd();
        c.arg("logs")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = KillOnDrop(c.spawn().expect("spawn tend logs -f"));
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follow {
            _child: child,
            lines: rx,
        }
    }

    /// The next `n` lines, or a failure naming what did arrive by the deadline.
    fn take(&self, n: usize) -> Vec<String> {
        let end = Instant::now() + LONG;
        let mut got = Vec::new();
        while got.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!("only {} of {n} lines arrived: {got:#?}", got.len()),
            }
        }
        got
    }

    /// Makes sure the follow is past its first read (what is appended from now on is
    /// shown): appends `sync` lines to `path` until one arrives, then one `synced`
    /// line, and reads up to it.
    fn sync(&self, path: &std::path::Path) {
        let end = Instant::now() + LONG;
        loop {
            append(path, "sync\n");
            if self.lines.recv_timeout(Duration::from_millis(300)).is_ok() {
                break;
            }
            assert!(Instant::now() < end, "the follow never showed a line");
        }
        append(path, "synced\n");
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let l = self.lines.recv_timeout(left).expect("the synced line");
            if l.ends_with("| synced") || l == "synced" {
                break;
            }
        }
    }

    /// Nothing more arrives for a while (no duplicates after the expected lines).
    fn quiet(&self) -> Option<String> {
        self.lines.recv_timeout(Duration::from_millis(500)).ok()
    }
}

/// `logs --all -f` interleaves two running services in time order, each line prefixed
/// with its service's name padded to the longest; the log files did not exist when the
/// follow began.
#[test]
fn follow_all_interleaves_two_services() {
    let env = Env::new();
    let script = |tag: &str, delay: &str| {
        format!(
            "sleep {delay}; for i in 1 2 3; do echo \"{NOW} {tag}$i\"; sleep 0.3; done; sleep 30"
        )
    };
    add_sh(&env, "api", &script("api", "0"));
    add_sh(&env, "worker", &script("worker", "0.15"));
    let follow = Follow::start(&env, &["--all", "-f", "-n", "0"]);
    follow.sync(&env.log_path("api"));
    env.ok(&["start", "api", "worker"]);
    let lines = follow.take(6);

    let mut times = Vec::new();
    let mut texts = Vec::new();
    for l in &lines {
        let (name, line) = l.split_once(" | ").unwrap_or_else(|| panic!("{l:?}"));
        let (time, text) = line.split_once(' ').unwrap();
        assert_eq!(time.len(), 27, "{l:?}");
        assert!(text.starts_with(name.trim_end()), "{l:?}");
        assert_eq!(
            name.len(),
            "worker".len(),
            "prefix padded to the longest: {l:?}"
        );
        times.push(time.to_string());
        texts.push(text.to_string());
    }
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "not in time order: {lines:#?}");
    assert_eq!(
        texts,
        ["api1", "worker1", "api2", "worker2", "api3", "worker3"],
        "{lines:#?}"
    );
    assert_eq!(follow.quiet(), None);
}

const T: &str = "2026-12-06T21:58:0";

/// `-n N` takes the last N lines of each service and merges them by time; a line
/// without a time stays right after the timestamped line before it in its file.
#[test]
fn last_lines_merge_by_time() {
    let env = Env::new();
    add_sh(
        &env,
        "a",
        &format!(
            "echo '{T}0.000000Z a0'; echo '{T}1.000000Z a1'; echo '  at trace'; \
             echo '{T}3.000000Z a3'; echo done-a"
        ),
    );
    add_sh(
        &env,
        "bb",
        &format!("echo '{T}2.000000Z bb2'; echo '{T}4.000000Z bb4'; echo done-bb"),
    );
    env.start_brief(&["a", "bb"]);
    wait_log(&env, "a", "done-a");
    wait_log(&env, "bb", "done-bb");

    let out = env.ok(&["logs", "a", "bb", "-n", "4"]);
    assert_eq!(
        out.stdout,
        format!(
            "a  | {T}1.000000Z a1\na  |   at trace\nbb | {T}2.000000Z bb2\n\
             a  | {T}3.000000Z a3\na  | done-a\nbb | {T}4.000000Z bb4\nbb | done-bb\n"
        )
    );
    // Asked in the other order, the merge is the same: it follows time, not names.
    let out2 = env.ok(&["logs", "bb", "a", "-n", "4"]);
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.split_once(" | ").unwrap().1.to_string())
            .collect()
    };
    assert_eq!(strip(&out2.stdout), strip(&out.stdout));
    // One service alone is printed as written, without a prefix (as before).
    let one = env.ok(&["logs", "bb", "-n", "2"]);
    assert_eq!(one.stdout, format!("{T}4.000000Z bb4\ndone-bb\n"));
}

/// `--since`: timestamped lines by their time, untimed ones by the timestamped line
/// before them, a file without any time by its modification time.
#[test]
fn since_filters_by_time() {
    let env = Env::new();
    add_sh(
        &env,
        "stamped",
        &format!(
            "echo '2020-01-01T00:00:00.000000Z old'; echo 'old trace'; \
             echo \"{NOW} new\"; echo 'new trace'"
        ),
    );
    add_sh(&env, "plain", "echo plain-line");
    env.start_brief(&["stamped", "plain"]);
    wait_log(&env, "stamped", "new trace");
    wait_log(&env, "plain", "plain-line");

    let out = env.ok(&["logs", "stamped", "--since", "10m"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].ends_with(" new") && lines[1] == "new trace",
        "{lines:?}"
    );

    let out = env.ok(&["logs", "stamped", "--since", "2019-12-31T23:00:00Z"]);
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);
    let out = env.ok(&[
        "logs",
        "stamped",
        "--since",
        "2019-12-31T23:00:00Z",
        "-n",
        "1",
    ]);
    assert_eq!(out.stdout, "new trace\n");

    // The untimed file was written just now: kept for 10m, not for a time to come.
    let out = env.ok(&["logs", "--all", "--since", "10m"]);
    assert!(
        out.stdout.contains("plain   | plain-line"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("old"), "{}", out.stdout);
    let out = env.ok(&["logs", "--all", "--since", "2099-01-01T00:00:00Z"]);
    assert_eq!(out.stdout, "");

    let bad = env.tend(&["logs", "--all", "--since", "yesterday"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert_eq!(bad.stderr.lines().count(), 1, "{bad:?}");
    assert!(bad.stderr.starts_with("tend: invalid --since"), "{bad:?}");
}

/// `--json`: one object per line with exactly time, service, stream, text; the stream
/// from the prefix of a `--log-timestamps stream` service (only there: in another
/// service's line `err` after the time is text), or from the file when stdout and stderr
/// are separate files.
#[test]
fn json_lines_have_the_documented_shape() {
    let env = Env::new();
    add_sh(
        &env,
        "mixed",
        &format!("echo '{T}1.000000Z err boom'; echo 'no time \"quoted\"'"),
    );
    let err = env.work().join("split.err");
    env.ok(&[
        "add",
        "split",
        "--stderr",
        err.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &format!("echo '{T}2.000000Z to out'; echo to-err >&2"),
    ]);
    env.ok(&[
        "add",
        "tagged",
        "--log-timestamps",
        "stream",
        "--",
        "sh",
        "-c",
        "echo boom >&2; echo fine",
    ]);
    env.start_brief(&["mixed", "split", "tagged"]);
    wait_log(&env, "mixed", "quoted");
    wait_log(&env, "tagged", "fine");
    wait_log(&env, "split", "to out");
    assert!(wait_until(LONG, || read(&err).contains("to-err")));

    let out = env.ok(&["logs", "--all", "--json"]);
    let objects: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    for o in &objects {
        let mut keys: Vec<&str> = o.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["service", "stream", "text", "time"], "{o}");
    }
    let find = |text: &str| {
        objects
            .iter()
            .find(|o| o["text"] == text)
            .unwrap_or_else(|| panic!("no {text:?} in {}", out.stdout))
            .clone()
    };
    assert_eq!(
        find("err boom"),
        serde_json::json!({"time": format!("{T}1.000000Z"), "service": "mixed", "stream": null, "text": "err boom"})
    );
    let boom = find("boom");
    assert_eq!(
        (&boom["service"], &boom["stream"]),
        (&serde_json::json!("tagged"), &serde_json::json!("err")),
        "{boom}"
    );
    assert!(
        boom["time"].as_str().is_some_and(|t| t.len() == 27),
        "{boom}"
    );
    assert_eq!(find("fine")["stream"], "out");
    assert_eq!(
        find("no time \"quoted\""),
        serde_json::json!({"time": null, "service": "mixed", "stream": null, "text": "no time \"quoted\""})
    );
    assert_eq!(find("to out")["stream"], "out");
    assert_eq!(find("to out")["time"], format!("{T}2.000000Z"));
    assert_eq!(find("to-err")["stream"], "err");
    assert_eq!(find("to-err")["service"], "split");

    // One service with --json is JSON too.
    let one = env.ok(&["logs", "mixed", "--json", "-n", "1"]);
    let o: serde_json::Value = serde_json::from_str(one.stdout.trim()).unwrap();
    assert_eq!(o["text"], "no time \"quoted\"");
}

/// Several services: the text is escaped (a line cannot pose as another service's by a
/// carriage return or an escape sequence); one service alone is shown as written.
#[test]
fn prefixed_lines_escape_control_characters() {
    let env = Env::new();
    add_sh(&env, "a", "printf 'x\\rfake | y\\033[2J\\tz\\n'");
    add_sh(&env, "b", "echo b-line");
    env.start_brief(&["a", "b"]);
    wait_log(&env, "a", "fake");
    wait_log(&env, "b", "b-line");
    let out = env.ok(&["logs", "a", "b"]);
    assert_eq!(out.stdout, "a | x\\rfake | y\\x1b[2J\tz\nb | b-line\n");
    let one = env.ok(&["logs", "a"]);
    assert_eq!(one.stdout, "x\rfake | y\x1b[2J\tz\n");
}

/// An unknown name: one `tend:` line, exit 4, nothing printed (even for the names that
/// exist); `--all` with no services prints nothing and succeeds.
#[test]
fn unknown_name_and_no_services() {
    let env = Env::new();
    let empty = env.ok(&["logs", "--all"]);
    assert_eq!((empty.stdout.as_str(), empty.stderr.as_str()), ("", ""));
    let empty = env.ok(&["logs", "--all", "-f", "--since", "1h", "--json"]);
    assert_eq!(empty.stdout, "", "follow over nothing returns at once");

    add_sh(&env, "real", "echo real-line");
    env.start_brief(&["real"]);
    wait_log(&env, "real", "real-line");
    for args in [
        &["logs", "real", "nosuch"][..],
        &["logs", "nosuch", "real", "-f"],
        &["logs", "real", "nosuch", "--since", "1h"],
    ] {
        let out = env.tend(args);
        assert_eq!(out.code, 4, "{args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{args:?}");
        assert_eq!(out.stderr, "tend: unknown service: nosuch\n", "{args:?}");
    }
    let out = env.tend(&["logs", "real", "nosuch", "--json"]);
    assert_eq!(out.code, 4);
    let err: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(err["error"]["code"], 4);
    let bad = env.tend(&["logs", "real", "--all"]);
    assert_eq!(bad.code, 2, "names and --all conflict: {bad:?}");
}

/// Following two services while one's log is rotated three ways: renamed away and
/// created again (as a log writer does), truncated in place, and collapsed by tend's own
/// rotation; every line arrives exactly once and in order.
#[test]
fn follow_survives_rotation() {
    let env = Env::new();
    // Defined, never started: the test writes their log files itself.
    add_sh(&env, "rot", "true");
    add_sh(&env, "calm", "true");
    let rot = env.log_path("rot");
    let calm = env.log_path("calm");
    append(&rot, "before\n");
    append(&calm, "calm before\n");
    let follow = Follow::start(&env, &["rot", "calm", "-f", "-n", "0"]);
    follow.sync(&calm);
    let marker = |i: usize| format!("calm {i}\n");

    let line = |i: usize| format!("rot line {i:04}\n");
    let mut expected = Vec::new();
    let write = |from: usize, to: usize, expected: &mut Vec<String>| {
        let text: String = (from..to).map(line).collect();
        append(&rot, &text);
        expected.extend((from..to).map(|i| format!("rot  | rot line {i:04}")));
    };
    write(0, 100, &mut expected);
    // Renamed away and created again, the old file's last lines unread yet.
    write(100, 150, &mut expected);
    std::fs::rename(&rot, rot.with_extension("log.1")).unwrap();
    write(150, 200, &mut expected);
    let got = follow.take(200);
    assert_eq!(got, expected);

    // Truncated in place (copy-truncate), seen before it grows again.
    append(&calm, &marker(1));
    assert_eq!(follow.take(1), ["calm | calm 1"]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&rot)
        .unwrap()
        .set_len(0)
        .unwrap();
    // Two rounds later the follow has surely looked at the truncated file.
    for i in 2..4 {
        append(&calm, &marker(i));
        assert_eq!(follow.take(1), [format!("calm | calm {i}")]);
    }
    expected.clear();
    write(200, 300, &mut expected);
    assert_eq!(follow.take(100), expected);

    // tend's own rotation (the daemon's, past --log-max-size): the whole blocks at the
    // start move to rot.log.1 and are cut out of the file the service keeps writing.
    expected.clear();
    write(300, 600, &mut expected);
    assert_eq!(follow.take(300), expected);
    assert!(tend::logs::rotate(&rot, 3).unwrap(), "rotated");
    expected.clear();
    write(600, 700, &mut expected);
    assert_eq!(follow.take(100), expected);
    assert_eq!(follow.quiet(), None);
}

/// On a terminal each service's prefix is coloured (its own colour, padding inside the
/// colour); `NO_COLOR` turns that off. The terminal is a pseudo-terminal from script(1).
#[test]
fn names_are_coloured_on_a_terminal_unless_no_color() {
    let env = Env::new();
    add_sh(&env, "a", "echo a-line");
    add_sh(&env, "bb", "echo bb-line");
    env.start_brief(&["a", "bb"]);
    wait_log(&env, "a", "a-line");
    wait_log(&env, "bb", "bb-line");
    let line = format!("'{TEND}' --home '{}' logs a bb", env.home().display());
    let on_terminal = |no_color: Option<&str>| {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &line, "/dev/null"])
            .env("TERM", "xterm")
            .env_remove("TEND_HOME")
            .stdin(Stdio::null());
        match no_color {
            Some(v) => c.env("NO_COLOR", v),
            None => c.env_remove("NO_COLOR"),
        };
        let out = run(c);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
    };
    let coloured = on_terminal(None);
    assert!(
        coloured.contains("\x1b[36ma  |\x1b[0m a-line")
            && coloured.contains("\x1b[33mbb |\x1b[0m bb-line"),
        "{coloured:?}"
    );
    let plain = on_terminal(Some("1"));
    assert!(!plain.contains('\x1b'), "{plain:?}");
    assert!(
        plain.contains("a  | a-line") && plain.contains("bb | bb-line"),
        "{plain:?}"
    );
}

/// One service followed alone (its bytes as written, the old path): a rotation by rename
/// (as the log writer rotates) with lines still unread in the renamed file loses none of
/// them; a truncation is seen too.
#[test]
fn follow_of_one_service_survives_rotation_by_rename() {
    let env = Env::new();
    add_sh(&env, "solo", "true");
    let log = env.log_path("solo");
    append(&log, "before\n");
    let follow = Follow::start(&env, &["solo", "-f", "-n", "0"]);
    follow.sync(&log);
    let line = |i: usize| format!("solo line {i:04}\n");
    let write = |from: usize, to: usize| {
        append(&log, &(from..to).map(line).collect::<String>());
    };
    for round in 0..5 {
        let at = round * 100;
        write(at, at + 50);
        // Renamed away with (likely) its last lines unread, then written again.
        std::fs::rename(&log, log.with_extension("log.1")).unwrap();
        write(at + 50, at + 100);
        let expected: Vec<String> = (at..at + 100)
            .map(|i| format!("solo line {i:04}"))
            .collect();
        assert_eq!(follow.take(100), expected, "round {round}");
    }
    assert_eq!(follow.quiet(), None);
}
