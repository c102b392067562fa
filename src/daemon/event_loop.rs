//! The event loop: sleeps in `poll(2)` and never touches the database or waits for a
//! spawn. It reaps children (posting each status on the exit board and handing the exit
//! to the worker), watches adopted services' pidfds, accepts requests, fires restart
//! timers, and runs the shutdown: stop accepting, drain, carry out restarts due within the
//! grace period, name the rest.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tracing::{error, info, warn};

use super::bus::{Msg, Shared, ShutdownReply, ToLoop};
use super::server::{self, ServeCtx};
use super::signals::{drain, sd_notify, Signals};
use super::worker::{Job, WorkerHandle};
use super::{client, health, rotation};
use crate::api::LeftDown;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::process::handle::Handle;
use crate::process::lock::Held;
use crate::process::reap::{self, ExitBoard};
use crate::record::now_ms;
use crate::supervisor::Watch;

/// On shutdown, restarts due within this long are still carried out.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A shutdown in progress.
pub struct Drain {
    /// Restarts due up to this unix ms are still carried out.
    grace_until: i64,
    replies: Vec<ShutdownReply>,
}

pub struct EventLoop {
    pub home: Home,
    pub signals: Signals,
    /// `None` once the daemon stopped accepting (shutting down).
    pub listener: Option<UnixListener>,
    pub serve: ServeCtx,
    pub rx: mpsc::Receiver<Msg>,
    pub wake_read: UnixStream,
    /// Adopted services (not our children), watched by pidfd.
    pub adopted: Adopted,
    /// Pending automatic restarts: service -> due unix ms.
    pub timers: BTreeMap<String, i64>,
    /// Restarts handed to the worker: service -> the due time they were fired for. The
    /// worker's snapshots of the pending restarts can be older than a restart it has not
    /// carried out yet; without this, each snapshot re-armed it and it was queued again
    /// and again (a busy worker then fed itself: found by bench/soak.py).
    pub fired: BTreeMap<String, i64>,
    pub board: Arc<ExitBoard>,
    pub shared: Arc<Shared>,
    pub worker: WorkerHandle,
    pub rotation: rotation::Resync,
    pub health: health::Resync,
    /// The file watch ([`super::watch`]) re-reads the definitions when asked.
    pub watch: super::watch::Resync,
    /// Startup adoption is done; requests are accepted.
    pub ready: bool,
    pub drain: Option<Drain>,
    /// When to give free heap memory back (see [`TRIM_AFTER`]); `None`: done.
    pub trim_at: Option<i64>,
    /// The daemon's lock, held until the process ends; a fault is noted in its file.
    pub lock: Held,
    /// What changed, once the database files on disk are no longer the ones the daemon
    /// opened (see `EventLoop::files_changed`).
    pub fault: Option<String>,
    /// The descriptor given up to read an exited child's start time when no other is
    /// left (see [`reap::Reserve`]).
    pub reserve: reap::Reserve,
    /// An exited child left unreaped because its start time could not be read: (pid,
    /// since when, unix ms). Reaping is tried again at `reap_at`.
    pub held: Option<(i32, i64)>,
    pub reap_at: Option<i64>,
    /// When to ask the worker to look at the recorded instances again: some could not
    /// be checked or watched (see [`super::worker::ADOPT_AGAIN`]).
    pub adopt_at: Option<i64>,
    /// Recorded instances the last adoption pass could not check or watch.
    pub deferred: usize,
    /// When to ask the worker to bring back log writers that are gone (after a child
    /// ended), and when it was last asked: at most once per `WRITERS_GAP`.
    pub writers_at: Option<i64>,
    pub writers_asked: i64,
    /// Log writers the daemon did not start, watched by pidfd (see `supervisor::writers`).
    pub writer_watch: WriterWatch,
    /// Started by `tend up` and tied to it: SIGTERM (sent by the kernel when `up` ends,
    /// however it ends) stops every service, in reverse dependency order, before the
    /// daemon exits; nothing `up` started outlives it.
    pub bound: bool,
    /// The stop of every service (bound daemon) has begun.
    pub stopping_all: bool,
}

