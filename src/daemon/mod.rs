//! The resident daemon: restarts what crashes, adopts what runs, answers the CLI.
//!
//! # Theory of operation
//!
//! One thread runs an event loop around `poll(2)` and sleeps until something happens:
//!
//! - **SIGCHLD** (through a self-pipe; signal handlers only wake the loop): the daemon is
//!   a child subreaper, so every service it double-forks re-parents to it. The loop reaps
//!   in a loop (several exits can share one signal), matches each exit to its recorded
//!   instance by `(pid, start time)` and records the code or signal.
//! - **pidfds** of adopted services (running before this daemon came up, so not its
//!   children): readable the moment the process exits; its status is unknown.
//! - **the control socket**: each connection is served on its own thread with its own
//!   database connection, calling the same [`crate::actions::act`] as the CLI, so a slow
//!   stop never blocks the loop. A spawn lock, held from spawn to commit and by the reaper
//!   before it reaps, guarantees a child is never reaped before its instance is recorded.
//! - **timers** for pending automatic restarts ([`crate::policy`] decides when).
//! - **inotify** on the log directories: a log past its size limit is rotated.
//! - SIGTERM/SIGINT end the loop (services keep running), SIGHUP re-reads definitions and
//!   adopts running services it does not watch yet.
//!
//! Every decision is written to the database before it is acted on (restart counters,
//! pending retries, failed marks), so a daemon killed at any point is succeeded by one
//! that carries on: it adopts what runs, restarts what died, and starts nothing twice.

pub mod client;
pub mod protocol;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tracing::{debug, error, info, warn};

use crate::error::{io_reason, Error, Result};
use crate::home::Home;
use crate::policy::{Decision, ExitStatus};
use crate::process::{identity, reap, stop::pidfd_open};
use crate::store::now_ms;
use crate::supervisor::{Exit, StartOutcome, Supervisor, Watch};
use protocol::{Action, DaemonStatus, Request, Response, Verb, MAX_MESSAGE, VERSION};

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets up logging to stderr: `RUST_LOG` (a level: error, warn, info, debug, trace)
/// overrides the default `info`.
fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// Runs the daemon in this process until SIGTERM/SIGINT or a shutdown request. With
/// PostgreSQL settings (flags or `tend config`), it also LISTENs for NOTIFY commands.
pub fn run_foreground(home: Home, pg: crate::pg::Overrides) -> Result<()> {
    init_logging();
    home.ensure()?;
    let _lock = acquire_lock(&home)?;
    reap::become_subreaper().map_err(|e| Error::Daemon {
        message: format!("cannot become a child subreaper: {}", io_reason(&e)),
    })?;
    // Signals before the first spawn, so no SIGCHLD is ever missed.
    let signals = Signals::register()?;
    let listener = bind(&home)?;
    let spawn_lock = Arc::new(Mutex::new(()));
    let mut sup = Supervisor::open(home.clone())?.for_daemon(spawn_lock.clone());
    let pg_settings = crate::pg::Settings::resolve(&mut sup, &pg)?;
    // Read once; the services this daemon starts must not inherit a password. No other
    // thread exists yet, so changing the environment is safe.
    std::env::remove_var("TEND_POSTGRES_URL");
    let pg_key = match &pg_settings {
        Some(s) => s.key()?,
        None => None,
    };
    let (tx, rx) = mpsc::channel();
    let (wake_read, wake_write) = UnixStream::pair().map_err(|e| Error::Daemon {
        message: format!("wake pipe: {}", io_reason(&e)),
    })?;
    wake_read.set_nonblocking(true).ok();
    wake_write.set_nonblocking(true).ok();
    let me = std::process::id() as i32;
    let shared = Arc::new(Shared {
        pid: me,
        start_time: identity::stat(me)
            .ok()
            .flatten()
            .map_or(0, |s| s.start_time),
        started_at: now_ms(),
        adopted: AtomicUsize::new(0),
        pending: AtomicUsize::new(0),
        postgres: Mutex::new(None),
    });
    let wake_write = Arc::new(wake_write);
    if let Some(settings) = pg_settings {
        let (tx, wake) = (Mutex::new(tx.clone()), wake_write.clone());
        let on_change = Box::new(move || {
            let _ = tx.lock().map(|t| t.send(Msg::Changed));
            let _ = (&*wake).write(&[1]);
        });
        let status = crate::pg::listener::start(
            settings,
            pg_key,
            home.clone(),
            spawn_lock.clone(),
            on_change,
        )?;
        *shared.postgres.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }
    let mut d = Daemon {
        home: home.clone(),
        sup,
        listener,
        signals,
        adopted: Vec::new(),
        timers: Vec::new(),
        rotation: Rotation::new()?,
        shared,
        spawn_lock,
        tx,
        rx,
        wake_read,
        wake_write,
        shutdown: false,
    };
    d.adopt();
    d.autostart();
    d.rotation.sync(&mut d.sup);
    d.publish();
    sd_notify("READY=1\nSTATUS=supervising");
    info!(pid = me, home = %home.root().display(), "daemon ready");
    let result = d.run();
    let _ = std::fs::remove_file(client::socket_path(&home));
    sd_notify("STOPPING=1");
    info!("daemon stopped; services keep running");
    result
}

