//! The daemon's side of the fleet. It shares the daemon's one PostgreSQL connection
//! with the quick mode (see [`crate::pg::listener`], which owns the connection and hands
//! this module the fleet's notifications); two threads own this home's SQLite database
//! (one carries out commands, one reads service states), so the async loop never waits
//! on SQLite and the event loop never waits on PostgreSQL.
//!
//! On every connect: LISTEN on this host's own wake-up channel first, then register the
//! host, report results recorded locally but not yet written back, and claim everything
//! pending. After that a wake-up (a NOTIFY with a command id, sent only to the host the
//! command is for) or the sweep (`fleet.sweep_every`, default [`DEFAULT_SWEEP`], the
//! backstop for a missed wake-up) claims again. Wake-ups are coalesced: claims they
//! cause start at most once per [`WAKE_SPACING`], so a flood of NOTIFYs on the channel
//! (anyone who can connect may send them) costs at most one claim per
//! [`WAKE_SPACING`], however many arrive.
//!
//! A claim takes the oldest pending command of this host whose (host, service) has no
//! older unfinished command, `FOR UPDATE SKIP LOCKED`, with a lease ([`LEASE`]); one
//! claimed by a daemon of this same home is taken back at once (an earlier daemon is
//! dead: we hold its lock; an earlier session of ours left it behind), since this home's
//! own record of it ([`crate::fleet::carry_out`]) keeps it from acting twice; one of
//! another home only when its lease ran out. Commands run one at a time, in id order.
//!
//! An idle host costs the server one connection and, per [`DEFAULT_HEARTBEAT`], one
//! heartbeat (which is also the connection's liveness check), plus one claim attempt and
//! one expiry pass per sweep: about 0.17 transactions/s with the defaults.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tracing::{debug, error, info, warn};

use super::{retry, schema, Conn, Watch};
use crate::api::PgStatus;
use crate::error::Error;
use crate::fleet::{self, Action, Command, Done};
use crate::home::Home;
use crate::pg::{Hooks, Settings};
use crate::record::{now_ms, Taken};
use crate::supervisor::{Context, Supervisor};

/// The heartbeat when `fleet.heartbeat_every` is unset; `fleet status` calls a host
/// stale after three missed beats (each host writes its own period).
pub use crate::config::DEFAULT_FLEET_HEARTBEAT as DEFAULT_HEARTBEAT;
/// The sweep when `fleet.sweep_every` is unset: claim what a missed wake-up left, mark
/// overdue commands expired. Claims skip expired commands (and they hold back no later
/// command) from the moment they expire; marking them is bookkeeping.
pub use crate::config::DEFAULT_FLEET_SWEEP as DEFAULT_SWEEP;
/// Claims caused by wake-ups start at most this often; wake-ups meanwhile are merged
/// into one.
pub const WAKE_SPACING: Duration = Duration::from_millis(100);
/// How often the services' states are read locally (SQLite); they are written to the
/// server only when they changed.
const STATE_CHECK: Duration = Duration::from_secs(1);
/// A claim not finished or renewed within this long may be taken by another daemon of
/// the host; a running command's lease is renewed every third of it.
pub const LEASE: Duration = Duration::from_secs(60);
/// Any fleet statement that takes longer than this ends the session (reconnect). The
/// heartbeat is the connection's liveness check: a half-open connection is noticed
/// within a heartbeat plus this (sooner by TCP keepalives and the user timeout, see
/// [`crate::pg::connect`]).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to look again when the database has no fleet schema (yet); the look is
/// also what keeps the quick mode's connection checked meanwhile.
const NO_FLEET_RETRY: Duration = Duration::from_secs(10);

/// What the loop asks of a thread that owns this home's database.
enum Req {
    Run(String, Command, oneshot::Sender<crate::Result<Done>>),
    States(oneshot::Sender<crate::Result<Vec<ServiceState>>>),
    Unreported(String, oneshot::Sender<crate::Result<Vec<Taken>>>),
    Reported(String, Vec<i64>),
}

/// One service's state as `fleet status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceState {
    name: String,
    state: String,
    pid: Option<i32>,
    since_ms: Option<i64>,
}

/// A thread owning a [`Supervisor`] of this home, asked over a channel.
#[derive(Clone)]
struct Local(mpsc::Sender<Req>);

