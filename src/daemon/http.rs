//! The daemon's HTTP API, off unless `tend daemon --http ADDR` or `http.listen` asks for
//! it: what `tend list|status|events --json` and `tend metrics` show, for the tools
//! people already watch, and (with a bearer token) start, stop and restart.
//!
//! | Request                              | Answer                                          |
//! |--------------------------------------|-------------------------------------------------|
//! | `GET /metrics`                       | `tend metrics` (Prometheus text format)         |
//! | `GET /v1/services`                   | `tend list --json`                              |
//! | `GET /v1/services/NAME`              | `tend status NAME --json` (404: unknown)        |
//! | `GET /v1/events?since=ID&service=N&limit=N` | `tend events --json` (after event `ID`)  |
//! | `GET /v1/events?follow=1`            | each new event as one JSON line, as it comes    |
//! | `POST /v1/services/NAME/start\|stop\|restart` | the reports, as the CLI gets them      |
//!
//! # Giving nobody new power
//!
//! - It listens on loopback or on a Unix socket (mode 0600) unless `http.allow_remote` is
//!   true. Reads need nothing more: they show what `tend list` shows to the same user.
//! - Writes need `Authorization: Bearer TOKEN`, TOKEN being the content of
//!   `http.token_file` (a regular file of the daemon's user with no access for group or
//!   others, as ssh asks of its keys), compared in constant time. Without a token file
//!   every write is refused (403); without or with a wrong token, 401.
//! - A slow or hostile client cannot stall the daemon: the API has a thread of its own
//!   (the event loop, the worker and the control socket never wait for it), at most
//!   [`MAX_CONNECTIONS`] connections are served at once (more are closed at once), a
//!   request's headers must arrive within [`HEADER_TIMEOUT`] and fit in
//!   [`MAX_HEADER_BYTES`], one request is served per connection, and request bodies are
//!   never read. Database work runs on at most [`BLOCKING_THREADS`] threads.
//! - A followed event stream reads the database every [`FOLLOW_EVERY`] while its client
//!   is connected (events are written by the CLI too, not only by the daemon); with no
//!   follower the API costs nothing while idle.

use std::convert::Infallible;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::bus::{InFlight, Msg, ToLoop, Waker};
use super::pool::Pool;
use crate::api::{Selection, Verb};
use crate::config::{self, HttpListen};
use crate::error::{exit, io_reason, Error, Result};
use crate::json::{ErrorJson, EventJson, ServiceJson};
use crate::metrics::{self, COUNTERS};
use crate::supervisor::Supervisor;

/// Connections served at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read (the request line and headers).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Threads that may read the database for the API at once.
pub const BLOCKING_THREADS: usize = 4;
/// How often a followed event stream looks for new events.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// Events answered at most per request (`limit=`).
const MAX_EVENTS: u32 = 1000;
/// Events answered when `limit=` is not given.
const DEFAULT_EVENTS: u32 = 100;
/// The largest token file read.
const TOKEN_CAP: u64 = 4096;

/// What the API is to be: where it listens, and the token writes need.
pub struct Settings {
    pub listen: HttpListen,
    pub token: Option<Token>,
}

/// The bearer token writes need. Never printed.
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Whether `given` is the token, in time that does not depend on where they differ
    /// (or on their lengths: digests of both are compared).
    fn matches(&self, given: &[u8]) -> bool {
        let a = Sha256::digest(&self.0);
        let b = Sha256::digest(given);
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    /// Reads the token from `path`: a regular file of this user that group and others
    /// cannot read or write, holding one non-empty line.
    pub fn read(path: &Path) -> Result<Token> {
        let bad = |reason: String| Error::Invalid {
            what: "http settings",
            message: format!("{} {}: {reason}", config::HTTP_TOKEN_FILE, path.display()),
        };
        let (_, meta) =
            crate::service::files::open_regular(path).map_err(|e| bad(e.to_string()))?;
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(bad("it belongs to another user".into()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!(
                "group or others may access it (mode {:04o}); chmod 600 it",
                meta.permissions().mode() & 0o7777
            )));
        }
        let raw =
            crate::service::files::read_regular(path, TOKEN_CAP).map_err(|e| bad(e.to_string()))?;
        let text = String::from_utf8(raw).map_err(|_| bad("it is not UTF-8 text".into()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(bad("it is empty".into()));
        }
        if token.contains(char::is_whitespace) {
            return Err(bad(
                "the token holds white space; write it on one line".into()
            ));
        }
        Ok(Token(token.as_bytes().to_vec()))
    }
}