/// Takes the home's daemon lock, or names the daemon that holds it.
fn acquire_lock(home: &Home) -> Result<Flock<File>> {
    let path = client::lock_path(home);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::Io {
            path: path.clone(),
            reason: io_reason(&e),
        })?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::DaemonRunning {
                home: home.root().to_path_buf(),
                pid: pid.trim().to_string(),
            });
        }
        Err((_, errno)) => {
            return Err(Error::Io {
                path,
                reason: format!("cannot lock: {errno}"),
            })
        }
    };
    let pid = std::process::id().to_string();
    lock.set_len(0)
        .and_then(|()| lock.write_all(pid.as_bytes()))
        .map_err(|e| Error::Io {
            path,
            reason: io_reason(&e),
        })?;
    Ok(lock)
}

/// Binds the control socket. Any socket file left there is from a dead daemon: we hold
/// the lock, so nobody else can be listening on it.
fn bind(home: &Home) -> Result<UnixListener> {
    let path = client::socket_path(home);
    match std::fs::remove_file(&path) {
        Ok(()) => info!(path = %path.display(), "removed the socket of a previous daemon"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::Io {
                path,
                reason: format!("cannot remove stale socket: {}", io_reason(&e)),
            })
        }
    }
    let listener = UnixListener::bind(&path).map_err(|e| Error::Io {
        path: path.clone(),
        reason: format!("cannot listen: {}", io_reason(&e)),
    })?;
    // Only the owner may talk to the daemon. (The home is 0700 too, so nobody else could
    // reach the socket in the moment before this.)
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        Error::Io {
            path: path.clone(),
            reason: format!("cannot restrict the socket to its owner: {}", io_reason(&e)),
        }
    })?;
    listener.set_nonblocking(true).map_err(|e| Error::Io {
        path,
        reason: io_reason(&e),
    })?;
    Ok(listener)
}

/// Tells systemd (Type=notify) about readiness; a no-op outside systemd.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        warn!(error = %e, "sd_notify failed");
    }
}

