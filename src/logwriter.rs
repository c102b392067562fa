//! The log writer (`--log-timestamps on|stream`): the tend binary in a hidden mode,
//! `tend log-writer` (dispatched in `main.rs` before the command line is parsed), one
//! per service instance, like runit's svlogd or s6-log.
//!
//! **It can never take its service down.** The service's stdout and stderr are
//! descriptors that read as well as write their pipe (see [`crate::process::writer`]):
//! the service itself holds a read end for as long as it lives, so its writes never fail
//! with EPIPE nor raise SIGPIPE, whatever becomes of the writer's processes. What the
//! writer must do is come back when it is killed, keep reading whatever happens to its
//! files, and count what it could not write.
//!
//! It is two processes (the first started by [`crate::process::writer`]), each holding
//! the read ends of the service's pipes (fd 0 for stdout, fd 1 for stderr when that has
//! a pipe of its own), each watching the other through a pidfd:
//!
//! - the **keeper** does nothing but wait. When its worker is gone, it starts a new one
//!   on the same pipes, which writes `tend: log writer restarted (...)` first.
//! - the **worker** reads each pipe on a thread of its own, prefixes every line with its
//!   time (RFC 3339 in UTC, microseconds: `2026-12-06T21:58:01.123456Z`) and, with
//!   `stream`, `out` or `err`, and hands the lines to the main thread through a queue
//!   bounded at [`QUEUE_BYTES`]; the main thread appends them to the log files and
//!   rotates them by size itself (rename: `NAME.log` → `NAME.log.1` …, then a new
//!   `NAME.log`), which loses nothing on any file system since it is the only writer.
//!   When its keeper is gone, a thread of the worker starts a new keeper (its child) on
//!   the same pipes.
//!
//! So whichever of the two survives brings the other back, as often as it takes (at
//! most 5 starts in 10 s, then one a second). Both killed within the moment one takes
//! to start the other leaves neither to do it. Under a daemon, a new writer is then
//! started on the service's own pipes (see `supervisor::writers`), with `--restarts 1`
//! so that its first worker writes the restart line. Without a daemon (or for a service
//! whose writer the daemon cannot take the pipes for) the service runs on, its output
//! waits in the pipe and, once the pipe is full (1 MiB where allowed), its writes wait
//! until a daemon comes up or the service is started again.
//!
//! **Files that fail.** The readers never wait for the disk: they always drain the pipes,
//! so the service never blocks on its output. A write that fails (a full disk, the log
//! path replaced by a directory, a rotation that cannot rename) leaves only whole lines in
//! the file (a torn last line is cut off again) and is retried with backoff
//! ([`RETRY_FIRST`] doubling to [`RETRY_MAX`]), the unwritten lines held meanwhile. Once
//! the queue is full, lines read are dropped and counted, and `tend: N lines lost: WHY` is
//! written in their place as soon as writing works again (or at the writer's end). The
//! log path is compared with the open file at most every [`PATH_CHECK`]: a file removed,
//! moved away or replaced is opened (created) again.
//!
//! Both processes start a session of their own and block SIGTERM, SIGINT and SIGHUP: a
//! stop of the service, a Ctrl-C in the terminal that started it or a hang-up never ends
//! them before the service's last lines are written. They end at end of input: when every
//! process holding a write end (the service and its children) is gone and the pipes are
//! empty. A partial last line is written with a newline. A file that still cannot be
//! written then is retried for [`END_LINGER`] more, and then given up.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::process::handle::Handle;

/// The first argument that makes the tend binary a log writer (see `main.rs`).
pub const MODE: &str = "log-writer";
/// Bytes of stamped lines the worker holds in memory, waiting for the disk.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// What one `read` takes from a pipe (a quarter of the pipe tend asks for).
const READ_SIZE: usize = 256 * 1024;
/// A line longer than this is cut: its first part is written as a line of its own, so a
/// service that never writes a newline cannot make the writer grow without bound.
pub const MAX_LINE: usize = 64 * 1024;
/// `2026-12-06T21:58:01.123456Z`.
pub const TIME_LEN: usize = 27;
/// The first wait before a failed write is tried again; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries of a write that keeps failing.
pub const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a worker whose input has ended goes on trying a file it cannot write before
/// it gives up (and ends): long enough for a full disk to be cleaned up, bounded so that
/// no writer outlives its service for good.
pub const END_LINGER: Duration = Duration::from_secs(10);
/// How often, at most, the log path is compared with the file the worker has open.
pub const PATH_CHECK: Duration = Duration::from_secs(1);
/// Why lines are dropped when no write failed: the disk was slower than the service.
const QUEUE_FULL: &str = "the log writer's queue was full";

/// What to prefix each line with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    /// `<time> <text>`.
    Time,
    /// `<time> <out|err> <text>`.
    TimeAndStream,
}

