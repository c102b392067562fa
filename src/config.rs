//! `tend config`: settings stored once in the database and shared by the daemon and the
//! CLI (the PostgreSQL connection above all). Only known keys are accepted.

use crate::error::{Error, Result};
use crate::service::Value;

pub const POSTGRES_URL: &str = "postgres.url";
pub const POSTGRES_CHANNEL: &str = "postgres.channel";
pub const POSTGRES_HOST_ID: &str = "postgres.host_id";
pub const POSTGRES_CA_FILE: &str = "postgres.ca_file";
pub const POSTGRES_KEY_FILE: &str = "postgres.notify_key_file";
pub const POSTGRES_QUICK_UNSIGNED: &str = "postgres.quick_unsigned";
pub const POSTGRES_DEDUP_KEEP: &str = "postgres.dedup_keep";
/// How long a finished fleet command answers a repeat of its dedup key by default.
pub const DEFAULT_DEDUP_KEEP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
pub const FLEET_SWEEP_EVERY: &str = "fleet.sweep_every";
pub const FLEET_HEARTBEAT_EVERY: &str = "fleet.heartbeat_every";
/// The fleet's backstop sweep when `fleet.sweep_every` is unset.
pub const DEFAULT_FLEET_SWEEP: std::time::Duration = std::time::Duration::from_secs(30);
/// The fleet heartbeat when `fleet.heartbeat_every` is unset.
pub const DEFAULT_FLEET_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
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
pub const HTTP_LISTEN: &str = "http.listen";
pub const HTTP_TOKEN_FILE: &str = "http.token_file";
pub const HTTP_ALLOW_REMOTE: &str = "http.allow_remote";
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
        POSTGRES_QUICK_UNSIGNED,
        "true: a daemon in a fleet still obeys unsigned quick-mode NOTIFY payloads \
         (default false: once it joined a fleet, only signed ones)",
    ),
    (
        POSTGRES_DEDUP_KEEP,
        "how long a finished fleet command answers a repeat of its --dedup key \
         (default 24h)",
    ),
    (
        FLEET_SWEEP_EVERY,
        "how often a fleet daemon looks for pending commands a missed wake-up left, and \
         marks overdue ones expired: 30s, 5m... (default 30s; 1s to 1h)",
    ),
    (
        FLEET_HEARTBEAT_EVERY,
        "how often a fleet daemon writes its heartbeat, which also checks its connection; \
         `fleet status` calls a host stale after three missed beats (default 10s; 1s to 1h)",
    ),
    (
        EVENTS_KEEP_PER_SERVICE,
        "events kept per service, the oldest deleted first (default 1000; 0: no limit)",
    ),
    (
        HTTP_LISTEN,
        "where the daemon serves its HTTP API: HOST:PORT (loopback unless \
         http.allow_remote) or the path of a Unix socket; unset: no HTTP API",
    ),
    (
        HTTP_TOKEN_FILE,
        "file (mode 0600) holding the bearer token that HTTP writes (start, stop, \
         restart) need; unset: the API is read-only",
    ),
    (
        HTTP_ALLOW_REMOTE,
        "true to let http.listen name an address other than loopback (default false)",
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
        FLEET_SWEEP_EVERY | FLEET_HEARTBEAT_EVERY => fleet_period(key, value)
            .map(|_| value.trim().to_string())
            .map_err(invalid),
        HTTP_LISTEN => {
            let here = std::env::current_dir().unwrap_or_else(|_| "/".into());
            HttpListen::parse(value, &here)
                .map(|l| l.to_string())
                .map_err(|e| invalid(format!("{key}: {e}")))
        }
        HTTP_ALLOW_REMOTE => match value.trim() {
            "true" | "false" => Ok(value.trim().to_string()),
            other => Err(invalid(format!("{key}: {other:?} is not true or false"))),
        },
        POSTGRES_QUICK_UNSIGNED => match value.trim() {
            "true" | "false" => Ok(value.trim().to_string()),
            _ => Err(invalid(format!("{key}: {value:?}: use true or false"))),
        },
        POSTGRES_DEDUP_KEEP => match crate::service::parse_duration(value) {
            Ok(d) if !d.is_zero() => Ok(value.trim().to_string()),
            Ok(_) => Err(invalid(format!("{key}: must be longer than 0s"))),
            Err(e) => Err(invalid(format!("{key}: {e}"))),
        },
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

/// A fleet period (`fleet.sweep_every`, `fleet.heartbeat_every`): a duration from 1 s
/// to 1 h. Shorter would be the per-second polling a large fleet cannot afford; longer
/// would leave a host's liveness unknown for too long.
pub fn fleet_period(key: &str, value: &str) -> std::result::Result<std::time::Duration, String> {
    let d = crate::service::parse_duration(value).map_err(|e| format!("{key}: {e}"))?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{key}: {value:?} is outside 1s to 1h"));
    }
    Ok(d)
}

/// Where the daemon's HTTP API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpListen {
    Tcp(std::net::SocketAddr),
    /// A Unix socket at this (absolute) path.
    Unix(std::path::PathBuf),
}

impl HttpListen {
    /// `HOST:PORT` (an IP address: `127.0.0.1:9123`, `[::1]:9123`), or a path (absolute,
    /// `./`-relative to `here`, or `unix:PATH`) of a Unix socket.
    pub fn parse(value: &str, here: &std::path::Path) -> std::result::Result<HttpListen, String> {
        let v = value.trim();
        if v.is_empty() {
            return Err("empty address".into());
        }
        let path = v.strip_prefix("unix:");
        if path.is_some() || v.starts_with('/') || v.starts_with("./") {
            let p = path.unwrap_or(v);
            if p.is_empty() {
                return Err("unix: needs a path".into());
            }
            return Ok(HttpListen::Unix(crate::service::absolute(
                here,
                std::path::Path::new(p),
            )));
        }
        v.parse::<std::net::SocketAddr>()
            .map(HttpListen::Tcp)
            .map_err(|_| {
                format!(
                    "{v:?} is neither IP:PORT (127.0.0.1:9123, [::1]:9123) nor the path of a \
                     Unix socket (/run/user/1000/tend.http, unix:PATH)"
                )
            })
    }

    /// A TCP address that is not loopback: reachable from other hosts.
    pub fn is_remote(&self) -> bool {
        matches!(self, HttpListen::Tcp(a) if !a.ip().is_loopback())
    }
}

impl std::fmt::Display for HttpListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpListen::Tcp(a) => write!(f, "{a}"),
            HttpListen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A stored `true`.
pub fn truthy(v: &str) -> bool {
    v.trim() == "true"
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

/// The fleet's schema: a plain lowercase identifier (at most 58 bytes, a limit kept from
/// when channels were named after it; the hosts' wake-up channels are digests).
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
