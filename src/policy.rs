//! The restart policy as a pure function: given a service's settings, its restart
//! bookkeeping and how it exited, decide what happens next. No processes, no clock, no
//! database: the table below is tested directly.

use std::fmt;
use std::time::Duration;

use crate::record::Runtime;
use crate::service::{RestartPolicy, Service};

/// Cap of the restart backoff.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A service that stayed up this long is healthy again: its backoff starts over.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// How a service's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// Not a child of the observer (an adopted process): the status cannot be known.
    Unknown,
    /// Killed by the kernel's OOM killer for its cgroup's `memory.max` (a SIGKILL that
    /// `memory.events` counted as `oom_kill`).
    OomKilled,
}

impl ExitStatus {
    /// From a `waitpid` status word.
    pub fn from_wait(status: i32) -> ExitStatus {
        if libc::WIFEXITED(status) {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Unknown
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "code {c}"),
            ExitStatus::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {}", crate::service::StopSignal(sig).name()),
                Err(_) => write!(f, "signal {s}"),
            },
            ExitStatus::Unknown => f.write_str("unknown"),
            ExitStatus::OomKilled => f.write_str("oom-killed"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The policy does not restart after this exit.
    Leave,
    /// Restart after `delay`.
    Restart { delay: Duration },
    /// Too many starts in the window: give up until a person starts it.
    Fail { reason: String },
}

/// Whether `policy` restarts after `status`. Like systemd's `on-failure`, a non-zero code
/// or a signal other than the "clean" HUP, INT, TERM and PIPE is a failure. An unknown
/// status (an adopted process) counts as a failure: keeping the service up is the safer
/// mistake.
pub fn wants_restart(policy: RestartPolicy, status: ExitStatus) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => match status {
            ExitStatus::Code(c) => c != 0,
            ExitStatus::Signal(s) => !matches!(
                s,
                libc::SIGHUP | libc::SIGINT | libc::SIGTERM | libc::SIGPIPE
            ),
            ExitStatus::Unknown | ExitStatus::OomKilled => true,
        },
    }
}

/// Decides what follows an unrequested exit after `uptime`, at time `now_ms`.
pub fn decide(
    svc: &Service,
    rt: &Runtime,
    status: ExitStatus,
    uptime: Duration,
    now_ms: i64,
) -> Decision {
    if !wants_restart(svc.settings.restart, status) {
        return Decision::Leave;
    }
    if svc.settings.start_limit > 0 {
        let window = svc.settings.start_limit_interval.as_millis() as i64;
        let recent = rt
            .recent_starts
            .iter()
            .filter(|&&t| t > now_ms - window)
            .count();
        if recent >= svc.settings.start_limit as usize {
            return Decision::Fail {
                reason: format!(
                    "start limit hit: {recent} starts within {}",
                    crate::service::fmt_duration(svc.settings.start_limit_interval)
                ),
            };
        }
    }
    Decision::Restart {
        delay: next_delay(svc.settings.restart_delay, rt, uptime),
    }
}

/// First retry after `initial`, doubling for each quick crash, capped; a service that
/// stayed up for [`BACKOFF_RESET_AFTER`] starts over.
fn next_delay(initial: Duration, rt: &Runtime, uptime: Duration) -> Duration {
    if uptime >= BACKOFF_RESET_AFTER || rt.restarts == 0 {
        return initial.min(MAX_RESTART_DELAY);
    }
    let prev = Duration::from_millis(rt.backoff_ms);
    (prev * 2).max(initial).min(MAX_RESTART_DELAY)
}

/// Keeps only the starts that can still count against a limit of `interval`.
pub fn prune_starts(starts: &mut Vec<i64>, interval: Duration, now_ms: i64) {
    let window = interval.as_millis() as i64;
    starts.retain(|&t| t > now_ms - window);
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    fn svc(policy: RestartPolicy) -> Service {
        let defaults = crate::service::Defaults {
            cwd: "/".into(),
            log: "/dev/null".into(),
        };
        let settings = crate::service::SettingChanges {
            restart: Some(policy),
            ..Default::default()
        }
        .build(&defaults);
        Service {
            name: "s".into(),
            argv: vec!["x".into()],
            env: BTreeMap::new(),
            settings,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn policy_table() {
        use ExitStatus::*;
        use RestartPolicy::*;
        let cases = [
            (Never, Code(1), false),
            (Never, Signal(libc::SIGKILL), false),
            (Always, Code(0), true),
            (Always, Signal(libc::SIGTERM), true),
            (OnFailure, Code(0), false),
            (OnFailure, Code(3), true),
            (OnFailure, Signal(libc::SIGKILL), true),
            (OnFailure, Signal(libc::SIGSEGV), true),
            (OnFailure, Signal(libc::SIGTERM), false),
            (OnFailure, Signal(libc::SIGHUP), false),
            (OnFailure, Unknown, true),
            (OnFailure, OomKilled, true),
        ];
        for (policy, status, want) in cases {
            assert_eq!(wants_restart(policy, status), want, "{policy} {status}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let s = svc(RestartPolicy::Always);
        let quick = Duration::from_millis(50);
        let mut rt = Runtime::default();
        let mut delays = Vec::new();
        for _ in 0..12 {
            match decide(&s, &rt, ExitStatus::Code(1), quick, 1_000_000) {
                Decision::Restart { delay } => {
                    delays.push(delay.as_millis());
                    rt.backoff_ms = delay.as_millis() as u64;
                    rt.restarts += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(&delays[..5], &[100, 200, 400, 800, 1600]);
        assert_eq!(*delays.last().unwrap(), 30_000);
        // Up for long enough: back to the first delay.
        assert_eq!(
            decide(&s, &rt, ExitStatus::Code(1), BACKOFF_RESET_AFTER, 0),
            Decision::Restart {
                delay: Duration::from_millis(100)
            }
        );
    }

    #[test]
    fn zero_delay_stays_zero() {
        let mut s = svc(RestartPolicy::Always);
        s.settings.restart_delay = Duration::ZERO;
        let rt = Runtime {
            restarts: 3,
            ..Runtime::default()
        };
        assert_eq!(
            decide(&s, &rt, ExitStatus::Code(1), Duration::ZERO, 0),
            Decision::Restart {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn start_limit_fails() {
        let s = svc(RestartPolicy::Always);
        let now = 100_000;
        let mut rt = Runtime {
            recent_starts: vec![now - 9_000, now - 5_000, now - 3_000, now - 1_000],
            ..Runtime::default()
        };
        assert!(matches!(
            decide(&s, &rt, ExitStatus::Code(1), Duration::ZERO, now),
            Decision::Restart { .. }
        ));
        rt.recent_starts.push(now - 10);
        assert!(matches!(
            decide(&s, &rt, ExitStatus::Code(1), Duration::ZERO, now),
            Decision::Fail { .. }
        ));
        // Old starts fall out of the window.
        rt.recent_starts[0] = now - 20_000;
        assert!(matches!(
            decide(&s, &rt, ExitStatus::Code(1), Duration::ZERO, now),
            Decision::Restart { .. }
        ));
        // 0 means no limit.
        let mut unlimited = s.clone();
        unlimited.settings.start_limit = 0;
        rt.recent_starts = vec![now; 100];
        assert!(matches!(
            decide(&unlimited, &rt, ExitStatus::Code(1), Duration::ZERO, now),
            Decision::Restart { .. }
        ));
    }
}
