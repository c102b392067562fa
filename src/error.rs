//! Typed errors. Each carries the service, path or value it is about, and maps to one of
//! the exit codes documented in the README (see [`Error::exit_code`]).

use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;

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
    /// `status`: whether the service's recorded instance still runs could not be checked
    /// (LSB 4, "program or service status is unknown").
    pub const STATUS_UNKNOWN: u8 = 4;
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

    /// `tend top` draws on a terminal; a pipe or a file would get escape codes.
    #[error(
        "tend top needs a terminal on standard input and output (for scripts: `tend list --json`)"
    )]
    NotATerminal,

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

    /// The files of a database the daemon keeps open are no longer the ones on disk.
    #[error(
        "database {path}: {change} while the daemon had it open; the daemon no longer uses \
         it (see `tend doctor`)"
    )]
    FilesChanged { path: PathBuf, change: String },

    /// A command would use the database beside a daemon that has other files open.
    #[error(
        "the daemon (pid {pid}) has database {path} open through files that are no longer \
         on disk ({change}); nothing is read or written beside it: see `tend doctor` for \
         how to keep what only the daemon holds, then restart it"
    )]
    DaemonFiles {
        path: PathBuf,
        pid: String,
        change: String,
    },

    #[error("database {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("stored record for {service} is unreadable: {message}")]
    Corrupt { service: String, message: String },

    #[error("{service}: {source}")]
    Start {
        service: String,
        #[source]
        source: SpawnError,
    },

    #[error("{service}: started (pid {pid}) but exited at once{}; see `tend logs {service}`",
        status.as_ref().map(|s| format!(" ({s})")).unwrap_or_default())]
    ExitedAtOnce {
        service: String,
        pid: i32,
        /// `code N` or `signal NAME` when tend reaped it.
        status: Option<String>,
    },

    #[error("{service}: started (pid {pid}) but another command stopped it at once")]
    StoppedAtOnce { service: String, pid: i32 },

    /// Whoever asked for a start is gone (a client that gave up on the daemon) by the
    /// time it would spawn: it is not carried out.
    #[error("{service}: not started: whoever asked for it no longer waits for it")]
    Withdrawn { service: String },

    #[error("{service}: env file {}: {reason}", path.display())]
    EnvFile {
        service: String,
        path: PathBuf,
        reason: String,
    },

    #[error("{file}:{line}: {message}")]
    File {
        file: String,
        line: usize,
        message: String,
    },

    #[error("{0}")]
    Cycle(String),

    #[error("{service}: not started: {reason}")]
    Requirement { service: String, reason: String },

    #[error("{service}: {message}")]
    NotReady { service: String, message: String },

    #[error("{service}: not running; {what}")]
    NotRunning { service: String, what: &'static str },

    /// Whether the recorded instance still runs could not be checked (out of descriptors,
    /// say): acting on a guess could start a second copy or signal a stranger, so nothing
    /// was done.
    #[error("{service}: cannot tell whether pid {pid} still runs ({reason}); {what}")]
    LivenessUnknown {
        service: String,
        pid: i32,
        reason: String,
        /// What was not done: `not started`, `nothing signalled`...
        what: &'static str,
    },

    #[error("{service}: could not stop: {source}")]
    Stop {
        service: String,
        #[source]
        source: StopError,
    },

    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },

    #[error("daemon: {message}")]
    Daemon { message: String },

    #[error("postgres: {message}")]
    Postgres { message: String },

    #[error("a daemon is already running for {home} (pid {pid})")]
    DaemonRunning { home: PathBuf, pid: String },

    /// `tend up` for a state home another `tend up` holds.
    #[error("another tend up is running with state home {home} ({holder})")]
    UpRunning { home: PathBuf, holder: String },
}

