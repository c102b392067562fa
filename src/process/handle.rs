//! A handle on one process: a pidfd plus the identity it was opened for.
//!
//! A pidfd refers to one process for as long as the descriptor is open, whatever becomes
//! of its pid number, so a signal sent through it can never reach a stranger that was
//! handed the same number later. Every signal tend sends goes through a [`Handle`].
//!
//! Reading `/proc/PID/stat` is only meaningful for the pinned process while that process
//! has not been reaped (after reaping, the number is free and /proc may show someone
//! else). So a read is trusted only when the pidfd still reports the process as present
//! *after* the read: a process that was present afterwards was present during the read,
//! and its number could not have been reused in between.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::identity::{self, Stat};

/// A pinned process.
#[derive(Debug)]
pub struct Handle {
    pid: i32,
    start_time: u64,
    fd: OwnedFd,
}

/// What became of a recorded process, with a handle when it is still ours and running.
#[derive(Debug)]
pub enum Found {
    Alive(Handle),
    /// It has exited (it is gone, or a zombie waiting to be reaped).
    Exited,
    /// The record cannot describe a live process of ours; the reason says why.
    Stale(String),
    /// The check could not be made (no descriptor left, out of memory, /proc not
    /// readable): nothing is known, and nothing may be concluded; the reason says why.
    Unknown(String),
}

