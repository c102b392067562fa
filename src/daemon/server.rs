//! The daemon's request server: the control socket, one thread per connection.
//!
//! Each connection is served on its own thread with its own database connection, calling
//! the same [`crate::api::act`] as the CLI, so a slow stop never delays the event
//! loop or another request. At most [`MAX_CONNECTIONS`] are served at once; beyond that a
//! client is told the daemon is busy. A request is carried out only if it arrives before
//! its deadline, and only while its client is still there to hear the answer: a client
//! that gave up (Ctrl-C, timeout) is never acted on afterwards.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{debug, info, warn};

use super::bus::{InFlight, Msg, Shared, ToLoop, Waker, MAX_CONNECTIONS};
use super::pool::{Pool, Pooled};
use super::protocol::{Action, Request, Response, WaitSpec, HEARTBEAT, MAX_MESSAGE, VERSION};
use crate::api::{DaemonStatus, Selection, Verb};
use crate::error::{io_reason, Error, Result};
use crate::home::Home;
use crate::record::now_ms;
use crate::supervisor::Proceed;

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the control socket. Any socket file left there is from a dead daemon: we hold
/// the lock, so nobody else can be listening on it.
pub fn bind(home: &Home) -> Result<UnixListener> {
    let path = super::client::socket_path(home);
    match std::fs::remove_file(&path) {
        Ok(()) => info!(path = %path.display(), "removed the socket of a previous daemon"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::Io {
                path,
                reason: format!("cannot remove stale socket: {}", io_reason(&e)),
            })
        }
    }
    let (_dir, short) = super::client::short_socket_path(home)?;
    let listener = UnixListener::bind(&short).map_err(|e| Error::Io {
        path: path.clone(),
        reason: format!("cannot listen: {}", io_reason(&e)),
    })?;
    // Only the owner may talk to the daemon. (The home is 0700 too, so nobody else could
    // reach the socket in the moment before this.)
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        Error::Io {
            path: path.clone(),
            reason: format!("cannot restrict the socket to its owner: {}", io_reason(&e)),
        }
    })?;
    listener.set_nonblocking(true).map_err(|e| Error::Io {
        path,
        reason: io_reason(&e),
    })?;
    Ok(listener)
}

/// What a request thread needs.
#[derive(Clone)]
pub struct ServeCtx {
    pub home: Home,
    pub shared: Arc<Shared>,
    pub waker: Waker,
    pub in_flight: Arc<InFlight>,
    pub heartbeats: Arc<Heartbeats>,
    /// Warm supervisors (open database connections) to serve requests with.
    pub pool: Arc<Pool>,
    /// Set when a daemon tied to `tend up` stops everything: requests in progress (a
    /// start) are carried out no further, so nothing is started behind the stop.
    pub abandon: Arc<std::sync::atomic::AtomicBool>,
}

/// One client connection's writing end, shared by its request thread and the heartbeat.
pub struct Conn {
    stream: Mutex<Option<UnixStream>>,
}

impl Conn {
    fn new(stream: &UnixStream) -> Conn {
        let clone = stream.try_clone().ok();
        if let Some(c) = &clone {
            // A client that stops reading must not wedge the heartbeat.
            let _ = c.set_write_timeout(Some(HEARTBEAT));
        }
        Conn {
            stream: Mutex::new(clone),
        }
    }

