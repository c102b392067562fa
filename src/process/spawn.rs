//! Daemonizing a service: double fork, `setsid`, stdio redirection, exec.
//!
//! ```text
//! tend ──fork──▶ intermediate ──setsid, fork──▶ service ──dup2, chdir, umask, exec──▶
//!   │                  └─ reports the service pid, _exit(0)
//!   └─ reads the report pipe until EOF, reaps the intermediate
//! ```
//! Everything that allocates (argv, envp, paths, files) is prepared before the first
//! fork: between fork and exec only async-signal-safe calls are made, because another
//! thread of the parent may have held the allocator's lock at the moment of the fork.
//! The report pipe is close-on-exec, so the parent sees EOF exactly when exec succeeded,
//! or an error record saying which step failed and with what errno.

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// The step of the child's setup that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    Setsid = 1,
    Fork = 2,
    Stdio = 3,
    Chdir = 4,
    Exec = 5,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        Some(match v {
            1 => Stage::Setsid,
            2 => Stage::Fork,
            3 => Stage::Stdio,
            4 => Stage::Chdir,
            5 => Stage::Exec,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no such program: {0}")]
    NoSuchProgram(String),
    #[error("working directory {}: {reason}", path.display())]
    Cwd { path: PathBuf, reason: String },
    #[error("{what} {}: {reason}", path.display())]
    Open {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0} contains a NUL byte")]
    Nul(String),
    #[error("{what} failed: {errno}")]
    Os { what: &'static str, errno: Errno },
    #[error("{}", describe(*stage, *errno, program))]
    Child {
        stage: Stage,
        errno: Errno,
        program: String,
    },
    #[error("the intermediate process did not report the service pid")]
    NoPid,
}

fn describe(stage: Stage, errno: Errno, program: &str) -> String {
    let reason = errno.desc().to_lowercase();
    match (stage, errno) {
        (Stage::Exec, Errno::ENOENT) => format!("no such program: {program}"),
        (Stage::Exec, Errno::EACCES) => format!("cannot execute {program}: permission denied"),
        (Stage::Exec, Errno::ENOEXEC) => format!("cannot execute {program}: not an executable"),
        (Stage::Exec, _) => format!("cannot execute {program}: {reason}"),
        (Stage::Chdir, _) => format!("cannot enter the working directory: {reason}"),
        (Stage::Stdio, _) => format!("cannot redirect stdio: {reason}"),
        (Stage::Setsid, _) => format!("setsid failed: {reason}"),
        (Stage::Fork, _) => format!("fork failed: {reason}"),
    }
}

/// Everything the child needs, prepared before forking.
pub struct Command {
    program: CString,
    program_display: String,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
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
}

/// A started service: its pid and process group (the intermediate's pid).
#[derive(Clone, Copy, Debug)]
pub struct Spawned {
    pub pid: i32,
    pub pgid: i32,
}

impl Command {
    /// Resolves the program, opens the stdio files and builds the C strings. Fails with a
    /// clear error for a missing program, directory or unwritable log before any fork.
    pub fn prepare(spec: &Spec) -> Result<Command, SpawnError> {
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
        let stdout = open_fd("stdout", spec.stdout, true)?;
        let stderr = if spec.stderr == spec.stdout {
            dup_high(stdout.as_raw_fd()).map_err(|errno| SpawnError::Os { what: "dup", errno })?
        } else {
            open_fd("stderr", spec.stderr, true)?
        };
        Ok(Command {
            program: cstr(program.as_os_str().as_bytes(), "the program path")?,
            program_display: arg0.clone(),
            argv,
            envp,
            cwd: cstr(spec.cwd.as_os_str().as_bytes(), "the working directory")?,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Double-forks and execs. Returns once exec has succeeded or failed.
    pub fn spawn(&self) -> Result<Spawned, SpawnError> {
        let argv_ptrs = null_terminated(&self.argv);
        let envp_ptrs = null_terminated(&self.envp);
        let (read_end, write_end) = pipe_cloexec()?;

        // SAFETY: fork is called with all allocations done; the child branch below only
        // calls async-signal-safe functions (setsid, fork, write, dup2, chdir, umask,
        // sigprocmask, signal, close_range, execve, _exit) before exec or _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(SpawnError::Os {
                what: "fork",
                errno: Errno::last(),
            });
        }
        if pid == 0 {
            // SAFETY: we are the freshly forked child; see `intermediate`.
            unsafe {
                intermediate(
                    write_end.as_raw_fd(),
                    &ChildArgs {
                        program: &self.program,
                        argv: argv_ptrs.as_ptr(),
                        envp: envp_ptrs.as_ptr(),
                        cwd: &self.cwd,
                        stdio: [
                            self.stdin.as_raw_fd(),
                            self.stdout.as_raw_fd(),
                            self.stderr.as_raw_fd(),
                        ],
                    },
                )
            }
        }
        drop(write_end);
        let report = read_report(&read_end);
        reap(pid);
        let report = report.map_err(|e| SpawnError::Os {
            what: "reading the spawn report",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        if let Some((stage, errno)) = report.error {
            return Err(SpawnError::Child {
                stage,
                errno,
                program: self.program_display.clone(),
            });
        }
        let child = report.pid.ok_or(SpawnError::NoPid)?;
        Ok(Spawned {
            pid: child,
            pgid: pid,
        })
    }
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
        // Let exec report EACCES / ENOEXEC for files that exist; only absence is ours.
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
    let file = opts.open(path).map_err(|e| SpawnError::Open {
        what,
        path: path.into(),
        reason: crate::error::io_reason(&e),
    })?;
    // If tend itself runs with a closed stdio descriptor, open() can return 0, 1 or 2;
    // moving every descriptor above 2 keeps the dup2 calls in the child from clobbering
    // one another.
    dup_high(file.as_raw_fd()).map_err(|errno| SpawnError::Os { what: "dup", errno })
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

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SpawnError::Os {
            what: "pipe",
            errno: Errno::last(),
        });
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn null_terminated(items: &[CString]) -> Vec<*const libc::c_char> {
    items
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Reaps the intermediate process (it exits at once), retrying on EINTR.
fn reap(pid: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || Errno::last() != Errno::EINTR {
            return;
        }
    }
}

const TAG_PID: u32 = 1;
const TAG_ERROR: u32 = 2;
const RECORD: usize = 12;

struct Report {
    pid: Option<i32>,
    error: Option<(Stage, Errno)>,
}

/// Reads fixed-size records until EOF (exec closed the last write end).
fn read_report(fd: &OwnedFd) -> io::Result<Report> {
    let mut data = Vec::with_capacity(2 * RECORD);
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: reading into a valid, writable buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => break,
            n if n > 0 => data.extend_from_slice(&buf[..n as usize]),
            _ if Errno::last() == Errno::EINTR => continue,
            _ => return Err(io::Error::last_os_error()),
        }
    }
    let mut report = Report {
        pid: None,
        error: None,
    };
    for rec in data.chunks_exact(RECORD) {
        let word = |i: usize| u32::from_ne_bytes(rec[i..i + 4].try_into().expect("4 bytes"));
        match word(0) {
            TAG_PID => report.pid = Some(word(4) as i32),
            TAG_ERROR => {
                if let Some(stage) = Stage::from_u32(word(4)) {
                    report.error = Some((stage, Errno::from_raw(word(8) as i32)));
                }
            }
            _ => {}
        }
    }
    Ok(report)
}

/// Raw pointers for the child, computed before the fork.
struct ChildArgs<'a> {
    program: &'a CString,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: &'a CString,
    stdio: [RawFd; 3],
}

/// Writes one record; async-signal-safe.
unsafe fn send(fd: RawFd, tag: u32, a: u32, b: u32) {
    let mut rec = [0u8; RECORD];
    rec[0..4].copy_from_slice(&tag.to_ne_bytes());
    rec[4..8].copy_from_slice(&a.to_ne_bytes());
    rec[8..12].copy_from_slice(&b.to_ne_bytes());
    // A 12-byte write to a pipe is atomic (below PIPE_BUF); nothing to do on failure.
    libc::write(fd, rec.as_ptr().cast(), RECORD);
}

unsafe fn fail(fd: RawFd, stage: Stage) -> ! {
    send(fd, TAG_ERROR, stage as u32, Errno::last_raw() as u32);
    libc::_exit(127)
}

/// The intermediate child: new session, fork the service, report its pid, exit.
///
/// # Safety
/// Must only be called in a freshly forked child; never returns.
unsafe fn intermediate(report: RawFd, args: &ChildArgs) -> ! {
    if libc::setsid() < 0 {
        fail(report, Stage::Setsid);
    }
    let pid = libc::fork();
    if pid < 0 {
        fail(report, Stage::Fork);
    }
    if pid == 0 {
        service(report, args);
    }
    send(report, TAG_PID, pid as u32, 0);
    libc::_exit(0)
}

/// The service process: reset signals, redirect stdio, chdir, exec.
///
/// # Safety
/// Must only be called in a freshly forked child; never returns.
unsafe fn service(report: RawFd, args: &ChildArgs) -> ! {
    // Signal masks and ignored dispositions survive exec. tend (like every Rust program)
    // ignores SIGPIPE, and a caller may have blocked signals: give the service defaults.
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    // 1..32 are the classic signals; the real-time ones start at glibc's SIGRTMIN.
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    for (target, &fd) in args.stdio.iter().enumerate() {
        if libc::dup2(fd, target as RawFd) < 0 {
            fail(report, Stage::Stdio);
        }
    }
    if libc::chdir(args.cwd.as_ptr()) < 0 {
        fail(report, Stage::Chdir);
    }
    libc::umask(0o022);
    // Keep nothing of tend's open descriptors (the database above all) in the service.
    // Marking them close-on-exec rather than closing keeps the report pipe usable until
    // exec. Kernels without close_range fall back to the descriptors' own CLOEXEC flags.
    libc::close_range(
        3,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
    );
    libc::execve(args.program.as_ptr(), args.argv, args.envp);
    fail(report, Stage::Exec)
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
