//! Stopping a service: its stop signal to the main process and every process proven to
//! be the service's, a bounded wait, then SIGKILL, then confirmation.
//!
//! # Which processes are the service's
//!
//! A service runs in a session tend created for it: the intermediate process of the
//! double fork called `setsid()`, so the session and its first process group are both
//! numbered `N`, the intermediate's pid (recorded as the instance's `pgid`). The
//! intermediate exits at once, so nothing pins the *number*: once every process has left
//! the session, `N` can be handed to an unrelated process that makes itself a session or
//! group leader. Signalling "group `N`" by number (`killpg`) could then reach a stranger.
//!
//! So tend never signals by number. Every process is signalled through its own pidfd
//! ([`Handle`]), and a process is pinned as the service's only with proof:
//!
//! - **the main process**, by its recorded identity (pid, start time, boot id);
//! - **a child of a proven process**: its parent pid was the proven process while that
//!   process was still there (checked after the read, through its pidfd);
//! - **a member of session `N`** while a proven process (a *witness*) is itself in session
//!   `N`, seen there before and after the member was pinned: a number that is in use as a
//!   session id cannot be reused, and only descendants of tend's intermediate can be in
//!   that session, so while the witness holds it, every member is the service's;
//! - **a child of the reaper** (the daemon, which is a child subreaper) in session `N`,
//!   while no process has pid `N` and no other instance of the home owns `N`: orphans of
//!   what the daemon started re-parent to it. Everything the daemon starts is its
//!   descendant, so its children in session `N` may also belong to *another* service
//!   whose intermediate was handed the freed number `N` (its session is then `N` too).
//!   So the numbers the home's other instances own (their records, read afresh, and the
//!   starts in flight, see [`super::spawn::in_flight`]) are never evidence here, and they
//!   are looked at only after the candidates were pinned: a start whose intermediate is
//!   gone by then was registered before it went (the proof is at `Members::by_reaper`).
//!
//! - **a member of the instance's cgroup**, where it has one (see [`super::cgroup`]):
//!   nothing but the service's own processes can be born in it, and none can leave it.
//!   With a cgroup, membership is the only proof besides the main process's identity: a
//!   process outside it is never signalled. After every proven process has exited,
//!   whatever is still in the cgroup is killed with `cgroup.kill`, and the stop is over
//!   when the cgroup is empty.
//!
//! A process seen in session `N` that nothing proves is left alone and counted. That
//! happens when the main process has left the session (`setsid()`) and the number was
//! reused by a stranger or by another service of the home, which is exactly the process
//! tend must not signal.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::cgroup::Cgroup;
use super::handle::{self, Found, Handle};
use super::identity::Stat;
use crate::error::StopError;

/// How long to wait for the service's processes to vanish after SIGKILL.
const KILL_CONFIRM: Duration = Duration::from_secs(5);
/// While waiting, look for processes forked meanwhile this often.
const RESCAN: Duration = Duration::from_millis(20);
/// Bound on discovery rounds (each round can only add processes).
const MAX_ROUNDS: usize = 16;

/// The daemon, a child subreaper: orphans of what it started re-parent to it.
pub struct Reaper<'a> {
    /// Its pid (the caller's own).
    pub pid: i32,
    /// The session numbers the home's *other* recorded instances own, read afresh at
    /// each call (after the candidates were pinned); `None` when they cannot be read,
    /// and then no orphan is taken on the strength of its session.
    pub owned_elsewhere: &'a mut dyn FnMut() -> Option<BTreeSet<i32>>,
}

/// The recorded identity of a service instance.
#[derive(Clone, Copy, Debug)]
pub struct Recorded<'a> {
    pub pid: i32,
    /// The session (and first process group) tend created for the service.
    pub session: i32,
    pub start_time: u64,
    pub boot_id: &'a str,
    /// The instance's cgroup, when it has one: its main process must be in it.
    pub cgroup: Option<&'a Path>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The record does not describe a live process of ours; nothing was signalled.
    Stale(String),
    /// Whether the record describes a live process of ours could not be checked (out of
    /// descriptors, say); nothing was signalled.
    Unknown(String),
    /// The main process had already exited; nothing was signalled.
    AlreadyExited,
    Stopped(Stopped),
}

/// What a stop did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// SIGKILL was needed after the stop timeout.
    pub killed: bool,
    pub took: Duration,
    /// The main process was no longer in the session tend created for it.
    pub left_session: bool,
    /// Other processes of the service that were stopped with it.
    pub others: usize,
    /// Processes in session or group `N` not proven to be the service's; not signalled.
    pub left_alone: usize,
}

