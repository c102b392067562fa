//! The resident daemon: restarts what crashes, adopts what runs, answers the CLI.
//!
//! # Theory of operation
//!
//! The daemon is a handful of threads, each of which may wait on something without
//! delaying the others:
//!
//! - **The event loop** (this module) sleeps in `poll(2)` and never touches the database
//!   or waits for a spawn. It wakes for:
//!   - **SIGCHLD** (through a self-pipe; signal handlers only wake the loop): the daemon
//!     is a child subreaper, so every service it double-forks re-parents to it. It reaps
//!     every exited child (several exits can share one signal), posts the status on the
//!     [`ExitBoard`] (where a thread that stopped the process finds it) and hands the exit
//!     to the worker.
//!   - **pidfds** of adopted services (running before this daemon came up, so not its
//!     children): readable the moment the process exits; its status is unknown.
//!   - **the control socket**: each connection is served on its own thread
//!     ([`server`]), capped at [`server::MAX_CONNECTIONS`].
//!   - **timers** of pending automatic restarts, due restarts go to the worker.
//!   - messages from the other threads (new timers, adopted processes to watch).
//! - **The worker** ([`worker`]) does, one job at a time, everything that needs the
//!   database: records exits and applies the restart policy ([`crate::policy`]), kills
//!   what a crashed service left behind, carries out due restarts, adopts.
//! - **Request threads** ([`server`]) carry out CLI requests through the same
//!   [`crate::actions::act`] as the CLI; a stop waiting 10 s for its timeout blocks only
//!   its own thread.
//! - **Log rotation** ([`rotation`]) and the **PostgreSQL** listener and executor
//!   ([`crate::pg`]) have threads of their own.
//!
//! No lock is held across a database wait or a spawn: a start records its instance
//! before the new process may exec (see [`crate::process::spawn`]), so the reaper can
//! never see a service exit before its record exists, and needs no lock to know it.
//!
//! Every decision is written to the database before it is acted on (restart counters,
//! pending retries, failed marks), so a daemon killed at any point is succeeded by one
//! that carries on: it adopts what runs, restarts what died, and starts nothing twice.
//!
//! **Shutdown** (SIGTERM, SIGINT, `tend daemon stop`): the socket is closed first, so a
//! CLI command arriving now acts by itself; requests in flight are finished; restarts due
//! within [`SHUTDOWN_GRACE`] are carried out; the services whose restart is due later are
//! named (in the log, and to `tend daemon stop`) as left down. Services keep running.

pub mod client;
pub mod protocol;
pub mod rotation;
pub mod server;
pub mod worker;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{error, info, warn};

use crate::error::{io_reason, Error, Result};
use crate::home::Home;
use crate::process::handle::Handle;
use crate::process::reap::{self, ExitBoard};
use crate::process::{identity, lock};
use crate::store::now_ms;
use crate::supervisor::{Context, Supervisor, Watch};
use protocol::LeftDown;
use server::{InFlight, ServeCtx, ShutdownReply, ToLoop, Waker};
use worker::{Job, WorkerHandle};

/// On shutdown, restarts due within this long are still carried out.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

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

/// Messages to the event loop.
pub enum Msg {
    FromRequest(ToLoop),
    /// Pending restarts, as the database has them now.
    Timers(Vec<(String, i64)>),
    /// Adopted services to watch.
    Watch(Vec<(Handle, Watch)>),
    /// Startup adoption is done: accept requests and tell systemd.
    Ready,
}

/// What the serving threads may read about the daemon.
pub struct Shared {
    pub pid: i32,
    pub start_time: u64,
    pub started_at: i64,
    pub adopted: AtomicUsize,
    pub pending: AtomicUsize,
    /// The PostgreSQL listener's status, when one runs.
    pub postgres: Mutex<Option<Arc<Mutex<crate::pg::listener::PgStatus>>>>,
}

