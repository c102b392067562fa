//! `--log-timestamps`, the log writer. Real services write through real writers; the
//! tests count what was written against what the files hold, stop and crash services
//! mid-output, SIGKILL the writer's processes one after the other and both at once
//! (without a daemon, and under one, which starts a new writer on the service's pipes),
//! and make its file fail (a directory in its place, a full tmpfs). Every writer a test starts
//! ends by itself when its service is gone (checked), and is killed by [`Sweep`] if a
//! test fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

const LONG: Duration = Duration::from_secs(30);

/// Pids of this home's log writer processes (those writing a file in the home or in the
/// work directory): (pid, is the worker).
fn writers(env: &Env) -> Vec<(i32, bool)> {
    let home = env.home().to_string_lossy().into_owned();
    let work = env.work().to_string_lossy().into_owned();
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
            && args
                .iter()
                .any(|a| a.starts_with(&home) || a.starts_with(&work))
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

/// Pids of this home's keepers (the writer processes that are not workers).
fn keepers(env: &Env) -> Vec<i32> {
    writers(env)
        .into_iter()
        .filter(|w| !w.1)
        .map(|w| w.0)
        .collect()
}

fn sigkill(pid: i32) {
    // SAFETY: kill on the pid of a writer of this test's own home, just read from /proc.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Asserts that `name` still runs as `pid`, and that `pid` stays alive for all of
/// `window` (the window this assertion of absence watched).
fn stays_up(env: &Env, name: &str, pid: i32, window: Duration) {
    assert!(alive(pid), "{name} (pid {pid}) is gone");
    assert!(
        !wait_until(window, || !alive(pid)),
        "{name} (pid {pid}) died within {window:?}"
    );
    assert_eq!(env.pid(name), Some(pid), "{name} was restarted");
}

/// The ticks (`tick N`) of a log, in the order written.
fn ticks(log: &Path) -> Vec<u64> {
    read(log)
        .lines()
        .filter_map(|l| split_time(l).and_then(|(_, t)| number(t, "tick ")))
        .collect()
}

/// Checks that the ticks after the last `log writer restarted` line run on without a
/// gap: what the service wrote while no worker read waited in the pipe.
fn no_gap_after_the_last_restart(log: &Path) {
    let text = read(log);
    let after: Vec<u64> = text
        .lines()
        .rev()
        .take_while(|l| !l.contains("tend: log writer restarted"))
        .filter_map(|l| split_time(l).and_then(|(_, t)| number(t, "tick ")))
        .collect();
    assert!(after.len() >= 2, "{text}");
    for w in after.windows(2) {
        assert_eq!(w[0], w[1] + 1, "a gap after the restart");
    }
}

const TICKER: &str = "i=0; while :; do echo \"tick $i\"; i=$((i+1)); sleep 0.02; done";

#[test]
fn killing_the_keeper_then_the_worker_never_takes_the_service_down() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    // The default restart policy (on-failure): on main the service died of SIGPIPE.
    env.ok(&[
        "add",
        "tick",
        "--log-timestamps",
        "on",
        "--",
        "sh",
        "-c",
        TICKER,
    ]);
    env.ok(&["start", "tick"]);
    let pid = env.pid("tick").unwrap();
    let log = env.log_path("tick");
    assert!(wait_until(LONG, || ticks(&log).len() >= 5));

    let keeper = keepers(&env);
    assert_eq!(keeper.len(), 1, "{:?}", writers(&env));
    sigkill(keeper[0]);
    // The worker starts a new keeper on the same pipes.
    assert!(
        wait_until(LONG, || keepers(&env).iter().any(|&k| k != keeper[0])),
        "no new keeper: {:?}",
        writers(&env)
    );
    let worker = workers(&env);
    assert_eq!(worker.len(), 1, "{:?}", writers(&env));
    sigkill(worker[0]);
    let at_kill = ticks(&log).last().copied().unwrap();
    // ... which starts a new worker when the old one is killed in turn.
    assert!(
        wait_until(LONG, || workers(&env).iter().any(|&w| w != worker[0])),
        "no new worker: {:?}",
        writers(&env)
    );
    assert!(wait_until(LONG, || ticks(&log)
        .last()
        .is_some_and(|&t| t >= at_kill + 20)));
    assert!(read(&log).contains("tend: log writer restarted"));
    no_gap_after_the_last_restart(&log);
    stays_up(&env, "tick", pid, Duration::from_millis(500));
    assert_eq!(writers(&env).len(), 2, "{:?}", writers(&env));
    env.ok(&["stop", "tick"]);
    assert_writers_end(&env);
}

#[test]
fn killing_both_writer_processes_at_once_leaves_the_service_running() {
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
        TICKER,
    ]);
    env.ok(&["start", "tick"]);
    let pid = env.pid("tick").unwrap();
    let log = env.log_path("tick");
    assert!(wait_until(LONG, || ticks(&log).len() >= 5));
    let both = writers(&env);
    assert_eq!(both.len(), 2, "{both:?}");
    // At the same instant as far as they can tell: stopped first, neither can see the
    // other go and start a new partner in between.
    for sig in [libc::SIGSTOP, libc::SIGKILL] {
        for (w, _) in &both {
            // SAFETY: kill on the pids of this test's own writers, just read from /proc.
            unsafe {
                libc::kill(*w, sig);
            }
        }
    }
    assert!(wait_until(LONG, || writers(&env).is_empty()));
    // Nobody reads the pipe now, and nobody brings a writer back; but the service holds
    // a read end of its own output, so its writes (50 a second, far less than the pipe
    // holds) neither fail nor kill it.
    stays_up(&env, "tick", pid, Duration::from_secs(3));
    env.ok(&["stop", "tick"]);
    assert!(wait_until(LONG, || !alive(pid)));
    assert_writers_end(&env);
}

