//! Log rotation on a thread of its own, driven by inotify on the directories holding log
//! files: no polling, a quiet service costs nothing, and copying a large log never
//! delays the event loop.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tracing::{debug, error, info, warn};

use crate::error::{Error, Result};
use crate::supervisor::Supervisor;

use super::pool::Pool;

/// Asks the rotation thread to re-read which files to watch.
#[derive(Clone)]
pub struct Resync(std::sync::Arc<UnixStream>);

impl Resync {
    pub fn request(&self) {
        let _ = (&*self.0).write(&[1]);
    }
}

/// Starts the rotation thread.
pub fn start(pool: Arc<Pool>) -> Result<Resync> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| {
        Error::Daemon {
            message: format!("inotify: {e}"),
        }
    })?;
    let (read, write) = UnixStream::pair().map_err(|e| Error::Daemon {
        message: format!("rotation wake pipe: {e}"),
    })?;
    let _ = read.set_nonblocking(true);
    let _ = write.set_nonblocking(true);
    let mut r = Rotation {
        inotify,
        dirs: HashMap::new(),
        watched: HashSet::new(),
        limits: HashMap::new(),
        version: None,
    };
    std::thread::Builder::new()
        .name("tend-logs".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut dirty = true;
            loop {
                if dirty {
                    dirty = false;
                    // A connection from the requests' pool, given back at once.
                    if let Ok(mut s) = pool.get() {
                        r.sync(&mut s);
                    }
                }
                let mut fds = [
                    PollFd::new(read.as_fd(), PollFlags::POLLIN),
                    PollFd::new(r.inotify.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        error!(error = %e, "log rotation: poll failed; rotation stops");
                        return;
                    }
                }
                let hit = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                if hit(&fds[0]) {
                    let mut buf = [0u8; 64];
                    while matches!((&read).read(&mut buf), Ok(n) if n > 0) {}
                    dirty = true;
                }
                if hit(&fds[1]) {
                    r.on_events();
                }
            }
        })
        .map_err(|e| Error::Daemon {
            message: format!("cannot start the log rotation thread: {e}"),
        })?;
    Ok(Resync(std::sync::Arc::new(write)))
}

struct Rotation {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    watched: HashSet<PathBuf>,
    /// Log file -> size limit.
    limits: HashMap<PathBuf, u64>,
    /// The definitions version `limits` were read at.
    version: Option<i64>,
}

impl Rotation {
    /// Re-reads which files to watch, and rotates any that are already too large.
    /// False when the database could not be read.
    ///
    /// Only when the definitions changed since the last sync (the thread is asked after
    /// every request): growth of the files watched meanwhile is seen through inotify.
    fn sync(&mut self, sup: &mut Supervisor) -> bool {
        let services = match sup.services_if_changed(self.version) {
            Ok(Some((version, s))) => {
                self.version = Some(version);
                s
            }
            Ok(None) => return true,
            Err(e) => {
                error!(error = %e, "reading services for log rotation failed");
                return false;
            }
        };
        self.limits.clear();
        for s in &services {
            // A service with a log writer has its files rotated by the writer, their
            // only writer: renaming under it is lossless, copying here would not be.
            if s.settings.log_max_bytes == 0
                || s.settings.log_timestamps != crate::service::LogTimestamps::Off
            {
                continue;
            }
            for path in crate::logs::files(&s.settings.stdout, &s.settings.stderr) {
                if let Some(dir) = path.parent().map(PathBuf::from) {
                    if !self.watched.contains(&dir) {
                        match self.inotify.add_watch(&dir, AddWatchFlags::IN_MODIFY) {
                            Ok(wd) => {
                                self.dirs.insert(wd, dir.clone());
                                self.watched.insert(dir);
                            }
                            Err(e) => {
                                warn!(dir = %dir.display(), error = %e, "cannot watch log directory")
                            }
                        }
                    }
                }
                self.limits.insert(path, s.settings.log_max_bytes);
            }
        }
        let paths: Vec<PathBuf> = self.limits.keys().cloned().collect();
        for p in paths {
            self.check(&p);
        }
        true
    }

    fn on_events(&mut self) {
        let mut touched = HashSet::new();
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for ev in events {
                if let (Some(dir), Some(name)) = (self.dirs.get(&ev.wd), ev.name) {
                    touched.insert(dir.join(name));
                }
            }
        }
        for p in touched {
            if self.limits.contains_key(&p) {
                self.check(&p);
            }
        }
    }

    fn check(&self, path: &PathBuf) {
        let Some(&max) = self.limits.get(path) else {
            return;
        };
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_file() && meta.len() > max {
            match crate::logs::rotate(path, crate::service::LOG_BACKUPS) {
                Ok(true) => info!(path = %path.display(), size = meta.len(), "rotated log"),
                Ok(false) => debug!(path = %path.display(), "log below one block; not rotated"),
                Err(e) => warn!(path = %path.display(), error = %e, "log rotation failed"),
            }
        }
    }
}