impl Handle {
    /// Opens a handle on the recorded process `(pid, start_time, recorded_boot)` after
    /// checking its identity, including, for an instance with a cgroup, that it is a
    /// member of `cgroup`. Nothing is signalled.
    pub fn open(
        pid: i32,
        start_time: u64,
        recorded_boot: &str,
        current_boot: &str,
        cgroup: Option<&Path>,
    ) -> Found {
        if recorded_boot != current_boot {
            return Found::Stale("recorded before the last reboot".into());
        }
        if pid <= 0 {
            return Found::Stale(format!("invalid pid {pid}"));
        }
        let fd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(Errno::ESRCH) => return Found::Exited,
            // EMFILE, ENFILE, ENOMEM...: nothing is known about the process.
            Err(e) => {
                return Found::Unknown(format!(
                    "cannot open pid {pid}: {}",
                    e.desc().to_lowercase()
                ))
            }
        };
        // The reads come after the pidfd is open, so if the pidfd still shows the
        // process afterwards, they described the pinned process.
        let inside = match cgroup.map(|cg| identity::membership(pid, cg)).transpose() {
            Ok(Some(None)) => return Found::Exited,
            Ok(m) => Ok(m.flatten()),
            Err(why) => Err(why),
        };
        let st = match identity::stat(pid) {
            Ok(Some(s)) => s,
            Ok(None) => return Found::Exited,
            Err(e) => {
                return Found::Unknown(format!(
                    "cannot read /proc/{pid}/stat: {}",
                    crate::error::io_reason(&e)
                ))
            }
        };
        match send(&fd, None) {
            // EPERM: still there, but we may not signal it (it changed its user ids);
            // whether it is ours is for its start time to say.
            Ok(()) | Err(Errno::EPERM) => {}
            Err(Errno::ESRCH) => return Found::Exited,
            Err(e) => {
                return Found::Unknown(format!(
                    "cannot check pid {pid}: {}",
                    e.desc().to_lowercase()
                ))
            }
        }
        if st.start_time != start_time {
            return Found::Stale(format!(
                "pid {pid} now belongs to another process (start time {} != recorded {start_time})",
                st.start_time
            ));
        }
        if st.exited() {
            return Found::Exited;
        }
        // Whether it is in the instance's cgroup matters only now that it is alive.
        match inside {
            Ok(Some(identity::Membership::Outside { cgroup, actual })) => {
                return Found::Stale(identity::outside(&cgroup, &actual))
            }
            Ok(_) => {}
            Err(why) => return Found::Unknown(why),
        }
        Found::Alive(Handle {
            pid,
            start_time,
            fd,
        })
    }

    /// Pins whatever process has `pid` now, with its stat as read while it was pinned.
    /// `None` when there is no such process (or it went away meanwhile).
    pub fn pin(pid: i32) -> Option<(Handle, Stat)> {
        let fd = pidfd_open(pid).ok()?;
        let st = identity::stat(pid).ok().flatten()?;
        send(&fd, None).ok()?;
        Some((
            Handle {
                pid,
                start_time: st.start_time,
                fd,
            },
            st,
        ))
    }

    /// A second handle on the same process (its own descriptor).
    pub fn try_clone(&self) -> io::Result<Handle> {
        Ok(Handle {
            pid: self.pid,
            start_time: self.start_time,
            fd: self.fd.try_clone()?,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// The process's current stat, or `None` once it has been reaped (a zombie still
    /// answers: it keeps its session and group until its parent reaps it).
    pub fn stat(&self) -> Option<Stat> {
        let st = identity::stat(self.pid).ok().flatten()?;
        if st.start_time != self.start_time {
            return None;
        }
        send(&self.fd, None).ok()?;
        Some(st)
    }

    /// True once the process has exited (zombie or reaped).
    pub fn exited(&self) -> bool {
        self.wait(Duration::ZERO)
    }

    /// Waits up to `timeout` for the process to exit; true if it has.
    pub fn wait(&self, timeout: Duration) -> bool {
        wait_any(&[self], timeout).is_some()
    }

    /// Sends `signal` to this very process. `ESRCH` means it has been reaped.
    pub fn signal(&self, signal: Signal) -> Result<(), Errno> {
        send(&self.fd, Some(signal))
    }

    /// A duplicate, in this process, of descriptor `target` of this very process
    /// (`pidfd_getfd`, Linux 5.6): the same open file description, close-on-exec. It
    /// needs ptrace access to the process (EPERM without: another user, or Yama's
    /// ptrace_scope refusing a process that is not our descendant); ESRCH once it has
    /// exited, EBADF if it has no such descriptor.
    pub fn dup_fd(&self, target: i32) -> Result<OwnedFd, Errno> {
        // SAFETY: pidfd_getfd with a valid pidfd, a descriptor number (the kernel checks
        // it in the target) and flags 0; it returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.fd.as_raw_fd(), target, 0) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Reaps the process if it is our child and has exited; its `waitpid` status word.
    pub fn try_reap(&self) -> Option<i32> {
        // SAFETY: siginfo_t is plain data; all-zero is a valid value for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: waitid on our own pidfd with a valid siginfo pointer; WNOHANG never
            // blocks. P_PIDFD (Linux 5.4) names exactly this process.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.fd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG,
                )
            };
            if r < 0 && Errno::last() == Errno::EINTR {
                continue;
            }
            if r < 0 {
                return None;
            }
            break;
        }
        // SAFETY: waitid filled `info`; si_pid is 0 when the child has not exited yet.
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if pid == 0 {
            return None;
        }
        Some(match code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            _ => status & 0x7f,
        })
    }
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Waits up to `timeout` until one of `handles` has exited; its index.
pub fn wait_any(handles: &[&Handle], timeout: Duration) -> Option<usize> {
    if handles.is_empty() {
        return None;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut fds: Vec<PollFd> = handles
            .iter()
            .map(|h| PollFd::new(h.fd.as_fd(), PollFlags::POLLIN))
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // Round a sub-millisecond remainder up, so a short wait is a wait at all.
        let ms = if ms == 0 && !left.is_zero() { 1 } else { ms };
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return None,
            Ok(_) => {
                return fds
                    .iter()
                    .position(|f| f.revents().is_some_and(|r| !r.is_empty()))
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: the pidfd_open syscall takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal`; `None` only checks that the process is still there.
fn send(fd: &OwnedFd, signal: Option<Signal>) -> Result<(), Errno> {
    let sig = signal.map_or(0, |s| s as libc::c_int);
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number (0: no signal, only
    // the existence and permission checks), no siginfo and flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// The pid of every child of `pid` (all its threads'), from /proc. Empty when unknown.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let mut p = t.path();
        p.push("children");
        if let Ok(text) = std::fs::read_to_string(&p) {
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Every pid in /proc whose session is `id`. One `getsid` per process, a cheap syscall,
/// rather than reading every process's stat. (A service's process groups all lie inside
/// its session, so the session is what has to be searched.)
pub fn in_session(id: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    let want = nix::unistd::Pid::from_raw(id);
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))) == Ok(want) {
            out.push(pid);
        }
    }
    out
}

/// True when process group `pgid` has any member (zombies included). Sends nothing:
/// `kill(-pgid, 0)` only looks.
pub fn group_exists(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None) != Err(Errno::ESRCH)
}

/// True when some process (zombies included) has pid `pid`.
pub fn exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// An io::Error for an errno, for callers that speak io.
pub fn io_error(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}
