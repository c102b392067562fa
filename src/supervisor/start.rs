//! Starting a service: check, spawn once (held at the gate), record, release, and be
//! honest about a process already gone. See the module documentation of
//! [`crate::supervisor`].

use super::instances::{live_instance, lookup, record_exit};
use super::{Seer, StartOutcome, Supervisor, Then, STATUS_WAIT};
use crate::error::{Error, Result, SpawnError};
use crate::policy::ExitStatus;
use crate::process::handle::Handle;
use crate::process::signals::Deferred;
use crate::process::spawn;
use crate::record::{event, now_ms, Instance, Runtime};
use crate::service::Service;
use crate::state;
use crate::store::Tx;

impl Supervisor {
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
}

/// Who asked for a start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// A person or a command (CLI, control socket, NOTIFY): clears failed and backoff.
    Request,
    /// The daemon's restart policy.
    Policy,
}

/// What the first look before a start found.
pub(super) enum Check {
    Go(Box<Service>),
    Done(StartOutcome),
}

/// What recording a new instance found.
pub(super) enum Commit {
    /// Recorded; how to take it back if exec then fails.
    Won(Undo),
    /// Another start won meanwhile, or the automatic restart was cancelled.
    Lost(StartOutcome),
}

/// The rows a committed start wrote, so an exec failure can restore the state exactly.
pub(super) struct Undo {
    id: i64,
    runtime: Runtime,
    events: Vec<i64>,
}

/// Records a new instance in the transaction of a start, unless another start won
/// meanwhile or the automatic restart was cancelled. No side effects: it may be retried.
pub(super) fn commit_start(
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
    let rt = match origin {
        Origin::Request => state::started_by_request(&before, inst.started_at),
        Origin::Policy => {
            state::restarted(&before, svc.settings.start_limit_interval, inst.started_at)
        }
    };
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

/// Calls `f` with what spawning the service would be given (its environment merged
/// onto ours).
pub(super) fn with_spec<T>(svc: &Service, f: impl FnOnce(&spawn::Spec) -> T) -> T {
    let env = spawn::merged_env(&svc.env);
    f(&spawn::Spec {
        argv: &svc.argv,
        cwd: &svc.settings.cwd,
        env: &env,
        stdin: &svc.settings.stdin,
        stdout: &svc.settings.stdout,
        stderr: &svc.settings.stderr,
    })
}

/// Opens the files and resolves the program of a start (no fork yet).
pub(super) fn prepare(svc: &Service) -> Result<spawn::Prepared> {
    with_spec(svc, spawn::Prepared::prepare).map_err(|e| start_error(&svc.name, e))
}

pub(super) fn start_error(name: &str, source: SpawnError) -> Error {
    Error::Start {
        service: name.to_string(),
        source,
    }
}
