//! The database's files deleted or replaced under a running daemon: the daemon notices
//! at once (idle or not), stops using them and says so; no command reads or writes the
//! files on disk beside it; nothing the old files hold is lost when the fix `tend doctor`
//! gives is followed. Real daemon, real files, real signals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

/// Deadline for anything the daemon does on its own.
const LONG: Duration = Duration::from_secs(20);

/// Sends `sig` to `pid`, a process this test started (directly or through tend).
fn signal(pid: i32, sig: i32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) touches no memory; the pid belongs to this test.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The state letter of /proc/PID/stat (`T` once a SIGSTOP took effect).
fn state_of(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .next()?
            .to_string(),
    )
}

/// A daemon stopped with SIGSTOP, so that it cannot notice anything yet; resumed
/// however the test ends (the env then kills it).
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        signal(pid, libc::SIGSTOP);
        assert!(
            wait_until(LONG, || state_of(pid).as_deref() == Some("T")),
            "the daemon did not stop"
        );
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// SIGKILLs a process this test started through tend once the test ends, unless its pid
/// now names another process (for one no database records any more).
struct KillAtEnd(i32, Option<u64>);

impl KillAtEnd {
    fn new(pid: i32) -> KillAtEnd {
        KillAtEnd(pid, start_time_of(pid))
    }
}

impl Drop for KillAtEnd {
    fn drop(&mut self) {
        if self.1.is_some() && start_time_of(self.0) == self.1 {
            signal(self.0, libc::SIGKILL);
        }
    }
}

/// `tend daemon`; returns the daemon's pid.
fn start_daemon(env: &Env) -> i32 {
    let out = env.ok(&["daemon"]);
    out.stdout
        .strip_prefix("daemon: started (pid ")
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `tend daemon` output: {out:?}"))
}

fn wal(env: &Env) -> PathBuf {
    env.home().join("tend.db-wal")
}

fn size(path: impl AsRef<Path>) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Checkpoints the WAL of `db` into the database and truncates it to nothing, from a
/// connection of the test's own (as any SQLite tool may beside tend).
fn checkpoint(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    let done = wait_until(LONG, || {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
        .is_ok_and(|busy| busy == 0)
    });
    assert!(done, "the checkpoint stayed busy");
}

/// The descriptor through which `pid` holds `path` although it was deleted.
fn deleted_fd(pid: i32, path: &Path) -> Option<String> {
    let target = format!("{} (deleted)", path.display());
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == &*target))
        .map(|fd| fd.file_name().to_string_lossy().into_owned())
}

/// True once the daemon said, in its lock file, that it stopped using the database.
fn noted_fault(env: &Env) -> bool {
    read(&env.home().join("daemon.lock"))
        .lines()
        .any(|l| l.starts_with("fault "))
}