/// A service that writes numbered lines of about 1 KB (`line N 000…`) in bursts: burst
/// `k` starts once the file `go-k` in its working directory exists (it holds the number
/// of lines), and once it is over `done-k` holds the number of lines written in all.
const BURSTS: &str = "pad=$(printf '%0900d' 0); n=0; k=1
while :; do
  while [ ! -e go-$k ]; do sleep 0.02; done
  m=$(cat go-$k); j=0
  while [ $j -lt $m ]; do echo \"line $n $pad\"; n=$((n+1)); j=$((j+1)); done
  echo $n > done-$k.tmp; mv done-$k.tmp done-$k; k=$((k+1))
done";

/// Starts burst `k` of [`BURSTS`] (`lines` lines) and waits until the service has
/// written it all; the number of lines written in all.
fn burst(env: &Env, k: u32, lines: u64) -> u64 {
    let go = env.work().join(format!("go-{k}"));
    let tmp = env.work().join(format!("go-{k}.tmp"));
    std::fs::write(&tmp, lines.to_string()).unwrap();
    std::fs::rename(&tmp, &go).unwrap();
    let done = env.work().join(format!("done-{k}"));
    assert!(
        wait_until(Duration::from_secs(60), || done.exists()),
        "burst {k} did not finish: the service is blocked or gone"
    );
    read(&done).trim().parse().unwrap()
}

/// Goes through the lines of [`BURSTS`] in `text` (files in the order written): every
/// line is whole (its time, `line N`, then the whole pad), the numbers run on from 0 and
/// every gap is stood for by `tend: M lines lost: ...` lines counting exactly M.
/// Returns (the next number expected, lines lost in all, the markers' texts).
fn account(text: &str) -> (u64, u64, Vec<String>) {
    let pad = "0".repeat(900);
    let (mut next, mut lost, mut markers) = (0, 0, Vec::new());
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line");
    for t in texts(text) {
        if let Some(m) = t.strip_prefix("tend: ") {
            if let Some((n, _)) = m.split_once(" lines lost: ") {
                let n: u64 = n.parse().unwrap_or_else(|_| panic!("{t}"));
                next += n;
                lost += n;
            }
            markers.push(t);
            continue;
        }
        let (n, rest) = t
            .strip_prefix("line ")
            .and_then(|r| r.split_once(' '))
            .unwrap_or_else(|| panic!("not a line of the service: {t:?}"));
        assert_eq!(rest, pad, "a torn line: {t:?}");
        assert_eq!(n.parse::<u64>().ok(), Some(next), "a gap or a stray: {t:?}");
        next += 1;
    }
    (next, lost, markers)
}

fn add_bursts(env: &Env, log: &Path) {
    let log = log.to_str().unwrap();
    env.ok(&[
        "add",
        "b",
        "--log-timestamps",
        "on",
        "--log-max-size",
        "0",
        "-o",
        log,
        "-e",
        log,
        "--",
        "sh",
        "-c",
        BURSTS,
    ]);
}