/// Set once every stop, in progress or to come, is to send SIGKILL at once instead of
/// waiting out its timeout (see [`hurry`]).
static HURRY: AtomicBool = AtomicBool::new(false);

/// Makes every stop of this process, in progress or to come, kill at once: what the
/// stop signal has not ended yet gets SIGKILL now (a daemon tied to `tend up`, on the
/// second Ctrl-C). Never undone.
pub fn hurry() {
    HURRY.store(true, Ordering::SeqCst);
}

/// Stops the instance `t`: `signal` to every proven process, up to `timeout`, then
/// SIGKILL. `reaper`: the caller, when it is a child subreaper (the daemon).
pub fn stop(
    t: &Recorded,
    current_boot: &str,
    signal: Signal,
    timeout: Duration,
    reaper: Option<Reaper>,
    cgroup: Option<&Cgroup>,
) -> Result<Ended, StopError> {
    let started = Instant::now();
    let main = match Handle::open(t.pid, t.start_time, t.boot_id, current_boot, t.cgroup) {
        Found::Alive(h) => h,
        Found::Exited => return Ok(Ended::AlreadyExited),
        Found::Stale(why) => return Ok(Ended::Stale(why)),
        Found::Unknown(why) => return Ok(Ended::Unknown(why)),
    };
    let left_session = main
        .stat()
        .is_some_and(|s| s.session != t.session && s.pgrp != t.session);
    let mut m = Members::new(t.session, reaper, vec![main]);
    m.cgroup = cgroup.cloned();
    m.discover();
    let others = m.pinned.len() - 1;
    m.signal_from(0, signal);
    let deadline = started + timeout;
    let mut killed = false;
    if !m.wait_gone(deadline, signal) {
        killed = true;
        m.signal_from(0, Signal::SIGKILL);
        if !m.wait_gone(Instant::now() + KILL_CONFIRM, Signal::SIGKILL) {
            return Err(StopError::Survived {
                alive: m.live().len(),
                waited: KILL_CONFIRM,
            });
        }
    }
    // Whatever is still in the cgroup (forked at the last instant, or not yet pinned)
    // goes with the cgroup: the service is down only when its cgroup is empty.
    let mut stragglers = 0;
    if let Some(cg) = cgroup {
        stragglers = kill_cgroup(cg)?;
    }
    Ok(Ended::Stopped(Stopped {
        killed: killed || stragglers > 0,
        took: started.elapsed(),
        left_session,
        others: m.pinned.len().saturating_sub(1).max(others) + stragglers,
        left_alone: m.left_alone(),
    }))
}

/// Kills everything still in `cg` (`cgroup.kill`) and waits until it is empty; how many
/// processes were in it.
pub fn kill_cgroup(cg: &Cgroup) -> Result<usize, StopError> {
    if !cg.populated() {
        return Ok(0);
    }
    let n = cg.pids().len().max(1);
    cg.kill().map_err(|e| StopError::Cgroup {
        path: cg.path.clone(),
        reason: crate::error::io_reason(&e),
    })?;
    if !cg.wait_empty(KILL_CONFIRM) {
        return Err(StopError::Survived {
            alive: cg.pids().len(),
            waited: KILL_CONFIRM,
        });
    }
    Ok(n)
}

/// What [`kill_leftovers`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Processes of the service that were still running and were killed.
    pub killed: usize,
    /// Processes seen in session or group `N` that nothing proves to be the service's.
    pub left_alone: usize,
    /// Killed processes still alive after the confirmation wait.
    pub survived: usize,
}

/// After a service's main process exited on its own: SIGKILL whatever else of the
/// service still runs, before a new instance competes with it for ports and files.
/// `witnesses` are handles still held on the service's processes (the exited main
/// process, when it has not been reaped yet, still proves the session is ours).
pub fn kill_leftovers(
    session: i32,
    witnesses: Vec<Handle>,
    reaper: Option<Reaper>,
    cgroup: Option<&Cgroup>,
) -> Leftovers {
    if let Some(cg) = cgroup {
        // Membership is the proof: everything in the cgroup is the service's.
        return match kill_cgroup(cg) {
            Ok(killed) => Leftovers {
                killed,
                ..Leftovers::default()
            },
            Err(_) => Leftovers {
                killed: cg.pids().len(),
                survived: cg.pids().len().max(1),
                ..Leftovers::default()
            },
        };
    }
    let mut m = Members::new(session, reaper, witnesses);
    m.discover();
    let live = m.live().len();
    if live == 0 {
        return Leftovers {
            left_alone: m.left_alone(),
            ..Leftovers::default()
        };
    }
    m.signal_from(0, Signal::SIGKILL);
    let gone = m.wait_gone(Instant::now() + KILL_CONFIRM, Signal::SIGKILL);
    Leftovers {
        killed: live,
        left_alone: m.left_alone(),
        survived: if gone { 0 } else { m.live().len() },
    }
}

