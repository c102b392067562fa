//! Fleet control: what a host does with a durable command, independent of
//! where the command came from. PostgreSQL (in [`crate::pg::fleet`]) stores the commands
//! and carries the wake-ups; this module decides and acts:
//!
//! - [`Action`]: the only things a command can ask — start, stop, restart or signal of
//!   a service the host already defines. Nothing in a command row can name a program, a
//!   path or an environment variable.
//! - [`carry_out`]: takes a command in the local database (committed before acting),
//!   acts through the same [`crate::api::act`] as every other transport, and records
//!   the result locally before it is reported. A command taken before is never acted on
//!   again: its stored result is reported instead ([`after_interruption`] says what an
//!   interrupted one becomes).
//! - [`backoff`]: the reconnect delay every PostgreSQL connection of the daemon uses.

use std::time::Duration;

use crate::api::{self, Outcome, Selection, Verb};
use crate::error::Result;
use crate::supervisor::{SignalOutcome, StartOutcome, StopOutcome, Supervisor, Take};

/// What a fleet command asks a host to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Signal(i32),
}

impl Action {
    /// The `action` column's value.
    pub fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Signal(_) => "signal",
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            Action::Signal(s) => Some(s),
            _ => None,
        }
    }

    /// From the `action` and `signal` columns; `None` for anything else (the schema's
    /// checks already refuse it; this is the host's own guard).
    pub fn from_row(action: &str, signal: Option<i32>) -> Option<Action> {
        match (action, signal) {
            ("start", None) => Some(Action::Start),
            ("stop", None) => Some(Action::Stop),
            ("restart", None) => Some(Action::Restart),
            ("signal", Some(s)) if (1..=64).contains(&s) => Some(Action::Signal(s)),
            _ => None,
        }
    }

    pub fn verb(self) -> Verb {
        match self {
            Action::Start => Verb::Start,
            Action::Stop => Verb::Stop,
            Action::Restart => Verb::Restart,
            Action::Signal(signal) => Verb::Signal { signal },
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.verb().fmt(f)
    }
}

/// One command as a host receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub id: i64,
    pub service: String,
    /// `None` when the row holds something this build does not know: refused.
    pub action: Option<Action>,
    pub issued_by: String,
    /// Past its expiry when claimed: only a command this home began before (and was
    /// interrupted in) is carried on; one never begun is reported expired, never run late.
    pub late: bool,
}

/// A command's result as the host reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub ok: bool,
    pub message: String,
    /// Not carried out because it expired before this host began it.
    pub expired: bool,
}

/// What an expired command that this host never began is reported with.
pub const EXPIRED_UNBEGUN: &str = "expired before the host ran it";

/// What becomes of a command a previous daemon took and then died while acting on
/// (taken, no result recorded). Start and stop are repeated: they are idempotent (a
/// start of a running service is "already running"), so the wanted state is reached
/// exactly once. An interrupted restart is completed with a start: either the restart
/// got as far as starting (then this finds it running and does nothing) or the daemon
/// died between stop and start (then this brings the service back). A signal is never
/// repeated: whether it was sent cannot be known, and sending it twice is not once.
pub fn after_interruption(action: Action) -> Option<Action> {
    match action {
        Action::Start | Action::Restart => Some(Action::Start),
        Action::Stop => Some(Action::Stop),
        Action::Signal(_) => None,
    }
}

/// Carries out one command on this host, at most once per home: see the module
/// documentation. `fleet` names the fleet (its ids are only unique within it).
/// Errors are the local database's; the action's own failures are a `Done` with
/// `ok: false`.
pub fn carry_out(sup: &mut Supervisor, fleet: &str, cmd: &Command) -> Result<Done> {
    let Some(action) = cmd.action else {
        return Ok(Done {
            ok: false,
            message: "refused: unknown action".into(),
            expired: false,
        });
    };
    let requested = |a: Action| format!("command {}: {a} requested by {}", cmd.id, cmd.issued_by);
    if cmd.late && sup.fleet_taken(fleet, cmd.id)?.is_none() {
        return Ok(Done {
            ok: false,
            message: EXPIRED_UNBEGUN.into(),
            expired: true,
        });
    }
    let taken = sup.fleet_take(
        fleet,
        cmd.id,
        &cmd.service,
        action.name(),
        &requested(action),
    )?;
    let result = match taken {
        Take::Fresh { known: false } => unknown(cmd),
        Take::Fresh { known: true } => perform(sup, cmd, action)?,
        Take::Before(t) if t.finished => {
            return Ok(Done {
                ok: t.ok,
                message: t.message,
                expired: false,
            })
        }
        Take::Before(t) => match after_interruption(action) {
            None => Done {
                ok: false,
                message: "interrupted: the daemon died while sending the signal; not repeated"
                    .into(),
                expired: false,
            },
            Some(_) if !sup.names()?.contains(&cmd.service) => unknown(cmd),
            Some(_)
                if action == Action::Restart && running_before(sup, cmd, t.taken_at)?.is_some() =>
            {
                // The daemon died while stopping it: the instance that runs is the one
                // the restart was to replace. Said as it is, not called a restart.
                let pid = running_before(sup, cmd, t.taken_at)?.unwrap_or_default();
                Done {
                    ok: false,
                    message: format!(
                        "interrupted: the daemon died during the restart; not restarted, \
                         still running (pid {pid}, started before the command)"
                    ),
                    expired: false,
                }
            }
            Some(a) => {
                sup.record(&cmd.service, crate::record::event::FLEET, &requested(a))?;
                // Said as it is: the command was interrupted, and this is what
                // completing it found and did (the service's state now).
                let d = perform(sup, cmd, a)?;
                Done {
                    message: format!(
                        "interrupted {action} (the daemon died during it), completed: {}",
                        d.message
                    ),
                    ..d
                }
            }
        },
    };
    sup.fleet_finish(fleet, cmd.id, &cmd.service, result.ok, &result.message)?;
    Ok(result)
}