impl Local {
    fn start(name: &str, home: Home, ctx: Context, hooks: Option<Hooks>) -> crate::Result<Local> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || serve(rx, home, ctx, hooks))
            .map_err(|e| Error::Daemon {
                message: format!("cannot start {name}: {e}"),
            })?;
        Ok(Local(tx))
    }

    async fn ask<T>(&self, req: impl FnOnce(oneshot::Sender<T>) -> Req) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.0.send(req(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

fn gone() -> Error {
    Error::Daemon {
        message: "the fleet executor is gone".into(),
    }
}

fn serve(rx: mpsc::Receiver<Req>, home: Home, ctx: Context, hooks: Option<Hooks>) {
    let mut sup: Option<Supervisor> = None;
    for req in rx {
        if sup.is_none() {
            match Supervisor::open_with(home.clone(), ctx.clone()) {
                Ok(s) => sup = Some(s),
                Err(e) => error!(error = %e, "fleet: cannot open the database"),
            }
        }
        let Some(s) = sup.as_mut() else {
            // Dropping the request tells the asker the executor could not answer.
            continue;
        };
        let failed = match req {
            Req::Run(fleet_id, cmd, reply) => {
                let ticket = hooks.as_ref().map(|h| (h.admit)());
                let result = match ticket {
                    Some(None) => Err(Error::Daemon {
                        message: "the daemon is shutting down".into(),
                    }),
                    _ => fleet::carry_out(s, &fleet_id, &cmd),
                };
                drop(ticket);
                if let Some(h) = &hooks {
                    (h.changed)();
                }
                let failed = result.is_err();
                let _ = reply.send(result);
                failed
            }
            Req::States(reply) => {
                let r = s.list().map(|list| {
                    list.into_iter()
                        .map(|st| {
                            let (pid, since_ms) = match st.state {
                                crate::state::State::Running { pid, since } => {
                                    (Some(pid), Some(since))
                                }
                                crate::state::State::Stopping { pid } => (Some(pid), None),
                                crate::state::State::Unknown { pid, .. } => (Some(pid), None),
                                _ => (None, None),
                            };
                            ServiceState {
                                name: st.service.name.clone(),
                                state: st.state.label().to_string(),
                                pid,
                                since_ms,
                            }
                        })
                        .collect()
                });
                let failed = r.is_err();
                let _ = reply.send(r);
                failed
            }
            Req::Unreported(fleet_id, reply) => {
                let r = s.fleet_unreported(&fleet_id);
                let failed = r.is_err();
                let _ = reply.send(r);
                failed
            }
            Req::Reported(fleet_id, ids) => s.fleet_reported(&fleet_id, &ids).is_err(),
        };
        if failed {
            // Reopen next time: the error may have been the connection's.
            sup = None;
        }
    }
}

/// Who claims: this host, this home, this daemon. A claim whose `claimed_by` starts
/// with the same host and home but another pid was made by a daemon of this home that
/// is dead now.
struct Me {
    settings: Settings,
    claimer: String,
    home_prefix: String,
    boot_id: String,
    started_at_ms: i64,
    /// Where the counters of `daemon status` live.
    status: Arc<Mutex<PgStatus>>,
    /// What `daemon status` and the quick mode learn of the fleet.
    watch: Arc<Watch>,
}

impl Me {
    fn count(&self, f: impl FnOnce(&mut PgStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The daemon's fleet membership: the threads that own this home's database, and who
/// it claims as. It runs on the connection the listener lends it ([`Host::attach`]).
pub struct Host {
    me: Arc<Me>,
    runner: Local,
    reader: Local,
}

impl Host {
    /// Starts the threads that own this home's database for the fleet of
    /// `settings.schema`; nothing touches PostgreSQL until [`Host::attach`].
    pub fn start(
        settings: Settings,
        home: Home,
        ctx: Context,
        hooks: Hooks,
        status: Arc<Mutex<PgStatus>>,
        watch: Arc<Watch>,
    ) -> crate::Result<Host> {
        let boot_id = crate::process::identity::boot_id().unwrap_or_default();
        // The home, not its path: two homes with the same path on different machines
        // are told apart by the host id in front.
        let home_tag = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            home.root().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        let home_prefix = format!("{}/{home_tag}/", settings.host_id);
        let me = Me {
            claimer: format!("{home_prefix}{}", std::process::id()),
            home_prefix,
            settings,
            boot_id,
            started_at_ms: now_ms(),
            status,
            watch,
        };
        let runner = Local::start("tend-fleet-exec", home.clone(), ctx.clone(), Some(hooks))?;
        // The reader only looks: exits it sees are left to the daemon's worker, which
        // records them with their status, kills leftovers and applies the restart policy.
        let look = Context {
            daemon_watching: true,
            board: None,
            containment: ctx.containment.clone(),
            files: ctx.files,
            ..Context::default()
        };
        let reader = Local::start("tend-fleet-read", home, look, None)?;
        Ok(Host {
            me: Arc::new(me),
            runner,
            reader,
        })
    }

    /// Runs the fleet on `conn` until the connection must be given up; returns why.
    /// `wakes` carries the payloads of the notifications that are not the quick mode's.
    /// While the database has no fleet schema this looks again every
    /// [`NO_FLEET_RETRY`], and that look is what checks the connection meanwhile.
    pub async fn attach(
        &self,
        conn: Arc<Conn>,
        mut wakes: tokio::sync::mpsc::UnboundedReceiver<String>,
    ) -> String {
        let mut last_no_fleet: Option<String> = None;
        loop {
            match self.session(&conn, &mut wakes).await {
                End::Lost(why) => {
                    self.me.watch.enter("reconnecting", Some(why.clone()));
                    return why;
                }
                End::NoFleet(why) => {
                    self.me.watch.enter("no fleet", Some(why.clone()));
                    if last_no_fleet.as_deref() != Some(why.as_str()) {
                        info!("fleet: not joining: {why}");
                        last_no_fleet = Some(why);
                    }
                }
            }
            let again = tokio::time::sleep(NO_FLEET_RETRY);
            tokio::pin!(again);
            loop {
                tokio::select! {
                    _ = &mut again => break,
                    w = wakes.recv() => if w.is_none() {
                        return "connection closed".into();
                    },
                }
            }
        }
    }

    async fn session(
        &self,
        conn: &Arc<Conn>,
        wakes: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    ) -> End {
        let me = &self.me;
        let (runner, reader) = (&self.runner, &self.reader);
        let s = &me.settings.schema;
        let fleet_id = match tokio::time::timeout(QUERY_TIMEOUT, schema::check(conn, s)).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) if conn.is_closed() => return End::Lost(e.to_string()),
            Ok(Err(e)) => return End::NoFleet(e.to_string()),
            Err(_) => return End::Lost("reading the fleet schema timed out".into()),
        };
        // LISTEN before reading anything: a command inserted from now on wakes us, one
        // inserted before is found by the claims that follow. The channel is this
        // host's alone (the schema's function names it), so other hosts' commands
        // never wake this daemon.
        let listen = async {
            let channel: String = conn
                .query_one(
                    &format!("SELECT {s}.wake_channel($1)"),
                    &[&me.settings.host_id],
                )
                .await
                .map_err(|e| super::fail("naming the wake-up channel", &e))?
                .get(0);
            // A host's claims and reports need not wait for the server's WAL flush:
            // one lost in a server crash is found unfinished and claimed again by this
            // home, whose own record (committed before acting) keeps the command from
            // acting twice and reports its result again. This saves two fsyncs per
            // command. (The quick mode writes nothing.)
            conn.batch_execute(&format!(
                "LISTEN {}; SET synchronous_commit = off",
                schema::ident(&channel)
            ))
            .await
            .map_err(|e| super::fail("LISTEN", &e))
        };
        if let Err(e) = timed("LISTEN", listen).await {
            return End::Lost(e);
        }
        if let Err(e) = timed("heartbeat", heartbeat(me, conn)).await {
            return End::Lost(e);
        }
        if let Err(e) = timed("reporting", report_unreported(me, conn, reader, &fleet_id)).await {
            return End::Lost(e);
        }
        if let Err(e) = timed("expiring", expire(me, conn)).await {
            return End::Lost(e);
        }
        info!(schema = %s, host = %me.settings.host_id, url = %me.settings.display_url(), "joined the fleet");
        me.watch.enter("joined", None);
        let wake = Arc::new(Notify::new());
        wake.notify_one();
        let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
        let _worker = AbortOnDrop(tokio::spawn(work(
            me.clone(),
            conn.clone(),
            runner.clone(),
            reader.clone(),
            fleet_id.clone(),
            wake.clone(),
            etx,
        )));
        let mut sweep = tokio::time::interval(me.settings.sweep_every);
        let mut beat = tokio::time::interval(me.settings.heartbeat_every);
        let mut states = tokio::time::interval(STATE_CHECK);
        for t in [&mut sweep, &mut beat, &mut states] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t.tick().await;
        }
        let mut pushed: Option<Vec<ServiceState>> = None;
        loop {
            tokio::select! {
                w = wakes.recv() => match w {
                    Some(payload) => {
                        debug!(%payload, "fleet wake-up");
                        me.count(|st| st.fleet_wakeups += 1);
                        wake.notify_one();
                    }
                    None => return End::Lost("connection closed".into()),
                },
                e = erx.recv() => return End::Lost(e.unwrap_or_else(|| "the fleet worker ended".into())),
                _ = sweep.tick() => {
                    if let Err(e) = timed("expiring", expire(me, conn)).await {
                        return End::Lost(e);
                    }
                    me.count(|st| st.fleet_sweeps += 1);
                    me.watch.swept();
                    wake.notify_one();
                }
                _ = states.tick() => {
                    match timed("pushing states", push_states(me, conn, reader, pushed.as_deref())).await {
                        Ok(Some(now)) => pushed = Some(now),
                        Ok(None) => {}
                        Err(e) => return End::Lost(e),
                    }
                }
                _ = beat.tick() => {
                    if let Err(e) = timed("heartbeat", heartbeat(me, conn)).await {
                        return End::Lost(e);
                    }
                }
            }
        }
    }
}

/// Why a session ended.
enum End {
    /// The connection failed: reconnect with backoff.
    Lost(String),
    /// The database has no (usable) fleet schema: look again later.
    NoFleet(String),
}

/// Aborts a task when the session ends, whatever the reason.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(QUERY_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("{what}: no answer within {QUERY_TIMEOUT:?}")),
    }
}

