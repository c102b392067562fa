//! The daemon's one PostgreSQL connection (the quick mode's LISTEN, and the fleet's,
//! which runs on it) and the executor of quick-mode payloads.

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::poll_fn;
use tokio_postgres::AsyncMessage;
use tracing::{debug, error, info, warn};

use super::auth::{self, Key, Replays};
use super::connect::{self, Connection};
use super::fleet::host::Host;
use super::fleet::Conn;
use super::payload;
use super::quick::Quick;
use super::reject::{Rejections, Summary};
use super::Settings;
use crate::api::PgStatus;
use crate::api::{Outcome, Selection};
use crate::home::Home;
use crate::record::now_ms;
use crate::supervisor::{Context, Supervisor};

const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// One received notification, for the executor.
struct Job {
    payload: String,
    backend_pid: i32,
}

pub use super::Hooks;

/// The listener's state and the quick-mode policy, for `daemon status`.
pub struct Status {
    pg: Arc<Mutex<PgStatus>>,
    quick: Quick,
}

impl Status {
    pub fn snapshot(&self) -> PgStatus {
        let mut s = self.pg.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.quick_mode = self.quick.describe();
        s.fleet = Some(self.quick.fleet.snapshot());
        s
    }
}

/// Starts the daemon's PostgreSQL side: the quick mode's executor, the fleet's threads
/// ([`Host`]) and the thread that keeps the one connection both share. Returns the
/// shared status.
pub fn start(
    settings: Settings,
    key: Option<Key>,
    quick: Quick,
    home: Home,
    ctx: Context,
    hooks: Hooks,
    fleet_hooks: Hooks,
) -> crate::Result<Arc<Status>> {
    let tls = connect::tls(settings.ca_file.as_deref()).map_err(crate::Error::from)?;
    let status = Arc::new(Mutex::new(PgStatus {
        state: "connecting".into(),
        since: now_ms(),
        last_error: None,
        url: settings.display_url(),
        channel: settings.channel.clone(),
        host_id: settings.host_id.clone(),
        received: 0,
        quick_mode: String::new(),
        fleet: None,
        fleet_wakeups: 0,
        fleet_claims: 0,
        fleet_sweeps: 0,
    }));
    // The fleet (durable commands) beside the quick mode: it joins once `tend fleet
    // init` has created the schema, and looks again every few seconds until then.
    let fleet = Host::start(
        settings.clone(),
        home.clone(),
        ctx.clone(),
        fleet_hooks,
        status.clone(),
        quick.fleet.clone(),
    )?;
    let (jobs, rx) = mpsc::channel();
    let host_id = settings.host_id.clone();
    std::thread::Builder::new()
        .name("tend-notify-exec".into())
        .spawn({
            let quick = quick.clone();
            move || execute(rx, home, ctx, host_id, key, quick, hooks)
        })
        .map_err(|e| crate::Error::Daemon {
            message: format!("cannot start the notify executor: {e}"),
        })?;
    let st = status.clone();
    std::thread::Builder::new()
        .name("tend-listen".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot start the PostgreSQL runtime");
                    return;
                }
            };
            rt.block_on(listen_forever(settings, tls, jobs, st, fleet));
        })
        .map_err(|e| crate::Error::Daemon {
            message: format!("cannot start the listener: {e}"),
        })?;
    Ok(Arc::new(Status { pg: status, quick }))
}

fn set(status: &Mutex<PgStatus>, f: impl FnOnce(&mut PgStatus)) {
    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut s);
}

