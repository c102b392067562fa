//! Issue 14, part A: `--log-timestamps`, the log writer. Real services write through
//! real writers; the tests count what was written against what the files hold, stop and
//! crash services mid-output, and SIGKILL the writer. Every writer a test starts ends by
//! itself when its service is gone (checked), and is killed by [`Sweep`] if a test fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

const LONG: Duration = Duration::from_secs(30);

/// Pids of this home's log writer processes: (pid, is the worker).
fn writers(env: &Env) -> Vec<(i32, bool)> {
    let home = env.home().to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) == Some("log-writer")
            && args.iter().any(|a| a.starts_with(&home))
            && alive(pid)
        {
            out.push((pid, args.iter().any(|a| a == "--worker")));
        }
    }
    out
}

fn workers(env: &Env) -> Vec<i32> {
    writers(env)
        .into_iter()
        .filter(|w| w.1)
        .map(|w| w.0)
        .collect()
}

/// Waits until this home's writers have ended by themselves (end of input).
fn assert_writers_end(env: &Env) {
    assert!(
        wait_until(LONG, || writers(env).is_empty()),
        "log writers still running: {:?}",
        writers(env)
    );
}

/// Kills whatever writer of its home is left when a test ends (a failed test).
struct Sweep<'a>(&'a Env);

impl Drop for Sweep<'_> {
    fn drop(&mut self) {
        for (pid, _) in writers(self.0) {
            // SAFETY: kill on a pid just read from /proc, a writer of this test's home.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// `<time> ` as the shared line format has it: 27 bytes, RFC 3339, UTC, microseconds.
fn split_time(line: &str) -> Option<(&str, &str)> {
    let (t, rest) = line.split_at_checked(27)?;
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ok = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z';
    Some((t, rest.strip_prefix(' ')?)).filter(|_| ok)
}

/// The backups (oldest first) and the file, as one text.
fn all_of(path: &Path) -> String {
    let mut s = String::new();
    for i in (1..=3).rev() {
        s.push_str(&read(&backup(path, i)));
    }
    s + &read(path)
}

fn backup(path: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// The texts of timestamped lines, checking every line has a time and times never go
/// backwards.
fn texts(content: &str) -> Vec<String> {
    let mut last = String::new();
    content
        .lines()
        .map(|l| {
            let (t, text) = split_time(l).unwrap_or_else(|| panic!("no time: {l:?}"));
            assert!(t >= last.as_str(), "time went back: {last} then {l}");
            last = t.to_string();
            text.to_string()
        })
        .collect()
}

/// The number in `prefix N`.
fn number(text: &str, prefix: &str) -> Option<u64> {
    text.strip_prefix(prefix)?.trim().parse().ok()
}

#[test]
fn timestamped_lines_in_order_and_a_partial_last_line() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    env.ok(&[
        "add",
        "s",
        "--log-timestamps",
        "on",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 500 ]; do echo \"line $i\"; i=$((i+1)); done; printf 'no newline'",
    ]);
    env.start_brief(&["s"]);
    assert_writers_end(&env);
    let texts = texts(&read(&env.log_path("s")));
    let expected: Vec<String> = (0..500)
        .map(|i| format!("line {i}"))
        .chain(["no newline".to_string()])
        .collect();
    assert_eq!(texts, expected);
    assert!(read(&env.log_path("s")).ends_with("no newline\n"));
}

#[test]
fn stream_tags_and_the_writer_outside_the_kill_scope() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    let err_log = env.work().join("err.log");
    env.ok(&[
        "add",
        "s",
        "--log-timestamps",
        "stream",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exec sleep 60",
    ]);
    env.ok(&[
        "add",
        "split",
        "--log-timestamps",
        "on",
        "-e",
        err_log.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exec sleep 60",
    ]);
    env.ok(&["start", "s", "split"]);
    let log = env.log_path("s");
    assert!(wait_until(LONG, || read(&log).lines().count() == 2));
    let mut lines: Vec<String> = texts(&read(&log));
    lines.sort();
    assert_eq!(lines, ["err to-err", "out to-out"]);
    // `on` with a file of its own for stderr: no tag, each stream to its file.
    assert!(wait_until(LONG, || !read(&err_log).is_empty()));
    assert_eq!(texts(&read(&err_log)), ["to-err"]);
    assert!(wait_until(LONG, || !read(&env.log_path("split")).is_empty()));
    assert_eq!(texts(&read(&env.log_path("split"))), ["to-out"]);

    // Neither in the service's session nor in its cgroup.
    let status = env.status_json("s");
    let pgid = status["pgid"].as_i64().unwrap() as i32;
    let cgroup = status["cgroup"]["path"].as_str().map(str::to_string);
    let ws = writers(&env);
    assert_eq!(ws.len(), 4, "a keeper and a worker per service: {ws:?}");
    for (pid, _) in &ws {
        let stat = read(Path::new(&format!("/proc/{pid}/stat")));
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let (pg, sid): (i32, i32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
        assert_ne!(pg, pgid);
        assert_ne!(sid, pgid);
        if let Some(cg) = &cgroup {
            let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
            let service_dir = Path::new(cg).parent().unwrap();
            let name = service_dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(!own.contains(&name), "writer {pid} in {own}");
            // In the home's cgroup for writers, which a stop never touches.
            let line = own.lines().find(|l| l.starts_with("0::")).unwrap();
            assert!(line.ends_with("/log-writers"), "writer {pid} in {line}");
        }
    }
    env.ok(&["stop", "s", "split"]);
    assert_writers_end(&env);
}

#[test]
fn no_line_lost_across_five_rotations_and_a_stop_mid_burst() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    const MAX: u64 = 64 * 1024;
    env.ok(&[
        "add",
        "burst",
        "--log-timestamps",
        "on",
        "--log-max-size",
        "64K",
        "--",
        "sh",
        "-c",
        "i=0; trap 'echo \"end $i\"; exit 0' TERM; while :; do echo \"line $i\"; i=$((i+1)); done",
    ]);
    env.ok(&["start", "burst"]);
    let log = env.log_path("burst");
    // Every line takes at least 35 bytes with its time; 12,000 of them fill more than six
    // files of 64 KiB: at least five rotations.
    let reached = wait_until(Duration::from_secs(60), || {
        read(&log)
            .lines()
            .last()
            .and_then(|l| split_time(l))
            .and_then(|(_, t)| number(t, "line "))
            .is_some_and(|n| n >= 12_000)
    });
    assert!(reached, "the service did not get far");
    env.ok(&["stop", "burst"]);
    assert_writers_end(&env);

    for i in 1..=3 {
        let len = std::fs::metadata(backup(&log, i)).unwrap().len();
        assert!(len <= MAX, "backup {i} has {len} bytes");
    }
    assert!(std::fs::metadata(&log).unwrap().len() <= MAX);
    let texts = texts(&all_of(&log));
    let (last, lines) = texts.split_last().unwrap();
    let end = number(last, "end ").unwrap_or_else(|| panic!("no end line: {last}"));
    let first = number(&lines[0], "line ").unwrap();
    assert!(first > 0, "the oldest lines were rotated away");
    for (k, t) in lines.iter().enumerate() {
        assert_eq!(
            number(t, "line "),
            Some(first + k as u64),
            "a gap or a stray: {t}"
        );
    }
    // The trap may run between an echo and the increment after it.
    let written = first + lines.len() as u64;
    assert!(
        end == written || end + 1 == written,
        "end {end}, {written} written"
    );
}