/// The writer's settings, as its command line carries them.
#[derive(Clone, Debug)]
pub struct Config {
    pub prefix: Prefix,
    /// Where stdout's lines go.
    pub out: PathBuf,
    /// Where stderr's lines go (may be `out`).
    pub err: PathBuf,
    /// Whether stderr has a pipe of its own (the writer's fd 1).
    pub err_pipe: bool,
    /// Rotate a file before it grows past this; 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files kept: `NAME.log.1` (newest) to `NAME.log.N`.
    pub backups: u32,
    /// The cgroup the keeper moves itself into first (its worker is born there): the
    /// home's `log-writers`, beside the services' cgroups and never in one of them.
    pub cgroup: Option<PathBuf>,
}

impl Config {
    /// The arguments of tend that start a writer with these settings: [`MODE`], then
    /// what [`Config::parse`] reads.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            MODE.into(),
            "--prefix".into(),
            match self.prefix {
                Prefix::Time => "time",
                Prefix::TimeAndStream => "stream",
            }
            .into(),
            "--out".into(),
            self.out.clone().into(),
            "--err".into(),
            self.err.clone().into(),
            "--max-bytes".into(),
            self.max_bytes.to_string().into(),
            "--backups".into(),
            self.backups.to_string().into(),
        ];
        if self.err_pipe {
            a.push("--err-pipe".into());
        }
        if let Some(c) = &self.cgroup {
            a.push("--cgroup".into());
            a.push(c.clone().into());
        }
        a
    }

    /// The arguments of a writer started anew on the pipes of a running service whose
    /// writer is gone, both of its processes (the daemon does that): [`Config::to_args`]
    /// and `--restarts 1 --killed-by 0`, so that its first worker writes the restart
    /// line (how the previous one ended is not known).
    pub fn to_restarted_args(&self) -> Vec<OsString> {
        let mut a = self.to_args();
        a.extend(["--restarts", "1", "--killed-by", "0"].map(OsString::from));
        a
    }

    /// Reads what [`Config::to_args`] wrote; also what the two processes add for the
    /// partners they start: `--worker`, `--partner PID` (the partner that started this
    /// one, its parent), `--restarts N` and `--killed-by SIG` (how many workers ended
    /// before this one, and the signal that ended the last of them, 0 if not known; to
    /// a keeper: what its first worker is told).
    pub fn parse(args: &[OsString]) -> Result<(Config, Role), String> {
        let mut c = Config {
            prefix: Prefix::Time,
            out: PathBuf::new(),
            err: PathBuf::new(),
            err_pipe: false,
            max_bytes: 0,
            backups: crate::service::LOG_BACKUPS,
            cgroup: None,
        };
        let mut worker = false;
        let mut partner = None;
        let mut restarts = 0;
        let mut killed_by = 0;
        let mut it = args.iter();
        let num = |v: Option<&OsString>, what: &str| -> Result<u64, String> {
            v.and_then(|v| v.to_str())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{what} needs a number"))
        };
        while let Some(a) = it.next() {
            match a.to_str().unwrap_or("") {
                "--prefix" => {
                    c.prefix = match it.next().and_then(|v| v.to_str()) {
                        Some("time") => Prefix::Time,
                        Some("stream") => Prefix::TimeAndStream,
                        _ => return Err("--prefix is time or stream".into()),
                    }
                }
                "--out" => c.out = it.next().ok_or("--out needs a path")?.into(),
                "--err" => c.err = it.next().ok_or("--err needs a path")?.into(),
                "--max-bytes" => c.max_bytes = num(it.next(), "--max-bytes")?,
                "--backups" => c.backups = num(it.next(), "--backups")? as u32,
                "--err-pipe" => c.err_pipe = true,
                "--cgroup" => c.cgroup = Some(it.next().ok_or("--cgroup needs a path")?.into()),
                "--worker" => worker = true,
                "--partner" => partner = Some(num(it.next(), "--partner")? as i32),
                "--restarts" => restarts = num(it.next(), "--restarts")?,
                "--killed-by" => killed_by = num(it.next(), "--killed-by")? as i32,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if c.out.as_os_str().is_empty() {
            return Err("--out is required".into());
        }
        if c.err.as_os_str().is_empty() {
            c.err = c.out.clone();
        }
        let role = match (worker, partner) {
            (false, partner) => Role::Keeper {
                partner,
                restarts,
                killed_by,
            },
            (true, Some(keeper)) => Role::Worker {
                keeper,
                restarts,
                killed_by,
            },
            (true, None) => return Err("--worker needs --partner".into()),
        };
        Ok((c, role))
    }
}

/// Which of the two processes this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `partner`: the worker that started this keeper (its parent), if one did;
    /// `restarts` and `killed_by`: as for a worker, what its first worker is told (a
    /// keeper started in place of a writer that is gone: see
    /// [`Config::to_restarted_args`]).
    Keeper {
        partner: Option<i32>,
        restarts: u64,
        killed_by: i32,
    },
    /// `keeper`: the keeper that started this worker (its parent); `restarts`: how many
    /// workers ended before this one; `killed_by`: the signal that ended the last of
    /// them (0: not known).
    Worker {
        keeper: i32,
        restarts: u64,
        killed_by: i32,
    },
}

