//! Health and readiness checks on a thread of their own: a check may take up to its
//! timeout (a command that hangs is killed then), and none of that may ever delay the
//! event loop. The thread sleeps in `poll(2)` until the next check is due, or until the
//! loop says what runs has changed ([`Resync`]); with no service to check it sleeps
//! without a timeout, so an idle daemon costs nothing.
//!
//! - `health`: run every `every`; after `failures` failures in a row the instance is
//!   killed with an `unhealthy` event holding the last check's output, and the restart
//!   policy decides what follows (as for any crash).
//! - `ready`: an instance still `starting` (started without `--wait`) is checked until
//!   its check passes (then it is `running`) or its ready timeout has passed.
//!
//! Checks run one after another on this thread: a slow check delays the next ones, never
//! the event loop, a restart or a request.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{error, info, warn};

use crate::error::{Error, Result};
use crate::record::now_ms;
use crate::supervisor::Supervisor;

use super::bus::InFlight;
use super::pool::Pool;

/// How often a `starting` instance's readiness check is tried.
const READY_EVERY: Duration = Duration::from_millis(250);
/// How long one readiness try may take.
const READY_TRY: Duration = Duration::from_secs(1);

/// Asks the health thread to re-read what to check.
#[derive(Clone)]
pub struct Resync(std::sync::Arc<UnixStream>);

impl Resync {
    pub fn request(&self) {
        let _ = (&*self.0).write(&[1]);
    }
}

/// What the thread knows about one service.
struct Entry {
    health_due: Option<Instant>,
    ready_due: Option<Instant>,
    /// Failed health checks in a row, and the instance they were about.
    failures: u32,
    instance: Option<(i32, u64)>,
}

/// `pool`: the health thread's own supervisors (their context says a daemon watches the
/// services, so an exit it notices is left to the worker).
/// `in_flight`: the daemon's count of work in progress; a round of checks counts in it,
/// so a shutdown waits until the check it interrupts has been killed and cleaned up.
pub fn start(pool: Arc<Pool>, in_flight: Arc<InFlight>) -> Result<Resync> {
    let (read, write) = UnixStream::pair().map_err(|e| Error::Daemon {
        message: format!("health wake pipe: {e}"),
    })?;
    let _ = read.set_nonblocking(true);
    let _ = write.set_nonblocking(true);
    std::thread::Builder::new()
        .name("tend-health".into())
        .stack_size(512 * 1024)
        .spawn(move || run(pool, read, in_flight))
        .map_err(|e| Error::Daemon {
            message: format!("cannot start the health check thread: {e}"),
        })?;
    Ok(Resync(std::sync::Arc::new(write)))
}

fn run(pool: Arc<Pool>, read: UnixStream, in_flight: Arc<InFlight>) {
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut checked = Checked::default();
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            if let Ok(mut sup) = pool.get() {
                sync(&mut sup, &mut checked, &mut entries);
            }
        }
        let next = entries
            .values()
            .flat_map(|e| [e.health_due, e.ready_due])
            .flatten()
            .min();
        let timeout = match next {
            None => PollTimeout::NONE,
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::NONE)
            }
        };
        let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                error!(error = %e, "health checks: poll failed; health checks stop");
                return;
            }
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            let mut buf = [0u8; 64];
            while matches!((&read).read(&mut buf), Ok(n) if n > 0) {}
            dirty = true;
        }
        let now = Instant::now();
        let due: Vec<String> = entries
            .iter()
            .filter(|(_, e)| {
                e.health_due.is_some_and(|d| d <= now) || e.ready_due.is_some_and(|d| d <= now)
            })
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() {
            continue;
        }
        // None once the daemon is going away: no new check is begun.
        let Some(_ticket) = in_flight.enter_always() else {
            return;
        };
        let Ok(mut sup) = pool.get() else {
            continue;
        };
        for name in due {
            let Some(e) = entries.get_mut(&name) else {
                continue;
            };
            if e.ready_due.is_some_and(|d| d <= now) {
                e.ready_due = None;
                match sup.wait_ready(&name, Some(READY_TRY)) {
                    Ok(crate::supervisor::StartOutcome::Ready { pid, .. }) => {
                        info!(service = %name, pid, "ready")
                    }
                    // Tried again at the next sync if it is still starting and within
                    // its ready timeout.
                    _ => dirty = true,
                }
            }
            if e.health_due.is_some_and(|d| d <= now) {
                check(&mut sup, &name, e);
            }
        }
    }
}