/// Claims and carries out commands until none is pending; again at every wake-up, but
/// never sooner than [`WAKE_SPACING`] after the last round began: wake-ups that arrive
/// meanwhile (however many) are one stored permit of the [`Notify`], so they cost one
/// round between them.
async fn work(
    me: Arc<Me>,
    conn: Arc<Conn>,
    runner: Local,
    reader: Local,
    fleet_id: String,
    wake: Arc<Notify>,
    errors: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut last: Option<Instant> = None;
    loop {
        wake.notified().await;
        if let Some(at) = last {
            tokio::time::sleep_until((at + WAKE_SPACING).into()).await;
        }
        last = Some(Instant::now());
        if let Err(e) = drain(&me, &conn, &runner, &reader, &fleet_id).await {
            let _ = errors.send(e);
            return;
        }
    }
}

async fn drain(
    me: &Me,
    c: &Conn,
    runner: &Local,
    reader: &Local,
    fleet_id: &str,
) -> Result<(), String> {
    loop {
        let Some(cmd) = timed("claiming", claim(me, c)).await? else {
            return Ok(());
        };
        let id = cmd.id;
        debug!(id, service = %cmd.service, "fleet: claimed");
        // Not bounded by a timeout: a stop may wait for its stop timeout. Meanwhile the
        // lease is renewed, so no other daemon of this host takes the command over.
        let run = runner.ask(|tx| Req::Run(fleet_id.to_string(), cmd.clone(), tx));
        tokio::pin!(run);
        let mut renew = tokio::time::interval(LEASE / 3);
        renew.tick().await;
        let done = loop {
            tokio::select! {
                done = &mut run => break done,
                _ = renew.tick() => {
                    if let Err(e) = timed("renewing a lease", renew_lease(me, c, id)).await {
                        warn!(id, error = %e, "fleet: cannot renew the lease of a running command");
                    }
                }
            }
        };
        let done = done
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("fleet command {id}: {e}"))?;
        crate::metrics::count(if done.ok {
            &crate::metrics::COUNTERS.fleet_done
        } else {
            &crate::metrics::COUNTERS.fleet_failed
        });
        info!(id, service = %cmd.service, ok = done.ok, message = %done.message, "fleet command");
        timed("reporting", finish(me, c, id, &done)).await?;
        let _ = reader.0.send(Req::Reported(fleet_id.to_string(), vec![id]));
    }
}