/// `tend log-writer ARGS`: runs the keeper or the worker; the process's exit code.
pub fn main(args: &[OsString]) -> u8 {
    crate::process::writer::close_inherited();
    let (cfg, role) = match Config::parse(args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tend: log-writer: {e}");
            return 2;
        }
    };
    shield();
    match role {
        Role::Keeper {
            partner,
            restarts,
            killed_by,
        } => {
            // Out of the cgroup of the tend process that started it (a login session's
            // scope, say, which may be killed at logout while the service runs on).
            // Where it cannot move, it stays: it still is in none of the service's.
            if let Some(c) = &cfg.cgroup {
                let _ = crate::process::writer::join_cgroup(c);
            }
            keep(&cfg, partner, restarts, killed_by)
        }
        Role::Worker {
            keeper,
            restarts,
            killed_by,
        } => match work(&cfg, keeper, restarts, killed_by) {
            Ok(()) => 0,
            Err(_) => 1,
        },
    }
}

/// A session of its own (no terminal's signals reach it) and the stop signals blocked,
/// before any thread starts, so every thread inherits the mask.
fn shield() {
    let _ = nix::unistd::setsid();
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        set.add(s);
    }
    let _ = set.thread_block();
}

/// The read ends of the service's pipes this process was started with: fd 0, and fd 1
/// when stderr has a pipe of its own.
fn inherited_pipes(cfg: &Config) -> Vec<OwnedFd> {
    std::iter::once(0)
        .chain(cfg.err_pipe.then_some(1))
        .map(crate::process::writer::inherited)
        .collect()
}

/// True once the service's output has ended: no process holds a write end of any of the
/// pipes any more (POLLHUP) and nothing is left in them to read.
fn finished(pipes: &[OwnedFd]) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds: Vec<PollFd> = pipes
        .iter()
        .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN))
        .collect();
    // Unknown (poll failed) is not finished: a new worker then finds out by reading.
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds.iter().all(|f| {
            f.revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP) && !r.contains(PollFlags::POLLIN))
        })
}

/// The other process of the pair, being watched.
enum Partner {
    /// Started by this process: waited for as its child.
    Child(Child),
    /// This process's parent (the partner that started it), pinned by a pidfd.
    Parent(Handle),
}

impl Partner {
    /// The partner `pid` that started this process, pinned, if it still is its parent:
    /// the pidfd is opened first, so a parent that is still ours afterwards is the very
    /// process the pidfd refers to. `None`: it is gone already.
    fn parent(pid: i32) -> Option<Partner> {
        let (h, _) = Handle::pin(pid)?;
        (nix::unistd::getppid().as_raw() == pid).then_some(Partner::Parent(h))
    }

    /// Waits until the partner has ended; the signal that ended it, 0 if not known or
    /// if it exited.
    fn wait(self) -> i32 {
        match self {
            Partner::Child(mut c) => c.wait().ok().and_then(|s| s.signal()).unwrap_or(0),
            Partner::Parent(h) => {
                while !h.wait(Duration::from_secs(3600)) {}
                0
            }
        }
    }
}

/// Starts the partner `extra` describes (`/proc/self/exe`: this very binary, even if the
/// file was replaced since) on the same pipes, as fds 0 and 1. Its stderr is ours.
fn start_partner(cfg: &Config, pipes: &[OwnedFd], extra: &[String]) -> io::Result<Child> {
    let stdout = match pipes.get(1) {
        Some(p) => Stdio::from(p.try_clone()?),
        None => Stdio::null(),
    };
    Command::new("/proc/self/exe")
        .arg0("tend")
        .args(cfg.to_args())
        .args(extra)
        .stdin(Stdio::from(pipes[0].try_clone()?))
        .stdout(stdout)
        .current_dir("/")
        .spawn()
}

/// The starts of partners: at most 5 in 10 s, then one a second, so that a partner that
/// dies at once (no memory, no pids left) cannot make the survivor spin.
#[derive(Default)]
struct Pace {
    recent: VecDeque<Instant>,
}

impl Pace {
    /// Waits, if need be, before the next start.
    fn next(&mut self) {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(10))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= 5 {
            std::thread::sleep(Duration::from_secs(1));
        }
        self.recent.push_back(Instant::now());
    }
}

