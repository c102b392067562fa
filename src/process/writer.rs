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
//!
//! **A writer that is gone** (both processes killed together) is started again by the
//! daemon on the pipes of the running service: [`output_pipes`] says which pipes the
//! service writes to, [`held_pipes`] which of them a writer process still holds, and
//! [`read_end`] takes a read end of one back from the service itself (`pidfd_getfd`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

use crate::error::{PipeError, SpawnError};
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
        let out_r = pipes.out_r.take().expect("read ends are handed over once");
        let err_r = pipes.err_r.take();
        Writer::spawn_on(out_r, err_r, args)
    }

    /// Starts the writer on the read ends `out_r` (stdout's pipe, its fd 0) and `err_r`
    /// (stderr's, its fd 1), which are closed here afterwards.
    pub fn spawn_on(
        out_r: OwnedFd,
        err_r: Option<OwnedFd>,
        args: &[OsString],
    ) -> Result<Writer, SpawnError> {
        let fail = |e: std::io::Error| {
            SpawnError::LogWriter(format!(
                "cannot start the log writer: {}",
                crate::error::io_reason(&e)
            ))
        };
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

    /// The pid of its keeper (the process started here).
    pub fn keeper_pid(&self) -> Option<i32> {
        self.keeper.as_ref().map(Handle::pid)
    }

    /// The start went ahead: the writer stays.
    pub fn keep(mut self) {
        self.keeper = None;
    }
}

/// The pipes a running service writes its output to, as a start gave them (see
/// [`LogPipes`]): each by the inode of the pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputPipes {
    /// Its stdout's (fd 1).
    pub out: u64,
    /// Its stderr's (fd 2), when that is a pipe of its own.
    pub err: Option<u64>,
}

/// The pipes process `pid` writes its stdout and stderr to, if its stdout is a log
/// writer's pipe as a start gives it: a pipe open for reading and writing. A pipe the
/// service made itself (a shell's `exec > >(...)`) is a plain write end, never taken for
/// tend's. `None` when fd 1 is no such pipe, or `pid` is gone. Read from /proc: the
/// caller pins `pid`, and [`read_end`] checks that what it takes is the same pipe.
pub fn output_pipes(pid: i32) -> io::Result<Option<OutputPipes>> {
    let Some(out) = given_pipe(pid, 1)? else {
        return Ok(None);
    };
    let err = given_pipe(pid, 2)?.filter(|&e| e != out);
    Ok(Some(OutputPipes { out, err }))
}

/// The inode of the pipe descriptor `fd` of `pid` is, if it is one open for reading and
/// writing.
fn given_pipe(pid: i32, fd: i32) -> io::Result<Option<u64>> {
    let Some(link) = present(std::fs::read_link(format!("/proc/{pid}/fd/{fd}")))? else {
        return Ok(None);
    };
    let Some(ino) = pipe_inode(link.as_os_str().as_bytes()) else {
        return Ok(None);
    };
    let Some(info) = present(std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")))? else {
        return Ok(None);
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // The same pipe as the link named: the descriptor may be replaced between two reads.
    let same = field("ino:").and_then(|v| v.parse::<u64>().ok()) == Some(ino);
    let read_write = field("flags:")
        .and_then(|v| i32::from_str_radix(v, 8).ok())
        .is_some_and(|f| f & libc::O_ACCMODE == libc::O_RDWR);
    Ok((same && read_write).then_some(ino))
}

/// `pipe:[INODE]`, as /proc shows a pipe's descriptor.
fn pipe_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"pipe:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A read of /proc: `None` when the process or its descriptor is gone.
fn present<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A read of another process's /proc entry: `None` also when we may not look into it
/// (another user's process).
fn visible<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match present(r) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => Ok(None),
        other => other,
    }
}