/// The least time (ms) between two looks for log writers that are gone. Every child the
/// loop reaps asks for one (the last process of a writer ends as a child of the daemon,
/// whatever its name: see `supervisor::writers`), and a look reads /proc: a service
/// whose orphans end by the hundred must not make the worker read it for each.
const WRITERS_GAP: i64 = 100;

/// How soon an exit held for want of a descriptor is tried again (ms).
const REAP_AGAIN: i64 = 50;

/// How long an exit is held (ms) before it is reaped without its start time: then it
/// cannot be matched to an instance, so it is logged as an error, and the worker looks
/// at every record again (a dead instance is found dead there, as at start-up).
const HOLD_AT_MOST: i64 = 10_000;

/// Free heap memory is given back to the kernel once the daemon has been quiet this
/// long (ms): not after every request, whose successor would fault the same pages in
/// again, but before an idle daemon settles (see `process::memory`).
const TRIM_AFTER: i64 = 1000;

#[derive(Default)]
struct Ready {
    signal: bool,
    wake: bool,
    listener: bool,
    /// Tokens of adopted services whose pidfd is readable (the process exited).
    pidfds: Vec<u64>,
    /// A watched log writer process ended.
    writer: bool,
}

/// Adopted services (running before this daemon came up, so not its children), each
/// watched through its pidfd in an epoll set: the loop's `poll` has one descriptor for
/// all of them, and a wake-up no longer walks every pidfd.
/// (`poll` over every pidfd made each of the loop's wake-ups, several per request, walk
/// all of them: 10% of the daemon's CPU in a `perf` sample with 1,000 adopted services.)
pub struct Adopted {
    epoll: Epoll,
    watched: BTreeMap<u64, (Handle, Watch)>,
    next: u64,
}

impl Adopted {
    pub fn new() -> Result<Adopted> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::Daemon {
            message: format!("epoll: {e}"),
        })?;
        Ok(Adopted {
            epoll,
            watched: BTreeMap::new(),
            next: 0,
        })
    }

    /// Watches `handle`'s process; `Err` (the watch back, with why) when its pidfd could
    /// not join the epoll set.
    fn add(&mut self, handle: Handle, watch: Watch) -> Result<(), (Watch, nix::errno::Errno)> {
        let token = self.next;
        self.next += 1;
        if let Err(e) = self
            .epoll
            .add(handle.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
        {
            return Err((watch, e));
        }
        self.watched.insert(token, (handle, watch));
        Ok(())
    }

    fn remove(&mut self, token: u64) -> Option<(Handle, Watch)> {
        let (handle, watch) = self.watched.remove(&token)?;
        let _ = self.epoll.delete(handle.as_fd());
        Some((handle, watch))
    }

    /// Tokens of services whose process exited (their pidfd is readable), at most 64 per
    /// call. A pidfd stays readable until it is removed, so asking again before the
    /// caller removed these would return them again: more than 64 are left for the next
    /// turn of the loop, whose `poll` sees the epoll set still readable.
    fn exited(&self) -> Vec<u64> {
        let mut events = [EpollEvent::empty(); 64];
        loop {
            match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => return events[..n].iter().map(EpollEvent::data).collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    error!(error = %e, "epoll_wait failed");
                    return Vec::new();
                }
            }
        }
    }
}

/// One live process of each log writer whose end the daemon does not reap (one it did not
/// start), watched through its pidfd in an epoll set of its own: when any ends, the
/// writers are looked at again, and the look names the processes to watch next.
pub struct WriterWatch {
    epoll: Epoll,
    watched: Vec<Handle>,
}

impl WriterWatch {
    pub fn new() -> Result<WriterWatch> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::Daemon {
            message: format!("epoll: {e}"),
        })?;
        Ok(WriterWatch {
            epoll,
            watched: Vec::new(),
        })
    }

    /// Watches `handles` in place of what was watched.
    fn replace(&mut self, handles: Vec<Handle>) -> std::result::Result<(), nix::errno::Errno> {
        self.clear();
        for h in handles {
            self.epoll
                .add(h.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
            self.watched.push(h);
        }
        Ok(())
    }

    fn clear(&mut self) {
        for h in self.watched.drain(..) {
            let _ = self.epoll.delete(h.as_fd());
        }
    }

    /// True if a watched process has ended; then nothing is watched any more (a pidfd
    /// stays readable) until the next look names what to watch.
    fn ended(&mut self) -> bool {
        let mut events = [EpollEvent::empty(); 1];
        let any = loop {
            match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => break n > 0,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    error!(error = %e, "epoll_wait failed");
                    break true;
                }
            }
        };
        if any {
            self.clear();
        }
        any
    }
}