/// The keeper: holds the pipes and runs workers on them, one after another, until the
/// service's output has ended. A keeper started by a worker (`partner`) watches that
/// worker first. `restarts` and `killed_by`: how many workers ended before this keeper
/// came, and how the last one did (see [`Role::Keeper`]).
fn keep(cfg: &Config, partner: Option<i32>, mut restarts: u64, mut killed_by: i32) -> u8 {
    let pipes = inherited_pipes(cfg);
    let me = std::process::id().to_string();
    // The worker that started this keeper: gone already is as if it had ended now.
    let mut first = partner.map(Partner::parent);
    let mut worker: Option<Partner> = None;
    let mut pace = Pace::default();
    loop {
        let ended = match first.take() {
            Some(p) => Some(p.map_or(0, Partner::wait)),
            None => worker.take().map(Partner::wait),
        };
        if let Some(sig) = ended {
            restarts += 1;
            killed_by = sig;
        }
        // A worker ends by itself only at end of input; the pipes tell whether that is
        // why it is gone (the worker that started this keeper is not its child: it has
        // no exit status to go by).
        if finished(&pipes) {
            return 0;
        }
        pace.next();
        let mut extra = vec!["--worker".to_string(), "--partner".into(), me.clone()];
        if restarts > 0 {
            extra.extend([
                "--restarts".into(),
                restarts.to_string(),
                "--killed-by".into(),
                killed_by.to_string(),
            ]);
        }
        // Not started (no memory, no pids): tried again, paced, while the service may
        // still write.
        worker = start_partner(cfg, &pipes, &extra).ok().map(Partner::Child);
    }
}

/// The worker's watch on its keeper: when the keeper is gone while the input goes on, a
/// new one is started (this worker's child) on `pipes`, duplicates of the worker's own.
fn watch_keeper(cfg: Config, pipes: Vec<OwnedFd>, keeper: i32, shared: Arc<Shared>) {
    let extra = ["--partner".to_string(), std::process::id().to_string()];
    let mut keeper = Partner::parent(keeper);
    let mut pace = Pace::default();
    loop {
        if let Some(k) = keeper.take() {
            k.wait();
        }
        if shared.input_ended() {
            return;
        }
        pace.next();
        keeper = start_partner(&cfg, &pipes, &extra).ok().map(Partner::Child);
    }
}

/// One queued chunk: stamped lines for one destination (0 stdout's file, 1 stderr's).
struct Chunk {
    dest: usize,
    data: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// Lines dropped since the last marker, per stream.
    dropped: [u64; 2],
    /// Why the first of them was dropped, per stream.
    why: [String; 2],
    /// Set by the main thread while it cannot write: why.
    failing: Option<String>,
    /// Readers still reading.
    open: usize,
}

struct Shared {
    q: Mutex<Queue>,
    ready: Condvar,
    prefix: Prefix,
    limit: usize,
}

/// The current time as the line format has it.
pub fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

