//! What `tend up` needs of a parent: being PID 1 (reaping every orphan), and tying the
//! daemon it starts to its own life.

use std::io;

/// Whether this process is the first of its pid namespace (a container's init).
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Reaps one exited child, any child: `(pid, waitpid status)`, or `None` when no child
/// has exited (or there is no child at all). As PID 1, every orphan of the namespace is
/// a child: calling this until `None` after each SIGCHLD leaves no zombie.
pub fn reap_any() -> Option<(i32, i32)> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes only the status word we pass; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            return Some((pid, status));
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// The exit status a shell would show for a `waitpid` status word: the code, or 128 +
/// the signal.
pub fn shell_status(status: i32) -> u8 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else if libc::WIFSIGNALED(status) {
        (128 + libc::WTERMSIG(status)).min(255) as u8
    } else {
        1
    }
}

/// Asks the kernel to send `signal` to this process when its parent ends (however it
/// ends: SIGKILL included), then checks that the parent is still `parent`: one that
/// ended before the request was made would never trigger it. `false`: the parent is
/// gone already.
pub fn die_with_parent(parent: i32, signal: i32) -> io::Result<bool> {
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes plain integers and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(nix::unistd::getppid().as_raw() == parent)
}

/// Sends `signal` to process `pid`, a child of this process not yet reaped (so its pid
/// cannot name another process).
pub fn signal_child(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers. The caller reaps `pid` itself, so until it
    // does, the pid is its child's (alive or a zombie), never a stranger's.
    if unsafe { libc::kill(pid, signal) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
