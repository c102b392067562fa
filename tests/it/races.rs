//! tend itself interrupted or obstructed at the worst moment: SIGINT and SIGKILL during a
//! start, a commit that fails after the spawn, a database in the wrong journal mode, a
//! daemon SIGKILLed during restarts, `tend daemon` beside a loop of readers.
//!
//! The oracle throughout: a service's fixture runs with a marker unique to the test, so
//! every process running the service's program can be found in `/proc`. Every live one
//! must be the instance recorded in the database (same pid and start time), and every pid
//! that ever printed `STARTED` in the service's log must have been recorded by a `start`
//! or `restart` event: a service never runs, even briefly, without its record.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::util::*;

/// A small xorshift64* generator seeded from the clock (no crates needed); the seed is
/// printed so that a failing sequence of delays can be told apart from another.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let mut seed = nanos ^ (u64::from(std::process::id()) << 32);
        for b in test.bytes() {
            seed = seed.rotate_left(5) ^ u64::from(b);
        }
        let seed = seed | 1;
        eprintln!("{test}: random seed {seed:#x}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A marker no other test (or earlier run) uses.
fn unique_marker(rng: &mut Rng, tag: &str) -> String {
    format!("races-{tag}-{:016x}", rng.next())
}

/// `tend daemon`; asserts it worked and returns the daemon's pid from its message
/// (`daemon: started (pid N)`).
fn start_daemon(env: &Env) -> i32 {
    try_start_daemon(env).unwrap_or_else(|out| panic!("`tend daemon` failed: {out:?}"))
}

/// `tend daemon`: the daemon's pid, or what tend said when it did not start one.
fn try_start_daemon(env: &Env) -> Result<i32, Out> {
    let out = env.tend(&["daemon"]);
    let pid = out
        .stdout
        .strip_prefix("daemon: started (pid ")
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok());
    match pid {
        Some(pid) if out.code == 0 => Ok(pid),
        _ => Err(out),
    }
}

/// Sends `sig` to `pid`, a process this test started (directly or through tend).
fn signal(pid: i32, sig: i32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) touches no memory; the pid belongs to this test.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// `(state, start time)` of a process from `/proc/PID/stat`.
fn stat_of(pid: i32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: [0] is field 3 (state), so field 22 is [19].
    Some((f.first()?.to_string(), f.get(19)?.parse().ok()?))
}

/// The argv of `pid`, if it still exists.
fn argv_of(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Every live (non-zombie) process for which `pred(argv)` holds, as (pid, start time).
fn procs_where(pred: impl Fn(&[String]) -> bool) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Some(argv) = argv_of(pid) else {
            continue;
        };
        if !pred(&argv) {
            continue;
        }
        if let Some((state, start)) = stat_of(pid) {
            if state != "Z" && state != "X" {
                out.push((pid, start));
            }
        }
    }
    out.sort_unstable();
    out
}

/// Live processes running the fixture with `marker` in their argv.
fn marker_procs(marker: &str) -> Vec<(i32, u64)> {
    procs_where(|argv| argv.iter().any(|a| a == marker))
}

/// Live processes whose argv names this test's home: tend commands, a daemon, and
/// processes forked by them that are still held at the gate (they have tend's argv).
fn home_procs(env: &Env) -> Vec<(i32, u64)> {
    let home = env.home().to_string_lossy().into_owned();
    procs_where(|argv| argv.contains(&home))
}

/// Kills, when the test ends however it ends, every process that carries one of the
/// test's markers or its home in its argv. They are all the test's own: the markers hold
/// 64 random bits and the home is a fresh temporary directory. `Env` stops what is
/// recorded; this catches what a failing test found unrecorded (and on old code, a
/// daemon whose lock `Env` cannot see).
struct Sweep {
    markers: Vec<String>,
    home: String,
}

impl Sweep {
    fn new(env: &Env, markers: &[&str]) -> Sweep {
        Sweep {
            markers: markers.iter().map(|m| m.to_string()).collect(),
            home: env.home().to_string_lossy().into_owned(),
        }
    }

