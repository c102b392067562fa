//! The vocabulary every transport speaks: the verbs, which services they apply to, what
//! happened to each, and the daemon's status. The CLI, the daemon's control socket and
//! the PostgreSQL listener all use these types and [`act`]; this module knows none of
//! them. It sits on the core: the outcomes it reports are the supervisor's own.

use serde::{Deserialize, Serialize};

use crate::error::Result;
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
    /// Services with an automatic restart pending.
    pub pending_restarts: usize,
    pub home: std::path::PathBuf,
    /// PostgreSQL control, when configured.
    pub postgres: Option<PgStatus>,
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
    let names = match selection {
        Selection::All => sup.names()?,
        Selection::Names { names } => names.clone(),
    };
    let mut reports = Vec::with_capacity(names.len());
    for name in names {
        if !proceed() {
            break;
        }
        let result = match verb {
            Verb::Start => sup.start(&name).map(|outcome| Outcome::Start { outcome }),
            Verb::Stop => sup.stop(&name).map(|outcome| Outcome::Stop { outcome }),
            Verb::Restart => sup
                .restart(&name)
                .map(|(stop, start)| Outcome::Restart { stop, start }),
            Verb::Signal { signal } => sup
                .signal(&name, signal)
                .map(|outcome| Outcome::Signal { outcome }),
        };
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
