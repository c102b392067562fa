//! Starting a service's log writer (`--log-timestamps on|stream`): the pipes between the
//! service and the writer, and the writer process itself, outside the service's kill
//! scope. What the writer does is in the `logwriter` module.
//!
//! ```text
//! service ──stdout pipe (O_RDWR)──▶ keeper (fd 0) ─┐ each holds the read ends and
//!         ──stderr pipe (O_RDWR)──▶ keeper (fd 1) ─┤ watches the other: whichever
//!                                   worker (fd 0, 1)┘ survives starts the other anew.
//!                                   The worker reads both, stamps, queues, writes,
//!                                   rotates; both exit at end of input
//! ```
//!
//! **The service holds a read end too.** Its stdout and stderr are not the pipes' write
//! ends but the pipes opened again through `/proc/self/fd/N` with `O_RDWR`: one
//! descriptor that writes the pipe and also reads it. A pipe with a reader never fails a
//! write with EPIPE nor raises SIGPIPE, and the service is a reader of its own output for
//! as long as it holds the descriptor, so nothing that becomes of the writer's processes
//! can kill it. The writer still sees end of input when every write reference is gone
//! (the service's own descriptor, and its children's copies, are write references).
//!
//! The writer is started by whoever starts the service (the CLI or the daemon), with
//! `/proc/self/exe`, so it is not in the service's cgroup leaf nor in its session: a stop
//! or a crash of the service never reaches it, and it exits on its own once every holder
//! of the pipes' write ends (the service and whatever it forked) is gone.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

use crate::error::SpawnError;
use crate::process::handle::Handle;

/// The size asked for each pipe to a log writer (the unprivileged maximum by default).
pub const PIPE_SIZE: i32 = 1024 * 1024;

/// The pipes of one instance: the service gets `out_w` and `err_w`, each a descriptor
/// that writes its pipe and reads it too (see the module documentation); the writer gets
/// the read ends.
pub struct LogPipes {
    pub out_w: OwnedFd,
    /// A second pipe for stderr, when stderr is tagged or goes to its own file.
    pub err_w: Option<OwnedFd>,
    out_r: Option<OwnedFd>,
    err_r: Option<OwnedFd>,
}

impl LogPipes {
    /// One pipe (stderr shares stdout's), or two.
    pub fn new(two: bool) -> Result<LogPipes, SpawnError> {
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|errno| SpawnError::Os {
                what: "pipe",
                errno,
            })
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = if two {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        // A larger pipe than the default 64 KiB: fewer switches between a fast service
        // and the writer, and more room for the service while a killed writer is
        // replaced. Where the system allows less (pipe-max-size), the default stays.
        for w in std::iter::once(&out_w).chain(err_w.as_ref()) {
            let _ = nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        }
        let out_w = read_write(&out_w)?;
        let err_w = err_w.as_ref().map(read_write).transpose()?;
        Ok(LogPipes {
            out_w,
            err_w,
            out_r: Some(out_r),
            err_r,
        })
    }
}

impl LogPipes {
    /// The read ends, for a reader other than a log writer (a check command's output
    /// read by tend itself).
    pub fn take_read_ends(&mut self) -> (Option<OwnedFd>, Option<OwnedFd>) {
        (self.out_r.take(), self.err_r.take())
    }
}

/// The pipe of the write end `w` opened again, for reading and writing: what the service
/// is given, so that it holds a read end of its own output for as long as it lives.
/// (`O_RDWR` on a pipe never blocks in open, unlike `O_WRONLY` without a reader.)
fn read_write(w: &OwnedFd) -> Result<OwnedFd, SpawnError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", w.as_raw_fd()))
        .map(OwnedFd::from)
        .map_err(|e| SpawnError::Os {
            what: "opening the log pipe for reading and writing (/proc/self/fd)",
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
}

/// A started writer, killed on drop unless [`Writer::keep`] was called: a start that does
/// not go ahead takes its writer back.
pub struct Writer {
    /// The keeper, pinned by a pidfd: a daemon's reaper may reap it at any moment, and a
    /// bare pid could then name a stranger.
    keeper: Option<Handle>,
}

impl Writer {
    /// Starts the writer (`tend ARGS`, ARGS beginning with `log-writer`) on the read ends
    /// of `pipes`: stdout's
    /// pipe as its fd 0, stderr's (if any) as its fd 1. Our copies of the read ends are
    /// closed afterwards, so only the writer holds them.
    pub fn spawn(pipes: &mut LogPipes, args: &[OsString]) -> Result<Writer, SpawnError> {
        let fail = |e: std::io::Error| {
            SpawnError::LogWriter(format!(
                "cannot start the log writer: {}",
                crate::error::io_reason(&e)
            ))
        };
        let out_r = pipes.out_r.take().expect("read ends are handed over once");
        let err_r = pipes.err_r.take();
        // /proc/self/exe rather than a path: it runs this very binary even if the file
        // was replaced (an upgrade) since this process started.
        let child = Command::new("/proc/self/exe")
            .arg0("tend")
            .args(args)
            .stdin(Stdio::from(out_r))
            .stdout(err_r.map_or_else(Stdio::null, Stdio::from))
            .stderr(Stdio::null())
            .current_dir("/")
            .spawn()
            .map_err(fail)?;
        // Not waited for here: the daemon's reaper or init reaps it; a CLI exits soon.
        // Gone already (it could not run): the service will meet no reader, so say so.
        let keeper = Handle::pin(child.id() as i32)
            .map(|(h, _)| h)
            .ok_or_else(|| SpawnError::LogWriter("the log writer ended at once".into()))?;
        Ok(Writer {
            keeper: Some(keeper),
        })
    }

    /// The start went ahead: the writer stays.
    pub fn keep(mut self) {
        self.keeper = None;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The keeper only: a worker it may have started (and a keeper that worker starts
        // again) ends by itself at end of input, once the held service process is killed
        // and the start's copies of the write ends are closed, which a start that does
        // not go ahead does right after.
        if let Some(k) = self.keeper.take() {
            let _ = k.signal(Signal::SIGKILL);
        }
    }
}

/// Moves this process into the cgroup `dir` (its children are then born there).
pub fn join_cgroup(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), "0")
}

/// Closes every descriptor above 2 this process was started with. A log writer lives as
/// long as its service, and must not hold on to what the `tend` that started it had
/// inherited (a pipe whose reader waits for its end, a CI runner's, say): std's
/// `Command` hands down every descriptor not marked close-on-exec.
pub fn close_inherited() {
    // SAFETY: called first thing in a log writer process, before it has opened a
    // descriptor or started a thread: none above 2 is owned by anything in it.
    unsafe { libc::close_range(3, libc::c_uint::MAX, 0) };
}

/// Takes ownership of descriptor `fd` this process was started with (the log writer's
/// pipes, fds 0 and 1).
pub fn inherited(fd: i32) -> OwnedFd {
    // SAFETY: called once per descriptor, at its start, by a log writer process (keeper
    // or worker), whose fds 0 and 1 are the pipes it was started on and which nothing
    // else in it uses (it never reads stdin nor prints to stdout).
    unsafe { OwnedFd::from_raw_fd(fd) }
}
