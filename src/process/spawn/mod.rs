//! Daemonizing a service: double fork, `setsid`, stdio redirection, a gate, exec.
//!
//! ```text
//! tend ──clone(VM|VFORK)──▶ intermediate ──setsid, fork──▶ service: signals to default,
//!   │  (suspended until          └─ reports the service pid,   dup2, limits, nice, oom,
//!   │   the intermediate exits)     _exit(0)                   umask, groups, gid, uid,
//!   │                                                          chdir, reports READY, waits at
//!   │                                                          the gate ... GO: unblock
//!   │                                                          signals, exec
//!   ├─ reads PID and READY, reaps the intermediate, pins the service with a pidfd
//!   ├─ (the caller commits the record)
//!   └─ release(): writes GO, reads the report until EOF (exec succeeded) or an error
//! ```
//!
//! **The gate.** The new process does everything but exec, then waits on a pipe. Only
//! after the caller has committed the instance to the database does [`Pending::release`]
//! write the go byte. If the caller fails, or dies at any instant (even by SIGKILL, which
//! cannot be deferred), the pipe closes unwritten and the process exits without exec'ing:
//! a service never runs unless its record is committed.
//!
//! **Async-signal safety.** Everything that allocates (argv, envp, paths, files) is
//! prepared before the first fork: between fork and exec only async-signal-safe calls are
//! made, because another thread of the parent may have held the allocator's lock at the
//! moment of the fork. Right after the fork the child closes every descriptor it does not
//! need, so it never holds another thread's pipes (whose readers would then wait for an
//! end of file that never comes) or the daemon's lock.
//!
//! **Signals.** All signals are blocked in the forking thread around `fork`, so the child
//! starts with every signal blocked and none of tend's handlers can run in it. The child
//! resets every disposition (real-time signals included) to the default *before* it
//! restores an empty mask, as `posix_spawn` does, so a pending signal meets the default
//! action and an ignored disposition of tend's never survives into the service.

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::Signal;

mod child;
mod report;
mod setup;

use crate::error::SpawnError;
use crate::process::handle::Handle;
use crate::process::signals::BlockAll;
use child::{intermediate, ChildArgs};
use report::{read_record, Record, GO};
pub use setup::{Credentials, Setup};

/// Everything the child needs, prepared before forking.
pub struct Prepared {
    program: CString,
    program_display: String,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    cgroup_procs: Option<CString>,
    /// The instance's cgroup directory (for clone3's CLONE_INTO_CGROUP).
    cgroup_dir: Option<OwnedFd>,
    setup: Setup,
    /// `setup`'s limits, for prlimit64(2).
    limits: Vec<(libc::c_int, libc::rlimit, crate::error::Stage)>,
    /// `setup`'s oom_score_adj as the text written to /proc.
    oom_text: Option<Vec<u8>>,
}

/// What to run and where. Paths must be absolute.
pub struct Spec<'a> {
    pub argv: &'a [String],
    pub cwd: &'a Path,
    /// The full environment of the service.
    pub env: &'a [(String, String)],
    pub stdin: &'a Path,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    /// The cgroup the service joins before exec (its instance's leaf), if any.
    pub cgroup: Option<&'a crate::process::cgroup::Cgroup>,
    /// Pipes to a log writer (`--log-timestamps`): stdout (and stderr) go there instead
    /// of the files, which are still opened here to refuse a bad path before any fork.
    pub pipes: Option<&'a crate::process::writer::LogPipes>,
    /// Umask, limits, nice, oom_score_adj, identity; its credentials' environment is
    /// not added to `env` here (the caller merges it under the service's own).
    pub setup: &'a Setup,
}

