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
//! gate before exec ([`spawn::Pending`]), the instance is recorded in one write
//! transaction that re-checks that no other start won meanwhile, and only then is the
//! gate opened. The spawn happens once, outside any retried transaction; if the record
//! cannot be committed, the held process is killed before it ever runs the program, and
//! if tend dies at any instant the gate closes and the process exits on its own. The CLI
//! holds off SIGINT/SIGTERM/SIGHUP/SIGQUIT from before the spawn until exec.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::home::Home;
use crate::policy::{self, Decision, ExitStatus};
use crate::process::handle::{Found, Handle};
use crate::process::identity;
use crate::process::reap::ExitBoard;
use crate::process::signals::Deferred;
use crate::process::spawn::{self, SpawnError};
use crate::process::stop::{self, Target};
use crate::record::{event, now_ms, Event, Instance, Runtime};
use crate::service::{self, fmt_duration, Service};
use crate::store::{Store, Tx};

/// A service with its running instance, if any, and its restart bookkeeping.
#[derive(Clone, Debug)]
pub struct Status {
    pub service: Service,
    pub instance: Option<Instance>,
    pub runtime: Runtime,
    /// A daemon supervises this home (as far as the caller knows): a pending restart
    /// will be carried out.
    pub daemon: bool,
}

/// Who asked for a start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A person or a command (CLI, control socket, NOTIFY): clears failed and backoff.
    Request,
    /// The daemon's restart policy.
    Policy,
}

/// What the daemon must do after a service's exit was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub name: String,
    /// The session (and first process group) tend created for the instance.
    pub pgid: i32,
    /// The exit was asked for by a stop.
    pub requested: bool,
    pub decision: Decision,
    /// Unix ms when a restart is due.
    pub retry_at: Option<i64>,
}

/// What a daemon coming up found: running services to watch (pinned), and exits.
pub type Adoption = (Vec<(Handle, Watch)>, Vec<Exit>);

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
    },
    /// An automatic restart that was cancelled meanwhile (a person stopped or started the
    /// service); only [`Supervisor::restart_due`] returns it.
    NotDue,
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
}

/// Changes for `tend edit`; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub argv: Option<Vec<String>>,
    pub cwd: Option<std::path::PathBuf>,
    pub stdin: Option<std::path::PathBuf>,
    pub stdout: Option<std::path::PathBuf>,
    pub stderr: Option<std::path::PathBuf>,
    pub set_env: Vec<(String, String)>,
    pub unset_env: Vec<String>,
    pub stop_signal: Option<service::StopSignal>,
    pub stop_timeout: Option<Duration>,
    pub restart: Option<service::RestartPolicy>,
    pub autostart: Option<bool>,
    pub restart_delay: Option<Duration>,
    pub start_limit: Option<u32>,
    pub start_limit_interval: Option<Duration>,
    pub log_max_bytes: Option<u64>,
}

pub struct Supervisor {
    home: Home,
    store: Store,
    boot_id: String,
    notices: Vec<String>,
    ctx: Context,
}

/// How long a thread that saw one of the daemon's children exit waits for the event loop
/// to post its status (it reaps at once; this only bounds a stalled loop).
const STATUS_WAIT: Duration = Duration::from_secs(1);

/// What the first look before a start found.
enum Check {
    Go(Box<Service>),
    Done(StartOutcome),
}

/// What recording a new instance found.
enum Commit {
    /// Recorded; how to take it back if exec then fails.
    Won(Undo),
    /// Another start won meanwhile, or the automatic restart was cancelled.
    Lost(StartOutcome),
}

