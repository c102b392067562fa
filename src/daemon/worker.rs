//! The daemon's supervision worker: one thread that does, in order, everything the event
//! loop learns about and that needs the database: recording exits and deciding restarts,
//! killing what a crashed service left behind, carrying out due restarts, adopting
//! running services, autostart. The loop itself never waits for it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::bus::{Msg, Waker};
use crate::policy::{Decision, ExitStatus};
use crate::process::handle::Handle;
use crate::record::event;
use crate::supervisor::writers::Revived;
use crate::supervisor::{Exit, StartOutcome, Supervisor, Watch};

/// Work for the worker, from the event loop.
pub enum Job {
    /// Adopt what runs, schedule pending restarts, autostart; then tell the loop.
    Startup,
    /// A child of the daemon was reaped with this `waitpid` status.
    Exit {
        pid: i32,
        start_time: u64,
        status: i32,
    },
    /// An adopted service exited (its pidfd became readable); the handle still pins it.
    AdoptedExit { handle: Handle, watch: Watch },
    /// A pending automatic restart is due.
    Restart(String),
    /// Re-read pending restarts (a request changed them).
    Sync,
    /// Adopt running services not watched yet (SIGHUP, `tend daemon reload`).
    Reload,
    /// Look at the recorded instances again: some could not be checked or watched, or an
    /// exit could not be matched.
    AdoptAgain,
    /// The loop could not watch this adopted pid after all: forget it was handed over.
    NotWatched { pid: i32 },
    /// A child of the daemon ended (it may have been the last process of a service's log
    /// writer): bring back the writers that are gone. Sent through
    /// [`WorkerHandle::check_writers`].
    Writers,
}

/// The loop's end: sends jobs and counts those not finished yet.
#[derive(Clone)]
pub struct WorkerHandle {
    tx: mpsc::Sender<Job>,
    outstanding: Arc<AtomicUsize>,
    /// A [`Job::Writers`] is queued and not begun: a second would find nothing the first
    /// will not (it looks after every exit so far).
    writers_queued: Arc<AtomicBool>,
}

impl WorkerHandle {
    pub fn send(&self, job: Job) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(job).is_err() {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            error!("the supervision worker is gone");
        }
    }

    /// Jobs sent and not finished.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Queues a [`Job::Writers`] unless one is queued and not begun yet.
    pub fn check_writers(&self) {
        if !self.writers_queued.swap(true, Ordering::SeqCst) {
            self.send(Job::Writers);
        }
    }
}

/// The worker's queue: its handle (for the loop, and for the supervisors' exit sink,
/// which exist before the worker does) and the end the worker reads.
pub fn queue() -> (WorkerHandle, mpsc::Receiver<Job>) {
    let (tx, rx) = mpsc::channel();
    let handle = WorkerHandle {
        tx,
        outstanding: Arc::new(AtomicUsize::new(0)),
        writers_queued: Arc::new(AtomicBool::new(false)),
    };
    (handle, rx)
}

impl WorkerHandle {
    /// An exit sink (see [`crate::supervisor::Context::exits`]) that hands the exit to
    /// the worker as if the loop had just reaped it.
    pub fn exit_sink(&self) -> crate::supervisor::ExitSink {
        let h = self.clone();
        Arc::new(move |pid, start_time, status| {
            h.send(Job::Exit {
                pid,
                start_time,
                status,
            })
        })
    }
}

/// Starts the worker thread with its own supervisor, reading the queue made by [`queue`].
pub fn start(
    sup: Supervisor,
    waker: Waker,
    (handle, rx): (WorkerHandle, mpsc::Receiver<Job>),
) -> crate::Result<WorkerHandle> {
    let count = handle.outstanding.clone();
    let mut w = Worker {
        sup,
        waker,
        me: std::process::id() as i32,
        watched: HashSet::new(),
        deferred: HashSet::new(),
        writers_queued: handle.writers_queued.clone(),
        revived: HashMap::new(),
        writer_services: None,
        said: HashSet::new(),
    };
    std::thread::Builder::new()
        .name("tend-worker".into())
        .spawn(move || {
            for job in rx {
                // After a job that used the database (a `Sync` after each request only
                // reads), the loop hears of changed database files even without the
                // watch.
                let used = !matches!(job, Job::Sync);
                w.run(job);
                if let Some(change) = used.then(|| w.sup.files_changed()).flatten() {
                    w.waker.send(Msg::FilesChanged(change));
                }
                count.fetch_sub(1, Ordering::SeqCst);
                // Also wakes a draining loop that waits for the worker to be idle.
                w.sync_timers();
            }
        })
        .map_err(|e| crate::Error::Daemon {
            message: format!("cannot start the supervision worker: {e}"),
        })?;
    Ok(handle)
}