impl Error {
    /// A daemon answered something that does not fit the request (never shown as Rust
    /// debug text: it is a message for a person).
    pub fn unexpected_answer() -> Error {
        Error::Daemon {
            message: "the daemon's answer does not fit the request (is it another version \
                      of tend? see `tend daemon status`)"
                .into(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::UnknownService(_) => exit::UNKNOWN_SERVICE,
            Error::AlreadyExists(_) | Error::Running(_) => exit::CONFLICT,
            Error::InvalidName { .. }
            | Error::Invalid { .. }
            | Error::NotATerminal
            | Error::File { .. }
            | Error::Cycle(_) => exit::USAGE,
            Error::Home { .. }
            | Error::NotADatabase { .. }
            | Error::SchemaTooNew { .. }
            | Error::Locked { .. }
            | Error::JournalMode { .. }
            | Error::Database { .. }
            | Error::FilesChanged { .. }
            | Error::DaemonFiles { .. }
            | Error::Corrupt { .. } => exit::STATE,
            Error::Start { .. }
            | Error::ExitedAtOnce { .. }
            | Error::StoppedAtOnce { .. }
            | Error::EnvFile { .. }
            | Error::Withdrawn { .. }
            | Error::Requirement { .. }
            | Error::NotReady { .. }
            | Error::NotRunning { .. }
            | Error::LivenessUnknown { .. }
            | Error::Stop { .. }
            | Error::Io { .. }
            | Error::Daemon { .. }
            | Error::Postgres { .. } => exit::FAILED,
            Error::DaemonRunning { .. } | Error::UpRunning { .. } => exit::CONFLICT,
        }
    }

    /// What became of a kept connection's database files, when this error is about that
    /// (see [`crate::store::Files`]).
    pub fn files_change(&self) -> Option<&str> {
        match self {
            Error::FilesChanged { change, .. } => Some(change),
            _ => None,
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

/// The step of the child's setup that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    Setsid = 1,
    Fork = 2,
    Stdio = 3,
    Chdir = 4,
    Exec = 5,
    /// Joining the service's cgroup.
    Cgroup = 6,
    /// Closing the descriptors the service must not inherit.
    CloseFds = 7,
    // The process settings (`crate::service::execution`), in the order they are set.
    LimitNofile = 8,
    LimitNproc = 9,
    LimitCore = 10,
    LimitMemlock = 11,
    Nice = 12,
    OomScoreAdj = 13,
    /// setgroups(2): the supplementary groups.
    Groups = 14,
    /// setresgid(2).
    Group = 15,
    /// setresuid(2).
    User = 16,
}

impl Stage {
    pub fn from_u32(v: u32) -> Option<Stage> {
        Some(match v {
            1 => Stage::Setsid,
            2 => Stage::Fork,
            3 => Stage::Stdio,
            4 => Stage::Chdir,
            5 => Stage::Exec,
            6 => Stage::Cgroup,
            7 => Stage::CloseFds,
            8 => Stage::LimitNofile,
            9 => Stage::LimitNproc,
            10 => Stage::LimitCore,
            11 => Stage::LimitMemlock,
            12 => Stage::Nice,
            13 => Stage::OomScoreAdj,
            14 => Stage::Groups,
            15 => Stage::Group,
            16 => Stage::User,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no such program: {0}")]
    NoSuchProgram(String),
    #[error("cannot execute {0}: permission denied")]
    NotExecutable(String),
    #[error("working directory {}: {reason}", path.display())]
    Cwd { path: PathBuf, reason: String },
    #[error("{what} {}: {reason}", path.display())]
    Open {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0} contains a NUL byte")]
    Nul(String),
    #[error("{what} failed: {errno}")]
    Os { what: &'static str, errno: Errno },
    #[error("{}", describe(*stage, *errno, program))]
    Child {
        stage: Stage,
        errno: Errno,
        program: String,
    },
    #[error("the new process did not report in ({0})")]
    NoReport(String),
    /// A process setting the new process could not apply (`limit_nofile`, `user`...):
    /// it never ran.
    #[error("cannot set {setting} to {value}: {}", errno.desc().to_lowercase())]
    Setting {
        setting: &'static str,
        value: String,
        errno: Errno,
    },
    /// A process setting that cannot be applied, found before any fork (an unknown
    /// user, another user when tend does not run as root).
    #[error("{setting}: {reason}")]
    Refused {
        setting: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Cgroup(String),
    /// A `--pidfile` service that did not hand over to a daemonized process.
    #[error("{0}")]
    Forking(String),
    /// The log writer of a `--log-timestamps` service could not be started.
    #[error("{0}")]
    LogWriter(String),
}

/// Why the read end of a running service's output pipe could not be had again, to start
/// a log writer on it in place of one that is gone.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// Taking a descriptor of the service is refused or not supported: that does not
    /// change while it runs.
    #[error(
        "cannot take descriptor {fd} of pid {pid} ({reason}): pidfd_getfd needs ptrace \
         access to the service (the same user and, under Yama ptrace_scope 1, a process \
         the daemon started; or root) and Linux 5.6"
    )]
    Denied { pid: i32, fd: i32, reason: String },
    /// Anything else (no descriptor left, the descriptor replaced or the service gone
    /// meanwhile): worth another try.
    #[error("{what}: {reason}")]
    Failed { what: String, reason: String },
}

fn describe(stage: Stage, errno: Errno, program: &str) -> String {
    let reason = errno.desc().to_lowercase();
    match (stage, errno) {
        (Stage::Exec, Errno::ENOENT) => format!("no such program: {program}"),
        (Stage::Exec, Errno::EACCES) => format!("cannot execute {program}: permission denied"),
        (Stage::Exec, Errno::ENOEXEC) => format!("cannot execute {program}: not an executable"),
        (Stage::Exec, _) => format!("cannot execute {program}: {reason}"),
        (Stage::Chdir, _) => format!("cannot enter the working directory: {reason}"),
        (Stage::Stdio, _) => format!("cannot redirect stdio: {reason}"),
        (Stage::Setsid, _) => format!("setsid failed: {reason}"),
        (Stage::Fork, _) => format!("fork failed: {reason}"),
        (Stage::Cgroup, _) => format!("cannot enter its cgroup: {reason}"),
        (Stage::CloseFds, _) => format!("cannot close inherited descriptors: {reason}"),
        // Reported as `SpawnError::Setting`, with the value; this is the fallback.
        (s, _) => format!("cannot apply a process setting ({s:?}): {reason}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("{alive} process(es) of the service still alive {waited:?} after SIGKILL")]
    Survived { alive: usize, waited: Duration },
    #[error("sending {signal} to pid {pid}: {errno}")]
    Signal {
        signal: Signal,
        pid: i32,
        errno: Errno,
    },
    #[error("cannot kill what runs in cgroup {}: {reason}", path.display())]
    Cgroup { path: PathBuf, reason: String },
}
