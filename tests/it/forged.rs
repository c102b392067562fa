//! A record whose instance has a cgroup names its main process by pid, start time and
//! boot id, and the process must also be in that cgroup: one outside it is someone else.
//! Staged with a forged record (written into the database by hand) that names an
//! unrelated process with its true pid, start time and boot id, and the cgroup of a real
//! instance of another service.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::faults::{events, start_daemon};
use crate::util::*;

/// How long a process that must not have been signalled is watched staying alive.
const UNTOUCHED: Duration = Duration::from_millis(300);

/// Writes an instance of `service` naming process `pid` (with its real start time and
/// this boot's id) as its main process, in `cgroup`.
fn forge(env: &Env, service: &str, pid: i32, cgroup: &str) {
    let start_time = start_time_of(pid).expect("the stranger runs") as i64;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let n = conn
        .execute(
            "INSERT OR REPLACE INTO instances (service_id, pid, pgid, start_time, boot_id, \
             started_at, stopping, cgroup, launching) \
             SELECT id, ?2, ?2, ?3, ?4, ?5, 0, ?6, 0 FROM services WHERE name = ?1",
            rusqlite::params![
                service,
                pid,
                start_time,
                boot.trim(),
                1_700_000_000_000i64,
                cgroup
            ],
        )
        .unwrap();
    assert_eq!(n, 1, "forged the record of {service}");
}

/// The process is still running, and was not signalled: nothing pending, and it stays
/// alive for [`UNTOUCHED`].
fn assert_untouched(stranger: &mut KillOnDrop, what: &str) {
    let pid = stranger.0.id() as i32;
    assert!(
        !wait_until(UNTOUCHED, || !alive(pid)),
        "{what}: the stranger (pid {pid}) was killed"
    );
    assert!(
        stranger.0.try_wait().unwrap().is_none(),
        "{what}: it exited"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for key in ["SigPnd:", "ShdPnd:"] {
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap());
        assert_eq!(mask, Some(0), "{what}: a signal is pending:\n{status}");
    }
}

/// The stale-cleared events of `name` that say the process is outside the cgroup.
fn outside_events(env: &Env, name: &str) -> usize {
    events(env, name)
        .iter()
        .filter(|(k, d)| k == "stale-cleared" && d.contains("not in the instance's cgroup"))
        .count()
}

/// A forged record names an unrelated process (its true pid, start time and boot id)
/// and the cgroup of `web`'s running instance. `status`, `signal`, `stop` and a daemon
/// coming up each find it stale (the process is outside that cgroup), clear it with a
/// `stale-cleared` event saying so, and never signal the stranger; and `web`, whose
/// cgroup the record names, is never touched either (a record's cgroup that is not its
/// service's own is never emptied as its leftovers).
#[test]
fn a_process_outside_the_instances_cgroup_is_not_the_service() {
    if !require_root(
        "a_process_outside_the_instances_cgroup_is_not_the_service",
        "create cgroups on the machine's cgroup2 mount",
    ) {
        return;
    }
    let env = Env::new();
    env.add_fixture("web", &[], &["--marker", "web"]);
    env.add_fixture("forged", &["--restart", "never"], &["--marker", "forged"]);
    env.ok(&["start", "web"]);
    let web = env.pid("web").expect("web runs");
    let leaf = env.status_json("web")["cgroup"]["path"]
        .as_str()
        .expect("web runs in a cgroup of its own")
        .to_string();
    let mut stranger = KillOnDrop(
        Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
    );
    let sp = stranger.0.id() as i32;
    let web_untouched = |what: &str| {
        assert_eq!(env.pid("web"), Some(web), "{what}: web's record");
        assert!(alive(web), "{what}: web (pid {web}) was killed");
    };

    // status (and list)
    forge(&env, "forged", sp, &leaf);
    let out = env.tend(&["status", "forged", "--json"]);
    assert_eq!(out.code, 3, "status: {out:?}");
    assert!(
        out.stderr
            .contains(&format!("pid {sp}: not in the instance's cgroup {leaf}")),
        "{out:?}"
    );
    assert_eq!(outside_events(&env, "forged"), 1);
    assert_untouched(&mut stranger, "status");
    web_untouched("status");

    // signal
    forge(&env, "forged", sp, &leaf);
    let out = env.tend(&["signal", "TERM", "forged"]);
    assert!(
        out.stderr.contains("forged: not running; no signal sent"),
        "signal: {out:?}"
    );
    assert_eq!(outside_events(&env, "forged"), 2, "{out:?}");
    assert_untouched(&mut stranger, "signal");
    web_untouched("signal");

    // stop
    forge(&env, "forged", sp, &leaf);
    let out = env.ok(&["stop", "forged"]);
    assert!(out.stdout.contains("forged: not running"), "stop: {out:?}");
    assert_eq!(outside_events(&env, "forged"), 3, "{out:?}");
    assert_untouched(&mut stranger, "stop");
    web_untouched("stop");

    // A daemon coming up adopts what runs: not this. Its first adoption pass is done
    // when `tend daemon` returns.
    forge(&env, "forged", sp, &leaf);
    start_daemon(&env);
    assert_eq!(
        outside_events(&env, "forged"),
        4,
        "daemon.log:\n{}",
        env.daemon_log()
    );
    assert!(
        !events(&env, "forged").iter().any(|(k, _)| k == "adopted"),
        "{:?}",
        events(&env, "forged")
    );
    let out = env.ok(&["stop", "forged"]);
    assert!(out.stdout.contains("forged: not running"), "{out:?}");
    assert_untouched(&mut stranger, "daemon");
    web_untouched("daemon");
    assert!(
        events(&env, "web")
            .iter()
            .all(|(k, _)| k != "stop" && k != "exit"),
        "{:?}",
        events(&env, "web")
    );
}