/// The pipes live log writer processes hold, by inode, each with the pids holding it.
/// Every process whose command line is `tend MODE ...` (`mode`: the log writer's,
/// `logwriter::MODE`), keeper or worker, holds the pipes it reads as its fds 0 and 1;
/// so does a partner one of them starts, from fork to exec (it has their command line
/// and descriptors). One pass over /proc. `Err` when a process or /proc itself could not
/// be read for want of a resource (descriptors, memory): which pipes are held is then
/// not known.
pub fn held_pipes(mode: &str) -> io::Result<HashMap<u64, Vec<i32>>> {
    let mut held: HashMap<u64, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if !runs_as(pid, mode.as_bytes())? {
            continue;
        }
        for fd in [0, 1] {
            if let Some(ino) = pipe_at(pid, fd)? {
                held.entry(ino).or_default().push(pid);
            }
        }
    }
    Ok(held)
}

/// The inode of the pipe descriptor `fd` of another process is, if it is one we may see.
fn pipe_at(pid: i32, fd: i32) -> io::Result<Option<u64>> {
    let link = visible(std::fs::read_link(format!("/proc/{pid}/fd/{fd}")))?;
    Ok(link.and_then(|l| pipe_inode(l.as_os_str().as_bytes())))
}

/// One of `holders` (as [`held_pipes`] found them) pinned while it still holds pipe `ino`
/// as its fd 0: a pidfd on a process that reads the pipe. `None` when none does any
/// more.
pub fn pin_holder(holders: &[i32], ino: u64) -> Option<Handle> {
    holders.iter().find_map(|&pid| {
        let (h, _) = Handle::pin(pid)?;
        // Read after the pidfd was opened, and the process still there afterwards: the
        // read was of the pinned process.
        let holds = pipe_at(pid, 0).ok().flatten() == Some(ino);
        (holds && !h.exited()).then_some(h)
    })
}

/// Whether process `pid`'s second argument is `mode` (its command line is `tend MODE
/// ...`). A process gone, a zombie (no command line) or another user's is not.
fn runs_as(pid: i32, mode: &[u8]) -> io::Result<bool> {
    let Some(mut f) = visible(std::fs::File::open(format!("/proc/{pid}/cmdline")))? else {
        return Ok(false);
    };
    // `tend`, NUL, the mode, NUL: the start is enough.
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Gone meanwhile, or not ours to read: not a writer of ours.
            Err(e) => {
                visible::<()>(Err(e))?;
                return Ok(false);
            }
        }
    }
    let mut args = buf[..n].split(|&b| b == 0);
    Ok(args.nth(1) == Some(mode))
}

/// A read end of pipe `ino`, made from descriptor `fd` of the pinned process `h` (a
/// service whose stdout or stderr it is, see [`output_pipes`]): the descriptor is
/// duplicated into this process (`pidfd_getfd`), the pipe opened again through it
/// read-only, and the duplicate closed. The duplicate itself would not do: like the
/// service's descriptor it writes as well as reads, and a writer holding a write
/// reference would never see end of input, outliving its service.
pub fn read_end(h: &Handle, fd: i32, ino: u64) -> Result<OwnedFd, PipeError> {
    let pid = h.pid();
    let dup = h.dup_fd(fd).map_err(|e| {
        let reason = e.desc().to_lowercase();
        match e {
            Errno::EPERM | Errno::EACCES | Errno::ENOSYS => PipeError::Denied { pid, fd, reason },
            _ => PipeError::Failed {
                what: format!("taking descriptor {fd} of pid {pid}"),
                reason,
            },
        }
    })?;
    let failed = |what: &str, e: &io::Error| PipeError::Failed {
        what: format!("{what} (descriptor {fd} of pid {pid})"),
        reason: crate::error::io_reason(e),
    };
    let is_it = |f: &std::fs::File| {
        f.metadata()
            .map(|m| m.file_type().is_fifo() && m.ino() == ino)
    };
    let dup = std::fs::File::from(dup);
    if !is_it(&dup).map_err(|e| failed("looking at the pipe", &e))? {
        return Err(PipeError::Failed {
            what: format!("descriptor {fd} of pid {pid}"),
            reason: "no longer the pipe it was a moment ago".into(),
        });
    }
    // Non-blocking: opening a pipe for reading waits for a writer otherwise (there is
    // one, the service, but nothing here should ever wait on it).
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", dup.as_raw_fd()))
        .map_err(|e| failed("opening the pipe for reading (/proc/self/fd)", &e))?;
    drop(dup);
    if !is_it(&read).map_err(|e| failed("looking at the pipe", &e))? {
        return Err(PipeError::Failed {
            what: format!("descriptor {fd} of pid {pid}"),
            reason: "opened again, it was another file".into(),
        });
    }
    // The writer reads it blocking.
    nix::fcntl::fcntl(read.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map(|f| OFlag::from_bits_truncate(f) & !OFlag::O_NONBLOCK)
        .and_then(|f| nix::fcntl::fcntl(read.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(f)))
        .map_err(|e| failed("making the pipe blocking", &io::Error::from(e)))?;
    Ok(OwnedFd::from(read))
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
    if unsafe { libc::close_range(3, libc::c_uint::MAX, 0) } == 0 {
        return;
    }
    // close_range(2) is Linux 5.9: before it, the descriptors are listed and closed one
    // by one (the listing is read whole, and its own descriptor closed, first).
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd > 2)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // SAFETY: as above; the listing's own descriptor is closed already, so at
        // worst this closes a number that is free (EBADF).
        unsafe { libc::close(fd) };
    }
}