/// The service's events as (kind, detail), oldest first.
fn events(env: &Env, name: &str) -> Vec<(String, String)> {
    let out = env.ok(&["events", name, "--json", "-n", "1000"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("events --json");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(events: &[(String, String)], kind: &str, detail: &str) -> usize {
    events
        .iter()
        .filter(|(k, d)| k == kind && d.starts_with(detail))
        .count()
}

/// The line of `doctor`'s report about `check`.
fn doctor_line(out: &Out, check: &str) -> String {
    out.stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check} line in doctor's report:\n{}", out.stdout))
        .to_string()
}

/// A command refused beside a daemon holding other files: exit 6, one line naming the
/// daemon and what changed.
fn assert_refused_beside(out: &Out, dpid: i32, change: &str) {
    assert_eq!(out.code, 6, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    assert!(
        lines[0].starts_with(&format!("tend: the daemon (pid {dpid}) has database "))
            && lines[0].contains(change),
        "{out:?}"
    );
}

/// The brief's reproduction: the WAL, empty after a checkpoint, deleted under a daemon
/// supervising a `--restart always` service, and a command right after it (staged by
/// keeping the daemon stopped, so it cannot have noticed yet). On main that command
/// went on with a new WAL beside the daemon's, `daemon status` and `doctor` said all was
/// well, and the daemon later failed with I/O errors. Now the command refuses and
/// creates nothing; `daemon status` and `doctor` name the change; the daemon notices by
/// itself while idle (no request reaches it) and writes nothing more, not even the
/// killed service's exit into the deleted WAL; and once it is restarted the new daemon
/// restarts the service from the database on disk.
#[test]
fn deleted_empty_wal_refuses_every_command_beside_the_daemon() {
    let env = Env::new();
    env.add_fixture("web", &["--restart", "always"], &[]);
    let dpid = start_daemon(&env);
    env.ok(&["start", "web"]);
    let web = env.pid("web").expect("web runs");

    // An idle daemon, stopped with a WAL of nothing (the case where a new connection
    // can go on with a new WAL without an error).
    let frozen = loop {
        checkpoint(&env.db());
        let f = Frozen::new(dpid);
        if size(wal(&env)) == 0 {
            break f;
        }
    };
    std::fs::remove_file(wal(&env)).unwrap();
    let db_before = std::fs::read(env.db()).unwrap();

    let change = "tend.db-wal was deleted or renamed";
    let out = env.tend(&["add", "late", "--", FIXTURE]);
    assert_refused_beside(&out, dpid, change);
    let out = env.tend(&["list"]);
    assert_refused_beside(&out, dpid, change);
    assert!(
        !wal(&env).exists(),
        "a command created a new WAL beside the daemon's"
    );
    assert_eq!(
        std::fs::read(env.db()).unwrap(),
        db_before,
        "the database file was written beside the daemon"
    );
    let out = env.tend(&["daemon", "status"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.starts_with(&format!(
            "daemon: alive but unhealthy (pid {dpid}): {change} while it had the database open"
        )),
        "{out:?}"
    );

    // Resumed, it notices by itself: nothing has asked it anything.
    drop(frozen);
    assert!(
        wait_until(LONG, || noted_fault(&env)),
        "the daemon did not notice; daemon.log:\n{}",
        env.daemon_log()
    );
    assert!(
        env.daemon_log()
            .contains("the database files on disk are no longer the ones the daemon has open"),
        "{}",
        env.daemon_log()
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.tend(&["daemon", "status", "--json"]).stdout).unwrap();
    assert_eq!(v["running"], true, "{v}");
    assert_eq!(v["healthy"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains(change), "{v}");

    let out = env.tend(&["doctor"]);
    assert_eq!(out.code, 1, "{out:?}");
    let line = doctor_line(&out, "db files");
    assert!(
        line.starts_with("FAIL")
            && line.contains(change)
            && line.contains(&format!("cp /proc/{dpid}/fd/"))
            && line.contains("tend daemon stop && tend daemon"),
        "{line}"
    );
    assert!(!wal(&env).exists(), "doctor created a new WAL");

    // The service killed now: the daemon reaps it but records nothing where nobody
    // would see it, and restarts nothing.
    let fd = deleted_fd(dpid, &wal(&env)).expect("the daemon holds the deleted WAL");
    let held = format!("/proc/{dpid}/fd/{fd}");
    signal(web, libc::SIGKILL);
    let refused = format!("recording an exit failed pid={web}");
    assert!(
        wait_until(LONG, || env.daemon_log().contains(&refused)),
        "daemon.log:\n{}",
        env.daemon_log()
    );
    assert_eq!(size(&held), 0, "the daemon wrote to the deleted WAL");
    assert!(
        !env.daemon_log().contains(" INFO restarted "),
        "{}",
        env.daemon_log()
    );
    assert!(!wal(&env).exists());

    // Restarted (nothing only the old WAL held: it was empty), a daemon on the files on
    // disk finds the service's exit and restarts it.
    let out = env.ok(&["daemon", "stop"]);
    assert!(
        out.stdout.contains(&format!("stopped (pid {dpid})")),
        "{out:?}"
    );
    start_daemon(&env);
    let new = env.wait_new_pid("web", web);
    assert!(alive(new));
    let ev = events(&env, "web");
    assert_eq!(count(&ev, "exit", &format!("pid {web}:")), 1, "{ev:?}");
}

/// The WAL deleted while it still holds commits (for a new home, the whole database):
/// the daemon keeps them (it does not exit and close them), `daemon status` names the
/// change within a deadline, and following `doctor`'s fix (the file put back from
/// `/proc`, then the daemon restarted) loses nothing: every service is still defined and
/// the service killed meanwhile is restarted by the new daemon.
#[test]
fn deleted_wal_with_commits_is_put_back_and_nothing_is_lost() {
    let env = Env::new();
    env.add_fixture("web", &["--restart", "always"], &[]);
    for name in ["a", "b", "c"] {
        env.add_fixture(name, &[], &[]);
    }
    let dpid = start_daemon(&env);
    env.ok(&["start", "web"]);
    let web = env.pid("web").expect("web runs");
    assert!(size(wal(&env)) > 0, "the commits are in the WAL");

    std::fs::remove_file(wal(&env)).unwrap();
    let change = "tend.db-wal was deleted or renamed";
    let mut last = None;
    let said = wait_until(LONG, || {
        let out = env.tend(&["daemon", "status"]);
        let ok = out.code == 1 && out.stdout.contains(change);
        last = Some(out);
        ok
    });
    assert!(said, "{last:?}");
    assert!(
        wait_until(LONG, || noted_fault(&env)),
        "daemon.log:\n{}",
        env.daemon_log()
    );

    signal(web, libc::SIGKILL);
    let refused = format!("recording an exit failed pid={web}");
    assert!(
        wait_until(LONG, || env.daemon_log().contains(&refused)),
        "daemon.log:\n{}",
        env.daemon_log()
    );
    let out = env.tend(&["status", "web"]);
    assert_refused_beside(&out, dpid, change);

    // doctor's fix, as a person would follow it.
    let out = env.tend(&["doctor"]);
    assert_eq!(out.code, 1, "{out:?}");
    let line = doctor_line(&out, "db files");
    let cp = line
        .split('`')
        .find(|s| s.starts_with("cp /proc/"))
        .unwrap_or_else(|| panic!("no cp in the fix: {line}"));
    let from = cp.split_whitespace().nth(1).unwrap();
    assert!(from.starts_with(&format!("/proc/{dpid}/fd/")), "{line}");
    std::fs::copy(from, wal(&env)).unwrap();
    env.ok(&["daemon", "stop"]);
    start_daemon(&env);

    let new = env.wait_new_pid("web", web);
    assert!(alive(new));
    let out = env.ok(&["list"]);
    for name in ["a", "b", "c", "web"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name} "))),
            "{name} was lost: {}",
            out.stdout
        );
    }
    let ev = events(&env, "web");
    assert_eq!(count(&ev, "start", &format!("pid {web} ")), 1, "{ev:?}");
    assert_eq!(count(&ev, "exit", &format!("pid {web}:")), 1, "{ev:?}");
}

/// Another database renamed over `tend.db` under the daemon: a command right after it
/// refuses and leaves the new file as it came; the daemon names the change; `doctor`
/// says to move the old WAL aside (the next opener would apply it to the new file) and
/// then restart the daemon, after which the new database is the one in use.
#[test]
fn replaced_database_is_noticed_and_not_written() {
    let env = Env::new();
    env.add_fixture("web", &["--restart", "always"], &[]);
    let dpid = start_daemon(&env);
    env.ok(&["start", "web"]);
    let web = env.pid("web").expect("web runs");
    // Not in the database that replaces this one: stopped by the test however it ends.
    let _web = KillAtEnd::new(web);

    // The replacement: another home's database, whole in its one file (as a backup is).
    let other = Env::new();
    other.add_fixture("other", &[], &[]);
    checkpoint(&other.db());
    let replacement = other.work().join("tend.db");
    std::fs::copy(other.db(), &replacement).unwrap();
    let new_bytes = std::fs::read(&replacement).unwrap();

    let frozen = Frozen::new(dpid);
    std::fs::rename(&replacement, env.db()).unwrap();
    let change = "tend.db was replaced by another file";
    let out = env.tend(&["add", "late", "--", FIXTURE]);
    assert_refused_beside(&out, dpid, change);
    assert_eq!(
        std::fs::read(env.db()).unwrap(),
        new_bytes,
        "the new database was written"
    );
    drop(frozen);

    let mut last = None;
    let said = wait_until(LONG, || {
        let out = env.tend(&["daemon", "status"]);
        let ok = out.code == 1 && out.stdout.contains(change);
        last = Some(out);
        ok
    });
    assert!(said, "{last:?}");
    assert!(
        wait_until(LONG, || noted_fault(&env)),
        "daemon.log:\n{}",
        env.daemon_log()
    );
    let out = env.tend(&["doctor"]);
    assert_eq!(out.code, 1, "{out:?}");
    let line = doctor_line(&out, "db files");
    assert!(
        line.starts_with("FAIL")
            && line.contains(change)
            && line.contains(&format!("move {} aside", wal(&env).display())),
        "{line}"
    );
    assert_eq!(std::fs::read(env.db()).unwrap(), new_bytes);

    std::fs::rename(wal(&env), env.home().join("tend.db-wal.old")).unwrap();
    env.ok(&["daemon", "stop"]);
    start_daemon(&env);
    let out = env.ok(&["list"]);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("other "))
            && !out.stdout.lines().any(|l| l.starts_with("web ")),
        "{}",
        out.stdout
    );
    let out = env.tend(&["doctor"]);
    let line = doctor_line(&out, "db files");
    assert!(line.starts_with("ok"), "{line}");
}

/// A request sent right after the WAL was deleted, whether or not the daemon noticed
/// yet: the connection it would serve the request with checks its files before use (an
/// idle one is dropped, and a new one refuses before SQLite could create a new WAL), so
/// nothing is started. On main the request's new connection went on with a new WAL and
/// started the service there, while the daemon's worker kept the deleted one: the
/// daemon itself split in two.
#[test]
fn request_right_after_the_deletion_is_refused() {
    let env = Env::new();
    env.add_fixture("web", &[], &["--marker", "up"]);
    let dpid = start_daemon(&env);
    checkpoint(&env.db());
    std::fs::remove_file(wal(&env)).unwrap();
    let out = env.tend(&["start", "web"]);
    assert_eq!(out.code, 6, "{out:?}");
    assert!(
        out.stderr.contains("tend.db-wal was deleted or renamed"),
        "{out:?}"
    );
    assert!(
        !read(&env.log_path("web")).contains("STARTED"),
        "the service was started"
    );
    assert!(!wal(&env).exists(), "the daemon created a new WAL");
    assert!(deleted_fd(dpid, &wal(&env)).is_some());
}

/// `tend.db` a symlink to a file in another directory: SQLite keeps the WAL beside the
/// real file, so that is where the daemon's files are noted and watched (the daemon
/// starts, and notices that WAL deleted by itself).
#[test]
fn symlinked_database_is_checked_where_its_wal_is() {
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    checkpoint(&env.db());
    let real = env.work().join("real.db");
    std::fs::rename(env.db(), &real).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(env.home().join(format!("tend.db{suffix}")));
    }
    std::os::unix::fs::symlink(&real, env.db()).unwrap();
    let dpid = start_daemon(&env);
    let out = env.ok(&["list"]);
    assert!(out.stdout.contains("web "), "{out:?}");
    let real_wal = env.work().join("real.db-wal");
    assert!(real_wal.exists() && !wal(&env).exists());

    std::fs::remove_file(&real_wal).unwrap();
    assert!(
        wait_until(LONG, || noted_fault(&env)),
        "the daemon did not notice; daemon.log:\n{}",
        env.daemon_log()
    );
    let out = env.tend(&["list"]);
    assert_refused_beside(&out, dpid, "real.db-wal was deleted or renamed");
}
