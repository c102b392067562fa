//! The log writer (`--log-timestamps on|stream`): the tend binary in a hidden mode,
//! `tend log-writer` (dispatched in `main.rs` before the command line is parsed), one
//! per service instance, like runit's svlogd or s6-log.
//!
//! It is two processes (started by [`crate::process::writer`]):
//!
//! - the **keeper** holds the read ends of the service's pipes (its fd 0 for stdout, fd 1
//!   for stderr when that has a pipe of its own) and runs a worker on them. When the
//!   worker is killed, the keeper starts a new one on the same pipes: meanwhile the
//!   service's writes wait in the pipe (and block it once the pipe, 1 MiB where
//!   allowed, is full), but they never fail with EPIPE, since the keeper still holds a
//!   read end. When the worker exits on its own (end of input, or an error it
//!   reported), so does the keeper.
//! - the **worker** reads each pipe on a thread of its own, prefixes every line with its
//!   time (RFC 3339 in UTC, microseconds: `2026-12-06T21:58:01.123456Z`) and, with
//!   `stream`, `out` or `err`, and hands the lines to the main thread through a queue
//!   bounded at [`QUEUE_BYTES`]; the main thread appends them to the log files and
//!   rotates them by size itself (rename: `NAME.log` → `NAME.log.1` …, then a new
//!   `NAME.log`), which loses nothing on any file system since it is the only writer.
//!
//! **A slow disk.** The readers never wait for the disk: they always drain the pipes, so
//! the service never blocks on its output while the queue has room. When the queue is
//! full, the lines read are dropped and counted, and one line `tend: dropped N lines (the
//! log writer's queue was full)` is written in their place once there is room again.
//!
//! Both processes start a session of their own and block SIGTERM, SIGINT and SIGHUP: a
//! stop of the service, a Ctrl-C in the terminal that started it or a hang-up never ends
//! them before the service's last lines are written. They end at end of input: when every
//! process holding a write end (the service and its children) is gone. A partial last
//! line is written with a newline.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

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

    /// Reads what [`Config::to_args`] wrote; also `--worker`, `--restarts N` and
    /// `--killed-by SIG`, which the keeper adds for its worker.
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
        let mut role = Role::Keeper;
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
                "--worker" => {
                    role = Role::Worker {
                        restarts: 0,
                        killed_by: 0,
                    }
                }
                "--restarts" => {
                    let n = num(it.next(), "--restarts")?;
                    if let Role::Worker { restarts, .. } = &mut role {
                        *restarts = n;
                    }
                }
                "--killed-by" => {
                    let n = num(it.next(), "--killed-by")? as i32;
                    if let Role::Worker { killed_by, .. } = &mut role {
                        *killed_by = n;
                    }
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if c.out.as_os_str().is_empty() {
            return Err("--out is required".into());
        }
        if c.err.as_os_str().is_empty() {
            c.err = c.out.clone();
        }
        Ok((c, role))
    }
}

/// Which of the two processes this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Keeper,
    /// `restarts`: how many workers were killed before this one; `killed_by`: the signal
    /// that ended the last of them.
    Worker {
        restarts: u64,
        killed_by: i32,
    },
}