/// Runs the daemon in this process until SIGTERM/SIGINT or a shutdown request. With
/// PostgreSQL settings (flags or `tend config`), it also LISTENs for NOTIFY commands.
pub fn run_foreground(home: Home, pg: crate::pg::Overrides) -> Result<()> {
    init_logging();
    home.ensure()?;
    let lock_path = client::lock_path(&home);
    let _lock = match lock::acquire(&lock_path).map_err(|e| Error::Io {
        path: lock_path.clone(),
        reason: format!("cannot lock: {}", io_reason(&e)),
    })? {
        Some(l) => l,
        None => {
            let pid = std::fs::read_to_string(&lock_path).unwrap_or_default();
            return Err(Error::DaemonRunning {
                home: home.root().to_path_buf(),
                pid: pid.trim().to_string(),
            });
        }
    };
    reap::become_subreaper().map_err(|e| Error::Daemon {
        message: format!("cannot become a child subreaper: {}", io_reason(&e)),
    })?;
    // Signals before the first spawn, so no SIGCHLD is ever missed.
    let signals = Signals::register()?;
    let listener = server::bind(&home)?;
    let board = Arc::new(ExitBoard::default());
    let ctx = Context {
        daemon_watching: false,
        board: Some(board.clone()),
    };
    let mut sup = Supervisor::open_with(home.clone(), ctx.clone())?;
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
    let waker = Waker::new(tx, wake_write);
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
    let in_flight = Arc::new(InFlight::default());
    if let Some(settings) = pg_settings {
        let status = crate::pg::listener::start(
            settings,
            pg_key,
            home.clone(),
            ctx.clone(),
            waker.clone(),
            in_flight.clone(),
        )?;
        *shared.postgres.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }
    let rotation = rotation::start(home.clone(), ctx.clone())?;
    let worker = worker::start(sup, waker.clone())?;
    let serve = ServeCtx {
        home: home.clone(),
        ctx,
        shared: shared.clone(),
        waker,
        in_flight,
        heartbeats: server::Heartbeats::start()?,
    };
    let mut l = EventLoop {
        home: home.clone(),
        signals,
        listener: Some(listener),
        serve,
        rx,
        wake_read,
        adopted: Vec::new(),
        timers: BTreeMap::new(),
        board,
        shared,
        worker,
        rotation,
        ready: false,
        drain: None,
    };
    l.worker.send(Job::Startup);
    info!(pid = me, home = %home.root().display(), "daemon starting");
    let result = l.run();
    sd_notify("STOPPING=1");
    info!("daemon stopped; services keep running");
    result
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
}

