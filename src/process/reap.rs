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
    /// recorded instance.
    pub start_time: Option<u64>,
    /// The `waitpid` status word.
    pub status: i32,
}

/// Reaps one exited child, if any, without blocking.
///
/// The child is first looked at with `WNOWAIT` (it stays a zombie, so its pid cannot be
/// reused and /proc still shows its start time), then reaped by pid.
pub fn reap_one() -> Option<Reaped> {
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
            return None; // ECHILD: no children at all
        }
        // SAFETY: waitid filled `info` for a child state change (si_pid 0 means none).
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            return None;
        }
        let start_time = identity::stat(pid).ok().flatten().map(|s| s.start_time);
        let mut status = 0;
        // SAFETY: waitpid on a child we just saw exit, with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(Reaped {
                pid,
                start_time,
                status,
            });
        }
        // Someone else reaped it meanwhile (a spawning thread reaping its intermediate
        // child, or discarding a process that never ran): look again.
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
