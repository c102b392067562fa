//! Warm supervisors for the daemon's threads: a request is served on a connection to the
//! state database that is already open, its schema read and its statements prepared.
//!
//! Opening one costs more than the request it serves. In a callgrind profile of a stop
//! request for a service that is not running, `Supervisor::open_with` (the request's own
//! connection, and one each that the log-rotation and health threads opened after it)
//! came to 1.65M instructions; with the pool the whole request costs the daemon
//! 0.28–0.31M (`bench/callgrind.sh`).
//!
//! A pool keeps at most [`MAX_IDLE`] idle supervisors, each with a page cache of at most
//! [`crate::supervisor::KEPT_CACHE_KIB`]; more are opened when more threads work at once
//! and closed when they come back to a full pool. The daemon has two pools (requests and rotation share one; the
//! health thread, whose context differs, has its own), so an idle daemon keeps a few
//! connections open, each with SQLite's parsed schema and the pages it read: the price
//! of answering from a warm one.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::home::Home;
use crate::supervisor::{Context, Supervisor};

/// Idle supervisors kept: one for a request, one for a thread that follows up on it
/// (rotation, health) or a concurrent request.
pub const MAX_IDLE: usize = 2;

/// Supervisors of one home and context, shared by the threads that use them.
pub struct Pool {
    home: Home,
    ctx: Context,
    idle: Mutex<Vec<Supervisor>>,
}

impl Pool {
    pub fn new(home: Home, ctx: Context) -> Arc<Pool> {
        Arc::new(Pool {
            home,
            ctx,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A supervisor to use now: an idle one, or a new one. It goes back to the pool when
    /// dropped.
    ///
    /// An idle one is used only while the database's files on disk are still the ones it
    /// has open; if they were deleted or replaced, every idle one is closed, and a new
    /// one fails to open (its context names the files the daemon opened first, see
    /// [`crate::supervisor::Context::files`]) with an error that says what changed.
    pub fn get(self: &Arc<Self>) -> Result<Pooled> {
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            match idle.pop() {
                Some(s) if s.files_changed().is_none() => Some(s),
                Some(_) => {
                    idle.clear();
                    None
                }
                None => None,
            }
        };
        let sup = match idle {
            Some(s) => s,
            None => Supervisor::open_with(self.home.clone(), self.ctx.clone())?,
        };
        Ok(Pooled {
            sup: Some(sup),
            pool: self.clone(),
        })
    }
}

/// A supervisor taken from a [`Pool`].
pub struct Pooled {
    sup: Option<Supervisor>,
    pool: Arc<Pool>,
}

impl Deref for Pooled {
    type Target = Supervisor;
    fn deref(&self) -> &Supervisor {
        self.sup.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Supervisor {
        self.sup.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(mut sup) = self.sup.take() else {
            return;
        };
        // A thread that panicked may have left it mid-way: closed, not reused. (Its open
        // transaction, if any, was rolled back when the transaction was dropped.)
        if std::thread::panicking() {
            return;
        }
        // Notices are for the caller that caused them; the next one starts with none. So
        // is a request's "does its client still wait" (see `Context::proceed`).
        sup.take_notices();
        sup.set_proceed(self.pool.ctx.proceed.clone());
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sup);
        }
    }
}