impl Settings {
    /// `--http` if given, else `http.listen`; `None`: no API. The token file is read
    /// now, so a mistake is reported by the command that starts the daemon.
    pub fn resolve(sup: &mut Supervisor, flag: Option<&str>) -> Result<Option<Settings>> {
        let invalid = |message: String| Error::Invalid {
            what: "http settings",
            message,
        };
        let here = std::env::current_dir().unwrap_or_else(|_| "/".into());
        let listen = match flag {
            Some(f) => HttpListen::parse(f, &here).map_err(|e| invalid(format!("--http: {e}")))?,
            None => match sup.config_get(config::HTTP_LISTEN)? {
                Some(v) => HttpListen::parse(&v, &here)
                    .map_err(|e| invalid(format!("{}: {e}", config::HTTP_LISTEN)))?,
                None => return Ok(None),
            },
        };
        let allow_remote = sup.config_get(config::HTTP_ALLOW_REMOTE)?.as_deref() == Some("true");
        if listen.is_remote() && !allow_remote {
            return Err(invalid(format!(
                "{listen} is reachable from other hosts; listen on loopback (127.0.0.1, ::1) \
                 or a Unix socket, or set {} true",
                config::HTTP_ALLOW_REMOTE
            )));
        }
        let token = match sup.config_get(config::HTTP_TOKEN_FILE)? {
            Some(p) => Some(Token::read(Path::new(&p))?),
            None => None,
        };
        Ok(Some(Settings { listen, token }))
    }
}

/// A bound listener, before the API's thread takes it.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, PathBuf),
}

/// Binds where `s` says; a port in use (or a live socket at the path) is an error.
pub fn bind(s: &Settings) -> Result<Bound> {
    let err = |what: String, e: std::io::Error| Error::Daemon {
        message: format!("http API: cannot listen on {what}: {}", io_reason(&e)),
    };
    match &s.listen {
        HttpListen::Tcp(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(|e| err(addr.to_string(), e))?;
            l.set_nonblocking(true)
                .map_err(|e| err(addr.to_string(), e))?;
            Ok(Bound::Tcp(l))
        }
        HttpListen::Unix(path) => {
            let shown = path.display().to_string();
            clear_stale_socket(path).map_err(|e| Error::Daemon {
                message: format!("http API: {shown}: {e}"),
            })?;
            let l =
                std::os::unix::net::UnixListener::bind(path).map_err(|e| err(shown.clone(), e))?;
            // The user's own, as the control socket is.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(shown.clone(), e))?;
            l.set_nonblocking(true).map_err(|e| err(shown, e))?;
            Ok(Bound::Unix(l, path.clone()))
        }
    }
}

/// Removes a socket file nobody listens on (a daemon that died left it); anything else at
/// the path is left alone and is an error.
fn clear_stale_socket(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_reason(&e)),
    };
    if !meta.file_type().is_socket() {
        return Err("something that is not a socket is there".into());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err("another process listens on this socket".into()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|e| io_reason(&e))
        }
        Err(e) => Err(io_reason(&e)),
    }
}

/// What the API's requests need from the daemon.
pub struct Ctx {
    pub pool: Arc<Pool>,
    pub in_flight: Arc<InFlight>,
    pub waker: Waker,
    pub token: Option<Token>,
    /// Unix ms the daemon started.
    pub started_at: i64,
}

