//! Stopping a service: its stop signal to the whole process group, a bounded wait, then
//! SIGKILL to the group, then confirmation that nothing of it is left.
//!
//! The leader is pinned with a pidfd before anything is sent: once the pidfd is open and
//! the identity check passes, the pidfd can only ever refer to our process, and polling it
//! wakes the moment the process exits, with no sleep loop. The group itself cannot be
//! recycled while any member lives (Linux keeps a process group's id allocated until the
//! group is empty), so signalling it while our leader is alive only reaches our processes.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::identity::{self, Liveness};

/// How long to wait for the group to vanish after SIGKILL before reporting failure.
const KILL_CONFIRM: Duration = Duration::from_secs(5);

/// The recorded identity of a service instance.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub pid: i32,
    pub pgid: i32,
    pub start_time: u64,
    pub boot_id: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The record does not describe a live process of ours; nothing was signalled.
    Stale(String),
    /// The process had already exited; nothing was signalled.
    AlreadyExited,
    /// Stopped by the stop signal (`killed == false`) or by SIGKILL after the timeout.
    Stopped { killed: bool, took: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("sending {signal} to process group {pgid}: {errno}")]
    Signal {
        signal: Signal,
        pgid: i32,
        errno: Errno,
    },
    #[error("process group {pgid} still has live processes {waited:?} after SIGKILL")]
    Survived { pgid: i32, waited: Duration },
}

/// Stops the instance `t`: `signal` to its group, up to `timeout`, then SIGKILL.
pub fn stop(
    t: &Target,
    current_boot: &str,
    signal: Signal,
    timeout: Duration,
) -> Result<Outcome, StopError> {
    let started = Instant::now();
    let pidfd = match pidfd_open(t.pid) {
        Ok(fd) => Some(fd),
        Err(Errno::ESRCH) => return Ok(Outcome::AlreadyExited),
        // Kernels before 5.3 have no pidfd: fall back to polling the identity.
        Err(_) => None,
    };
    // Checked after opening the pidfd, so the process we checked is the one it pins.
    match identity::check(t.pid, t.start_time, t.boot_id, current_boot) {
        Liveness::Alive => {}
        Liveness::Exited => return Ok(Outcome::AlreadyExited),
        Liveness::Stale(why) => return Ok(Outcome::Stale(why)),
    }

    send(t, pidfd.as_ref(), signal)?;
    let deadline = started + timeout;
    if wait_gone(t, pidfd.as_ref(), deadline, current_boot) {
        return Ok(Outcome::Stopped {
            killed: false,
            took: started.elapsed(),
        });
    }

    send(t, pidfd.as_ref(), Signal::SIGKILL)?;
    let confirm = Instant::now() + KILL_CONFIRM;
    if wait_gone(t, pidfd.as_ref(), confirm, current_boot) {
        return Ok(Outcome::Stopped {
            killed: true,
            took: started.elapsed(),
        });
    }
    Err(StopError::Survived {
        pgid: t.pgid,
        waited: KILL_CONFIRM,
    })
}

/// Sends `signal` to the group, and to the leader itself if it left the group.
fn send(t: &Target, pidfd: Option<&OwnedFd>, signal: Signal) -> Result<(), StopError> {
    match killpg(Pid::from_raw(t.pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => {
            return Err(StopError::Signal {
                signal,
                pgid: t.pgid,
                errno,
            })
        }
    }
    let leader_elsewhere = matches!(identity::stat(t.pid), Ok(Some(s)) if s.pgrp != t.pgid);
    if leader_elsewhere {
        if let Some(fd) = pidfd {
            // The pidfd pins our process, so this cannot reach a recycled pid.
            let _ = pidfd_send_signal(fd, signal);
        }
    }
    Ok(())
}

/// Waits until the leader has exited and no live process is left in the group.
fn wait_gone(t: &Target, pidfd: Option<&OwnedFd>, deadline: Instant, boot: &str) -> bool {
    // Leader first: with a pidfd this is a single poll that wakes on exit.
    let mut pause = Duration::from_micros(200);
    loop {
        let now = Instant::now();
        let leader_gone = match pidfd {
            Some(fd) => {
                let left = deadline.saturating_duration_since(now);
                poll_readable(fd, left)
            }
            None => !matches!(
                identity::check(t.pid, t.start_time, t.boot_id, boot),
                Liveness::Alive
            ),
        };
        if leader_gone {
            break;
        }
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    // Then the rest of the group (helpers the service forked). `group_alive` tells
    // live members from zombies, since the leader stays a zombie until its parent
    // (init, or the daemon) reaps it.
    let mut pause = Duration::from_micros(200);
    loop {
        if !identity::group_alive(t.pgid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn poll_readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) => return n > 0,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Sends `signal` to the instance's main process, after the identity check, through a
/// pidfd so the signal cannot reach a recycled pid.
pub fn signal(t: &Target, current_boot: &str, signal: Signal) -> Result<Outcome, StopError> {
    let pidfd = match pidfd_open(t.pid) {
        Ok(fd) => fd,
        Err(Errno::ESRCH) => return Ok(Outcome::AlreadyExited),
        Err(errno) => {
            return Err(StopError::Signal {
                signal,
                pgid: t.pgid,
                errno,
            })
        }
    };
    match identity::check(t.pid, t.start_time, t.boot_id, current_boot) {
        Liveness::Alive => {}
        Liveness::Exited => return Ok(Outcome::AlreadyExited),
        Liveness::Stale(why) => return Ok(Outcome::Stale(why)),
    }
    pidfd_send_signal(&pidfd, signal).map_err(|errno| StopError::Signal {
        signal,
        pgid: t.pgid,
        errno,
    })?;
    Ok(Outcome::Stopped {
        killed: false,
        took: Duration::ZERO,
    })
}

/// Opens a pidfd for `pid` (Linux 5.3+).
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: the pidfd_open syscall takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_send_signal(fd: &OwnedFd, signal: Signal) -> Result<(), Errno> {
    // SAFETY: pidfd_send_signal with a valid pidfd, a signal number, no siginfo, flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as libc::c_int,
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
