//! The service definition and the validation of everything a person can type into one.
//!
//! Validation happens here, before anything is stored: a definition that reaches the store
//! has a valid name, a non-empty argv, an absolute working directory that existed when it
//! was written, and absolute stdio paths.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

pub mod execution;
pub mod file;
pub mod files;
pub mod graph;
pub mod hooks;
mod names;
pub mod paths;
pub mod probe;
pub mod settings;
pub mod values;

pub use names::{validate_name, MAX_NAME_LEN};
pub use paths::{absolute, check_cwd, check_readable, check_writable, stdio_refusal};
pub use settings::{
    Defaults, SettingArgs, SettingChanges, Settings, DEFAULT_LOG_MAX_BYTES, DEFAULT_RESTART_DELAY,
    DEFAULT_START_LIMIT, DEFAULT_START_LIMIT_INTERVAL, DEFAULT_STOP_TIMEOUT,
};
pub use values::{
    fmt_duration, parse_duration, parse_size, Globs, LogTimestamps, RestartPolicy, StopSignal,
    Value,
};

/// Numbered backups kept by log rotation (NAME.log.1 is the newest).
pub const LOG_BACKUPS: u32 = 3;

/// A full service definition, as stored: its name, its command and environment, and its
/// settings (the table in [`settings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub argv: Vec<String>,
    /// Variables set on top of the environment the service inherits.
    pub env: BTreeMap<String, String>,
    pub settings: Settings,
    /// Unix time in milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// Changes for `tend edit`; `None` leaves a part as it is.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub argv: Option<Vec<String>>,
    pub set_env: Vec<(String, String)>,
    pub unset_env: Vec<String>,
    pub settings: SettingChanges,
}

impl Changes {
    /// The definition with these changes made (and `updated_at` set to `now`).
    pub fn apply(&self, current: &Service, now: i64) -> Service {
        let mut s = current.clone();
        if let Some(v) = &self.argv {
            s.argv = v.clone();
        }
        for k in &self.unset_env {
            s.env.remove(k);
        }
        for (k, v) in &self.set_env {
            s.env.insert(k.clone(), v.clone());
        }
        self.settings.apply(&mut s.settings);
        s.updated_at = now;
        s
    }
}

/// What differs between two definitions, as `tend edit` reports it.
pub fn diff(a: &Service, b: &Service) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.argv != b.argv {
        out.push("command");
    }
    if a.env != b.env {
        out.push("env");
    }
    out.extend(settings::diff(&a.settings, &b.settings));
    out
}

/// Checks a definition before it is stored: its name, a command, and every setting
/// against the file system.
pub fn validate(svc: &Service) -> Result<()> {
    validate_name(&svc.name)?;
    if svc.argv.is_empty() || svc.argv[0].is_empty() {
        return Err(Error::Invalid {
            what: "command",
            message: "no command given (use --cmd STRING or -- PROGRAM ARGS...)".into(),
        });
    }
    settings::check(&svc.settings)
}

impl Service {
    /// The command line as a person would type it into a shell.
    pub fn command_line(&self) -> String {
        shell_words::join(&self.argv)
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

/// A host id (`NAME@HOST` in NOTIFY payloads, fleet hosts): a host name, or any name
/// of letters, digits, `.`, `_` and `-` starting with a letter or digit, up to 253 bytes.
pub fn is_host_id(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.as_bytes()[0].is_ascii_alphanumeric()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