/// Starts the API's thread on `bound`.
pub fn start(bound: Bound, ctx: Ctx) -> Result<()> {
    let ctx = Arc::new(ctx);
    std::thread::Builder::new()
        .name("tend-http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .max_blocking_threads(BLOCKING_THREADS)
                .thread_name("tend-http-db")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "http API: cannot start its runtime; the API is off");
                    return;
                }
            };
            rt.block_on(accept_forever(bound, ctx));
        })
        .map_err(|e| Error::Daemon {
            message: format!("cannot start the http API thread: {e}"),
        })?;
    Ok(())
}

/// One connection's slot among [`MAX_CONNECTIONS`], given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Option<Slot> {
        let n = count.fetch_add(1, Ordering::SeqCst);
        if n >= MAX_CONNECTIONS {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_forever(bound: Bound, ctx: Arc<Ctx>) {
    let count = Arc::new(AtomicUsize::new(0));
    match bound {
        Bound::Tcp(l) => {
            let l = match tokio::net::TcpListener::from_std(l) {
                Ok(l) => l,
                Err(e) => return warn!(error = %e, "http API: cannot use its listener"),
            };
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        serve(s, &ctx, &count);
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        }
        Bound::Unix(l, _path) => {
            let l = match tokio::net::UnixListener::from_std(l) {
                Ok(l) => l,
                Err(e) => return warn!(error = %e, "http API: cannot use its listener"),
            };
            loop {
                match l.accept().await {
                    Ok((s, _)) => serve(s, &ctx, &count),
                    Err(e) => accept_failed(e).await,
                }
            }
        }
    }
}

/// Out of descriptors or memory: the connection waiting stays in the backlog; try again
/// in a moment rather than spin.
async fn accept_failed(e: std::io::Error) {
    debug!(error = %e, "http API: accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn serve<S>(stream: S, ctx: &Arc<Ctx>, count: &Arc<AtomicUsize>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some(slot) = Slot::take(count) else {
        // Closed at once: the client sees the connection end and may try again.
        return;
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(false)
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| route(ctx.clone(), req)),
            );
        if let Err(e) = conn.await {
            debug!(error = %e, "http API: connection ended");
        }
        drop(slot);
    });
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    body.push(b'\n');
    full(status, "application/json", body)
}

/// A JSON document read for a request, or the failure that kept it from being read.
fn json_answer(body: Result<Vec<u8>>) -> Response<Body> {
    match body {
        Ok(mut b) => {
            b.push(b'\n');
            full(StatusCode::OK, "application/json", b)
        }
        Err(e) => error_response(status_for(&e), &e),
    }
}

/// `{"error": {"message": ..., "code": ...}}`, as `--json` prints a failure.
fn error_response(status: StatusCode, e: &Error) -> Response<Body> {
    json_response(status, &ErrorJson::new(e))
}

fn plain_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &serde_json::json!({"error": {"message": message, "code": exit::FAILED}}),
    )
}

/// The HTTP status for a failure of tend's.
fn status_for(e: &Error) -> StatusCode {
    match e.exit_code() {
        exit::UNKNOWN_SERVICE => StatusCode::NOT_FOUND,
        exit::USAGE => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Runs `f` with a supervisor of the pool on one of the API's database threads.
async fn with_supervisor<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&mut Supervisor) -> Result<T> + Send + 'static,
) -> Result<T> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let mut sup = ctx.pool.get()?;
        f(&mut sup)
    })
    .await
    .unwrap_or_else(|e| {
        Err(Error::Daemon {
            message: format!("http API: a request failed: {e}"),
        })
    })
}