async fn claim(me: &Me, c: &Conn) -> Result<Option<Command>, Error> {
    let s = &me.settings.schema;
    let sql = format!(
        "UPDATE {s}.commands c SET claimed_at = now(), claimed_by = $2, \
             lease_until = now() + $3::bigint * interval '1 millisecond' \
         WHERE c.id = ( \
             SELECT p.id FROM {s}.commands p \
             WHERE p.host_id = $1 AND p.finished_at IS NULL \
               AND (p.expires_at > now() OR p.claimed_by LIKE $4) \
               AND (p.claimed_at IS NULL OR p.lease_until < now() \
                    OR p.claimed_by LIKE $4) \
               AND NOT EXISTS (SELECT 1 FROM {s}.commands q \
                   WHERE q.host_id = p.host_id AND q.service = p.service \
                     AND q.finished_at IS NULL AND q.id < p.id \
                     AND (q.expires_at > now() OR q.claimed_at IS NOT NULL)) \
             ORDER BY p.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING c.id, c.service, c.action, c.signal, c.issued_by::text, \
             c.expires_at <= now()"
    );
    let lease = LEASE.as_millis() as i64;
    let like = format!("{}%", like_escape(&me.home_prefix));
    me.count(|st| st.fleet_claims += 1);
    let row = retry("claiming a fleet command", || async {
        c.query_opt(
            &c.prepared(&sql).await?,
            &[&me.settings.host_id, &me.claimer, &lease, &like],
        )
        .await
    })
    .await?;
    Ok(row.map(|r| Command {
        id: r.get(0),
        service: r.get(1),
        action: Action::from_row(r.get(2), r.get(3)),
        issued_by: r.get(4),
        late: r.get(5),
    }))
}

