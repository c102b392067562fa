//! start / stop / restart / status on top of the store and the process module.
//!
//! This is the one code path: whoever asks (the CLI today; the daemon and the NOTIFY
//! listener later) calls these functions, so behaviour never depends on the transport.
//!
//! Every function re-reads the truth from the database and checks recorded processes by
//! identity before acting on them. A record that no longer describes a live process of
//! ours is cleared, logged as an event, and reported through [`Supervisor::take_notices`];
//! its PID is never signalled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::home::Home;
use crate::policy::{self, Decision, ExitStatus};
use crate::process::identity::{self, Liveness};
use crate::process::spawn::{self, SpawnError};
use crate::process::stop::{self, Target};
use crate::service::{self, Service};
use crate::store::{now_ms, Event, Instance, Runtime, Store, Tx};

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
    /// A NOTIFY payload was refused (malformed, unsigned, unknown service...).
    pub const REJECTED: &str = "rejected";
    /// The record did not describe a process of ours (recycled PID, earlier boot).
    pub const STALE: &str = "stale-cleared";
}

/// A service with its running instance, if any, and its restart bookkeeping.
#[derive(Clone, Debug)]
pub struct Status {
    pub service: Service,
    pub instance: Option<Instance>,
    pub runtime: Runtime,
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
    pub pgid: i32,
    /// The exit was asked for by a stop.
    pub requested: bool,
    pub decision: Decision,
    /// Unix ms when a restart is due.
    pub retry_at: Option<i64>,
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
    },
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
    /// Held from spawn to commit in the daemon, and by its reaper before it reaps: a
    /// child is then never reaped before its instance is recorded.
    spawn_lock: Option<Arc<Mutex<()>>>,
    /// A daemon runs for this home and is not us: records of exited processes are left
    /// for it to clear, since it knows their exit status and applies the restart policy.
    defer_exits: bool,
}

impl Supervisor {
    /// Creates the home if needed and opens its database.
    pub fn open(home: Home) -> Result<Supervisor> {
        home.ensure()?;
        let store = Store::open(&home.db_path())?;
        let boot_id = identity::boot_id().map_err(|e| Error::Io {
            path: "/proc/sys/kernel/random/boot_id".into(),
            reason: crate::error::io_reason(&e),
        })?;
        let defer_exits = crate::daemon::client::daemon_holds_lock(&home);
        Ok(Supervisor {
            home,
            store,
            boot_id,
            notices: Vec::new(),
            spawn_lock: None,
            defer_exits,
        })
    }

    /// The daemon's own supervisors: they share its spawn lock and handle exits.
    pub fn for_daemon(mut self, spawn_lock: Arc<Mutex<()>>) -> Supervisor {
        self.spawn_lock = Some(spawn_lock);
        self.defer_exits = false;
        self
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
        let boot = self.boot_id.clone();
        let defer = self.defer_exits;
        let mut notes = Vec::new();
        let (_, current) = self.store.read(|tx| lookup(tx, name))?;
        let updated = apply(&current, changes);
        validate(&updated, &mut self.notices)?;
        let changed = diff(&current, &updated);
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
            Ok(live_instance(tx, id, name, &boot, defer, &mut notes)?.is_some())
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
        let boot = self.boot_id.clone();
        let defer = self.defer_exits;
        let mut notes = Vec::new();
        self.store.write(|tx| {
            notes.clear();
            let (id, _) = lookup(tx, name)?;
            if live_instance(tx, id, name, &boot, defer, &mut notes)?.is_some() {
                return Err(Error::Running(name.to_string()));
            }
            tx.delete_service(id)?;
            tx.record(name, event::REMOVED, "")
        })?;
        self.notices.extend(notes);
        Ok(stopped)
    }