/// A new process waiting at the gate: set up, pinned, not yet exec'd. Dropping it
/// without [`Pending::release`] kills it before it ever runs the program.
pub struct Pending {
    handle: Option<Handle>,
    session: i32,
    gate: Option<OwnedFd>,
    report: OwnedFd,
    program_display: String,
    /// To name a setting the process could not apply.
    setup: Setup,
    /// Its session, registered as in flight until the start is over (released after its
    /// record was committed, or discarded): dropped last, after the fields above.
    _in_flight: InFlight,
}

/// The sessions of this process's starts in flight: from before the intermediate that
/// created one is reaped (so before the service can pass for an orphan of ours in it)
/// until the start's record is committed or its process discarded. A multiset: the
/// same number can only come twice for an instant, but each start removes its own.
static IN_FLIGHT: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Whether a start in flight in this process created session `session`. From then on
/// the number is no proof that a process is another instance's: see
/// [`crate::process::stop`].
pub fn in_flight(session: i32) -> bool {
    IN_FLIGHT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&session)
}

/// One registration in [`IN_FLIGHT`], removed when dropped.
struct InFlight(i32);

impl InFlight {
    fn register(session: i32) -> InFlight {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(session);
        InFlight(session)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut list = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = list.iter().position(|&s| s == self.0) {
            list.swap_remove(i);
        }
    }
}

/// A started service: exec succeeded.
#[derive(Debug)]
pub struct Started {
    pub handle: Handle,
    /// The session (and first process group) created for it: the intermediate's pid.
    pub session: i32,
}

impl Started {
    pub fn pid(&self) -> i32 {
        self.handle.pid()
    }
}