/// The last modification of `path`, if it has one.
fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[test]
fn a_log_path_replaced_by_a_directory_costs_counted_lines_not_the_service() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    let log = env.work().join("b.log");
    let moved = env.work().join("b.log.moved");
    add_bursts(&env, &log);
    env.ok(&["start", "b"]);
    let pid = env.pid("b").unwrap();
    assert_eq!(burst(&env, 1, 100), 100);
    assert!(wait_until(LONG, || read(&log).lines().count() == 100));
    // Once the writer has not written for longer than it waits between two looks at
    // the path (1 s), its next write looks: then every line of the next burst meets
    // the directory.
    assert!(wait_until(LONG, || modified(&log)
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|e| e > Duration::from_millis(1500))));
    std::fs::rename(&log, &moved).unwrap();
    std::fs::create_dir(&log).unwrap();
    // 20,000 lines of 1 KB: far more than the pipe and the writer's queue hold. The
    // service writes them all (nothing blocks it) and stays up.
    let written = burst(&env, 2, 20_000);
    stays_up(&env, "b", pid, Duration::from_secs(2));
    std::fs::remove_dir(&log).unwrap();
    // As soon as the file can be written again, the lines held are written and the lost
    // ones counted, with no line of the service after them yet.
    assert!(
        wait_until(LONG, || read(&log).contains(" lines lost: ")),
        "no marker: {:?}",
        read(&log).lines().last()
    );
    let total = burst(&env, 3, 100);
    assert_eq!(total, written + 100);
    let last = format!("line {} ", total - 1);
    assert!(wait_until(LONG, || read(&log).contains(&last)));
    let text = read(&moved) + &read(&log);
    let (next, lost, markers) = account(&text);
    assert_eq!(next, total, "{markers:?}");
    assert!(lost > 0 && lost < 20_000, "{lost} lost");
    // Only the burst's lines that found no room: the moved file has the first burst.
    assert_eq!(account(&read(&moved)).0, 100);
    for m in &markers {
        assert!(
            m.contains("could not be written (is a directory)"),
            "{markers:?}"
        );
    }
    assert_eq!(env.pid("b"), Some(pid));
    env.ok(&["stop", "b"]);
    assert_writers_end(&env);
}

#[test]
fn a_worker_restarted_while_its_log_path_is_a_directory_keeps_reading() {
    let env = Env::new();
    let _sweep = Sweep(&env);
    let log = env.work().join("b.log");
    let moved = env.work().join("b.log.moved");
    add_bursts(&env, &log);
    env.ok(&["start", "b"]);
    let pid = env.pid("b").unwrap();
    assert_eq!(burst(&env, 1, 100), 100);
    assert!(wait_until(LONG, || read(&log).lines().count() == 100));
    std::fs::rename(&log, &moved).unwrap();
    std::fs::create_dir(&log).unwrap();
    // A new worker cannot open the file at all (on main it exited, its keeper
    // followed, and the service died of SIGPIPE).
    let worker = workers(&env);
    assert_eq!(worker.len(), 1);
    sigkill(worker[0]);
    assert!(wait_until(LONG, || workers(&env)
        .iter()
        .any(|&w| w != worker[0])));
    let written = burst(&env, 2, 20_000);
    stays_up(&env, "b", pid, Duration::from_secs(2));
    std::fs::remove_dir(&log).unwrap();
    assert!(wait_until(LONG, || read(&log).contains(" lines lost: ")));
    let total = burst(&env, 3, 100);
    assert_eq!(total, written + 100);
    let last = format!("line {} ", total - 1);
    assert!(wait_until(LONG, || read(&log).contains(&last)));
    // The killed worker had written all it had read: the count is exact still.
    let (next, lost, markers) = account(&(read(&moved) + &read(&log)));
    assert_eq!(next, total, "{markers:?}");
    assert!(lost > 0, "{markers:?}");
    assert!(markers[0].contains("log writer restarted"), "{markers:?}");
    for m in &markers[1..] {
        assert!(
            m.contains("could not be written (is a directory)"),
            "{markers:?}"
        );
    }
    assert_eq!(env.pid("b"), Some(pid));
    env.ok(&["stop", "b"]);
    assert_writers_end(&env);
}

