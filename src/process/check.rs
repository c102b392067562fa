//! Running a helper command, a check (`ready = { cmd = ... }`, `health = { cmd = ... }`)
//! or a hook (`on_exit = "..."`, with its event on stdin): `sh -c` started as a service is
//! ([`super::spawn`]: double fork, a session of its own, a cgroup leaf of its own where
//! there is containment, in `checks/` or `hooks/`), its output captured, and, once it has
//! ended or at its timeout, killed whole: nothing it started outlives it.
//!
//! # Killed whole, and only what is the check's
//!
//! A check is tend's process, not the service's: a child of it that ignores SIGTERM (a
//! `(trap '' TERM; sleep 300) &`) must not pile up, one per check. Every process of the
//! check is killed with SIGKILL once the check is over, proven to be the check's as a
//! service's processes are (see [`super::stop`]):
//!
//! - with cgroups, by membership: each run has a leaf in `<home cgroup>/checks`, killed
//!   with `cgroup.kill`, waited empty, and removed;
//! - without, in the session the double fork created for it (its number `N` is that of
//!   the intermediate process, which exits at once). The `sh` process is pinned by a
//!   pidfd; until it is reaped it holds its session, so it is the witness that proves
//!   every member of session `N` the check's. Whatever it started and left behind is
//!   re-parented to tend (a child subreaper, CLI and daemon alike), where children of the
//!   reaper in session `N` are the check's while no process has pid `N`. Signals go
//!   through a pidfd of each proven process; a number is never signalled.
//!
//! No thread reads the output: the pipes are read in the calling thread, in the same
//! `poll` that waits for the check's exit, and once the check has been killed whatever
//! is still buffered is read without waiting. A process that escaped both proofs
//! (`setsid` and a double fork, without cgroups) and still holds a pipe costs nothing.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::cgroup::{self, Cgroup, Root};
use super::reap::ExitBoard;
use super::spawn::{Prepared, Spec};
use super::stop;
use super::writer::LogPipes;
use crate::error::SpawnError;

/// How a check command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    /// The `waitpid` status word, when known.
    pub status: Option<i32>,
    /// It was killed at its timeout.
    pub timed_out: bool,
    /// It was ended early: whoever waited for it is gone (see [`Scope::proceed`]).
    pub withdrawn: bool,
    /// The start of what it wrote to stdout and stderr.
    pub output: String,
}

impl Ran {
    pub fn passed(&self) -> bool {
        !self.timed_out && !self.withdrawn && self.status == Some(0)
    }
}

/// Where a check runs, and who waits for it.
pub struct Scope<'a> {
    /// In the daemon: where its event loop posts the statuses it reaps.
    pub board: Option<&'a ExitBoard>,
    /// The home's cgroup, where there is cgroup containment: the check gets a leaf.
    pub cgroups: Option<&'a Root>,
    /// Asked while the check runs; false ends it at once (the daemon is going away).
    pub proceed: &'a dyn Fn() -> bool,
    /// The sessions the home's recorded instances own, read when asked: none of them
    /// is ever taken for the check's (see [`stop::Reaper`]); `None` when they cannot
    /// be read, and then no orphan is taken on the strength of its session.
    pub owned: &'a dyn Fn() -> Option<std::collections::BTreeSet<i32>>,
    /// The service's process settings: its check runs as the same user, with the same
    /// limits, as the service (as systemd runs a unit's other commands).
    pub setup: &'a crate::process::spawn::Setup,
}

/// Output kept per stream.
const OUTPUT_CAP: usize = 2048;
/// How often [`Scope::proceed`] is asked while a check runs.
const ASK_EVERY: Duration = Duration::from_millis(50);
/// How long processes of the check's session that could not be proven its own are
/// looked at again (without cgroups).
const LEFTOVER_RETRY: Duration = Duration::from_secs(1);
/// How long the status of an exited check may take to be posted by the daemon's loop.
const STATUS_WAIT: Duration = Duration::from_secs(1);

/// Which kind of helper command runs, and what it reads.
#[derive(Clone, Copy, Debug)]
pub struct Helper<'a> {
    /// The home's cgroup its leaf goes in: [`cgroup::CHECKS`] or [`cgroup::HOOKS`].
    pub group: &'static str,
    /// What it reads on stdin (a hook's event); `None`: `/dev/null`.
    pub input: Option<&'a [u8]>,
}

/// A check command: its leaf in `checks`, nothing on stdin.
pub const CHECK: Helper<'static> = Helper {
    group: cgroup::CHECKS,
    input: None,
};

/// Runs `sh -c cmd` in `cwd` with exactly `env`, for at most `timeout`, then kills
/// whatever of it is left.
pub fn run(
    cmd: &str,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    scope: &Scope,
) -> Result<Ran, SpawnError> {
    run_helper(cmd, cwd, env, timeout, scope, CHECK)
}