impl Prepared {
    /// Resolves the program, opens the stdio files and builds the C strings. Fails with a
    /// clear error for a missing program, directory or unwritable log before any fork.
    pub fn prepare(spec: &Spec) -> Result<Prepared, SpawnError> {
        let cstr =
            |s: &[u8], what: &str| CString::new(s).map_err(|_| SpawnError::Nul(what.to_string()));
        match std::fs::metadata(spec.cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SpawnError::Cwd {
                    path: spec.cwd.into(),
                    reason: "not a directory".into(),
                })
            }
            Err(e) => {
                return Err(SpawnError::Cwd {
                    path: spec.cwd.into(),
                    reason: crate::error::io_reason(&e),
                })
            }
        }
        let arg0 = spec
            .argv
            .first()
            .ok_or(SpawnError::NoSuchProgram(String::new()))?;
        let program = find_program(spec).ok_or_else(|| SpawnError::NoSuchProgram(arg0.clone()))?;
        // Caught here rather than at exec, which comes after the record is committed.
        let runnable = program.metadata().is_ok_and(|m| m.is_file())
            && nix::unistd::access(&program, nix::unistd::AccessFlags::X_OK).is_ok();
        if !runnable {
            return Err(SpawnError::NotExecutable(arg0.clone()));
        }

        let argv = spec
            .argv
            .iter()
            .map(|a| cstr(a.as_bytes(), "an argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = spec
            .env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}").as_bytes(), "an environment variable"))
            .collect::<Result<Vec<_>, _>>()?;

        let stdin = open_fd("stdin", spec.stdin, false)?;
        let mut stdout = open_fd("stdout", spec.stdout, true)?;
        let mut stderr = if spec.stderr == spec.stdout {
            dup_high(stdout.as_raw_fd()).map_err(|errno| SpawnError::Os { what: "dup", errno })?
        } else {
            open_fd("stderr", spec.stderr, true)?
        };
        if let Some(p) = spec.pipes {
            // The service's ends of the pipes, which read them as well (see `LogPipes`):
            // whatever becomes of the log writer, the service's writes never meet EPIPE.
            let dup = |fd: &OwnedFd| {
                dup_high(fd.as_raw_fd()).map_err(|errno| SpawnError::Os { what: "dup", errno })
            };
            stdout = dup(&p.out_w)?;
            stderr = dup(p.err_w.as_ref().unwrap_or(&p.out_w))?;
        }
        Ok(Prepared {
            program: cstr(program.as_os_str().as_bytes(), "the program path")?,
            program_display: arg0.clone(),
            argv,
            envp,
            cwd: cstr(spec.cwd.as_os_str().as_bytes(), "the working directory")?,
            stdin,
            stdout,
            stderr,
            cgroup_procs: spec.cgroup.map(|c| c.procs_path()),
            cgroup_dir: match spec.cgroup {
                Some(c) => Some(open_dir(&c.path)?),
                None => None,
            },
            setup: spec.setup.clone(),
            limits: spec
                .setup
                .limits
                .iter()
                .map(|&(r, l)| {
                    let raw = libc::rlimit {
                        rlim_cur: l.soft,
                        rlim_max: l.hard,
                    };
                    (setup::resource_number(r), raw, Setup::stage(r))
                })
                .collect(),
            oom_text: spec.setup.oom_score_adj.map(|n| n.to_string().into_bytes()),
        })
    }

    /// Double-forks and sets the new process up; returns once it waits at the gate (or
    /// failed to get there). Nothing of the program has run yet.
    pub fn spawn(&self) -> Result<Pending, SpawnError> {
        // The service re-parents to us when the intermediate exits, so it is our child
        // while we look at it: its pid cannot be reused under us, and an exit right after
        // exec can be reaped here with its status.
        crate::process::reap::become_subreaper().map_err(|e| SpawnError::Os {
            what: "prctl(PR_SET_CHILD_SUBREAPER)",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL)),
        })?;
        let argv_ptrs = null_terminated(&self.argv);
        let envp_ptrs = null_terminated(&self.envp);
        let (report_r, report_w) = pipe_high()?;
        let (gate_r, gate_w) = pipe_high()?;
        let mut keep = [
            self.stdin.as_raw_fd(),
            self.stdout.as_raw_fd(),
            self.stderr.as_raw_fd(),
            report_w.as_raw_fd(),
            gate_r.as_raw_fd(),
            // Without a cgroup, a repeat (the list is a set).
            self.cgroup_dir
                .as_ref()
                .map_or(report_w.as_raw_fd(), |d| d.as_raw_fd()),
        ];
        keep.sort_unstable();
        let nofile = if self.setup.sets_nofile() {
            None
        } else {
            crate::process::limits::for_children()
        };
        let args = ChildArgs {
            program: &self.program,
            argv: argv_ptrs.as_ptr(),
            envp: envp_ptrs.as_ptr(),
            cwd: &self.cwd,
            stdio: [
                self.stdin.as_raw_fd(),
                self.stdout.as_raw_fd(),
                self.stderr.as_raw_fd(),
            ],
            report: report_w.as_raw_fd(),
            gate: gate_r.as_raw_fd(),
            keep,
            sigmax: libc::SIGRTMAX(),
            cgroup_procs: self.cgroup_procs.as_ref(),
            cgroup_fd: self.cgroup_dir.as_ref().map(|d| d.as_raw_fd()),
            nofile: nofile.as_ref(),
            umask: self.setup.umask as libc::mode_t,
            limits: &self.limits,
            nice: self.setup.nice,
            oom_score_adj: self.oom_text.as_deref(),
            // Without root, `resolve` leaves no groups: nothing to change (tend's own).
            credentials: self
                .setup
                .credentials
                .as_ref()
                .filter(|c| !c.groups.is_empty())
                .map(|c| (c.uid, c.gid, c.groups.as_slice())),
        };

        // The intermediate's own stack: it runs in our memory (see `clone_intermediate`).
        let stack = ChildStack::new().map_err(|errno| SpawnError::Os {
            what: "mmap (the intermediate's stack)",
            errno,
        })?;
        let pid = {
            let _blocked = BlockAll::new();
            clone_intermediate(&args, &stack)
        };
        drop(stack);
        if pid < 0 {
            return Err(SpawnError::Os {
                what: "clone",
                errno: Errno::last(),
            });
        }
        // The intermediate (pid N, the new session's number) stays a zombie until `reap`
        // below: only then can the service pass for an orphan of ours in session N.
        let in_flight = InFlight::register(pid);
        drop(report_w);
        drop(gate_r);
        let mut child = None;
        let outcome = loop {
            match read_record(&report_r) {
                Ok(Some(Record::Pid(p))) => child = Some(p),
                // The service reports its own pid with READY: two processes write to
                // this pipe, and the intermediate's PID record may come second.
                Ok(Some(Record::Ready(p))) => {
                    child = Some(p);
                    break Ok(());
                }
                Ok(Some(Record::Error(stage, errno))) => {
                    break Err(self.setup.error(stage, errno, &self.program_display))
                }
                Ok(None) => break Err(SpawnError::NoReport(String::new())),
                Err(e) => {
                    break Err(SpawnError::Os {
                        what: "reading the spawn report",
                        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                    })
                }
            }
        };
        // The intermediate exits right after reporting; once it is reaped, the service
        // has been re-parented to us. Nobody else reaps it (see `clone_intermediate`).
        let ended = reap(pid);
        let handle = child.and_then(pin_child);
        let outcome = outcome.map_err(|e| match e {
            SpawnError::NoReport(_) => SpawnError::NoReport(match (ended, child) {
                (Some(st), _) if libc::WIFSIGNALED(st) => format!(
                    "its intermediate process was killed by signal {}",
                    libc::WTERMSIG(st)
                ),
                (_, Some(c)) => format!("pid {c} ended before it was set up"),
                _ => "the intermediate process ended without a word".into(),
            }),
            other => other,
        });
        if let Err(e) = outcome {
            if let Some(h) = handle {
                discard(h);
            }
            return Err(e);
        }
        let Some(handle) = handle else {
            return Err(SpawnError::NoReport(
                "it could not be pinned: gone before tend looked".into(),
            ));
        };
        Ok(Pending {
            handle: Some(handle),
            session: pid,
            gate: Some(gate_w),
            report: report_r,
            program_display: self.program_display.clone(),
            setup: self.setup.clone(),
            _in_flight: in_flight,
        })
    }
}

