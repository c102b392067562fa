//! The operator's side of the fleet: `tend fleet init | grant | status | history` and
//! issuing commands (and waiting for their results). Each call opens one connection.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::future::poll_fn;
use serde::Serialize;
use tokio_postgres::{AsyncMessage, Client};

use super::{fail, retry, schema};
use crate::error::Error;
use crate::fleet::Action;
use crate::pg::{connect, Settings};

/// A host as `fleet status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct HostView {
    pub host: String,
    pub version: String,
    pub pid: Option<i32>,
    /// Unix ms of the last heartbeat.
    pub last_seen: i64,
    /// Ms since the last heartbeat.
    pub age_ms: i64,
    /// No heartbeat for three intervals.
    pub stale: bool,
    pub services: Vec<ServiceView>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub state: String,
    pub pid: Option<i32>,
    /// Unix ms the running instance started.
    #[serde(deserialize_with = "ms_from_float")]
    pub since: Option<i64>,
}

/// PostgreSQL's JSON gives times as fractional ms; fleet output has integer ms.
fn ms_from_float<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v: Option<f64> = serde::Deserialize::deserialize(d)?;
    Ok(v.map(|v| v as i64))
}

/// A command as `fleet history` and `--wait` show it.
#[derive(Clone, Debug, Serialize)]
pub struct CommandView {
    pub id: i64,
    pub host: String,
    pub service: String,
    pub action: String,
    pub signal: Option<i32>,
    pub issued_by: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub dedup_key: Option<String>,
    pub claimed_by: Option<String>,
    pub finished_at: Option<i64>,
    pub ok: Option<bool>,
    /// `done`, `failed`, `expired`, or while unfinished `running` (claimed) or `pending`.
    pub outcome: String,
    pub message: Option<String>,
}

/// What issuing found for one target host.
#[derive(Clone, Debug, Serialize)]
pub struct Issued {
    pub host: String,
    pub id: i64,
    /// The dedup key already had a command for this host (pending, running, or finished
    /// within the retention window): no new command, this is that one.
    pub deduplicated: bool,
    /// With `deduplicated`: that command's outcome as `fleet history` shows it
    /// (`pending`, `running`, `done`, `failed`).
    pub outcome: Option<String>,
    /// With `deduplicated`: that command's message, when it finished.
    pub message: Option<String>,
    /// A new command that took over the dedup key of this expired one.
    pub expired_before: Option<i64>,
}

/// Runs `f` on one connection in a runtime of its own (the CLI's side).
fn with_client<T>(
    settings: &Settings,
    f: impl AsyncFnOnce(&mut Client, &Settings) -> Result<T, Error>,
) -> Result<T, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Postgres {
            message: format!("runtime: {e}"),
        })?;
    rt.block_on(async {
        let tls = connect::tls(settings.ca_file.as_deref()).map_err(Error::from)?;
        let mut client = super::open(&settings.url, &tls).await?;
        f(&mut client, settings).await
    })
}

/// `tend fleet init`.
pub fn init(settings: &Settings) -> Result<schema::Migrated, Error> {
    with_client(settings, async |c, s| schema::migrate(c, &s.schema).await)
}

/// `tend fleet grant --operator ROLE`.
pub fn grant_operator(settings: &Settings, role: &str) -> Result<(), Error> {
    with_client(settings, async |c, s| {
        schema::check(c, &s.schema).await?;
        schema::grant_operator(c, &s.schema, role).await
    })
}

/// `tend fleet grant --host-role ROLE --host-id H`.
pub fn grant_host(settings: &Settings, role: &str, host: &str) -> Result<(), Error> {
    with_client(settings, async |c, s| {
        schema::check(c, &s.schema).await?;
        schema::grant_host(c, &s.schema, role, host).await
    })
}

/// What `fleet remove` did.
pub struct Removed {
    /// Unfinished commands of the host, now expired.
    pub expired: i64,
    /// The host's row existed (and is gone).
    pub removed: bool,
}

/// `tend fleet remove HOST` (the schema's owner, or an operator role).
pub fn remove_host(settings: &Settings, host: &str) -> Result<Removed, Error> {
    with_client(settings, async |c, st| {
        schema::check(c, &st.schema).await?;
        let s = &st.schema;
        let row = retry("removing a host", || async {
            c.query_one(
                &format!("SELECT expired, removed FROM {s}.remove_host($1)"),
                &[&host],
            )
            .await
        })
        .await?;
        Ok(Removed {
            expired: row.get(0),
            removed: row.get(1),
        })
    })
}