/// A tmpfs of `size` mounted on the new directory `dir`, unmounted on drop (lazily if
/// something still holds it), before the directory it is in is removed.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` (having said why) where it cannot be mounted.
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                eprintln!("not run: cannot mount a tmpfs: {other:?}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = std::process::Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(&self.dir)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

/// Fills the file system of `dir` with `dir/filler` until not one byte more fits.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut block = 1 << 20;
    while block > 0 {
        match f.write(&vec![b'x'; block]) {
            Ok(n) if n == block => {}
            _ => block /= 2,
        }
    }
    path
}

#[test]
fn a_full_file_system_leaves_whole_lines_and_a_right_count_of_the_lost() {
    if !require_root(
        "a_full_file_system_leaves_whole_lines_and_a_right_count_of_the_lost",
        "mount a small tmpfs",
    ) {
        return;
    }
    let env = Env::new();
    // In the work directory (where the test finds its writers by their arguments);
    // dropped after the sweep of the writers, before the work directory is removed.
    let Some(fs) = Tmpfs::mount(env.work().join("fs"), "16m") else {
        return;
    };
    let _sweep = Sweep(&env);
    let log = fs.path().join("b.log");
    add_bursts(&env, &log);
    env.ok(&["start", "b"]);
    let pid = env.pid("b").unwrap();
    assert_eq!(burst(&env, 1, 100), 100);
    assert!(wait_until(LONG, || read(&log).lines().count() == 100));
    let filler = fill(fs.path());
    // 10,000 lines of 1 KB into a full file system: more than the pipe and the queue.
    let written = burst(&env, 2, 10_000);
    stays_up(&env, "b", pid, Duration::from_secs(2));
    // Whatever the writer tried meanwhile, the file holds whole lines only (a write
    // that fails midway leaves a torn line, which is cut off again).
    let (next, lost, _) = account(&read(&log));
    assert_eq!(lost, 0);
    assert!(
        next < written,
        "all {written} lines fit in a full file system?"
    );
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(LONG, || read(&log).contains(" lines lost: ")),
        "no marker: {:?}",
        read(&log).lines().last()
    );
    let total = burst(&env, 3, 100);
    let last = format!("line {} ", total - 1);
    assert!(wait_until(LONG, || read(&log).contains(&last)));
    let (next, lost, markers) = account(&read(&log));
    assert_eq!(next, total, "{markers:?}");
    assert!(lost > 0, "{markers:?}");
    for m in &markers {
        assert!(
            m.contains("could not be written (no space left on device)"),
            "{markers:?}"
        );
    }
    assert_eq!(env.pid("b"), Some(pid));
    env.ok(&["stop", "b"]);
    assert_writers_end(&env);
}

#[test]
fn the_writer_holds_nothing_the_tend_that_started_it_inherited() {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
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
        "echo up; exec sleep 60",
    ]);
    // A pipe whose reader waits for its end (a CI runner's, say), handed to `tend start`
    // as its fd 3.
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into a valid two-element array.
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(made, 0);
    // SAFETY: both were just created and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut c = env.cmd();
    c.args(["start", "s"]);
    let raw_w = w.as_raw_fd();
    // SAFETY: only dup2, async-signal-safe, between fork and exec. The copy at fd 3 is
    // not close-on-exec, so tend inherits it; the original is, so no child another test
    // starts meanwhile gets it.
    unsafe {
        c.pre_exec(move || match libc::dup2(raw_w, 3) {
            3 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let out = run(c);
    assert_eq!(out.code, 0, "{out:?}");
    drop(w);
    assert!(
        wait_until(LONG, || writers(&env).len() == 2),
        "{:?}",
        writers(&env)
    );
    // tend has exited and the service never had it: only a writer could still hold it.
    let ended = wait_until(LONG, || {
        let mut b = [0u8; 1];
        // SAFETY: a non-blocking read of our own pipe into a valid one-byte buffer.
        unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) == 0 }
    });
    assert!(
        ended,
        "the pipe's write end is still held: {:?}",
        writers(&env)
    );
    assert!(wait_until(LONG, || read(&env.log_path("s")).contains("up")));
    env.ok(&["stop", "s"]);
    assert_writers_end(&env);
}

/// The pipe a process's descriptor `fd` is (`pipe:[INODE]`), if it is one.
fn pipe_of(pid: i32, fd: i32) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_string_lossy().into_owned();
    link.starts_with("pipe:[").then_some(link)
}