struct Worker {
    sup: Supervisor,
    waker: Waker,
    me: i32,
    /// Pids of adopted services handed to the loop to watch.
    watched: HashSet<i32>,
    /// Pids of instances an adoption pass left as they were (already said so).
    deferred: HashSet<i32>,
    /// See [`WorkerHandle::check_writers`]; cleared as a [`Job::Writers`] begins.
    writers_queued: Arc<AtomicBool>,
    /// When each running instance's log writer was last brought back: (pid, start time)
    /// to the times, at most [`REVIVALS`] within [`REVIVAL_WINDOW`].
    revived: HashMap<(i32, u64), VecDeque<Instant>>,
    /// Instances whose writer could not be brought back, or be watched, already said so
    /// in the log: (service, pid; 0 for a writer not watched).
    said: HashSet<(String, i32)>,
    /// Whether any service defined has a log writer, as of a version of the definitions:
    /// a look at the writers (after every child the daemon reaps) is skipped when none
    /// has, at the cost of one read of the version.
    writer_services: Option<(i64, bool)>,
}

/// A log writer is brought back at most this many times within [`REVIVAL_WINDOW`], then
/// at most once per [`REVIVAL_PACE`]: a writer that dies at once, again and again, must
/// not make the daemon start one after another (the writer's two processes pace each
/// other the same way).
const REVIVALS: usize = 5;
const REVIVAL_WINDOW: Duration = Duration::from_secs(10);
const REVIVAL_PACE: Duration = Duration::from_secs(1);

/// Descriptors above the highest one a watched service's pidfd may take: kept for the
/// daemon's own work (a request: its socket and a database connection; a start: pipes,
/// log files, a pidfd; reaping: a stat), so that watching many services never leaves
/// the daemon unable to do anything else.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// How soon instances an adoption pass could not check or watch are looked at again (ms):
/// the event loop asks for another pass then.
pub const ADOPT_AGAIN: i64 = 5_000;

/// The highest descriptor number a watched service's pidfd may have.
fn watch_limit() -> i32 {
    let soft = crate::process::limits::nofile().map_or(1024, |(soft, _)| soft);
    i32::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS + 1)).unwrap_or(i32::MAX)
}

impl Worker {
    fn run(&mut self, job: Job) {
        match job {
            Job::Startup => {
                self.adopt();
                // A writer may have died while no daemon ran.
                self.writers();
                self.autostart();
                self.waker.send(Msg::Ready);
            }
            Job::Exit {
                pid,
                start_time,
                status,
            } => {
                let status = ExitStatus::from_wait(status);
                match self.sup.on_exit(pid, start_time, status) {
                    Ok(Some(exit)) => self.after_exit(exit, status, Vec::new()),
                    // Intermediate processes of the double fork, orphaned helpers,
                    // processes that never passed the gate.
                    Ok(None) => debug!(pid, %status, "reaped a non-service child"),
                    Err(e) => error!(pid, error = %e, "recording an exit failed"),
                }
            }
            Job::AdoptedExit { handle, watch } => {
                self.watched.remove(&watch.pid);
                match self
                    .sup
                    .on_exit(watch.pid, watch.start_time, ExitStatus::Unknown)
                {
                    // The handle pins the exited process: while it is not reaped (it is
                    // not our child), it proves the session is still the service's.
                    Ok(Some(exit)) => self.after_exit(exit, ExitStatus::Unknown, vec![handle]),
                    Ok(None) => {
                        debug!(service = %watch.name, pid = watch.pid, "adopted process exited; record already cleared")
                    }
                    Err(e) => error!(service = %watch.name, error = %e, "recording an exit failed"),
                }
            }
            Job::Restart(name) => self.restart(&name),
            Job::Sync => {}
            Job::Reload => {
                self.adopt();
                self.writers();
            }
            Job::AdoptAgain => self.adopt(),
            Job::NotWatched { pid } => {
                self.watched.remove(&pid);
            }
            Job::Writers => self.writers(),
        }
        for n in self.sup.take_notices() {
            info!("{n}");
        }
    }