#[test]
fn writer_restarted_after_sigkill_and_the_service_never_sees_a_broken_pipe() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    env.ok(&[
        "add",
        "tick",
        "--log-timestamps",
        "on",
        "--",
        "sh",
        "-c",
        "i=0; while :; do echo \"tick $i\"; i=$((i+1)); sleep 0.02; done",
    ]);
    env.ok(&["start", "tick"]);
    let pid = env.pid("tick").unwrap();
    let log = env.log_path("tick");
    let ticks = |log: &Path| -> Vec<u64> {
        read(log)
            .lines()
            .filter_map(|l| split_time(l).and_then(|(_, t)| number(t, "tick ")))
            .collect()
    };
    assert!(wait_until(LONG, || ticks(&log).len() >= 5));
    let old = workers(&env);
    assert_eq!(old.len(), 1);
    // SAFETY: kill on the pid of this test's own writer.
    unsafe {
        libc::kill(old[0], libc::SIGKILL);
    }
    let at_kill = ticks(&log).last().copied().unwrap();
    assert!(wait_until(LONG, || workers(&env)
        .first()
        .is_some_and(|w| *w != old[0])));
    assert!(wait_until(LONG, || ticks(&log)
        .last()
        .is_some_and(|&t| t >= at_kill + 20)));
    let text = read(&log);
    assert!(text.contains("tend: log writer restarted"), "{text}");
    // Lines written after the kill arrive, none missing: they waited in the pipe.
    let after: Vec<u64> = text
        .lines()
        .skip_while(|l| !l.contains("log writer restarted"))
        .filter_map(|l| split_time(l).and_then(|(_, t)| number(t, "tick ")))
        .collect();
    for w in after.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap after the restart");
    }
    // The same service instance throughout: no SIGPIPE.
    assert_eq!(env.pid("tick"), Some(pid));
    env.ok(&["stop", "tick"]);
    assert_writers_end(&env);
}

