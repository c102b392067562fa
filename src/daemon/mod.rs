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
//!     ([`server`]), capped at [`bus::MAX_CONNECTIONS`].
//!   - **timers** of pending automatic restarts, due restarts go to the worker.
//!   - messages from the other threads (new timers, adopted processes to watch).
//! - **The worker** ([`worker`]) does, one job at a time, everything that needs the
//!   database: records exits and applies the restart policy ([`crate::policy`]), kills
//!   what a crashed service left behind, carries out due restarts, adopts.
//! - **Request threads** ([`server`]) carry out CLI requests through the same
//!   [`crate::api::act`] as the CLI; a stop waiting 10 s for its timeout blocks only
//!   its own thread.
//! - **Log rotation** ([`rotation`]), **health and readiness checks** ([`health`]) and
//!   the **PostgreSQL** listener and executor ([`crate::pg`]) have threads of their own.
//! - **The files watch** ([`files`]) sleeps on inotify and tells the loop when the
//!   database files on disk are no longer the ones the daemon opened (each write also
//!   checks): the daemon then uses the database no more and says so, staying up with
//!   the old files open (see [`event_loop`]).
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
//! within [`event_loop::SHUTDOWN_GRACE`] are carried out; the services whose restart is due later are
//! named (in the log, and to `tend daemon stop`) as left down. Services keep running.

pub mod bus;
pub mod client;
pub mod event_loop;
pub mod files;
pub mod health;
pub mod hooks;
pub mod http;
pub mod pool;
pub mod protocol;
pub mod rotation;
pub mod server;
pub mod signals;
pub mod watch;
pub mod worker;

use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc, Mutex};

use tracing::{info, warn};

use crate::error::{io_reason, Error, Result};
use crate::home::Home;
use crate::process::reap::{self, ExitBoard};
use crate::process::{identity, lock};
use crate::record::now_ms;
use crate::supervisor::{Context, Supervisor};
use bus::{InFlight, Msg, Shared, ToLoop, Waker};
use event_loop::EventLoop;
use server::ServeCtx;
use signals::{sd_notify, Signals};
use worker::Job;