/// This home's writer processes that hold `pid`'s stdout pipe as their fd 0 (the pipe
/// they read): (pid, is the worker).
fn holders(env: &Env, pid: i32) -> Vec<(i32, bool)> {
    let Some(pipe) = pipe_of(pid, 1) else {
        return Vec::new();
    };
    writers(env)
        .into_iter()
        .filter(|(w, _)| pipe_of(*w, 0).as_deref() == Some(pipe.as_str()))
        .collect()
}

/// Exactly one keeper and one worker hold `pid`'s stdout pipe.
fn one_pair(env: &Env, pid: i32) -> bool {
    let h = holders(env, pid);
    h.len() == 2 && h.iter().filter(|w| w.1).count() == 1
}

/// Whether this process may take a descriptor of a child of its own (`pidfd_getfd`,
/// which needs ptrace access): the daemon takes its services' pipes so. Where a
/// sandbox refuses it (a seccomp profile, a kernel before 5.6), the daemon cannot bring
/// a writer back, and says so in its log; the tests of that skip.
fn can_take_descriptors() -> bool {
    let child = KillOnDrop(
        std::process::Command::new("sleep")
            .arg("60")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("sleep"),
    );
    // SAFETY: pidfd_open on the pid of our own unreaped child, flags 0.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.0.id() as i32, 0) } as i32;
    let ok = pidfd >= 0 && {
        // SAFETY: pidfd_getfd on the pidfd just opened, for the child's fd 1, flags 0.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, 1, 0) } as i32;
        // SAFETY: closing descriptors this function just got and owns.
        unsafe {
            if fd >= 0 {
                libc::close(fd);
            }
            libc::close(pidfd);
        }
        fd >= 0
    };
    if !ok {
        not_run("pidfd_getfd is refused here, so the daemon cannot take a service's pipe");
    }
    ok
}

#[test]
fn under_the_daemon_a_writer_whose_two_processes_die_together_comes_back() {
    if !can_take_descriptors() {
        return;
    }
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
        TICKER,
    ]);
    env.ok(&["daemon"]);
    env.ok(&["start", "tick"]);
    let pid = env.pid("tick").unwrap();
    let log = env.log_path("tick");
    assert!(wait_until(LONG, || ticks(&log).len() >= 5));
    let both = writers(&env);
    assert_eq!(both.len(), 2, "{both:?}");
    // At the same instant as far as they can tell: stopped first, neither can see the
    // other go and start a new partner in between.
    for sig in [libc::SIGSTOP, libc::SIGKILL] {
        for (w, _) in &both {
            // SAFETY: kill on the pids of this test's own writers, just read from /proc.
            unsafe {
                libc::kill(*w, sig);
            }
        }
    }
    let old = |w: &(i32, bool)| both.iter().any(|b| b.0 == w.0);
    // The daemon reaps the last of them and starts a new writer on the same pipe.
    assert!(
        wait_until(LONG, || one_pair(&env, pid)
            && !holders(&env, pid).iter().any(old)),
        "no new writer on the service's pipe: {:?}\ndaemon.log:\n{}",
        writers(&env),
        env.daemon_log()
    );
    let at_revival = ticks(&log).last().copied().unwrap();
    assert!(
        wait_until(LONG, || ticks(&log)
            .last()
            .is_some_and(|&t| t >= at_revival + 20)),
        "the log stopped growing:\n{}",
        read(&log)
    );
    // The lines written while nobody read waited in the pipe: none missing after the
    // restart line.
    assert!(read(&log).contains("tend: log writer restarted"));
    no_gap_after_the_last_restart(&log);
    stays_up(&env, "tick", pid, Duration::from_millis(500));
    let events = crate::faults::events(&env, "tick");
    let revivals: Vec<&(String, String)> =
        events.iter().filter(|(k, _)| k == "log-writer").collect();
    assert_eq!(revivals.len(), 1, "{events:?}");
    assert!(
        revivals[0].1.starts_with(&format!("pid {pid}: ")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|(k, _)| k == "restart" || k == "exit"),
        "{events:?}"
    );
    assert!(
        env.daemon_log().contains("log writer gone"),
        "{}",
        env.daemon_log()
    );
    assert!(one_pair(&env, pid), "{:?}", writers(&env));
    env.ok(&["stop", "tick"]);
    assert_writers_end(&env);
    env.ok(&["daemon", "stop"]);
}