async fn listen_forever(
    settings: Settings,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    jobs: mpsc::Sender<Job>,
    status: Arc<Mutex<PgStatus>>,
    fleet: Host,
) {
    let mut failures: u32 = 0;
    loop {
        let began = std::time::Instant::now();
        let err = session(&settings, &tls, &jobs, &status, &fleet).await;
        if began.elapsed() >= STABLE_AFTER {
            failures = 0;
        }
        warn!(error = %err, "PostgreSQL connection lost (quick mode and fleet); reconnecting");
        set(&status, |s| {
            if s.state != "reconnecting" {
                s.state = "reconnecting".into();
                s.since = now_ms();
            }
            s.last_error = Some(err);
        });
        let delay = backoff(failures);
        failures = failures.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

/// Exponential backoff capped at two seconds, jittered (see [`crate::fleet::backoff`]):
/// a returning server is noticed within about two seconds, without a thundering herd.
fn backoff(failures: u32) -> Duration {
    crate::fleet::backoff(failures, super::jitter())
}

/// Aborts the connection driver when the session ends, whatever the reason.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection's life: connect, LISTEN on the quick channel, hand the connection to
/// the fleet (which LISTENs on this host's wake-up channel and runs its statements on
/// it), and route each notification by channel. Returns why it ended; every `Err` or
/// `None` from the connection, and every failure of the fleet's statements, counts as
/// lost. The fleet's heartbeat (or, with no fleet, its look for the schema) is what
/// checks a quiet connection.
async fn session(
    settings: &Settings,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    jobs: &mpsc::Sender<Job>,
    status: &Mutex<PgStatus>,
    fleet: &Host,
) -> String {
    let name = daemon_application_name(&settings.host_id);
    let (client, connection) = match connect::connect_as(&settings.url, tls, &name).await {
        Ok(pair) => pair,
        Err(e) => return e.to_string(),
    };
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
    let _driver = AbortOnDrop(tokio::spawn(drive(connection, ntx)));
    // The channel is a validated plain identifier. LISTEN runs outside any transaction
    // (a simple query in autocommit), so it takes effect at once.
    let listen = format!("LISTEN {}", settings.channel);
    match tokio::time::timeout(LISTEN_TIMEOUT, client.batch_execute(&listen)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return format!("LISTEN failed: {}", connect::describe(&e)),
        Err(_) => return "LISTEN timed out".into(),
    }
    info!(url = %settings.display_url(), channel = %settings.channel, "listening for NOTIFY");
    set(status, |s| {
        s.state = "connected".into();
        s.since = now_ms();
    });
    let conn = Arc::new(Conn::new(client));
    let (wakes, wakes_rx) = tokio::sync::mpsc::unbounded_channel();
    let fleet_run = fleet.attach(conn, wakes_rx);
    tokio::pin!(fleet_run);
    loop {
        tokio::select! {
            msg = nrx.recv() => match msg {
                Some(Ok(n)) if n.channel() == settings.channel => {
                    set(status, |s| s.received += 1);
                    debug!(backend_pid = n.process_id(), "notification");
                    let job = Job { payload: n.payload().to_string(), backend_pid: n.process_id() };
                    if jobs.send(job).is_err() {
                        return "the executor is gone".into();
                    }
                }
                // Only the fleet's channel is LISTENed to besides.
                Some(Ok(n)) => {
                    let _ = wakes.send(n.payload().to_string());
                }
                Some(Err(e)) => return e,
                None => return "connection closed".into(),
            },
            why = &mut fleet_run => return why,
        }
    }
}

/// The daemon's connection's `application_name`: `tend daemon HOST`.
pub fn daemon_application_name(host_id: &str) -> String {
    format!("tend daemon {host_id}")
}

/// Drives the connection by hand: notifications only come out of `poll_message`.
async fn drive(
    mut connection: Connection,
    out: tokio::sync::mpsc::UnboundedSender<Result<tokio_postgres::Notification, String>>,
) {
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) => {
                if out.send(Ok(n)).is_err() {
                    return;
                }
            }
            Some(Ok(AsyncMessage::Notice(notice))) => {
                debug!(notice = %notice.message(), "server notice")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                let _ = out.send(Err(connect::describe(&e)));
                return;
            }
            None => {
                let _ = out.send(Err("connection closed by the server".into()));
                return;
            }
        }
    }
}