/// The rows a committed start wrote, so an exec failure can restore the state exactly.
struct Undo {
    id: i64,
    runtime: Runtime,
    events: Vec<i64>,
}

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
        let store = Store::open(&home.db_path())?;
        let boot_id = identity::boot_id().map_err(|e| Error::Io {
            path: "/proc/sys/kernel/random/boot_id".into(),
            reason: crate::error::io_reason(&e),
        })?;
        Ok(Supervisor {
            home,
            store,
            boot_id,
            notices: Vec::new(),
            ctx,
        })
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

    /// Stores a new definition after validating it.
    pub fn add(&mut self, svc: Service) -> Result<()> {
        validate(&svc, &mut self.notices)?;
        self.store.write(|tx| {
            tx.insert_service(&svc)?;
            tx.record(&svc.name, event::ADDED, &svc.command_line())
        })
    }

    /// Applies `changes`; returns the names of the fields that changed and whether the
    /// service is running (changes take effect at its next start).
    pub fn edit(&mut self, name: &str, changes: &Changes) -> Result<(Vec<&'static str>, bool)> {
        let mut notes = Vec::new();
        let (_, current) = self.store.read(|tx| lookup(tx, name))?;
        let updated = apply(&current, changes);
        validate(&updated, &mut self.notices)?;
        let changed = diff(&current, &updated);
        let seer = self.seer();
        let running = self.store.write(|tx| {
            notes.clear();
            let (id, now) = lookup(tx, name)?;
            if now != current {
                // Someone else edited it between our read and this write: apply the
                // changes on top of what is stored now rather than overwrite theirs.
                let again = apply(&now, changes);
                tx.update_service(id, &again)?;
            } else if !changed.is_empty() {
                tx.update_service(id, &updated)?;
            }
            if !changed.is_empty() {
                tx.record(name, event::CHANGED, &changed.join(", "))?;
            }
            Ok(live_instance(tx, id, &now, &seer, Then::Policy, &mut notes)?.is_some())
        })?;
        self.notices.extend(notes);
        Ok((changed, running))
    }

    /// Deletes a definition. A running service is refused unless `stop` is set, in which
    /// case it is stopped first. Its events are kept.
    pub fn remove(&mut self, name: &str, stop_first: bool) -> Result<StopOutcome> {
        let stopped = if stop_first {
            self.stop(name)?
        } else {
            StopOutcome::NotRunning
        };
        let mut notes = Vec::new();
        let seer = self.seer();
        self.store.write(|tx| {
            notes.clear();
            let (id, svc) = lookup(tx, name)?;
            if live_instance(tx, id, &svc, &seer, Then::Nothing, &mut notes)?.is_some() {
                return Err(Error::Running(name.to_string()));
            }
            tx.delete_service(id)?;
            tx.record(name, event::REMOVED, "")
        })?;
        self.notices.extend(notes);
        Ok(stopped)
    }

    /// Starts the service unless it is already running; concurrent starts of one service
    /// start exactly one instance. Clears a `failed` mark and any pending automatic
    /// restart.
    pub fn start(&mut self, name: &str) -> Result<StartOutcome> {
        self.start_as(name, Origin::Request)
    }

    /// The daemon's automatic restart: runs only if the restart is still pending (a
    /// person's stop or start in the meantime cancels it).
    pub fn restart_due(&mut self, name: &str) -> Result<StartOutcome> {
        match self.start_as(name, Origin::Policy) {
            // Removed while a restart was pending.
            Err(Error::UnknownService(_)) => Ok(StartOutcome::NotDue),
            other => other,
        }
    }

    fn start_as(&mut self, name: &str, origin: Origin) -> Result<StartOutcome> {
        let seer = self.seer();
        let svc = match self.store.read(|tx| {
            let (id, svc) = lookup(tx, name)?;
            if let Some(inst) = tx.instance(id)? {
                if seer.alive(&inst) {
                    return Ok(Check::Done(StartOutcome::AlreadyRunning { pid: inst.pid }));
                }
            }
            if origin == Origin::Policy && tx.runtime(id)?.next_retry_at.is_none() {
                return Ok(Check::Done(StartOutcome::NotDue));
            }
            Ok(Check::Go(Box::new(svc)))
        })? {
            Check::Go(svc) => *svc,
            Check::Done(outcome) => return Ok(outcome),
        };
        // Everything that can fail on bad input fails here, before any fork or write.
        let cmd = prepare(&svc)?;
        // From before the fork until exec: a Ctrl-C, SIGTERM or hang-up meanwhile is
        // carried out afterwards, when the instance is recorded and running.
        let _deferred = Deferred::new();
        let pending = cmd.spawn().map_err(|e| start_error(&svc.name, e))?;
        let inst = Instance {
            pid: pending.pid(),
            pgid: pending.session(),
            start_time: pending.start_time(),
            boot_id: self.boot_id.clone(),
            started_at: now_ms(),
            stopping: false,
        };
        let mut notes = Vec::new();
        // No side effect in here: it may run more than once. `pending` is dropped (and
        // the held process killed before exec) on any error.
        let undo = match self.store.write(|tx| {
            notes.clear();
            commit_start(tx, name, &inst, origin, &seer, &mut notes)
        }) {
            Ok(Commit::Won(undo)) => undo,
            Ok(Commit::Lost(outcome)) => {
                drop(pending);
                self.notices.extend(notes);
                return Ok(outcome);
            }
            Err(e) => {
                drop(pending);
                return Err(e);
            }
        };
        self.notices.extend(notes);
        let started = match pending.release() {
            Ok(s) => s,
            Err(e) => {
                self.undo_start(&inst, &undo);
                return Err(start_error(&svc.name, e));
            }
        };
        // `start` confirms exec. If the process is already gone by now, say so.
        if started.handle.exited() {
            let status = self.fresh_exit_status(&started.handle);
            if self.ctx.board.is_none() {
                // Without a daemon nobody else will ever know this status.
                self.exit_seen(undo.id, &inst, status.unwrap_or(ExitStatus::Unknown))?;
            }
            return Ok(StartOutcome::ExitedAtOnce {
                pid: inst.pid,
                status: status.map(|s| s.to_string()),
            });
        }
        Ok(StartOutcome::Started { pid: inst.pid })
    }

    /// The exit status of a process we just started and found exited: we are its parent
    /// (a subreaper), so the CLI reaps it itself; in the daemon its loop does, and posts.
    fn fresh_exit_status(&self, h: &Handle) -> Option<ExitStatus> {
        let word = match &self.ctx.board {
            Some(board) => board.wait_for(h.pid(), h.start_time(), STATUS_WAIT),
            None => h.try_reap(),
        };
        word.map(ExitStatus::from_wait)
    }

    /// Takes back a committed start whose exec failed: the state is as it was before.
    fn undo_start(&mut self, inst: &Instance, undo: &Undo) {
        let restored = self.store.write(|tx| {
            if tx.clear_instance(undo.id, inst)? {
                tx.set_runtime(undo.id, &undo.runtime)?;
                for &e in &undo.events {
                    tx.delete_event(e)?;
                }
            }
            Ok(())
        });
        if let Err(e) = restored {
            self.notices.push(format!(
                "the record of pid {} could not be taken back ({e}); it will be cleared as exited",
                inst.pid
            ));
        }
    }

    /// Records that the instance `inst` of service `id` exited with `status` (if it is
    /// still the recorded one), with the restart policy applied.
    fn exit_seen(&mut self, id: i64, inst: &Instance, status: ExitStatus) -> Result<()> {
        self.store.write(|tx| {
            let Some(svc) = tx.service_by_id(id)? else {
                return Ok(());
            };
            if tx.instance(id)?.as_ref() == Some(inst) {
                record_exit(tx, id, &svc, inst, status, Then::Policy)?;
            }
            Ok(())
        })
    }

    /// Stops the service if it runs: its stop signal to every process proven to be the
    /// service's, wait, SIGKILL. A person's stop also cancels a pending automatic restart
    /// and clears `failed`.
    pub fn stop(&mut self, name: &str) -> Result<StopOutcome> {
        let (id, svc, inst) = self.store.write(|tx| {
            let (id, svc) = lookup(tx, name)?;
            let inst = tx.instance(id)?;
            if let Some(i) = &inst {
                // Before any signal: whoever sees the exit must know it was asked for.
                tx.mark_stopping(id, i)?;
            }
            let mut rt = tx.runtime(id)?;
            if rt.next_retry_at.is_some() || rt.failed.is_some() {
                rt.next_retry_at = None;
                rt.failed = None;
                tx.set_runtime(id, &rt)?;
            }
            Ok((id, svc, inst))
        })?;
        let Some(mut inst) = inst else {
            return Ok(StopOutcome::NotRunning);
        };
        inst.stopping = true;
        // Is it a child of ours? Then the daemon's loop reaps it and posts its status.
        let me = std::process::id() as i32;
        let our_child = self.ctx.board.is_some()
            && identity::stat(inst.pid)
                .ok()
                .flatten()
                .is_some_and(|s| s.ppid == me && s.start_time == inst.start_time);
        // The wait happens outside any transaction: a 10 s stop must not hold the
        // database lock against every other tend command.
        let target = Target {
            pid: inst.pid,
            session: inst.pgid,
            start_time: inst.start_time,
            boot_id: &inst.boot_id,
        };
        let outcome = stop::stop(
            &target,
            &self.boot_id,
            svc.stop_signal.0,
            svc.stop_timeout,
            self.reaper(),
        )
        .map_err(|e| Error::Stop {
            service: name.to_string(),
            message: e.to_string(),
        })?;
        let (kind, detail, result) = match &outcome {
            stop::Outcome::Stale(why) => (
                event::STALE,
                format!("pid {}: {why}; not signalled", inst.pid),
                StopOutcome::NotRunning,
            ),
            stop::Outcome::AlreadyExited => (
                event::EXIT,
                format!("pid {} had exited (status unknown)", inst.pid),
                StopOutcome::NotRunning,
            ),
            stop::Outcome::Stopped(s) => (
                event::STOP,
                stop_detail(&svc, inst.pid, inst.pgid, s),
                StopOutcome::Stopped {
                    pid: inst.pid,
                    killed: s.killed,
                    took: s.took,
                    others: s.others,
                    left_session: s.left_session,
                    left_alone: s.left_alone,
                },
            ),
        };
        if kind != event::STOP {
            self.notices
                .push(format!("{name}: {detail}; record cleared"));
        }
        let status = match (&self.ctx.board, kind == event::STOP && our_child) {
            (Some(board), true) => board
                .wait_for(inst.pid, inst.start_time, STATUS_WAIT)
                .map(ExitStatus::from_wait),
            _ => None,
        };
        self.store.write(|tx| {
            // The daemon's worker may have recorded this exit already (with the same
            // status); whoever clears the record writes the exit event.
            if tx
                .instance(id)?
                .is_some_and(|i| i.pid == inst.pid && i.start_time == inst.start_time)
            {
                if kind == event::STOP {
                    record_exit(
                        tx,
                        id,
                        &svc,
                        &inst,
                        status.unwrap_or(ExitStatus::Unknown),
                        Then::Nothing,
                    )?;
                } else {
                    tx.clear_instance(id, &inst)?;
                }
            }
            tx.record(name, kind, &detail)
        })?;
        Ok(result)
    }

    /// Sends signal number `signal` to the service's main process (identity-checked).
    pub fn signal(&mut self, name: &str, signal: i32) -> Result<SignalOutcome> {
        let sig = nix::sys::signal::Signal::try_from(signal).map_err(|_| Error::Invalid {
            what: "signal",
            message: format!("unknown signal number {signal}"),
        })?;
        let sig_name = sig.as_str().trim_start_matches("SIG").to_string();
        let inst = self.store.read(|tx| {
            let (id, _) = lookup(tx, name)?;
            tx.instance(id)
        })?;
        let Some(inst) = inst else {
            return Ok(SignalOutcome::NotRunning);
        };
        let target = Target {
            pid: inst.pid,
            session: inst.pgid,
            start_time: inst.start_time,
            boot_id: &inst.boot_id,
        };
        let outcome = stop::signal(&target, &self.boot_id, sig).map_err(|e| Error::Stop {
            service: name.to_string(),
            message: e.to_string(),
        })?;
        match outcome {
            stop::Outcome::Stopped(_) => {
                self.store.write(|tx| {
                    tx.record(
                        name,
                        event::SIGNAL,
                        &format!("{sig_name} sent to pid {}", inst.pid),
                    )
                })?;
                Ok(SignalOutcome::Sent {
                    pid: inst.pid,
                    signal: sig_name,
                })
            }
            stop::Outcome::AlreadyExited | stop::Outcome::Stale(_) => {
                // Cleared (or left for the daemon) exactly as `status` would.
                self.clear_dead(name)?;
                Ok(SignalOutcome::NotRunning)
            }
        }
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

    /// Stops (if running) and starts again.
    pub fn restart(&mut self, name: &str) -> Result<(StopOutcome, StartOutcome)> {
        let stopped = self.stop(name)?;
        let started = self.start(name)?;
        Ok((stopped, started))
    }

    /// One service with its live instance; dead records are cleared on the way.
    pub fn status(&mut self, name: &str) -> Result<Status> {
        let seer = self.seer();
        let (svc, inst, runtime) = self.store.read(|tx| {
            let (id, svc) = lookup(tx, name)?;
            Ok((svc, tx.instance(id)?, tx.runtime(id)?))
        })?;
        let (instance, runtime) = match inst {
            Some(i) if seer.alive(&i) => (Some(i), runtime),
            Some(_) => self.clear_dead(name)?,
            None => (None, runtime),
        };
        Ok(Status {
            service: svc,
            instance,
            runtime,
            daemon: self.supervised(),
        })
    }

    /// All services, sorted by name; dead records are cleared on the way.
    pub fn list(&mut self) -> Result<Vec<Status>> {
        let seer = self.seer();
        let (services, mut instances, mut runtimes) = self
            .store
            .read(|tx| Ok((tx.services()?, tx.instances()?, tx.runtimes()?)))?;
        let mut out = Vec::with_capacity(services.len());
        for (id, svc) in services {
            let runtime = runtimes.remove(&id).unwrap_or_default();
            let (instance, runtime) = match instances.remove(&id) {
                Some(i) if seer.alive(&i) => (Some(i), runtime),
                Some(_) => self.clear_dead(&svc.name)?,
                None => (None, runtime),
            };
            out.push(Status {
                service: svc,
                instance,
                runtime,
                daemon: self.supervised(),
            });
        }
        Ok(out)
    }

    /// Names of all defined services, sorted.
    pub fn names(&mut self) -> Result<Vec<String>> {
        Ok(self.services()?.into_iter().map(|s| s.name).collect())
    }

    /// All definitions, sorted by name, without looking at processes.
    pub fn services(&mut self) -> Result<Vec<Service>> {
        Ok(self
            .store
            .read(|tx| tx.services())?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// The last `limit` events, oldest first.
    pub fn events(&mut self, name: Option<&str>, limit: u32) -> Result<Vec<Event>> {
        self.store.read(|tx| tx.events(name, limit))
    }

    /// Records the exit of process `(pid, start_time)` if it is a service's instance, and
    /// applies the restart policy unless the exit was asked for. `None`: not a service.
    pub fn on_exit(
        &mut self,
        pid: i32,
        start_time: u64,
        status: ExitStatus,
    ) -> Result<Option<Exit>> {
        // Most children the daemon reaps are not instances (intermediates of the double
        // fork, helpers): a read answers that without taking the write lock.
        if self
            .store
            .read(|tx| tx.instance_by_pid(pid, start_time))?
            .is_none()
        {
            return Ok(None);
        }
        self.store.write(|tx| {
            let Some((id, svc, inst)) = tx.instance_by_pid(pid, start_time)? else {
                return Ok(None);
            };
            Ok(Some(record_exit(
                tx,
                id,
                &svc,
                &inst,
                status,
                Then::Policy,
            )?))
        })
    }

    /// For a daemon coming up (or reloading): every recorded instance that is alive is
    /// adopted (returned with a handle, for watching, and recorded); every dead or stale
    /// one goes through the restart policy as an exit with unknown status. Instances for
    /// which `skip(pid)` holds (already watched, or children of the daemon) are left
    /// alone.
    pub fn adopt_all(&mut self, skip: &dyn Fn(i32) -> bool) -> Result<Adoption> {
        let boot = self.boot_id.clone();
        let mut handles = Vec::new();
        let (watches, exits) = self.store.write(|tx| {
            handles.clear();
            let mut watches = Vec::new();
            let mut exits = Vec::new();
            for (id, svc) in tx.services()? {
                let Some(inst) = tx.instance(id)? else {
                    continue;
                };
                if skip(inst.pid) {
                    continue;
                }
                match Handle::open(inst.pid, inst.start_time, &inst.boot_id, &boot) {
                    Found::Alive(h) => {
                        tx.record(&svc.name, event::ADOPTED, &format!("pid {}", inst.pid))?;
                        handles.push(h);
                        watches.push(Watch {
                            name: svc.name.clone(),
                            pid: inst.pid,
                            start_time: inst.start_time,
                        });
                    }
                    Found::Exited => {
                        exits.push(record_exit(
                            tx,
                            id,
                            &svc,
                            &inst,
                            ExitStatus::Unknown,
                            Then::Policy,
                        )?);
                    }
                    Found::Stale(why) => {
                        // It exited while nobody watched and its pid went to someone
                        // else: as much an exit as any, and the policy says what next.
                        tx.record(
                            &svc.name,
                            event::STALE,
                            &format!("pid {}: {why}; not signalled", inst.pid),
                        )?;
                        exits.push(record_exit(
                            tx,
                            id,
                            &svc,
                            &inst,
                            ExitStatus::Unknown,
                            Then::Policy,
                        )?);
                    }
                }
            }
            Ok((watches, exits))
        })?;
        Ok((handles.into_iter().zip(watches).collect(), exits))
    }

    /// Marks the service failed (an automatic restart could not even spawn it).
    pub fn give_up(&mut self, name: &str, reason: &str) -> Result<()> {
        self.store.write(|tx| {
            let (id, _) = lookup(tx, name)?;
            let mut rt = tx.runtime(id)?;
            rt.next_retry_at = None;
            rt.failed = Some(reason.to_string());
            tx.set_runtime(id, &rt)?;
            tx.record(name, event::FAILED, reason)
        })
    }

    /// Services with an automatic restart pending: (name, due unix ms).
    pub fn pending_restarts(&mut self) -> Result<Vec<(String, i64)>> {
        self.store.read(|tx| {
            let mut out = Vec::new();
            for (id, svc) in tx.services()? {
                if let Some(at) = tx.runtime(id)?.next_retry_at {
                    out.push((svc.name, at));
                }
            }
            Ok(out)
        })
    }

    /// Names of services marked `--autostart`.
    pub fn autostart_names(&mut self) -> Result<Vec<String>> {
        Ok(self
            .services()?
            .into_iter()
            .filter(|s| s.autostart)
            .map(|s| s.name)
            .collect())
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

    /// Re-checks `name`'s instance under the write lock and clears it if it is dead.
    /// Returns the live instance (if it came back to life meanwhile: a new start) and
    /// the bookkeeping as it is now.
    fn clear_dead(&mut self, name: &str) -> Result<(Option<Instance>, Runtime)> {
        let seer = self.seer();
        let mut notes = Vec::new();
        let out = self.store.write(|tx| {
            notes.clear();
            let (id, svc) = lookup(tx, name)?;
            let live = live_instance(tx, id, &svc, &seer, Then::Policy, &mut notes)?;
            Ok((live, tx.runtime(id)?))
        })?;
        self.notices.extend(notes);
        Ok(out)
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
    fn alive(&self, i: &Instance) -> bool {
        identity::check(i.pid, i.start_time, &i.boot_id, &self.boot) == identity::Liveness::Alive
    }

    /// The status of an exited instance, if our reaper saw it.
    fn status(&self, i: &Instance) -> ExitStatus {
        self.board
            .as_ref()
            .and_then(|b| b.get(i.pid, i.start_time))
            .map_or(ExitStatus::Unknown, ExitStatus::from_wait)
    }
}

/// The detail of a `stop` event.
fn stop_detail(svc: &Service, pid: i32, session: i32, s: &stop::Stopped) -> String {
    let mut d = if s.killed {
        format!(
            "pid {pid}: no exit within {} of {}; killed with KILL",
            fmt_duration(svc.stop_timeout),
            svc.stop_signal
        )
    } else {
        format!("pid {pid}: exited on {}", svc.stop_signal)
    };
    if s.others > 0 {
        d.push_str(&format!(
            "; {} other process(es) of the service stopped",
            s.others
        ));
    }
    if s.left_session {
        d.push_str(&format!(
            "; it had left session {session} (setsid), so it was stopped on its own with \
             whatever was proven to be the service's"
        ));
    }
    if s.left_alone > 0 {
        d.push_str(&format!(
            "; {} process(es) now in session/group {session} not proven to be the \
             service's (the number was reused?): left alone",
            s.left_alone
        ));
    }
    d
}

/// Records a new instance in the transaction of a start, unless another start won
/// meanwhile or the automatic restart was cancelled. No side effects: it may be retried.
fn commit_start(
    tx: &Tx,
    name: &str,
    inst: &Instance,
    origin: Origin,
    seer: &Seer,
    notes: &mut Vec<String>,
) -> Result<Commit> {
    let (id, svc) = lookup(tx, name)?;
    if let Some(live) = live_instance(tx, id, &svc, seer, Then::Nothing, notes)? {
        return Ok(Commit::Lost(StartOutcome::AlreadyRunning { pid: live.pid }));
    }
    let before = tx.runtime(id)?;
    if origin == Origin::Policy && before.next_retry_at.is_none() {
        return Ok(Commit::Lost(StartOutcome::NotDue));
    }
    let mut rt = before.clone();
    match origin {
        Origin::Request => {
            rt = Runtime {
                last_exit: rt.last_exit,
                last_exit_at: rt.last_exit_at,
                ..Runtime::default()
            };
        }
        Origin::Policy => {
            rt.restarts += 1;
            rt.next_retry_at = None;
            policy::prune_starts(
                &mut rt.recent_starts,
                svc.start_limit_interval,
                inst.started_at,
            );
        }
    }
    rt.recent_starts.push(inst.started_at);
    tx.set_runtime(id, &rt)?;
    tx.set_instance(id, inst)?;
    let (kind, detail) = match origin {
        Origin::Request => (
            event::START,
            format!("pid {} ({})", inst.pid, svc.command_line()),
        ),
        Origin::Policy => (
            event::RESTART,
            format!("pid {} (automatic restart {})", inst.pid, rt.restarts),
        ),
    };
    let event = tx.record_id(name, kind, &detail)?;
    Ok(Commit::Won(Undo {
        id,
        runtime: before,
        events: vec![event],
    }))
}

/// Clears the instance, records the exit and, unless it was asked for, what the restart
/// policy decides.
fn record_exit(
    tx: &Tx,
    id: i64,
    svc: &Service,
    inst: &Instance,
    status: ExitStatus,
    then: Then,
) -> Result<Exit> {
    let now = now_ms();
    tx.clear_instance(id, inst)?;
    let mut rt = tx.runtime(id)?;
    rt.last_exit = Some(status.to_string());
    rt.last_exit_at = Some(now);
    let requested = inst.stopping;
    tx.record(
        &svc.name,
        event::EXIT,
        &format!(
            "pid {}: {status}{}",
            inst.pid,
            if requested { " (stop requested)" } else { "" }
        ),
    )?;
    let decision = if requested || then == Then::Nothing {
        Decision::Leave
    } else {
        let uptime = Duration::from_millis((now - inst.started_at).max(0) as u64);
        policy::decide(svc, &rt, status, uptime, now)
    };
    let mut retry_at = None;
    match &decision {
        Decision::Leave => {}
        Decision::Restart { delay } => {
            rt.backoff_ms = delay.as_millis() as u64;
            let at = now + delay.as_millis() as i64;
            rt.next_retry_at = Some(at);
            retry_at = Some(at);
            tx.record(
                &svc.name,
                event::BACKOFF,
                &format!("restart {} in {}", rt.restarts + 1, fmt_duration(*delay)),
            )?;
        }
        Decision::Fail { reason } => {
            rt.next_retry_at = None;
            rt.failed = Some(reason.clone());
            tx.record(&svc.name, event::FAILED, reason)?;
        }
    }
    tx.set_runtime(id, &rt)?;
    Ok(Exit {
        name: svc.name.clone(),
        pgid: inst.pgid,
        requested,
        decision,
        retry_at,
    })
}

fn lookup(tx: &Tx, name: &str) -> Result<(i64, Service)> {
    tx.service(name)?
        .ok_or_else(|| Error::UnknownService(name.to_string()))
}

/// The service's instance if it is alive. A dead or stale record is cleared, logged,
/// noted and put through the restart policy (`then`), unless a daemon watches: then an
/// exit is left for it, since it knows the status. Must run in a write transaction.
fn live_instance(
    tx: &Tx,
    id: i64,
    svc: &Service,
    seer: &Seer,
    then: Then,
    notes: &mut Vec<String>,
) -> Result<Option<Instance>> {
    let Some(inst) = tx.instance(id)? else {
        return Ok(None);
    };
    let name = &svc.name;
    match identity::check(inst.pid, inst.start_time, &inst.boot_id, &seer.boot) {
        identity::Liveness::Alive => Ok(Some(inst)),
        identity::Liveness::Exited if seer.defer => Ok(None),
        identity::Liveness::Exited => {
            let status = seer.status(&inst);
            let seen = match status {
                ExitStatus::Unknown => format!("pid {} is gone (exit status unknown)", inst.pid),
                s => format!("pid {} exited ({s})", inst.pid),
            };
            record_exit(tx, id, svc, &inst, status, then)?;
            notes.push(format!("{name}: {seen}; record cleared"));
            Ok(None)
        }
        identity::Liveness::Stale(why) => {
            let detail = format!("pid {}: {why}; not signalled", inst.pid);
            tx.record(name, event::STALE, &detail)?;
            record_exit(tx, id, svc, &inst, ExitStatus::Unknown, then)?;
            notes.push(format!("{name}: {detail}; record cleared"));
            Ok(None)
        }
    }
}

/// Opens the files and resolves the program of a start (no fork yet).
fn prepare(svc: &Service) -> Result<spawn::Command> {
    let env = spawn::merged_env(&svc.env);
    spawn::Command::prepare(&spawn::Spec {
        argv: &svc.argv,
        cwd: &svc.cwd,
        env: &env,
        stdin: &svc.stdin,
        stdout: &svc.stdout,
        stderr: &svc.stderr,
    })
    .map_err(|e| start_error(&svc.name, e))
}

fn start_error(name: &str, e: SpawnError) -> Error {
    Error::Start {
        service: name.to_string(),
        message: e.to_string(),
    }
}

/// Checks a definition before it is stored. A program that cannot be found is only a
/// notice: it may be installed later, and `tend start` reports it clearly.
fn validate(svc: &Service, notices: &mut Vec<String>) -> Result<()> {
    service::validate_name(&svc.name)?;
    if svc.argv.is_empty() || svc.argv[0].is_empty() {
        return Err(Error::Invalid {
            what: "command",
            message: "no command given (use --cmd STRING or -- PROGRAM ARGS...)".into(),
        });
    }
    service::check_cwd(&svc.cwd)?;
    service::check_readable(&svc.stdin)?;
    service::check_writable("stdout", &svc.stdout)?;
    service::check_writable("stderr", &svc.stderr)?;
    let env = spawn::merged_env(&svc.env);
    let probe = spawn::Spec {
        argv: &svc.argv,
        cwd: &svc.cwd,
        env: &env,
        stdin: &svc.stdin,
        stdout: &svc.stdout,
        stderr: &svc.stderr,
    };
    if spawn::find_program(&probe).is_none() {
        notices.push(format!(
            "{}: warning: program {:?} not found; `tend start` will fail until it exists",
            svc.name, svc.argv[0]
        ));
    }
    Ok(())
}

fn apply(current: &Service, c: &Changes) -> Service {
    let mut s = current.clone();
    if let Some(v) = &c.argv {
        s.argv = v.clone();
    }
    if let Some(v) = &c.cwd {
        s.cwd = v.clone();
    }
    if let Some(v) = &c.stdin {
        s.stdin = v.clone();
    }
    if let Some(v) = &c.stdout {
        s.stdout = v.clone();
    }
    if let Some(v) = &c.stderr {
        s.stderr = v.clone();
    }
    for k in &c.unset_env {
        s.env.remove(k);
    }
    for (k, v) in &c.set_env {
        s.env.insert(k.clone(), v.clone());
    }
    if let Some(v) = c.stop_signal {
        s.stop_signal = v;
    }
    if let Some(v) = c.stop_timeout {
        s.stop_timeout = v;
    }
    if let Some(v) = c.restart {
        s.restart = v;
    }
    if let Some(v) = c.autostart {
        s.autostart = v;
    }
    if let Some(v) = c.restart_delay {
        s.restart_delay = v;
    }
    if let Some(v) = c.start_limit {
        s.start_limit = v;
    }
    if let Some(v) = c.start_limit_interval {
        s.start_limit_interval = v;
    }
    if let Some(v) = c.log_max_bytes {
        s.log_max_bytes = v;
    }
    s.updated_at = now_ms();
    s
}

fn diff(a: &Service, b: &Service) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, what| {
        if changed {
            out.push(what)
        }
    };
    check(a.argv != b.argv, "command");
    check(a.cwd != b.cwd, "cwd");
    check(a.stdin != b.stdin, "stdin");
    check(a.stdout != b.stdout, "stdout");
    check(a.stderr != b.stderr, "stderr");
    check(a.env != b.env, "env");
    check(a.stop_signal != b.stop_signal, "stop-signal");
    check(a.stop_timeout != b.stop_timeout, "stop-timeout");
    check(a.restart != b.restart, "restart");
    check(a.autostart != b.autostart, "autostart");
    check(a.restart_delay != b.restart_delay, "restart-delay");
    check(a.start_limit != b.start_limit, "start-limit");
    check(
        a.start_limit_interval != b.start_limit_interval,
        "start-limit-interval",
    );
    check(a.log_max_bytes != b.log_max_bytes, "log-max-size");
    out
}
