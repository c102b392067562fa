//! Reading log files as lines, for `tend logs` over several services: the shared
//! timestamp prefix, the last lines of each file (or those since a time) merged in time
//! order, and following many files in one poll loop.
//!
//! A line written by a service with `log_timestamps` on starts with
//! `2026-12-06T21:58:01.123456Z ` (RFC 3339, UTC, exactly microseconds: 27 bytes and a
//! space), and with `stream` also `out ` or `err `. Only that exact prefix gives a line a
//! time; anything else is a line without one.
//!
//! Lines without a time are never moved away from the line before them in their own
//! file (a stack trace stays under the line that announced it), and those before any
//! timestamped line sort first.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of the time in a prefix: `2026-12-06T21:58:01.123456Z`.
pub const TIME_LEN: usize = 27;

/// A partial line (no newline yet) is held back while following, so a line written in
/// two pieces is shown once, whole; after this many quiet poll rounds (about a second)
/// it is shown as it is (a prompt, a progress bar).
const PARTIAL_ROUNDS: u32 = 10;

/// At most this much is read from one file in one poll round, so a follow that finds a
/// large file (created large, or after a pause) holds a bounded amount in memory.
const READ_MAX: u64 = 1 << 20;

/// A partial line longer than this is shown at once: holding it must stay cheap.
const PARTIAL_MAX: usize = 64 * 1024;

/// Which of the service's outputs a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Out => "out",
            Stream::Err => "err",
        }
    }
}

/// What a timestamp prefix says about a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// Microseconds since the Unix epoch.
    pub micros: i64,
    /// `out`/`err` after the time (`log_timestamps = stream`).
    pub stream: Option<Stream>,
    /// Where the service's own text starts in the line.
    pub text_at: usize,
}

/// One line of a log file, without its newline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Index of the file it came from, in the caller's list.
    pub source: usize,
    /// The line as written (prefix included).
    pub raw: Vec<u8>,
    pub prefix: Option<Prefix>,
}

impl Line {
    fn new(source: usize, raw: Vec<u8>) -> Line {
        let prefix = parse_prefix(&raw);
        Line {
            source,
            raw,
            prefix,
        }
    }

    /// The time as written, when the line has one.
    pub fn time_text(&self) -> Option<&str> {
        self.prefix
            .map(|_| std::str::from_utf8(&self.raw[..TIME_LEN]).expect("checked ASCII"))
    }

    /// The service's text: the line after its prefix.
    pub fn text(&self) -> &[u8] {
        &self.raw[self.prefix.map_or(0, |p| p.text_at)..]
    }
}

