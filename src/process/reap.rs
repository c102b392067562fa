//! Being a parent: child subreaper, reaping, and the board where reaped exit statuses
//! wait for whoever asks about them.

use std::collections::VecDeque;
use std::io;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::identity;

/// Makes this process the reaper of every orphan below it: services double-forked by
/// this process re-parent to it when their intermediate exits, so it learns their exit
/// status.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes plain integers and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One reaped child.
#[derive(Clone, Copy, Debug)]
pub struct Reaped {
    pub pid: i32,
    /// Read from the zombie before reaping it, so the exit can be matched to the exact
    /// recorded instance. `None` only if /proc had no entry for the unreaped child.
    pub start_time: Option<u64>,
    /// The `waitpid` status word.
    pub status: i32,
}

/// What [`reap_one`] did.
#[derive(Clone, Debug)]
pub enum Reaping {
    Reaped(Reaped),
    /// Child `pid` has exited, but its start time could not be read (`why`), not even
    /// with the reserved descriptor: it is left unreaped (its pid cannot be reused
    /// meanwhile), for a later call. Other exited children wait behind it.
    Held {
        pid: i32,
        why: String,
    },
    /// No child has exited.
    Nothing,
}

/// One descriptor kept open and given up only for the moment a zombie's stat must be
/// read while every other one is in use: an exit whose start time cannot be read
/// cannot be matched to its instance.
pub struct Reserve(Option<std::os::fd::OwnedFd>);

impl Reserve {
    pub fn new() -> Reserve {
        let mut r = Reserve(None);
        r.refill();
        r
    }

    /// Takes a descriptor again if it had to be given up (or could not be taken).
    fn refill(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok().map(Into::into);
        }
    }

    /// Runs `f` with the reserved descriptor closed, so that the one descriptor `f`
    /// opens can be had (another thread may still take it first: then `f` fails again).
    fn released<T>(&mut self, f: impl FnOnce() -> T) -> T {
        self.0 = None;
        let out = f();
        self.refill();
        out
    }
}

impl Default for Reserve {
    fn default() -> Self {
        Reserve::new()
    }
}

/// Too many open files, in this process (EMFILE) or in the system (ENFILE).
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Reaps one exited child, if any, without blocking.
///
/// The child is first looked at with `WNOWAIT` (it stays a zombie, so its pid cannot be
/// reused and /proc still shows its start time), then reaped by pid. Reading the start
/// time takes a descriptor: when there is none left, `reserve`'s is given up for that
/// read, and if even that fails the child is not reaped yet ([`Reaping::Held`]): an exit
/// reaped without its start time could not be matched to its instance, and would be
/// lost.
pub fn reap_one(reserve: &mut Reserve) -> Reaping {
    reserve.refill();
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with a valid siginfo pointer; WNOHANG never blocks.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return Reaping::Nothing; // ECHILD: no children at all
        }
        // SAFETY: waitid filled `info` for a child state change (si_pid 0 means none).
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            return Reaping::Nothing;
        }
        let read = match identity::stat(pid) {
            Err(e) if out_of_descriptors(&e) => reserve.released(|| identity::stat(pid)),
            other => other,
        };
        let start_time = match read {
            Ok(st) => st.map(|s| s.start_time),
            Err(e) => {
                return Reaping::Held {
                    pid,
                    why: format!(
                        "cannot read /proc/{pid}/stat: {}",
                        crate::error::io_reason(&e)
                    ),
                }
            }
        };
        let mut status = 0;
        // SAFETY: waitpid on a child we just saw exit, with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Reaping::Reaped(Reaped {
                pid,
                start_time,
                status,
            });
        }
        // Someone else reaped it meanwhile (a spawning thread reaping its intermediate
        // child, or discarding a process that never ran): look again.
    }
}

/// Reaps child `pid` if it has exited, whatever else is known of it: its `waitpid`
/// status word.
pub fn reap_pid(pid: i32) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on one pid with a valid status pointer; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        return None;
    }
}

/// Exit statuses of reaped children, kept for a while so that a thread that signalled a
/// process (a stop) can learn how it ended without polling the database. The reaper posts;
/// anyone may wait.
#[derive(Default)]
pub struct ExitBoard {
    entries: Mutex<Entries>,
    posted: Condvar,
}

/// The statuses, each with its sequence number (how many were posted before it).
#[derive(Default)]
struct Entries {
    list: VecDeque<(u64, i32, u64, i32)>,
    next: u64,
}

/// How many statuses the board remembers; the oldest go first.
const BOARD_SIZE: usize = 4096;

impl ExitBoard {
    /// Records that `(pid, start_time)` exited with the `waitpid` status word `status`.
    pub fn post(&self, pid: i32, start_time: u64, status: i32) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.list.len() >= BOARD_SIZE {
            e.list.pop_front();
        }
        let seq = e.next;
        e.next += 1;
        e.list.push_back((seq, pid, start_time, status));
        self.posted.notify_all();
    }

    /// The sequence number the next status will get: taken before spawning a child whose
    /// start time may never be read (it can exit and be reaped at once), so that
    /// [`ExitBoard::wait_for_child`] knows which statuses can be its.
    pub fn mark(&self) -> u64 {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).next
    }

    /// Waits up to `timeout` for the status of our child `pid`, spawned after `mark`: a
    /// pid is not reused while its process is an unreaped child, so the first status for
    /// `pid` posted since then is its own.
    pub fn wait_for_child(&self, pid: i32, mark: u64, timeout: Duration) -> Option<i32> {
        self.wait_until(timeout, |e| {
            e.list
                .iter()
                .find(|(seq, p, _, _)| *seq >= mark && *p == pid)
                .map(|(_, _, _, s)| *s)
        })
    }

    fn wait_until(
        &self,
        timeout: Duration,
        found: impl Fn(&Entries) -> Option<i32>,
    ) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(s) = found(&e) {
                return Some(s);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            e = self
                .posted
                .wait_timeout(e, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The status of `(pid, start_time)` if it has been posted.
    pub fn get(&self, pid: i32, start_time: u64) -> Option<i32> {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        find(&e, pid, start_time)
    }

    /// Waits up to `timeout` for the status of `(pid, start_time)`.
    pub fn wait_for(&self, pid: i32, start_time: u64, timeout: Duration) -> Option<i32> {
        self.wait_until(timeout, |e| find(e, pid, start_time))
    }
}

fn find(e: &Entries, pid: i32, start_time: u64) -> Option<i32> {
    e.list
        .iter()
        .rev()
        .find(|(_, p, t, _)| *p == pid && *t == start_time)
        .map(|(_, _, _, s)| *s)
}
