//! The CLI's side of the daemon: is one running, talking to it, starting it in the
//! background, waiting for it to exit.
//!
//! The CLI never needs the socket when no daemon runs: it first probes the daemon's lock
//! (which it never takes). A request the daemon has not accepted was not carried out, so
//! when the connection is refused or reset before `accepted` (a daemon that died or is
//! going away), the CLI acts itself. A daemon that does not accept within
//! [`ACCEPT_TIMEOUT`] (stopped, wedged) gets an error, and the request's deadline makes
//! sure it is never carried out later.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::protocol::{
    Action, Request, Response, ACCEPT_DEADLINE, ACCEPT_TIMEOUT, MAX_MESSAGE, SILENCE_TIMEOUT,
    VERSION,
};
use crate::api::DaemonStatus;
use crate::error::{io_reason, Error, Result};
use crate::home::Home;
use crate::record::now_ms;
use crate::store::Files;

pub fn socket_path(home: &Home) -> PathBuf {
    home.root().join("daemon.sock")
}

pub fn lock_path(home: &Home) -> PathBuf {
    home.root().join("daemon.lock")
}

/// True when a daemon holds this home's lock. Cheap (an open and an `F_OFD_GETLK`), and
/// takes nothing, so the CLI can ask before every command.
pub fn present(home: &Home) -> bool {
    crate::process::lock::probe(&lock_path(home))
}

/// What a daemon wrote in its lock file: its pid, the database files it opened, and,
/// once it noticed that those are no longer the ones on disk, what changed. Lines:
/// `PID`, `files DEV:INO DEV:INO DEV:INO` (see [`Files`]), `fault UNIX_MS WHAT CHANGED`.
/// The file stays when the daemon ends, until the next daemon takes the lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notes {
    pub pid: Option<i32>,
    /// `None` before the daemon opened the database (or from a tend that did not say).
    pub files: Option<Files>,
    pub fault: Option<Fault>,
}

/// A daemon stopped using the database because its files on disk changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Unix ms when it noticed.
    pub at: i64,
    /// What changed (`tend.db-wal was deleted or renamed`).
    pub change: String,
}

impl Notes {
    fn parse(text: &str) -> Notes {
        let mut lines = text.lines();
        let pid = lines.next().and_then(|l| l.trim().parse().ok());
        let mut notes = Notes {
            pid,
            ..Notes::default()
        };
        // A line still being written has no newline yet: only whole lines count.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        for line in whole.lines().skip(1) {
            if let Some(files) = line.strip_prefix("files ") {
                notes.files = files.parse().ok();
            } else if let Some(fault) = line.strip_prefix("fault ") {
                let (at, change) = fault.split_once(' ').unwrap_or((fault, ""));
                notes.fault = Some(Fault {
                    at: at.parse().unwrap_or(0),
                    change: change.to_string(),
                });
            }
        }
        notes
    }

    /// What keeps a command from using the database beside this daemon: the daemon
    /// said it stopped using it, or the files it opened are no longer the ones on disk
    /// (three `stat`s). Either way the daemon goes on committing to, or has open, files
    /// nobody else sees; the command must not open the files that are there now (see
    /// [`Files`]).
    pub fn beside(&self, home: &Home) -> Option<String> {
        if let Some(f) = &self.fault {
            return Some(f.change.clone());
        }
        self.files?.changes(&home.db_path())
    }

    fn pid_text(&self) -> String {
        self.pid.map_or("unknown".into(), |p| p.to_string())
    }
}

/// The notes of the daemon that holds this home's lock; `None` when none does. One open,
/// one `F_OFD_GETLK`, one read: cheap enough for every command that opens the database.
pub fn holder(home: &Home) -> Option<Notes> {
    crate::process::lock::read_if_held(&lock_path(home)).map(|t| Notes::parse(&t))
}

/// What the lock file says, whether or not a daemon holds the lock now (the last one's
/// notes stay until the next one starts).
pub fn notes(home: &Home) -> Notes {
    Notes::parse(&std::fs::read_to_string(lock_path(home)).unwrap_or_default())
}

/// Refuses when a daemon holds this home's lock but not the database files on disk (see
/// [`Notes::beside`]): whatever this command would read there is not what the daemon
/// sees, and what it would write is split from what the daemon writes. Returns the
/// daemon's notes when one runs.
pub fn check_beside(home: &Home) -> Result<Option<Notes>> {
    let Some(notes) = holder(home) else {
        return Ok(None);
    };
    match notes.beside(home) {
        None => Ok(Some(notes)),
        Some(change) => Err(Error::DaemonFiles {
            path: home.db_path(),
            pid: notes.pid_text(),
            change,
        }),
    }
}

