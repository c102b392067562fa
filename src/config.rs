//! `tend config`: settings stored once in the database and shared by the daemon and the
//! CLI (the PostgreSQL connection above all). Only known keys are accepted.

use crate::error::{Error, Result};
use crate::service::Value;

pub const POSTGRES_URL: &str = "postgres.url";
pub const POSTGRES_CHANNEL: &str = "postgres.channel";
pub const POSTGRES_HOST_ID: &str = "postgres.host_id";
pub const POSTGRES_CA_FILE: &str = "postgres.ca_file";
pub const POSTGRES_KEY_FILE: &str = "postgres.notify_key_file";
pub const EVENTS_KEEP_PER_SERVICE: &str = "events.keep_per_service";
pub const EVENTS_KEEP_FOR: &str = "events.keep_for";

/// Events kept per service (the oldest go first) when `events.keep_per_service` is unset.
pub const DEFAULT_EVENTS_PER_SERVICE: u64 = 1000;
/// Age past which events are deleted when `events.keep_for` is unset.
pub const DEFAULT_EVENTS_KEEP_FOR: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

/// The event retention in force, from the stored values (`None`: not set). A value that
/// cannot be read counts as unset; `0` turns the limit off.
pub fn retention(
    per_service: Option<&str>,
    keep_for: Option<&str>,
) -> (Option<u64>, Option<std::time::Duration>) {
    let count = per_service
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_EVENTS_PER_SERVICE);
    let age = keep_for
        .and_then(|v| crate::service::parse_duration(v).ok())
        .unwrap_or(DEFAULT_EVENTS_KEEP_FOR);
    (
        (count > 0).then_some(count),
        (!age.is_zero()).then_some(age),
    )
}

/// Home-wide hooks: run for a service that has none of its own for the event.
pub const HOOKS_ON_START: &str = "hooks.on_start";
pub const HOOKS_ON_EXIT: &str = "hooks.on_exit";
pub const HOOKS_ON_FAILED: &str = "hooks.on_failed";
pub const HOOKS_ON_UNHEALTHY: &str = "hooks.on_unhealthy";
/// A hook's time limit where its service sets none.
pub const HOOKS_TIMEOUT: &str = "hooks.timeout";

/// The `tend config` key of the home-wide hook for `e`.
pub fn hook_key(e: crate::service::hooks::HookEvent) -> &'static str {
    use crate::service::hooks::HookEvent;
    match e {
        HookEvent::Start => HOOKS_ON_START,
        HookEvent::Exit => HOOKS_ON_EXIT,
        HookEvent::Failed => HOOKS_ON_FAILED,
        HookEvent::Unhealthy => HOOKS_ON_UNHEALTHY,
    }
}

pub const POSTGRES_SCHEMA: &str = "postgres.schema";
/// The fleet's schema when none is configured.
pub const DEFAULT_SCHEMA: &str = "tend_fleet";

/// Every key with what it means.
pub const KEYS: &[(&str, &str)] = &[
    (
        POSTGRES_URL,
        "PostgreSQL URL the daemon listens on and `tend notify` sends to \
         (postgres://user[:password]@host[:port]/db?sslmode=disable|prefer|require)",
    ),
    (
        POSTGRES_CHANNEL,
        "NOTIFY channel (default: tend); lowercase letters, digits, underscore",
    ),
    (
        POSTGRES_HOST_ID,
        "this host's name in NOTIFY payloads (NAME@HOST); default: the hostname",
    ),
    (
        POSTGRES_SCHEMA,
        "PostgreSQL schema of the fleet's tables (default: tend_fleet); lowercase letters, \
         digits, underscore, at most 58",
    ),
    (
        POSTGRES_CA_FILE,
        "PEM file of CA certificates trusted for TLS, in addition to the system roots",
    ),
    (
        POSTGRES_KEY_FILE,
        "file holding the HMAC key: NOTIFY payloads must then be signed",
    ),
    (
        EVENTS_KEEP_PER_SERVICE,
        "events kept per service, the oldest deleted first (default 1000; 0: no limit)",
    ),
    (
        EVENTS_KEEP_FOR,
        "events older than this are deleted: 30d, 12h... (default 30d; 0: no limit)",
    ),
    (
        HOOKS_ON_START,
        "hook (sh -c) the daemon runs when a service without its own on_start starts",
    ),
    (
        HOOKS_ON_EXIT,
        "hook the daemon runs when a service without its own on_exit exits",
    ),
    (
        HOOKS_ON_FAILED,
        "hook the daemon runs when a service without its own on_failed becomes failed",
    ),
    (
        HOOKS_ON_UNHEALTHY,
        "hook the daemon runs when a service without its own on_unhealthy is unhealthy",
    ),
    (
        HOOKS_TIMEOUT,
        "time a hook may run before it is killed whole, where its service sets none (default 30s)",
    ),
];