    fn after_exit(&mut self, exit: Exit, status: ExitStatus, witnesses: Vec<Handle>) {
        if !exit.requested {
            // The main process ended on its own, but helpers it forked may live on: take
            // them down before a new instance competes with them for ports and files.
            // Only processes proven to be the service's are signalled.
            let l = self.sup.clean_up_after(&exit, witnesses);
            if l.killed > 0 {
                info!(service = %exit.name, killed = l.killed, "killed processes the service left behind");
            }
            if l.left_alone > 0 {
                warn!(service = %exit.name, session = exit.pgid, count = l.left_alone,
                    "processes in the service's session number not proven to be its own; left alone");
            }
            if l.survived > 0 {
                warn!(service = %exit.name, count = l.survived, "processes the service left behind survived SIGKILL");
            }
        }
        match &exit.decision {
            Decision::Leave => {
                info!(service = %exit.name, %status, requested = exit.requested, "exited")
            }
            Decision::Restart { delay } if delay.is_zero() => {
                info!(service = %exit.name, %status, "exited; restarting now");
                // Due now: no round trip through the loop's timers.
                self.restart(&exit.name);
            }
            Decision::Restart { delay } => {
                info!(service = %exit.name, %status, delay_ms = delay.as_millis() as u64, "exited; restart scheduled")
            }
            Decision::Fail { reason } => {
                warn!(service = %exit.name, %status, reason = %reason, "exited; marked failed")
            }
        }
    }

    fn restart(&mut self, name: &str) {
        match self.sup.restart_due(name) {
            Ok(StartOutcome::Started { pid }) => {
                crate::metrics::count(&crate::metrics::COUNTERS.restarts);
                info!(service = %name, pid, "restarted")
            }
            Ok(StartOutcome::NotDue) => debug!(service = %name, "restart cancelled"),
            Ok(other) => {
                if matches!(
                    other,
                    StartOutcome::Ready { .. }
                        | StartOutcome::NotReady { .. }
                        | StartOutcome::ExitedAtOnce { .. }
                ) {
                    crate::metrics::count(&crate::metrics::COUNTERS.restarts);
                }
                info!(service = %name, outcome = ?other, "restart")
            }
            // Whether the recorded instance still runs could not be checked: not a
            // failure of the service, and nothing to give up on.
            Err(e @ crate::Error::LivenessUnknown { .. }) => {
                warn!(service = %name, error = %e, "restart not carried out")
            }
            Err(e) => {
                error!(service = %name, error = %e, "restart failed");
                if let Err(e) = self.sup.give_up(name, &format!("restart failed: {e}")) {
                    error!(service = %name, error = %e, "recording the failure failed");
                }
            }
        }
    }

    /// Tells the loop which restarts are pending (the database's word, not a guess).
    fn sync_timers(&mut self) {
        match self.sup.pending_restarts() {
            Ok(pending) => self.waker.send(Msg::Timers(pending)),
            Err(e) => error!(error = %e, "reading pending restarts failed"),
        }
    }