/// A path to the socket that fits in `sockaddr_un` (108 bytes) however long the state
/// home's path is: beyond that, the home directory is opened and the socket is named
/// through `/proc/self/fd/N/`. The returned file must stay open while the path is used.
pub fn short_socket_path(home: &Home) -> Result<(Option<File>, PathBuf)> {
    let full = socket_path(home);
    if full.as_os_str().len() < 100 {
        return Ok((None, full));
    }
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(home.root())
        .map_err(|e| Error::Io {
            path: home.root().to_path_buf(),
            reason: io_reason(&e),
        })?;
    use std::os::fd::AsRawFd;
    let path = PathBuf::from(format!("/proc/self/fd/{}/daemon.sock", dir.as_raw_fd()));
    Ok((Some(dir), path))
}

/// Sends one request to the daemon of `home`. `Ok(None)`: no daemon took it (none runs,
/// or it is going away), and the caller acts itself.
pub fn request(home: &Home, action: Action) -> Result<Option<Response>> {
    if !present(home) {
        return Ok(None);
    }
    let fail = |message: String| Error::Daemon { message };
    let (_dir, path) = short_socket_path(home)?;
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        // No socket, or nobody listening on it: a daemon that is exiting (it stops
        // accepting first) or has just died.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(fail(format!(
                "cannot connect to {}: {}",
                socket_path(home).display(),
                io_reason(&e)
            )))
        }
    };
    let mut line = serde_json::to_string(&Request {
        version: VERSION,
        deadline_ms: now_ms() + ACCEPT_DEADLINE.as_millis() as i64,
        action,
    })
    .expect("requests always serialize");
    line.push('\n');
    if let Err(e) = stream.write_all(line.as_bytes()) {
        if gone(&e) {
            return Ok(None);
        }
        return Err(fail(format!("sending the request: {}", io_reason(&e))));
    }
    let mut reader = BufReader::new((&stream).take(MAX_MESSAGE));
    let mut accepted = false;
    loop {
        let limit = if accepted {
            SILENCE_TIMEOUT
        } else {
            ACCEPT_TIMEOUT
        };
        let _ = stream.set_read_timeout(Some(limit));
        let mut reply = String::new();
        let read = reader.read_line(&mut reply);
        match read {
            Ok(n) if n > 0 && reply.ends_with('\n') => {}
            Ok(_) if !accepted => return Ok(None),
            Err(e) if !accepted && gone(&e) => return Ok(None),
            Err(e) if is_timeout(&e) && !accepted => {
                return Err(fail(format!(
                    "the daemon did not accept the request within {} s (is it stopped? see \
                     `tend daemon status`); the request was withdrawn and will not be \
                     carried out",
                    ACCEPT_TIMEOUT.as_secs()
                )))
            }
            Err(e) if is_timeout(&e) => {
                return Err(fail(format!(
                    "the daemon stopped answering for {} s in the middle of the request (is \
                     it stopped?); it may have been partly carried out",
                    SILENCE_TIMEOUT.as_secs()
                )))
            }
            _ => {
                return Err(fail(
                    "the daemon closed the connection without answering (did it die? see \
                     `tend daemon status`); the request may or may not have been carried out"
                        .into(),
                ))
            }
        }
        match serde_json::from_str::<Response>(&reply) {
            Ok(Response::Accepted) => accepted = true,
            Ok(Response::Working) => {}
            Ok(final_answer) => return Ok(Some(final_answer)),
            Err(e) => return Err(fail(format!("unreadable answer from the daemon: {e}"))),
        }
    }
}

fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::UnexpectedEof
    )
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Sends `action` to the running daemon; an error when none runs.
pub fn require(home: &Home, action: Action) -> Result<Response> {
    request(home, action)?.ok_or_else(|| Error::Daemon {
        message: format!("no daemon is running for {}", home.root().display()),
    })
}

/// The running daemon's status, if one answers.
pub fn status(home: &Home) -> Result<Option<DaemonStatus>> {
    match request(home, Action::Status)? {
        Some(Response::Status(s)) => Ok(Some(*s)),
        Some(Response::Error { message, .. }) => Err(Error::Daemon { message }),
        Some(_) => Err(Error::unexpected_answer()),
        None => Ok(None),
    }
}

/// What is known of a daemon that holds the lock, whether or not it answers well.
#[derive(Debug)]
pub enum Probe {
    /// Nobody holds the lock.
    NotRunning,
    /// It answered its status.
    Healthy(Box<DaemonStatus>),
    /// It holds the lock (pid from the lock file, when readable) but answered an error,
    /// or nothing usable: alive, but unhealthy.
    Unhealthy { pid: Option<i32>, problem: String },
}

/// Asks the daemon of `home` how it is. A daemon that holds the lock is never reported
/// as not running, whatever it answers. One that holds the lock but refuses connections
/// is starting up (the lock comes before the socket) or shutting down (it stops
/// accepting first): that is given [`SETTLE`] to resolve either way.
pub fn probe(home: &Home) -> Probe {
    let deadline = Instant::now() + SETTLE;
    loop {
        let Some(notes) = holder(home) else {
            return Probe::NotRunning;
        };
        let pid = notes.pid;
        // Its files are not the ones on disk: unhealthy, whatever it would answer (and it
        // may not be able to, busy going away or stopped).
        if let Some(change) = notes.beside(home) {
            return Probe::Unhealthy {
                pid,
                problem: unhealthy_files(&change),
            };
        }
        let problem = match request(home, Action::Status) {
            Ok(Some(Response::Status(s))) => return Probe::Healthy(s),
            Ok(Some(Response::Error { message, .. })) => message,
            Ok(Some(_)) => Error::unexpected_answer().to_string(),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Ok(None) if present(home) => "it holds the lock but has not accepted connections \
                                          for 2 s (stuck starting up or shutting down, or its \
                                          socket was removed)"
                .to_string(),
            Ok(None) => return Probe::NotRunning,
            Err(e) => e.to_string(),
        };
        return Probe::Unhealthy { pid, problem };
    }
}