fn drain(mut s: &UnixStream) {
    let mut buf = [0u8; 256];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

/// A shutdown in progress.
struct Drain {
    /// Restarts due up to this unix ms are still carried out.
    grace_until: i64,
    replies: Vec<ShutdownReply>,
}

struct EventLoop {
    home: Home,
    signals: Signals,
    /// `None` once the daemon stopped accepting (shutting down).
    listener: Option<UnixListener>,
    serve: ServeCtx,
    rx: mpsc::Receiver<Msg>,
    wake_read: UnixStream,
    /// Adopted services (not our children), watched by pidfd.
    adopted: Vec<(Handle, Watch)>,
    /// Pending automatic restarts: service -> due unix ms.
    timers: BTreeMap<String, i64>,
    board: Arc<ExitBoard>,
    shared: Arc<Shared>,
    worker: WorkerHandle,
    rotation: rotation::Resync,
    /// Startup adoption is done; requests are accepted.
    ready: bool,
    drain: Option<Drain>,
}

#[derive(Default)]
struct Ready {
    signal: bool,
    wake: bool,
    listener: bool,
    pidfds: Vec<usize>,
}

impl EventLoop {
    fn run(&mut self) -> Result<()> {
        loop {
            let ready = self.wait(self.timeout());
            if ready.signal {
                drain(&self.signals.read);
                if self.signals.chld.swap(false, Ordering::SeqCst) {
                    self.reap();
                }
                if self.signals.hup.swap(false, Ordering::SeqCst) {
                    info!("SIGHUP: reloading");
                    self.reload();
                }
                if self.signals.term.swap(false, Ordering::SeqCst) {
                    info!("SIGTERM/SIGINT: exiting once requests in progress are done");
                    self.begin_shutdown(None);
                }
            }
            if ready.wake {
                drain(&self.wake_read);
                self.messages();
            }
            if ready.listener {
                if let Some(l) = &self.listener {
                    server::accept(l, &self.serve);
                }
            }
            for i in ready.pidfds.into_iter().rev() {
                let (handle, watch) = self.adopted.swap_remove(i);
                self.worker.send(Job::AdoptedExit { handle, watch });
            }
            self.fire_timers();
            self.publish();
            if self.drained() {
                self.finish_shutdown();
                return Ok(());
            }
        }
    }

    /// Until the next pending restart, or forever. While shutting down, look again every
    /// few milliseconds for requests in flight to finish.
    fn timeout(&self) -> PollTimeout {
        let next = self.timers.values().min().copied();
        let ms = next.map(|at| (at - now_ms()).clamp(0, i32::MAX as i64) as i32);
        let ms = match (ms, &self.drain) {
            (Some(ms), Some(_)) => Some(ms.min(10)),
            (None, Some(_)) => Some(10),
            (ms, None) => ms,
        };
        match ms {
            None => PollTimeout::NONE,
            Some(ms) => PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        }
    }

    fn wait(&self, timeout: PollTimeout) -> Ready {
        let mut fds = vec![
            PollFd::new(self.signals.read.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake_read.as_fd(), PollFlags::POLLIN),
        ];
        let accepting = match (&self.listener, self.ready) {
            (Some(l), true) => {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                true
            }
            _ => false,
        };
        let first_pidfd = fds.len();
        fds.extend(
            self.adopted
                .iter()
                .map(|(h, _)| PollFd::new(h.as_fd(), PollFlags::POLLIN)),
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
        ready.listener = accepting && hit(&fds[2]);
        ready.pidfds = fds[first_pidfd..]
            .iter()
            .enumerate()
            .filter(|(_, fd)| hit(fd))
            .map(|(i, _)| i)
            .collect();
        ready
    }

    /// Reaps every exited child: the status goes on the board at once, and the exit to
    /// the worker.
    fn reap(&mut self) {
        while let Some(r) = reap::reap_one() {
            let Some(start_time) = r.start_time else {
                continue;
            };
            self.board.post(r.pid, start_time, r.status);
            self.worker.send(Job::Exit {
                pid: r.pid,
                start_time,
                status: r.status,
            });
        }
    }

    fn reload(&mut self) {
        self.worker.send(Job::Reload);
        self.rotation.request();
    }

    fn messages(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::FromRequest(ToLoop::Changed) => {
                    self.worker.send(Job::Sync);
                    self.rotation.request();
                }
                Msg::FromRequest(ToLoop::Reload) => self.reload(),
                Msg::FromRequest(ToLoop::Shutdown(reply)) => self.begin_shutdown(reply),
                Msg::Timers(pending) => self.timers = pending.into_iter().collect(),
                Msg::Watch(w) => self.adopted.extend(w),
                Msg::Ready => {
                    if !self.ready {
                        self.ready = true;
                        sd_notify("READY=1\nSTATUS=supervising");
                        info!(home = %self.home.root().display(), "daemon ready");
                    }
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = now_ms();
        let due: Vec<String> = self
            .timers
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.timers.remove(&name);
            self.worker.send(Job::Restart(name));
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

    /// Stops accepting at once (a CLI command arriving now acts by itself), then waits
    /// for what is in flight; see [`EventLoop::drained`].
    fn begin_shutdown(&mut self, reply: Option<ShutdownReply>) {
        self.serve.in_flight.close();
        if self.listener.take().is_some() {
            let _ = std::fs::remove_file(client::socket_path(&self.home));
        }
        let d = self.drain.get_or_insert(Drain {
            grace_until: now_ms() + SHUTDOWN_GRACE.as_millis() as i64,
            replies: Vec::new(),
        });
        d.replies.extend(reply);
    }

    /// Shutting down, and nothing is left to wait for: no request or NOTIFY command in
    /// flight, no job with the worker, no restart due within the grace period.
    fn drained(&self) -> bool {
        let Some(d) = &self.drain else {
            return false;
        };
        // The requests that asked for the shutdown wait for its answer: not for them.
        self.serve.in_flight.count() <= d.replies.len()
            && self.worker.outstanding() == 0
            && !self.timers.values().any(|&at| at <= d.grace_until)
    }

    fn finish_shutdown(&mut self) {
        let left: Vec<LeftDown> = self
            .timers
            .iter()
            .map(|(name, &due_at)| LeftDown {
                name: name.clone(),
                due_at,
            })
            .collect();
        for l in &left {
            warn!(service = %l.name, due_in_ms = l.due_at - now_ms(),
                "restart pending; left down (a new daemon will carry it out)");
        }
        if let Some(d) = self.drain.take() {
            for r in d.replies {
                let _ = r.send(left.clone());
            }
        }
        // Let the requesters write their answers before the process ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.serve.in_flight.count() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
