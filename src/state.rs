//! A service's state, and the transitions of its restart bookkeeping, as pure functions:
//! no processes, no clock, no database. The supervisor applies them inside its
//! transactions; output renders [`State`]; the table at the end tests them.
//!
//! ```text
//!             start (person)                 stop (person)
//!   Stopped ─────────────────▶ Running ─────────────────▶ Stopping ──exit──▶ Stopped
//!      ▲  ▲                    │     ▲                                           ▲
//!      │  │    exit, policy:   │     │ restart due                               │
//!      │  │        Leave       │     │                                           │
//!      │  └────────────────────┘  Backoff { until } ◀── exit, policy: Restart    │
//!      │                              │                                          │
//!      │  start (person) clears       │ exit, policy: Fail                       │
//!      └──────────────────────── Failed { reason } ◀─────────────────────────────┘
//!                                         (stop by a person clears it too)
//! ```

use std::time::Duration;

use crate::policy::{self, Decision, ExitStatus};
use crate::record::{Instance, Runtime};

/// What a service is doing, as one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Stopped,
    /// Running, but its readiness check has not passed yet.
    Starting {
        pid: i32,
        /// Unix ms.
        since: i64,
    },
    Running {
        pid: i32,
        /// Unix ms.
        since: i64,
    },
    /// A stop was asked for and the process has not exited yet.
    Stopping {
        pid: i32,
    },
    /// An automatic restart is due at `until` (unix ms). `supervised`: a daemon runs to
    /// carry it out.
    Backoff {
        until: i64,
        supervised: bool,
    },
    /// The start limit was hit (or a restart could not even spawn): left alone until a
    /// person starts it.
    Failed {
        reason: String,
    },
    /// An instance is recorded, but whether it still runs could not be checked (too
    /// many open files, say): it is neither running nor gone, and nothing acts on it
    /// until a check can be made. `reason` says why.
    Unknown {
        pid: i32,
        /// Unix ms (when the instance started).
        since: i64,
        reason: String,
    },
}

impl State {
    /// The state of a service with this live instance (or none) and bookkeeping.
    /// `supervised`: a daemon runs for the home.
    pub fn of(instance: Option<&Instance>, rt: &Runtime, supervised: bool) -> State {
        State::of_ready(instance, rt, supervised, true, None)
    }

    /// [`State::of`], for an instance whose readiness check has (`ready`) or has not
    /// passed yet (`Starting`), and whose liveness could not be checked (`unknown`: why).
    pub fn of_ready(
        instance: Option<&Instance>,
        rt: &Runtime,
        supervised: bool,
        ready: bool,
        unknown: Option<&str>,
    ) -> State {
        match (instance, unknown) {
            (Some(i), Some(why)) => State::Unknown {
                pid: i.pid,
                since: i.started_at,
                reason: why.to_string(),
            },
            (i, _) => State::of_known(i, rt, supervised, ready),
        }
    }

    fn of_known(instance: Option<&Instance>, rt: &Runtime, supervised: bool, ready: bool) -> State {
        match instance {
            Some(i) if i.stopping => State::Stopping { pid: i.pid },
            Some(i) if !ready => State::Starting {
                pid: i.pid,
                since: i.started_at,
            },
            Some(i) => State::Running {
                pid: i.pid,
                since: i.started_at,
            },
            None => match (&rt.failed, rt.next_retry_at) {
                (Some(reason), _) => State::Failed {
                    reason: reason.clone(),
                },
                (None, Some(until)) => State::Backoff { until, supervised },
                (None, None) => State::Stopped,
            },
        }
    }