/// The prefix of a timestamped line: exactly `YYYY-MM-DDTHH:MM:SS.ffffffZ` and a space (or
/// the end of the line), then optionally `out`/`err` and a space (or the end).
///
/// The prefix alone cannot tell a stream tag from text that begins with `out ` or `err `:
/// the reader takes the tag only from a service whose setting is `stream`
/// (`app::logs`).
pub fn parse_prefix(line: &[u8]) -> Option<Prefix> {
    let t = line.get(..TIME_LEN)?;
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        t[r].iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    };
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if seps.iter().any(|&(i, c)| t[i] != c) || t[26] != b'Z' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, min, sec, micro) = (
        digits(11..13)?,
        digits(14..16)?,
        digits(17..19)?,
        digits(20..26)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let rest = &line[TIME_LEN..];
    let mut text_at = match rest.first() {
        None => TIME_LEN,
        Some(b' ') => TIME_LEN + 1,
        Some(_) => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec;
    let mut stream = None;
    let after = &line[text_at..];
    for s in [Stream::Out, Stream::Err] {
        let name = s.name().as_bytes();
        if after.starts_with(name) && matches!(after.get(3), None | Some(b' ')) {
            stream = Some(s);
            text_at = (text_at + 4).min(line.len());
        }
    }
    Some(Prefix {
        micros: secs * 1_000_000 + micro,
        stream,
        text_at,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since the Unix epoch (0 before it).
pub fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Which lines of each file to read first.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// The last N lines of each file (after `since`); `None`: all of them.
    pub last: Option<usize>,
    /// Only lines at or after this time (microseconds since the epoch). A line without a
    /// time counts at the time of the last timestamped line before it in its file; one
    /// with none before it, at its file's modification time.
    pub since: Option<i64>,
    /// Hold back a final line without its newline (a follow reads it once it is whole).
    pub following: bool,
}

/// Where following continues in one file: the file as it was opened (so a rotation
/// between reading and following loses nothing) and the offset after the last line read.
pub struct Resume {
    file: Option<File>,
    offset: u64,
}

/// A file that could not be read, and why.
#[derive(Debug)]
pub struct ReadError {
    pub path: PathBuf,
    pub error: io::Error,
}

/// Why reading the first lines stopped.
#[derive(Debug)]
pub enum Failed {
    Read(ReadError),
    /// `emit` failed (a closed pipe, a full disk).
    Write(io::Error),
}

/// The first lines of `paths` (each read with its rotated backups `PATH.1`… as one
/// stream), given to `emit` merged in time order; returns where a follow of each file
/// continues.
///
/// The files are read side by side and merged as they are read, so what is held is one
/// line per file (or, with [`Window::last`], that many lines per file), whatever the
/// window holds.
pub fn initial(
    paths: &[PathBuf],
    window: Window,
    emit: &mut dyn FnMut(&Line) -> io::Result<()>,
) -> Result<Vec<Resume>, Failed> {
    let read_err = |source: usize| {
        move |error| {
            Failed::Read(ReadError {
                path: paths[source].clone(),
                error,
            })
        }
    };
    let mut readers = Vec::with_capacity(paths.len());
    for (source, path) in paths.iter().enumerate() {
        let mut r = Reader::open(source, path, window).map_err(read_err(source))?;
        if let (Some(n), Some(_)) = (window.last, window.since) {
            // The last N of the lines in the window: known only at the end of the file.
            r.keep_last(n).map_err(read_err(source))?;
        }
        readers.push(r);
    }
    merge(
        readers.len(),
        |s| readers[s].next().map_err(read_err(s)),
        |l| emit(&l).map_err(Failed::Write),
    )?;
    Ok(readers.into_iter().map(Reader::resume).collect())
}

/// Merges the lines of `n` files (`next(file)` gives a file's next line) in time order
/// into `emit`, keeping each file's own order.
///
/// A min-heap holds each file's next timestamped line (by time, then file order). A line
/// without a time never waits in it: it follows the line before it at once, so a stack
/// trace stays under the line that announced it; those at the start of a file (before
/// any timestamped line) sort first.
fn merge<E>(
    n: usize,
    mut next: impl FnMut(usize) -> Result<Option<Line>, E>,
    mut emit: impl FnMut(Line) -> Result<(), E>,
) -> Result<(), E> {
    use std::cmp::Reverse;
    let mut heads: Vec<Option<Line>> = Vec::with_capacity(n);
    let mut heap = std::collections::BinaryHeap::with_capacity(n);
    for s in 0..n {
        let head = next(s)?;
        if let Some(l) = &head {
            heap.push(Reverse((l.prefix.map_or(i64::MIN, |p| p.micros), s)));
        }
        heads.push(head);
    }
    while let Some(Reverse((_, s))) = heap.pop() {
        let line = heads[s].take().expect("one head per heap entry");
        emit(line)?;
        while let Some(following) = next(s)? {
            match following.prefix {
                None => emit(following)?,
                Some(p) => {
                    heap.push(Reverse((p.micros, s)));
                    heads[s] = Some(following);
                    break;
                }
            }
        }
    }
    Ok(())
}

/// One file of a chain: the open file, its length when opened, its mtime in µs.
type Link = (File, u64, i64);

/// One file and its backups, oldest first; and whether the last one is the file itself
/// (it may not exist yet).
fn open_chain(path: &Path) -> io::Result<(Vec<Link>, bool)> {
    let mut files = Vec::new();
    let mut current = false;
    let backups = (1..=crate::service::LOG_BACKUPS)
        .rev()
        .map(|i| super::backup(path, i));
    for p in backups.chain(std::iter::once(path.to_path_buf())) {
        match File::open(&p) {
            Ok(f) => {
                let meta = f.metadata()?;
                let mtime = meta.modified().map_or(0, micros);
                files.push((f, meta.len(), mtime));
                current = p == path;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok((files, current))
}

/// The lines of one file and its backups, read forward as one stream (a rotation may
/// split a line between two files), from where the window begins.
struct Reader {
    source: usize,
    window: Window,
    chain: Vec<Link>,
    /// Index in `chain` of the file itself, when it exists.
    current: Option<usize>,
    /// The file being read (index in `chain`) and a reader over the rest of it.
    at: usize,
    reader: Option<BufReader<io::Take<File>>>,
    pos: u64,
    /// The line being assembled, and where it began in the file itself, if there.
    carry: Vec<u8>,
    carry_start: Option<u64>,
    /// Time of the last timestamped line read (for `since`).
    last_time: Option<i64>,
    /// Where a follow continues in the file itself.
    resume_at: u64,
    /// With `keep_last`: the lines to give, read in advance.
    kept: Option<std::collections::VecDeque<Line>>,
    done: bool,
}

impl Reader {
    fn open(source: usize, path: &Path, window: Window) -> io::Result<Reader> {
        let (chain, current_exists) = open_chain(path)?;
        // Without `since` only the tail is read (found backwards, in blocks); with it,
        // everything, since a time can only be judged line by line.
        let (first, offset) = match (window.since, window.last) {
            (None, Some(n)) => {
                let mut pairs: Vec<(File, u64)> = Vec::with_capacity(chain.len());
                for (f, len, _) in &chain {
                    pairs.push((f.try_clone()?, *len));
                }
                super::tail_start(&mut pairs, n)?
            }
            _ => (0, 0),
        };
        let current = current_exists.then(|| chain.len() - 1);
        let resume_at = current.map_or(0, |i| chain[i].1);
        let mut r = Reader {
            source,
            window,
            chain,
            current,
            at: first,
            reader: None,
            pos: offset,
            carry: Vec::new(),
            carry_start: None,
            last_time: None,
            resume_at,
            kept: None,
            done: false,
        };
        r.open_at(offset)?;
        Ok(r)
    }

    /// Starts reading file `self.at` at `offset` (nothing when past the last file).
    fn open_at(&mut self, offset: u64) -> io::Result<()> {
        self.reader = None;
        if let Some((f, len, _)) = self.chain.get(self.at) {
            let mut f = f.try_clone()?;
            f.seek(SeekFrom::Start(offset))?;
            self.reader = Some(BufReader::with_capacity(
                64 * 1024,
                f.take(len.saturating_sub(offset)),
            ));
            self.pos = offset;
        }
        Ok(())
    }

    /// The next whole line of the stream and the mtime of the file it ended in.
    fn next_raw(&mut self) -> io::Result<Option<(Vec<u8>, i64)>> {
        while !self.done {
            let Some(reader) = self.reader.as_mut() else {
                self.done = true;
                break;
            };
            if self.carry.is_empty() && Some(self.at) == self.current {
                self.carry_start = Some(self.pos);
            }
            let n = reader.read_until(b'\n', &mut self.carry)?;
            let mtime = self.chain[self.at].2;
            if n == 0 {
                self.at += 1;
                self.open_at(0)?;
                continue;
            }
            self.pos += n as u64;
            if self.carry.last() == Some(&b'\n') {
                self.carry.pop();
                self.carry_start = None;
                return Ok(Some((std::mem::take(&mut self.carry), mtime)));
            }
        }
        // The end: a last line without its newline is left for a follow to read again
        // once it is whole, or given as it is.
        if self.carry.is_empty() {
            return Ok(None);
        }
        match self.carry_start {
            Some(at) if self.window.following => {
                self.resume_at = at;
                self.carry.clear();
                Ok(None)
            }
            _ => {
                let mtime = self.chain.last().map_or(0, |c| c.2);
                Ok(Some((std::mem::take(&mut self.carry), mtime)))
            }
        }
    }

    /// The next line in the window.
    fn next(&mut self) -> io::Result<Option<Line>> {
        if let Some(kept) = self.kept.as_mut() {
            return Ok(kept.pop_front());
        }
        while let Some((raw, mtime)) = self.next_raw()? {
            let line = Line::new(self.source, raw);
            let Some(since) = self.window.since else {
                return Ok(Some(line));
            };
            let at = match line.prefix {
                Some(p) => {
                    self.last_time = Some(p.micros);
                    p.micros
                }
                None => self.last_time.unwrap_or(mtime),
            };
            if at >= since {
                return Ok(Some(line));
            }
        }
        Ok(None)
    }

    /// Reads to the end, keeping only the last `n` lines of the window to give.
    fn keep_last(&mut self, n: usize) -> io::Result<()> {
        let mut kept = std::collections::VecDeque::with_capacity(n.min(4096));
        while let Some(line) = self.next()? {
            if kept.len() == n {
                kept.pop_front();
            }
            if n > 0 {
                kept.push_back(line);
            }
        }
        self.kept = Some(kept);
        Ok(())
    }

    fn resume(self) -> Resume {
        let offset = self.resume_at;
        let file = self
            .current
            .map(|i| self.chain.into_iter().nth(i).expect("index in range").0);
        Resume { file, offset }
    }
}

/// Follows many files in one poll loop (no thread per file), surviving rotation by
/// collapse or truncation (the file shrinks) and by rename or re-creation (the path
/// names a new file: the old one is read to its end first).
pub struct Follower {
    tails: Vec<Tail>,
}

struct Tail {
    path: PathBuf,
    file: Option<File>,
    ino: Option<u64>,
    offset: u64,
    partial: Vec<u8>,
    quiet_rounds: u32,
    /// The last round stopped at [`READ_MAX`] with more to read.
    behind: bool,
}

impl Follower {
    pub fn new(paths: &[PathBuf], resumes: Vec<Resume>) -> Follower {
        let mut tails = Vec::with_capacity(paths.len());
        for (path, r) in paths.iter().zip(resumes) {
            // (fstat of an open file does not fail; if it did, the path is opened anew.)
            let ino = r
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map(|m| m.ino());
            tails.push(Tail {
                path: path.clone(),
                file: r.file,
                ino,
                offset: r.offset,
                partial: Vec::new(),
                quiet_rounds: 0,
                behind: false,
            });
        }
        Follower { tails }
    }

    /// Whether a file has more to read than the last round took: poll again at once.
    pub fn behind(&self) -> bool {
        self.tails.iter().any(|t| t.behind)
    }

    /// One poll round: every whole line appended since the last round, merged in time
    /// order as the first lines are (each file in its own order; lines without a time
    /// right behind the line before them).
    pub fn poll(&mut self) -> Result<Vec<Line>, ReadError> {
        let mut per_file = Vec::with_capacity(self.tails.len());
        for (source, t) in self.tails.iter_mut().enumerate() {
            let fresh = t.poll().map_err(|error| ReadError {
                path: t.path.clone(),
                error,
            })?;
            let lines = t.split(fresh).into_iter().map(|raw| Line::new(source, raw));
            per_file.push(lines.collect::<Vec<_>>().into_iter());
        }
        let mut out = Vec::new();
        merge::<std::convert::Infallible>(
            per_file.len(),
            |s| Ok(per_file[s].next()),
            |l| {
                out.push(l);
                Ok(())
            },
        )
        .unwrap_or_else(|never| match never {});
        Ok(out)
    }
}

impl Tail {
    /// What was appended since the last round, in chunks.
    fn poll(&mut self) -> io::Result<Vec<Vec<u8>>> {
        let mut fresh = Vec::new();
        self.behind = !self.read_new(&mut fresh)?;
        if self.behind {
            return Ok(fresh);
        }
        // The path names another file now (renamed away, or deleted and created
        // again): what the old one still held was read above; continue in the new.
        if let Ok(meta) = std::fs::metadata(&self.path) {
            if self.ino != Some(meta.ino()) {
                if let Ok(f) = File::open(&self.path) {
                    self.ino = Some(f.metadata()?.ino());
                    self.file = Some(f);
                    self.offset = 0;
                    // The old file's last line ends with it.
                    fresh.push(Vec::new());
                    self.behind = !self.read_new(&mut fresh)?;
                }
            }
        }
        Ok(fresh)
    }

    /// Appends what was written to the open file since `offset` to `out`, at most
    /// [`READ_MAX`] bytes; returns whether it read to the end. A file that shrank was
    /// rotated in place: its first bytes moved to `PATH.1` (collapse) or all of them did
    /// (truncate); continue where they ended.
    fn read_new(&mut self, out: &mut Vec<Vec<u8>>) -> io::Result<bool> {
        let Some(f) = self.file.as_mut() else {
            return Ok(true);
        };
        let len = f.metadata()?.len();
        if len < self.offset {
            let moved = std::fs::metadata(super::backup(&self.path, 1)).map_or(0, |m| m.len());
            self.offset = self.offset.saturating_sub(moved).min(len);
        }
        if len == self.offset {
            return Ok(true);
        }
        let want = (len - self.offset).min(READ_MAX);
        f.seek(SeekFrom::Start(self.offset))?;
        let mut chunk = Vec::with_capacity(want as usize);
        let n = f.by_ref().take(want).read_to_end(&mut chunk)?;
        self.offset += n as u64;
        out.push(chunk);
        Ok(self.offset >= len)
    }

    /// Whole lines out of the held partial line and `chunks` (an empty chunk ends the
    /// line before it); the rest is held, unless it has waited long enough or is large.
    fn split(&mut self, chunks: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let got_bytes = chunks.iter().any(|c| !c.is_empty());
        for chunk in chunks {
            if chunk.is_empty() {
                if !self.partial.is_empty() {
                    lines.push(std::mem::take(&mut self.partial));
                }
                continue;
            }
            let mut rest = &chunk[..];
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&rest[..nl]);
                lines.push(std::mem::take(&mut self.partial));
                rest = &rest[nl + 1..];
            }
            self.partial.extend_from_slice(rest);
        }
        if self.partial.is_empty() {
            self.quiet_rounds = 0;
        } else {
            self.quiet_rounds = if got_bytes { 0 } else { self.quiet_rounds + 1 };
            if self.quiet_rounds >= PARTIAL_ROUNDS || self.partial.len() >= PARTIAL_MAX {
                lines.push(std::mem::take(&mut self.partial));
                self.quiet_rounds = 0;
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn at(s: &str) -> i64 {
        micros(humantime::parse_rfc3339(s).expect(s))
    }

    #[test]
    fn parses_exactly_the_shared_prefix() {
        let p = parse_prefix(b"2026-12-06T21:58:01.123456Z hello").unwrap();
        assert_eq!(p.micros, at("2026-12-06T21:58:01.123456Z"));
        assert_eq!((p.stream, p.text_at), (None, 28));
        let p = parse_prefix(b"2026-12-06T21:58:01.123456Z err boom").unwrap();
        assert_eq!((p.stream, p.text_at), (Some(Stream::Err), 32));
        let p = parse_prefix(b"2026-12-06T21:58:01.123456Z out").unwrap();
        assert_eq!((p.stream, p.text_at), (Some(Stream::Out), 31));
        assert_eq!(
            parse_prefix(b"2026-12-06T21:58:01.123456Z")
                .unwrap()
                .text_at,
            27
        );
        assert_eq!(
            parse_prefix(b"2026-12-06T21:58:01.123456Z output")
                .unwrap()
                .stream,
            None
        );
        for t in ["1970-01-01T00:00:00.000000Z", "2000-02-29T23:59:59.999999Z"] {
            assert_eq!(parse_prefix(t.as_bytes()).unwrap().micros, at(t), "{t}");
        }
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(1600, 3, 1), -135_080);
        for bad in [
            "2026-12-06T21:58:01.123Z hello",
            "2026-12-06 21:58:01.123456Z hello",
            "2026-12-06T21:58:01.123456+00:00",
            "2026-13-06T21:58:01.123456Z x",
            "2026-12-06T21:58:01.123456Zx",
            "2026-12-06T2a:58:01.123456Z x",
            "hello",
            "",
        ] {
            assert_eq!(parse_prefix(bad.as_bytes()), None, "{bad}");
        }
    }

    fn write(p: &Path, text: &str) {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn initial(paths: &[PathBuf], w: Window) -> Result<(Vec<Line>, Vec<Resume>), Failed> {
        let mut lines = Vec::new();
        let resumes = super::initial(paths, w, &mut |l| {
            lines.push(l.clone());
            Ok(())
        })?;
        Ok((lines, resumes))
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| format!("{}:{}", l.source, String::from_utf8_lossy(l.text())))
            .collect()
    }

    const T: &str = "2026-12-06T21:58:0";

    #[test]
    fn merges_by_time_keeping_untimed_lines_behind_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write(&a, &format!("{T}1.000000Z a1\ntrace\n{T}3.000000Z a3\n"));
        write(&b, &format!("early\n{T}2.000000Z b2\n{T}4.000000Z b4\n"));
        let w = Window {
            last: Some(20),
            since: None,
            following: false,
        };
        let (lines, _) = initial(&[a.clone(), b.clone()], w).unwrap();
        assert_eq!(
            texts(&lines),
            ["1:early", "0:a1", "0:trace", "1:b2", "0:a3", "1:b4"]
        );
        // -n counts per file.
        let (lines, _) = initial(&[a, b], Window { last: Some(1), ..w }).unwrap();
        assert_eq!(texts(&lines), ["0:a3", "1:b4"]);
        // A clock stepped back inside one file does not reorder that file.
        let (c, d) = (dir.path().join("c"), dir.path().join("d"));
        write(&c, &format!("{T}5.000000Z c5\n{T}3.000000Z c3\n"));
        write(&d, &format!("{T}4.000000Z d4\n"));
        let (lines, _) = initial(&[c, d], w).unwrap();
        assert_eq!(texts(&lines), ["1:d4", "0:c5", "0:c3"]);
    }

    #[test]
    fn since_judges_untimed_lines_by_the_line_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        write(
            &a,
            &format!("{T}1.000000Z old\nold trace\n{T}5.000000Z new\nnew trace\n"),
        );
        let w = Window {
            last: None,
            since: Some(at(&format!("{T}3.000000Z"))),
            following: false,
        };
        let (lines, _) = initial(std::slice::from_ref(&a), w).unwrap();
        assert_eq!(texts(&lines), ["0:new", "0:new trace"]);
        let (lines, _) = initial(std::slice::from_ref(&a), Window { last: Some(1), ..w }).unwrap();
        assert_eq!(texts(&lines), ["0:new trace"]);
        // A file without any time: its modification time decides (just now: kept).
        let u = dir.path().join("u");
        write(&u, "x\ny\n");
        let now = Window {
            since: Some(micros(SystemTime::now()) - 60_000_000),
            ..w
        };
        assert_eq!(initial(std::slice::from_ref(&u), now).unwrap().0.len(), 2);
        let later = Window {
            since: Some(micros(SystemTime::now()) + 60_000_000),
            ..w
        };
        assert_eq!(initial(&[u], later).unwrap().0.len(), 0);
    }

    #[test]
    fn follows_across_rename_truncation_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        write(&a, "one\ntwo (partial");
        let w = Window {
            last: Some(5),
            since: None,
            following: true,
        };
        let (lines, resumes) = initial(std::slice::from_ref(&a), w).unwrap();
        assert_eq!(texts(&lines), ["0:one"]);
        let mut f = Follower::new(std::slice::from_ref(&a), resumes);
        assert!(f.poll().unwrap().is_empty());
        write(&a, ") done\nthree");
        assert_eq!(texts(&f.poll().unwrap()), ["0:two (partial) done"]);
        // Renamed away with a partial line, then a new file: the old one's end first.
        write(&a, " (end of old)");
        std::fs::rename(&a, super::super::backup(&a, 1)).unwrap();
        write(&a, "new one\n");
        assert_eq!(
            texts(&f.poll().unwrap()),
            ["0:three (end of old)", "0:new one"]
        );
        // Truncated in place.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .unwrap()
            .set_len(0)
            .unwrap();
        // (Seen shrunk before it grows again: a poll only compares lengths.)
        assert!(f.poll().unwrap().is_empty());
        write(&a, "after truncation\n");
        assert_eq!(texts(&f.poll().unwrap()), ["0:after truncation"]);
        // A partial line that stays partial is shown after a while.
        write(&a, "prompt> ");
        let mut got = Vec::new();
        for _ in 0..=PARTIAL_ROUNDS {
            got.extend(f.poll().unwrap());
        }
        assert_eq!(texts(&got), ["0:prompt> "]);

        // A large burst is read in bounded rounds, and says so.
        let burst: String = (0..100_000).map(|i| format!("burst {i:06}\n")).collect();
        write(&a, &burst);
        let mut got = f.poll().unwrap();
        assert!(f.behind() && got.len() < 100_000, "{}", got.len());
        while f.behind() {
            got.extend(f.poll().unwrap());
        }
        let want: Vec<String> = (0..100_000).map(|i| format!("0:burst {i:06}")).collect();
        assert_eq!(texts(&got), want);
    }
}