    fn ours(&self) -> Vec<(i32, u64)> {
        procs_where(|argv| {
            argv.iter()
                .any(|a| *a == self.home || self.markers.contains(a))
        })
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        wait_until(Duration::from_secs(10), || {
            let left = self.ours();
            for &(pid, _) in &left {
                signal(pid, libc::SIGKILL);
            }
            left.is_empty()
        });
    }
}

/// Opens the state database for reading only, as a test looking on.
fn open_ro(db: &Path) -> rusqlite::Connection {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db read-only");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn
}

/// The recorded instance of `name` straight from the database: (pid, start time).
fn recorded(env: &Env, name: &str) -> Option<(i32, u64)> {
    let conn = open_ro(&env.db());
    let row = conn.query_row(
        "SELECT i.pid, i.start_time FROM instances i JOIN services s ON s.id = i.service_id \
         WHERE s.name = ?1",
        [name],
        |r| Ok((r.get::<_, i32>(0)?, r.get::<_, i64>(1)? as u64)),
    );
    match row {
        Ok(v) => Some(v),
        Err(rusqlite::Error::QueryReturnedNoRows) => None,
        Err(e) => panic!("reading the instance of {name}: {e}"),
    }
}

/// The invariant: every live process with `marker` is the recorded instance of `name`
/// (so there is at most one). `Err` describes a violation.
fn check_recorded(env: &Env, name: &str, marker: &str) -> Result<(), String> {
    let live = marker_procs(marker);
    let rec = recorded(env, name);
    let strangers: Vec<&(i32, u64)> = live.iter().filter(|p| Some(**p) != rec).collect();
    if strangers.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{name}: live processes with marker {marker} that are not the recorded instance: \
             {strangers:?} (recorded: {rec:?}, all live: {live:?})"
        ))
    }
}

/// The pids that printed `STARTED pid=N` in `name`'s log: every exec of the program.
fn started_pids(env: &Env, name: &str) -> Vec<i32> {
    read(&env.log_path(name))
        .lines()
        .filter_map(|l| l.strip_prefix("STARTED pid="))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The pids recorded as started (`start` or `restart` events, detail `pid N ...`).
fn recorded_start_pids(env: &Env, name: &str) -> BTreeSet<i32> {
    let conn = open_ro(&env.db());
    let mut stmt = conn
        .prepare("SELECT detail FROM events WHERE service = ?1 AND kind IN ('start', 'restart')")
        .expect("prepare");
    let details: Vec<String> = stmt
        .query_map([name], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    details
        .iter()
        .filter_map(|d| d.strip_prefix("pid "))
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse().ok())
        })
        .collect()
}

/// Every process that ever ran `name`'s program was recorded as started.
fn assert_every_exec_recorded(env: &Env, name: &str) {
    let started = started_pids(env, name);
    let rec = recorded_start_pids(env, name);
    let unrecorded: Vec<i32> = started
        .iter()
        .copied()
        .filter(|p| !rec.contains(p))
        .collect();
    assert!(
        unrecorded.is_empty(),
        "{name}: these pids ran the program (STARTED in the log) but were never recorded \
         by a start or restart event: {unrecorded:?}\n{} execs in all; events:\n{}",
        started.len(),
        env.tend(&["events", name, "-n", "100000"]).stdout
    );
}

/// How long a `tend start` + `tend stop` of `name` takes here, at most over a few runs,
/// so that random interruptions cover the whole of a start (on a loaded 2-core machine a
/// debug `tend start` takes 10-30 ms, most of it before the fork).
fn calibrate_start(env: &Env, name: &str) -> Duration {
    let mut longest = Duration::ZERO;
    for _ in 0..3 {
        let t = Instant::now();
        env.ok(&["start", name]);
        longest = longest.max(t.elapsed());
        env.ok(&["stop", name]);
    }
    longest
}