fn ms(v: Option<f64>) -> Option<i64> {
    v.map(|v| v as i64)
}

/// `tend fleet status`: every host, its last heartbeat, its services.
pub fn status(settings: &Settings) -> Result<Vec<HostView>, Error> {
    with_client(settings, async |c, st| {
        schema::check(c, &st.schema).await?;
        let s = &st.schema;
        let rows = c
            .query(
                &format!(
                    "SELECT h.id, h.version, h.pid, \
                         (extract(epoch FROM h.last_seen) * 1000)::float8, \
                         (extract(epoch FROM now() - h.last_seen) * 1000)::float8, \
                         h.last_seen < now() - 3 * h.heartbeat_ms * interval '1 millisecond', \
                         coalesce(json_agg(json_build_object('name', v.name, 'state', v.state, \
                             'pid', v.pid, 'since', extract(epoch FROM v.since) * 1000) \
                             ORDER BY v.name) FILTER (WHERE v.name IS NOT NULL), '[]')::text \
                     FROM {s}.hosts h LEFT JOIN {s}.services v ON v.host_id = h.id \
                     GROUP BY h.id ORDER BY h.id"
                ),
                &[],
            )
            .await
            .map_err(|e| fail("reading fleet status", &e))?;
        rows.into_iter()
            .map(|r| {
                let services: String = r.get(6);
                Ok(HostView {
                    host: r.get(0),
                    version: r.get(1),
                    pid: r.get(2),
                    last_seen: r.get::<_, f64>(3) as i64,
                    age_ms: r.get::<_, f64>(4) as i64,
                    stale: r.get(5),
                    services: serde_json::from_str(&services).map_err(|e| Error::Postgres {
                        message: format!("fleet status: unreadable service list: {e}"),
                    })?,
                })
            })
            .collect()
    })
}

const COMMAND_COLUMNS: &str = "id, host_id, service, action, signal, issued_by::text, \
    (extract(epoch FROM issued_at) * 1000)::float8, (extract(epoch FROM expires_at) * 1000)::float8, \
    dedup_key, claimed_by, (extract(epoch FROM finished_at) * 1000)::float8, ok, \
    coalesce(outcome, CASE WHEN expires_at <= now() AND claimed_at IS NULL THEN 'expired' \
        WHEN claimed_at IS NOT NULL THEN 'running' ELSE 'pending' END), message";

fn command_view(r: &tokio_postgres::Row) -> CommandView {
    CommandView {
        id: r.get(0),
        host: r.get(1),
        service: r.get(2),
        action: r.get(3),
        signal: r.get(4),
        issued_by: r.get(5),
        issued_at: r.get::<_, f64>(6) as i64,
        expires_at: r.get::<_, f64>(7) as i64,
        dedup_key: r.get(8),
        claimed_by: r.get(9),
        finished_at: ms(r.get(10)),
        ok: r.get(11),
        outcome: r.get(12),
        message: r.get(13),
    }
}

/// `tend fleet history`: the last `limit` commands (of `service`), oldest first.
pub fn history(
    settings: &Settings,
    service: Option<&str>,
    limit: i64,
) -> Result<Vec<CommandView>, Error> {
    with_client(settings, async |c, st| {
        schema::check(c, &st.schema).await?;
        let s = &st.schema;
        let rows = c
            .query(
                &format!(
                    "SELECT * FROM (SELECT {COMMAND_COLUMNS} FROM {s}.commands \
                     WHERE $1::text IS NULL OR service = $1 ORDER BY id DESC LIMIT $2) t \
                     ORDER BY id"
                ),
                &[&service, &limit],
            )
            .await
            .map_err(|e| fail("reading fleet history", &e))?;
        Ok(rows.iter().map(command_view).collect())
    })
}

/// What to issue.
pub struct Order<'a> {
    pub action: Action,
    pub service: &'a str,
    /// Explicit target hosts; empty: every live host that defines the service.
    pub hosts: &'a [String],
    pub expires: Duration,
    pub dedup: Option<&'a str>,
    /// How long a finished command answers a repeat of its dedup key.
    pub dedup_keep: Duration,
    /// Wait this long for every result, calling `on_result` as each arrives.
    pub wait: Option<Duration>,
}

