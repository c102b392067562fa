//! PostgreSQL control: the daemon LISTENs on a channel and obeys NOTIFY payloads.
//!
//! - [`payload`] parses what arrives (strictly: start / stop / restart / signal of
//!   services already defined, nothing else).
//! - [`reject`] coalesces rejected payloads: one event and one log line per burst.
//! - [`auth`] checks signed payloads when a notify key is configured.
//! - [`quick`] decides whether unsigned payloads are obeyed: not by a daemon that has
//!   joined a fleet, unless `postgres.quick_unsigned` says so.
//! - [`connect`] builds the connection: URL, password from the URL, `PGPASSWORD` or
//!   `~/.pgpass`, TLS verified against the system roots (plus an optional CA file).
//! - [`listener`] keeps the daemon's one connection, drives `Connection::poll_message`
//!   itself (spawning the connection future would drop notifications), and reconnects
//!   with jittered exponential backoff, re-LISTENing each time. The quick mode's LISTEN,
//!   the fleet's LISTEN and every fleet statement share it ([`fleet::host`] runs on it).
//!   It runs on its own thread: local supervision never waits on PostgreSQL.
//! - Commands are carried out on one more thread, in arrival order, through the same
//!   [`crate::api::act`] the CLI and the control socket use.

pub mod auth;
pub mod connect;
pub mod error;
pub mod fleet;
pub mod listener;
pub mod payload;
pub mod quick;
pub mod reject;
pub mod replays;

use std::path::PathBuf;
use std::time::Duration;

use crate::config;
use crate::error::{Error, Result};
use crate::supervisor::Supervisor;

/// Default NOTIFY channel.
pub const DEFAULT_CHANNEL: &str = "tend";

/// Everything needed to talk to PostgreSQL.
#[derive(Clone, Debug)]
pub struct Settings {
    /// May contain a password: never print it, use [`Settings::display_url`].
    pub url: String,
    pub channel: String,
    pub host_id: String,
    /// The fleet's PostgreSQL schema.
    pub schema: String,
    pub ca_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// `postgres.quick_unsigned`: obey unsigned quick-mode payloads even in a fleet.
    pub quick_unsigned: bool,
    /// The fleet's backstop sweep (`fleet.sweep_every`).
    pub sweep_every: Duration,
    /// The fleet heartbeat (`fleet.heartbeat_every`).
    pub heartbeat_every: Duration,
}

/// Values given on the command line, which win over `tend config`.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub url: Option<String>,
    pub channel: Option<String>,
    pub host_id: Option<String>,
    pub schema: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Settings {
    /// Command-line values, else `tend config` values, else defaults. `None` when no URL
    /// is configured at all (PostgreSQL control is off).
    pub fn resolve(sup: &mut Supervisor, o: &Overrides) -> Result<Option<Settings>> {
        let mut get = |key: &str| sup.config_get(key);
        let Some(url) = o.url.clone().or(get(config::POSTGRES_URL)?) else {
            return Ok(None);
        };
        let invalid = |message: String| Error::Invalid {
            what: "postgres settings",
            message,
        };
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| invalid(format!("URL {}: {e}", config::mask_password(&url))))?;
        let channel = o
            .channel
            .clone()
            .or(get(config::POSTGRES_CHANNEL)?)
            .unwrap_or_else(|| DEFAULT_CHANNEL.to_string());
        config::validate_channel(&channel).map_err(invalid)?;
        let host_id = match o.host_id.clone().or(get(config::POSTGRES_HOST_ID)?) {
            Some(h) => h,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_string()),
        };
        config::validate_host_id(&host_id).map_err(invalid)?;
        let schema = o
            .schema
            .clone()
            .or(get(config::POSTGRES_SCHEMA)?)
            .unwrap_or_else(|| config::DEFAULT_SCHEMA.to_string());
        config::validate_schema(&schema).map_err(invalid)?;
        let mut period = |key: &str, default: Duration| -> Result<Duration> {
            match get(key)? {
                Some(v) => config::fleet_period(key, &v).map_err(invalid),
                None => Ok(default),
            }
        };
        let sweep_every = period(config::FLEET_SWEEP_EVERY, config::DEFAULT_FLEET_SWEEP)?;
        let heartbeat_every = period(
            config::FLEET_HEARTBEAT_EVERY,
            config::DEFAULT_FLEET_HEARTBEAT,
        )?;
        Ok(Some(Settings {
            sweep_every,
            heartbeat_every,
            url,
            channel,
            host_id,
            schema,
            ca_file: o
                .ca_file
                .clone()
                .or(get(config::POSTGRES_CA_FILE)?.map(PathBuf::from)),
            key_file: o
                .key_file
                .clone()
                .or(get(config::POSTGRES_KEY_FILE)?.map(PathBuf::from)),
            quick_unsigned: get(config::POSTGRES_QUICK_UNSIGNED)?
                .is_some_and(|v| config::truthy(&v)),
        }))
    }

    pub fn display_url(&self) -> String {
        config::mask_password(&self.url)
    }

    /// The notify key, if one is configured.
    pub fn key(&self) -> Result<Option<auth::Key>> {
        self.key_file
            .as_deref()
            .map(|p| auth::Key::load(p).map_err(Error::from))
            .transpose()
    }
}

/// What the host process (the daemon) lends the executor: a way to count a command in
/// as work in flight (`None` when the host is shutting down and takes no new work; the
/// returned token counts it out when dropped), and a way to say that a command changed
/// what runs.
pub struct Hooks {
    pub admit: Box<dyn Fn() -> Option<Box<dyn Send>> + Send>,
    pub changed: Box<dyn Fn() + Send>,
}

/// A number in [0, 1) from the std hasher's random keys; good enough for jitter.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(crate::record::now_ms());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Sends one NOTIFY (signed when a key is configured): what `tend notify` does.
pub fn notify(settings: &Settings, payload: &str) -> Result<()> {
    let body = match settings.key()? {
        Some(key) => key
            .sign(payload, crate::record::now_ms() / 1000)
            .map_err(|e| Error::Postgres {
                message: format!("cannot read random bytes for the nonce: {e}"),
            })?,
        None => payload.to_string(),
    };
    if body.len() >= payload::MAX_PAYLOAD {
        return Err(Error::Invalid {
            what: "notify",
            message: format!("payload longer than {} bytes", payload::MAX_PAYLOAD),
        });
    }
    let fail = |message: String| Error::Postgres { message };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("runtime: {e}")))?;
    rt.block_on(async {
        let tls = connect::tls(settings.ca_file.as_deref()).map_err(|e| fail(e.to_string()))?;
        let (client, connection) = connect::connect(&settings.url, &tls)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let sent = client
            .execute("SELECT pg_notify($1, $2)", &[&settings.channel, &body])
            .await
            .map(drop)
            .map_err(|e| fail(format!("NOTIFY failed: {}", connect::describe(&e))));
        drop(client);
        let _ = driver.await;
        sent
    })
}