impl EventLoop {
    pub fn run(&mut self) -> Result<()> {
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
                    if self.bound {
                        self.stop_all_then_exit();
                    } else {
                        info!("SIGTERM/SIGINT: exiting once requests in progress are done");
                        self.begin_shutdown(None);
                    }
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
            for token in ready.pidfds {
                if let Some((handle, watch)) = self.adopted.remove(token) {
                    self.worker.send(Job::AdoptedExit { handle, watch });
                }
            }
            if ready.writer && self.writer_watch.ended() {
                self.writers_soon(now_ms());
            }
            if self.reap_at.is_some_and(|at| at <= now_ms()) {
                self.reap_at = None;
                self.reap();
            }
            if self.writers_at.is_some_and(|at| at <= now_ms()) {
                self.writers_at = None;
                // Not while shutting down, nor once the database cannot be used.
                if self.drain.is_none() && self.fault.is_none() {
                    self.writers_asked = now_ms();
                    self.worker.check_writers();
                }
            }
            if self.adopt_at.is_some_and(|at| at <= now_ms()) {
                self.adopt_at = None;
                if self.drain.is_none() {
                    self.worker.send(Job::AdoptAgain);
                }
            }
            self.fire_timers();
            self.publish();
            if ready.signal || ready.wake || ready.listener || ready.writer {
                self.trim_at = Some(now_ms() + TRIM_AFTER);
            } else if self.trim_at.is_some_and(|at| at <= now_ms()) {
                self.trim_at = None;
                crate::process::memory::give_back();
            }
            if self.drained() {
                self.finish_shutdown();
                return Ok(());
            }
        }
    }

    /// Until the next pending restart (or the time to give memory back, reap a held
    /// exit, look at instances again), or forever. While shutting down, look again every
    /// few milliseconds for requests in flight to finish.
    fn timeout(&self) -> PollTimeout {
        let next = self
            .timers
            .values()
            .chain(&self.trim_at)
            .chain(&self.reap_at)
            .chain(&self.adopt_at)
            .chain(&self.writers_at)
            .min()
            .copied();
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
        let adopted = fds.len();
        fds.push(PollFd::new(self.adopted.epoll.0.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(
            self.writer_watch.epoll.0.as_fd(),
            PollFlags::POLLIN,
        ));
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
        if hit(&fds[adopted]) {
            ready.pidfds = self.adopted.exited();
        }
        ready.writer = hit(&fds[adopted + 1]);
        ready
    }

    /// Reaps every exited child: the status goes on the board at once, and the exit to
    /// the worker. An exit whose start time cannot be read for want of a descriptor is
    /// held (the child stays a zombie, its pid taken) and tried again shortly; no exit
    /// is dropped without an error in the log.
    fn reap(&mut self) {
        loop {
            match reap::reap_one(&mut self.reserve) {
                reap::Reaping::Nothing => {
                    self.held = None;
                    return;
                }
                reap::Reaping::Reaped(r) => {
                    if self.held.is_some_and(|(pid, _)| pid == r.pid) {
                        info!(pid = r.pid, "a held exit was reaped with its start time");
                        self.held = None;
                    }
                    self.exited(r.pid, r.start_time, r.status);
                }
                reap::Reaping::Held { pid, why } => {
                    let now = now_ms();
                    let since = match self.held {
                        Some((p, since)) if p == pid => since,
                        _ => {
                            error!(pid, reason = %why, "an exited child's start time cannot be read; its exit is held (not reaped) until it can be");
                            now
                        }
                    };
                    if now - since < HOLD_AT_MOST {
                        self.held = Some((pid, since));
                        self.reap_at = Some(now + REAP_AGAIN);
                        return;
                    }
                    // Holding it longer would hold every other exit behind it.
                    self.held = None;
                    if let Some(status) = reap::reap_pid(pid) {
                        self.exited(pid, None, status);
                    }
                }
            }
        }
    }

    /// A reaped child: on the board and to the worker, or, without its start time, in
    /// the log as an error, and every record looked at again (a service's instance that
    /// it was is then found dead there and goes through the restart policy).
    fn exited(&mut self, pid: i32, start_time: Option<u64>, status: i32) {
        self.writers_soon(now_ms());
        let Some(start_time) = start_time else {
            error!(pid, status = %crate::policy::ExitStatus::from_wait(status),
                "reaped a child whose start time could not be read: its exit cannot be matched to an instance; looking at every record again");
            self.worker.send(Job::AdoptAgain);
            return;
        };
        self.board.post(pid, start_time, status);
        self.worker.send(Job::Exit {
            pid,
            start_time,
            status,
        });
    }

    /// Asks for a look at the log writers at `at` (unix ms), or as soon after the last
    /// one as [`WRITERS_GAP`] allows; sooner if one was asked for already.
    fn writers_soon(&mut self, at: i64) {
        let at = at.max(self.writers_asked + WRITERS_GAP);
        self.writers_at = Some(self.writers_at.map_or(at, |t| t.min(at)));
    }

    fn reload(&mut self) {
        self.worker.send(Job::Reload);
        self.rotation.request();
        self.health.request();
        self.watch.request();
    }

    fn messages(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::FromRequest(ToLoop::Changed) => {
                    self.worker.send(Job::Sync);
                    self.rotation.request();
                    self.health.request();
                    self.watch.request();
                }
                Msg::FromRequest(ToLoop::Reload) => self.reload(),
                Msg::FromRequest(ToLoop::Shutdown(reply)) => self.begin_shutdown(reply),
                Msg::Timers(pending) => {
                    self.set_timers(pending);
                    // Restarts and exits change which instances run: checks follow them.
                    self.health.request();
                }
                Msg::Watch(w) => {
                    for (handle, watch) in w {
                        if let Err((watch, e)) = self.adopted.add(handle, watch) {
                            // Not watched after all: the worker forgets it, and looks at it
                            // again soon (its exit meanwhile is found there).
                            error!(service = %watch.name, pid = watch.pid, error = %e,
                                "cannot watch an adopted service; looking at it again in {} s",
                                super::worker::ADOPT_AGAIN / 1000);
                            self.worker.send(Job::NotWatched { pid: watch.pid });
                            self.adopt_soon();
                        }
                    }
                }
                Msg::Deferred(n) => {
                    self.deferred = n;
                    if n > 0 {
                        self.adopt_soon();
                    }
                }
                Msg::FilesChanged(change) => self.files_changed(change),
                Msg::WritersAgain { in_ms } => self.writers_soon(now_ms() + in_ms),
                Msg::WatchWriters(handles) => {
                    if let Err(e) = self.writer_watch.replace(handles) {
                        // Unwatched: looked at again in a second instead.
                        error!(error = %e, "cannot watch log writers; looking at them again in 1 s");
                        self.writers_soon(now_ms() + 1000);
                    }
                }
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

    /// Asks the worker to look at the recorded instances again in
    /// [`super::worker::ADOPT_AGAIN`] (or sooner, if that was asked already).
    fn adopt_soon(&mut self) {
        let at = now_ms() + super::worker::ADOPT_AGAIN;
        self.adopt_at = Some(self.adopt_at.map_or(at, |t| t.min(at)));
    }

    /// Takes the database's word on the pending restarts, except those already handed
    /// to the worker for the same due time. A restart the database no longer lists (or
    /// lists with another due time) has been carried out or rescheduled: forgotten.
    fn set_timers(&mut self, pending: Vec<(String, i64)>) {
        let pending: BTreeMap<String, i64> = pending.into_iter().collect();
        self.fired
            .retain(|name, at| pending.get(name) == Some(&*at));
        self.timers = pending
            .into_iter()
            .filter(|(name, at)| self.fired.get(name) != Some(at))
            .collect();
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
            if let Some(at) = self.timers.remove(&name) {
                self.fired.insert(name.clone(), at);
            }
            self.worker.send(Job::Restart(name));
        }
    }

    fn publish(&self) {
        self.shared
            .adopted
            .store(self.adopted.watched.len(), Ordering::Relaxed);
        self.shared
            .pending
            .store(self.timers.len(), Ordering::Relaxed);
        self.shared
            .unwatched
            .store(self.deferred, Ordering::Relaxed);
    }

    /// The database files on disk are no longer the ones the daemon opened: its
    /// connections would read and commit where nobody else does. Every connection already
    /// refuses (each write checks before and after, a pooled connection is checked when
    /// taken, and a new one fails to open); the daemon says so
    /// (its log, its lock file for `tend daemon status`, `tend doctor` and every command,
    /// systemd's status) and goes on holding the old files, unhealthy, until it is
    /// stopped: requests are refused with the reason, exits are reaped but neither
    /// recorded nor followed by restarts.
    ///
    /// It stays rather than exit because it holds the only copy of what the old files
    /// had: a deleted WAL holds every commit since the last checkpoint (for a new home,
    /// the whole database), and closing it loses them; a database renamed over keeps the
    /// old WAL beside it, which the next opener would apply to the new file. A person can
    /// still put the WAL back from `/proc` (`tend doctor` says how) or move it aside,
    /// then restart the daemon. Nothing is repaired here: a checkpoint or a copy from
    /// the old files into the new ones could write one WAL's pages into another database.
    fn files_changed(&mut self, change: String) {
        if self.fault.is_some() {
            return;
        }
        error!(change = %change,
            "the database files on disk are no longer the ones the daemon has open: it stops \
             using the database and restarts nothing until it is restarted; `tend doctor` \
             says how to keep what only its files hold");
        if let Err(e) = self.lock.note(&format!("fault {} {change}", now_ms())) {
            warn!(error = %e, "cannot note the fault in the daemon's lock file");
        }
        sd_notify(&format!("STATUS=unhealthy: {change}; see tend doctor"));
        self.fault = Some(change);
    }

    /// A bound daemon's SIGTERM: every service is stopped (reverse dependency order,
    /// each within its stop timeout) on a thread of its own, so the loop goes on reaping
    /// and answering; then the daemon shuts down. A second SIGTERM (`tend up`'s second
    /// Ctrl-C) makes the stops kill at once.
    fn stop_all_then_exit(&mut self) {
        if std::mem::replace(&mut self.stopping_all, true) {
            // The second: what the stop signal has not ended yet is killed now.
            info!("SIGTERM again: killing what is still stopping");
            crate::process::stop::hurry();
            return;
        }
        info!("SIGTERM: stopping every service, then exiting");
        let pool = self.serve.pool.clone();
        let waker = self.serve.waker.clone();
        let in_flight = self.serve.in_flight.clone();
        let ticket = in_flight.enter_always();
        // No request is taken from now on, and those in progress (a start waiting for
        // readiness) go no further: then nothing can start behind the stop.
        self.serve.abandon.store(true, Ordering::SeqCst);
        in_flight.close();
        let spawned = std::thread::Builder::new()
            .name("stop-all".into())
            .spawn(move || {
                // Those in progress end at their next look at `abandon` (between two
                // services, within a readiness wait); a spawn under way completes and
                // is recorded, so the stop below finds it. Bounded all the same.
                let until = std::time::Instant::now() + Duration::from_secs(10);
                while in_flight.count() > 1 && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                match pool.get().and_then(|mut sup| {
                    crate::api::act(
                        &mut sup,
                        crate::api::Verb::Stop,
                        &crate::api::Selection::All,
                        &|| true,
                    )
                }) {
                    Ok(reports) => {
                        for r in reports {
                            info!(service = %r.name, result = ?r.result, "stop");
                        }
                    }
                    Err(e) => error!(error = %e, "cannot stop the services"),
                }
                drop(ticket);
                waker.send(Msg::FromRequest(ToLoop::Shutdown(None)));
            });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the thread that stops the services; exiting");
            self.begin_shutdown(None);
        }
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