/// What issuing (and waiting) came to.
pub struct Outcome {
    pub issued: Vec<Issued>,
    /// Hosts that define the service but are stale: not sent anything.
    pub skipped_stale: Vec<String>,
    /// Results in arrival order (with `--wait`).
    pub results: Vec<CommandView>,
}

/// What [`issue`] reports as it goes.
pub enum Progress<'a> {
    /// The commands are stored (or answered by their dedup key): printed at once, so a
    /// script knows the ids even if the wait is cut short.
    Issued(&'a [Issued]),
    /// One result, as it arrives.
    Result(&'a CommandView),
    /// The connection was lost while waiting; reconnecting (the wait goes on).
    Reconnecting(&'a str),
}

/// How soon `--wait` looks for results again after finding new ones (and first).
const RESULT_POLL_FIRST: Duration = Duration::from_millis(10);
/// The longest pause between two looks while no result comes.
const RESULT_POLL_MAX: Duration = Duration::from_millis(250);

/// Issues one command per target host (in one transaction: all or none), then with
/// `wait` reports each result as it arrives: it reads the finished ones every
/// [`RESULT_POLL_FIRST`] while results come in, backing off to [`RESULT_POLL_MAX`] while
/// none do (results are polled, not notified: see the schema's third migration). A
/// connection lost while waiting is opened again (with the reconnect backoff of the
/// daemons) until the wait is over: results that arrived meanwhile are read on
/// reconnect.
pub fn issue(
    settings: &Settings,
    order: &Order<'_>,
    on: &mut dyn FnMut(Progress<'_>),
) -> Result<Outcome, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Postgres {
            message: format!("runtime: {e}"),
        })?;
    rt.block_on(async {
        let tls = connect::tls(settings.ca_file.as_deref()).map_err(Error::from)?;
        let s = &settings.schema;
        let started = Instant::now();
        let mut session = Some(listening(settings, &tls).await?);
        let (client, _, _) = session.as_mut().expect("just opened");
        schema::check(client, s).await?;
        let (targets, skipped_stale) = targets(client, s, order).await?;
        let issued = insert(client, s, order, &targets).await?;
        on(Progress::Issued(&issued));
        let mut results = Vec::new();
        let deadline = started + order.wait.unwrap_or_default();
        let mut open: BTreeMap<i64, &Issued> = issued.iter().map(|i| (i.id, i)).collect();
        let ids: Vec<i64> = open.keys().copied().collect();
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM {s}.commands \
             WHERE id = ANY($1) AND finished_at IS NOT NULL ORDER BY finished_at, id"
        );
        let mut failures = 0u32;
        let mut poll = RESULT_POLL_FIRST;
        while order.wait.is_some() && !open.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some((client, _, nrx)) = session.as_mut() else {
                match tokio::time::timeout(left, listening(settings, &tls)).await {
                    Ok(Ok(c)) => {
                        failures = 0;
                        session = Some(c);
                    }
                    Ok(Err(_)) | Err(_) => {
                        let pause = crate::fleet::backoff(failures, crate::pg::jitter());
                        failures = failures.saturating_add(1);
                        tokio::time::sleep(pause.min(left)).await;
                    }
                }
                continue;
            };
            let rows = match client.query(&sql, &[&ids]).await {
                Ok(rows) => rows,
                Err(e) if lost(client, &e) => {
                    on(Progress::Reconnecting(&connect::describe(&e)));
                    session = None;
                    continue;
                }
                Err(e) => return Err(fail("reading results", &e)),
            };
            let mut new = false;
            for r in &rows {
                let v = command_view(r);
                if open.remove(&v.id).is_some() {
                    on(Progress::Result(&v));
                    results.push(v);
                    new = true;
                }
            }
            if open.is_empty() {
                break;
            }
            // Soon again while results arrive, less often while none do.
            poll = if new {
                RESULT_POLL_FIRST
            } else {
                (poll * 2).min(RESULT_POLL_MAX)
            };
            let left = deadline.saturating_duration_since(Instant::now());
            // Nothing is notified any more; the channel says when the connection ends.
            match tokio::time::timeout(left.min(poll), nrx.recv()).await {
                Ok(Some(Err(e))) => {
                    on(Progress::Reconnecting(&e));
                    session = None;
                    continue;
                }
                Ok(None) => {
                    on(Progress::Reconnecting("connection closed"));
                    session = None;
                    continue;
                }
                _ => {}
            }
        }
        if let Some((client, driver, _)) = session {
            drop(client);
            let _ = driver.await;
        }
        Ok(Outcome {
            issued,
            skipped_stale,
            results,
        })
    })
}