/// Which services have a check, as of a version of the definitions.
#[derive(Default)]
struct Checked {
    version: Option<i64>,
    names: Vec<String>,
}

/// Re-reads which services to check, keeping the failure counts of those that remain.
/// The definitions are read again only when they changed; then the services that have a
/// check are looked at (running? starting?).
fn sync(sup: &mut Supervisor, checked: &mut Checked, entries: &mut HashMap<String, Entry>) {
    match sup.services_if_changed(checked.version) {
        Ok(Some((version, services))) => {
            checked.version = Some(version);
            checked.names = crate::supervisor::health::checked(&services);
        }
        Ok(None) => {}
        Err(e) => {
            error!(error = %e, "reading services for health checks failed");
            return;
        }
    }
    let watched = match sup.watched(&checked.names) {
        Ok(w) => w,
        Err(e) => {
            error!(error = %e, "reading services for health checks failed");
            return;
        }
    };
    let now = Instant::now();
    let mut next: HashMap<String, Entry> = HashMap::new();
    for w in watched {
        let old = entries.remove(&w.name);
        let ready_due = w.starting.and_then(|(_, since, timeout)| {
            let deadline = since + timeout.as_millis() as i64;
            (now_ms() < deadline).then_some(now + READY_EVERY)
        });
        let health_due = w.health.as_ref().map(|p| {
            old.as_ref()
                .and_then(|o| o.health_due)
                .unwrap_or(now + p.every())
        });
        next.insert(
            w.name,
            Entry {
                health_due,
                ready_due,
                failures: old.as_ref().map_or(0, |o| o.failures),
                instance: old.and_then(|o| o.instance),
            },
        );
    }
    *entries = next;
}

/// Runs one health check and acts on its result.
fn check(sup: &mut Supervisor, name: &str, e: &mut Entry) {
    let checked = match sup.check_health(name) {
        Ok(Some(c)) => c,
        Ok(None) => {
            // Not running (or no check any more): look again after a while.
            e.failures = 0;
            e.instance = None;
            e.health_due = Some(Instant::now() + crate::service::probe::DEFAULT_HEALTH_EVERY);
            return;
        }
        Err(err) => {
            warn!(service = %name, error = %err, "health check could not run");
            e.health_due = Some(Instant::now() + crate::service::probe::DEFAULT_HEALTH_EVERY);
            return;
        }
    };
    e.health_due = Some(Instant::now() + checked.probe.every());
    let instance = Some((checked.pid, checked.start_time));
    if e.instance != instance {
        e.instance = instance;
        e.failures = 0;
    }
    match checked.result {
        Ok(()) => e.failures = 0,
        Err(why) => {
            e.failures += 1;
            let limit = checked.probe.failures();
            warn!(service = %name, failures = e.failures, limit, output = %why, "health check failed");
            if e.failures >= limit {
                e.failures = 0;
                let detail = format!(
                    "pid {}: {} health check(s) failed in a row; last: {why}",
                    checked.pid, limit
                );
                match sup.unhealthy(name, checked.pid, checked.start_time, &detail) {
                    Ok(true) => info!(service = %name, pid = checked.pid, "unhealthy: killed"),
                    Ok(false) => {}
                    Err(err) => error!(service = %name, error = %err, "unhealthy: could not act"),
                }
            }
        }
    }
}
