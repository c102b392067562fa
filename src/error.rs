//! Typed errors. Each carries the service, path or value it is about, and maps to one of
//! the exit codes documented in the README (see [`Error::exit_code`]).

use std::path::PathBuf;

/// Exit codes, as documented in the README.
pub mod exit {
    /// The command did what was asked.
    pub const OK: u8 = 0;
    /// The action failed at run time (spawn failed, a process could not be stopped, I/O).
    pub const FAILED: u8 = 1;
    /// Invalid input: bad arguments, invalid name, unbalanced quotes, missing directory,
    /// unwritable log path.
    pub const USAGE: u8 = 2;
    /// `status`: the service is defined but not running (LSB).
    pub const NOT_RUNNING: u8 = 3;
    /// The service is not defined (LSB "unknown" for status, and for every other command).
    pub const UNKNOWN_SERVICE: u8 = 4;
    /// Conflict with what is stored: the name exists already, or the service is running.
    pub const CONFLICT: u8 = 5;
    /// The state home or database is unusable: not a database, newer schema, locked, I/O.
    pub const STATE: u8 = 6;
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown service: {0}")]
    UnknownService(String),

    #[error("service {0} already exists (use `tend edit {0}` to change it)")]
    AlreadyExists(String),

    #[error("invalid service name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },

    #[error("{0} is running (stop it first, or use --stop)")]
    Running(String),

    #[error("state home {path}: {reason}")]
    Home { path: PathBuf, reason: String },

    #[error("database {path} is not a tend database (not an SQLite file, or corrupt)")]
    NotADatabase { path: PathBuf },

    #[error(
        "database {path} has schema version {found}, newer than this tend understands \
         ({known}); upgrade tend"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error("database {path} is locked by another process; try again")]
    Locked { path: PathBuf },

    #[error(
        "database {path} is in journal mode {mode:?}, not WAL, and cannot be switched back \
         now (another process has it open); tend needs WAL mode: close the other program \
         and try again"
    )]
    JournalMode { path: PathBuf, mode: String },

    #[error("database {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("stored record for {service} is unreadable: {message}")]
    Corrupt { service: String, message: String },

    #[error("{service}: {message}")]
    Start { service: String, message: String },

    #[error("{service}: could not stop: {message}")]
    Stop { service: String, message: String },

    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },

    #[error("daemon: {message}")]
    Daemon { message: String },

    #[error("postgres: {message}")]
    Postgres { message: String },

    #[error("a daemon is already running for {home} (pid {pid})")]
    DaemonRunning { home: PathBuf, pid: String },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::UnknownService(_) => exit::UNKNOWN_SERVICE,
            Error::AlreadyExists(_) | Error::Running(_) => exit::CONFLICT,
            Error::InvalidName { .. } | Error::Invalid { .. } => exit::USAGE,
            Error::Home { .. }
            | Error::NotADatabase { .. }
            | Error::SchemaTooNew { .. }
            | Error::Locked { .. }
            | Error::JournalMode { .. }
            | Error::Database { .. }
            | Error::Corrupt { .. } => exit::STATE,
            Error::Start { .. }
            | Error::Stop { .. }
            | Error::Io { .. }
            | Error::Daemon { .. }
            | Error::Postgres { .. } => exit::FAILED,
            Error::DaemonRunning { .. } => exit::CONFLICT,
        }
    }

    /// True when SQLite reported contention: the whole transaction may be retried.
    pub fn is_busy(&self) -> bool {
        match self {
            Error::Locked { .. } => true,
            Error::Database { source, .. } => is_busy(source),
            _ => false,
        }
    }
}

pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The OS reason of an I/O error without Rust's "(os error N)" suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => e.to_string(),
    }
}