/// Tries 1 and 2: `tend start` interrupted by `sig` at a random instant, 50 times.
fn interrupted_starts(test: &str, sig: i32) {
    const TRIES: usize = 50;
    let env = Env::new();
    let mut rng = Rng::new(test);
    let marker = unique_marker(&mut rng, test.trim_start_matches("races-"));
    let _sweep = Sweep::new(&env, &[&marker]);
    env.add_fixture("svc", &["--stop-timeout", "5s"], &["--marker", &marker]);
    let span = calibrate_start(&env, "svc");
    // Up to the whole of a start, and at least the 0-6 ms asked for.
    let max_us = (span.as_micros() as u64).clamp(6_000, 80_000);
    eprintln!("{test}: a start takes up to {span:?}; delays 0..={max_us} us");

    let (mut running, mut stale, mut none, mut completed) = (0, 0, 0, 0);
    for i in 0..TRIES {
        let mut c = env.cmd();
        c.args(["start", "svc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn tend start");
        std::thread::sleep(Duration::from_micros(rng.between(0, max_us)));
        signal(child.id() as i32, sig);
        let status = child.wait().expect("wait for tend start");
        if status.success() {
            completed += 1;
        }

        // No unrecorded instance, at once: a process only runs the program after its
        // record is committed, so there is no moment at which a stranger may be seen.
        if let Err(e) = check_recorded(&env, "svc", &marker) {
            panic!("try {i} ({status:?}): {e}");
        }
        // Whatever was held at the gate (tend's argv, no marker) goes away on its own now
        // that its tend is gone; nothing of this home stays behind.
        let mut left = Vec::new();
        assert!(
            wait_until(Duration::from_secs(10), || {
                left = home_procs(&env);
                left.is_empty()
            }),
            "try {i}: processes of this home still alive after tend died: {left:?}"
        );
        // Still true once the stragglers are gone.
        if let Err(e) = check_recorded(&env, "svc", &marker) {
            panic!("try {i} ({status:?}), after the gate closed: {e}");
        }
        match recorded(&env, "svc") {
            Some((pid, _)) if alive(pid) => running += 1,
            Some(rec) => {
                // Only SIGKILL can stop tend between the commit and opening the gate; a
                // SIGINT is held off until the program runs.
                assert_ne!(
                    sig,
                    libc::SIGINT,
                    "try {i} ({status:?}): recorded {rec:?}, which never ran"
                );
                stale += 1;
            }
            None => none += 1,
        }

        let out = env.ok(&["stop", "svc"]);
        assert!(
            marker_procs(&marker).is_empty(),
            "try {i}: a process with the marker survived `tend stop`: {:?}\n{out:?}",
            marker_procs(&marker)
        );
        assert_eq!(
            recorded(&env, "svc"),
            None,
            "try {i}: `tend stop` left a record: {out:?}"
        );
    }
    assert_every_exec_recorded(&env, "svc");
    eprintln!(
        "{test}: {TRIES} tries: {completed} tend start finished despite the signal, \
         {running} left a running instance, {stale} a record of a process that never ran, \
         {none} nothing"
    );
}

/// 1. Ctrl-C at any instant of `tend start`: either nothing ran, or the instance is
///    recorded and running (the signal is held off from before the fork until exec).
#[test]
fn sigint_during_start_leaves_no_unrecorded_instance() {
    interrupted_starts("races-sigint", libc::SIGINT);
}

/// 2. SIGKILL, which tend cannot defer, at any instant of `tend start`: the gate closes
///    with tend, so a process that was not recorded never runs the program.
#[test]
fn sigkill_during_start_leaves_no_unrecorded_instance() {
    interrupted_starts("races-sigkill", libc::SIGKILL);
}

/// Asserts stderr is exactly one line, starting with `tend: `.
fn assert_one_error_line(out: &Out) {
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr: {out:?}");
    assert!(lines[0].starts_with("tend: "), "{out:?}");
}

/// 3. The start's COMMIT fails after the process was forked (a deferred foreign key
///    violated by a trigger on `instances`): the held process is killed before exec,
///    nothing is stored, and tend says so in one line.
#[test]
fn failing_commit_after_spawn_runs_nothing() {
    let env = Env::new();
    let mut rng = Rng::new("races-commit");
    let marker = unique_marker(&mut rng, "commit");
    let _sweep = Sweep::new(&env, &[&marker]);
    env.add_fixture("svc", &[], &["--marker", &marker]);
    {
        let conn = rusqlite::Connection::open(env.db()).expect("open db");
        conn.execute_batch(
            "CREATE TABLE races_parent (id INTEGER PRIMARY KEY);
             CREATE TABLE races_child (
                 parent INTEGER REFERENCES races_parent(id) DEFERRABLE INITIALLY DEFERRED
             );
             CREATE TRIGGER races_fail AFTER INSERT ON instances
             BEGIN INSERT INTO races_child VALUES (42); END;",
        )
        .expect("stage the failing commit");
    }
    let before = dump(&env.db());

    let out = env.tend(&["start", "svc"]);
    assert_eq!(out.code, 6, "a database error: {out:?}");
    assert_one_error_line(&out);
    assert!(
        out.stderr.to_lowercase().contains("foreign key"),
        "names the failure: {out:?}"
    );
    assert!(
        marker_procs(&marker).is_empty(),
        "the held process ran the program: {:?}",
        marker_procs(&marker)
    );
    let mut left = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            left = home_procs(&env);
            left.is_empty()
        }),
        "processes of this home still alive: {left:?}"
    );
    assert!(marker_procs(&marker).is_empty());
    assert!(
        started_pids(&env, "svc").is_empty(),
        "the program ran: log:\n{}",
        read(&env.log_path("svc"))
    );
    assert_eq!(
        dump(&env.db()),
        before,
        "the failed start changed the database"
    );

    // Without the trigger everything works again.
    {
        let conn = rusqlite::Connection::open(env.db()).expect("open db");
        conn.execute_batch(
            "DROP TRIGGER races_fail; DROP TABLE races_child; DROP TABLE races_parent;",
        )
        .expect("unstage");
    }
    let out = env.ok(&["list"]);
    assert!(out.stdout.contains("svc"), "{out:?}");
    env.ok(&["start", "svc"]);
    let pid = env.pid("svc").expect("running now");
    let live: Vec<i32> = marker_procs(&marker).iter().map(|p| p.0).collect();
    assert_eq!(live, vec![pid]);
    env.ok(&["stop", "svc"]);
    assert_every_exec_recorded(&env, "svc");
}