async fn renew_lease(me: &Me, c: &Conn, id: i64) -> Result<(), Error> {
    let s = &me.settings.schema;
    let sql = format!(
        "UPDATE {s}.commands SET lease_until = now() + $3::bigint * interval '1 millisecond' \
         WHERE id = $1 AND claimed_by = $2 AND finished_at IS NULL"
    );
    let lease = LEASE.as_millis() as i64;
    retry("renewing a lease", || async {
        c.execute(&c.prepared(&sql).await?, &[&id, &me.claimer, &lease])
            .await
    })
    .await
    .map(drop)
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

async fn finish(me: &Me, c: &Conn, id: i64, done: &Done) -> Result<(), Error> {
    let s = &me.settings.schema;
    let sql = format!(
        "UPDATE {s}.commands SET finished_at = now(), ok = $2, \
             outcome = CASE WHEN $4 THEN 'expired' WHEN $2 THEN 'done' ELSE 'failed' END, \
             message = $3 \
         WHERE id = $1 AND finished_at IS NULL"
    );
    let message = plain(&done.message);
    retry("reporting a fleet result", || async {
        c.execute(
            &c.prepared(&sql).await?,
            &[&id, &done.ok, &message, &done.expired],
        )
        .await
    })
    .await
    .map(drop)
}

/// The longest message the schema takes (`message_plain`).
const MAX_MESSAGE: usize = 1000;

/// A result's message as the schema takes it: control and bidirectional-override
/// characters written as escapes, at most [`MAX_MESSAGE`] characters. (A message can
/// quote a service's own output, e.g. an exit reason.)
fn plain(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        let hostile =
            c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if hostile {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    if out.chars().count() > MAX_MESSAGE {
        out = out.chars().take(MAX_MESSAGE - 1).collect::<String>() + "…";
    }
    out
}

/// Writes back results a daemon of this home recorded but could not report (it died,
/// or the database went away, between acting and reporting).
async fn report_unreported(me: &Me, c: &Conn, reader: &Local, fleet_id: &str) -> Result<(), Error> {
    let taken = reader
        .ask(|tx| Req::Unreported(fleet_id.to_string(), tx))
        .await??;
    if taken.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    for t in taken {
        finish(
            me,
            c,
            t.id,
            &Done {
                ok: t.ok,
                message: t.message.clone(),
                expired: false,
            },
        )
        .await?;
        info!(id = t.id, service = %t.service, "fleet: reported a result recorded before");
        ids.push(t.id);
    }
    let _ = reader.0.send(Req::Reported(fleet_id.to_string(), ids));
    Ok(())
}

/// Marks this host's overdue commands expired: they are never run late.
async fn expire(me: &Me, c: &Conn) -> Result<(), Error> {
    let s = &me.settings.schema;
    // A command another home of this host id began, whose daemon has been gone for a
    // whole lease, and which expired meanwhile: nobody will finish it (only its own home
    // carries on a late command, and it is gone), and it would hold back every later
    // command for that service. Whether it acted is unknown: said so, as failed.
    let sql = format!(
        "UPDATE {s}.commands SET finished_at = now(), ok = false, \
             outcome = CASE WHEN claimed_at IS NULL THEN 'expired' ELSE 'failed' END, \
             message = CASE WHEN claimed_at IS NULL THEN $2 ELSE \
                 'interrupted: begun by a daemon that is gone (' || claimed_by || \
                 '), whether it acted is unknown; expired meanwhile, not run again' END \
         WHERE host_id = $1 AND finished_at IS NULL AND expires_at <= now() \
           AND (claimed_at IS NULL \
                OR (lease_until < now() AND claimed_by NOT LIKE $3))"
    );
    let like = format!("{}%", like_escape(&me.home_prefix));
    let n = retry("expiring fleet commands", || async {
        c.execute(
            &c.prepared(&sql).await?,
            &[&me.settings.host_id, &fleet::EXPIRED_UNBEGUN, &like],
        )
        .await
    })
    .await?;
    if n > 0 {
        info!(
            count = n,
            "fleet: commands expired before this host could run them"
        );
    }
    Ok(())
}

async fn heartbeat(me: &Me, c: &Conn) -> Result<(), Error> {
    let s = &me.settings.schema;
    let sql = format!(
        "INSERT INTO {s}.hosts AS h (id, boot_id, version, pid, started_at, heartbeat_ms, last_seen) \
         VALUES ($1, $2, $3, $4, to_timestamp($5::float8 / 1000), $6, now()) \
         ON CONFLICT (id) DO UPDATE SET boot_id = EXCLUDED.boot_id, version = EXCLUDED.version, \
             pid = EXCLUDED.pid, started_at = EXCLUDED.started_at, \
             heartbeat_ms = EXCLUDED.heartbeat_ms, last_seen = now()"
    );
    let pid = std::process::id() as i32;
    let started = me.started_at_ms as f64;
    let beat = me
        .settings
        .heartbeat_every
        .as_millis()
        .min(i32::MAX as u128) as i32;
    let version = env!("CARGO_PKG_VERSION");
    retry("writing the heartbeat", || async {
        c.execute(
            &c.prepared(&sql).await?,
            &[
                &me.settings.host_id,
                &me.boot_id,
                &version,
                &pid,
                &started,
                &beat,
            ],
        )
        .await
    })
    .await
    .map(drop)
}

/// Writes the services' states when they differ from what was written last; returns
/// what was written (`None`: nothing changed).
async fn push_states(
    me: &Me,
    c: &Conn,
    reader: &Local,
    last: Option<&[ServiceState]>,
) -> Result<Option<Vec<ServiceState>>, Error> {
    let now = reader.ask(Req::States).await??;
    if last == Some(now.as_slice()) {
        return Ok(None);
    }
    let s = &me.settings.schema;
    let sql = format!(
        "WITH gone AS (DELETE FROM {s}.services WHERE host_id = $1 AND name <> ALL($2::text[])), \
         up AS (INSERT INTO {s}.services (host_id, name, state, pid, since, updated_at) \
             SELECT $1, u.n, u.st, u.p, to_timestamp(u.si / 1000), now() \
             FROM unnest($2::text[], $3::text[], $4::int4[], $5::float8[]) AS u(n, st, p, si) \
             ON CONFLICT (host_id, name) DO UPDATE SET state = EXCLUDED.state, \
                 pid = EXCLUDED.pid, since = EXCLUDED.since, updated_at = now()) \
         SELECT 1"
    );
    let by_name: BTreeMap<&str, &ServiceState> = now.iter().map(|s| (s.name.as_str(), s)).collect();
    let names: Vec<String> = by_name.keys().map(|n| n.to_string()).collect();
    let states: Vec<String> = by_name.values().map(|s| s.state.clone()).collect();
    let pids: Vec<Option<i32>> = by_name.values().map(|s| s.pid).collect();
    let since: Vec<Option<f64>> = by_name
        .values()
        .map(|s| s.since_ms.map(|v| v as f64))
        .collect();
    retry("writing service states", || async {
        c.execute(
            &c.prepared(&sql).await?,
            &[&me.settings.host_id, &names, &states, &pids, &since],
        )
        .await
    })
    .await?;
    Ok(Some(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_plain_and_bounded() {
        assert_eq!(plain("restarted (pid 7)"), "restarted (pid 7)");
        assert_eq!(plain("a\nb\x1b[2J\u{202e}"), "a\\u{a}b\\u{1b}[2J\\u{202e}");
        let long = plain(&"é".repeat(5000));
        assert_eq!(long.chars().count(), MAX_MESSAGE);
        assert!(long.ends_with('…'));
    }
}
