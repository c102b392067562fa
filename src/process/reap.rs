//! The daemon's side of being a parent: child subreaper and reaping.

use std::io;

use nix::errno::Errno;

use super::identity;

/// Makes this process the reaper of every orphan below it: services double-forked by the
/// daemon re-parent to it when their intermediate exits, so it learns their exit status.
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
        // child): look again.
    }
}
