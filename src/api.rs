//! The vocabulary every transport speaks: the verbs, which services they apply to, what
//! happened to each, and the daemon's status. The CLI, the daemon's control socket and
//! the PostgreSQL listener all use these types and [`act`]; this module knows none of
//! them. It sits on the core: the outcomes it reports are the supervisor's own.

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::error::{Error, Result};
use crate::service::graph;
use crate::supervisor::{SignalOutcome, StartOutcome, StopOutcome, Supervisor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verb {
    Start,
    Stop,
    Restart,
    /// Send a signal (by number) to each service's main process.
    Signal {
        signal: i32,
    },
}

/// Which services a verb applies to: some by name, or all of them (never both).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Selection {
    Names { names: Vec<String> },
    All,
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verb::Start => f.write_str("start"),
            Verb::Stop => f.write_str("stop"),
            Verb::Restart => f.write_str("restart"),
            Verb::Signal { signal } => match nix::sys::signal::Signal::try_from(*signal) {
                Ok(s) => write!(f, "signal {}", crate::service::StopSignal(s).name()),
                Err(_) => write!(f, "signal {signal}"),
            },
        }
    }
}

/// A service left down by a daemon that exited with its restart pending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftDown {
    pub name: String,
    /// Unix ms the restart was due.
    pub due_at: i64,
}

/// The result of one verb on one service, as the CLI prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub result: Outcome,
    /// Stale records cleared and similar remarks, printed on stderr.
    pub notices: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Outcome {
    Start {
        outcome: StartOutcome,
    },
    Stop {
        outcome: StopOutcome,
    },
    Restart {
        stop: StopOutcome,
        start: StartOutcome,
    },
    Signal {
        outcome: SignalOutcome,
    },
    Error {
        message: String,
        code: u8,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat, to wait for this very process to exit.
    pub start_time: u64,
    /// Unix ms.
    pub started_at: i64,
    pub version: String,
    /// Services with a running instance.
    pub running: usize,
    /// Of those, the ones adopted (not started by this daemon), watched by pidfd.
    pub adopted: usize,
    /// Recorded instances not watched yet: their check could not be made, or the daemon
    /// is short of descriptors. Looked at again every few seconds.
    #[serde(default)]
    pub unwatched: usize,
    /// Services with an automatic restart pending.
    pub pending_restarts: usize,
    pub home: std::path::PathBuf,
    /// How services are contained: `cgroup PATH` or `process-group (why)`.
    #[serde(default)]
    pub containment: String,
    /// PostgreSQL control, when configured.
    pub postgres: Option<PgStatus>,
    /// What the daemon counted since it started (requests, restarts, commands).
    #[serde(default)]
    pub counters: crate::metrics::CounterValues,
    /// Where the HTTP API listens (`127.0.0.1:9123`, `unix:PATH`); `None`: it is off.
    #[serde(default)]
    pub http: Option<String>,
}

/// What `tend daemon status` shows about PostgreSQL. The URL is shown without password.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PgStatus {
    /// `connecting`, `connected` or `reconnecting`.
    pub state: String,
    /// Unix ms: when the current state began.
    pub since: i64,
    pub last_error: Option<String>,
    pub url: String,
    pub channel: String,
    pub host_id: String,
    /// Notifications received since the daemon started.
    pub received: u64,
    /// Fleet wake-ups received (NOTIFYs on this host's own wake-up channel).
    #[serde(default)]
    pub fleet_wakeups: u64,
    /// Claim attempts made (each one statement, whether it found a command or not).
    #[serde(default)]
    pub fleet_claims: u64,
    /// Backstop sweeps run.
    #[serde(default)]
    pub fleet_sweeps: u64,
    /// Which quick-mode payloads are obeyed: `signed only`, `unsigned refused (joined
    /// a fleet)`, `unsigned allowed (postgres.quick_unsigned)`, ...
    #[serde(default)]
    pub quick_mode: String,
    /// The fleet this daemon joins (durable commands), beside the quick mode.
    #[serde(default)]
    pub fleet: Option<FleetStatus>,
}

/// What `tend daemon status` shows about the fleet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FleetStatus {
    /// `looking` (not connected yet), `joined`, `no fleet` (the schema is missing or
    /// unreadable: looked at again every 10 s) or `reconnecting`.
    pub state: String,
    /// Unix ms: when the current state began.
    pub since: i64,
    pub schema: String,
    pub host_id: String,
    /// This daemon has joined the fleet at least once (it then refuses unsigned
    /// quick-mode payloads for the rest of its life, unless configured otherwise).
    pub joined_once: bool,
    /// Unix ms of the last sweep for pending commands.
    pub last_sweep: Option<i64>,
    pub last_error: Option<String>,
}

