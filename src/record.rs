//! The records tend keeps about services, as plain data: a running instance, the restart
//! bookkeeping, an event. The store persists them; the core decides what they become.

/// Unix time now, in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A running instance: the identity of the process tend started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub pid: i32,
    pub pgid: i32,
    /// Field 22 of /proc/PID/stat: clock ticks after boot when the process was created.
    pub start_time: u64,
    pub boot_id: String,
    /// Unix ms.
    pub started_at: i64,
    /// A stop was asked for: the exit that follows is not a crash.
    pub stopping: bool,
    /// The cgroup the instance runs in (a directory on the cgroup2 mount), when it was
    /// started with cgroup containment; `None`: process-group containment.
    pub cgroup: Option<String>,
    /// The first process of a self-daemonizing (`--pidfile`) service, not yet replaced by
    /// the process it daemonized.
    pub launching: bool,
}

/// Where a service's stdout log stood when an instance started, so that a `log`
/// readiness check reads what this instance wrote and nothing before, even once the log
/// was rotated (renamed to `NAME.log.1` by the log writer, or its start moved there by
/// the daemon's rotation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogMark {
    /// The log's length then: where this instance's output begins in it.
    pub offset: u64,
    /// The files below were looked at (a mark recorded by an older tend has the offset
    /// only).
    #[serde(default)]
    pub identified: bool,
    /// The log file then; `None`: there was none.
    #[serde(default)]
    pub file: Option<FileId>,
    /// Its newest backup (`NAME.log.1`) then; `None`: there was none.
    #[serde(default)]
    pub backup: Option<FileId>,
}

/// Which file a path named: its device and inode, and its birth time (ns since the
/// epoch; 0 where the file system does not keep it), since an inode number freed by a
/// rotation can be given to the next new file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub born: i64,
}

/// Restart bookkeeping of one service (the daemon's memory, kept in the database so a
/// new daemon carries on where the last one stopped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runtime {
    /// Automatic restarts since a person last started the service.
    pub restarts: u32,
    /// `code N`, `signal NAME` or `unknown`.
    pub last_exit: Option<String>,
    pub last_exit_at: Option<i64>,
    /// Delay used before the last automatic restart, in ms.
    pub backoff_ms: u64,
    /// Unix ms of a pending automatic restart.
    pub next_retry_at: Option<i64>,
    /// Why the service was given up on (start limit hit).
    pub failed: Option<String>,
    /// Unix ms of recent starts, for the start limit.
    pub recent_starts: Vec<i64>,
}

/// One row of the event log.
#[derive(Clone, Debug)]
pub struct Event {
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    pub service: String,
    pub kind: String,
    pub detail: String,
}

/// Event kinds, as stored and shown by `tend events`.
pub mod event {
    pub const ADDED: &str = "added";
    pub const CHANGED: &str = "changed";
    pub const REMOVED: &str = "removed";
    pub const START: &str = "start";
    /// An automatic start by the daemon's restart policy.
    pub const RESTART: &str = "restart";
    pub const STOP: &str = "stop";
    /// The process ended: exit code, signal, or unknown when tend was not its parent.
    pub const EXIT: &str = "exit";
    /// An automatic restart is scheduled.
    pub const BACKOFF: &str = "backoff";
    /// The start limit was hit; the service is left alone until a person starts it.
    pub const FAILED: &str = "failed";
    /// A running service found by a daemon that did not start it.
    pub const ADOPTED: &str = "adopted";
    /// A signal was sent to the main process (`tend signal`, NOTIFY `signal`).
    pub const SIGNAL: &str = "signal";
    /// A command arrived over NOTIFY and is about to be carried out.
    pub const NOTIFY: &str = "notify";
    /// A fleet command (PostgreSQL command table) is about to be carried out.
    pub const FLEET: &str = "fleet";
    /// A NOTIFY payload was refused (malformed, unsigned, unknown service...).
    pub const REJECTED: &str = "rejected";
    /// The record did not describe a process of ours (recycled PID, earlier boot).
    pub const STALE: &str = "stale-cleared";
    /// Whether the recorded process still runs could not be checked (too many open
    /// files, say): the record was kept as it was, and is looked at again.
    pub const UNKNOWN: &str = "unknown";
    /// Health checks failed N times in a row; the service is killed and the restart
    /// policy decides what follows. The detail has the last check's output.
    pub const UNHEALTHY: &str = "unhealthy";
    /// The daemon found the running service's log writer gone (both of its processes)
    /// and started a new one on the service's pipes.
    pub const LOG_WRITER: &str = "log-writer";
    /// A file the service's `watch` globs match changed (or one of a service it
    /// requires): the daemon restarts it.
    pub const WATCH: &str = "watch";
    /// A hook (`on_exit`...) did not succeed: it exited non-zero, was killed at its
    /// timeout, or could not be started. The detail says which hook and why. Never a
    /// reason to restart the service, and never runs a hook itself.
    pub const HOOK_FAILED: &str = "hook-failed";
}

/// A fleet command as this home recorded taking it: taken before acting,
/// finished with its result, reported once written back to PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub id: i64,
    pub service: String,
    pub action: String,
    pub finished: bool,
    pub ok: bool,
    pub message: String,
    pub reported: bool,
    /// Unix ms this home took it (committed before acting).
    pub taken_at: i64,
}