    /// Adopts running services this daemon does not watch yet, and handles the ones that
    /// died (or whose pid was reused) while no daemon was watching. Those that could not
    /// be checked (or watched) are left as they are and looked at again soon.
    fn adopt(&mut self) {
        let me = self.me;
        let watched = self.watched.clone();
        let skip = |pid: i32| {
            watched.contains(&pid)
                || crate::process::identity::stat(pid)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.ppid == me)
        };
        let adoption = match self.sup.adopt_all(&skip, watch_limit()) {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "adoption failed");
                return;
            }
        };
        for (_, w) in &adoption.watches {
            info!(service = %w.name, pid = w.pid, "adopted");
            self.watched.insert(w.pid);
        }
        if !adoption.watches.is_empty() {
            self.waker.send(Msg::Watch(adoption.watches));
        }
        let already = std::mem::take(&mut self.deferred);
        for d in &adoption.deferred {
            self.deferred.insert(d.pid);
            // Said once per instance (in the log, and in its events when its check could
            // not be made), not at every look.
            if already.contains(&d.pid) {
                continue;
            }
            warn!(service = %d.name, pid = d.pid, reason = %d.why, "not adopted yet; looking again in {} s", ADOPT_AGAIN / 1000);
            if !d.checked {
                let detail = format!(
                    "pid {}: {}; record kept, not signalled, looked at again",
                    d.pid, d.why
                );
                if let Err(e) = self.sup.record(&d.name, event::UNKNOWN, &detail) {
                    error!(service = %d.name, error = %e, "recording an event failed");
                }
            }
        }
        self.waker.send(Msg::Deferred(adoption.deferred.len()));
        for exit in adoption.exits {
            self.after_exit(exit, ExitStatus::Unknown, Vec::new());
        }
    }

    /// Brings back the log writers of running services that are gone (see
    /// [`Supervisor::revive_writers`]), paced per instance. What could not be done now
    /// is looked at again in a second (the loop's timer); what cannot be done at all is
    /// said once.
    /// Whether any service defined has a log writer (see [`Worker::writer_services`]).
    /// When that cannot be read, the look goes ahead and says what failed.
    fn any_writer_services(&mut self) -> bool {
        let known = self.writer_services.map(|(v, _)| v);
        match self.sup.services_if_changed(known) {
            Ok(Some((version, services))) => {
                let any = services
                    .iter()
                    .any(|s| s.settings.log_timestamps != crate::service::LogTimestamps::Off);
                self.writer_services = Some((version, any));
                any
            }
            Ok(None) => self.writer_services.is_none_or(|(_, any)| any),
            Err(_) => true,
        }
    }

    fn writers(&mut self) {
        // From here on, an exit is looked after by a new job: this one may have looked
        // already.
        self.writers_queued.store(false, Ordering::SeqCst);
        if !self.any_writer_services() {
            return;
        }
        let now = Instant::now();
        let revived = &mut self.revived;
        revived.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < REVIVAL_WINDOW);
            !times.is_empty()
        });
        let mut may = |pid: i32, start_time: u64| {
            let times = revived.entry((pid, start_time)).or_default();
            let ok = times.len() < REVIVALS
                || times
                    .back()
                    .is_none_or(|t| now.duration_since(*t) >= REVIVAL_PACE);
            if ok {
                times.push_back(now);
            }
            ok
        };
        let looked = match self.sup.revive_writers(&mut may, watch_limit()) {
            Ok(looked) => looked,
            Err(e) => {
                error!(error = %e, "looking for log writers that are gone failed");
                return;
            }
        };
        let mut again = false;
        let mut said = HashSet::new();
        for r in looked.revivals {
            let key = (r.name.clone(), r.pid);
            match r.outcome {
                Revived::Started { keeper } => {
                    info!(service = %r.name, pid = r.pid, keeper, "log writer gone (both processes); a new one started on the service's pipes")
                }
                Revived::Paced => {
                    debug!(service = %r.name, pid = r.pid, "log writer gone again; brought back in a moment");
                    again = true;
                }
                Revived::Denied(why) => {
                    if !self.said.contains(&key) {
                        warn!(service = %r.name, pid = r.pid, reason = %why, "log writer gone (both processes) and cannot be brought back: the service's output waits in its pipe until it is restarted");
                    }
                    said.insert(key);
                }
                Revived::Failed(why) => {
                    if !self.said.contains(&key) {
                        warn!(service = %r.name, pid = r.pid, reason = %why, "log writer gone (both processes) and not brought back yet; trying again every second");
                    }
                    said.insert(key);
                    again = true;
                }
                Revived::Unchecked { why, again: true } => {
                    if !self.said.contains(&key) {
                        warn!(service = %r.name, pid = r.pid, reason = %why, "whether its log writer runs cannot be told now; looking again every second");
                    }
                    said.insert(key);
                    again = true;
                }
                Revived::Unchecked { why, again: false } => {
                    if !self.said.contains(&key) {
                        warn!(service = %r.name, pid = r.pid, reason = %why, "whether its log writer runs cannot be told: if both of its processes die, the service's output waits in its pipe until it is restarted");
                    }
                    said.insert(key);
                }
            }
        }
        for name in looked.unwatched {
            let key = (name, 0);
            if !self.said.contains(&key) {
                warn!(service = %key.0, limit = watch_limit(), "its log writer (not started by this daemon) cannot be watched without a descriptor above the daemon's limit; looked at every second instead (raise its limit of open files; see `tend doctor`)");
            }
            said.insert(key);
            again = true;
        }
        self.said = said;
        // Replaces what the loop watches: each look names a live process of every
        // writer that needs watching.
        self.waker.send(Msg::WatchWriters(
            looked.watches.into_iter().map(|(_, h)| h).collect(),
        ));
        if looked.again {
            self.waker.send(Msg::WritersAgain { in_ms: 0 });
        } else if again {
            self.waker.send(Msg::WritersAgain { in_ms: 1000 });
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
        // In dependency order (requirements first, as `start` does); a service whose
        // requirement is not running is not started.
        let mut down: Vec<String> = Vec::new();
        for (name, requires) in names {
            let state = self.sup.status(&name).map(|st| st.state);
            if let Some(r) = requires.iter().find(|r| down.contains(r)) {
                error!(service = %name, requirement = %r, "autostart: not started: its requirement is not running");
                down.push(name);
                continue;
            }
            match state {
                Ok(crate::state::State::Stopped) => {}
                Ok(s) if s.is_running() => continue,
                _ => {
                    down.push(name);
                    continue;
                }
            }
            match self.sup.start(&name) {
                Ok(o @ crate::supervisor::StartOutcome::ExitedAtOnce { .. }) => {
                    error!(service = %name, outcome = ?o, "autostart: exited at once");
                    down.push(name);
                }
                Ok(o) => info!(service = %name, outcome = ?o, "autostart"),
                Err(e) => {
                    error!(service = %name, error = %e, "autostart failed");
                    down.push(name);
                }
            }
        }
    }
}
