//! Concurrent stops of one instance: however many are asked for at once, and whoever
//! notices the exit first (another stop, the daemon's worker), the instance gets exactly
//! one `stop` event and one `exit` event.

use crate::faults::{events, start_daemon};
use crate::util::*;

/// Two `tend stop web` at once, while web ignores TERM (so both wait for it, then kill
/// it): both report the stop, and it is on record once.
fn two_stops_at_once(env: &Env) {
    env.add_fixture(
        "web",
        &["--stop-timeout", "3s"],
        &["--ignore-term", "--marker", "w"],
    );
    env.ok(&["start", "web"]);
    let pid = env.pid("web").expect("running");
    let log = env.log_path("web");
    // The marker comes after TERM is ignored.
    assert!(
        wait_until(std::time::Duration::from_secs(20), || read(&log)
            .contains("STARTED")),
        "log: {}",
        read(&log)
    );
    let outs: Vec<Out> = std::thread::scope(|s| {
        let stops: Vec<_> = (0..2)
            .map(|_| s.spawn(|| env.tend(&["stop", "web"])))
            .collect();
        stops.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        // Each found the instance running, so they overlapped: a stop that came after
        // the other had finished would say `not running`.
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(&format!("web: stopped (pid {pid}")),
            "{outs:?}"
        );
    }
    assert!(!alive(pid));
    let ev = events(env, "web");
    let of = |kind: &str| {
        ev.iter()
            .filter(|(k, d)| k == kind && d.starts_with(&format!("pid {pid}")))
            .count()
    };
    assert_eq!(of("stop"), 1, "{ev:?}");
    assert_eq!(of("exit"), 1, "{ev:?}");
    assert!(env.status_json("web")["pid"].is_null());
}

#[test]
fn concurrent_stops_record_one_stop_and_one_exit() {
    two_stops_at_once(&Env::new());
}

/// Under the daemon the worker records the exit (the daemon is the parent); neither stop
/// clears the record, and still the stop is on record once.
#[test]
fn concurrent_stops_under_the_daemon_record_one_stop_and_one_exit() {
    let env = Env::new();
    start_daemon(&env);
    two_stops_at_once(&env);
}
