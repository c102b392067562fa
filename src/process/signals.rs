//! Signal masks around the critical sections of a start.
//!
//! The kernel's signal set is 64 bits on Linux; the raw `rt_sigprocmask` system call is
//! used so that glibc's two internal signals (32 and 33, which its `sigprocmask` wrapper
//! silently leaves out) are blocked too while a child is forked.

/// Blocks every signal in the calling thread until dropped (then restores the previous
/// mask). Around `fork`, so the child starts with every signal blocked.
pub struct BlockAll {
    old: u64,
}

impl BlockAll {
    pub fn new() -> BlockAll {
        let all: u64 = !0;
        let mut old: u64 = 0;
        // SAFETY: rt_sigprocmask with valid pointers to 8-byte masks, the kernel's
        // sigset size on Linux. SIGKILL and SIGSTOP are ignored by the kernel.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all as *const u64,
                &mut old as *mut u64,
                8usize,
            );
        }
        BlockAll { old }
    }
}

impl Default for BlockAll {
    fn default() -> Self {
        BlockAll::new()
    }
}

impl Drop for BlockAll {
    fn drop(&mut self) {
        // SAFETY: as in `new`, restoring the mask saved there.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &self.old as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
}

/// Unblocks every signal; async-signal-safe (for a forked child just before exec).
///
/// # Safety
/// Only changes the calling thread's mask; safe to call anywhere, `unsafe` only so that
/// callers in a forked child keep it inside their audited unsafe block.
pub unsafe fn unblock_all_raw() {
    let none: u64 = 0;
    // SAFETY: rt_sigprocmask with a valid pointer to an 8-byte mask.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &none as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

/// Sets `sig`'s disposition to the default with the raw `rt_sigaction` system call (glibc's
/// wrapper refuses signals 32 and 33); async-signal-safe.
///
/// # Safety
/// Only changes a signal disposition; `unsafe` so that callers in a forked child keep it
/// inside their audited unsafe block.
pub unsafe fn default_disposition_raw(sig: libc::c_int) {
    // The kernel's struct sigaction on x86_64 and arm64: handler, flags, restorer, mask,
    // each 8 bytes. All zero: SIG_DFL, no flags, no restorer, an empty mask.
    let dfl = [0u64; 4];
    // SAFETY: rt_sigaction with a valid pointer to a zeroed kernel sigaction, no old
    // action wanted, and the kernel's 8-byte sigset size.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            dfl.as_ptr(),
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

/// Holds off SIGINT, SIGTERM, SIGHUP and SIGQUIT in the calling thread until dropped:
/// the CLI takes it from before a spawn until the new process is recorded and exec'd, so
/// Ctrl-C or a closed terminal cannot leave a started process unrecorded (or a recorded
/// one never started). A signal that arrives meanwhile is delivered when it is dropped.
pub struct Deferred {
    old: Option<nix::sys::signal::SigSet>,
}

impl Deferred {
    pub fn new() -> Deferred {
        use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
        let mut set = SigSet::empty();
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            set.add(s);
        }
        let mut old = SigSet::empty();
        let ok = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).is_ok();
        Deferred {
            old: ok.then_some(old),
        }
    }
}

impl Default for Deferred {
    fn default() -> Self {
        Deferred::new()
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if let Some(old) = self.old.take() {
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&old),
                None,
            );
        }
    }
}
