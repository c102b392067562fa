//! `tend start | stop | restart | signal`: through the daemon when one runs (it stays the
//! parent of what it starts), else right here. Either way [`crate::api::act`] does the
//! work, and the reports print the same.

use std::io::{self, Write};

use super::session::{open_supervisor, Failure, Session};
use super::term::escape;
use crate::api::{Outcome, Report, Selection, Verb};
use crate::cli::{StartArgs, Which};
use crate::daemon::protocol::{Action, Response, WaitSpec};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::service::{self, fmt_duration};
use crate::supervisor::{SignalOutcome, StartOutcome, StopOutcome};

/// `tend start NAME... | --all [--wait [DURATION]]`.
pub fn start(
    s: &mut Session,
    home: &Home,
    a: StartArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let wait = match a.wait.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(text) => Some(Some(service::parse_duration(text).map_err(|message| {
            Error::Invalid {
                what: "--wait",
                message,
            }
        })?)),
    };
    act_with(s, home, Verb::Start, a.which, wait, out)
}

/// Applies `verb` to the services `which` names.
pub fn act(
    s: &mut Session,
    home: &Home,
    verb: Verb,
    which: Which,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    act_with(s, home, verb, which, None, out)
}

fn act_with(
    s: &mut Session,
    home: &Home,
    verb: Verb,
    which: Which,
    wait: crate::api::Wait,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    for n in &which.names {
        service::validate_name(n)?;
    }
    let selection = if which.all {
        Selection::All
    } else {
        Selection::Names { names: which.names }
    };
    match carry_out(home, verb, selection, wait)? {
        Answer::Reports(reports) => print_reports(s, out, &reports),
        Answer::Refused { message, code } => {
            eprintln!("tend: {}", escape(&message));
            s.fail_code(code);
            Ok(())
        }
    }
}

/// What became of a request: a report per service, or the daemon's refusal of the whole.
pub enum Answer {
    Reports(Vec<Report>),
    Refused { message: String, code: u8 },
}

/// Applies `verb` to `selection` through the daemon when one runs (it stays the parent of
/// what it starts), else here; prints nothing, so `tend top` can show the result its way.
pub fn carry_out(
    home: &Home,
    verb: Verb,
    selection: Selection,
    wait: crate::api::Wait,
) -> Result<Answer> {
    let action = Action::Act {
        verb,
        selection: selection.clone(),
        wait: WaitSpec::from_wait(wait),
    };
    match crate::daemon::client::request(home, action)? {
        Some(Response::Reports { reports }) => Ok(Answer::Reports(reports)),
        Some(Response::Error { message, code }) => Ok(Answer::Refused { message, code }),
        Some(_) => Err(Error::unexpected_answer()),
        None => {
            // No daemon took it: act here, the same way.
            let mut sup = open_supervisor(home)?;
            Ok(Answer::Reports(crate::api::act_with(
                &mut sup,
                verb,
                &selection,
                wait,
                &|| true,
            )?))
        }
    }
}

/// `HUP`, `SIGUSR1`, `10`: any signal a person names, KILL and STOP included.
pub fn parse_signal(text: &str) -> Result<i32> {
    match text.to_ascii_uppercase().trim_start_matches("SIG") {
        "KILL" => return Ok(libc::SIGKILL),
        "STOP" => return Ok(libc::SIGSTOP),
        _ => {}
    }
    text.parse::<service::StopSignal>()
        .map(|s| s.0 as i32)
        .map_err(|message| Error::Invalid {
            what: "signal",
            message,
        })
}

/// Prints per-service results; failures go to stderr and set the exit code.
pub fn print_reports(
    s: &mut Session,
    out: &mut dyn Write,
    reports: &[Report],
) -> Result<(), Failure> {
    for r in reports {
        let name = &r.name;
        match &r.result {
            Outcome::Start { outcome } => started(s, out, name, outcome)?,
            Outcome::Stop { outcome } => stopped(out, name, outcome)?,
            Outcome::Restart { stop, start } => {
                if *stop != StopOutcome::NotRunning {
                    stopped(out, name, stop)?;
                }
                started(s, out, name, start)?;
            }
            Outcome::Signal { outcome } => match outcome {
                SignalOutcome::Sent { pid, signal } => {
                    writeln!(out, "{name}: sent {signal} (pid {pid})")?
                }
                SignalOutcome::NotRunning => s.fail(&Error::NotRunning {
                    service: name.clone(),
                    what: "no signal sent",
                }),
            },
            Outcome::Error { message, code } => {
                eprintln!("tend: {}", escape(message));
                s.fail_code(*code);
            }
        }
        for n in &r.notices {
            eprintln!("tend: {}", escape(n));
        }
    }
    Ok(())
}

fn started(s: &mut Session, out: &mut dyn Write, name: &str, o: &StartOutcome) -> io::Result<()> {
    match o {
        StartOutcome::Started { pid } => writeln!(out, "{name}: started (pid {pid})"),
        StartOutcome::AlreadyRunning { pid } => {
            writeln!(out, "{name}: already running (pid {pid})")
        }
        StartOutcome::NotDue => Ok(()),
        StartOutcome::Ready { pid, took } => {
            writeln!(out, "{name}: ready (pid {pid}, {})", fmt_duration(*took))
        }
        StartOutcome::NotReady {
            pid,
            reason,
            status,
            log,
        } => {
            let mut message = if *pid > 0 {
                format!("pid {pid} {reason}")
            } else {
                reason.clone()
            };
            if let Some(st) = status {
                message.push_str(&format!(" ({st})"));
            }
            s.fail(&Error::NotReady {
                service: name.to_string(),
                message,
            });
            if !log.is_empty() {
                eprintln!("tend: {name}: the last lines of its log:");
                for l in log {
                    eprintln!("  {l}");
                }
            }
            Ok(())
        }
        StartOutcome::ExitedAtOnce {
            pid, stopped: true, ..
        } => {
            s.fail(&Error::StoppedAtOnce {
                service: name.to_string(),
                pid: *pid,
            });
            Ok(())
        }
        StartOutcome::ExitedAtOnce { pid, status, .. } => {
            s.fail(&Error::ExitedAtOnce {
                service: name.to_string(),
                pid: *pid,
                status: status.clone(),
            });
            Ok(())
        }
    }
}

/// One line for a stop, and notices on stderr when the service had left its session or
/// processes were left alone.
pub fn stopped(out: &mut dyn Write, name: &str, o: &StopOutcome) -> io::Result<()> {
    match *o {
        StopOutcome::NotRunning => writeln!(out, "{name}: not running"),
        StopOutcome::Stopped {
            pid,
            killed,
            took,
            others,
            left_session,
            left_alone,
        } => {
            let mut line = if killed {
                format!("{name}: stopped (pid {pid} ignored the stop signal; killed")
            } else {
                format!("{name}: stopped (pid {pid}, {}", fmt_duration(took))
            };
            if others > 0 {
                line.push_str(&format!("; {others} other process(es)"));
            }
            line.push(')');
            writeln!(out, "{line}")?;
            if left_session {
                eprintln!(
                    "tend: {name}: pid {pid} had left the session tend created for it; it was \
                     stopped through its own handle"
                );
            }
            if left_alone > 0 {
                eprintln!(
                    "tend: {name}: {left_alone} process(es) in the service's old session/group \
                     number could not be proven to be its own (the number may have been \
                     reused) and were left alone"
                );
            }
            Ok(())
        }
    }
}
