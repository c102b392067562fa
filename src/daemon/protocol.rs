//! The control-socket protocol, shared by the CLI (client) and the daemon (server).
//!
//! One request per connection. The client writes one JSON line carrying a deadline; the
//! daemon answers with JSON lines: `accepted` as soon as it has read a request it will
//! carry out, `working` once a second while it does, and one final line, then closes.
//! A request whose deadline has passed when the daemon gets to it is dropped unread: its
//! caller has given up on it, so it must never be carried out later. Both sides carry
//! [`VERSION`]; a daemon answers a request of another version with an error instead of
//! guessing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::{DaemonStatus, LeftDown, Report, Selection, Verb};

/// Bumped on any incompatible change to the types below. 3: `Act` carries
/// `wait`, which an older daemon would ignore (starting without waiting while the CLI
/// reports success), and start outcomes `ready` / `not-ready`.
pub const VERSION: u32 = 3;

/// Largest request or response line accepted, in bytes.
pub const MAX_MESSAGE: u64 = 16 * 1024 * 1024;

/// How long the CLI waits for `accepted` before it gives the request up.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline a request carries: the daemon must have accepted it by then. Shorter
/// than [`ACCEPT_TIMEOUT`], so an `accepted` sent just in time still reaches a client
/// that is still waiting for it.
pub const ACCEPT_DEADLINE: Duration = Duration::from_secs(4);

/// How often the daemon says it is still working on a request.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long the CLI waits for the next line of an accepted request before it decides
/// the daemon stopped answering.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    /// Unix ms by which the daemon must have accepted the request.
    pub deadline_ms: i64,
    pub action: Action,
}

/// How long a `start --wait` sent to the daemon waits for each service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitSpec {
    pub cap_ms: Option<u64>,
}

impl WaitSpec {
    pub fn from_wait(w: crate::api::Wait) -> Option<WaitSpec> {
        w.map(|cap| WaitSpec {
            cap_ms: cap.map(|d| d.as_millis() as u64),
        })
    }

    pub fn to_wait(w: Option<WaitSpec>) -> crate::api::Wait {
        w.map(|s| s.cap_ms.map(std::time::Duration::from_millis))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Action {
    /// start / stop / restart / signal of the selected services.
    Act {
        verb: Verb,
        selection: Selection,
        /// `start --wait`: absent for no wait; `{"cap_ms": null}` for each check's own
        /// timeout.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait: Option<WaitSpec>,
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
    /// The request was read in time and will be carried out.
    Accepted,
    /// Still working on it.
    Working,
    Reports {
        reports: Vec<Report>,
    },
    Status(Box<DaemonStatus>),
    Done,
    /// The daemon is exiting; these services had an automatic restart pending that it
    /// did not carry out (due later than it waited for).
    ShuttingDown {
        reports: Vec<Report>,
        left_down: Vec<LeftDown>,
    },
    Error {
        message: String,
        code: u8,
    },
}