    fn send(&self, r: &Response) -> std::io::Result<()> {
        let mut line = serde_json::to_string(r).expect("responses always serialize");
        line.push('\n');
        let guard = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(mut s) => s.write_all(line.as_bytes()),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// One thread that tells every client whose request is still being carried out that
/// the daemon is working on it, once a second; a client can then tell a long stop from
/// a daemon that stopped answering. It sleeps on a condition variable while no request
/// is in progress, so an idle daemon never wakes up for it.
#[derive(Default)]
pub struct Heartbeats {
    conns: Mutex<Vec<(u64, Arc<Conn>)>>,
    added: std::sync::Condvar,
    next: AtomicUsize,
}

impl Heartbeats {
    /// Starts the heartbeat thread.
    pub fn start() -> Result<Arc<Heartbeats>> {
        let hb = Arc::new(Heartbeats::default());
        let me = hb.clone();
        std::thread::Builder::new()
            .name("tend-heartbeat".into())
            .stack_size(128 * 1024)
            .spawn(move || me.run())
            .map_err(|e| Error::Daemon {
                message: format!("cannot start the heartbeat thread: {e}"),
            })?;
        Ok(hb)
    }

    fn run(&self) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            while conns.is_empty() {
                conns = self.added.wait(conns).unwrap_or_else(|p| p.into_inner());
            }
            // Each request gets its first heartbeat a second after it arrived (or after
            // the previous beat), never sooner.
            conns = self
                .added
                .wait_timeout(conns, HEARTBEAT)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            let now: Vec<Arc<Conn>> = conns.iter().map(|(_, c)| c.clone()).collect();
            drop(conns);
            for c in now {
                let _ = c.send(&Response::Working);
            }
            conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        }
    }

    fn add(&self, c: Arc<Conn>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.push((id, c));
        if conns.len() == 1 {
            self.added.notify_all();
        }
        id
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(i, _)| *i != id);
    }
}

/// Accepts every pending connection and serves each on a thread of its own.
pub fn accept(listener: &UnixListener, sc: &ServeCtx) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let Some(ticket) = sc.in_flight.enter() else {
                    busy(stream);
                    continue;
                };
                let sc = sc.clone();
                let spawned = std::thread::Builder::new()
                    .name("tend-request".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        sc.serve(stream);
                        drop(ticket);
                        sc.waker.send(Msg::FromRequest(ToLoop::Changed));
                    });
                if let Err(e) = spawned {
                    warn!(error = %e, "cannot start a request thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                warn!(error = %e, "accept failed");
                return;
            }
        }
    }
}

/// Tells a client the daemon cannot take its request now.
fn busy(stream: UnixStream) {
    let _ = stream.set_nonblocking(true);
    let reply = error_line(&format!(
        "the daemon is busy ({MAX_CONNECTIONS} requests in progress) or shutting down; \
         try again"
    ));
    let _ = (&stream).write_all(reply.as_bytes());
}

fn error_line(message: &str) -> String {
    let mut s = serde_json::to_string(&Response::Error {
        message: message.to_string(),
        code: crate::error::exit::FAILED,
    })
    .expect("responses always serialize");
    s.push('\n');
    s
}