    /// Starts the service unless it is already running. Serialized by the write lock, so
    /// concurrent starts of one service start exactly one instance. Clears a `failed`
    /// mark and any pending automatic restart.
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
        let boot = self.boot_id.clone();
        let defer = self.defer_exits;
        let mut notes = Vec::new();
        let lock = self.spawn_lock.clone();
        let _guard = lock
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()));
        let out = self.store.write(|tx| {
            notes.clear();
            let (id, svc) = lookup(tx, name)?;
            if let Some(inst) = live_instance(tx, id, name, &boot, defer, &mut notes)? {
                return Ok(StartOutcome::AlreadyRunning { pid: inst.pid });
            }
            if origin == Origin::Policy && tx.runtime(id)?.next_retry_at.is_none() {
                return Ok(StartOutcome::NotDue);
            }
            let spawned = spawn_service(&svc)?;
            let started_at = now_ms();
            let mut rt = tx.runtime(id)?;
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
                        started_at,
                    );
                }
            }
            rt.recent_starts.push(started_at);
            tx.set_runtime(id, &rt)?;
            let kind = match origin {
                Origin::Request => event::START,
                Origin::Policy => event::RESTART,
            };
            // A zombie still has its start time; only a process already reaped by
            // someone else (possible only without a daemon) is truly gone.
            let ident = match identity::stat(spawned.pid) {
                Ok(Some(s)) => s,
                _ => {
                    tx.record(name, kind, &format!("pid {}", spawned.pid))?;
                    tx.record(name, event::EXIT, "exited immediately after exec")?;
                    return Ok(StartOutcome::ExitedAtOnce { pid: spawned.pid });
                }
            };
            let inst = Instance {
                pid: spawned.pid,
                pgid: spawned.pgid,
                start_time: ident.start_time,
                boot_id: boot.clone(),
                started_at,
                stopping: false,
            };
            let detail = match origin {
                Origin::Request => format!("pid {} ({})", inst.pid, svc.command_line()),
                Origin::Policy => format!("pid {} (automatic restart {})", inst.pid, rt.restarts),
            };
            let recorded = tx
                .set_instance(id, &inst)
                .and_then(|()| tx.record(name, kind, &detail));
            if let Err(e) = recorded {
                // A running service nobody knows about would be started twice next time:
                // take it down again. It is ours (we just spawned it), so this is safe.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(inst.pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(Error::Start {
                    service: name.to_string(),
                    message: format!("started, but could not record the pid ({e}); killed it"),
                });
            }
            Ok(StartOutcome::Started { pid: inst.pid })
        })?;
        self.notices.extend(notes);
        Ok(out)
    }

    /// Stops the service if it runs: stop signal to its group, wait, SIGKILL.
    /// A person's stop also cancels a pending automatic restart and clears `failed`.
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
        let Some(inst) = inst else {
            return Ok(StopOutcome::NotRunning);
        };
        // The wait happens outside any transaction: a 10 s stop must not hold the
        // database lock against every other tend command.
        let target = Target {
            pid: inst.pid,
            pgid: inst.pgid,
            start_time: inst.start_time,
            boot_id: &inst.boot_id,
        };
        let outcome = stop::stop(&target, &self.boot_id, svc.stop_signal.0, svc.stop_timeout)
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
            stop::Outcome::Stopped { killed, took } => (
                event::STOP,
                if *killed {
                    format!(
                        "pid {}: no exit within {} of {}; killed with KILL",
                        inst.pid,
                        fmt_duration(svc.stop_timeout),
                        svc.stop_signal
                    )
                } else {
                    format!("pid {}: exited on {}", inst.pid, svc.stop_signal)
                },
                StopOutcome::Stopped {
                    pid: inst.pid,
                    killed: *killed,
                    took: *took,
                },
            ),
        };
        if kind != event::STOP {
            self.notices
                .push(format!("{name}: {detail}; record cleared"));
        }
        if kind == event::STOP && self.spawn_lock.is_some() {
            // In the daemon, its loop sees this exit too (by reaping the child, or by the
            // pidfd of an adopted process) and records the exit status. Give it the
            // moment it needs, so the record is cleared there, with the status, and not
            // here without it.
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while std::time::Instant::now() < deadline
                && self
                    .store
                    .read(|tx| tx.instance(id))?
                    .is_some_and(|i| i.pid == inst.pid && i.start_time == inst.start_time)
            {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        self.store.write(|tx| {
            // The daemon's reaper may have cleared the record already; the stop still
            // happened and is recorded either way.
            if tx.clear_instance(id, &inst)? || kind == event::STOP {
                tx.record(name, kind, &detail)?;
            }
            Ok(())
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
            pgid: inst.pgid,
            start_time: inst.start_time,
            boot_id: &inst.boot_id,
        };
        let outcome = stop::signal(&target, &self.boot_id, sig).map_err(|e| Error::Stop {
            service: name.to_string(),
            message: e.to_string(),
        })?;
        match outcome {
            stop::Outcome::Stopped { .. } => {
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

    /// One service with its live instance; stale records are cleared on the way.
    pub fn status(&mut self, name: &str) -> Result<Status> {
        let (svc, inst, runtime) = self.store.read(|tx| {
            let (id, svc) = lookup(tx, name)?;
            Ok((svc, tx.instance(id)?, tx.runtime(id)?))
        })?;
        let instance = match inst {
            Some(i) if self.alive(&i) => Some(i),
            Some(_) => self.clear_dead(name)?,
            None => None,
        };
        Ok(Status {
            service: svc,
            instance,
            runtime,
        })
    }

    /// All services, sorted by name; stale records are cleared on the way.
    pub fn list(&mut self) -> Result<Vec<Status>> {
        let (services, mut instances, mut runtimes) = self
            .store
            .read(|tx| Ok((tx.services()?, tx.instances()?, tx.runtimes()?)))?;
        let mut out = Vec::with_capacity(services.len());
        for (id, svc) in services {
            let instance = match instances.remove(&id) {
                Some(i) if self.alive(&i) => Some(i),
                Some(_) => self.clear_dead(&svc.name)?,
                None => None,
            };
            out.push(Status {
                service: svc,
                instance,
                runtime: runtimes.remove(&id).unwrap_or_default(),
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
        self.store.write(|tx| {
            let Some((id, svc, inst)) = tx.instance_by_pid(pid, start_time)? else {
                return Ok(None);
            };
            Ok(Some(record_exit(tx, id, &svc, &inst, status)?))
        })
    }

    /// For a daemon coming up: every recorded instance that is alive is adopted (returned
    /// for watching, and recorded); every dead one is handled as an exit with unknown
    /// status. Returns the watches and the exits. Instances for which `skip(pid)` holds
    /// (already watched, or children of the daemon) are left alone.
    pub fn adopt_all(&mut self, skip: &dyn Fn(i32) -> bool) -> Result<(Vec<Watch>, Vec<Exit>)> {
        let boot = self.boot_id.clone();
        self.store.write(|tx| {
            let mut watches = Vec::new();
            let mut exits = Vec::new();
            for (id, svc) in tx.services()? {
                let Some(inst) = tx.instance(id)? else {
                    continue;
                };
                match identity::check(inst.pid, inst.start_time, &inst.boot_id, &boot) {
                    Liveness::Alive if skip(inst.pid) => {}
                    Liveness::Alive => {
                        tx.record(&svc.name, event::ADOPTED, &format!("pid {}", inst.pid))?;
                        watches.push(Watch {
                            name: svc.name.clone(),
                            pid: inst.pid,
                            start_time: inst.start_time,
                        });
                    }
                    Liveness::Exited => {
                        exits.push(record_exit(tx, id, &svc, &inst, ExitStatus::Unknown)?);
                    }
                    Liveness::Stale(why) => {
                        tx.clear_instance(id, &inst)?;
                        tx.record(
                            &svc.name,
                            event::STALE,
                            &format!("pid {}: {why}; not signalled", inst.pid),
                        )?;
                    }
                }
            }
            Ok((watches, exits))
        })
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

    fn alive(&self, i: &Instance) -> bool {
        identity::check(i.pid, i.start_time, &i.boot_id, &self.boot_id) == Liveness::Alive
    }

    /// Re-checks `name`'s instance under the write lock and clears it if it is dead.
    fn clear_dead(&mut self, name: &str) -> Result<Option<Instance>> {
        let boot = self.boot_id.clone();
        let defer = self.defer_exits;
        let mut notes = Vec::new();
        let live = self.store.write(|tx| {
            notes.clear();
            let (id, _) = lookup(tx, name)?;
            live_instance(tx, id, name, &boot, defer, &mut notes)
        })?;
        self.notices.extend(notes);
        Ok(live)
    }
}

/// Clears the instance, records the exit and, unless it was asked for, what the restart
/// policy decides.
fn record_exit(
    tx: &Tx,
    id: i64,
    svc: &Service,
    inst: &Instance,
    status: ExitStatus,
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
    let decision = if requested {
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

/// The service's instance if it is alive; a dead or stale record is cleared, logged and
/// noted. Must run in a write transaction.
fn live_instance(
    tx: &Tx,
    id: i64,
    name: &str,
    boot: &str,
    defer_exits: bool,
    notes: &mut Vec<String>,
) -> Result<Option<Instance>> {
    let Some(inst) = tx.instance(id)? else {
        return Ok(None);
    };
    let (kind, detail) = match identity::check(inst.pid, inst.start_time, &inst.boot_id, boot) {
        Liveness::Alive => return Ok(Some(inst)),
        Liveness::Exited if defer_exits => return Ok(None),
        Liveness::Exited => (
            event::EXIT,
            format!("pid {} is gone (exit status unknown)", inst.pid),
        ),
        Liveness::Stale(why) => (
            event::STALE,
            format!("pid {}: {why}; not signalled", inst.pid),
        ),
    };
    tx.clear_instance(id, &inst)?;
    tx.record(name, kind, &detail)?;
    notes.push(format!("{name}: {detail}; record cleared"));
    Ok(None)
}

fn spawn_service(svc: &Service) -> Result<spawn::Spawned> {
    let fail = |e: SpawnError| Error::Start {
        service: svc.name.clone(),
        message: e.to_string(),
    };
    let env = spawn::merged_env(&svc.env);
    let cmd = spawn::Command::prepare(&spawn::Spec {
        argv: &svc.argv,
        cwd: &svc.cwd,
        env: &env,
        stdin: &svc.stdin,
        stdout: &svc.stdout,
        stderr: &svc.stderr,
    })
    .map_err(fail)?;
    cmd.spawn().map_err(fail)
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

/// `10s`, `1.5s`, `250ms`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}
