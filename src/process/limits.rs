//! The limit on open files (`RLIMIT_NOFILE`): the daemon's own, and what the services
//! it starts get.
//!
//! The daemon holds a pidfd for every service it adopted, so its need grows with the
//! number of services, and a daemon that runs out of descriptors cannot even check
//! whether a service still runs. So it raises its soft limit to the hard limit when it
//! comes up, as supervisord's `minfds` does. The services it starts do not inherit the
//! raised limit: each gets the soft limit the daemon itself was given, the one a
//! `tend start` from the same shell would hand on, and the 1024 most systems start
//! programs with (a program that uses `select(2)` cannot handle a descriptor above
//! 1023; systemd keeps the soft limit at 1024 for that reason too). A service's own
//! `limit_nofile` wins over this: it is set instead (see `spawn::setup`).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// The soft limit this process had before [`raise`], for its children; `u64::MAX`:
/// not raised.
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// `(soft, hard)` limit on open files of this process.
pub fn nofile() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

/// What [`raise`] did: the soft limit before and after, and the hard limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raised {
    pub before: u64,
    pub after: u64,
    pub hard: u64,
}

/// Raises this process's soft limit on open files to its hard limit, remembering the
/// soft limit it had for the services it starts (see [`for_children`]).
pub fn raise() -> io::Result<Raised> {
    let (soft, hard) = nofile()?;
    if soft < hard {
        let r = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads a valid rlimit; raising the soft limit up to the hard
        // one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } < 0 {
            return Err(io::Error::last_os_error());
        }
        ORIGINAL_SOFT.store(soft, Ordering::Relaxed);
    }
    Ok(Raised {
        before: soft,
        after: hard.max(soft),
        hard,
    })
}

/// The limit a child must set before it execs the program of a service: the soft limit
/// this process had before [`raise`] (and the hard limit as it is). `None`: never
/// raised, the child keeps what it inherits.
pub fn for_children() -> Option<libc::rlimit> {
    let soft = ORIGINAL_SOFT.load(Ordering::Relaxed);
    if soft == u64::MAX {
        return None;
    }
    let (_, hard) = nofile().ok()?;
    Some(libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    })
}

// prlimit64(2) takes a `struct rlimit64`: two 64-bit values, which is what `rlimit` is on
// the targets tend builds for.
const _: () = assert!(std::mem::size_of::<libc::rlimit>() == 16);

/// Sets the limit on open files to `r`, in a forked child before exec; false if the
/// kernel refused.
///
/// # Safety
/// Must only be called where a raw system call is allowed (it is async-signal-safe:
/// no allocation, no lock).
pub unsafe fn set_in_child(r: &libc::rlimit) -> bool {
    // SAFETY: prlimit64 on ourselves (pid 0) with a valid new limit and no old one to
    // fill: a plain system call, safe between fork and exec. (glibc's setrlimit makes
    // the same call, but is not on the list of async-signal-safe functions.)
    unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE,
            r as *const libc::rlimit,
            std::ptr::null_mut::<libc::rlimit>(),
        ) == 0
    }
}