/// `tend log-writer ARGS`: runs the keeper or the worker; the process's exit code.
pub fn main(args: &[OsString]) -> u8 {
    let (cfg, role) = match Config::parse(args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tend: log-writer: {e}");
            return 2;
        }
    };
    shield();
    match role {
        Role::Keeper => {
            // Out of the cgroup of the tend process that started it (a login session's
            // scope, say, which may be killed at logout while the service runs on).
            // Where it cannot move, it stays: it still is in none of the service's.
            if let Some(c) = &cfg.cgroup {
                let _ = crate::process::writer::join_cgroup(c);
            }
            keep(args)
        }
        Role::Worker {
            restarts,
            killed_by,
        } => match work(&cfg, restarts, killed_by) {
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

/// The keeper: runs workers on its fds 0 and 1 until one exits by itself.
fn keep(args: &[OsString]) -> u8 {
    let mut restarts = 0u64;
    let mut killed_by = 0;
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut failures = 0;
    loop {
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.arg0("tend").arg(MODE).args(args).arg("--worker");
        if restarts > 0 {
            cmd.arg("--restarts")
                .arg(restarts.to_string())
                .arg("--killed-by")
                .arg(killed_by.to_string());
        }
        // fds 0 and 1 (the pipes) and 2 are inherited as they are.
        let status = cmd.spawn().and_then(|mut c| c.wait());
        // A worker that cannot be started at all (the binary gone) ends the keeper after
        // a while rather than holding the service's pipes with nobody reading them.
        match &status {
            Err(_) => failures += 1,
            Ok(_) => failures = 0,
        }
        if failures >= 10 {
            return 1;
        }
        if let Ok(st) = status {
            match st.signal() {
                // Killed: start another on the same pipes.
                Some(sig) => {
                    restarts += 1;
                    killed_by = sig;
                }
                None => return st.code().unwrap_or(1).clamp(0, 255) as u8,
            }
        }
        // At most 5 starts in 10 s, then a pause: a worker that dies at once (no memory,
        // a binary gone) must not make the keeper spin.
        let now = Instant::now();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(10))
        {
            recent.pop_front();
        }
        if recent.len() >= 5 {
            std::thread::sleep(Duration::from_secs(1));
        }
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
    /// Lines dropped since the last marker, per destination.
    dropped: [u64; 2],
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
    fn tag(&self, stream: usize) -> &'static str {
        match (self.prefix, stream) {
            (Prefix::Time, _) => "",
            (Prefix::TimeAndStream, 0) => "out ",
            (Prefix::TimeAndStream, _) => "err ",
        }
    }

    /// Stamps the complete lines in `lines` (each ending in a newline) with one time,
    /// taken under the queue's lock so that times in the files never go backwards, and
    /// queues them, or drops them if the queue is full.
    fn push(&self, stream: usize, lines: &[u8]) {
        let count = lines.iter().filter(|&&b| b == b'\n').count();
        let tag = self.tag(stream).as_bytes();
        let per_line = TIME_LEN + 1 + tag.len();
        let needed = lines.len() + count * per_line;
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        // Full: drop and count. An empty queue always takes a chunk (at most 64 KiB of
        // lines, or one longer line, with their prefixes), so the bound is the limit
        // plus one chunk.
        if q.bytes + needed > self.limit && !q.chunks.is_empty() {
            q.dropped[stream] += count as u64;
            return;
        }
        let time = stamp(SystemTime::now());
        let mut data = Vec::with_capacity(needed + 96);
        let n = std::mem::take(&mut q.dropped[stream]);
        if n > 0 {
            let _ = writeln!(
                data,
                "{time} {}tend: dropped {n} lines (the log writer's queue was full)",
                self.tag(stream)
            );
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

    /// A reader reached end of input; lines it had to drop are reported still.
    fn close(&self, stream: usize) {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        let n = std::mem::take(&mut q.dropped[stream]);
        if n > 0 {
            let data = format!(
                "{} {}tend: dropped {n} lines (the log writer's queue was full)\n",
                stamp(SystemTime::now()),
                self.tag(stream)
            )
            .into_bytes();
            q.bytes += data.len();
            q.chunks.push_back(Chunk { dest: stream, data });
        }
        q.open -= 1;
        self.ready.notify_one();
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
    shared.close(stream);
}

/// The worker: readers on threads, the files on this one.
fn work(cfg: &Config, restarts: u64, killed_by: i32) -> io::Result<()> {
    let shared = Arc::new(Shared {
        q: Mutex::new(Queue::default()),
        ready: Condvar::new(),
        prefix: cfg.prefix,
        limit: QUEUE_BYTES,
    });
    let mut outputs = vec![Output::open(&cfg.out, cfg.max_bytes, cfg.backups)?];
    // Stderr's lines go to stdout's file when the paths are the same: one writer per file.
    let err_dest = if cfg.err == cfg.out {
        0
    } else {
        outputs.push(Output::open(&cfg.err, cfg.max_bytes, cfg.backups)?);
        1
    };
    if restarts > 0 {
        let line = format!(
            "{} tend: log writer restarted (the previous one ended by signal {killed_by}; \
             lines it had read but not written are lost)\n",
            stamp(SystemTime::now())
        );
        outputs[0].write(line.as_bytes())?;
    }
    // fds 0 and 1 are the pipes the keeper was started with, and nothing else uses them.
    let pipes: Vec<(usize, OwnedFd)> = std::iter::once((0, 0))
        .chain(cfg.err_pipe.then_some((1, 1)))
        .map(|(stream, fd)| (stream, take_fd(fd)))
        .collect();
    shared.q.lock().unwrap_or_else(|e| e.into_inner()).open = pipes.len();
    let mut readers = Vec::new();
    for (stream, fd) in pipes {
        let s = Arc::clone(&shared);
        readers.push(
            std::thread::Builder::new()
                .name(format!("read-{stream}"))
                .stack_size(64 * 1024)
                .spawn(move || read_pipe(&s, stream, File::from(fd)))?,
        );
    }
    let mut failed = 0u64;
    loop {
        let chunk = {
            let mut q = shared.q.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(c) = q.chunks.pop_front() {
                    q.bytes -= c.data.len();
                    break Some(c);
                }
                if q.open == 0 {
                    break None;
                }
                q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(chunk) = chunk else { break };
        let out = &mut outputs[if chunk.dest == 0 { 0 } else { err_dest }];
        if failed > 0 {
            let line = format!(
                "{} tend: {failed} lines lost: the log file could not be written\n",
                stamp(SystemTime::now())
            );
            if out.write(line.as_bytes()).is_ok() {
                failed = 0;
            }
        }
        if out.write(&chunk.data).is_err() {
            failed += chunk.data.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    for r in readers {
        let _ = r.join();
    }
    Ok(())
}

/// Takes ownership of one of the fds this process was started with.
fn take_fd(fd: i32) -> OwnedFd {
    crate::process::writer::inherited(fd)
}

/// One log file the worker appends to and rotates.
struct Output {
    path: PathBuf,
    file: File,
    size: u64,
    /// Only regular files are rotated (not /dev/null, say).
    regular: bool,
    max: u64,
    backups: u32,
}

impl Output {
    fn open(path: &Path, max: u64, backups: u32) -> io::Result<Output> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(Output {
            path: path.to_path_buf(),
            regular: meta.is_file(),
            size: meta.len(),
            file,
            max,
            backups,
        })
    }

    fn rotating(&self) -> bool {
        self.max > 0 && self.regular
    }

    /// Appends whole lines, rotating first whenever the next line would not fit: a file
    /// never grows past `max`, except by one line longer than the room left in an empty
    /// file.
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = if self.rotating() {
                self.max.saturating_sub(self.size) as usize
            } else {
                usize::MAX
            };
            let n = if data.len() <= room {
                data.len()
            } else {
                match data[..room].iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if self.size > 0 => {
                        self.rotate()?;
                        continue;
                    }
                    None => data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| i + 1),
                }
            };
            self.file.write_all(&data[..n])?;
            self.size += n as u64;
            data = &data[n..];
            if self.rotating() && self.size >= self.max {
                self.rotate()?;
            }
        }
        Ok(())
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
        // Someone may have moved or removed the file: what the name holds now is rotated.
        match std::fs::rename(&self.path, crate::logs::backup(&self.path, 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let fresh = Output::open(&self.path, self.max, self.backups)?;
        self.file = fresh.file;
        self.size = fresh.size;
        Ok(())
    }
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
        assert_eq!(role, Role::Keeper);
        assert_eq!(p.prefix, c.prefix);
        assert_eq!(
            (p.out, p.err, p.err_pipe, p.max_bytes),
            (c.out, c.err, true, 1000)
        );
        assert!(Config::parse(&["--bogus".into()]).is_err());
    }

    #[test]
    fn stamp_is_27_bytes_utc_micros() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_058_281_000_001);
        let s = stamp(t);
        assert_eq!(s.len(), TIME_LEN);
        assert!(s.ends_with(".000001Z"), "{s}");
        assert_eq!(stamp(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    }

    fn shared(limit: usize, prefix: Prefix, open: usize) -> Shared {
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

    fn drain(s: &Shared) -> Vec<String> {
        let mut q = s.q.lock().unwrap();
        q.bytes = 0;
        q.chunks
            .drain(..)
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

    #[test]
    fn a_full_queue_drops_and_says_so_once_there_is_room() {
        let s = shared(100, Prefix::TimeAndStream, 2);
        s.push(0, b"a\nb\n");
        s.push(0, b"c\nd\ne\n");
        s.push(1, &b"x\n".repeat(10));
        // 2 lines of 34 bytes fit; the next 3 (and the 10 on stderr) would not.
        assert_eq!(drain(&s), ["out a", "out b"]);
        s.push(0, b"f\n");
        assert_eq!(
            drain(&s),
            [
                "out tend: dropped 3 lines (the log writer's queue was full)",
                "out f"
            ]
        );
        // Still counted for stderr, and reported at its end of input.
        s.close(1);
        assert_eq!(
            drain(&s),
            ["err tend: dropped 10 lines (the log writer's queue was full)"]
        );
    }

    #[test]
    fn many_short_lines_are_queued_in_small_chunks() {
        let s = shared(QUEUE_BYTES, Prefix::Time, 1);
        let input = b"ab\n".repeat(100_000);
        push_lines(&s, 0, &input);
        let q = s.q.lock().unwrap();
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
        let s = shared(QUEUE_BYTES, Prefix::Time, 1);
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
        assert_eq!(s.q.lock().unwrap().open, 0);
    }

    #[test]
    fn rotation_keeps_whole_lines_and_never_grows_past_max() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut o = Output::open(&p, 100, 3).unwrap();
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
}