/// What sending a signal to a main process did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signalled {
    /// Delivered to the recorded process.
    Delivered,
    /// The process had already exited; nothing was sent.
    AlreadyExited,
    /// The record does not describe a live process of ours; nothing was sent.
    Stale(String),
    /// Whether the record describes a live process of ours could not be checked;
    /// nothing was sent.
    Unknown(String),
}

/// Sends `signal` to the instance's main process only, after the identity check.
pub fn signal(t: &Recorded, current_boot: &str, signal: Signal) -> Result<Signalled, StopError> {
    let main = match Handle::open(t.pid, t.start_time, t.boot_id, current_boot, t.cgroup) {
        Found::Alive(h) => h,
        Found::Exited => return Ok(Signalled::AlreadyExited),
        Found::Stale(why) => return Ok(Signalled::Stale(why)),
        Found::Unknown(why) => return Ok(Signalled::Unknown(why)),
    };
    match main.signal(signal) {
        Ok(()) => Ok(Signalled::Delivered),
        Err(Errno::ESRCH) => Ok(Signalled::AlreadyExited),
        Err(errno) => Err(StopError::Signal {
            signal,
            pid: t.pid,
            errno,
        }),
    }
}

/// The processes proven to be one service's.
struct Members<'a> {
    session: i32,
    reaper: Option<Reaper<'a>>,
    /// Proven, in the order they were found (the main process first, when alive).
    pinned: Vec<Handle>,
    /// Seen in session `N` but not proven.
    unproven: BTreeSet<i32>,
    /// The instance's cgroup: every member is proven, and nothing else is.
    cgroup: Option<Cgroup>,
}

