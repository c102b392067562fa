//! The service definition and the validation of everything a person can type into one.
//!
//! Validation happens here, before anything is stored: a definition that reaches the store
//! has a valid name, a non-empty argv, an absolute working directory that existed when it
//! was written, and absolute stdio paths.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;

use crate::error::{Error, Result};

/// Longest service name accepted (64 characters, as in `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`).
pub const MAX_NAME_LEN: usize = 64;

/// Default time between the stop signal and SIGKILL (systemd's TimeoutStopSec is 90 s;
/// supervisord's stopwaitsecs is 10 s, which suits interactive use better).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default delay before the first automatic restart (systemd's RestartSec); it doubles
/// with each quick crash up to [`MAX_RESTART_DELAY`].
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_millis(100);
/// Cap of the restart backoff.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// A service that stayed up this long is healthy again: its backoff starts over.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Default start limit: this many starts within [`DEFAULT_START_LIMIT_INTERVAL`] mark the
/// service failed (systemd's StartLimitBurst=5 within StartLimitIntervalSec=10s).
pub const DEFAULT_START_LIMIT: u32 = 5;
pub const DEFAULT_START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);
/// Default size at which the daemon rotates a log file.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Numbered backups kept by log rotation (NAME.log.1 is the newest).
pub const LOG_BACKUPS: u32 = 3;

/// What the daemon does when a service exits on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Never,
    #[default]
    OnFailure,
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            other => Err(format!(
                "unknown restart policy {other:?} (expected never, on-failure or always)"
            )),
        }
    }
}

/// A signal as a person names it: `TERM`, `SIGTERM` or `15`. Stored by its short name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopSignal(pub Signal);

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal(Signal::SIGTERM)
    }
}

impl StopSignal {
    /// Short name without the `SIG` prefix, e.g. `TERM`.
    pub fn name(self) -> &'static str {
        let full = self.0.as_str();
        full.strip_prefix("SIG").unwrap_or(full)
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StopSignal {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let sig = if let Ok(n) = t.parse::<i32>() {
            Signal::try_from(n).map_err(|_| format!("unknown signal number {n}"))?
        } else {
            let upper = t.to_ascii_uppercase();
            let full = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            Signal::from_str(&full).map_err(|_| format!("unknown signal {s:?}"))?
        };
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            // KILL would skip the graceful phase entirely and STOP never ends a process;
            // both make "stop signal, wait, then KILL" meaningless.
            return Err(format!(
                "{} cannot be used as a stop signal",
                StopSignal(sig).name()
            ));
        }
        Ok(StopSignal(sig))
    }
}

/// Parses `10M`, `512K`, `1G`, `1000` (bytes; binary multiples).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let mult: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return Err(format!("invalid size {s:?} (use e.g. 10M, 512K, 1G)")),
            };
            (&t[..i], mult)
        }
        None => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?} (use e.g. 10M, 512K, 1G)"))
}

/// Parses `10`, `10s`, `1.5s`, `500ms`, `2m`: a bare number means seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if (0.0..1e9).contains(&secs) {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("invalid duration {s:?}"));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// A full service definition, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub stdin: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub env: BTreeMap<String, String>,
    pub stop_signal: StopSignal,
    pub stop_timeout: Duration,
    pub restart: RestartPolicy,
    /// Started by the daemon when it comes up.
    pub autostart: bool,
    /// Delay before the first automatic restart; doubles per quick crash.
    pub restart_delay: Duration,
    /// Starts allowed within `start_limit_interval` before the service is marked failed;
    /// 0 means no limit.
    pub start_limit: u32,
    pub start_limit_interval: Duration,
    /// Size at which the daemon rotates the log file(s); 0 means never.
    pub log_max_bytes: u64,
    /// Unix time in milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

impl Service {
    /// The command line as a person would type it into a shell.
    pub fn command_line(&self) -> String {
        shell_words::join(&self.argv)
    }
}

/// Checks a service name against `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 64 characters")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with a letter or digit")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Splits `--cmd` text with shell-word rules (quotes and backslashes, no expansion).
pub fn split_command(cmd: &str) -> Result<Vec<String>> {
    let argv = shell_words::split(cmd).map_err(|_| Error::Invalid {
        what: "--cmd",
        message: format!("unbalanced quotes in {cmd:?}"),
    })?;
    if argv.is_empty() {
        return Err(Error::Invalid {
            what: "--cmd",
            message: "the command is empty".into(),
        });
    }
    Ok(argv)
}

/// Parses one `--env K=V`.
pub fn parse_env(kv: &str) -> Result<(String, String)> {
    let invalid = |message: String| Error::Invalid {
        what: "--env",
        message,
    };
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| invalid(format!("{kv:?} is not of the form KEY=VALUE")))?;
    if k.is_empty() || k.contains('\0') || v.contains('\0') {
        return Err(invalid(format!("{kv:?} has an empty key or a NUL byte")));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Makes `p` absolute against `base` without touching the file system.
pub fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Checks that `dir` is an existing directory.
pub fn check_cwd(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Invalid {
            what: "working directory",
            message: format!("{} is not a directory", dir.display()),
        }),
        Err(e) => Err(Error::Invalid {
            what: "working directory",
            message: format!("{}: {}", dir.display(), crate::error::io_reason(&e)),
        }),
    }
}

/// Checks that a log file can be appended to (or created), without creating it.
pub fn check_writable(what: &'static str, path: &Path) -> Result<()> {
    let fail = |reason: String| Error::Invalid {
        what,
        message: format!("{} is not writable: {reason}", path.display()),
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(fail("it is a directory".into())),
        Ok(_) => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| fail(crate::error::io_reason(&e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path.parent().unwrap_or(Path::new("/"));
            match std::fs::metadata(parent) {
                Ok(m) if m.is_dir() => nix::unistd::access(parent, nix::unistd::AccessFlags::W_OK)
                    .map_err(|e| fail(format!("directory {}: {e}", parent.display()))),
                Ok(_) => Err(fail(format!("{} is not a directory", parent.display()))),
                Err(e) => Err(fail(format!(
                    "directory {}: {}",
                    parent.display(),
                    crate::error::io_reason(&e)
                ))),
            }
        }
        Err(e) => Err(fail(crate::error::io_reason(&e))),
    }
}

/// Checks that stdin can be opened for reading.
pub fn check_readable(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| Error::Invalid {
            what: "stdin",
            message: format!(
                "{} is not readable: {}",
                path.display(),
                crate::error::io_reason(&e)
            ),
        })
}

/// A host id (`NAME@HOST` in NOTIFY payloads, fleet hosts): a host name, or any name
/// of letters, digits, `.`, `_` and `-` starting with a letter or digit, up to 253 bytes.
pub fn is_host_id(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.as_bytes()[0].is_ascii_alphanumeric()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `10s`, `1.5s`, `250ms`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "a", "w-1.b_c", "9", &"x".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "_x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn split() {
        assert_eq!(
            split_command("bin/worker --queue 'high prio'").unwrap(),
            vec!["bin/worker", "--queue", "high prio"]
        );
        assert!(split_command("echo 'oops").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!("TERM".parse::<StopSignal>().unwrap().name(), "TERM");
        assert_eq!("sigint".parse::<StopSignal>().unwrap().name(), "INT");
        assert_eq!("1".parse::<StopSignal>().unwrap().name(), "HUP");
        assert!("KILL".parse::<StopSignal>().is_err());
        assert!("NOPE".parse::<StopSignal>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5X").is_err());
    }

    #[test]
    fn env() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }
}