async fn route(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
) -> std::result::Result<Response<Body>, Infallible> {
    metrics::count(&COUNTERS.http_requests);
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let response = match (parts.as_slice(), &method) {
        (["metrics"], &Method::GET) => metrics_text(&ctx).await,
        (["v1", "services"], &Method::GET) => services(&ctx).await,
        (["v1", "services", name], &Method::GET) => service(&ctx, name).await,
        (["v1", "events"], &Method::GET) => events(&ctx, &query).await,
        (["v1", "services", name, verb], &Method::POST) => write(&ctx, &req, name, verb).await,
        (["metrics"] | ["v1", "services"] | ["v1", "services", _] | ["v1", "events"], _)
        | (["v1", "services", _, _], _) => {
            plain_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        }
        _ => plain_error(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    Ok(response)
}

async fn metrics_text(ctx: &Arc<Ctx>) -> Response<Body> {
    let started_at = ctx.started_at;
    let text = with_supervisor(ctx, move |sup| {
        let rows: Vec<_> = sup
            .list()?
            .into_iter()
            .map(|st| {
                let u = metrics::usage_of(&st);
                (st, u)
            })
            .collect();
        sup.take_notices();
        Ok(metrics::render(
            &rows,
            Some(&metrics::DaemonFigures {
                started_at,
                counters: COUNTERS.values(),
            }),
        ))
    })
    .await;
    match text {
        Ok(t) => full(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            t,
        ),
        Err(e) => error_response(status_for(&e), &e),
    }
}

async fn services(ctx: &Arc<Ctx>) -> Response<Body> {
    let body = with_supervisor(ctx, |sup| {
        let rows = sup.list()?;
        sup.take_notices();
        let items: Vec<_> = rows.iter().map(ServiceJson::new).collect();
        Ok(serde_json::to_vec(&items).unwrap_or_default())
    })
    .await;
    json_answer(body)
}

async fn service(ctx: &Arc<Ctx>, name: &str) -> Response<Body> {
    if let Err(e) = crate::service::validate_name(name) {
        return error_response(StatusCode::NOT_FOUND, &e);
    }
    let name = name.to_string();
    let body = with_supervisor(ctx, move |sup| {
        let st = sup.status(&name)?;
        sup.take_notices();
        Ok(serde_json::to_vec(&ServiceJson::new(&st)).unwrap_or_default())
    })
    .await;
    json_answer(body)
}

/// The parameters of `/v1/events`.
#[derive(Debug, Default, PartialEq, Eq)]
struct EventsQuery {
    since: Option<i64>,
    service: Option<String>,
    limit: u32,
    follow: bool,
}

fn events_query(query: &str) -> std::result::Result<EventsQuery, String> {
    let mut q = EventsQuery {
        limit: DEFAULT_EVENTS,
        ..EventsQuery::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "since" => {
                q.since = Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| format!("since={v:?}: not an event id"))?,
                )
            }
            "service" => {
                crate::service::validate_name(v).map_err(|e| e.to_string())?;
                q.service = Some(v.to_string());
            }
            "limit" => {
                q.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_EVENTS).contains(n))
                    .ok_or_else(|| format!("limit={v:?}: not a number from 1 to {MAX_EVENTS}"))?
            }
            "follow" => {
                q.follow = match v {
                    "1" | "true" | "" => true,
                    "0" | "false" => false,
                    other => return Err(format!("follow={other:?}: not 1 or 0")),
                }
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok(q)
}

async fn events(ctx: &Arc<Ctx>, query: &str) -> Response<Body> {
    let q = match events_query(query) {
        Ok(q) => q,
        Err(e) => return plain_error(StatusCode::BAD_REQUEST, &e),
    };
    if q.follow {
        return follow(ctx, q).await;
    }
    let body = with_supervisor(ctx, move |sup| {
        let events = match q.since {
            Some(after) => sup.events_after(after, q.service.as_deref(), q.limit)?,
            None => sup.events(q.service.as_deref(), q.limit)?,
        };
        let items: Vec<_> = events.iter().map(EventJson::new).collect();
        Ok(serde_json::to_vec(&items).unwrap_or_default())
    })
    .await;
    json_answer(body)
}