#[test]
fn under_the_daemon_a_writer_found_alive_is_never_doubled() {
    if !can_take_descriptors() {
        return;
    }
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
        TICKER,
    ]);
    env.ok(&["daemon"]);
    env.ok(&["start", "tick"]);
    let pid = env.pid("tick").unwrap();
    let log = env.log_path("tick");
    assert!(wait_until(LONG, || ticks(&log).len() >= 5));
    // The keeper is the daemon's child: the daemon reaps it and looks at the writers
    // while the worker still runs (and starts a new keeper).
    let keeper = keepers(&env);
    assert_eq!(keeper.len(), 1, "{:?}", writers(&env));
    sigkill(keeper[0]);
    assert!(
        wait_until(LONG, || one_pair(&env, pid)
            && !holders(&env, pid).iter().any(|w| w.0 == keeper[0])),
        "{:?}",
        writers(&env)
    );
    // The daemon's look follows the reaping within a fraction of a second; for 2 s,
    // never a second keeper or a second worker: no writer started by the daemon. (The
    // new keeper may be out of sight for a moment: on a busy machine one was seen in the
    // kernel (state D, most likely moving into the writers' cgroup) for over 2 s, its
    // descriptors unreadable in /proc. It is waited for below.)
    let window = Duration::from_secs(2);
    let mut seen = Vec::new();
    let held = holds_for(window, || {
        let h = holders(&env, pid);
        let workers = h.iter().filter(|w| w.1).count();
        let ok = workers <= 1 && h.len() - workers <= 1;
        if seen.last() != Some(&h) {
            seen.push(h);
        }
        ok
    });
    let about = |w: i32| {
        let stat = read(Path::new(&format!("/proc/{w}/stat")));
        let cmd = read(Path::new(&format!("/proc/{w}/cmdline"))).replace('\0', " ");
        format!("{w}: {stat} {cmd}")
    };
    // Every child of the writers seen, whatever it is now (a zombie, not yet exec'd).
    let children: Vec<String> = seen
        .iter()
        .flatten()
        .flat_map(|w| {
            std::fs::read_dir(format!("/proc/{}/task", w.0))
                .into_iter()
                .flatten()
                .flatten()
                .flat_map(|t| {
                    read(&t.path().join("children"))
                        .split_whitespace()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .map(|c| about(c.parse().unwrap_or(0)))
        .collect();
    assert!(
        held,
        "a second keeper or worker on the pipe within {window:?}: {seen:?}\n{}\nchildren of these: {children:?}\ndaemon.log:\n{}\nthe log's lines other than ticks (a writer's own words):\n{}",
        seen.iter()
            .flatten()
            .map(|w| about(w.0))
            .collect::<Vec<_>>()
            .join("\n"),
        env.daemon_log(),
        read(&log)
            .lines()
            .filter(|l| !l.contains("tick "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        wait_until(LONG, || one_pair(&env, pid)),
        "not one keeper and one worker after the window: {:?}",
        holders(&env, pid)
    );
    let events = crate::faults::events(&env, "tick");
    assert!(!events.iter().any(|(k, _)| k == "log-writer"), "{events:?}");
    let at = ticks(&log).last().copied().unwrap();
    assert!(wait_until(LONG, || ticks(&log)
        .last()
        .is_some_and(|&t| t >= at + 10)));
    stays_up(&env, "tick", pid, Duration::from_millis(200));
    env.ok(&["stop", "tick"]);
    assert_writers_end(&env);
    env.ok(&["daemon", "stop"]);
}

/// A small random number generator (xorshift), seeded from the clock: the seed is
/// printed, so a failing run can be told apart.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("random seed {seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

#[test]
fn under_the_daemon_a_storm_of_writer_kills_ends_with_a_writer_and_the_service_untouched() {
    if !can_take_descriptors() {
        return;
    }
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
        TICKER,
    ]);
    env.ok(&["daemon"]);
    env.ok(&["start", "tick"]);
    let pid = env.pid("tick").unwrap();
    let log = env.log_path("tick");
    assert!(wait_until(LONG, || ticks(&log).len() >= 5));
    // For 10 s, every 20 to 200 ms: SIGKILL a random writer process of the home (a
    // keeper, a worker, or a partner one of them is starting), or, one time in four,
    // all of them at once.
    let mut rng = Rng::new();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let mut kills = 0;
    while std::time::Instant::now() < end {
        let w = writers(&env);
        if !w.is_empty() {
            if rng.range(0, 4) == 0 {
                w.iter().for_each(|(p, _)| sigkill(*p));
                kills += w.len();
            } else {
                sigkill(w[rng.range(0, w.len() as u64) as usize].0);
                kills += 1;
            }
        }
        // The pace of the storm, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(rng.range(20, 200)));
    }
    assert!(kills >= 20, "only {kills} kills");
    // A writer is back (one keeper, one worker, on the service's pipe) and the log
    // grows again.
    assert!(
        wait_until(LONG, || one_pair(&env, pid)),
        "no writer on the service's pipe: {:?}\ndaemon.log:\n{}",
        writers(&env),
        env.daemon_log()
    );
    let at = ticks(&log).last().copied().unwrap_or(0);
    assert!(
        wait_until(LONG, || ticks(&log).last().is_some_and(|&t| t >= at + 20)),
        "the log stopped growing after {kills} kills: {:?}\ndaemon.log:\n{}",
        writers(&env),
        env.daemon_log()
    );
    // The service was never restarted nor signalled.
    stays_up(&env, "tick", pid, Duration::from_millis(500));
    let events = crate::faults::events(&env, "tick");
    assert!(
        !events
            .iter()
            .any(|(k, _)| k == "restart" || k == "exit" || k == "stop"),
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|(k, _)| k == "start").count(), 1);
    env.ok(&["stop", "tick"]);
    assert_writers_end(&env);
    env.ok(&["daemon", "stop"]);
}

/// Stops, then SIGKILLs, every writer process of the home: both at once as far as they
/// can tell (neither sees the other go and starts a new partner in between). The pids.
fn kill_all_writers(env: &Env) -> Vec<i32> {
    let all: Vec<i32> = writers(env).into_iter().map(|w| w.0).collect();
    for sig in [libc::SIGSTOP, libc::SIGKILL] {
        for w in &all {
            // SAFETY: kill on the pids of this test's own writers, just read from /proc.
            unsafe {
                libc::kill(*w, sig);
            }
        }
    }
    all
}

/// Lines with `tag` (`out`, `err`; empty: none) and `word N` after the last restart
/// line of `log`: their numbers, in the order written.
fn after_restart(log: &Path, tag: &str, word: &str) -> Vec<u64> {
    let text = read(log);
    let mut out: Vec<u64> = text
        .lines()
        .rev()
        .take_while(|l| !l.contains("tend: log writer restarted"))
        .filter_map(|l| {
            let (_, t) = split_time(l)?;
            let t = match tag {
                "" => t,
                tag => t.strip_prefix(tag)?.strip_prefix(' ')?,
            };
            number(t, word)
        })
        .collect();
    out.reverse();
    out
}

#[test]
fn under_the_daemon_a_writer_of_two_pipes_comes_back_on_both() {
    if !can_take_descriptors() {
        return;
    }
    let env = Env::new();
    let _sweep = Sweep(&env);
    env.ok(&[
        "add",
        "two",
        "--log-timestamps",
        "stream",
        "--",
        "sh",
        "-c",
        "i=0; while :; do echo \"tick $i\"; echo \"etick $i\" >&2; i=$((i+1)); sleep 0.02; done",
    ]);
    env.ok(&["daemon"]);
    env.ok(&["start", "two"]);
    let pid = env.pid("two").unwrap();
    let log = env.log_path("two");
    assert!(wait_until(LONG, || read(&log).lines().count() >= 10));
    let (out, err) = (pipe_of(pid, 1).unwrap(), pipe_of(pid, 2).unwrap());
    assert_ne!(out, err);
    let old = kill_all_writers(&env);
    assert_eq!(old.len(), 2, "{old:?}");
    assert!(
        wait_until(LONG, || one_pair(&env, pid)
            && !holders(&env, pid).iter().any(|w| old.contains(&w.0))),
        "no new writer: {:?}\ndaemon.log:\n{}",
        writers(&env),
        env.daemon_log()
    );
    // Both new processes hold both pipes: stdout's as fd 0, stderr's as fd 1.
    for (w, _) in holders(&env, pid) {
        assert_eq!(pipe_of(w, 1).as_deref(), Some(err.as_str()), "writer {w}");
    }
    // Both streams go on after the restart line, each without a gap.
    assert!(
        wait_until(LONG, || after_restart(&log, "out", "tick ").len() >= 20
            && after_restart(&log, "err", "etick ").len() >= 20),
        "{}",
        read(&log)
    );
    for (tag, word) in [("out", "tick "), ("err", "etick ")] {
        let n = after_restart(&log, tag, word);
        for w in n.windows(2) {
            assert_eq!(w[0] + 1, w[1], "a gap in {tag} after the restart: {n:?}");
        }
    }
    stays_up(&env, "two", pid, Duration::from_millis(200));
    env.ok(&["stop", "two"]);
    assert_writers_end(&env);
    env.ok(&["daemon", "stop"]);
}

/// Whether this process may take a descriptor of a process that is not its descendant,
/// as a daemon coming up does with services started before it: root may, and so may
/// anyone where Yama does not restrict ptrace to descendants.
fn can_take_strangers_descriptors() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let ok = (root && yama < 3) || yama == 0;
    if !ok {
        not_run(&format!(
            "Yama's ptrace_scope {yama} keeps a daemon from taking a descriptor of a \
             service it did not start"
        ));
    }
    ok && can_take_descriptors()
}

#[test]
fn a_daemon_coming_up_brings_back_a_writer_that_died_before_it() {
    if !can_take_strangers_descriptors() {
        return;
    }
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
        TICKER,
    ]);
    // Started by the command itself, no daemon: nobody brings its writer back.
    env.ok(&["start", "tick"]);
    let pid = env.pid("tick").unwrap();
    let log = env.log_path("tick");
    assert!(wait_until(LONG, || ticks(&log).len() >= 5));
    assert_eq!(kill_all_writers(&env).len(), 2);
    assert!(wait_until(LONG, || writers(&env).is_empty()));
    // The daemon adopts the service and finds its pipe without a reader.
    env.ok(&["daemon"]);
    assert!(
        wait_until(LONG, || one_pair(&env, pid)),
        "no new writer: {:?}\ndaemon.log:\n{}",
        writers(&env),
        env.daemon_log()
    );
    assert!(wait_until(LONG, || after_restart(&log, "", "tick ").len() >= 20));
    let n = after_restart(&log, "", "tick ");
    for w in n.windows(2) {
        assert_eq!(w[0] + 1, w[1], "a gap after the restart: {n:?}");
    }
    let events = crate::faults::events(&env, "tick");
    assert!(
        events
            .iter()
            .any(|(k, d)| k == "log-writer" && d.starts_with(&format!("pid {pid}: "))),
        "{events:?}"
    );
    stays_up(&env, "tick", pid, Duration::from_millis(200));
    env.ok(&["stop", "tick"]);
    assert_writers_end(&env);
    env.ok(&["daemon", "stop"]);
}