/// 4. The database was switched to a rollback journal and another process holds a read
///    transaction, so it cannot be switched back to WAL: tend refuses (exit 6, one line),
///    starts nothing and changes nothing; once the reader lets go, tend switches it back.
#[test]
fn journal_mode_with_held_read_lock_is_refused() {
    let env = Env::new();
    let mut rng = Rng::new("races-journal");
    let marker = unique_marker(&mut rng, "journal");
    let _sweep = Sweep::new(&env, &[&marker]);
    env.add_fixture("svc", &[], &["--marker", &marker]);
    let reader = rusqlite::Connection::open(env.db()).expect("open db");
    let mode: String = reader
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .expect("switch to DELETE");
    assert_eq!(mode, "delete");
    let before = dump(&env.db());
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM services;")
        .expect("begin");
    // The read lock is only taken by a statement that reads.
    let n: i64 = reader
        .query_row("SELECT count(*) FROM services", [], |r| r.get(0))
        .expect("read inside the transaction");
    assert_eq!(n, 1);

    let t = Instant::now();
    let out = env.tend(&["start", "svc"]);
    let took = t.elapsed();
    assert_eq!(out.code, 6, "{out:?}");
    assert_one_error_line(&out);
    assert!(
        out.stderr.starts_with(&format!(
            "tend: database {} is in journal mode \"delete\", not WAL, and cannot be \
             switched back now",
            env.db().display()
        )),
        "{out:?}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(marker_procs(&marker).is_empty());
    assert!(started_pids(&env, "svc").is_empty());
    assert_eq!(
        dump(&env.db()),
        before,
        "the refused start changed the database"
    );
    let mode: String = reader
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "delete", "still in rollback-journal mode while held");

    reader.execute_batch("COMMIT").expect("end the read");
    drop(reader);
    env.ok(&["start", "svc"]);
    let pid = env.pid("svc").expect("running");
    assert_eq!(
        marker_procs(&marker)
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![pid]
    );
    let fresh = rusqlite::Connection::open(env.db()).expect("open db");
    let mode: String = fresh
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal", "tend switched the file back to WAL");
    drop(fresh);
    env.ok(&["stop", "svc"]);
}