impl Shared {
    fn new(prefix: Prefix, limit: usize, open: usize) -> Shared {
        Shared {
            q: Mutex::new(Queue {
                open,
                ..Queue::default()
            }),
            ready: Condvar::new(),
            prefix,
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tag(&self, stream: usize) -> &'static str {
        match (self.prefix, stream) {
            (Prefix::Time, _) => "",
            (Prefix::TimeAndStream, 0) => "out ",
            (Prefix::TimeAndStream, _) => "err ",
        }
    }

    /// The line that stands for the lines of `stream` dropped since the last one, if
    /// any, stamped `time`; the count starts again.
    fn lost_line(&self, q: &mut Queue, stream: usize, time: &str) -> Option<String> {
        let n = std::mem::take(&mut q.dropped[stream]);
        let why = std::mem::take(&mut q.why[stream]);
        (n > 0).then(|| format!("{time} {}tend: {n} lines lost: {why}\n", self.tag(stream)))
    }

    /// Stamps the complete lines in `lines` (each ending in a newline) with one time,
    /// taken under the queue's lock so that times in the files never go backwards, and
    /// queues them, or drops them if the queue is full.
    fn push(&self, stream: usize, lines: &[u8]) {
        let count = lines.iter().filter(|&&b| b == b'\n').count();
        let tag = self.tag(stream).as_bytes();
        let per_line = TIME_LEN + 1 + tag.len();
        let needed = lines.len() + count * per_line;
        let mut q = self.lock();
        // Full: drop and count. An empty queue always takes a chunk (at most 64 KiB of
        // lines, or one longer line, with their prefixes), so the bound is the limit
        // plus one chunk.
        if q.bytes + needed > self.limit && !q.chunks.is_empty() {
            if q.dropped[stream] == 0 {
                q.why[stream] = q.failing.clone().unwrap_or_else(|| QUEUE_FULL.into());
            }
            q.dropped[stream] += count as u64;
            return;
        }
        let time = stamp(SystemTime::now());
        let mut data = Vec::with_capacity(needed + 128);
        if let Some(lost) = self.lost_line(&mut q, stream, &time) {
            data.extend_from_slice(lost.as_bytes());
        }
        for line in lines.split_inclusive(|&b| b == b'\n') {
            data.extend_from_slice(time.as_bytes());
            data.push(b' ');
            data.extend_from_slice(tag);
            data.extend_from_slice(line);
        }
        q.bytes += data.len();
        q.chunks.push_back(Chunk { dest: stream, data });
        self.ready.notify_one();
    }

    /// A reader reached end of input.
    fn close(&self) {
        let mut q = self.lock();
        q.open -= 1;
        self.ready.notify_one();
    }

    /// True once every reader has reached end of input.
    fn input_ended(&self) -> bool {
        self.lock().open == 0
    }

    /// Says why the main thread cannot write (`None`: it can again).
    fn failing(&self, why: Option<String>) {
        self.lock().failing = why;
    }

    /// The next chunk to write, waiting for one; `None` at end of input with nothing
    /// left. Once the queue is empty, lines dropped since the last chunk are reported at
    /// once, in their place: after everything queued before them, before anything read
    /// after them.
    fn pop(&self) -> Option<Chunk> {
        let mut q = self.lock();
        loop {
            if let Some(c) = q.chunks.pop_front() {
                q.bytes -= c.data.len();
                return Some(c);
            }
            if let Some(stream) = (0..2).find(|&s| q.dropped[s] > 0) {
                let time = stamp(SystemTime::now());
                let data = self.lost_line(&mut q, stream, &time)?.into_bytes();
                return Some(Chunk { dest: stream, data });
            }
            if q.open == 0 {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Queues complete lines in pieces of at most [`MAX_LINE`] bytes (but whole lines): a
/// queued chunk stays small even for a read of many short lines, whose prefixes
/// multiply its size, and a full queue drops no more than one piece at a time.
fn push_lines(shared: &Shared, stream: usize, mut lines: &[u8]) {
    while lines.len() > MAX_LINE {
        let cut = match lines[..MAX_LINE].iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            // One line longer than a piece: whole, on its own.
            None => lines
                .iter()
                .position(|&b| b == b'\n')
                .map_or(lines.len(), |i| i + 1),
        };
        shared.push(stream, &lines[..cut]);
        lines = &lines[cut..];
    }
    if !lines.is_empty() {
        shared.push(stream, lines);
    }
}

/// Reads one pipe until end of input, queueing complete lines.
fn read_pipe(shared: &Shared, stream: usize, mut pipe: File) {
    let mut buf = vec![0u8; READ_SIZE];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let data = &buf[..n];
        let Some(last_nl) = data.iter().rposition(|&b| b == b'\n') else {
            partial.extend_from_slice(data);
            if partial.len() >= MAX_LINE {
                partial.push(b'\n');
                shared.push(stream, &partial);
                partial.clear();
            }
            continue;
        };
        if partial.is_empty() {
            push_lines(shared, stream, &data[..=last_nl]);
        } else {
            partial.extend_from_slice(&data[..=last_nl]);
            push_lines(shared, stream, &partial);
            partial.clear();
        }
        partial.extend_from_slice(&data[last_nl + 1..]);
    }
    if !partial.is_empty() {
        partial.push(b'\n');
        shared.push(stream, &partial);
    }
    shared.close();
}

/// The waits between tries of a write that keeps failing.
#[derive(Default)]
struct Backoff {
    last: Option<Duration>,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self.last.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX));
        self.last = Some(d);
        d
    }
}

/// The worker: readers on threads, a watch on the keeper on another, the files on this
/// one.
fn work(cfg: &Config, keeper: i32, restarts: u64, killed_by: i32) -> io::Result<()> {
    let pipes = inherited_pipes(cfg);
    let shared = Arc::new(Shared::new(cfg.prefix, QUEUE_BYTES, pipes.len()));
    // Opened at the first write, and again whenever a write fails: a file that cannot be
    // opened now is tried again later, never a reason to stop reading.
    let mut outputs = vec![Output::new(&cfg.out, cfg.max_bytes, cfg.backups)];
    // Stderr's lines go to stdout's file when the paths are the same: one writer per file.
    let err_dest = if cfg.err == cfg.out {
        0
    } else {
        outputs.push(Output::new(&cfg.err, cfg.max_bytes, cfg.backups));
        1
    };
    if restarts > 0 {
        let how = match killed_by {
            0 => "ended".to_string(),
            sig => format!("ended by signal {sig}"),
        };
        let line = format!(
            "{} tend: log writer restarted (the previous one {how}; lines it had read but \
             not written are lost)\n",
            stamp(SystemTime::now())
        );
        let mut q = shared.lock();
        q.bytes += line.len();
        q.chunks.push_back(Chunk {
            dest: 0,
            data: line.into_bytes(),
        });
    }
    let spares = pipes
        .iter()
        .map(OwnedFd::try_clone)
        .collect::<io::Result<Vec<_>>>()?;
    let mut readers = Vec::new();
    for (stream, fd) in pipes.into_iter().enumerate() {
        let s = Arc::clone(&shared);
        readers.push(
            std::thread::Builder::new()
                .name(format!("read-{stream}"))
                .stack_size(64 * 1024)
                .spawn(move || read_pipe(&s, stream, File::from(fd)))?,
        );
    }
    {
        let (cfg, s) = (cfg.clone(), Arc::clone(&shared));
        // Not joined: it ends with the process, or by itself at end of input.
        std::thread::Builder::new()
            .name("keeper".into())
            .stack_size(64 * 1024)
            .spawn(move || watch_keeper(cfg, spares, keeper, s))?;
    }
    let mut held: Option<Chunk> = None;
    let mut backoff = Backoff::default();
    let mut ended_at: Option<Instant> = None;
    while let Some(mut chunk) = held.take().or_else(|| shared.pop()) {
        let out = &mut outputs[if chunk.dest == 0 { 0 } else { err_dest }];
        match out.write(&chunk.data) {
            Ok(()) => {
                if backoff.last.take().is_some() {
                    shared.failing(None);
                }
            }
            Err((done, e)) => {
                chunk.data.drain(..done);
                shared.failing(Some(format!(
                    "{} could not be written ({})",
                    out.path.display(),
                    crate::error::io_reason(&e)
                )));
                if shared.input_ended() {
                    let since = *ended_at.get_or_insert_with(Instant::now);
                    if since.elapsed() >= END_LINGER {
                        break;
                    }
                }
                held = Some(chunk);
                std::thread::sleep(backoff.next());
            }
        }
    }
    for r in readers {
        let _ = r.join();
    }
    Ok(())
}