/// Why a daemon whose database files changed under it is unhealthy, and what it does.
pub fn unhealthy_files(change: &str) -> String {
    format!(
        "{change} while it had the database open: it no longer uses it, and restarts \
         nothing until it is restarted"
    )
}

/// How long [`probe`] waits for a daemon that holds the lock but does not accept yet.
const SETTLE: Duration = Duration::from_secs(2);

/// The pid the daemon wrote into its lock file.
pub fn lock_pid(home: &Home) -> Option<i32> {
    notes(home).pid
}

/// Waits until no daemon holds the lock of `home` (it is released when the daemon's
/// process ends). True if that happened within `within`.
pub fn wait_released(home: &Home, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(1);
    while present(home) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    true
}

/// `tend daemon`: starts the daemon in the background and returns once it answers.
/// `extra` are arguments passed on to `tend daemon --foreground` (PostgreSQL flags);
/// `pg_url` travels in `TEND_POSTGRES_URL`, which only the user can read.
pub fn start_background(
    home: &Home,
    extra: &[String],
    pg_url: Option<&str>,
) -> Result<DaemonStatus> {
    if let Some(s) = status(home)? {
        return Err(Error::DaemonRunning {
            home: home.root().to_path_buf(),
            pid: s.pid.to_string(),
        });
    }
    home.ensure()?;
    let exe = std::env::current_exe().map_err(|e| Error::Daemon {
        message: format!("cannot find the tend executable: {}", io_reason(&e)),
    })?;
    let log = home.root().join("daemon.log");
    let mut argv = vec![
        exe.to_string_lossy().into_owned(),
        "--home".to_string(),
        home.root().to_string_lossy().into_owned(),
        "daemon".to_string(),
        "--foreground".to_string(),
    ];
    argv.extend_from_slice(extra);
    let url_var = (
        "TEND_POSTGRES_URL".to_string(),
        pg_url.unwrap_or_default().to_string(),
    );
    let mut env = crate::process::spawn::merged_env(std::iter::empty());
    env.retain(|(k, _)| k != &url_var.0);
    if pg_url.is_some() {
        env.push(url_var);
    }
    let cmd = crate::process::spawn::Prepared::prepare(&crate::process::spawn::Spec {
        argv: &argv,
        cwd: home.root(),
        env: &env,
        stdin: Path::new("/dev/null"),
        stdout: &log,
        stderr: &log,
        cgroup: None,
        pipes: None,
        setup: &crate::process::spawn::Setup::default(),
    })
    .map_err(|e| Error::Daemon {
        message: e.to_string(),
    })?;
    let log_start = std::fs::metadata(&log).map_or(0, |m| m.len());
    let started = cmd
        .spawn()
        .and_then(|p| p.release())
        .map_err(|e| Error::Daemon {
            message: e.to_string(),
        })?;
    let pid = started.pid();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(s) = status(home)? {
            if s.pid == pid {
                return Ok(s);
            }
        }
        if started.handle.exited() {
            return Err(Error::Daemon {
                message: format!(
                    "the daemon exited during startup: {}",
                    last_error_line(&log, log_start)
                ),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::Daemon {
                message: format!(
                    "the daemon (pid {pid}) did not become ready within 30 s; see {}",
                    log.display()
                ),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The last line the daemon wrote to its log since `from`, for a startup failure.
fn last_error_line(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let tail = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    tail.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim_start_matches("tend: ").to_string())
        .unwrap_or_else(|| format!("no message; see {}", log.display()))
}

#[cfg(test)]
mod tests {
    use super::{Fault, Notes};

    #[test]
    fn lock_file_notes() {
        let n = Notes::parse("123\nfiles 1:2 3:4 5:6\nfault 99 tend.db-wal was deleted\n");
        assert_eq!(n.pid, Some(123));
        assert_eq!(n.files, "1:2 3:4 5:6".parse().ok());
        assert_eq!(
            n.fault,
            Some(Fault {
                at: 99,
                change: "tend.db-wal was deleted".into()
            })
        );
        // A daemon that has not opened the database yet, or a line still being written.
        let n = Notes::parse("123\nfiles 1:2 3:4");
        assert_eq!((n.pid, n.files, n.fault), (Some(123), None, None));
        // What a tend before these notes wrote: the pid alone, no newline.
        assert_eq!(Notes::parse("123").pid, Some(123));
        assert_eq!(Notes::parse(""), Notes::default());
    }
}