/// Signal handlers that only set a flag and wake the loop through a socket pair.
struct Signals {
    read: UnixStream,
    chld: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Signals {
    fn register() -> Result<Signals> {
        use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
        let fail = |e: std::io::Error| Error::Daemon {
            message: format!("cannot install signal handlers: {e}"),
        };
        let (read, write) = UnixStream::pair().map_err(fail)?;
        read.set_nonblocking(true).map_err(fail)?;
        write.set_nonblocking(true).map_err(fail)?;
        let s = Signals {
            read,
            chld: Arc::new(AtomicBool::new(false)),
            term: Arc::new(AtomicBool::new(false)),
            hup: Arc::new(AtomicBool::new(false)),
        };
        for (sig, flag) in [
            (SIGCHLD, &s.chld),
            (SIGTERM, &s.term),
            (SIGINT, &s.term),
            (SIGHUP, &s.hup),
        ] {
            signal_hook::flag::register(sig, flag.clone()).map_err(fail)?;
            signal_hook::low_level::pipe::register(sig, write.try_clone().map_err(fail)?)
                .map_err(fail)?;
        }
        Ok(s)
    }

    fn drain(&self) {
        drain(&self.read);
    }
}

fn drain(mut s: &UnixStream) {
    let mut buf = [0u8; 256];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

/// What the serving threads may read about the daemon.
struct Shared {
    pid: i32,
    start_time: u64,
    started_at: i64,
    adopted: AtomicUsize,
    pending: AtomicUsize,
    /// The PostgreSQL listener's status, when one runs.
    postgres: Mutex<Option<Arc<Mutex<crate::pg::listener::PgStatus>>>>,
}

/// Messages from serving threads to the loop.
enum Msg {
    /// A control request changed what runs: re-sync log watches.
    Changed,
    Reload,
    Shutdown,
}

struct Daemon {
    home: Home,
    sup: Supervisor,
    listener: UnixListener,
    signals: Signals,
    /// Adopted services (not our children), watched by pidfd.
    adopted: Vec<(OwnedFd, Watch)>,
    /// Pending automatic restarts: (due unix ms, service).
    timers: Vec<(i64, String)>,
    rotation: Rotation,
    shared: Arc<Shared>,
    spawn_lock: Arc<Mutex<()>>,
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
    wake_read: UnixStream,
    wake_write: Arc<UnixStream>,
    shutdown: bool,
}

impl Daemon {
    fn run(&mut self) -> Result<()> {
        loop {
            let timeout = self.timeout();
            let ready = self.wait(timeout);
            if ready.signal {
                self.signals.drain();
                if self.signals.chld.swap(false, Ordering::SeqCst) {
                    self.reap();
                }
                if self.signals.hup.swap(false, Ordering::SeqCst) {
                    info!("SIGHUP: reloading");
                    self.reload();
                }
                if self.signals.term.swap(false, Ordering::SeqCst) {
                    info!("SIGTERM/SIGINT: exiting");
                    return Ok(());
                }
            }
            if ready.wake {
                drain(&self.wake_read);
                self.messages();
            }
            if ready.listener {
                self.accept();
            }
            if ready.inotify {
                self.rotation.on_events();
            }
            for i in ready.pidfds.into_iter().rev() {
                let (_, watch) = self.adopted.swap_remove(i);
                self.adopted_exit(watch);
            }
            self.fire_timers();
            self.publish();
            if self.shutdown {
                return Ok(());
            }
        }
    }

    /// Until the next pending restart, or forever.
    fn timeout(&self) -> PollTimeout {
        match self.timers.iter().map(|(at, _)| *at).min() {
            None => PollTimeout::NONE,
            Some(at) => {
                let ms = (at - now_ms()).clamp(0, i32::MAX as i64) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        }
    }

    fn wait(&self, timeout: PollTimeout) -> Ready {
        let mut fds = vec![
            PollFd::new(self.signals.read.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake_read.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.rotation.inotify.as_fd(), PollFlags::POLLIN),
        ];
        fds.extend(
            self.adopted
                .iter()
                .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
        );
        let mut ready = Ready::default();
        match poll(&mut fds, timeout) {
            Ok(0) => return ready,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return ready,
            Err(e) => {
                error!(error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(10));
                return ready;
            }
        }
        let hit = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        ready.signal = hit(&fds[0]);
        ready.wake = hit(&fds[1]);
        ready.listener = hit(&fds[2]);
        ready.inotify = hit(&fds[3]);
        ready.pidfds = fds[4..]
            .iter()
            .enumerate()
            .filter(|(_, fd)| hit(fd))
            .map(|(i, _)| i)
            .collect();
        ready
    }

    /// Reaps every exited child; exits of service instances are recorded and handled.
    fn reap(&mut self) {
        loop {
            let reaped = {
                // A child being spawned has its instance committed before we reap it.
                let _g = self.spawn_lock.lock().unwrap_or_else(|p| p.into_inner());
                reap::reap_one()
            };
            let Some(r) = reaped else { break };
            let status = ExitStatus::from_wait(r.status);
            let Some(start_time) = r.start_time else {
                debug!(
                    pid = r.pid,
                    "reaped a child whose start time was unreadable"
                );
                continue;
            };
            match self.sup.on_exit(r.pid, start_time, status) {
                Ok(Some(exit)) => self.after_exit(exit, status),
                // Intermediate processes of the double fork, orphaned helpers.
                Ok(None) => debug!(pid = r.pid, %status, "reaped a non-service child"),
                Err(e) => error!(pid = r.pid, error = %e, "recording an exit failed"),
            }
        }
    }

    fn adopted_exit(&mut self, w: Watch) {
        match self.sup.on_exit(w.pid, w.start_time, ExitStatus::Unknown) {
            Ok(Some(exit)) => self.after_exit(exit, ExitStatus::Unknown),
            Ok(None) => {
                debug!(service = %w.name, pid = w.pid, "adopted process exited; record already cleared")
            }
            Err(e) => error!(service = %w.name, error = %e, "recording an exit failed"),
        }
    }

    fn after_exit(&mut self, exit: Exit, status: ExitStatus) {
        if !exit.requested && identity::group_alive(exit.pgid) {
            // The leader crashed but helpers it forked live on in its process group (which
            // therefore cannot have been recycled): take them down before a new instance
            // competes with them for ports and files.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(exit.pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        match &exit.decision {
            Decision::Leave => {
                info!(service = %exit.name, %status, requested = exit.requested, "exited")
            }
            Decision::Restart { delay } => {
                info!(service = %exit.name, %status, delay_ms = delay.as_millis() as u64, "exited; restart scheduled");
                if let Some(at) = exit.retry_at {
                    self.timers.push((at, exit.name.clone()));
                }
            }
            Decision::Fail { reason } => {
                warn!(service = %exit.name, %status, reason = %reason, "exited; marked failed")
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = now_ms();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.timers = later;
        for (_, name) in due {
            match self.sup.restart_due(&name) {
                Ok(StartOutcome::Started { pid }) => info!(service = %name, pid, "restarted"),
                Ok(StartOutcome::NotDue) => debug!(service = %name, "restart cancelled"),
                Ok(other) => info!(service = %name, outcome = ?other, "restart"),
                Err(e) => {
                    error!(service = %name, error = %e, "restart failed");
                    if let Err(e) = self.sup.give_up(&name, &format!("restart failed: {e}")) {
                        error!(service = %name, error = %e, "recording the failure failed");
                    }
                }
            }
            for n in self.sup.take_notices() {
                info!("{n}");
            }
        }
    }

    /// Adopts running services this daemon does not watch yet, and handles the ones that
    /// died while no daemon was watching.
    fn adopt(&mut self) {
        let me = self.shared.pid;
        let watched: HashSet<i32> = self.adopted.iter().map(|(_, w)| w.pid).collect();
        let skip = |pid: i32| {
            watched.contains(&pid)
                || identity::stat(pid)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.ppid == me)
        };
        let (watches, exits) = match self.sup.adopt_all(&skip) {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "adoption failed");
                return;
            }
        };
        for w in watches {
            match pidfd_open(w.pid) {
                Ok(fd) => {
                    // Opened after the identity check: make sure it pins the same process.
                    if identity::stat(w.pid)
                        .ok()
                        .flatten()
                        .is_some_and(|s| s.start_time == w.start_time && !s.exited())
                    {
                        info!(service = %w.name, pid = w.pid, "adopted");
                        self.adopted.push((fd, w));
                    } else {
                        self.adopted_exit(w);
                    }
                }
                Err(_) => self.adopted_exit(w),
            }
        }
        for exit in exits {
            self.after_exit(exit, ExitStatus::Unknown);
        }
        match self.sup.pending_restarts() {
            Ok(pending) => {
                for (name, at) in pending {
                    if !self.timers.iter().any(|(_, n)| *n == name) {
                        self.timers.push((at, name));
                    }
                }
            }
            Err(e) => error!(error = %e, "reading pending restarts failed"),
        }
    }

    /// Starts `--autostart` services that are neither running, failed nor pending.
    fn autostart(&mut self) {
        let names = match self.sup.autostart_names() {
            Ok(n) => n,
            Err(e) => {
                error!(error = %e, "reading autostart services failed");
                return;
            }
        };
        for name in names {
            let idle = self.sup.status(&name).is_ok_and(|st| {
                st.instance.is_none()
                    && st.runtime.failed.is_none()
                    && st.runtime.next_retry_at.is_none()
            });
            if !idle {
                continue;
            }
            match self.sup.start(&name) {
                Ok(o) => info!(service = %name, outcome = ?o, "autostart"),
                Err(e) => error!(service = %name, error = %e, "autostart failed"),
            }
        }
    }

    fn reload(&mut self) {
        self.adopt();
        self.rotation.dirty = true;
        self.rotation.sync(&mut self.sup);
    }

    fn messages(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Changed => self.rotation.dirty = true,
                Msg::Reload => self.reload(),
                Msg::Shutdown => self.shutdown = true,
            }
        }
        if self.rotation.dirty {
            self.rotation.sync(&mut self.sup);
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let ctx = ServeCtx {
                        home: self.home.clone(),
                        spawn_lock: self.spawn_lock.clone(),
                        shared: self.shared.clone(),
                        tx: self.tx.clone(),
                        wake: self.wake_write.clone(),
                    };
                    let spawned = std::thread::Builder::new()
                        .name("tend-request".into())
                        .stack_size(256 * 1024)
                        .spawn(move || ctx.serve(stream));
                    if let Err(e) = spawned {
                        error!(error = %e, "cannot start a request thread");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn publish(&self) {
        self.shared
            .adopted
            .store(self.adopted.len(), Ordering::Relaxed);
        self.shared
            .pending
            .store(self.timers.len(), Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Ready {
    signal: bool,
    wake: bool,
    listener: bool,
    inotify: bool,
    pidfds: Vec<usize>,
}

/// What a request thread needs.
struct ServeCtx {
    home: Home,
    spawn_lock: Arc<Mutex<()>>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    wake: Arc<UnixStream>,
}

impl ServeCtx {
    fn serve(self, stream: UnixStream) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let mut line = String::new();
        let read = BufReader::new((&stream).take(MAX_MESSAGE)).read_line(&mut line);
        let (response, after) = match read {
            Ok(n) if n > 0 => match serde_json::from_str::<Request>(&line) {
                Ok(req) if req.version == VERSION => self.handle(req.action),
                Ok(req) => (
                    error_response(&format!(
                        "protocol version {} is not supported by this daemon (version {VERSION}); \
                         restart the daemon after upgrading tend",
                        req.version
                    )),
                    None,
                ),
                Err(e) => (error_response(&format!("malformed request: {e}")), None),
            },
            Ok(_) => return,
            Err(e) => {
                debug!(error = %e, "reading a request failed");
                return;
            }
        };
        let mut reply = serde_json::to_string(&response).expect("responses always serialize");
        reply.push('\n');
        if let Err(e) = (&stream).write_all(reply.as_bytes()) {
            debug!(error = %e, "client went away before the answer");
        }
        drop(stream);
        if let Some(msg) = after {
            self.notify(msg);
        }
    }

    fn notify(&self, msg: Msg) {
        let _ = self.tx.send(msg);
        let _ = (&*self.wake).write(&[1]);
    }

    fn supervisor(&self) -> Result<Supervisor> {
        Ok(Supervisor::open(self.home.clone())?.for_daemon(self.spawn_lock.clone()))
    }

    fn handle(&self, action: Action) -> (Response, Option<Msg>) {
        let result = match action {
            Action::Act { verb, names, all } => self
                .supervisor()
                .and_then(|mut sup| crate::actions::act(&mut sup, verb, &names, all))
                .map(|reports| (Response::Reports { reports }, Some(Msg::Changed))),
            Action::Status => self.status().map(|s| (Response::Status(Box::new(s)), None)),
            Action::Reload => Ok((Response::Done, Some(Msg::Reload))),
            Action::Shutdown { stop_services } => {
                if stop_services {
                    self.supervisor()
                        .and_then(|mut sup| crate::actions::act(&mut sup, Verb::Stop, &[], true))
                        .map(|reports| (Response::Reports { reports }, Some(Msg::Shutdown)))
                } else {
                    Ok((Response::Done, Some(Msg::Shutdown)))
                }
            }
        };
        result.unwrap_or_else(|e| {
            (
                Response::Error {
                    message: e.to_string(),
                    code: e.exit_code(),
                },
                None,
            )
        })
    }

    fn status(&self) -> Result<DaemonStatus> {
        let mut sup = self.supervisor()?;
        let running = sup.list()?.iter().filter(|s| s.instance.is_some()).count();
        Ok(DaemonStatus {
            pid: self.shared.pid,
            start_time: self.shared.start_time,
            started_at: self.shared.started_at,
            version: env!("CARGO_PKG_VERSION").to_string(),
            running,
            adopted: self.shared.adopted.load(Ordering::Relaxed),
            pending_restarts: self.shared.pending.load(Ordering::Relaxed),
            home: self.home.root().to_path_buf(),
            postgres: self
                .shared
                .postgres
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        })
    }
}

fn error_response(message: &str) -> Response {
    Response::Error {
        message: message.to_string(),
        code: crate::error::exit::FAILED,
    }
}

/// Log rotation driven by inotify on the directories holding log files: no polling; a
/// quiet service costs nothing.
struct Rotation {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    watched: HashSet<PathBuf>,
    /// Log file -> size limit.
    limits: HashMap<PathBuf, u64>,
    /// Definitions may have changed: re-read them at the next chance.
    dirty: bool,
}

impl Rotation {
    fn new() -> Result<Rotation> {
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| {
                Error::Daemon {
                    message: format!("inotify: {e}"),
                }
            })?;
        Ok(Rotation {
            inotify,
            dirs: HashMap::new(),
            watched: HashSet::new(),
            limits: HashMap::new(),
            dirty: true,
        })
    }

    /// Re-reads which files to watch, and rotates any that are already too large.
    fn sync(&mut self, sup: &mut Supervisor) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let services = match sup.services() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "reading services for log rotation failed");
                return;
            }
        };
        self.limits.clear();
        for s in &services {
            if s.log_max_bytes == 0 {
                continue;
            }
            for path in crate::logs::files(&s.stdout, &s.stderr) {
                if let Some(dir) = path.parent().map(PathBuf::from) {
                    if !self.watched.contains(&dir) {
                        match self.inotify.add_watch(&dir, AddWatchFlags::IN_MODIFY) {
                            Ok(wd) => {
                                self.dirs.insert(wd, dir.clone());
                                self.watched.insert(dir);
                            }
                            Err(e) => {
                                warn!(dir = %dir.display(), error = %e, "cannot watch log directory")
                            }
                        }
                    }
                }
                self.limits.insert(path, s.log_max_bytes);
            }
        }
        let paths: Vec<PathBuf> = self.limits.keys().cloned().collect();
        for p in paths {
            self.check(&p);
        }
    }

