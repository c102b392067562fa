//! Fleet control over PostgreSQL: the schema and its migrations, bounded
//! retries of every fleet transaction, the daemon's capped connection pool.
//!
//! - [`schema`]: versioned migrations (`tend fleet init`) and the least-privilege grants.
//! - [`host`]: the daemon's side (LISTEN, claim, act, report, heartbeat, status).
//! - [`operator`]: the operator's side (issue commands, wait for results, status, history).
//!
//! Commands are rows; a trigger NOTIFYs `SCHEMA_wake` with only the new row's id (it is
//! delivered on commit), and `SCHEMA_done` with the id when a host finishes one.

pub mod host;
pub mod operator;
pub mod schema;

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
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

/// The wake-up channel daemons LISTEN on: payload = a new command's id.
pub fn wake_channel(schema: &str) -> String {
    format!("{schema}_wake")
}

/// The channel `--wait` LISTENs on: payload = the id of a command just finished.
pub fn done_channel(schema: &str) -> String {
    format!("{schema}_done")
}

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

/// A small pool of connections for the daemon's fleet work, capped at `cap` (the LISTEN
/// connection is separate): a host never holds more than `cap + 1` fleet connections.
/// Connections are opened on demand and kept while they work; one that failed is
/// dropped, and the next `get` opens a fresh one.
pub struct Pool {
    url: String,
    tls: MakeRustlsConnect,
    idle: Mutex<Vec<Client>>,
    permits: Arc<tokio::sync::Semaphore>,
}

/// One connection lent by the [`Pool`]; returned when dropped (unless it is closed).
pub struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Pool {
    pub fn new(url: String, tls: MakeRustlsConnect, cap: usize) -> Pool {
        Pool {
            url,
            tls,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(cap)),
        }
    }

    /// Waits for a free slot, then lends an idle connection or opens one.
    pub async fn get(&self) -> Result<Pooled<'_>, Error> {
        let permit = self.permits.acquire().await.map_err(|_| Error::Postgres {
            message: "the fleet pool is closed".into(),
        })?;
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let client = match idle.filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => {
                let c = open(&self.url, &self.tls).await?;
                // A host's claims and reports need not wait for the server's WAL flush:
                // one lost in a server crash is found unfinished and claimed again by
                // this home, whose own record (committed before acting) keeps the
                // command from acting twice and reports its result again. This saves
                // two fsyncs per command.
                c.batch_execute("SET synchronous_commit = off")
                    .await
                    .map_err(|e| fail("configuring a fleet connection", &e))?;
                c
            }
        };
        Ok(Pooled {
            pool: self,
            client: Some(client),
            _permit: permit,
        })
    }

    /// Drops every idle connection (after the database went away).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take().filter(|c| !c.is_closed()) {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(c);
        }
    }
}
