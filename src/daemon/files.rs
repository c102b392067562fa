//! Noticing that the database files on disk are no longer the ones the daemon opened.
//!
//! The daemon's connections stay open for its lifetime, so they are bound to the files
//! they found (see [`Files`]). Each write checks them before and after, and a pooled
//! connection is checked when it is taken; this watch makes the daemon notice at once,
//! even while idle: a thread blocked in `read(2)` on an inotify watch of the state home,
//! woken when anything there is deleted or renamed (or the home itself is). It then
//! compares the files (three `stat`s) and tells the event loop what changed; the loop
//! makes the daemon unhealthy (see [`super::event_loop`]). An idle daemon spends nothing
//! on it.

use std::path::PathBuf;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tracing::{debug, warn};

use super::bus::{Msg, Waker};
use crate::home::Home;
use crate::store::Files;

/// Watches the home of `files` (the database files the daemon opened first) and tells the
/// loop through `waker` once they are no longer the ones on disk. Without inotify (no
/// instance left) it says so in the log: the checks of each write and of each pooled
/// connection still refuse, and the worker and request threads then tell the loop.
pub fn watch(home: &Home, files: Files, waker: Waker) {
    let paths = Files::paths(&home.db_path());
    let inotify = match start(home, &paths) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, home = %home.root().display(),
                "cannot watch the state home: a deleted or replaced database file is \
                 noticed at the next use of the database instead of at once");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("tend-files".into())
        .stack_size(64 * 1024)
        .spawn(move || run(inotify, files, paths, waker));
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the thread watching the database files");
    }
}

/// Watches the home, and the directory of the WAL when it is elsewhere (`tend.db` a
/// symlink to another directory: SQLite keeps the WAL beside the real file).
fn start(home: &Home, paths: &[PathBuf; 3]) -> nix::Result<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    let mut dirs = vec![home.root()];
    dirs.extend(paths[1].parent().filter(|d| *d != home.root()));
    for dir in dirs {
        // A file is deleted or replaced (`rm`, `mv x tend.db`, `ln -f`), or the directory
        // itself goes: nothing SQLite does to its own files while the daemon has them
        // open.
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF,
        )?;
    }
    Ok(inotify)
}

fn run(inotify: Inotify, files: Files, paths: [PathBuf; 3], waker: Waker) {
    // Once before the first event: a change between the daemon's opening the database
    // and the watch's start has no event of its own.
    loop {
        if let Some(change) = files.changes_at(&paths) {
            waker.send(Msg::FilesChanged(change));
            return;
        }
        // Any deletion or rename in the home (a log rotated there, a stale socket) is a
        // reason to look; three `stat`s tell whether it was one of the database's files.
        match inotify.read_events() {
            Ok(events) => debug!(count = events.len(), "the state home changed"),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                warn!(error = %e, "watching the database files failed; they are still checked before each write");
                return;
            }
        }
    }
}
