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
use crate::service::probe::Check;

/// What a check needs to know about the service.
pub struct Target<'a> {
    pub cwd: &'a Path,
    /// The service's environment (a `cmd` check runs with it).
    pub env: &'a [(String, String)],
    /// The stdout log, and where this instance's output starts in it.
    pub log: &'a Path,
    pub log_from: u64,
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

fn log(pattern: &str, path: &Path, from: u64) -> Result<(), String> {
    let re = regex_lite::Regex::new(pattern).map_err(|e| e.to_string())?;
    let mut f = std::fs::File::open(path)
        .map_err(|e| format!("{}: {}", path.display(), crate::error::io_reason(&e)))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // A log shorter than where this instance began was rotated or truncated: all of it
    // is new.
    let start = if from > len { 0 } else { from }.max(len.saturating_sub(LOG_WINDOW));
    f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    f.take(LOG_WINDOW)
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())?;
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
