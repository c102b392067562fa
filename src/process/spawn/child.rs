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
    /// The process settings (see `setup.rs`), as numbers.
    pub umask: libc::mode_t,
    /// (resource, limit, the stage that reports a failure).
    pub limits: &'a [(libc::c_int, libc::rlimit, Stage)],
    pub nice: Option<libc::c_int>,
    /// The decimal text written to /proc/self/oom_score_adj.
    pub oom_score_adj: Option<&'a [u8]>,
    /// (uid, gid, supplementary groups): the identity to take, as root.
    pub credentials: Option<(libc::uid_t, libc::gid_t, &'a [libc::gid_t])>,
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
/// Both are raw system calls, never glibc's `fork()`: this process shares tend's memory
/// (see `clone_intermediate`), and `fork()` would run tend's atfork handlers and take
/// glibc's allocator locks in memory that tend's other threads are using.
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
        // Only a kernel that lacks clone3 (ENOSYS, before 5.3) or CLONE_INTO_CGROUP
        // (E2BIG or EINVAL for the larger struct, before 5.7) falls back to fork and a
        // write to cgroup.procs. Any other error (EAGAIN at the process limit, ENOMEM,
        // a cgroup that refuses the process) is this start's failure, reported as such.
        match Errno::last() {
            Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL => {}
            _ => return (-1, false),
        }
    }
    // SAFETY: clone(SIGCHLD) with no new stack is fork(2) without glibc's wrapper: the
    // child continues on a copy of this single-threaded process's stack.
    // Async-signal-safe (a system call).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    (pid as libc::pid_t, false)
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

/// Closes every descriptor except `keep` (sorted, all above 2) and 0-2. False if that
/// could not be done.
///
/// # Safety
/// Must only be called in a forked child, where no other thread uses descriptors.
unsafe fn close_others(keep: &[RawFd]) -> bool {
    let mut from: libc::c_uint = 3;
    let mut ranges_ok = true;
    for &k in keep {
        let k = k as libc::c_uint;
        if k > from {
            // SAFETY: close_range on a range of our own descriptors; async-signal-safe.
            ranges_ok &= unsafe { libc::close_range(from, k - 1, 0) } == 0;
        }
        from = from.max(k + 1);
    }
    // SAFETY: as above, up to the highest possible descriptor.
    ranges_ok &= unsafe { libc::close_range(from, libc::c_uint::MAX, 0) } == 0;
    if ranges_ok {
        return true;
    }
    // close_range(2) is Linux 5.9: before it, list /proc/self/fd and close one by one.
    // SAFETY: as above; see `close_listed`.
    unsafe { close_listed(keep) }
}

/// Closes every descriptor from 3 up that is not in `keep`, reading the list from
/// /proc/self/fd with raw system calls (open, getdents64, close: all async-signal-safe,
/// no allocation), as glibc's own `closefrom` fallback does. Closing while listing can
/// make the listing skip entries, so it starts over until a pass closes nothing.
///
/// # Safety
/// Must only be called in a forked child, where no other thread uses descriptors.
unsafe fn close_listed(keep: &[RawFd]) -> bool {
    // SAFETY: a NUL-terminated literal; open is async-signal-safe.
    let dir = unsafe {
        libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return false;
    }
    let mut buf = [0u8; 1024];
    loop {
        let mut closed = 0;
        // SAFETY: lseek on our own descriptor.
        if unsafe { libc::lseek(dir, 0, libc::SEEK_SET) } < 0 {
            break;
        }
        loop {
            // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
            let n =
                unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            while at + 19 < n as usize {
                // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                if reclen == 0 {
                    break;
                }
                let mut fd: i64 = 0;
                let mut digits = 0;
                for &b in &buf[at + 19..(at + reclen).min(n as usize)] {
                    if !b.is_ascii_digit() {
                        break;
                    }
                    fd = fd * 10 + i64::from(b - b'0');
                    digits += 1;
                }
                let fd = fd as RawFd;
                if digits > 0 && fd > 2 && fd != dir && !keep.contains(&fd) {
                    // SAFETY: closing a descriptor of this process; async-signal-safe.
                    unsafe { libc::close(fd) };
                    closed += 1;
                }
                at += reclen;
            }
        }
        if closed == 0 {
            break;
        }
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(dir) };
    true
}