#[test]
fn a_crash_keeps_the_last_lines() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    env.ok(&[
        "add",
        "crash",
        "--log-timestamps",
        "stream",
        "--restart",
        "never",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done; \
         printf 'last words' >&2; kill -9 $$",
    ]);
    env.start_brief(&["crash"]);
    assert_writers_end(&env);
    let texts = texts(&read(&env.log_path("crash")));
    let out: Vec<&String> = texts.iter().filter(|t| t.starts_with("out ")).collect();
    assert_eq!(out.len(), 3000);
    for (i, t) in out.iter().enumerate() {
        assert_eq!(**t, format!("out line {i}"));
    }
    // Across two pipes the order is the order the writer read them in: only within a
    // stream is it the order written.
    let err: Vec<&String> = texts.iter().filter(|t| t.starts_with("err ")).collect();
    assert_eq!(err, ["err last words"]);
}

#[test]
fn a_daemon_restart_gets_a_new_writer_and_the_old_one_ends() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    env.ok(&[
        "add",
        "flaky",
        "--log-timestamps",
        "on",
        "--restart",
        "always",
        "--",
        "sh",
        "-c",
        "echo \"up $$\"; sleep 0.3; exit 1",
    ]);
    env.ok(&["daemon"]);
    env.ok(&["start", "flaky"]);
    let log = env.log_path("flaky");
    assert!(wait_until(LONG, || read(&log).lines().count() >= 3));
    env.ok(&["stop", "flaky"]);
    assert_writers_end(&env);
    for t in texts(&read(&log)) {
        assert!(t.starts_with("up "), "{t}");
    }
    env.ok(&["daemon", "stop"]);
}

#[test]
fn a_bad_value_is_refused_and_the_file_key_works() {
    let env = Env::new();
    let out = env.tend(&["add", "x", "--log-timestamps", "yes", "--", "true"]);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("tend: "), "{}", out.stderr);
    assert!(out.stderr.contains("off, on or stream"), "{}", out.stderr);
    assert_eq!(env.tend(&["status", "x"]).code, 4);

    std::fs::write(
        env.work().join("tend.toml"),
        "[services.web]\ncmd = \"sleep 1\"\nlog_timestamps = \"stream\"\n",
    )
    .unwrap();
    env.ok(&["apply"]);
    assert_eq!(env.status_json("web")["log_timestamps"], "stream");
    assert!(env
        .ok(&["export"])
        .stdout
        .contains("log_timestamps = \"stream\""));
}

#[test]
fn concurrent_starts_leave_one_writer() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    env.ok(&[
        "add",
        "s",
        "--log-timestamps",
        "on",
        "--",
        "sh",
        "-c",
        "echo \"up $$\"; exec sleep 60",
    ]);
    let outs: Vec<Out> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..6)
            .map(|_| sc.spawn(|| env.tend(&["start", "s"])))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert_eq!(o.code, 0, "{o:?}");
    }
    // The starts that lost took their writers back (killed, or ended at end of input).
    assert!(
        wait_until(LONG, || writers(&env).len() == 2),
        "{:?}",
        writers(&env)
    );
    assert!(wait_until(LONG, || !read(&env.log_path("s")).is_empty()));
    let pid = env.pid("s").unwrap();
    assert_eq!(texts(&read(&env.log_path("s"))), [format!("up {pid}")]);
    env.ok(&["stop", "s"]);
    assert_writers_end(&env);
}

#[test]
fn off_is_the_default_and_writes_the_file_directly() {
    let env = Env::new();
    env.ok(&["add", "plain", "--", "sh", "-c", "echo raw; exec sleep 60"]);
    assert_eq!(env.status_json("plain")["log_timestamps"], "off");
    env.ok(&["start", "plain"]);
    assert!(wait_until(LONG, || read(&env.log_path("plain")) == "raw\n"));
    assert!(writers(&env).is_empty());
    // The service's stdout is the file itself, not a pipe.
    let pid = env.pid("plain").unwrap();
    let target = std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert_eq!(target, env.log_path("plain"));
    // An edit takes effect at the next start.
    let edit = env.ok(&["edit", "plain", "--log-timestamps", "on"]);
    assert!(edit.stdout.contains("log-timestamps"), "{}", edit.stdout);
    env.ok(&["restart", "plain"]);
    let _sweep = Sweep(&env);
    assert!(wait_until(LONG, || read(&env.log_path("plain"))
        .lines()
        .count()
        == 2));
    let text = read(&env.log_path("plain"));
    let last = text.lines().last().unwrap();
    assert_eq!(split_time(last).map(|(_, t)| t), Some("raw"), "{text}");
    env.ok(&["stop", "plain"]);
    assert_writers_end(&env);
}