#[test]
fn under_a_daemon_that_did_not_start_it_a_writer_whose_two_processes_die_together_comes_back() {
    if !can_take_strangers_descriptors() {
        return;
    }
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
        TICKER,
    ]);
    // Started by the command itself: the writer is no descendant of the daemon that
    // comes up next, and its processes' ends are not reaped there.
    env.ok(&["start", "tick"]);
    let pid = env.pid("tick").unwrap();
    let log = env.log_path("tick");
    assert!(wait_until(LONG, || ticks(&log).len() >= 5));
    env.ok(&["daemon"]);
    assert!(wait_until(LONG, || env
        .daemon_log()
        .contains("daemon ready")));
    assert!(one_pair(&env, pid), "{:?}", writers(&env));
    let old = kill_all_writers(&env);
    assert_eq!(old.len(), 2, "{old:?}");
    assert!(
        wait_until(LONG, || one_pair(&env, pid)
            && !holders(&env, pid).iter().any(|w| old.contains(&w.0))),
        "no new writer: {:?}\ndaemon.log:\n{}",
        writers(&env),
        env.daemon_log()
    );
    assert!(wait_until(LONG, || after_restart(&log, "", "tick ").len() >= 20));
    let n = after_restart(&log, "", "tick ");
    for w in n.windows(2) {
        assert_eq!(w[0] + 1, w[1], "a gap after the restart: {n:?}");
    }
    let events = crate::faults::events(&env, "tick");
    assert_eq!(
        events.iter().filter(|(k, _)| k == "log-writer").count(),
        1,
        "{events:?}"
    );
    stays_up(&env, "tick", pid, Duration::from_millis(200));
    env.ok(&["stop", "tick"]);
    assert_writers_end(&env);
    env.ok(&["daemon", "stop"]);
}
