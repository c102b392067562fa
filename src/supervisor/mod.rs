//! start / stop / restart / status on top of the store and the process module.
//!
//! This is the one code path: whoever asks (the CLI, the daemon's request server, its
//! event worker, the NOTIFY listener) calls these functions, so behaviour never depends
//! on the transport. The caller says what it knows about its situation in a
//! [`Context`]; the supervisor never goes looking for a daemon itself.
//!
//! Every function re-reads the truth from the database and checks recorded processes by
//! identity before acting on them. A record that no longer describes a live process of
//! ours is cleared, logged as an event, and reported through [`Supervisor::take_notices`];
//! its PID is never signalled.
//!
//! # A start either commits or leaves nothing
//!
//! The database is checked (`read`), the new process is forked and set up but held at a
//! gate before exec ([`crate::process::spawn::Pending`]), the instance is recorded in one write
//! transaction that re-checks that no other start won meanwhile, and only then is the
//! gate opened. The spawn happens once, outside any retried transaction; if the record
//! cannot be committed, the held process is killed before it ever runs the program, and
//! if tend dies at any instant the gate closes and the process exits on its own. The CLI
//! holds off SIGINT/SIGTERM/SIGHUP/SIGQUIT from before the spawn until exec.

pub mod apply;
mod containment;
mod definitions;
mod exits;
mod fleet;
mod forking;
pub mod health;
pub mod hooks;
mod instances;
mod ready;
mod start;
mod stop;
mod view;
pub mod writers;

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::home::Home;
use crate::policy::{Decision, ExitStatus};
use crate::process::cgroup::Containment;
use crate::process::handle::Handle;
use crate::process::identity;
use crate::process::reap::ExitBoard;
use crate::record::{Instance, Runtime};
use crate::service::Service;
use crate::state::State;
use crate::store::{Files, Store};

/// A service with its running instance, if any, and its restart bookkeeping.
#[derive(Clone, Debug)]
pub struct Status {
    pub service: Service,
    pub instance: Option<Instance>,
    pub runtime: Runtime,
    /// What the service is doing, decided once (by [`State::of`]); output renders it.
    pub state: State,
    /// Its cgroup, when it runs in one or left processes in one.
    pub cgroup: Option<CgroupView>,
}

impl Status {
    /// `ready_at`: when the instance passed its readiness check, if it did. A service
    /// without a `ready` check is ready once it runs.
    /// `unknown`: why the instance's liveness could not be checked, if it could not.
    fn new(
        service: Service,
        (instance, unknown): (Option<Instance>, Option<String>),
        runtime: Runtime,
        supervised: bool,
        ready_at: Option<i64>,
    ) -> Status {
        let ready = service.settings.ready.is_none() || ready_at.is_some();
        let state = State::of_ready(
            instance.as_ref(),
            &runtime,
            supervised,
            ready,
            unknown.as_deref(),
        );
        Status {
            service,
            instance,
            runtime,
            state,
            cgroup: None,
        }
    }
}

/// What `status` shows of a service's cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CgroupView {
    /// The running instance's cgroup.
    pub path: Option<String>,
    /// CPU time and memory of the running instance's cgroup.
    pub usage: crate::process::cgroup::Usage,
    /// Processes of the service outside a running instance: what an instance whose main
    /// process exited left behind (killed at the next start or stop).
    pub leftovers: Vec<i32>,
}

/// What the daemon must do after a service's exit was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub name: String,
    /// The session (and first process group) tend created for the instance.
    pub pgid: i32,
    /// The instance's cgroup, if it had one.
    pub cgroup: Option<String>,
    /// The exit was asked for by a stop.
    pub requested: bool,
    pub decision: Decision,
    /// Unix ms when a restart is due.
    pub retry_at: Option<i64>,
}

/// What taking a fleet command found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Take {
    /// First time here: recorded as taken, with the request in the service's events
    /// when it is defined here (`known`); act on it.
    Fresh { known: bool },
    /// Taken before: acted on (or interrupted while acting) by an earlier daemon.
    Before(crate::record::Taken),
}

/// What a daemon coming up (or looking again) found.
pub struct Adoption {
    /// Running services to watch, pinned.
    pub watches: Vec<(Handle, Watch)>,
    /// Dead or stale records, cleared and put through the restart policy.
    pub exits: Vec<Exit>,
    /// Records left exactly as they are, to be looked at again: their check could not be
    /// made, or they could not be watched.
    pub deferred: Vec<Deferred>,
}

/// A recorded instance an adoption pass left as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    pub name: String,
    pub pid: i32,
    /// The check was made (it is alive) but it is not watched; false: the check could
    /// not be made (its liveness is unknown).
    pub checked: bool,
    pub why: String,
}