type Session = (
    Client,
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<Result<String, String>>,
);

/// One connection, with a task driving it that says when it ends.
async fn listening(
    settings: &Settings,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
) -> Result<Session, Error> {
    let (client, connection) = connect::connect(&settings.url, tls)
        .await
        .map_err(Error::from)?;
    let (ntx, nrx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(drive(connection, ntx));
    Ok((client, driver, nrx))
}

/// Whether a failed statement means the connection (or the server) went away, rather
/// than that the statement was wrong.
fn lost(client: &Client, e: &tokio_postgres::Error) -> bool {
    client.is_closed()
        || e.code().is_none_or(|c| {
            // 08: connection exception; 57: operator intervention (shutdown, terminate).
            c.code().starts_with("08") || c.code().starts_with("57")
        })
}

/// The hosts to send to: the ones named (each must have joined the fleet once), else
/// every live host that defines the service.
async fn targets(
    client: &Client,
    s: &str,
    order: &Order<'_>,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let rows = client
        .query(
            &format!(
                "SELECT h.id, h.last_seen < now() - 3 * h.heartbeat_ms * interval '1 millisecond', \
                     EXISTS (SELECT 1 FROM {s}.services v WHERE v.host_id = h.id AND v.name = $1) \
                 FROM {s}.hosts h ORDER BY h.id"
            ),
            &[&order.service],
        )
        .await
        .map_err(|e| fail("reading fleet hosts", &e))?;
    let hosts: BTreeMap<String, (bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    if !order.hosts.is_empty() {
        let named: BTreeSet<&String> = order.hosts.iter().collect();
        for h in &named {
            if !hosts.contains_key(*h) {
                return Err(Error::Invalid {
                    what: "fleet",
                    message: format!("unknown host {h}: it never joined this fleet"),
                });
            }
        }
        return Ok((named.into_iter().cloned().collect(), Vec::new()));
    }
    let mut live = Vec::new();
    let mut stale = Vec::new();
    for (h, (is_stale, defines)) in hosts {
        match (defines, is_stale) {
            (true, false) => live.push(h),
            (true, true) => stale.push(h),
            _ => {}
        }
    }
    if live.is_empty() {
        return Err(Error::UnknownService(format!(
            "{} (no live host of the fleet defines it{})",
            order.service,
            if stale.is_empty() {
                String::new()
            } else {
                format!("; stale: {}", stale.join(", "))
            }
        )));
    }
    Ok((live, stale))
}

/// What a dedup key's latest command for a host says about a repeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyHolder {
    /// No command holds the key: issue a new one.
    Free,
    /// The key's command expired before its host began it, or finished longer than the
    /// retention window ago: issue a new one (naming the expired one).
    Freed { expired: Option<i64> },
    /// The key's command is pending or running, or finished within the window: it is
    /// the answer.
    Held(i64),
}

/// Decides from the key's latest command for a host: `outcome` as `fleet history` shows
/// it (`expired` also for a pending one past its expiry that no host began),
/// `age_ms` since it finished (`None`: unfinished).
pub fn key_holder(latest: Option<(i64, &str, Option<i64>)>, keep: Duration) -> KeyHolder {
    match latest {
        None => KeyHolder::Free,
        Some((id, "expired", _)) => KeyHolder::Freed { expired: Some(id) },
        Some((_, _, Some(age))) if age >= keep.as_millis().min(i64::MAX as u128) as i64 => {
            KeyHolder::Freed { expired: None }
        }
        Some((id, _, _)) => KeyHolder::Held(id),
    }
}

async fn insert(
    client: &mut Client,
    s: &str,
    order: &Order<'_>,
    targets: &[String],
) -> Result<Vec<Issued>, Error> {
    let what = "issuing fleet commands";
    let mut attempt = 0;
    loop {
        match insert_once(client, s, order, targets).await {
            Ok(v) => return Ok(v),
            Err(e) => super::again(what, &mut attempt, e).await?,
        }
    }
}

/// One transaction: with a dedup key, lock each (host, key) (an advisory lock: issues
/// with the same key for the same host run one after the other, whoever issues them),
/// read the key's latest command per host, answer with it or insert a new one.
async fn insert_once(
    client: &mut Client,
    s: &str,
    order: &Order<'_>,
    targets: &[String],
) -> Result<Vec<Issued>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let mut answered: BTreeMap<String, Issued> = BTreeMap::new();
    let mut fresh: Vec<String> = targets.to_vec();
    let mut expired_before: BTreeMap<String, i64> = BTreeMap::new();
    if let Some(key) = order.dedup {
        tx.query(
            "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended( \
                 $1 || '/' || h || '/' || $2, 0)) \
             FROM pg_catalog.unnest($3::text[]) AS h ORDER BY h",
            &[&s, &key, &targets],
        )
        .await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT DISTINCT ON (c.host_id) c.host_id, c.id, \
                         coalesce(c.outcome, CASE WHEN c.expires_at <= now() \
                             AND c.claimed_at IS NULL THEN 'expired' \
                             WHEN c.claimed_at IS NOT NULL THEN 'running' ELSE 'pending' END), \
                         (extract(epoch FROM now() - c.finished_at) * 1000)::float8, c.message \
                     FROM {s}.commands c WHERE c.dedup_key = $1 AND c.host_id = ANY($2) \
                     ORDER BY c.host_id, c.id DESC"
                ),
                &[&key, &targets],
            )
            .await?;
        for r in &rows {
            let host: String = r.get(0);
            let id: i64 = r.get(1);
            let outcome: String = r.get(2);
            let age: Option<f64> = r.get(3);
            match key_holder(
                Some((id, &outcome, age.map(|a| a as i64))),
                order.dedup_keep,
            ) {
                KeyHolder::Held(id) => {
                    fresh.retain(|h| *h != host);
                    answered.insert(
                        host.clone(),
                        Issued {
                            host,
                            id,
                            deduplicated: true,
                            outcome: Some(outcome),
                            message: r.get(4),
                            expired_before: None,
                        },
                    );
                }
                KeyHolder::Freed { expired: Some(old) } => {
                    expired_before.insert(host, old);
                }
                KeyHolder::Freed { expired: None } | KeyHolder::Free => {}
            }
        }
    }
    if !fresh.is_empty() {
        let sql = format!(
            "INSERT INTO {s}.commands (host_id, service, action, signal, expires_at, dedup_key) \
             SELECT h, $2, $3, $4, now() + $5::bigint * interval '1 millisecond', $6 \
             FROM unnest($1::text[]) AS h RETURNING host_id, id"
        );
        let expires = order.expires.as_millis().min(i64::MAX as u128) as i64;
        let action = order.action.name();
        let signal = order.action.signal();
        for r in tx
            .query(
                &sql,
                &[
                    &fresh,
                    &order.service,
                    &action,
                    &signal,
                    &expires,
                    &order.dedup,
                ],
            )
            .await?
        {
            let host: String = r.get(0);
            answered.insert(
                host.clone(),
                Issued {
                    expired_before: expired_before.get(&host).copied(),
                    host,
                    id: r.get(1),
                    deduplicated: false,
                    outcome: None,
                    message: None,
                },
            );
        }
    }
    tx.commit().await?;
    Ok(answered.into_values().collect())
}

async fn drive(
    mut connection: connect::Connection,
    out: tokio::sync::mpsc::UnboundedSender<Result<String, String>>,
) {
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                let _ = out.send(Ok(n.payload().to_string()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                let _ = out.send(Err(connect::describe(&e)));
                return;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_dedup_key_answers() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(key_holder(None, day), KeyHolder::Free);
        assert_eq!(
            key_holder(Some((4, "pending", None)), day),
            KeyHolder::Held(4)
        );
        assert_eq!(
            key_holder(Some((4, "running", None)), day),
            KeyHolder::Held(4)
        );
        assert_eq!(
            key_holder(Some((4, "done", Some(1000))), day),
            KeyHolder::Held(4)
        );
        assert_eq!(
            key_holder(Some((4, "failed", Some(1000))), day),
            KeyHolder::Held(4)
        );
        assert_eq!(
            key_holder(Some((4, "done", Some(86_400_000))), day),
            KeyHolder::Freed { expired: None }
        );
        assert_eq!(
            key_holder(Some((4, "expired", None)), day),
            KeyHolder::Freed { expired: Some(4) }
        );
        assert_eq!(
            key_holder(Some((4, "expired", Some(5))), day),
            KeyHolder::Freed { expired: Some(4) }
        );
    }
}
