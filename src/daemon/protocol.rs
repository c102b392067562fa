//! The control-socket protocol, shared by the CLI (client) and the daemon (server).
//!
//! One request per connection: the client writes one JSON line, the daemon answers with
//! one JSON line and closes. Both carry [`VERSION`]; a daemon answers a request of
//! another version with an error instead of guessing.

use serde::{Deserialize, Serialize};

use crate::supervisor::{SignalOutcome, StartOutcome, StopOutcome};

/// Bumped on any incompatible change to the types below.
pub const VERSION: u32 = 1;

/// Largest request or response line accepted, in bytes.
pub const MAX_MESSAGE: u64 = 16 * 1024 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub action: Action,
}

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

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Action {
    /// start / stop / restart of `names`, or of every service with `all`.
    Act {
        verb: Verb,
        names: Vec<String>,
        all: bool,
    },
    /// The daemon's own status.
    Status,
    /// Exit; with `stop_services`, stop every service first.
    Shutdown { stop_services: bool },
    /// Re-read definitions and adopt running services not yet watched (as SIGHUP).
    Reload,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Response {
    Reports { reports: Vec<Report> },
    Status(Box<DaemonStatus>),
    Done,
    Error { message: String, code: u8 },
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
    pub postgres: Option<crate::pg::listener::PgStatus>,
}