/// Applies `verb` to the selected services, each in turn; one failing does not stop the
/// others. `proceed` is asked before each service: when it says no (the caller went
/// away), the rest are not acted on.
pub fn act(
    sup: &mut Supervisor,
    verb: Verb,
    selection: &Selection,
    proceed: &dyn Fn() -> bool,
) -> Result<Vec<Report>> {
    act_with(sup, verb, selection, None, proceed)
}

/// How long `start --wait` waits: `Some(None)` until each service's own check timeout,
/// `Some(Some(d))` at most `d` per service.
pub type Wait = Option<Option<Duration>>;

/// [`act`], in dependency order: a start starts what each service `requires` first and
/// orders by `requires` and `after`; a stop goes in the reverse order. A service whose
/// requirement did not start (or, with `wait`, did not become ready) is not started.
pub fn act_with(
    sup: &mut Supervisor,
    verb: Verb,
    selection: &Selection,
    wait: Wait,
    proceed: &dyn Fn() -> bool,
) -> Result<Vec<Report>> {
    // The definitions decide the order; one stop, restart or signal needs none of it.
    let ordered = match (verb, selection) {
        (Verb::Signal { .. }, _) => false,
        (Verb::Start, _) | (_, Selection::All) => true,
        (_, Selection::Names { names }) => names.len() > 1,
    };
    // Of the definitions, all for `--all`; for named services only theirs (and, for a
    // start, those of what they require): with 1,000 services, reading every definition
    // for `tend start web` was most of its cost.
    let services = match selection {
        _ if !ordered => Vec::new(),
        Selection::All => sup.services()?,
        Selection::Names { names } => sup.services_named(names, verb == Verb::Start)?,
    };
    let names = match selection {
        Selection::All if ordered => services.iter().map(|s| s.name.clone()).collect(),
        Selection::All => sup.names()?,
        Selection::Names { names } => names.clone(),
    };
    let names = match verb {
        Verb::Start => graph::start_order(&services, &names),
        Verb::Restart => graph::order_among(&services, &names),
        Verb::Stop => {
            let mut n = graph::order_among(&services, &names);
            n.reverse();
            n
        }
        Verb::Signal { .. } => names,
    };
    let mut failed: Vec<String> = Vec::new();
    let mut reports = Vec::with_capacity(names.len());
    for name in names {
        if !proceed() {
            break;
        }
        let blocked = match verb {
            Verb::Start | Verb::Restart => services
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.settings.requires.iter().find(|r| failed.contains(r)))
                .cloned(),
            _ => None,
        };
        let result = if let Some(r) = blocked {
            Err(Error::Requirement {
                service: name.clone(),
                reason: format!("its requirement {r} did not start"),
            })
        } else {
            match verb {
                Verb::Start => sup
                    .start(&name)
                    .and_then(|o| waited(sup, &name, o, wait))
                    .map(|outcome| Outcome::Start { outcome }),
                Verb::Stop => sup.stop(&name).map(|outcome| Outcome::Stop { outcome }),
                Verb::Restart => sup.restart(&name).and_then(|(stop, start)| {
                    Ok(Outcome::Restart {
                        stop,
                        start: waited(sup, &name, start, wait)?,
                    })
                }),
                Verb::Signal { signal } => sup
                    .signal(&name, signal)
                    .map(|outcome| Outcome::Signal { outcome }),
            }
        };
        let ok = match &result {
            Ok(Outcome::Start { outcome }) | Ok(Outcome::Restart { start: outcome, .. }) => {
                !matches!(
                    outcome,
                    StartOutcome::ExitedAtOnce { .. } | StartOutcome::NotReady { .. }
                )
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if !ok {
            failed.push(name.clone());
        }
        reports.push(Report {
            name,
            result: result.unwrap_or_else(|e| Outcome::Error {
                message: e.to_string(),
                code: e.exit_code(),
            }),
            notices: sup.take_notices(),
        });
    }
    Ok(reports)
}

/// With `wait`, waits until a started (or already running) service is ready.
fn waited(
    sup: &mut Supervisor,
    name: &str,
    started: StartOutcome,
    wait: Wait,
) -> Result<StartOutcome> {
    let Some(cap) = wait else {
        return Ok(started);
    };
    match started {
        StartOutcome::Started { .. } | StartOutcome::AlreadyRunning { .. } => {
            sup.wait_ready(name, cap)
        }
        StartOutcome::ExitedAtOnce {
            pid,
            status,
            stopped,
        } => Ok(StartOutcome::NotReady {
            pid,
            reason: if stopped {
                "stopped by another command".into()
            } else {
                "exited at once".into()
            },
            status,
            log: sup.log_tail_of(name)?,
        }),
        other => Ok(other),
    }
}
