//! Running one readiness or health check ([`crate::service::probe::Check`]) once, with a
//! timeout: a TCP connect, an HTTP GET (status 2xx/3xx), a command exiting 0
//! ([`crate::process::check`]), or a regular expression in the service's log. The
//! waiting and counting around it (`start --wait`, the daemon's health checks) is the
//! caller's.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::process::check;
use crate::record::{FileId, LogMark};
use crate::service::files;
use crate::service::probe::Check;

/// What a check needs to know about the service.
pub struct Target<'a> {
    pub cwd: &'a Path,
    /// The service's environment (a `cmd` check runs with it).
    pub env: &'a [(String, String)],
    /// The stdout log, and where this instance's output starts in it (`None`: all of it).
    pub log: &'a Path,
    pub log_from: Option<&'a LogMark>,
    /// Where a `cmd` check runs and who waits for it.
    pub scope: check::Scope<'a>,
}

/// Runs `c` once; `Err` says why it failed (a command's output included).
pub fn run(c: &Check, t: &Target, timeout: Duration) -> Result<(), String> {
    let timeout = timeout.max(Duration::from_millis(1));
    match c {
        Check::Tcp { host, port } => tcp(host, *port, timeout).map(drop),
        Check::Http { url } => http(url, timeout),
        Check::Cmd { cmd } => {
            let ran = check::run(cmd, t.cwd, t.env, timeout, &t.scope)
                .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
            if ran.passed() {
                return Ok(());
            }
            let how = if ran.withdrawn {
                "ended early: nobody waits for it any more".to_string()
            } else if ran.timed_out {
                format!(
                    "killed after its timeout ({})",
                    crate::service::fmt_duration(timeout)
                )
            } else {
                match ran.status {
                    Some(s) if libc::WIFEXITED(s) => format!("exit code {}", libc::WEXITSTATUS(s)),
                    Some(s) => format!("killed by signal {}", libc::WTERMSIG(s)),
                    None => "exit status unknown".into(),
                }
            };
            Err(if ran.output.is_empty() {
                format!("`{cmd}`: {how}")
            } else {
                format!("`{cmd}`: {how}: {}", ran.output)
            })
        }
        Check::Log { pattern } => log(pattern, t.log, t.log_from),
        // The caller times a grace period itself.
        Check::Grace { .. } => Ok(()),
    }
}

fn tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let mut last = format!("{host}:{port}: no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            // Connecting again and again to a port nobody listens on can, once the
            // kernel picks that very port as the local one, connect the socket to
            // itself (TCP simultaneous open): that is no listener.
            Ok(s) if s.local_addr().ok() == Some(a) => {
                last = format!("{host}:{port}: connection refused");
            }
            Ok(s) => return Ok(s),
            Err(e) => last = format!("{host}:{port}: {}", crate::error::io_reason(&e)),
        }
    }
    Err(last)
}

/// `GET` over HTTP/1.0; 2xx and 3xx pass.
fn http(url: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_matches(|c| c == '[' || c == ']'),
            p.parse::<u16>().map_err(|_| format!("{url}: bad port"))?,
        ),
        _ => (authority, 80),
    };
    let mut s = tcp(host, port, timeout).map_err(|e| format!("{url}: {e}"))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = s.set_read_timeout(Some(left));
    let _ = s.set_write_timeout(Some(left));
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: tend\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{url}: {}", crate::error::io_reason(&e)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("{url}: {}", crate::error::io_reason(&e))),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{url}: not an HTTP answer: {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {code}"))
    }
}

/// How much of the log is searched at most (its end).
const LOG_WINDOW: u64 = 1 << 20;

/// Where the log `path` stands now, for [`run`] to read only what is written after.
/// Looks (`stat`, which never waits) at the log and its newest backup.
pub fn log_mark(path: &Path) -> LogMark {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file());
    let backup = std::fs::metadata(crate::logs::backup(path, 1))
        .ok()
        .filter(|m| m.is_file());
    LogMark {
        offset: meta.as_ref().map_or(0, |m| m.len()),
        identified: true,
        file: meta.as_ref().map(file_id),
        backup: backup.as_ref().map(file_id),
    }
}

fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    let born = m
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    FileId {
        dev: m.dev(),
        ino: m.ino(),
        born,
    }
}

/// One file of a log's history as it is now, oldest first: the backups, then the log.
struct Part {
    file: std::fs::File,
    id: FileId,
    len: u64,
}

/// Searches what was written to the log `path` since `from` for a line matching
/// `pattern`: in the log, and in its backups when a rotation moved some of it there.
fn log(pattern: &str, path: &Path, from: Option<&LogMark>) -> Result<(), String> {
    let re = regex_lite::Regex::new(pattern).map_err(|e| e.to_string())?;
    let shown = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut parts = Vec::new();
    for n in (1..=crate::service::LOG_BACKUPS).rev() {
        // A backup that is gone (or is no file) holds nothing to search.
        if let Ok((file, meta)) = files::open_regular(&crate::logs::backup(path, n)) {
            parts.push(Part {
                id: file_id(&meta),
                len: meta.len(),
                file,
            });
        }
    }
    let backups = parts.len();
    match files::open_regular(path) {
        Ok((file, meta)) => parts.push(Part {
            id: file_id(&meta),
            len: meta.len(),
            file,
        }),
        Err(e) if e.not_found() && backups > 0 => {}
        Err(e) => return Err(shown(&e)),
    }
    let (mut i, mut at) = match from {
        Some(mark) => {
            let seen: Vec<(FileId, u64)> = parts.iter().map(|p| (p.id, p.len)).collect();
            start_of(mark, &seen, backups)
        }
        None => (0, 0),
    };
    // Only the last LOG_WINDOW bytes of what follows.
    let mut total: u64 = parts[i..].iter().map(|p| p.len).sum::<u64>() - at;
    while total > LOG_WINDOW {
        let skip = (parts[i].len - at).min(total - LOG_WINDOW);
        at += skip;
        total -= skip;
        if at == parts[i].len && i + 1 < parts.len() {
            i += 1;
            at = 0;
        }
    }
    let mut text = Vec::new();
    for (k, p) in parts.iter_mut().enumerate().skip(i) {
        let begin = if k == i { at } else { 0 };
        p.file.seek(SeekFrom::Start(begin)).map_err(|e| shown(&e))?;
        (&mut p.file)
            .take(p.len - begin)
            .read_to_end(&mut text)
            .map_err(|e| shown(&e))?;
    }
    let text = String::from_utf8_lossy(&text);
    if text.lines().any(|l| re.is_match(l)) {
        Ok(())
    } else {
        Err(format!(
            "no line of {} matches {pattern:?} yet",
            path.display()
        ))
    }
}