/// 5. `tend daemon` is never refused because a CLI command was looking at the lock: 50
///    daemon starts and stops beside a loop of `list`, `status` and `daemon status`.
#[test]
fn daemon_start_never_refused_beside_cli_loop() {
    const ROUNDS: usize = 50;
    /// Threads running CLI commands in a loop.
    const READERS: usize = 1;
    let env = Env::new();
    let _sweep = Sweep::new(&env, &[]);
    env.add_fixture("svc", &[], &[]);
    let stop = AtomicBool::new(false);
    let reader_failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut daemon_failures = Vec::new();
    let mut reads = 0usize;
    std::thread::scope(|s| {
        let loopers: Vec<_> = (0..READERS)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        for (args, ok) in [
                            (&["list"][..], &[0][..]),
                            (&["status", "svc"][..], &[3][..]),
                            (&["daemon", "status"][..], &[0, 3][..]),
                        ] {
                            let out = env.tend(args);
                            n += 1;
                            if !ok.contains(&out.code) {
                                reader_failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("tend {args:?}: {out:?}"));
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        for i in 0..ROUNDS {
            let out = env.tend(&["daemon"]);
            if out.code != 0 {
                daemon_failures.push(format!("round {i}: tend daemon: {out:?}"));
                continue;
            }
            let out = env.tend(&["daemon", "stop"]);
            if out.code != 0 {
                daemon_failures.push(format!("round {i}: tend daemon stop: {out:?}"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for l in loopers {
            reads += l.join().expect("reader loop");
        }
    });
    eprintln!("races-daemon-loop: {reads} CLI commands ran beside {ROUNDS} daemon starts");
    assert!(
        daemon_failures.is_empty(),
        "{} of {ROUNDS} daemon starts/stops failed:\n{}\ndaemon.log:\n{}",
        daemon_failures.len(),
        daemon_failures.join("\n"),
        env.daemon_log()
    );
    let reader_failures = reader_failures.into_inner().unwrap();
    assert!(
        reader_failures.is_empty(),
        "CLI commands beside the daemon failed:\n{}",
        reader_failures.join("\n")
    );
    assert!(reads > 0, "the reader loop never ran");
}

/// 6. A daemon SIGKILLed at random instants while three services crash-loop: after each
///    kill every live process of a service is its recorded instance, every process that
///    ever ran was recorded, and a plain `tend stop --all` leaves nothing behind.
#[test]
fn daemon_sigkilled_during_restarts_leaves_only_recorded_instances() {
    const ROUNDS: usize = 12;
    let env = Env::new();
    let mut rng = Rng::new("races-daemon-kill");
    let services: Vec<(String, String)> = [("a", 20), ("b", 35), ("c", 50)]
        .iter()
        .map(|(name, ms)| {
            let marker = unique_marker(&mut rng, &format!("dk-{name}"));
            env.add_fixture(
                name,
                &[
                    "--restart",
                    "always",
                    "--restart-delay",
                    "0",
                    "--start-limit",
                    "0",
                ],
                &["--marker", &marker, "--exit-after", &ms.to_string()],
            );
            (name.to_string(), marker)
        })
        .collect();
    let markers: Vec<&str> = services.iter().map(|(_, m)| m.as_str()).collect();
    let _sweep = Sweep::new(&env, &markers);

    for round in 0..ROUNDS {
        let dpid = start_daemon(&env);
        if round == 0 {
            // They exit on their own within 20-50 ms: tend may honestly find one gone.
            let out = env.tend(&["start", "a", "b", "c"]);
            assert!(
                out.code == 0 || (out.code == 1 && out.stderr.contains("exited at once")),
                "{out:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(rng.between(5, 150)));
        signal(dpid, libc::SIGKILL);
        assert!(
            wait_until(Duration::from_secs(10), || !alive(dpid)),
            "daemon {dpid} survived SIGKILL"
        );
        // Immediately: with the daemon dead nothing changes the records, and a process
        // that was not recorded never got past the gate, so there is no grace period.
        for (name, marker) in &services {
            if let Err(e) = check_recorded(&env, name, marker) {
                panic!(
                    "round {round}: {e}\nevents:\n{}\ndaemon.log:\n{}",
                    env.tend(&["events", name, "-n", "30"]).stdout,
                    env.daemon_log()
                );
            }
        }
        // What the dead daemon held at the gate exits on its own.
        let mut left = Vec::new();
        assert!(
            wait_until(Duration::from_secs(10), || {
                left = home_procs(&env);
                left.is_empty()
            }),
            "round {round}: processes of this home still alive: {left:?}"
        );
        for (name, marker) in &services {
            if let Err(e) = check_recorded(&env, name, marker) {
                panic!("round {round}, after the gate closed: {e}");
            }
        }
    }

    let mut execs = 0;
    for (name, _) in &services {
        assert_every_exec_recorded(&env, name);
        execs += started_pids(&env, name).len();
    }
    eprintln!("races-daemon-kill: {ROUNDS} daemons killed; {execs} execs, all recorded");
    assert!(execs >= 3, "the services never ran");

    env.ok(&["stop", "--all"]);
    for (name, marker) in &services {
        assert!(
            marker_procs(marker).is_empty(),
            "{name}: still running after `tend stop --all`: {:?}",
            marker_procs(marker)
        );
        assert_eq!(recorded(&env, name), None, "{name} is still recorded");
    }
}

/// 7. A CLI command sent the moment a daemon is SIGKILLed acts by itself: it is never
///    lost to a reset connection.
#[test]
fn cli_right_after_daemon_died_acts_itself() {
    const TRIES: usize = 40;
    let env = Env::new();
    let mut rng = Rng::new("races-after-kill");
    let marker = unique_marker(&mut rng, "after-kill");
    let _sweep = Sweep::new(&env, &[&marker]);
    env.add_fixture("svc", &[], &["--marker", &marker]);
    let mut failures = Vec::new();
    for i in 0..TRIES {
        let dpid = match try_start_daemon(&env) {
            Ok(pid) => pid,
            Err(out) => {
                failures.push(format!("try {i}: tend daemon: {out:?}"));
                continue;
            }
        };
        signal(dpid, libc::SIGKILL);
        // No waiting: the daemon may still be dying when the CLI looks.
        let out = env.tend(&["start", "svc"]);
        let said = out.stdout.contains("started") || out.stdout.contains("already running");
        if out.code != 0 || !said || out.stderr.to_lowercase().contains("connection reset") {
            failures.push(format!("try {i}: {out:?}"));
        }
        assert!(
            wait_until(Duration::from_secs(10), || !alive(dpid)),
            "daemon {dpid} survived SIGKILL"
        );
        if let Err(e) = check_recorded(&env, "svc", &marker) {
            panic!("try {i}: {e}");
        }
        env.ok(&["stop", "svc"]);
        assert!(marker_procs(&marker).is_empty(), "try {i}: stop left it");
    }
    assert!(
        failures.is_empty(),
        "{} of {TRIES} tries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_every_exec_recorded(&env, "svc");
}

/// Resumes (SIGCONT) a stopped daemon however the test ends; the env then kills it.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// 8. A daemon that does not accept a request (SIGSTOPped) makes the CLI give up after
///    its accept timeout, and the request, read once the daemon runs again, is dropped
///    rather than carried out behind the caller's back.
#[test]
fn request_to_stopped_daemon_expires_and_is_never_carried_out() {
    let env = Env::new();
    let mut rng = Rng::new("races-deadline");
    let marker = unique_marker(&mut rng, "deadline");
    let _sweep = Sweep::new(&env, &[&marker]);
    env.add_fixture("svc", &[], &["--marker", &marker]);
    let dpid = start_daemon(&env);
    let resume = Resume(dpid);
    signal(dpid, libc::SIGSTOP);
    assert!(
        wait_until(Duration::from_secs(10), || stat_of(dpid)
            .is_some_and(|(s, _)| s == "T")),
        "the daemon did not stop"
    );

    let t = Instant::now();
    let out = env.tend(&["start", "svc"]);
    let took = t.elapsed();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("did not accept the request"), "{out:?}");
    assert_one_error_line(&out);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "gave up after {took:?}"
    );
    assert!(marker_procs(&marker).is_empty());

    drop(resume);
    let dropped = "dropped a request its caller had given up on";
    assert!(
        wait_until(Duration::from_secs(20), || env
            .daemon_log()
            .contains(dropped)),
        "the daemon did not drop the expired request; daemon.log:\n{}",
        env.daemon_log()
    );
    // A wrongly carried-out request would show within this window.
    assert!(
        holds_for(Duration::from_millis(1000), || marker_procs(&marker)
            .is_empty()),
        "the abandoned start was carried out: {:?}",
        marker_procs(&marker)
    );
    assert_eq!(recorded(&env, "svc"), None);
    assert!(started_pids(&env, "svc").is_empty());
    assert!(recorded_start_pids(&env, "svc").is_empty());

    // The daemon is fine and takes the next request.
    let out = env.ok(&["start", "svc"]);
    assert!(out.stdout.contains("started"), "{out:?}");
    let pid = env.pid("svc").expect("running");
    assert_eq!(
        marker_procs(&marker)
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        vec![pid]
    );
    let st: serde_json::Value =
        serde_json::from_str(&env.ok(&["daemon", "status", "--json"]).stdout).expect("JSON");
    assert_eq!(st["pid"], dpid, "the same daemon: {st}");
    env.ok(&["stop", "svc"]);
}

/// The children of `pid` (every thread's), from /proc.
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// The session of `pid`.
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// True while `pid` sleeps in read(2) (system call 0 on x86-64, 63 on arm64).
fn waits_in_read(pid: i32) -> bool {
    let read_nr = if cfg!(target_arch = "aarch64") {
        "63"
    } else {
        "0"
    };
    stat_of(pid).is_some_and(|(state, _)| state == "S")
        && std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some(read_nr))
}

/// True while a request thread of daemon `pid` sleeps (nanosleep or clock_nanosleep):
/// in this test, only the busy handler of a commit that waits for the write lock.
fn request_thread_sleeps(pid: i32) -> bool {
    let sleeps: &[&str] = if cfg!(target_arch = "aarch64") {
        &["101", "115"]
    } else {
        &["35", "230"]
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "tend-request")
            && std::fs::read_to_string(t.path().join("syscall")).is_ok_and(|s| {
                s.split_whitespace()
                    .next()
                    .is_some_and(|n| sleeps.contains(&n))
            })
    })
}

/// Events of `name` of kind `kind` whose detail mentions `pid N`.
fn events_about(env: &Env, name: &str, kind: &str, pid: i32) -> Vec<String> {
    let conn = open_ro(&env.db());
    let mut stmt = conn
        .prepare("SELECT detail FROM events WHERE service = ?1 AND kind = ?2 ORDER BY id")
        .expect("prepare");
    let rows: Vec<String> = stmt
        .query_map(rusqlite::params![name, kind], |r| r.get::<_, String>(0))
        .expect("query")
        .flatten()
        .collect();
    let needle = format!("pid {pid}");
    rows.into_iter()
        .filter(|d| {
            d == &needle
                || d.starts_with(&format!("{needle}:"))
                || d.starts_with(&format!("{needle} "))
        })
        .collect()
}

/// 9. The process a start holds at the gate is SIGKILLed while the start's commit waits
///    for the write lock: the daemon's loop reaps it before any record names it. Its exit
///    is still accounted for exactly once (one `exit` event), the start says the service
///    is gone instead of calling it started, and the restart policy (`always`) starts a
///    new instance.
#[test]
fn gated_process_killed_while_the_commit_waits_is_one_exit() {
    let mut env = Env::new();
    // The daemon logs each child it reaps that is no instance at debug level: the test
    // waits for that line, so the exit surely reached the worker before the commit.
    env.vars.push(("RUST_LOG".into(), "debug".into()));
    let mut rng = Rng::new("races-gate-kill");
    let marker = unique_marker(&mut rng, "gate-kill");
    let _sweep = Sweep::new(&env, &[&marker]);
    env.add_fixture(
        "svc",
        &["--restart", "always", "--restart-delay", "0"],
        &["--marker", &marker],
    );
    let dpid = start_daemon(&env);
    let daemon_argv = argv_of(dpid).expect("daemon argv");

    // Hold the write lock: the start's commit waits for it (up to its busy timeout).
    let holder = rusqlite::Connection::open(env.db()).expect("open db");
    holder
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let mut start = env.cmd();
    start
        .args(["start", "svc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = start.spawn().expect("spawn tend start");

    // The held process: a child of the daemon (its intermediate has exited) still
    // running the daemon's own program, in a session it does not lead (the
    // intermediate's), blocked in read(2) on the gate.
    let mut gated = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            gated = children_of(dpid).into_iter().find(|&c| {
                argv_of(c).as_ref() == Some(&daemon_argv)
                    && session_of(c).is_some_and(|sid| sid != c && sid != dpid)
                    && waits_in_read(c)
            });
            gated.is_some()
        }),
        "no process held at the gate appeared; daemon.log:\n{}",
        env.daemon_log()
    );
    let gated = gated.expect("checked above");
    // ... and the start has pinned it and waits for the lock: its request thread sleeps
    // in the busy handler (nanosleep or clock_nanosleep).
    assert!(
        wait_until(Duration::from_secs(20), || request_thread_sleeps(dpid)),
        "the start never waited for the write lock"
    );
    signal(gated, libc::SIGKILL);
    let reaped = format!("pid={gated} ");
    assert!(
        wait_until(Duration::from_secs(20), || env.daemon_log().lines().any(
            |l| l.contains("reaped a non-service child") && l.contains(&reaped)
        )),
        "the daemon did not reap pid {gated}; daemon.log:\n{}",
        env.daemon_log()
    );
    holder.execute_batch("ROLLBACK").expect("release the lock");
    drop(holder);

    let out = start.wait_with_output().expect("tend start");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a start whose process was killed before it ran is no success\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains("exited at once") && stderr.contains("KILL"),
        "stderr: {stderr}"
    );
    // The policy restarts it: a new instance runs the program.
    let new = env.wait_new_pid("svc", gated);
    assert!(
        wait_until(Duration::from_secs(20), || marker_procs(&marker)
            .iter()
            .any(|&(p, _)| p == new)),
        "the restarted instance {new} does not run the program"
    );
    let exits = events_about(&env, "svc", "exit", gated);
    assert_eq!(
        exits.len(),
        1,
        "the exit of pid {gated} was recorded {} times: {exits:?}\nevents:\n{}",
        exits.len(),
        env.tend(&["events", "svc", "-n", "30"]).stdout
    );
    env.ok(&["stop", "--all"]);
    env.ok(&["daemon", "stop"]);
}