/// [`run`] for any kind of helper: its leaf in `helper.group`, `helper.input` on its
/// stdin (a file in memory, so a hook that does not read it never blocks anyone, and
/// one that reads it gets all of it at once).
pub fn run_helper(
    cmd: &str,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    scope: &Scope,
    helper: Helper,
) -> Result<Ran, SpawnError> {
    let deadline = Instant::now() + timeout;
    // Without a leaf (none could be made) the session is the boundary, as without
    // cgroup containment.
    let leaf = Leaf(scope.cgroups.and_then(|r| r.new_helper(helper.group).ok()));
    let input = match helper.input {
        Some(bytes) => Some(memory_file(bytes)?),
        None => None,
    };
    let stdin_path = match &input {
        // Opened again by path in `prepare`, at offset 0, as a file of its own.
        Some(fd) => std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        None => std::path::PathBuf::from("/dev/null"),
    };
    let mut pipes = LogPipes::new(true)?;
    let (out_r, err_r) = pipes.take_read_ends();
    let argv = ["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
    let dev_null = Path::new("/dev/null");
    let prepared = Prepared::prepare(&Spec {
        argv: &argv,
        cwd,
        env,
        stdin: &stdin_path,
        stdout: dev_null,
        stderr: dev_null,
        cgroup: leaf.0.as_ref(),
        pipes: Some(&pipes),
        setup: scope.setup,
    })?;
    drop(input);
    let started = prepared.spawn()?.release()?;
    // Only the check holds the write ends now: end of file means all of it closed them.
    drop(prepared);
    drop(pipes);
    let sh = started.handle;
    let mut streams: Vec<Stream> = [out_r, err_r]
        .into_iter()
        .flatten()
        .filter_map(Stream::new)
        .collect();

    let mut timed_out = false;
    let mut withdrawn = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        if !(scope.proceed)() {
            withdrawn = true;
            break;
        }
        let wait = (deadline - now).min(ASK_EVERY);
        let mut fds = vec![PollFd::new(sh.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            streams
                .iter()
                .filter(|s| s.open)
                .map(|s| PollFd::new(s.fd.as_fd(), PollFlags::POLLIN)),
        );
        let ms = (wait.as_millis() as i32).max(1);
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(SpawnError::Os {
                    what: "poll",
                    errno: e,
                })
            }
        }
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        for s in streams.iter_mut() {
            s.drain();
        }
        if exited {
            break;
        }
    }

    // Everything of the check goes, whether it ended or not.
    match &leaf.0 {
        Some(cg) => {
            let _ = stop::kill_cgroup(cg);
        }
        None => {
            // What could not be proven the check's at one look (the records of the home
            // could not be read that instant, say) is looked at again a few times: an
            // orphan of the check left alone is one more TERM-ignoring process per run.
            let retry_until = Instant::now() + LEFTOVER_RETRY;
            loop {
                let witness = sh.try_clone().into_iter().collect();
                let mut owned = || (scope.owned)();
                let reaper = stop::Reaper {
                    pid: std::process::id() as i32,
                    owned_elsewhere: &mut owned,
                };
                let left = stop::kill_leftovers(started.session, witness, Some(reaper), None);
                // Done once a look finds nothing of the check's left. One that killed
                // something is followed by another at once: a process the check was
                // forking while the first looked shows only afterwards.
                if (left.killed == 0 && left.left_alone == 0) || Instant::now() >= retry_until {
                    break;
                }
                if left.left_alone > 0 {
                    std::thread::sleep(ASK_EVERY);
                }
            }
        }
    }
    drop(leaf);
    for s in streams.iter_mut() {
        s.drain();
    }
    let status = match scope.board {
        // The daemon's event loop reaps every child and posts its status.
        Some(b) => b.wait_for(sh.pid(), sh.start_time(), STATUS_WAIT),
        None => {
            sh.wait(STATUS_WAIT);
            sh.try_reap()
        }
    };
    let mut output = Vec::new();
    for s in &streams {
        output.extend_from_slice(&s.kept);
    }
    Ok(Ran {
        status,
        timed_out,
        withdrawn,
        output: String::from_utf8_lossy(&output).trim().to_string(),
    })
}

/// A sealed file in memory holding `bytes` (`memfd_create`): no name in any file
/// system, gone with its last descriptor.
fn memory_file(bytes: &[u8]) -> Result<OwnedFd, SpawnError> {
    let os = |what: &'static str| move |errno| SpawnError::Os { what, errno };
    let fd = nix::sys::memfd::memfd_create(
        c"tend-hook-event",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(os("memfd_create"))?;
    let mut written = 0;
    while written < bytes.len() {
        match nix::unistd::write(&fd, &bytes[written..]) {
            Ok(n) => written += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(os("write")(e)),
        }
    }
    Ok(fd)
}

/// A check's cgroup leaf, removed (after what is in it was killed) when dropped.
struct Leaf(Option<Cgroup>);

impl Drop for Leaf {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = stop::kill_cgroup(&cg);
            let _ = cg.remove();
        }
    }
}

/// One output pipe, read without blocking.
struct Stream {
    fd: OwnedFd,
    /// The first [`OUTPUT_CAP`] bytes; the rest is read and dropped, so the check never
    /// blocks on a full pipe.
    kept: Vec<u8>,
    /// Not at end of file yet.
    open: bool,
}

impl Stream {
    fn new(fd: OwnedFd) -> Option<Stream> {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
        Some(Stream {
            fd,
            kept: Vec::new(),
            open: true,
        })
    }

    /// Reads what is there now, until the pipe is empty or closed.
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        while self.open {
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
                Ok(0) => self.open = false,
                Ok(n) => {
                    let room = OUTPUT_CAP.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}