impl<'a> Members<'a> {
    fn new(session: i32, reaper: Option<Reaper<'a>>, pinned: Vec<Handle>) -> Members<'a> {
        Members {
            session,
            reaper,
            pinned,
            unproven: BTreeSet::new(),
            cgroup: None,
        }
    }

    fn has(&self, pid: i32) -> bool {
        self.pinned.iter().any(|h| h.pid() == pid)
    }

    fn holds(&self, s: &Stat) -> bool {
        s.session == self.session
    }

    /// Finds and pins every process that can be proven to be the service's.
    fn discover(&mut self) {
        // A cgroup is the boundary: what is outside it is not the service's, whatever
        // its session or parent says (another service of the home may hold the number).
        // One that is gone (removed by hand) proves nothing; the session rules remain.
        let by_membership = self.cgroup.as_ref().is_some_and(Cgroup::exists);
        for _ in 0..MAX_ROUNDS {
            let before = self.pinned.len();
            if by_membership {
                self.by_cgroup();
            } else {
                self.by_ancestry();
                self.by_reaper();
                self.by_session();
            }
            if self.pinned.len() == before {
                break;
            }
        }
        let pinned: Vec<i32> = self.pinned.iter().map(Handle::pid).collect();
        self.unproven.retain(|p| !pinned.contains(p));
    }

    /// Members of the instance's cgroup are the service's.
    fn by_cgroup(&mut self) {
        let Some(cg) = &self.cgroup else { return };
        for pid in cg.pids() {
            if self.has(pid) {
                continue;
            }
            if let Some(h) = cg.pin(pid) {
                self.pinned.push(h);
            }
        }
    }

    /// Children of proven processes are the service's.
    fn by_ancestry(&mut self) {
        let mut i = 0;
        while i < self.pinned.len() {
            let parent = self.pinned[i].pid();
            for child in handle::children(parent) {
                if self.has(child) {
                    continue;
                }
                let Some((h, st)) = Handle::pin(child) else {
                    continue;
                };
                // The parent must still be there after the child's stat was read: then
                // `parent` in that stat was our process, not a reuse of its number.
                if st.ppid == parent && self.pinned[i].stat().is_some() {
                    self.pinned.push(h);
                }
            }
            i += 1;
        }
    }

    /// Orphans re-parented to the daemon (a child subreaper) that are in session `N`,
    /// while `N` is nobody else's.
    ///
    /// Why the order matters: a start of another service whose intermediate was handed
    /// the number `N` registers `N` as in flight before that intermediate (a zombie
    /// until its start reaps it) frees pid `N`, and keeps it registered until its
    /// record is committed. Its process can only pass for an orphan here once pid `N`
    /// is free. So after the candidates are pinned (their session cannot change to `N`
    /// later: a session is only ever left), pid `N` is looked for again, then the starts
    /// in flight, then the records: whichever step a concurrent start is at, one of the
    /// three sees it.
    fn by_reaper(&mut self) {
        let Some(reaper) = self.reaper.as_ref().map(|r| r.pid) else {
            return;
        };
        // A process with pid N leads the session that holds the number now.
        if handle::exists(self.session) {
            return;
        }
        let mut fresh = Vec::new();
        for child in handle::children(reaper) {
            if self.has(child) {
                continue;
            }
            let Some((h, st)) = Handle::pin(child) else {
                continue;
            };
            // The session, not the group: a process in group N of another session is
            // in no session tend created for this instance.
            if st.ppid == reaper && st.session == self.session {
                fresh.push(h);
            }
        }
        if fresh.is_empty() {
            return;
        }
        if handle::exists(self.session)
            || super::spawn::in_flight(self.session)
            || self.owned_elsewhere()
        {
            self.unproven.extend(fresh.iter().map(Handle::pid));
            return;
        }
        self.pinned.extend(fresh);
    }

    /// Whether another recorded instance of the home owns session `N` (or that cannot
    /// be told).
    fn owned_elsewhere(&mut self) -> bool {
        let Some(r) = self.reaper.as_mut() else {
            return true;
        };
        (r.owned_elsewhere)().is_none_or(|owned| owned.contains(&self.session))
    }

    /// Members of session `N`, proven while a pinned witness holds `N`.
    fn by_session(&mut self) {
        let has_witness = self
            .pinned
            .iter()
            .any(|h| h.stat().is_some_and(|s| self.holds(&s)));
        // Without a witness nothing found here can be proven; the search would only count
        // what is left alone, and there is nothing to count when group N is empty (the
        // daemon's own orphans are found through it, as the reaper). One look at the
        // group spares reading every process's session after each crash.
        if !has_witness && !handle::group_exists(self.session) {
            return;
        }
        let candidates: Vec<i32> = handle::in_session(self.session)
            .into_iter()
            .filter(|p| !self.has(*p))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let witness = self
            .pinned
            .iter()
            .position(|h| h.stat().is_some_and(|s| self.holds(&s)));
        let Some(w) = witness else {
            self.unproven.extend(candidates);
            return;
        };
        let mut fresh = Vec::new();
        for pid in candidates {
            if let Some((h, st)) = Handle::pin(pid) {
                if st.session == self.session {
                    fresh.push(h);
                }
            }
        }
        // Seen in session N before and after: it held the number all along (it could
        // only leave by setsid(), which is for good).
        if self.pinned[w].stat().is_some_and(|s| self.holds(&s)) {
            self.pinned.extend(fresh);
        } else {
            self.unproven.extend(fresh.iter().map(Handle::pid));
        }
    }

    fn signal_from(&self, first: usize, signal: Signal) {
        for h in &self.pinned[first.min(self.pinned.len())..] {
            if !h.exited() {
                // ESRCH: it exited meanwhile. Nothing else can fail for our own process.
                let _ = h.signal(signal);
            }
        }
    }

    fn live(&self) -> Vec<&Handle> {
        self.pinned.iter().filter(|h| !h.exited()).collect()
    }

    /// Unproven processes that are still alive.
    fn left_alone(&self) -> usize {
        self.unproven
            .iter()
            .filter(|&&p| {
                super::identity::stat(p)
                    .ok()
                    .flatten()
                    .is_some_and(|s| !s.exited())
            })
            .count()
    }

    /// Waits until every proven process has exited, signalling (with `signal`) any that
    /// are found meanwhile (forked after the last look). False at the deadline.
    ///
    /// `/proc` is searched again only when every proven process has exited (a last look
    /// for anything they forked) or when a wait times out with some still alive, not at
    /// every exit: each search reads every process's session.
    fn wait_gone(&mut self, deadline: Instant, signal: Signal) -> bool {
        loop {
            let live = self.live();
            if live.is_empty() {
                let before = self.pinned.len();
                self.discover();
                if self.pinned.len() == before {
                    return true;
                }
                self.signal_from(before, signal);
                continue;
            }
            let now = Instant::now();
            if now >= deadline || (signal != Signal::SIGKILL && HURRY.load(Ordering::SeqCst)) {
                return false;
            }
            // At most RESCAN: a hurry is noticed within that.
            let wait = RESCAN.min(deadline - now);
            if handle::wait_any(&live, wait).is_none() {
                // Still running after a while: look for processes forked meanwhile.
                let before = self.pinned.len();
                self.discover();
                self.signal_from(before, signal);
            }
        }
    }
}