/// A live instance a daemon should watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub name: String,
    pub pid: i32,
    pub start_time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum StartOutcome {
    Started {
        pid: i32,
    },
    AlreadyRunning {
        pid: i32,
    },
    /// exec succeeded, but the process had already exited when tend looked.
    ExitedAtOnce {
        pid: i32,
        /// `code N` or `signal NAME` when tend reaped it; `None` when unknown.
        #[serde(default)]
        status: Option<String>,
        /// It did not exit on its own: another command stopped it meanwhile.
        #[serde(default)]
        stopped: bool,
    },
    /// An automatic restart that was cancelled meanwhile (a person stopped or started the
    /// service); only [`Supervisor::restart_due`] returns it.
    NotDue,
    /// `start --wait`: running and ready (its check passed, or it stayed up its grace
    /// period), `took` after the wait began.
    Ready {
        pid: i32,
        took: Duration,
    },
    /// `start --wait`: not ready. `status`: how it exited, when it did; `log`: the end
    /// of its log then.
    NotReady {
        pid: i32,
        reason: String,
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        log: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SignalOutcome {
    Sent { pid: i32, signal: String },
    NotRunning,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum StopOutcome {
    NotRunning,
    Stopped {
        pid: i32,
        killed: bool,
        took: Duration,
        /// Other processes of the service stopped with the main one.
        #[serde(default)]
        others: usize,
        /// The main process had left the session tend created for it.
        #[serde(default)]
        left_session: bool,
        /// Processes in that session's number not proven to be the service's: not
        /// signalled (the number may have been reused by an unrelated process).
        #[serde(default)]
        left_alone: usize,
    },
}

/// What the caller knows about who supervises this home; the supervisor never goes
/// looking for a daemon itself.
#[derive(Clone, Default)]
pub struct Context {
    /// A daemon runs for this home and it is not us: exits of its services are left for
    /// it to record (it knows their exit status and applies the restart policy).
    pub daemon_watching: bool,
    /// We are the daemon: its event loop reaps every child and posts the statuses here.
    pub board: Option<Arc<ExitBoard>>,
    /// The containment found by the caller (the daemon finds it once); `None`: found on
    /// first use.
    pub containment: Option<Containment>,
    /// In the daemon: where an exit goes that a start saw itself. The event loop reaps
    /// every child the moment it exits, and a process killed while its start waited to
    /// commit is reaped before any record names it, so the reaper's own report finds no
    /// instance. The start hands such an exit back (`pid`, start time, `waitpid` status
    /// word) to whoever records exits, which records it if the instance is still
    /// recorded: whoever clears the record writes the exit, so it is counted once.
    pub exits: Option<ExitSink>,
    /// Asked right before a start spawns (and while a check command runs): false once
    /// whoever asked is gone or no longer waits for the answer, and then the spawn is
    /// not carried out (the check is ended). A request can be slow to get there, and a
    /// start nobody waits for any more must not happen later by surprise. `None`: go
    /// ahead.
    pub proceed: Option<Proceed>,
    /// We are a resident process (the daemon), and these are the database files it opened
    /// first: every supervisor it opens keeps its connection open and checks before each
    /// use that its files are still these, the ones on disk (see [`Store::keep_open`]).
    pub files: Option<Files>,
    /// Told of the events each write records, once committed (the daemon's hooks).
    pub events: Option<crate::store::EventSink>,
}

/// See [`Context::exits`].
pub type ExitSink = Arc<dyn Fn(i32, u64, i32) + Send + Sync>;

/// See [`Context::proceed`].
pub type Proceed = Arc<dyn Fn() -> bool + Send + Sync>;

/// Page cache of each connection a resident process keeps, in KiB: the pages a request
/// reads (one service's rows, the indexes above them) stay warm, and an idle daemon with
/// many services does not keep a copy of the whole database per connection.
pub const KEPT_CACHE_KIB: u32 = 256;

pub struct Supervisor {
    home: Home,
    store: Store,
    boot_id: String,
    notices: Vec<String>,
    ctx: Context,
    /// Found on first use (see [`Supervisor::containment`]).
    containment: Option<Containment>,
}

/// How long a thread that saw one of the daemon's children exit waits for the event loop
/// to post its status (it reaps at once; this only bounds a stalled loop).
const STATUS_WAIT: Duration = Duration::from_secs(1);

/// What to do after recording an exit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Apply the restart policy (unless the exit was asked for).
    Policy,
    /// A start is about to replace the instance: no restart to schedule.
    Nothing,
}

impl Supervisor {
    /// Creates the home if needed and opens its database.
    pub fn open(home: Home) -> Result<Supervisor> {
        Supervisor::open_with(home, Context::default())
    }

    pub fn open_with(home: Home, ctx: Context) -> Result<Supervisor> {
        home.ensure()?;
        // Before the database: it needs a descriptor only while it is read, and the
        // database's stay open; read afterwards, it would fail for want of a descriptor
        // exactly when every later look at /proc would, and hide that case.
        let boot_id = identity::boot_id().map_err(|e| Error::Io {
            path: "/proc/sys/kernel/random/boot_id".into(),
            reason: crate::error::io_reason(&e),
        })?;
        let mut store = match ctx.files {
            Some(files) => Store::open_kept(&home.db_path(), files, KEPT_CACHE_KIB)?,
            None => Store::open(&home.db_path())?,
        };
        store.set_sink(ctx.events.clone());
        Ok(Supervisor {
            home,
            store,
            boot_id,
            notices: Vec::new(),
            containment: ctx.containment.clone(),
            ctx,
        })
    }

    /// Readies this supervisor's database connection to be kept open by a resident
    /// process, which has no other connection open yet (see [`Store::keep_open`]): the
    /// files noted are the ones the process's other supervisors must find (pass them in
    /// [`Context::files`]).
    pub fn keep_open(&mut self) -> Result<Files> {
        self.store.keep_open(KEPT_CACHE_KIB, None)
    }

    /// What became of the state database's files since this supervisor's connection was
    /// kept open, once they are no longer the ones on disk (see
    /// [`Store::files_changed`]): it must not be used again.
    pub fn files_changed(&self) -> Option<String> {
        self.store.files_changed()
    }

    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Things the user should hear about that are not errors (stale records cleared,
    /// a program not found at add time). The CLI prints them on stderr.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Our own pid when we are the daemon: a child subreaper, so orphans of the services
    /// we started are our children.
    fn reaper(&self) -> Option<i32> {
        self.ctx.board.as_ref().map(|_| std::process::id() as i32)
    }

    /// Appends an event.
    pub fn record(&mut self, service: &str, kind: &str, detail: &str) -> Result<()> {
        self.store.write(|tx| tx.record(service, kind, detail))
    }

    pub fn config_get(&mut self, key: &str) -> Result<Option<String>> {
        self.store.read(|tx| tx.config(key))
    }

    /// Sets (`Some`) or removes (`None`) a setting.
    pub fn config_set(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        self.store.write(|tx| tx.set_config(key, value))
    }

    pub fn config_all(&mut self) -> Result<Vec<(String, String)>> {
        self.store.read(|tx| tx.config_all())
    }

    /// Tells `sink` of the events each later write records, once committed (see
    /// [`Context::events`]).
    pub fn set_events(&mut self, sink: Option<crate::store::EventSink>) {
        self.store.set_sink(sink.clone());
        self.ctx.events = sink;
    }

    /// Sets (for one request) or clears what is asked before a spawn; see
    /// [`Context::proceed`].
    pub fn set_proceed(&mut self, proceed: Option<Proceed>) {
        self.ctx.proceed = proceed;
    }

    /// False once whoever asked for this work is gone (see [`Context::proceed`]).
    fn proceed(&self) -> bool {
        self.ctx.proceed.as_ref().is_none_or(|p| p())
    }

    /// [`Supervisor::proceed`] as a closure of its own, for a check that runs while the
    /// supervisor is borrowed otherwise.
    fn proceeding(&self) -> impl Fn() -> bool {
        let p = self.ctx.proceed.clone();
        move || p.as_ref().is_none_or(|p| p())
    }

    /// A daemon supervises this home: we are it, or the caller saw one running.
    fn supervised(&self) -> bool {
        self.ctx.daemon_watching || self.ctx.board.is_some()
    }

    fn seer(&self) -> Seer {
        Seer {
            boot: self.boot_id.clone(),
            defer: self.ctx.daemon_watching,
            board: self.ctx.board.clone(),
        }
    }
}

/// How a supervisor judges a recorded instance.
struct Seer {
    boot: String,
    /// A daemon watches (and is not us): leave exits for it.
    defer: bool,
    board: Option<Arc<ExitBoard>>,
}

impl Seer {
    /// What became of the recorded instance `i`: its identity (pid, start time, boot
    /// id and, where it has one, membership of its cgroup) checked against the system.
    fn check(&self, i: &Instance) -> identity::Liveness {
        identity::check(
            i.pid,
            i.start_time,
            &i.boot_id,
            &self.boot,
            i.cgroup.as_deref().map(std::path::Path::new),
        )
    }

    /// The instance is proven alive (not merely possibly: an unknown is not alive).
    fn alive(&self, i: &Instance) -> bool {
        self.check(i) == identity::Liveness::Alive
    }

    /// The status of an exited instance, if our reaper saw it.
    fn status(&self, i: &Instance) -> ExitStatus {
        self.board
            .as_ref()
            .and_then(|b| b.get(i.pid, i.start_time))
            .map_or(ExitStatus::Unknown, ExitStatus::from_wait)
    }
}