    fn on_events(&mut self) {
        let mut touched = HashSet::new();
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                if let (Some(dir), Some(name)) = (self.dirs.get(&ev.wd), ev.name) {
                    touched.insert(dir.join(name));
                }
            }
        }
        for p in touched {
            if self.limits.contains_key(&p) {
                self.check(&p);
            }
        }
    }

    fn check(&self, path: &PathBuf) {
        let Some(&max) = self.limits.get(path) else {
            return;
        };
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_file() && meta.len() > max {
            match crate::logs::rotate(path, crate::service::LOG_BACKUPS) {
                Ok(true) => info!(path = %path.display(), size = meta.len(), "rotated log"),
                Ok(false) => debug!(path = %path.display(), "log below one block; not rotated"),
                Err(e) => warn!(path = %path.display(), error = %e, "log rotation failed"),
            }
        }
    }
}

/// `tend daemon`: starts the daemon in the background and returns once it answers.
/// `extra` are arguments passed on to `tend daemon --foreground` (PostgreSQL flags);
/// `pg_url` travels in `TEND_POSTGRES_URL`, which only the user can read.
pub fn start_background(
    home: &Home,
    extra: &[String],
    pg_url: Option<&str>,
) -> Result<DaemonStatus> {
    if let Some(Response::Status(s)) = client::request(home, Action::Status)? {
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
    let cmd = crate::process::spawn::Command::prepare(&crate::process::spawn::Spec {
        argv: &argv,
        cwd: home.root(),
        env: &env,
        stdin: std::path::Path::new("/dev/null"),
        stdout: &log,
        stderr: &log,
    })
    .map_err(|e| Error::Daemon {
        message: e.to_string(),
    })?;
    let log_start = std::fs::metadata(&log).map_or(0, |m| m.len());
    let spawned = cmd.spawn().map_err(|e| Error::Daemon {
        message: e.to_string(),
    })?;
    let started = identity::stat(spawned.pid).ok().flatten();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(Response::Status(s)) = client::request(home, Action::Status)? {
            if s.pid == spawned.pid {
                return Ok(*s);
            }
        }
        let gone = match started {
            Some(st) => !matches!(
                identity::check(spawned.pid, st.start_time, "", ""),
                identity::Liveness::Alive
            ),
            None => true,
        };
        if gone {
            return Err(Error::Daemon {
                message: format!(
                    "the daemon exited during startup: {}",
                    last_error_line(&log, log_start)
                ),
            });
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Daemon {
                message: format!(
                    "the daemon (pid {}) did not become ready within 30 s; see {}",
                    spawned.pid,
                    log.display()
                ),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The last line the daemon wrote to its log since `from`, for a startup failure.
fn last_error_line(log: &std::path::Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let tail = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default());
    tail.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim_start_matches("tend: ").to_string())
        .unwrap_or_else(|| format!("no message; see {}", log.display()))
}

/// Sends `action` to the running daemon; an error when none runs.
pub fn require(home: &Home, action: Action) -> Result<Response> {
    client::request(home, action)?.ok_or_else(|| Error::Daemon {
        message: format!("no daemon is running for {}", home.root().display()),
    })
}

/// Waits until the daemon `s` has exited (its lock is released with it).
pub fn wait_exit(s: &DaemonStatus, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        let alive = matches!(
            identity::check(s.pid, s.start_time, "", ""),
            identity::Liveness::Alive
        );
        if !alive {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