    /// The name in `--json` (`state`): `running`, `starting`, `stopped`, `restarting`,
    /// `failed` or `unknown`.
    /// A service being stopped still runs: `running`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Running { .. } | State::Stopping { .. } => "running",
            State::Starting { .. } => "starting",
            State::Stopped => "stopped",
            State::Backoff { .. } => "restarting",
            State::Failed { .. } => "failed",
            State::Unknown { .. } => "unknown",
        }
    }

    /// Why the state is `unknown`: the check that could not be made.
    pub fn unknown_reason(&self) -> Option<&str> {
        match self {
            State::Unknown { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// As a person reads it in `list` and `status`.
    pub fn label(&self) -> &'static str {
        match self {
            State::Stopping { .. } => "stopping",
            State::Backoff {
                supervised: false, ..
            } => "restarting (no daemon)",
            other => other.name(),
        }
    }

    /// An automatic restart is pending that no daemon will carry out.
    pub fn waiting_for_daemon(&self) -> bool {
        matches!(
            self,
            State::Backoff {
                supervised: false,
                ..
            }
        )
    }

    pub fn is_running(&self) -> bool {
        matches!(
            self,
            State::Running { .. } | State::Starting { .. } | State::Stopping { .. }
        )
    }
}

/// A person (or a command) started the service: a clean slate, but the last exit is
/// remembered.
pub fn started_by_request(rt: &Runtime, now_ms: i64) -> Runtime {
    Runtime {
        last_exit: rt.last_exit.clone(),
        last_exit_at: rt.last_exit_at,
        recent_starts: vec![now_ms],
        ..Runtime::default()
    }
}

/// The restart policy started it again: one more restart, counted for the start limit.
pub fn restarted(rt: &Runtime, start_limit_interval: Duration, now_ms: i64) -> Runtime {
    let mut next = rt.clone();
    next.restarts += 1;
    next.next_retry_at = None;
    policy::prune_starts(&mut next.recent_starts, start_limit_interval, now_ms);
    next.recent_starts.push(now_ms);
    next
}

/// The process ended with `status`; `decision` is what the policy decided (`Leave` for
/// a requested stop). Returns the new bookkeeping and when a restart is due.
pub fn exited(
    rt: &Runtime,
    status: ExitStatus,
    decision: &Decision,
    now_ms: i64,
) -> (Runtime, Option<i64>) {
    let mut next = rt.clone();
    next.last_exit = Some(status.to_string());
    next.last_exit_at = Some(now_ms);
    let mut retry_at = None;
    match decision {
        Decision::Leave => {}
        Decision::Restart { delay } => {
            next.backoff_ms = delay.as_millis() as u64;
            let at = now_ms + delay.as_millis() as i64;
            next.next_retry_at = Some(at);
            retry_at = Some(at);
        }
        Decision::Fail { reason } => {
            next.next_retry_at = None;
            next.failed = Some(reason.clone());
        }
    }
    (next, retry_at)
}

/// A person stopped it: a pending restart is cancelled and a failed mark cleared.
pub fn stop_requested(rt: &Runtime) -> Runtime {
    Runtime {
        next_retry_at: None,
        failed: None,
        ..rt.clone()
    }
}

/// The daemon gave up on it (a restart could not even spawn it).
pub fn given_up(rt: &Runtime, reason: &str) -> Runtime {
    Runtime {
        next_retry_at: None,
        failed: Some(reason.to_string()),
        ..rt.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(stopping: bool) -> Instance {
        Instance {
            pid: 42,
            pgid: 41,
            start_time: 1,
            boot_id: "b".into(),
            started_at: 1000,
            stopping,
            cgroup: None,
            launching: false,
        }
    }

    /// The state of every combination the supervisor can record.
    #[test]
    fn state_table() {
        let rt = Runtime::default();
        let backoff = Runtime {
            next_retry_at: Some(5000),
            ..Runtime::default()
        };
        let failed = Runtime {
            failed: Some("start limit hit".into()),
            next_retry_at: Some(5000),
            ..Runtime::default()
        };
        let running = State::Running {
            pid: 42,
            since: 1000,
        };
        // (instance, bookkeeping, supervised) -> (state, JSON name, label)
        type Case<'a> = (Option<Instance>, &'a Runtime, bool, State, &'a str, &'a str);
        let cases: [Case; 8] = [
            (None, &rt, true, State::Stopped, "stopped", "stopped"),
            (
                Some(inst(false)),
                &rt,
                true,
                running.clone(),
                "running",
                "running",
            ),
            // A running instance wins over stale bookkeeping.
            (
                Some(inst(false)),
                &backoff,
                false,
                running,
                "running",
                "running",
            ),
            (
                Some(inst(true)),
                &rt,
                true,
                State::Stopping { pid: 42 },
                "running",
                "stopping",
            ),
            (
                None,
                &backoff,
                true,
                State::Backoff {
                    until: 5000,
                    supervised: true,
                },
                "restarting",
                "restarting",
            ),
            (
                None,
                &backoff,
                false,
                State::Backoff {
                    until: 5000,
                    supervised: false,
                },
                "restarting",
                "restarting (no daemon)",
            ),
            (
                None,
                &failed,
                true,
                State::Failed {
                    reason: "start limit hit".into(),
                },
                "failed",
                "failed",
            ),
            (
                None,
                &failed,
                false,
                State::Failed {
                    reason: "start limit hit".into(),
                },
                "failed",
                "failed",
            ),
        ];
        for (i, rt, supervised, want, name, label) in cases {
            let got = State::of(i.as_ref(), rt, supervised);
            assert_eq!(got, want);
            assert_eq!(got.name(), name);
            assert_eq!(got.label(), label);
        }
    }

    /// Each transition, then the state it leads to (with no instance).
    #[test]
    fn transition_table() {
        let after_crash = |rt: &Runtime, d: Decision| exited(rt, ExitStatus::Code(1), &d, 1000);
        let (rt, at) = after_crash(
            &Runtime::default(),
            Decision::Restart {
                delay: Duration::from_millis(100),
            },
        );
        assert_eq!(at, Some(1100));
        assert_eq!(rt.last_exit.as_deref(), Some("code 1"));
        assert_eq!(State::of(None, &rt, true).name(), "restarting");

        let restarted_rt = restarted(&rt, Duration::from_secs(10), 1100);
        assert_eq!(restarted_rt.restarts, 1);
        assert_eq!(restarted_rt.next_retry_at, None);
        assert_eq!(restarted_rt.recent_starts, vec![1100]);

        let (failed, at) = after_crash(
            &restarted_rt,
            Decision::Fail {
                reason: "start limit hit".into(),
            },
        );
        assert_eq!(at, None);
        assert_eq!(State::of(None, &failed, true).name(), "failed");

        // A person's start clears the mark and the counters, keeping the last exit.
        let started = started_by_request(&failed, 2000);
        assert_eq!(started.failed, None);
        assert_eq!(started.restarts, 0);
        assert_eq!(started.last_exit.as_deref(), Some("code 1"));
        assert_eq!(started.recent_starts, vec![2000]);

        // A person's stop cancels a pending restart and clears a failed mark.
        assert_eq!(State::of(None, &stop_requested(&rt), true), State::Stopped);
        assert_eq!(
            State::of(None, &stop_requested(&failed), true),
            State::Stopped
        );

        let (left, at) = after_crash(&Runtime::default(), Decision::Leave);
        assert_eq!((State::of(None, &left, true), at), (State::Stopped, None));

        let up = given_up(&rt, "restart failed: no such program: x");
        assert_eq!(State::of(None, &up, true).name(), "failed");
        assert_eq!(up.next_retry_at, None);
    }

    /// Old starts fall out of the start-limit window when the policy restarts.
    #[test]
    fn restarts_prune_old_starts() {
        let rt = Runtime {
            recent_starts: vec![0, 5_000, 9_000],
            ..Runtime::default()
        };
        let next = restarted(&rt, Duration::from_secs(10), 12_000);
        assert_eq!(next.recent_starts, vec![5_000, 9_000, 12_000]);
    }

    #[test]
    fn starting_until_ready_and_a_stop_wins() {
        let rt = Runtime::default();
        let i = inst(false);
        let st = State::of_ready(Some(&i), &rt, true, false, None);
        assert_eq!(st.name(), "starting");
        assert!(st.is_running());
        assert_eq!(
            State::of_ready(Some(&i), &rt, true, true, None).name(),
            "running"
        );
        assert_eq!(
            State::of_ready(Some(&inst(true)), &rt, true, false, None).label(),
            "stopping"
        );
        assert_eq!(
            State::of_ready(None, &rt, true, false, None),
            State::Stopped
        );
    }

    /// A check that could not be made wins over everything the record says: the
    /// instance is neither running nor gone.
    #[test]
    fn unknown_when_the_check_could_not_be_made() {
        let backoff = Runtime {
            next_retry_at: Some(5000),
            ..Runtime::default()
        };
        for (i, rt) in [
            (inst(false), Runtime::default()),
            (inst(true), Runtime::default()),
            (inst(false), backoff),
        ] {
            let st = State::of_ready(Some(&i), &rt, true, false, Some("too many open files"));
            assert_eq!(
                st,
                State::Unknown {
                    pid: 42,
                    since: 1000,
                    reason: "too many open files".into()
                }
            );
            assert_eq!((st.name(), st.label()), ("unknown", "unknown"));
            assert_eq!(st.unknown_reason(), Some("too many open files"));
            assert!(!st.is_running());
        }
        // Without an instance there is nothing to be unsure about.
        assert_eq!(
            State::of_ready(None, &Runtime::default(), true, true, Some("x")),
            State::Stopped
        );
    }
}
