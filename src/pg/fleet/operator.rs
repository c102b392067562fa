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
    pub since: Option<f64>,
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
    /// The dedup key was already pending for this host: no new command, this is the
    /// pending one.
    pub deduplicated: bool,
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
    coalesce(outcome, CASE WHEN expires_at <= now() THEN 'expired' \
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

/// How soon `--wait` looks for results again after finding new ones (and first).
const RESULT_POLL_FIRST: Duration = Duration::from_millis(10);
/// The longest pause between two looks while no result comes.
const RESULT_POLL_MAX: Duration = Duration::from_millis(250);

/// Issues one command per target host (in one statement: all or none), then with
/// `wait` reports each result as it arrives: it reads the finished ones every
/// [`RESULT_POLL_FIRST`] while results come in, backing off to [`RESULT_POLL_MAX`] while
/// none do.
pub fn issue(
    settings: &Settings,
    order: &Order<'_>,
    on_result: &mut dyn FnMut(&CommandView),
) -> Result<Outcome, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Postgres {
            message: format!("runtime: {e}"),
        })?;
    rt.block_on(async {
        let tls = connect::tls(settings.ca_file.as_deref()).map_err(Error::from)?;
        let (client, connection) = connect::connect(&settings.url, &tls)
            .await
            .map_err(Error::from)?;
        let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(connection, ntx));
        let s = &settings.schema;
        schema::check(&client, s).await?;
        let (targets, skipped_stale) = targets(&client, s, order).await?;
        let issued = insert(&client, s, order, &targets).await?;
        let mut results = Vec::new();
        if let Some(wait) = order.wait {
            let deadline = Instant::now() + wait;
            let mut open: BTreeMap<i64, &Issued> = issued.iter().map(|i| (i.id, i)).collect();
            let sql = format!(
                "SELECT {COMMAND_COLUMNS} FROM {s}.commands \
                 WHERE id = ANY($1) AND finished_at IS NOT NULL ORDER BY finished_at, id"
            );
            let mut poll = RESULT_POLL_FIRST;
            while !open.is_empty() {
                let ids: Vec<i64> = open.keys().copied().collect();
                let rows = client
                    .query(&sql, &[&ids])
                    .await
                    .map_err(|e| fail("reading results", &e))?;
                let mut new = false;
                for r in &rows {
                    let v = command_view(r);
                    if open.remove(&v.id).is_some() {
                        on_result(&v);
                        results.push(v);
                        new = true;
                    }
                }
                // Soon again while results arrive, less often while none do.
                poll = if new {
                    RESULT_POLL_FIRST
                } else {
                    (poll * 2).min(RESULT_POLL_MAX)
                };
                if open.is_empty() {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Results are polled, not notified (see the schema's second migration);
                // a lost connection ends the wait at once.
                match tokio::time::timeout(left.min(poll), nrx.recv()).await {
                    Ok(Some(Err(e))) => return Err(Error::Postgres { message: e }),
                    Ok(None) => {
                        return Err(Error::Postgres {
                            message: "connection closed while waiting".into(),
                        })
                    }
                    _ => {}
                }
            }
        }
        drop(client);
        let _ = driver.await;
        Ok(Outcome {
            issued,
            skipped_stale,
            results,
        })
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

async fn insert(
    client: &Client,
    s: &str,
    order: &Order<'_>,
    targets: &[String],
) -> Result<Vec<Issued>, Error> {
    let sql = format!(
        "WITH new AS ( \
             INSERT INTO {s}.commands (host_id, service, action, signal, expires_at, dedup_key) \
             SELECT h, $2, $3, $4, now() + $5::bigint * interval '1 millisecond', $6 \
             FROM unnest($1::text[]) AS h \
             ON CONFLICT (host_id, dedup_key) WHERE finished_at IS NULL AND dedup_key IS NOT NULL \
             DO NOTHING RETURNING id, host_id) \
         SELECT host_id, id, false FROM new \
         UNION ALL \
         SELECT c.host_id, c.id, true FROM {s}.commands c \
         WHERE $6::text IS NOT NULL AND c.dedup_key = $6 AND c.finished_at IS NULL \
           AND c.host_id = ANY($1) AND c.host_id NOT IN (SELECT host_id FROM new)"
    );
    let expires = order.expires.as_millis().min(i64::MAX as u128) as i64;
    let action = order.action.name();
    let signal = order.action.signal();
    // A concurrent issue with the same dedup key that commits while this statement runs
    // makes its INSERT do nothing, yet its row is not in this statement's snapshot: then
    // a host is in neither half of the answer, and the statement is run again (a new
    // snapshot sees that row), as a conflict is.
    let mut attempt = 0;
    let rows = loop {
        let rows = retry("issuing fleet commands", || async {
            client
                .query(
                    &sql,
                    &[
                        &targets,
                        &order.service,
                        &action,
                        &signal,
                        &expires,
                        &order.dedup,
                    ],
                )
                .await
        })
        .await?;
        let answered: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
        if targets.iter().all(|t| answered.contains(t)) {
            break rows;
        }
        if attempt >= super::RETRIES {
            return Err(Error::Postgres {
                message: format!(
                    "issuing fleet commands: dedup key {} still racing after {} attempts",
                    order.dedup.unwrap_or(""),
                    super::RETRIES + 1
                ),
            });
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
    };
    let mut issued: Vec<Issued> = rows
        .iter()
        .map(|r| Issued {
            host: r.get(0),
            id: r.get(1),
            deduplicated: r.get(2),
        })
        .collect();
    issued.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(issued)
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