impl Pending {
    pub fn pid(&self) -> i32 {
        self.handle.as_ref().map_or(0, Handle::pid)
    }

    pub fn start_time(&self) -> u64 {
        self.handle.as_ref().map_or(0, Handle::start_time)
    }

    /// The session (and first process group) id: the intermediate's pid.
    pub fn session(&self) -> i32 {
        self.session
    }

    /// Opens the gate: the process execs the program. Returns once exec succeeded or
    /// failed.
    pub fn release(mut self) -> Result<Started, SpawnError> {
        let gate = self.gate.take().expect("the gate is open until release");
        let handle = self.handle.take().expect("pinned until release");
        let go = [GO];
        // SAFETY: writing one byte from a valid buffer to our own pipe.
        let n = unsafe { libc::write(gate.as_raw_fd(), go.as_ptr().cast(), 1) };
        drop(gate);
        if n != 1 {
            // The only way the process can be gone here is SIGKILL from someone else (it
            // blocks every other signal until exec). Its record is committed: this is an
            // exit like any other, for the caller to find (`handle.exited()`) and record
            // with its status, not a failed start to take back.
            return Ok(Started {
                handle,
                session: self.session,
            });
        }
        loop {
            match read_record(&self.report) {
                Ok(None) => break,
                Ok(Some(Record::Error(stage, errno))) => {
                    discard(handle);
                    return Err(self.setup.error(stage, errno, &self.program_display));
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    return Err(SpawnError::Os {
                        what: "reading the spawn report",
                        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                    })
                }
            }
        }
        Ok(Started {
            handle,
            session: self.session,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Not released: closing the gate alone makes the process exit without exec;
        // killing it as well means it is gone before the caller goes on.
        self.gate.take();
        if let Some(h) = self.handle.take() {
            discard(h);
        }
    }
}

/// Kills a process that must not run (pre-exec, or one whose exec failed) and reaps it
/// if it is our child.
fn discard(h: Handle) {
    let _ = h.signal(Signal::SIGKILL);
    if h.wait(std::time::Duration::from_secs(1)) {
        let _ = h.try_reap();
    }
}

/// Pins the reported service pid: it must be our child (we are a subreaper and its
/// intermediate is reaped) and not have exited.
fn pin_child(pid: i32) -> Option<Handle> {
    let (h, st) = Handle::pin(pid)?;
    let me = std::process::id() as i32;
    (st.ppid == me && !st.exited()).then_some(h)
}

/// Finds the executable the way execvp would (a name with a slash is a path, relative to
/// the working directory; a bare name is searched in the service's PATH), but before
/// forking, so that the child only has to call execve.
pub fn find_program(spec: &Spec) -> Option<PathBuf> {
    let arg0 = spec.argv.first()?;
    let path_var = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    resolve_program(arg0, spec.cwd, path_var)
}

fn resolve_program(arg0: &str, cwd: &Path, path_var: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        p.metadata().map(|m| m.is_file()).unwrap_or(false)
            && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
    };
    if arg0.is_empty() {
        return None;
    }
    if arg0.contains('/') {
        let p = crate::service::absolute(cwd, Path::new(arg0));
        return p.exists().then_some(p);
    }
    path_var
        .split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            crate::service::absolute(cwd, Path::new(dir)).join(arg0)
        })
        .find(|p| executable(p))
}