/// Where this instance's output begins among `parts` (the log's backups, oldest first,
/// then the log itself when it exists: `backups` is how many backups there are): which
/// part, and where in it. Never before it; after it, when what lay between was rotated
/// out of existence.
///
/// - The log is the file it was, and its newest backup too: no rotation since; the
///   offset is in the log (a log shorter than that was truncated: all of it is new).
/// - The file it was is now a backup (the log writer rotates by renaming it): the offset
///   is in that backup.
/// - The log is the file it was, but its newest backup is another one (the daemon's
///   rotation moves the log's start into a new `NAME.log.1` and cuts it out of the log):
///   the backups made since, and the log after them, hold one stream that begins where
///   the log began; the offset is counted along it from the first of them.
/// - The file it was is gone, or there was none: everything newer than the backup of
///   then is this instance's.
fn start_of(mark: &LogMark, parts: &[(FileId, u64)], backups: usize) -> (usize, u64) {
    let log = (parts.len() > backups).then(|| parts.len() - 1);
    // Nothing to read: past the last part.
    let none = (parts.len(), 0);
    if !mark.identified {
        // Recorded by a tend that noted the offset only.
        return match log {
            Some(l) if mark.offset <= parts[l].1 => (l, mark.offset),
            Some(l) => (l, 0),
            None => none,
        };
    }
    let find = |id: Option<FileId>| id.and_then(|id| parts.iter().position(|p| p.0 == id));
    // The first file made after the backup of then.
    let after_backup = find(mark.backup).map_or(0, |j| j + 1);
    let newest_backup = backups.checked_sub(1).map(|b| parts[b].0);
    let i = match find(mark.file) {
        Some(i) if Some(i) == log && newest_backup == mark.backup => {
            let len = parts[i].1;
            return (i, if mark.offset > len { 0 } else { mark.offset });
        }
        Some(i) if Some(i) == log => after_backup,
        Some(i) => i,
        None => return (after_backup, 0),
    };
    // Along the stream: past the end of one part, on into the next.
    let (mut i, mut offset) = (i, mark.offset);
    if i >= parts.len() {
        return none;
    }
    while offset > parts[i].1 && i + 1 < parts.len() {
        offset -= parts[i].1;
        i += 1;
    }
    (i, offset.min(parts[i].1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> FileId {
        FileId {
            dev: 1,
            ino: n,
            born: n as i64 * 10,
        }
    }

    fn mark(offset: u64, file: Option<u64>, backup: Option<u64>) -> LogMark {
        LogMark {
            offset,
            identified: true,
            file: file.map(id),
            backup: backup.map(id),
        }
    }

    #[test]
    fn where_an_instance_output_begins_across_rotations() {
        // No rotation since: the offset in the log (0 once the log was truncated).
        let now = [(id(1), 100), (id(2), 500)];
        assert_eq!(start_of(&mark(300, Some(2), Some(1)), &now, 1), (1, 300));
        assert_eq!(start_of(&mark(600, Some(2), Some(1)), &now, 1), (1, 0));
        // Renamed (the log writer): the old log is NAME.log.1, a new log grew past the
        // offset; the output begins in the backup.
        let now = [(id(1), 100), (id(2), 4100), (id(3), 5000)];
        assert_eq!(start_of(&mark(300, Some(2), Some(1)), &now, 2), (1, 300));
        // Cut and copied (the daemon): the log is the same file, a new NAME.log.1 holds
        // its first 4096 bytes, the backup of then is now NAME.log.2.
        assert_eq!(
            start_of(
                &mark(300, Some(3), Some(1)),
                &[(id(1), 9), (id(2), 4096), (id(3), 50)],
                2
            ),
            (1, 300)
        );
        // ... and an offset in the part that stayed in the log goes on into it.
        assert_eq!(
            start_of(
                &mark(4100, Some(3), Some(1)),
                &[(id(1), 9), (id(2), 4096), (id(3), 50)],
                2
            ),
            (2, 4)
        );
        // No backup then: the oldest backup is the first made since.
        assert_eq!(
            start_of(&mark(300, Some(3), None), &[(id(2), 4096), (id(3), 50)], 1),
            (0, 300)
        );
        // The log of then was rotated out of existence: all that is left is newer.
        assert_eq!(
            start_of(
                &mark(300, Some(9), Some(8)),
                &[(id(2), 4096), (id(3), 50)],
                1
            ),
            (0, 0)
        );
        // No log then: what came after the backup of then.
        assert_eq!(
            start_of(&mark(0, None, Some(1)), &[(id(1), 10), (id(3), 50)], 1),
            (1, 0)
        );
        // Nothing newer than the backup of then: nothing to read.
        assert_eq!(start_of(&mark(0, None, Some(1)), &[(id(1), 10)], 1), (1, 0));
        // A mark of an older tend: the offset in the log as it is.
        let old = LogMark {
            offset: 30,
            ..LogMark::default()
        };
        assert_eq!(start_of(&old, &[(id(1), 10), (id(3), 50)], 1), (1, 30));
        assert_eq!(start_of(&old, &[(id(1), 10), (id(3), 20)], 1), (1, 0));
    }
}
