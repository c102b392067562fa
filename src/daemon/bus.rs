//! What the daemon's threads hand one another: messages to the event loop and the waker
//! that delivers them, the count of work in flight, and what the request threads may read
//! about the daemon. A leaf: it uses no other room of the daemon.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::api::LeftDown;
use crate::process::handle::Handle;
use crate::supervisor::Watch;

/// Requests served at once; more wait for none: they are told the daemon is busy.
pub const MAX_CONNECTIONS: usize = 64;

/// Messages to the event loop.
pub enum Msg {
    FromRequest(ToLoop),
    /// Pending restarts, as the database has them now.
    Timers(Vec<(String, i64)>),
    /// Adopted services to watch.
    Watch(Vec<(Handle, Watch)>),
    /// Startup adoption is done: accept requests and tell systemd.
    Ready,
    /// The database files on disk are no longer the ones the daemon opened: what changed.
    FilesChanged(String),
    /// After an adoption pass: how many recorded instances it could not check or watch
    /// (looked at again soon when any).
    Deferred(usize),
    /// Look at the log writers again in this long (ms): one could not be brought back
    /// or watched now, or one of their processes ended while they were looked at.
    WritersAgain {
        in_ms: i64,
    },
    /// One live process of each log writer the daemon did not start, in place of those
    /// watched so far: the end of any asks for a look at the writers.
    WatchWriters(Vec<Handle>),
}

/// What the serving threads may read about the daemon.
pub struct Shared {
    pub pid: i32,
    pub start_time: u64,
    pub started_at: i64,
    pub adopted: AtomicUsize,
    /// Running services not watched yet (see [`Msg::Deferred`]).
    pub unwatched: AtomicUsize,
    pub pending: AtomicUsize,
    /// The PostgreSQL listener's status, when one runs.
    pub postgres: Mutex<Option<Arc<crate::pg::listener::Status>>>,
    /// How services are contained: `cgroup PATH` or `process-group (why)`.
    pub containment: String,
    /// Where the HTTP API listens, when it does.
    pub http: Option<String>,
}

/// What the loop tells a shutdown requester when the daemon is about to exit.
pub type ShutdownReply = mpsc::Sender<Vec<LeftDown>>;

/// What a request thread asks of the event loop.
pub enum ToLoop {
    /// A request (or NOTIFY) changed what runs: re-read pending restarts and log files.
    Changed,
    Reload,
    /// Exit once requests in flight are done; answer on the sender.
    Shutdown(Option<ShutdownReply>),
}

/// Wakes the event loop with a message.
#[derive(Clone)]
pub struct Waker {
    tx: Arc<Mutex<mpsc::Sender<Msg>>>,
    wake: Arc<UnixStream>,
}

impl Waker {
    pub fn new(tx: mpsc::Sender<Msg>, wake: UnixStream) -> Waker {
        Waker {
            tx: Arc::new(Mutex::new(tx)),
            wake: Arc::new(wake),
        }
    }

    pub fn send(&self, msg: Msg) {
        let _ = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(msg);
        let _ = (&*self.wake).write(&[1]);
    }
}

/// Counts requests in flight, so a shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    /// Set when the daemon is going away: nothing new is started.
    closing: AtomicBool,
}

impl InFlight {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Counts in work that does not come through the socket (a NOTIFY command); `None`
    /// when the daemon is closing.
    pub fn enter_always(self: &Arc<Self>) -> Option<Ticket> {
        if self.closing() {
            return None;
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        Some(Ticket(self.clone()))
    }

    /// Counts one request in; `None` when the daemon is closing or at capacity.
    pub fn enter(self: &Arc<Self>) -> Option<Ticket> {
        if self.closing() {
            return None;
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        if n >= MAX_CONNECTIONS {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Ticket(self.clone()))
    }
}

/// One request in flight; counted out when dropped.
pub struct Ticket(Arc<InFlight>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}