/// One log file the worker appends to and rotates.
struct Output {
    path: PathBuf,
    /// `None` until opened, and again once it must be opened anew.
    file: Option<File>,
    size: u64,
    /// Only regular files are rotated (not /dev/null, say).
    regular: bool,
    max: u64,
    backups: u32,
    /// When the path was last compared with the open file.
    checked: Instant,
    /// A torn line could not be cut off after a failed write: the next write starts on a
    /// line of its own.
    torn: bool,
}

impl Output {
    fn new(path: &Path, max: u64, backups: u32) -> Output {
        Output {
            path: path.to_path_buf(),
            file: None,
            size: 0,
            regular: false,
            max,
            backups,
            checked: Instant::now(),
            torn: false,
        }
    }

    /// Opens (creates) the file for appending. Never blocks: what the path names now may
    /// be a FIFO someone put there, which is refused like any file a service cannot log
    /// to.
    fn open(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| {
                // A FIFO without a reader fails a non-blocking open with ENXIO: say what
                // it is.
                match std::fs::metadata(&self.path) {
                    Ok(m) => crate::service::stdio_refusal(&m).map_or(e, io::Error::other),
                    Err(_) => e,
                }
            })?;
        let meta = file.metadata()?;
        if let Some(why) = crate::service::stdio_refusal(&meta) {
            return Err(io::Error::other(why));
        }
        let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        self.regular = meta.is_file();
        self.size = meta.len();
        self.file = Some(file);
        self.checked = Instant::now();
        Ok(())
    }

    fn rotating(&self) -> bool {
        self.max > 0 && self.regular
    }

    /// Drops the open file if the path no longer names it (removed, moved away,
    /// replaced): the next write opens the path again. Looked at most every
    /// [`PATH_CHECK`]; lines written meanwhile went to the file where it now is.
    fn check_path(&mut self) {
        let Some(file) = &self.file else { return };
        if !self.regular || self.checked.elapsed() < PATH_CHECK {
            return;
        }
        self.checked = Instant::now();
        let replaced = match (std::fs::metadata(&self.path), file.metadata()) {
            (Ok(now), Ok(open)) => (now.dev(), now.ino()) != (open.dev(), open.ino()),
            (Err(e), _) => e.kind() == io::ErrorKind::NotFound,
            // Unknown is not replaced: go on with the file that works.
            _ => false,
        };
        if replaced {
            self.file = None;
        }
    }

    /// Appends whole lines, rotating first whenever the next line would not fit: a file
    /// never grows past `max`, except by one line longer than the room left in an empty
    /// file. On failure: the error, and how many bytes of `data` are in the file (whole
    /// lines: a torn last line is cut off again); the rest is for the caller to retry.
    fn write(&mut self, data: &[u8]) -> Result<(), (usize, io::Error)> {
        self.check_path();
        let mut done = 0;
        while done < data.len() {
            if self.file.is_none() {
                self.open().map_err(|e| (done, e))?;
            }
            let rest = &data[done..];
            let room = if self.rotating() {
                self.max.saturating_sub(self.size) as usize
            } else {
                usize::MAX
            };
            let n = if rest.len() <= room {
                rest.len()
            } else {
                match rest[..room].iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if self.size > 0 => {
                        self.rotate().map_err(|e| (done, e))?;
                        continue;
                    }
                    None => rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |i| i + 1),
                }
            };
            if self.torn {
                self.append(b"\n").map_err(|(_, e)| (done, e))?;
                self.torn = false;
            }
            match self.append(&rest[..n]) {
                Ok(()) => done += n,
                Err((whole, e)) => return Err((done + whole, e)),
            }
        }
        Ok(())
    }

    /// Writes `piece` (whole lines) to the open file. On failure: the error, and how many
    /// bytes of it are left in the file, a whole number of lines: a partial write's torn
    /// last line is cut off again.
    fn append(&mut self, piece: &[u8]) -> Result<(), (usize, io::Error)> {
        let file = self.file.as_mut().expect("opened before appending");
        let mut written = 0;
        let err = loop {
            if written == piece.len() {
                self.size += written as u64;
                return Ok(());
            }
            match file.write(&piece[written..]) {
                Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break e,
            }
        };
        let whole = piece[..written]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if whole < written && !cut(file, (written - whole) as u64) {
            self.torn = true;
        }
        self.size += whole as u64;
        // Opened again at the next try: a file that failed may be a file that was
        // replaced, and its size is known afresh.
        self.file = None;
        Err((whole, err))
    }

    /// `NAME.N-1` → `NAME.N` (the oldest is dropped), `NAME` → `NAME.1`, a new `NAME`.
    /// Renames only: nothing is copied, nothing written meanwhile can be lost.
    fn rotate(&mut self) -> io::Result<()> {
        let backups = self.backups.max(1);
        for i in (1..backups).rev() {
            match std::fs::rename(
                crate::logs::backup(&self.path, i),
                crate::logs::backup(&self.path, i + 1),
            ) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // Someone may have moved, removed or replaced the file: what the name holds now
        // is rotated if it is a file (a directory put there is left alone, and opening
        // the name then fails until it is gone).
        if std::fs::metadata(&self.path).is_ok_and(|m| m.is_file()) {
            match std::fs::rename(&self.path, crate::logs::backup(&self.path, 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.file = None;
        self.open()
    }
}

/// Takes the last `torn` bytes this process appended to `file` off again; false if it
/// could not. Only while the file still ends with them (O_APPEND leaves the offset right
/// after them): lines another writer appended since are never cut.
fn cut(file: &mut File, torn: u64) -> bool {
    let end = match file.stream_position() {
        Ok(end) if end >= torn => end,
        _ => return false,
    };
    file.metadata().is_ok_and(|m| m.len() == end) && file.set_len(end - torn).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let c = Config {
            prefix: Prefix::TimeAndStream,
            out: "/a/o.log".into(),
            err: "/a/e.log".into(),
            err_pipe: true,
            max_bytes: 1000,
            backups: 3,
            cgroup: Some("/sys/fs/cgroup/tend-x/log-writers".into()),
        };
        let args = c.to_args();
        assert_eq!(args[0], MODE);
        let (p, role) = Config::parse(&args[1..]).unwrap();
        assert_eq!(
            role,
            Role::Keeper {
                partner: None,
                restarts: 0,
                killed_by: 0
            }
        );
        let (_, role) = Config::parse(&c.to_restarted_args()[1..]).unwrap();
        assert_eq!(
            role,
            Role::Keeper {
                partner: None,
                restarts: 1,
                killed_by: 0
            }
        );
        assert_eq!(p.prefix, c.prefix);
        assert_eq!(
            (p.out, p.err, p.err_pipe, p.max_bytes),
            (c.out, c.err, true, 1000)
        );
        assert!(Config::parse(&["--bogus".into()]).is_err());
        let mut worker = args[1..].to_vec();
        worker.extend(
            [
                "--worker",
                "--partner",
                "7",
                "--restarts",
                "2",
                "--killed-by",
                "9",
            ]
            .map(OsString::from),
        );
        assert_eq!(
            Config::parse(&worker).unwrap().1,
            Role::Worker {
                keeper: 7,
                restarts: 2,
                killed_by: 9
            }
        );
        let mut keeper = args[1..].to_vec();
        keeper.extend(["--partner", "8"].map(OsString::from));
        assert_eq!(
            Config::parse(&keeper).unwrap().1,
            Role::Keeper {
                partner: Some(8),
                restarts: 0,
                killed_by: 0
            }
        );
    }

    #[test]
    fn stamp_is_27_bytes_utc_micros() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_058_281_000_001);
        let s = stamp(t);
        assert_eq!(s.len(), TIME_LEN);
        assert!(s.ends_with(".000001Z"), "{s}");
        assert_eq!(stamp(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }

    /// The texts of the lines of `chunks`, each checked to start with a time.
    fn texts(chunks: impl IntoIterator<Item = Chunk>) -> Vec<String> {
        chunks
            .into_iter()
            .flat_map(|c| {
                String::from_utf8(c.data)
                    .unwrap()
                    .lines()
                    .map(|l| {
                        assert_eq!(&l[TIME_LEN..TIME_LEN + 1], " ");
                        l[TIME_LEN + 1..].to_string()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn drain(s: &Shared) -> Vec<String> {
        let mut q = s.lock();
        q.bytes = 0;
        let chunks: Vec<Chunk> = q.chunks.drain(..).collect();
        drop(q);
        texts(chunks)
    }

    #[test]
    fn a_full_queue_drops_and_says_so_once_there_is_room() {
        let s = Shared::new(Prefix::TimeAndStream, 100, 2);
        s.push(0, b"a\nb\n");
        s.push(0, b"c\nd\ne\n");
        s.push(1, &b"x\n".repeat(10));
        // 2 lines of 34 bytes fit; the next 3 (and the 10 on stderr) would not.
        assert_eq!(drain(&s), ["out a", "out b"]);
        s.push(0, b"f\n");
        assert_eq!(
            drain(&s),
            [
                "out tend: 3 lines lost: the log writer's queue was full",
                "out f"
            ]
        );
        // Still counted for stderr, and reported as soon as the queue is empty, by the
        // main thread, even with no line after them.
        assert_eq!(
            texts(s.pop()),
            ["err tend: 10 lines lost: the log writer's queue was full"]
        );
        s.close();
        s.close();
        assert!(s.pop().is_none());
    }

    #[test]
    fn lines_dropped_while_writing_fails_are_counted_with_the_reason() {
        let s = Shared::new(Prefix::Time, 40, 1);
        s.push(0, b"a\n");
        s.failing(Some(
            "/x.log could not be written (no space left on device)".into(),
        ));
        s.push(0, b"b\nc\n");
        s.failing(None);
        assert_eq!(texts(s.pop()), ["a"]);
        assert_eq!(
            texts(s.pop()),
            ["tend: 2 lines lost: /x.log could not be written (no space left on device)"]
        );
    }

    #[test]
    fn many_short_lines_are_queued_in_small_chunks() {
        let s = Shared::new(Prefix::Time, QUEUE_BYTES, 1);
        let input = b"ab\n".repeat(100_000);
        push_lines(&s, 0, &input);
        let q = s.lock();
        assert!(q.chunks.len() >= 5);
        let mut lines = 0;
        for c in &q.chunks {
            let n = c.data.iter().filter(|&&b| b == b'\n').count();
            assert!(n * 3 <= MAX_LINE, "{n} lines in one chunk");
            lines += n;
        }
        assert_eq!(lines, 100_000);
    }

    #[test]
    fn partial_and_overlong_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in");
        let mut input = b"one\ntw".to_vec();
        input.extend(b"o\n");
        input.extend(vec![b'z'; MAX_LINE + 10]);
        input.extend(b"\nlast");
        std::fs::write(&p, &input).unwrap();
        let s = Shared::new(Prefix::Time, QUEUE_BYTES, 1);
        read_pipe(&s, 0, File::open(&p).unwrap());
        let lines = drain(&s);
        assert_eq!(lines[0], "one");
        assert_eq!(lines[1], "two");
        // Cut at a read's boundary once 64 KiB are held: no byte lost, none added.
        assert_eq!(
            lines[2..lines.len() - 1].concat(),
            "z".repeat(MAX_LINE + 10)
        );
        assert!(lines[2].len() >= MAX_LINE);
        assert_eq!(lines.last().unwrap(), "last");
        assert!(s.input_ended());
    }

    #[test]
    fn rotation_keeps_whole_lines_and_never_grows_past_max() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut o = Output::new(&p, 100, 3);
        let lines: String = (0..40).map(|i| format!("line {i:03}\n")).collect();
        o.write(lines.as_bytes()).unwrap();
        let mut all = String::new();
        for i in (1..=3).rev() {
            let t = std::fs::read_to_string(crate::logs::backup(&p, i)).unwrap();
            assert!(t.len() <= 100 && t.ends_with('\n'));
            all.push_str(&t);
        }
        all.push_str(&std::fs::read_to_string(&p).unwrap());
        // 360 bytes at 9 per line: 11 lines per 100-byte file, 3 backups kept.
        assert!(lines.ends_with(&all), "{all}");
        assert!(!crate::logs::backup(&p, 4).exists());
    }

    #[test]
    fn a_path_replaced_by_a_directory_fails_until_it_is_a_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut o = Output::new(&p, 0, 3);
        o.write(b"one\n").unwrap();
        std::fs::rename(&p, dir.path().join("moved.log")).unwrap();
        std::fs::create_dir(&p).unwrap();
        // Within PATH_CHECK the open file is written: the line goes where it was moved.
        o.write(b"two\n").unwrap();
        o.checked -= PATH_CHECK;
        let (done, e) = o.write(b"three\n").unwrap_err();
        assert_eq!((done, e.raw_os_error()), (0, Some(libc::EISDIR)));
        std::fs::remove_dir(&p).unwrap();
        o.write(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "three\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved.log")).unwrap(),
            "one\ntwo\n"
        );
    }

    #[test]
    fn a_fifo_put_in_place_of_the_log_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut o = Output::new(&p, 0, 3);
        let (done, e) = o.write(b"one\n").unwrap_err();
        assert_eq!(done, 0);
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert_eq!(waits[0], RETRY_FIRST);
        assert_eq!(waits[1], RETRY_FIRST * 2);
        assert_eq!(*waits.last().unwrap(), RETRY_MAX);
    }
}