/// The limit on open files a daemon needs to watch `services` services: a pidfd each,
/// its own (the database, the socket, the threads' pipes: about 30, with some to spare)
/// and the ones it keeps free for its work ([`worker::RESERVED_DESCRIPTORS`]).
pub fn descriptors_needed(services: usize) -> u64 {
    services as u64 + 48 + worker::RESERVED_DESCRIPTORS
}

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
///
/// `bound_to`: the pid of the `tend up` that started this daemon. The daemon asks the
/// kernel for SIGTERM when that parent ends (SIGKILL included), and a SIGTERM then stops
/// every service before it exits (see [`EventLoop::bound`]).
pub fn run_foreground(
    home: Home,
    pg: crate::pg::Overrides,
    http_flag: Option<&str>,
    bound_to: Option<i32>,
) -> Result<()> {
    init_logging();
    if let Some(parent) = bound_to {
        // First of all: before this, an `up` killed would leave this daemon running.
        match crate::process::init::die_with_parent(parent, libc::SIGTERM) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Daemon {
                    message: format!(
                        "the tend up (pid {parent}) this daemon was started for is gone"
                    ),
                })
            }
            Err(e) => {
                return Err(Error::Daemon {
                    message: format!("cannot tie the daemon to tend up: {}", io_reason(&e)),
                })
            }
        }
    }
    // Before any thread exists (see `process::memory`).
    crate::process::memory::one_arena();
    // A descriptor per adopted service: as many as the hard limit allows (the services
    // started get the limit we were given; see `process::limits`).
    match crate::process::limits::raise() {
        Ok(r) if r.after > r.before => {
            info!(
                from = r.before,
                to = r.after,
                "raised the limit on open files"
            )
        }
        Ok(r) => info!(limit = r.after, "limit on open files"),
        Err(e) => warn!(error = %io_reason(&e), "cannot raise the limit on open files"),
    }
    home.ensure()?;
    let lock_path = client::lock_path(&home);
    let lock = match lock::acquire(&lock_path).map_err(|e| Error::Io {
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
    let containment = crate::process::cgroup::detect(home.root());
    if let Some(root) = containment.root() {
        // Out of the cgroup the services' cgroups are created in: a cgroup that has
        // controllers enabled for its children may not hold processes of its own.
        if let Err(e) = root.enter_supervisor() {
            warn!(error = %io_reason(&e), "cannot move into the supervisor cgroup; staying where started");
        }
    }
    info!(containment = %containment.describe(), "containment");
    let queue = worker::queue();
    let mut ctx = Context {
        daemon_watching: false,
        board: Some(board.clone()),
        containment: Some(containment.clone()),
        exits: Some(queue.0.exit_sink()),
        proceed: None,
        files: None,
        events: None,
    };
    let mut sup = Supervisor::open_with(home.clone(), ctx.clone())?;
    // The files this first connection found are the daemon's for its lifetime: every
    // other connection must find the same ones, and the CLI compares them with the ones
    // on disk before it uses the database beside this daemon (see `files`).
    let files = sup.keep_open()?;
    ctx.files = Some(files);
    lock.note(&format!("files {files}"))
        .map_err(|e| Error::Io {
            path: lock_path.clone(),
            reason: format!("cannot write: {}", io_reason(&e)),
        })?;
    // Hooks: runner threads with supervisors of their own (which tell nobody of the
    // events they record, so a `hook-failed` event never runs a hook); every other
    // supervisor of the daemon tells them of what it commits. A hook a daemon killed
    // with SIGKILL left running goes first.
    sup.sweep_hooks();
    let in_flight = Arc::new(InFlight::default());
    let hooks_closing = in_flight.clone();
    let hooks_pool = pool::Pool::new(
        home.clone(),
        Context {
            daemon_watching: true,
            proceed: Some(Arc::new(move || !hooks_closing.closing())),
            ..ctx.clone()
        },
    );
    let hooks = hooks::Hooks::start(hooks_pool.clone(), in_flight.clone())?;
    let to_hooks = hooks.clone();
    ctx.events = Some(Arc::new(move |recorded| to_hooks.post(recorded)));
    sup.set_events(ctx.events.clone());
    let pg_settings = crate::pg::Settings::resolve(&mut sup, &pg)?;
    // Bound before the daemon says it is ready: a port in use ends the startup with a
    // clear error.
    let http_settings = http::Settings::resolve(&mut sup, http_flag)?;
    let http_bound = match &http_settings {
        Some(s) => Some(http::bind(s)?),
        None => None,
    };
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
        unwatched: AtomicUsize::new(0),
        pending: AtomicUsize::new(0),
        postgres: Mutex::new(None),
        containment: containment.describe(),
        http: http_settings.as_ref().map(|s| s.listen.to_string()),
    });
    if let Some(settings) = pg_settings {
        let hooks = || {
            let (admit_from, changed_to) = (in_flight.clone(), waker.clone());
            crate::pg::listener::Hooks {
                admit: Box::new(move || {
                    admit_from
                        .enter_always()
                        .map(|t| Box::new(t) as Box<dyn Send>)
                }),
                changed: Box::new(move || changed_to.send(Msg::FromRequest(ToLoop::Changed))),
            }
        };
        // The quick NOTIFY mode and the fleet (durable commands), on one connection.
        let watch = crate::pg::fleet::Watch::new(&settings.schema, &settings.host_id);
        let quick = crate::pg::quick::Quick {
            signed: pg_key.is_some(),
            unsigned_allowed: settings.quick_unsigned,
            fleet: watch,
        };
        let status = crate::pg::listener::start(
            settings,
            pg_key,
            quick,
            home.clone(),
            ctx.clone(),
            hooks(),
            hooks(),
        )?;
        *shared.postgres.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }
    let pool = pool::Pool::new(home.clone(), ctx.clone());
    let rotation = rotation::start(pool.clone())?;
    // The health thread leaves every exit it notices to the worker (which knows the
    // status, kills what a crashed service left behind and restarts it), as a CLI beside
    // the daemon does. A check it runs ends (killed whole) once the daemon is going away.
    let closing = in_flight.clone();
    let health = health::start(
        pool::Pool::new(
            home.clone(),
            Context {
                daemon_watching: true,
                proceed: Some(Arc::new(move || !closing.closing())),
                ..ctx.clone()
            },
        ),
        in_flight.clone(),
    )?;
    if let (Some(s), Some(bound)) = (http_settings, http_bound) {
        info!(listen = %s.listen, writes = s.token.is_some(), "http API");
        http::start(
            bound,
            http::Ctx {
                pool: pool.clone(),
                in_flight: in_flight.clone(),
                waker: waker.clone(),
                token: s.token,
                started_at: shared.started_at,
            },
        )?;
    }
    let watch = watch::start(
        home.clone(),
        pool::Pool::new(
            home.clone(),
            Context {
                daemon_watching: true,
                ..ctx.clone()
            },
        ),
        in_flight.clone(),
    )?;
    files::watch(&home, files, waker.clone());
    let worker = worker::start(sup, waker.clone(), queue)?;
    let serve = ServeCtx {
        home: home.clone(),
        shared: shared.clone(),
        waker,
        in_flight,
        heartbeats: server::Heartbeats::start()?,
        pool,
        abandon: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let mut l = EventLoop {
        home: home.clone(),
        signals,
        listener: Some(listener),
        serve,
        rx,
        wake_read,
        adopted: event_loop::Adopted::new()?,
        timers: std::collections::BTreeMap::new(),
        fired: std::collections::BTreeMap::new(),
        board,
        shared,
        worker,
        rotation,
        health,
        watch,
        ready: false,
        drain: None,
        trim_at: None,
        lock,
        fault: None,
        reserve: reap::Reserve::new(),
        held: None,
        reap_at: None,
        adopt_at: None,
        deferred: 0,
        writers_at: None,
        writers_asked: 0,
        writer_watch: event_loop::WriterWatch::new()?,
        bound: bound_to.is_some(),
        stopping_all: false,
    };
    l.worker.send(Job::Startup);
    info!(pid = me, home = %home.root().display(), "daemon starting");
    let result = l.run();
    hooks.close(&hooks_pool);
    if let Some(root) = containment.root() {
        release_home_cgroup(root);
    }
    sd_notify("STOPPING=1");
    if bound_to.is_some() {
        info!("daemon stopped, and every service with it");
    } else {
        info!("daemon stopped; services keep running");
    }
    // Nothing is closed on the way out: the process ends with the lock and every
    // database connection still open, and the kernel closes them together. Dropping
    // them here would release the lock while other threads still close their
    // connections, and closing a connection can unlink `tend.db-wal` and `tend.db-shm`
    // by name: a daemon started right after this one would then lose its files.
    std::mem::forget(l);
    result
}

/// As the daemon stops: out of `supervisor` (a cgroup cannot be removed while a process
/// is in it), then whatever of the home's cgroup nothing uses is removed. What still runs
/// (services that keep running, their log writers) keeps its cgroups, and the home's.
fn release_home_cgroup(root: &crate::process::cgroup::Root) {
    if let Err(e) = root.leave_supervisor() {
        info!(error = %io_reason(&e), parent = %root.parent.display(),
            "cannot move back into the cgroup the daemon started in; its cgroup stays");
        return;
    }
    root.remove_unused();
}