/// True while the client is still connected (it has not closed or reset its end).
fn client_here(stream: &UnixStream) -> bool {
    // POLLRDHUP: the peer closed its end (nix has no name for it, so `revents()` cannot
    // show it: any event at all means gone, since only these are asked for).
    let gone =
        PollFlags::from_bits_retain(libc::POLLRDHUP) | PollFlags::POLLHUP | PollFlags::POLLERR;
    let mut fds = [PollFd::new(stream.as_fd(), gone)];
    !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

impl ServeCtx {
    fn serve(&self, stream: UnixStream) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let mut line = String::new();
        let read = BufReader::new((&stream).take(MAX_MESSAGE)).read_line(&mut line);
        let req = match read {
            Ok(n) if n > 0 => match serde_json::from_str::<Request>(&line) {
                Ok(req) if req.version == VERSION => req,
                Ok(req) => {
                    let _ = (&stream).write_all(
                        error_line(&format!(
                            "protocol version {} is not supported by this daemon (version \
                             {VERSION}); restart the daemon after upgrading tend",
                            req.version
                        ))
                        .as_bytes(),
                    );
                    return;
                }
                Err(e) => {
                    let _ = (&stream)
                        .write_all(error_line(&format!("malformed request: {e}")).as_bytes());
                    return;
                }
            },
            Ok(_) => return,
            Err(e) => {
                debug!(error = %e, "reading a request failed");
                return;
            }
        };
        if now_ms() > req.deadline_ms {
            // Its caller has given up (the daemon was stopped or too busy to read it in
            // time): carrying it out now would surprise everyone.
            info!(action = ?req.action, "dropped a request its caller had given up on");
            return;
        }
        let conn = Arc::new(Conn::new(&stream));
        if conn.send(&Response::Accepted).is_err() {
            return;
        }
        let id = self.heartbeats.add(conn.clone());
        // Asked before each service and, through the supervisor's context, right before
        // each spawn: a request whose client left meanwhile is not carried out further.
        let watched = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "cannot watch the client");
                return;
            }
        };
        let abandon = self.abandon.clone();
        let proceed: Proceed =
            Arc::new(move || !abandon.load(Ordering::SeqCst) && client_here(&watched));
        let response = self.handle(req.action, &proceed);
        self.heartbeats.remove(id);
        if let Err(e) = conn.send(&response) {
            debug!(error = %e, "client went away before the answer");
        }
    }

    fn supervisor(&self) -> Result<Pooled> {
        self.pool.get()
    }

    fn handle(&self, action: Action, proceed: &Proceed) -> Response {
        crate::metrics::count(&crate::metrics::COUNTERS.socket_requests);
        let result = match action {
            Action::Act {
                verb,
                selection,
                wait,
            } => self.act(verb, &selection, WaitSpec::to_wait(wait), proceed),
            Action::Status => self.status().map(|s| Response::Status(Box::new(s))),
            Action::Reload => {
                self.waker.send(Msg::FromRequest(ToLoop::Reload));
                Ok(Response::Done)
            }
            Action::Shutdown { stop_services } => self.shutdown(stop_services, &**proceed),
        };
        result.unwrap_or_else(|e| {
            if let Some(change) = e.files_change() {
                self.waker.send(Msg::FilesChanged(change.to_string()));
            }
            Response::Error {
                message: e.to_string(),
                code: e.exit_code(),
            }
        })
    }

    fn act(
        &self,
        verb: Verb,
        selection: &Selection,
        wait: crate::api::Wait,
        proceed: &Proceed,
    ) -> Result<Response> {
        let mut sup = self.supervisor()?;
        sup.set_proceed(Some(proceed.clone()));
        let reports = crate::api::act_with(&mut sup, verb, selection, wait, &**proceed)?;
        Ok(Response::Reports { reports })
    }

    fn shutdown(&self, stop_services: bool, proceed: &dyn Fn() -> bool) -> Result<Response> {
        let reports = if stop_services {
            let mut sup = self.supervisor()?;
            crate::api::act(&mut sup, Verb::Stop, &Selection::All, proceed)?
        } else {
            Vec::new()
        };
        // The loop counts this request as the one waiting for the answer, not as one to
        // wait for, and waits for its answer to be written before the process exits.
        let (tx, rx) = mpsc::channel();
        self.waker
            .send(Msg::FromRequest(ToLoop::Shutdown(Some(tx))));
        let left_down = rx.recv().unwrap_or_default();
        Ok(Response::ShuttingDown { reports, left_down })
    }

    fn status(&self) -> Result<DaemonStatus> {
        let mut sup = self.supervisor()?;
        let running = sup.list()?.iter().filter(|s| s.state.is_running()).count();
        Ok(DaemonStatus {
            pid: self.shared.pid,
            start_time: self.shared.start_time,
            started_at: self.shared.started_at,
            version: env!("CARGO_PKG_VERSION").to_string(),
            running,
            adopted: self.shared.adopted.load(Ordering::Relaxed),
            unwatched: self.shared.unwatched.load(Ordering::Relaxed),
            pending_restarts: self.shared.pending.load(Ordering::Relaxed),
            home: self.home.root().to_path_buf(),
            containment: self.shared.containment.clone(),
            postgres: self
                .shared
                .postgres
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|s| s.snapshot()),
            counters: crate::metrics::COUNTERS.values(),
            http: self.shared.http.clone(),
        })
    }
}
