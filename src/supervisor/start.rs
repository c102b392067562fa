//! Starting a service: check, spawn once (held at the gate), record, release, and be
//! honest about a process already gone. See the module documentation of
//! [`crate::supervisor`].

use std::collections::BTreeMap;

use super::instances::{live_instance, lookup, record_exit};
use super::{Seer, StartOutcome, Supervisor, Then, STATUS_WAIT};
use crate::error::{Error, Result, SpawnError};
use crate::logwriter;
use crate::policy::ExitStatus;
use crate::process::cgroup::Cgroup;
use crate::process::handle::Handle;
use crate::process::identity::Liveness;
use crate::process::signals::Deferred;
use crate::process::spawn;
use crate::process::writer::{LogPipes, Writer};
use crate::record::{event, now_ms, Instance, Runtime};
use crate::service::execution::Resource;
use crate::service::{files, LogTimestamps, Service};
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
                match seer.check(&inst) {
                    Liveness::Alive => {
                        return Ok(Check::Done(StartOutcome::AlreadyRunning { pid: inst.pid }))
                    }
                    // A second copy must never start beside one that may still run.
                    Liveness::Unknown(reason) => {
                        return Err(Error::LivenessUnknown {
                            service: name.to_string(),
                            pid: inst.pid,
                            reason,
                            what: NOT_STARTED,
                        })
                    }
                    Liveness::Exited | Liveness::Stale(_) => {}
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
        let mut pipes = log_pipes(&svc)?;
        let leaf = self.new_instance_cgroup(&svc)?;
        let cmd = match self.prepare(&svc, leaf.as_ref(), pipes.as_ref()) {
            Ok(cmd) => cmd,
            Err(e) => {
                if let Some(l) = &leaf {
                    let _ = l.remove();
                }
                // Its new cgroup may have been taken by a concurrent start that won.
                if let Some(pid) = self.running_pid(name, &seer)? {
                    return Ok(StartOutcome::AlreadyRunning { pid });
                }
                return Err(e);
            }
        };
        // The new cgroup is removed if the start does not go ahead.
        let mut leaf_guard = LeafGuard(leaf.clone());
        // A `log` readiness check looks only at what this instance writes: where its log
        // ends now is recorded with the instance.
        let log_from = match svc.settings.ready.as_ref().map(|p| &p.check) {
            Some(crate::service::probe::Check::Log { .. }) => {
                Some(crate::probe::log_mark(&svc.settings.stdout))
            }
            _ => None,
        };
        // From before the fork until exec: a Ctrl-C, SIGTERM or hang-up meanwhile is
        // carried out afterwards, when the instance is recorded and running.
        let _deferred = Deferred::new();
        // The log writer first, so that the service's first line has a reader. Killed
        // again (dropped) unless the start is recorded.
        let writer = match pipes.as_mut() {
            Some(p) => {
                let cfg = writer_config(&svc, p.err_w.is_some(), self.writers_cgroup());
                Some(Writer::spawn(p, &cfg.to_args()).map_err(|e| start_error(&svc.name, e))?)
            }
            None => None,
        };
        let pending = match cmd.spawn() {
            Ok(p) => p,
            Err(e) => {
                // A concurrent start that won its record kills what other starts of the
                // service hold in their cgroups (it cannot tell them from leftovers of an
                // earlier instance): then the service runs, which is what was asked.
                if let Some(pid) = self.running_pid(name, &seer)? {
                    return Ok(StartOutcome::AlreadyRunning { pid });
                }
                return Err(start_error(&svc.name, e));
            }
        };
        let inst = Instance {
            pid: pending.pid(),
            pgid: pending.session(),
            start_time: pending.start_time(),
            boot_id: self.boot_id.clone(),
            started_at: now_ms(),
            stopping: false,
            cgroup: leaf.as_ref().map(|l| l.path.display().to_string()),
            launching: svc.settings.pidfile.0.is_some() && leaf.is_some(),
        };
        let mut notes = Vec::new();
        // No side effect in here: it may run more than once. `pending` is dropped (and
        // the held process killed before exec) on any error.
        let undo = match self.store.write(|tx| {
            notes.clear();
            let c = commit_start(tx, name, &inst, origin, &seer, &mut notes)?;
            if let (Commit::Won(undo), Some(at)) = (&c, log_from) {
                tx.set_log_from(undo.id, &inst, at)?;
            }
            Ok(c)
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
        leaf_guard.0 = None;
        if let Some(w) = writer {
            w.keep();
        }
        if let Some(l) = &leaf {
            // The start is recorded: whatever an earlier instance left behind goes now,
            // before the new one can compete with it for ports and files.
            self.kill_earlier(name, l);
        }
        let started = match pending.release() {
            Ok(s) => s,
            Err(e) => {
                // Its start event is deleted: nobody hears of it.
                self.store.drop_held();
                self.undo_start(&inst, &undo);
                if let Some(l) = &leaf {
                    l.wait_empty(std::time::Duration::from_secs(1));
                    let _ = l.remove();
                }
                return Err(start_error(&svc.name, e));
            }
        };
        if let (Some(pidfile), Some(l)) = (&svc.settings.pidfile.0, &leaf) {
            // The service starts when the process it daemonizes is taken over (that
            // start is told then), not when its first process runs.
            self.store.drop_held();
            return self.follow_fork(undo.id, &svc, &inst, &started.handle, l, pidfile);
        }
        // Exec succeeded: the start stands, and is told (to the daemon's hooks).
        self.store.release_held();
        // `start` confirms exec. If the process is already gone by now, say so.
        if started.handle.exited() {
            let word = self.fresh_exit_word(&started.handle);
            let status = word.map(ExitStatus::from_wait);
            match (&self.ctx.board, &self.ctx.exits, word) {
                // The daemon's loop reaped it, maybe before the record existed: hand the
                // exit back to the worker, which records it unless it did already.
                (Some(_), Some(sink), Some(word)) => sink(inst.pid, inst.start_time, word),
                // Not reaped yet: the worker gets it from the loop, after the commit.
                (Some(_), _, _) => {}
                // Without a daemon nobody else will ever know this status.
                (None, _, _) => {
                    self.exit_seen(undo.id, &inst, status.unwrap_or(ExitStatus::Unknown))?
                }
            }
            return Ok(StartOutcome::ExitedAtOnce {
                pid: inst.pid,
                status: status.map(|s| s.to_string()),
                stopped: self.stopped_by_request(name, &inst)?,
            });
        }
        Ok(StartOutcome::Started { pid: inst.pid })
    }

    /// Whether the instance `inst` of `name` ended because a stop asked for it: the record
    /// is still there and marked stopping, or the stop that cleared it recorded its exit
    /// as asked for.
    fn stopped_by_request(&mut self, name: &str, inst: &Instance) -> Result<bool> {
        self.store.read(|tx| {
            let (id, _) = lookup(tx, name)?;
            if let Some(now) = tx.instance(id)? {
                return Ok(now.pid == inst.pid
                    && now.start_time == inst.start_time
                    && now.stopping);
            }
            let about = format!("pid {}:", inst.pid);
            Ok(tx.events(Some(name), 20)?.iter().any(|e| {
                e.detail.starts_with(&about)
                    && (e.kind == event::STOP
                        || (e.kind == event::EXIT && e.detail.ends_with("(stop requested)")))
            }))
        })
    }

    /// The pid of the service's recorded instance, if it is alive.
    fn running_pid(&mut self, name: &str, seer: &Seer) -> Result<Option<i32>> {
        self.store.read(|tx| {
            let (id, _) = lookup(tx, name)?;
            Ok(tx.instance(id)?.filter(|i| seer.alive(i)).map(|i| i.pid))
        })
    }

    /// The exit status of a process we just started and found exited: we are its parent
    /// (a subreaper), so the CLI reaps it itself; in the daemon its loop does, and posts.
    pub(super) fn fresh_exit_status(&self, h: &Handle) -> Option<ExitStatus> {
        self.fresh_exit_word(h).map(ExitStatus::from_wait)
    }

    /// [`Supervisor::fresh_exit_status`] as the `waitpid` status word.
    fn fresh_exit_word(&self, h: &Handle) -> Option<i32> {
        match &self.ctx.board {
            Some(board) => board.wait_for(h.pid(), h.start_time(), STATUS_WAIT),
            None => h.try_reap(),
        }
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
    pub(super) fn exit_seen(&mut self, id: i64, inst: &Instance, status: ExitStatus) -> Result<()> {
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

/// What a start refused for an instance whose check could not be made did not do.
const NOT_STARTED: &str = "not started: a second copy must not run beside it";

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
    if let Some(live) =
        live_instance(tx, id, &svc, seer, Then::Nothing, notes)?.known(name, NOT_STARTED)?
    {
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
    let mut facts = serde_json::Map::new();
    facts.insert("pid".into(), inst.pid.into());
    let event = tx.record_facts(name, kind, &detail, facts)?;
    // Told once exec succeeded; an exec that fails takes the event back.
    tx.hold_events();
    Ok(Commit::Won(Undo {
        id,
        runtime: before,
        events: vec![event],
    }))
}

/// Calls `f` with what spawning the service would be given (its environment merged
/// onto ours; `file_env`, read from its env file, under its own `--env` values).
pub(super) fn with_spec<T>(
    svc: &Service,
    file_env: &BTreeMap<String, String>,
    setup: &spawn::Setup,
    cgroup: Option<&Cgroup>,
    pipes: Option<&LogPipes>,
    f: impl FnOnce(&spawn::Spec) -> T,
) -> T {
    let env = service_env(svc, file_env, setup);
    f(&spawn::Spec {
        argv: &svc.argv,
        cwd: &svc.settings.cwd,
        env: &env,
        stdin: &svc.settings.stdin,
        stdout: &svc.settings.stdout,
        stderr: &svc.settings.stderr,
        cgroup,
        pipes,
        setup,
    })
}

/// The environment of the service (and of its `cmd` checks): tend's own; over it HOME,
/// USER, LOGNAME and SHELL of the user it runs as (as systemd's `User=` sets them); over
/// those its env file (`file_env`), and its own `--env` values last.
pub(super) fn service_env(
    svc: &Service,
    file_env: &BTreeMap<String, String>,
    setup: &spawn::Setup,
) -> Vec<(String, String)> {
    let account: Vec<(String, String)> = setup
        .credentials
        .as_ref()
        .map(|c| c.env.clone())
        .unwrap_or_default();
    spawn::merged_env(
        account
            .iter()
            .map(|(k, v)| (k, v))
            .chain(file_env.iter())
            .chain(svc.env.iter()),
    )
}

/// The process settings of `svc`, resolved for the child (user and group looked up
/// now, at every start, so a changed passwd entry takes effect on restart).
pub(super) fn setup_of(svc: &Service) -> std::result::Result<spawn::Setup, SpawnError> {
    let s = &svc.settings;
    let limits = [
        (Resource::Nofile, s.limit_nofile),
        (Resource::Nproc, s.limit_nproc),
        (Resource::Core, s.limit_core),
        (Resource::Memlock, s.limit_memlock),
    ]
    .into_iter()
    .filter_map(|(r, l)| Some((r, l.0?)))
    .collect();
    Ok(spawn::Setup {
        umask: s.umask.0,
        limits,
        nice: s.nice.0,
        oom_score_adj: s.oom_score_adj.0,
        credentials: spawn::Credentials::resolve(s.user.0.as_deref(), s.group.0.as_deref())?,
    })
}

/// The pipes to the log writer of a `--log-timestamps` service: one when stderr shares
/// stdout's file untagged, else two (a tag or a file of its own needs to know the stream).
fn log_pipes(svc: &Service) -> Result<Option<LogPipes>> {
    let s = &svc.settings;
    if s.log_timestamps == LogTimestamps::Off {
        return Ok(None);
    }
    let two = s.log_timestamps == LogTimestamps::Stream || s.stderr != s.stdout;
    LogPipes::new(two)
        .map(Some)
        .map_err(|e| start_error(&svc.name, e))
}

/// The log writer's settings for `svc`: its files, and the same rotation size and
/// number of backups as the daemon's rotation.
pub(super) fn writer_config(
    svc: &Service,
    err_pipe: bool,
    cgroup: Option<std::path::PathBuf>,
) -> logwriter::Config {
    let s = &svc.settings;
    logwriter::Config {
        prefix: match s.log_timestamps {
            LogTimestamps::Stream => logwriter::Prefix::TimeAndStream,
            _ => logwriter::Prefix::Time,
        },
        out: s.stdout.clone(),
        err: s.stderr.clone(),
        err_pipe,
        max_bytes: s.log_max_bytes,
        backups: crate::service::LOG_BACKUPS,
        cgroup,
    }
}

impl Supervisor {
    /// Opens the files and resolves the program of a start (no fork yet). The env file
    /// is read now, at every start, so a changed secret takes effect on restart. Last,
    /// and so right before the spawn, it asks whether whoever wanted the start still
    /// does (see [`super::Context::proceed`]): nothing after this can wait on anything.
    fn prepare(
        &self,
        svc: &Service,
        cgroup: Option<&Cgroup>,
        pipes: Option<&LogPipes>,
    ) -> Result<spawn::Prepared> {
        let file_env = read_env_file(svc)?;
        let setup = setup_of(svc).map_err(|e| start_error(&svc.name, e))?;
        let prepared = with_spec(
            svc,
            &file_env,
            &setup,
            cgroup,
            pipes,
            spawn::Prepared::prepare,
        )
        .map_err(|e| start_error(&svc.name, e))?;
        if !self.proceed() {
            return Err(Error::Withdrawn {
                service: svc.name.clone(),
            });
        }
        Ok(prepared)
    }
}

/// The most an env file may hold: far beyond any list of variables (the kernel allows a
/// program 2 MiB of arguments and environment together), and reading is bounded.
pub const ENV_FILE_CAP: u64 = 1 << 20;

/// The variables of the service's env file (dotenv rules: `KEY=VALUE`, quotes, `#`
/// comments, `export` prefixes); none without one. Read without blocking and only if it
/// is a regular file of at most [`ENV_FILE_CAP`] (see [`crate::service::files`]).
pub(super) fn read_env_file(svc: &Service) -> Result<BTreeMap<String, String>> {
    let Some(path) = &svc.settings.env_file else {
        return Ok(BTreeMap::new());
    };
    let err = |reason: String| Error::EnvFile {
        service: svc.name.clone(),
        path: path.clone(),
        reason,
    };
    let text = files::read_regular(path, ENV_FILE_CAP).map_err(|e| err(e.to_string()))?;
    let mut out = BTreeMap::new();
    for item in dotenvy::from_read_iter(&text[..]) {
        let (k, v) = item.map_err(|e| err(env_file_reason(&e)))?;
        out.insert(k, v);
    }
    Ok(out)
}

fn env_file_reason(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::Io(io) => crate::error::io_reason(io),
        dotenvy::Error::LineParse(line, at) => format!("cannot parse {line:?} (at {at})"),
        other => other.to_string(),
    }
}

/// Removes an instance's new cgroup unless disarmed (`.0 = None`) once the start is
/// recorded. The process in it is killed first by dropping its `Pending`, which happens
/// before this guard is dropped (it is declared later).
struct LeafGuard(Option<Cgroup>);

impl Drop for LeafGuard {
    fn drop(&mut self) {
        if let Some(l) = self.0.take() {
            l.wait_empty(std::time::Duration::from_secs(1));
            let _ = l.remove();
        }
    }
}

pub(super) fn start_error(name: &str, source: SpawnError) -> Error {
    Error::Start {
        service: name.to_string(),
        source,
    }
}