fn open_fd(what: &'static str, path: &Path, write: bool) -> Result<OwnedFd, SpawnError> {
    let mut opts = OpenOptions::new();
    if write {
        opts.append(true).create(true).mode(0o644);
    } else {
        opts.read(true);
    }
    // O_NONBLOCK: a FIFO put in place of the file after `add` must not hang the start in
    // open(); it is refused below, and the flag is cleared for what is kept.
    opts.custom_flags(libc::O_NONBLOCK);
    let open_err = |e: std::io::Error| SpawnError::Open {
        what,
        path: path.into(),
        // A FIFO without a reader fails a non-blocking open with ENXIO: say what it is.
        reason: std::fs::metadata(path)
            .ok()
            .and_then(|m| crate::service::stdio_refusal(&m))
            .map_or_else(|| crate::error::io_reason(&e), str::to_string),
    };
    let file = opts.open(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    if let Some(why) = crate::service::stdio_refusal(&meta) {
        return Err(SpawnError::Open {
            what,
            path: path.into(),
            reason: why.to_string(),
        });
    }
    let flags =
        nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).map_err(|errno| {
            SpawnError::Os {
                what: "fcntl",
                errno,
            }
        })?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|errno| {
        SpawnError::Os {
            what: "fcntl",
            errno,
        }
    })?;
    // If tend itself runs with a closed stdio descriptor, open() can return 0, 1 or 2;
    // moving every descriptor above 2 keeps the dup2 calls in the child from clobbering
    // one another.
    dup_high(file.as_raw_fd()).map_err(|errno| SpawnError::Os { what: "dup", errno })
}

/// Opens a directory (a cgroup) for `clone3`'s `CLONE_INTO_CGROUP`, above 2.
fn open_dir(path: &Path) -> Result<OwnedFd, SpawnError> {
    let dir = std::fs::File::open(path).map_err(|e| {
        SpawnError::Cgroup(format!(
            "cannot open {}: {}",
            path.display(),
            crate::error::io_reason(&e)
        ))
    })?;
    dup_high(dir.as_raw_fd()).map_err(|errno| SpawnError::Os { what: "dup", errno })
}