/// Carries out notifications one at a time, in order, on a thread of its own, so a slow
/// stop never delays the listener's pings. Each counts as a request in flight, so a
/// daemon shutting down finishes it first (and takes no new one).
fn execute(
    rx: mpsc::Receiver<Job>,
    home: Home,
    ctx: Context,
    host_id: String,
    key: Option<Key>,
    quick: Quick,
    hooks: Hooks,
) {
    let mut replays: Option<Replays> = None;
    let mut rejections = Rejections::default();
    let mut sup: Option<Supervisor> = None;
    loop {
        // Wake up to write a finished burst of rejections even when nothing else comes.
        let next = match rejections.deadline() {
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        let ended = matches!(next, Err(mpsc::RecvTimeoutError::Disconnected));
        if let Some(summary) = rejections.due(Instant::now(), ended) {
            record_rejections(&home, &ctx, &mut sup, &summary);
        }
        let job = match next {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let Some(ticket) = (hooks.admit)() else {
            warn!(
                backend_pid = job.backend_pid,
                "notify: the daemon is shutting down; command not carried out"
            );
            continue;
        };
        if sup.is_none() {
            match Supervisor::open_with(home.clone(), ctx.clone()) {
                Ok(s) => sup = Some(s),
                Err(e) => {
                    error!(error = %e, "notify: cannot open the database; dropping a command");
                    continue;
                }
            }
        }
        let s = sup.as_mut().expect("opened above");
        let replays = replays.get_or_insert_with(|| super::replays::load(s));
        if let Err(e) = handle(
            s,
            &job,
            &host_id,
            key.as_ref(),
            &quick,
            replays,
            &mut rejections,
        ) {
            error!(error = %e, "notify: database error; reopening");
            sup = None;
        }
        drop(ticket);
        (hooks.changed)();
    }
}

/// Writes one burst of rejections: one log line and one `rejected` event.
fn record_rejections(home: &Home, ctx: &Context, sup: &mut Option<Supervisor>, s: &Summary) {
    warn!(service = %s.service, count = s.count, "{}", s.detail);
    if sup.is_none() {
        *sup = Supervisor::open_with(home.clone(), ctx.clone()).ok();
    }
    let written = sup
        .as_mut()
        .map(|sup| sup.record(&s.service, crate::record::event::REJECTED, &s.detail));
    if let Some(Err(e)) = written {
        error!(error = %e, "notify: cannot record rejected payloads; reopening");
        *sup = None;
    }
}

/// Authenticates, parses and carries out one notification. Every rejection is noted in
/// `rejections`, which turns each burst into one log line and one `rejected` event;
/// nothing rejected is acted on.
fn handle(
    sup: &mut Supervisor,
    job: &Job,
    host_id: &str,
    key: Option<&Key>,
    quick: &Quick,
    replays: &mut Replays,
    rejections: &mut Rejections,
) -> crate::Result<()> {
    let who = format!("notify (backend pid {})", job.backend_pid);
    let mut reject = |_: &mut Supervisor, service: &str, why: String| -> crate::Result<()> {
        crate::metrics::count(&crate::metrics::COUNTERS.notify_refused);
        rejections.add(Instant::now(), service, why);
        Ok(())
    };
    let inner = match key {
        Some(k) => match auth::verify(k, &job.payload, now_ms() / 1000, replays) {
            Ok(p) => {
                super::replays::remember(sup, &job.payload)?;
                p
            }
            Err(e) => {
                return reject(
                    sup,
                    "-",
                    format!("{who}: {e}: {}", payload::quote(&job.payload)),
                )
            }
        },
        None => match quick.admit_unsigned() {
            Ok(()) => job.payload.as_str(),
            Err(why) => {
                return reject(
                    sup,
                    "-",
                    format!("{who}: {why}: {}", payload::quote(&job.payload)),
                )
            }
        },
    };
    let cmd = match payload::parse(inner) {
        Ok(c) => c,
        Err(e) => {
            return reject(
                sup,
                "-",
                format!("{who}: malformed payload ({e}): {}", payload::quote(inner)),
            )
        }
    };
    let names = cmd.services_for(host_id);
    if names.is_empty() {
        debug!(payload = %payload::quote(inner), "notify for other hosts; ignored");
        return Ok(());
    }
    let known: HashSet<String> = sup.names()?.into_iter().collect();
    let mut accepted = Vec::new();
    for name in names {
        if known.contains(&name) {
            sup.record(
                &name,
                crate::record::event::NOTIFY,
                &format!("{} requested by {who}", cmd.verb),
            )?;
            accepted.push(name);
        } else {
            reject(
                sup,
                &name,
                format!("{who}: {} of unknown service {name}", cmd.verb),
            )?;
        }
    }
    if accepted.is_empty() {
        return Ok(());
    }
    let verb = cmd.verb;
    crate::metrics::count(&crate::metrics::COUNTERS.notify_taken);
    let selection = Selection::Names { names: accepted };
    for r in crate::api::act(sup, verb, &selection, &|| true)? {
        match &r.result {
            Outcome::Error { message, .. } => warn!(service = %r.name, "{who}: {message}"),
            other => info!(service = %r.name, outcome = ?other, "{who}"),
        }
    }
    Ok(())
}