/// A body fed line by line by the task that follows the events.
struct Lines(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// `?follow=1`: events after `since` (or from now), each as one JSON line as it is
/// recorded, until the client goes away or the daemon stops.
async fn follow(ctx: &Arc<Ctx>, q: EventsQuery) -> Response<Body> {
    let after = match q.since {
        Some(a) => a,
        None => match with_supervisor(ctx, |sup| sup.last_event_id()).await {
            Ok(id) => id,
            Err(e) => return error_response(status_for(&e), &e),
        },
    };
    // A few lines of slack: a client that stops reading holds up only its own stream.
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut after = after;
        loop {
            let service = q.service.clone();
            let batch = with_supervisor(&ctx, move |sup| {
                sup.events_after(after, service.as_deref(), MAX_EVENTS)
            })
            .await;
            let events = match batch {
                Ok(e) => e,
                Err(e) => {
                    let mut line = serde_json::to_vec(&ErrorJson::new(&e)).unwrap_or_default();
                    line.push(b'\n');
                    let _ = tx.send(Bytes::from(line)).await;
                    return;
                }
            };
            let full_batch = events.len() as u32 == MAX_EVENTS;
            for e in &events {
                after = e.id;
                let mut line = serde_json::to_vec(&EventJson::new(e)).unwrap_or_default();
                line.push(b'\n');
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
            if ctx.in_flight.closing() {
                return;
            }
            if full_batch {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let mut r = Response::new(Lines(rx).boxed());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

async fn write(ctx: &Arc<Ctx>, req: &Request<Incoming>, name: &str, verb: &str) -> Response<Body> {
    let verb = match verb {
        "start" => Verb::Start,
        "stop" => Verb::Stop,
        "restart" => Verb::Restart,
        _ => return plain_error(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    let Some(token) = &ctx.token else {
        return plain_error(
            StatusCode::FORBIDDEN,
            "writes are off: the daemon has no http.token_file",
        );
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if !given.is_some_and(|g| token.matches(g)) {
        let mut r = plain_error(StatusCode::UNAUTHORIZED, "a valid bearer token is needed");
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    if let Err(e) = crate::service::validate_name(name) {
        return error_response(StatusCode::NOT_FOUND, &e);
    }
    // Counted among the requests in flight, so a daemon shutting down finishes it first
    // (and takes no new one).
    let Some(ticket) = ctx.in_flight.enter() else {
        return plain_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is busy or shutting down; try again",
        );
    };
    let name = name.to_string();
    let closing = ctx.in_flight.clone();
    let reports = with_supervisor(ctx, move |sup| {
        let selection = Selection::Names { names: vec![name] };
        crate::api::act(sup, verb, &selection, &|| !closing.closing())
    })
    .await;
    drop(ticket);
    ctx.waker.send(Msg::FromRequest(ToLoop::Changed));
    match reports {
        Ok(reports) => {
            let failed = reports.iter().find_map(|r| match &r.result {
                crate::api::Outcome::Error { code, .. } => Some(*code),
                _ => None,
            });
            let status = match failed {
                None => StatusCode::OK,
                Some(exit::UNKNOWN_SERVICE) => StatusCode::NOT_FOUND,
                Some(_) => StatusCode::CONFLICT,
            };
            info!(verb = %verb, "http API: {verb} carried out");
            json_response(status, &reports)
        }
        Err(e) => error_response(status_for(&e), &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_query_is_read_and_checked() {
        assert_eq!(
            events_query("since=12&service=web&limit=5&follow=1").unwrap(),
            EventsQuery {
                since: Some(12),
                service: Some("web".into()),
                limit: 5,
                follow: true
            }
        );
        assert_eq!(events_query("").unwrap().limit, DEFAULT_EVENTS);
        assert!(events_query("since=-1").is_err());
        assert!(events_query("limit=0").is_err());
        assert!(events_query("limit=100000").is_err());
        assert!(events_query("service=../x").is_err());
        assert!(events_query("bogus=1").is_err());
    }

    #[test]
    fn tokens_match_only_themselves() {
        let t = Token(b"s3cret".to_vec());
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3cret "));
        assert!(!t.matches(b""));
    }
}