/// Checks a key and value; paths are made absolute so the daemon reads the same file.
pub fn validate(key: &str, value: &str) -> Result<String> {
    let invalid = |message: String| Error::Invalid {
        what: "config",
        message,
    };
    if !KEYS.iter().any(|(k, _)| *k == key) {
        let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
        return Err(invalid(format!(
            "unknown key {key:?} (known: {})",
            known.join(", ")
        )));
    }
    match key {
        POSTGRES_URL => {
            value
                .parse::<tokio_postgres::Config>()
                .map_err(|e| invalid(format!("{key}: {e}")))?;
            Ok(value.to_string())
        }
        POSTGRES_CHANNEL => {
            validate_channel(value).map_err(invalid)?;
            Ok(value.to_string())
        }
        POSTGRES_SCHEMA => {
            validate_schema(value).map_err(invalid)?;
            Ok(value.to_string())
        }
        POSTGRES_HOST_ID => {
            validate_host_id(value).map_err(invalid)?;
            Ok(value.to_string())
        }
        EVENTS_KEEP_PER_SERVICE => value
            .trim()
            .parse::<u64>()
            .map(|n| n.to_string())
            .map_err(|_| invalid(format!("{key}: {value:?} is not a count (0, 1000...)"))),
        HOOKS_ON_START | HOOKS_ON_EXIT | HOOKS_ON_FAILED | HOOKS_ON_UNHEALTHY => {
            crate::service::hooks::check_hook_text(value)
                .map_err(|e| invalid(format!("{key}: {e}")))?;
            if value.trim().is_empty() {
                return Err(invalid(format!(
                    "{key}: the command is empty (`tend config unset {key}` removes it)"
                )));
            }
            Ok(value.to_string())
        }
        HOOKS_TIMEOUT => match crate::service::hooks::HookTimeout::parse(value) {
            Ok(crate::service::hooks::HookTimeout(Some(_))) => Ok(value.trim().to_string()),
            Ok(_) => Err(invalid(format!("{key}: the duration is empty"))),
            Err(e) => Err(invalid(format!("{key}: {e}"))),
        },
        EVENTS_KEEP_FOR => crate::service::parse_duration(value)
            .map(|_| value.trim().to_string())
            .map_err(|e| invalid(format!("{key}: {e}"))),
        _ => {
            let here = std::env::current_dir().unwrap_or_else(|_| "/".into());
            Ok(crate::service::absolute(&here, std::path::Path::new(value))
                .to_string_lossy()
                .into_owned())
        }
    }
}

/// Channels are plain lowercase identifiers, so `NOTIFY tend, '...'` typed unquoted in
/// psql reaches the channel the daemon LISTENs on.
pub fn validate_channel(c: &str) -> std::result::Result<(), String> {
    let ok = !c.is_empty()
        && c.len() <= 63
        && (c.as_bytes()[0].is_ascii_lowercase() || c.as_bytes()[0] == b'_')
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "channel {c:?}: use lowercase letters, digits and '_' (at most 63)"
        ))
    }
}

/// The fleet's schema: a plain lowercase identifier, short enough that the wake-up
/// channels `SCHEMA_wake` and `SCHEMA_done` are identifiers too.
pub fn validate_schema(s: &str) -> std::result::Result<(), String> {
    if validate_channel(s).is_ok() && s.len() <= 58 && !s.starts_with("pg_") {
        Ok(())
    } else {
        Err(format!(
            "schema {s:?}: use lowercase letters, digits and '_' (at most 58, not pg_...)"
        ))
    }
}

/// A host id as NOTIFY payloads name it (`NAME@HOST`).
pub fn validate_host_id(h: &str) -> std::result::Result<(), String> {
    if crate::service::is_host_id(h) {
        Ok(())
    } else {
        Err(format!(
            "host id {h:?}: use letters, digits, '.', '_' and '-'"
        ))
    }
}

/// The value as it may be shown: a password in a URL is replaced by `****`.
pub fn display(key: &str, value: &str) -> String {
    if key == POSTGRES_URL {
        mask_password(value)
    } else {
        value.to_string()
    }
}

/// Hides the password of a `postgres://user:password@host` URL or of a
/// `password=...` conninfo setting.
pub fn mask_password(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!(
                    "{}{}:****{}",
                    &url[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=****".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(
            mask_password("postgres://app:s3cr@t@db/ops?sslmode=require"),
            "postgres://app:****@db/ops?sslmode=require"
        );
        assert_eq!(
            mask_password("postgres://app@db/ops"),
            "postgres://app@db/ops"
        );
        assert_eq!(
            mask_password("host=db user=app password=x dbname=ops"),
            "host=db user=app password=**** dbname=ops"
        );
    }

    #[test]
    fn validates() {
        assert!(validate("postgres.nope", "x").is_err());
        assert!(validate(POSTGRES_CHANNEL, "Bad-Channel").is_err());
        assert!(validate(POSTGRES_CHANNEL, "tend_ops").is_ok());
        assert!(validate(POSTGRES_URL, "postgres://u@h/db?sslmode=require").is_ok());
        assert!(validate(POSTGRES_URL, "postgres://u@h/db?sslmode=bogus").is_err());
        assert_eq!(validate(EVENTS_KEEP_PER_SERVICE, " 50").unwrap(), "50");
        assert!(validate(EVENTS_KEEP_PER_SERVICE, "-1").is_err());
        assert!(validate(EVENTS_KEEP_FOR, "7d").is_ok());
        assert!(validate(EVENTS_KEEP_FOR, "soon").is_err());
    }

    #[test]
    fn retention_defaults_and_off() {
        assert_eq!(
            retention(None, None),
            (
                Some(DEFAULT_EVENTS_PER_SERVICE),
                Some(DEFAULT_EVENTS_KEEP_FOR)
            )
        );
        assert_eq!(retention(Some("0"), Some("0")), (None, None));
        assert_eq!(
            retention(Some("5"), Some("1h")),
            (Some(5), Some(std::time::Duration::from_secs(3600)))
        );
    }
}