/// The pid of the service's instance when it is the one the command found: started
/// before `taken_at` (unix ms), or still being stopped (the interrupted stop's target).
fn running_before(sup: &mut Supervisor, cmd: &Command, taken_at: i64) -> Result<Option<i32>> {
    Ok(match sup.status(&cmd.service)?.state {
        crate::state::State::Running { pid, since } if since < taken_at => Some(pid),
        crate::state::State::Stopping { pid } => Some(pid),
        _ => None,
    })
}

fn unknown(cmd: &Command) -> Done {
    Done {
        ok: false,
        message: format!("unknown service {} on this host", cmd.service),
        expired: false,
    }
}

/// Acts on a service defined here (its request is recorded already).
fn perform(sup: &mut Supervisor, cmd: &Command, action: Action) -> Result<Done> {
    let selection = Selection::Names {
        names: vec![cmd.service.clone()],
    };
    let reports = api::act(sup, action.verb(), &selection, &|| true)?;
    Ok(match reports.first() {
        Some(r) => describe(&r.result),
        None => Done {
            ok: false,
            message: "not carried out".into(),
            expired: false,
        },
    })
}

/// One line for a person reading `tend fleet history`.
pub fn describe(o: &Outcome) -> Done {
    let ok = |message: String| Done {
        ok: true,
        message,
        expired: false,
    };
    let fail = |message: String| Done {
        ok: false,
        message,
        expired: false,
    };
    let start = |s: &StartOutcome| match s {
        StartOutcome::Started { pid } => ok(format!("started (pid {pid})")),
        StartOutcome::AlreadyRunning { pid } => ok(format!("already running (pid {pid})")),
        StartOutcome::ExitedAtOnce {
            pid, stopped: true, ..
        } => fail(format!("stopped by another command at once (pid {pid})")),
        StartOutcome::ExitedAtOnce { pid, status, .. } => fail(format!(
            "exited at once (pid {pid}{})",
            status
                .as_ref()
                .map(|s| format!(", {s}"))
                .unwrap_or_default()
        )),
        StartOutcome::NotDue => ok("not due".into()),
        StartOutcome::Ready { pid, took } => ok(format!(
            "started and ready (pid {pid}, {} ms)",
            took.as_millis()
        )),
        StartOutcome::NotReady { pid, reason, .. } => {
            fail(format!("started but not ready (pid {pid}): {reason}"))
        }
    };
    match o {
        Outcome::Start { outcome } => start(outcome),
        Outcome::Stop { outcome } => match outcome {
            StopOutcome::NotRunning => ok("not running".into()),
            StopOutcome::Stopped { pid, killed, .. } => ok(format!(
                "stopped (pid {pid}{})",
                if *killed { ", killed" } else { "" }
            )),
        },
        Outcome::Restart { start: s, .. } => {
            let r = start(s);
            match s {
                StartOutcome::Started { pid } => ok(format!("restarted (pid {pid})")),
                _ => r,
            }
        }
        Outcome::Signal { outcome } => match outcome {
            SignalOutcome::Sent { pid, signal } => ok(format!("sent {signal} to pid {pid}")),
            SignalOutcome::NotRunning => fail("not running".into()),
        },
        Outcome::Error { message, .. } => fail(message.clone()),
    }
}

/// The delay before reconnect attempt `failures + 1`: exponential from 100 ms, capped
/// at [`BACKOFF_CAP`], each drawn uniformly from the upper half ("equal jitter"), so a
/// returning server is noticed within about two seconds while a thousand hosts spread
/// their attempts over a second instead of arriving at once. `unit` is a number in
/// [0, 1).
pub fn backoff(failures: u32, unit: f64) -> Duration {
    let cap = Duration::from_millis(100)
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_CAP);
    cap.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// The longest wait between two reconnect attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_from_rows() {
        assert_eq!(Action::from_row("start", None), Some(Action::Start));
        assert_eq!(Action::from_row("signal", Some(1)), Some(Action::Signal(1)));
        assert_eq!(Action::from_row("signal", None), None);
        assert_eq!(Action::from_row("signal", Some(0)), None);
        assert_eq!(Action::from_row("start", Some(9)), None);
        assert_eq!(Action::from_row("exec", None), None);
        for a in [
            Action::Start,
            Action::Stop,
            Action::Restart,
            Action::Signal(10),
        ] {
            assert_eq!(Action::from_row(a.name(), a.signal()), Some(a));
        }
    }

    #[test]
    fn interrupted_commands() {
        assert_eq!(after_interruption(Action::Start), Some(Action::Start));
        assert_eq!(after_interruption(Action::Restart), Some(Action::Start));
        assert_eq!(after_interruption(Action::Stop), Some(Action::Stop));
        assert_eq!(after_interruption(Action::Signal(1)), None);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        assert_eq!(backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(3, 0.0), Duration::from_millis(400));
        for f in [5, 10, 31, u32::MAX] {
            assert!(backoff(f, 0.999) <= BACKOFF_CAP);
            assert!(backoff(f, 0.0) >= BACKOFF_CAP / 2);
        }
    }
}
