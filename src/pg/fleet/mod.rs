//! Fleet control over PostgreSQL: the schema and its migrations, bounded
//! retries of every fleet transaction, the daemon's one connection.
//!
//! - [`schema`]: versioned migrations (`tend fleet init`) and the least-privilege grants.
//! - [`host`]: the daemon's side (LISTEN, claim, act, report, heartbeat, status).
//! - [`operator`]: the operator's side (issue commands, wait for results, status, history).
//!
//! Commands are rows; a trigger NOTIFYs the channel of the command's host (see
//! [`schema`]: `SCHEMA.wake_channel(host)`) with only the new row's id (it is delivered
//! on commit), so a command wakes only the host it is for. Finishing one notifies
//! nobody (see the schema's second migration): `--wait` polls for results.

pub mod host;
pub mod operator;
pub mod schema;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connect;
use crate::api::FleetStatus;
use crate::error::Error;
use crate::record::now_ms;

/// What the fleet thread tells the rest of the daemon: its state for `daemon status`,
/// and whether this daemon has joined a fleet (the quick mode asks, see
/// [`crate::pg::quick`]).
pub struct Watch {
    status: Mutex<FleetStatus>,
    changed: Condvar,
}

impl Watch {
    pub fn new(schema: &str, host_id: &str) -> Arc<Watch> {
        Arc::new(Watch {
            status: Mutex::new(FleetStatus {
                state: "looking".into(),
                since: now_ms(),
                schema: schema.to_string(),
                host_id: host_id.to_string(),
                joined_once: false,
                last_sweep: None,
                last_error: None,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FleetStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters `state` (a new one restarts `since`), with `error` as the last error when
    /// given; `joined` marks the daemon as having joined.
    pub fn enter(&self, state: &str, error: Option<String>) {
        let mut s = self.lock();
        if s.state != state {
            s.state = state.to_string();
            s.since = now_ms();
        }
        if state == "joined" {
            s.joined_once = true;
            s.last_error = None;
        }
        if error.is_some() {
            s.last_error = error;
        }
        drop(s);
        self.changed.notify_all();
    }

    pub fn swept(&self) {
        self.lock().last_sweep = Some(now_ms());
    }

    pub fn snapshot(&self) -> FleetStatus {
        self.lock().clone()
    }

    /// Whether this daemon joined a fleet (`Some(true)`: at least once; `Some(false)`:
    /// the database has no fleet it could join), waiting up to `wait` for the first
    /// answer; `None`: not known yet.
    pub fn joined_within(&self, wait: Duration) -> Option<bool> {
        let answer = |s: &FleetStatus| {
            if s.joined_once {
                Some(true)
            } else if s.state == "no fleet" {
                Some(false)
            } else {
                None
            }
        };
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, wait, |s| answer(s).is_none())
            .unwrap_or_else(|p| p.into_inner());
        answer(&guard)
    }
}

/// Retries after the first attempt of a fleet transaction that failed with a
/// serialization failure, a deadlock or a unique violation (a dedup race).
pub const RETRIES: u32 = 3;

/// A PostgreSQL failure of a fleet operation, as a tend error (exit 1).
pub fn fail(what: &str, e: &tokio_postgres::Error) -> Error {
    Error::Postgres {
        message: format!("{what}: {}", connect::describe(e)),
    }
}

/// Whether a failed transaction may simply be tried again.
pub fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
    )
}

/// Decides what follows a failed attempt of a fleet transaction: `Ok(())` to try it
/// again (a conflict that a retry resolves, at most [`RETRIES`] times, after a short
/// jittered pause), else the error to give up with, naming the operation.
pub async fn again(what: &str, attempt: &mut u32, e: tokio_postgres::Error) -> Result<(), Error> {
    if !retryable(&e) {
        return Err(fail(what, &e));
    }
    if *attempt >= RETRIES {
        return Err(Error::Postgres {
            message: format!(
                "{what}: still conflicting after {} attempts: {}",
                RETRIES + 1,
                connect::describe(&e)
            ),
        });
    }
    *attempt += 1;
    tracing::debug!(%what, attempt = *attempt, error = %connect::describe(&e), "retrying");
    tokio::time::sleep(Duration::from_millis(
        5 * u64::from(*attempt) + (super::jitter() * 10.0) as u64,
    ))
    .await;
    Ok(())
}

/// Runs `f` (one statement, which is its own transaction) and tries it again while
/// [`again`] says so. `f` must have no effect outside the database.
pub async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tokio_postgres::Error>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => again(what, &mut attempt, e).await?,
        }
    }
}

/// Opens one connection and drives it on a task of its own (for connections that
/// receive no notifications).
pub async fn open(url: &str, tls: &MakeRustlsConnect) -> Result<Client, Error> {
    let (client, connection) = connect::connect(url, tls).await.map_err(Error::from)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %connect::describe(&e), "fleet connection closed");
        }
    });
    Ok(client)
}

/// The daemon's one connection, shared by the quick mode's LISTEN, the fleet's LISTEN
/// and every fleet statement (tokio-postgres pipelines the statements of concurrent
/// tasks on it and delivers notifications between their results). Each statement is
/// prepared once per connection: the first use parses and plans it, later ones only
/// bind and execute.
pub struct Conn {
    client: Client,
    prepared: Mutex<HashMap<String, Statement>>,
}

impl Conn {
    pub fn new(client: Client) -> Conn {
        Conn {
            client,
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// The statement for `sql`, prepared on this connection the first time it is asked
    /// for. Two tasks asking at once may both prepare it; the second is dropped.
    pub async fn prepared(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
        {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).await?;
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}