/// Takes ownership of descriptor `fd` this process was started with (the log writer's
/// pipes, fds 0 and 1).
pub fn inherited(fd: i32) -> OwnedFd {
    // SAFETY: called once per descriptor, at its start, by a log writer process (keeper
    // or worker), whose fds 0 and 1 are the pipes it was started on and which nothing
    // else in it uses (it never reads stdin nor prints to stdout).
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A child (`sleep`) whose stdout is `out`, pinned; killed and reaped on drop.
    struct Child(std::process::Child, Handle);

    impl Child {
        fn with_stdout(out: OwnedFd) -> Child {
            let c = Command::new("sleep")
                .arg("60")
                .stdout(Stdio::from(out))
                .spawn()
                .expect("sleep");
            let (h, _) = Handle::pin(c.id() as i32).expect("pinned");
            Child(c, h)
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_read_end_is_taken_back_from_the_service_and_reads_only() {
        let mut pipes = LogPipes::new(false).unwrap();
        let (out_r, _) = pipes.take_read_ends();
        let child = Child::with_stdout(pipes.out_w.try_clone().unwrap());
        let found = output_pipes(child.1.pid()).unwrap().expect("a log pipe");
        let ino = std::fs::File::from(out_r.unwrap())
            .metadata()
            .unwrap()
            .ino();
        assert_eq!(
            found,
            OutputPipes {
                out: ino,
                err: None
            }
        );
        let r = match read_end(&child.1, 1, ino) {
            Ok(r) => r,
            // A sandbox that refuses pidfd_getfd (seccomp): nothing to test here.
            Err(e @ PipeError::Denied { .. }) => return eprintln!("skipped: {e}"),
            Err(e) => panic!("{e}"),
        };
        let mut r = std::fs::File::from(r);
        std::fs::File::from(pipes.out_w.try_clone().unwrap())
            .write_all(b"line\n")
            .unwrap();
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"line\n");
        // Read-only: no write reference, so a writer holding it sees end of input.
        assert!(r.write(b"x").is_err());
        // Another pipe than the one asked for is refused.
        assert!(matches!(
            read_end(&child.1, 1, ino + 1),
            Err(PipeError::Failed { .. })
        ));
    }

    #[test]
    fn a_plain_pipe_is_not_a_log_writers() {
        let (_r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let child = Child::with_stdout(w);
        assert_eq!(output_pipes(child.1.pid()).unwrap(), None);
    }

    #[test]
    fn pipe_links() {
        assert_eq!(pipe_inode(b"pipe:[1517686]"), Some(1517686));
        assert_eq!(pipe_inode(b"socket:[12]"), None);
        assert_eq!(pipe_inode(b"/dev/null"), None);
    }
}
