//! What runs in the forked processes, between `fork` and `exec`: only async-signal-safe
//! calls, on data prepared before the fork (see the parent's side in `mod.rs`).

use std::ffi::CString;
use std::os::fd::RawFd;

use nix::errno::Errno;

use super::report::{send, GO, TAG_ERROR, TAG_PID, TAG_READY};
use crate::error::Stage;

/// Raw pointers and descriptors for the child, computed before the fork.
pub struct ChildArgs<'a> {
    pub program: &'a CString,
    pub argv: *const *const libc::c_char,
    pub envp: *const *const libc::c_char,
    pub cwd: &'a CString,
    pub stdio: [RawFd; 3],
    pub report: RawFd,
    pub gate: RawFd,
    /// Descriptors the child keeps, sorted.
    pub keep: [RawFd; 6],
    pub sigmax: libc::c_int,
    /// `cgroup.procs` of the instance's cgroup, to join before anything else (when
    /// `clone3(CLONE_INTO_CGROUP)` is not available).
    pub cgroup_procs: Option<&'a CString>,
    /// The instance's cgroup directory, opened: the service is created inside it.
    pub cgroup_fd: Option<RawFd>,
    /// The limit on open files the program gets, when ours was raised (the daemon's: see
    /// [`crate::process::limits`]).
    pub nofile: Option<&'a libc::rlimit>,
}

/// `struct clone_args` of clone3(2), up to `cgroup` (Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks the service process: straight into its cgroup with `clone3(CLONE_INTO_CGROUP)`
/// where there is one (no migration afterwards, which costs an RCU grace period under
/// the kernel's threadgroup lock), else a plain fork. Returns (pid, joined): `joined`
/// tells the child it is already in its cgroup.
///
/// # Safety
/// Must only be called in a forked, single-threaded child.
unsafe fn fork_service(a: &ChildArgs) -> (libc::pid_t, bool) {
    if let Some(fd) = a.cgroup_fd {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without a stack behaves as fork: the child continues on a copy
        // of this single-threaded process's stack. Async-signal-safe (a system call).
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid >= 0 {
            return (pid as libc::pid_t, true);
        }
        // ENOSYS/E2BIG/EINVAL: an older kernel; fall back to fork and join by writing.
    }
    // SAFETY: as above, a fork of a single-threaded child.
    (unsafe { libc::fork() }, false)
}

/// Reports a failed step and exits.
///
/// # Safety
/// Must only be called in a forked child.
unsafe fn fail(fd: RawFd, stage: Stage) -> ! {
    let errno = Errno::last_raw() as u32;
    // SAFETY: async-signal-safe write and _exit in a forked child.
    unsafe {
        send(fd, TAG_ERROR, stage as u32, errno);
        libc::_exit(127)
    }
}

/// Closes every descriptor except `keep` (sorted, all above 2) and 0-2.
///
/// # Safety
/// Must only be called in a forked child, where no other thread uses descriptors.
unsafe fn close_others(keep: &[RawFd]) {
    let mut from: libc::c_uint = 3;
    for &k in keep {
        let k = k as libc::c_uint;
        if k > from {
            // SAFETY: close_range on a range of our own descriptors; async-signal-safe.
            unsafe { libc::close_range(from, k - 1, 0) };
        }
        from = from.max(k + 1);
    }
    // SAFETY: as above, up to the highest possible descriptor.
    unsafe { libc::close_range(from, libc::c_uint::MAX, 0) };
}

/// The intermediate child: only what it needs open, new session, fork the service,
/// report its pid, exit.
///
/// # Safety
/// Must only be called in a freshly forked child; never returns.
pub unsafe fn intermediate(a: &ChildArgs) -> ! {
    // SAFETY: every call below is async-signal-safe and made in a forked child.
    unsafe {
        close_others(&a.keep);
        if libc::setsid() < 0 {
            fail(a.report, Stage::Setsid);
        }
        let (pid, joined) = fork_service(a);
        if pid < 0 {
            fail(a.report, Stage::Fork);
        }
        if pid == 0 {
            service(a, joined);
        }
        send(a.report, TAG_PID, pid as u32, 0);
        libc::_exit(0)
    }
}

/// The service process: default dispositions, stdio, chdir, umask; report ready; wait
/// at the gate; unblock signals; exec.
///
/// # Safety
/// Must only be called in a freshly forked child; never returns.
unsafe fn service(a: &ChildArgs, joined: bool) -> ! {
    // SAFETY: every call below is async-signal-safe and made in a forked child; the
    // pointers passed point to data prepared before the fork and still alive.
    unsafe {
        // Every signal is still blocked (inherited from the forking thread): reset the
        // dispositions before anything can be delivered. Handlers would run tend's code
        // in this process, and SIG_IGN would survive exec. The raw system call, because
        // glibc's sigaction refuses its two internal signals (32 and 33), which a parent
        // started through glibc's posix_spawn can hand down as ignored.
        // First into the cgroup: from here on everything this process forks is born
        // inside it. Writing "0" moves the writing process.
        if let Some(procs) = a.cgroup_procs.filter(|_| !joined) {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(a.report, Stage::Cgroup);
            }
            libc::close(fd);
        }
        for sig in 1..=a.sigmax {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                crate::process::signals::default_disposition_raw(sig);
            }
        }
        for (target, &fd) in a.stdio.iter().enumerate() {
            if libc::dup2(fd, target as RawFd) < 0 {
                fail(a.report, Stage::Stdio);
            }
        }
        if libc::chdir(a.cwd.as_ptr()) < 0 {
            fail(a.report, Stage::Chdir);
        }
        libc::umask(0o022);
        send(a.report, TAG_READY, libc::getpid() as u32, 0);
        let mut byte = 0u8;
        loop {
            let n = libc::read(a.gate, (&mut byte as *mut u8).cast(), 1);
            if n == 1 && byte == GO {
                break;
            }
            if n < 0 && Errno::last() == Errno::EINTR {
                continue;
            }
            // End of file or anything else: the caller did not commit. Never run.
            libc::_exit(0);
        }
        // Keep nothing of tend's descriptors (the database above all) in the service.
        // Marking them close-on-exec rather than closing keeps the report pipe usable
        // until exec.
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        );
        if let Some(r) = a.nofile {
            // Lowering a soft limit cannot be refused; if it were, the program would
            // only get more descriptors than asked.
            crate::process::limits::set_in_child(r);
        }
        crate::process::signals::unblock_all_raw();
        libc::execve(a.program.as_ptr(), a.argv, a.envp);
        fail(a.report, Stage::Exec)
    }
}