fn dup_high(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a valid fd returns a new descriptor we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Starts the intermediate process the way `posix_spawn` does: `CLONE_VM | CLONE_VFORK`,
/// so it shares our memory instead of copying it, and this thread is suspended until the
/// intermediate has exited (right after it forked the service and reported its pid).
/// Only the service itself is a copy of our address space. In a C loop on this machine
/// (loaded), a fork, exit and wait of a process with 2–32 MB resident took 0.5–1.1 ms, a
/// `CLONE_VM | CLONE_VFORK` child 0.1–0.3 ms.
///
/// Every signal must be blocked in the calling thread (so none of our handlers can run
/// in the intermediate, which would run them on our memory).
///
/// Its exit signal is none (not SIGCHLD): a "clone" child, which a `waitid(P_ALL)`
/// without `__WCLONE` (the daemon's reaper) never reaps. So its pid, the new session's
/// number, stays taken until this start reaps it, after it registered the session as
/// in flight ([`in_flight`]).
fn clone_intermediate(args: &ChildArgs, stack: &ChildStack) -> libc::pid_t {
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `ChildArgs` of `clone_intermediate`'s caller, which is
        // suspended (CLONE_VFORK) until this process has exited, so it is alive and
        // unchanged. We are the new process; see `intermediate`.
        unsafe { intermediate(&*(arg as *const ChildArgs)) }
    }
    // SAFETY: clone with CLONE_VM | CLONE_VFORK, as posix_spawn does: the child runs
    // `entry` on its own stack (mapped for it, with a guard page below) and shares our
    // memory until it exits; this thread does not run until then, and other threads
    // never touch the child's stack or `args`. All allocations are done and every
    // signal is blocked; the child only makes async-signal-safe calls (close_range,
    // setsid, clone3/fork, write, _exit; the service it forks: sigaction, dup2,
    // prlimit64, setpriority, open/write, umask, setgroups, setresgid, setresuid, chdir,
    // read, sigprocmask, execve) and never returns from `entry`.
    unsafe {
        libc::clone(
            entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK,
            args as *const ChildArgs as *mut libc::c_void,
        )
    }
}

/// A stack for the intermediate process, with a guard page below it: an overflow faults
/// instead of writing over our memory, which the intermediate shares.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// Guard page included. The intermediate needs a few hundred bytes; the service it
    /// forks goes on with a copy of this stack until exec, which needs a few kB.
    const LEN: usize = 64 * 1024;
    const GUARD: usize = 4096;

    fn new() -> Result<ChildStack, Errno> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stack = ChildStack {
            base,
            len: Self::LEN,
        };
        // SAFETY: the lowest page of the mapping made above (the stack grows down).
        if unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) } != 0 {
            return Err(Errno::last());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the top of the mapping, 16-byte aligned (page-aligned).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of our own mapping, as clone(2) expects.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; the intermediate that used it has exited
        // (CLONE_VFORK returns only then), and the service has its own copy.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// A close-on-exec pipe whose ends are both above 2 (see [`open_fd`]).
fn pipe_high() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SpawnError::Os {
            what: "pipe",
            errno: Errno::last(),
        });
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let high = |fd: OwnedFd| -> Result<OwnedFd, SpawnError> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        dup_high(fd.as_raw_fd()).map_err(|errno| SpawnError::Os { what: "dup", errno })
    };
    Ok((high(r)?, high(w)?))
}

fn null_terminated(items: &[CString]) -> Vec<*const libc::c_char> {
    items
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Reaps the intermediate process (it exits at once), retrying on EINTR; its status.
/// `__WCLONE`: it has no exit signal (see [`clone_intermediate`]).
fn reap(pid: libc::pid_t) -> Option<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WCLONE) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        return None;
    }
}

/// The current process environment with `overrides` applied, as the service will see it.
pub fn merged_env<'a>(
    overrides: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    let mut env: std::collections::BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, OsStr::new(&v).to_str()?.to_string())))
        .collect();
    for (k, v) in overrides {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().collect()
}