/// The intermediate child: only what it needs open, new session, fork the service,
/// report its pid, exit.
///
/// # Safety
/// Must only be called in a freshly forked child; never returns.
pub unsafe fn intermediate(a: &ChildArgs) -> ! {
    // SAFETY: every call below is async-signal-safe and made in a forked child.
    unsafe {
        if !close_others(&a.keep) {
            fail(a.report, Stage::CloseFds);
        }
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
        apply_settings(a);
        // After the identity changed: the working directory is entered as the user the
        // program runs as, so one it may not enter is refused here, before it runs.
        if libc::chdir(a.cwd.as_ptr()) < 0 {
            fail(a.report, Stage::Chdir);
        }
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
        // until exec. The intermediate closed everything but `keep` before it forked
        // this process, so where CLOSE_RANGE_CLOEXEC is missing (before Linux 5.11)
        // marking those is the same.
        if libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        ) != 0
        {
            for &fd in &a.keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
        // An explicit limit_nofile was set before the gate, in `apply_settings`.
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

/// Applies the process settings: limits, nice and oom_score_adj first, while the
/// process still has tend's privileges (raising a hard limit or lowering either number
/// needs them), then the umask, then the identity, groups before the group before the
/// user (each step needs the privilege the next one drops). A failure reports the
/// stage (the parent names the setting and its value) and exits: the program never
/// runs.
///
/// Raw system calls only, never glibc's wrappers: glibc's `setuid`/`setgid`/`setgroups`
/// in a process it believes multi-threaded (this one is a raw clone of tend's, and
/// glibc's thread list came with the copy) signal every thread of that list to change
/// its identity too, threads that live in tend, not here; `setrlimit` and
/// `setpriority` are not on the list of async-signal-safe functions. The system calls
/// act on the calling thread, which is this whole process.
///
/// # Safety
/// Must only be called in the forked service process, before exec.
unsafe fn apply_settings(a: &ChildArgs) {
    // SAFETY: system calls with pointers to data prepared before the fork and alive
    // (the parent's thread is suspended or the data was copied with the fork); `fail`
    // is async-signal-safe.
    unsafe {
        for (resource, limit, stage) in a.limits {
            if libc::syscall(
                libc::SYS_prlimit64,
                0,
                *resource,
                limit as *const libc::rlimit,
                std::ptr::null_mut::<libc::rlimit>(),
            ) != 0
            {
                fail(a.report, *stage);
            }
        }
        if let Some(n) = a.nice {
            if libc::syscall(libc::SYS_setpriority, libc::PRIO_PROCESS, 0, n) != 0 {
                fail(a.report, Stage::Nice);
            }
        }
        if let Some(text) = a.oom_score_adj {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd < 0 || libc::write(fd, text.as_ptr().cast(), text.len()) != text.len() as isize {
                fail(a.report, Stage::OomScoreAdj);
            }
            libc::close(fd);
        }
        libc::umask(a.umask);
        if let Some((uid, gid, groups)) = a.credentials {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
                fail(a.report, Stage::Groups);
            }
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
                fail(a.report, Stage::Group);
            }
            if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
                fail(a.report, Stage::User);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The fallback for kernels without close_range(2), run in a forked child as the
    /// intermediate runs it: every descriptor from 3 up goes, except those kept.
    #[test]
    fn close_listed_closes_everything_but_what_is_kept() {
        let files: Vec<std::fs::File> = (0..40)
            .map(|_| std::fs::File::open("/dev/null").expect("open /dev/null"))
            .collect();
        let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let keep = [fds[7], fds[30]];
        // SAFETY: the child only makes system calls (close_listed, fcntl, _exit) and
        // touches memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: a forked child; see above.
            unsafe {
                let listed = close_listed(&keep);
                let mut wrong = 0;
                for &fd in &fds {
                    let open = libc::fcntl(fd, libc::F_GETFD) >= 0;
                    if open != keep.contains(&fd) {
                        wrong += 1;
                    }
                }
                for fd in 0..3 {
                    if libc::fcntl(fd, libc::F_GETFD) < 0 && fd == 2 {
                        wrong += 100;
                    }
                }
                libc::_exit(if listed && wrong == 0 { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}: a descriptor was closed or kept wrongly"
        );
    }
}
