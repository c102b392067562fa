//! Restart on change: the `watch` setting's globs, on a thread of its own.
//!
//! The thread sleeps on one inotify instance. Each glob is split into the directory
//! before its first wildcard (the base) and the rest; the base is watched (recursively
//! for `**`, else to the depth the pattern reaches), directories created later under it
//! join the watch. A change to a file that matches a service's globs (and is not ignored:
//! `.git`, editor swap and backup files, the state home's logs and the service's own log
//! files) marks the service; once no matching change has come for [`QUIET`] (or
//! [`AT_MOST`] after the first, for a tree that never stops changing), the marked
//! services that run are restarted, with the running services that require them, as
//! one `tend restart` would. So a burst of saves is one restart.
//!
//! Limits are reported, never fatal: a directory that cannot be read or watched
//! (permissions, `fs.inotify.max_user_watches` reached) is named in the log once per
//! sync, and the rest is watched. A lost event queue (`IN_Q_OVERFLOW`) counts as a
//! change to every watched service: a change may have been missed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tracing::{error, info, warn};

use super::bus::InFlight;
use super::pool::Pool;
use crate::api::{Selection, Verb};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::record::event;
use crate::service::Service;

/// A service is restarted once no matching change has come for this long.
pub const QUIET: Duration = Duration::from_millis(300);
/// ... or this long after the first change of a burst, whichever comes first.
pub const AT_MOST: Duration = Duration::from_secs(3);
/// Directories watched at most (all services together): beyond this, a glob is too wide
/// to be meant, and the rest is named in the log as not watched.
pub const MAX_DIRS: usize = 20_000;

/// Asks the watch thread to read the definitions again.
#[derive(Clone)]
pub struct Resync(Arc<UnixStream>);

impl Resync {
    pub fn request(&self) {
        let _ = (&*self.0).write(&[1]);
    }
}

pub fn start(home: Home, pool: Arc<Pool>, in_flight: Arc<InFlight>) -> Result<Resync> {
    let (read, write) = UnixStream::pair().map_err(|e| Error::Daemon {
        message: format!("watch wake pipe: {e}"),
    })?;
    let _ = read.set_nonblocking(true);
    let _ = write.set_nonblocking(true);
    std::thread::Builder::new()
        .name("tend-watch".into())
        .stack_size(512 * 1024)
        .spawn(move || run(home, pool, read, in_flight))
        .map_err(|e| Error::Daemon {
            message: format!("cannot start the file watch thread: {e}"),
        })?;
    Ok(Resync(Arc::new(write)))
}

/// One service's patterns.
struct Spec {
    name: String,
    set: GlobSet,
    /// Its own log files: written by the service, never a reason to restart it.
    own: Vec<PathBuf>,
}

/// A watched directory: which services' patterns may match below it, and how much
/// deeper to watch (`None`: all the way down).
#[derive(Clone)]
struct Dir {
    path: PathBuf,
    services: BTreeSet<usize>,
    depth: Option<usize>,
}

struct Watching {
    inotify: Inotify,
    specs: Vec<Spec>,
    dirs: HashMap<WatchDescriptor, Dir>,
    count: usize,
    logs: PathBuf,
    /// Why some directories are not watched (said once per sync).
    refused: Vec<String>,
}

fn run(home: Home, pool: Arc<Pool>, read: UnixStream, in_flight: Arc<InFlight>) {
    let mut watching: Option<Watching> = None;
    let mut dirty = true;
    let mut version: Option<i64> = None;
    // Marked services: first change, last change.
    let mut pending: BTreeMap<String, (Instant, Instant)> = BTreeMap::new();
    loop {
        if dirty {
            dirty = false;
            match pool
                .get()
                .and_then(|mut sup| sup.services_if_changed(version))
            {
                Ok(Some((v, services))) => {
                    version = Some(v);
                    watching = sync(&home, &services);
                    pending.retain(|n, _| {
                        watching
                            .as_ref()
                            .is_some_and(|w| w.specs.iter().any(|s| &s.name == n))
                    });
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "watch: cannot read the definitions"),
            }
        }
        let due = pending
            .values()
            .map(|(first, last)| (*last + QUIET).min(*first + AT_MOST))
            .min();
        let timeout = match due {
            None => PollTimeout::NONE,
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis() + 1;
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::NONE)
            }
        };
        let mut fds = vec![PollFd::new(read.as_fd(), PollFlags::POLLIN)];
        if let Some(w) = &watching {
            fds.push(PollFd::new(w.inotify.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                error!(error = %e, "watch: poll failed; files are no longer watched");
                return;
            }
        }
        let woken = fds[0].revents().is_some_and(|r| !r.is_empty());
        let changed = fds
            .get(1)
            .is_some_and(|f| f.revents().is_some_and(|r| !r.is_empty()));
        drop(fds);
        if woken {
            let mut buf = [0u8; 64];
            while matches!((&read).read(&mut buf), Ok(n) if n > 0) {}
            dirty = true;
        }
        if changed {
            if let Some(w) = &mut watching {
                let now = Instant::now();
                for name in w.changes() {
                    pending
                        .entry(name)
                        .and_modify(|(_, last)| *last = now)
                        .or_insert((now, now));
                }
            }
        }
        let now = Instant::now();
        let ready: Vec<String> = pending
            .iter()
            .filter(|(_, (first, last))| *last + QUIET <= now || *first + AT_MOST <= now)
            .map(|(n, _)| n.clone())
            .collect();
        if ready.is_empty() {
            continue;
        }
        for n in &ready {
            pending.remove(n);
        }
        // None once the daemon is going away: nothing new is begun.
        let Some(_ticket) = in_flight.enter_always() else {
            return;
        };
        restart(&pool, &ready);
    }
}

/// Restarts the changed services that run, and the running services that require them
/// (directly or not).
fn restart(pool: &Arc<Pool>, changed: &[String]) {
    let mut sup = match pool.get() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "watch: cannot restart changed services");
            return;
        }
    };
    let list = match sup.list() {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "watch: cannot restart changed services");
            return;
        }
    };
    let services: Vec<&Service> = list.iter().map(|s| &s.service).collect();
    let running: BTreeSet<&str> = list
        .iter()
        .filter(|s| s.state.is_running())
        .map(|s| s.service.name.as_str())
        .collect();
    let mut chosen: BTreeSet<String> = changed
        .iter()
        .filter(|n| running.contains(n.as_str()))
        .cloned()
        .collect();
    for n in chosen.clone() {
        let _ = sup.record(&n, event::WATCH, "a watched file changed: restarting");
    }
    // Those that require a chosen one, to a fixed point.
    loop {
        let more: Vec<String> = services
            .iter()
            .filter(|s| running.contains(s.name.as_str()) && !chosen.contains(&s.name))
            .filter(|s| s.settings.requires.iter().any(|r| chosen.contains(r)))
            .map(|s| s.name.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        for n in more {
            let _ = sup.record(
                &n,
                event::WATCH,
                "a service it requires changed: restarting",
            );
            chosen.insert(n);
        }
    }
    if chosen.is_empty() {
        return;
    }
    let names: Vec<String> = chosen.into_iter().collect();
    info!(services = ?names, "watched files changed: restarting");
    match crate::api::act(
        &mut sup,
        Verb::Restart,
        &Selection::Names { names },
        &|| true,
    ) {
        Ok(reports) => {
            for r in reports {
                if let crate::api::Outcome::Error { message, .. } = &r.result {
                    warn!(service = %r.name, error = %message, "watch: restart failed");
                }
            }
        }
        Err(e) => warn!(error = %e, "watch: restart failed"),
    }
}

/// The part of a pattern before its first wildcard, as a directory, and how many path
/// components deeper the pattern may reach (`None` with `**`).
fn split(pattern: &Path) -> (PathBuf, Option<usize>) {
    let mut base = PathBuf::new();
    let mut rest: Vec<String> = Vec::new();
    for c in pattern.components() {
        let text = c.as_os_str().to_string_lossy();
        if rest.is_empty() && !text.contains(['*', '?', '[', '{']) {
            base.push(c);
        } else {
            rest.push(text.into_owned());
        }
    }
    if rest.is_empty() {
        // A plain file name: its directory, that directory only.
        let dir = base.parent().map(Path::to_path_buf).unwrap_or_default();
        return (dir, Some(0));
    }
    if rest.iter().any(|r| r.contains("**")) {
        (base, None)
    } else {
        (base, Some(rest.len() - 1))
    }
}

/// Editor swap and backup files, and version control: never a reason to restart.
fn ignored_name(name: &str) -> bool {
    name == ".git"
        || name == "4913"
        || name.ends_with('~')
        || name.starts_with(".#")
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
}

/// Inside a `.git` directory: a commit or a checkout there is not an edit.
fn in_git(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == ".git")
}

fn sync(home: &Home, services: &[Service]) -> Option<Watching> {
    let wanted: Vec<&Service> = services
        .iter()
        .filter(|s| !s.settings.watch.0.is_empty())
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let inotify = match Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK) {
        Ok(i) => i,
        Err(e) => {
            warn!(error = %e, "watch: cannot create an inotify instance \
                (fs.inotify.max_user_instances?): files are not watched");
            return None;
        }
    };
    let mut w = Watching {
        inotify,
        specs: Vec::new(),
        dirs: HashMap::new(),
        count: 0,
        logs: home.logs_dir(),
        refused: Vec::new(),
    };
    let mut roots: Vec<(PathBuf, usize, Option<usize>)> = Vec::new();
    for svc in wanted {
        let mut b = GlobSetBuilder::new();
        for g in &svc.settings.watch.0 {
            let full = svc.settings.cwd.join(g);
            let glob = GlobBuilder::new(&full.to_string_lossy())
                .literal_separator(true)
                .build();
            match glob {
                Ok(glob) => {
                    b.add(glob);
                }
                Err(e) => {
                    warn!(service = %svc.name, pattern = %g, error = %e, "watch: bad pattern");
                    continue;
                }
            }
            let (base, depth) = split(&full);
            roots.push((base, w.specs.len(), depth));
        }
        let set = match b.build() {
            Ok(s) => s,
            Err(e) => {
                warn!(service = %svc.name, error = %e, "watch: bad patterns");
                continue;
            }
        };
        w.specs.push(Spec {
            name: svc.name.clone(),
            set,
            own: vec![svc.settings.stdout.clone(), svc.settings.stderr.clone()],
        });
    }
    for (base, idx, depth) in roots {
        // A base that does not exist yet: its nearest existing ancestor, all the way
        // down (the directory may be created later).
        let mut dir = base.clone();
        let mut depth = depth;
        while !dir.is_dir() {
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => {
                    dir = p.to_path_buf();
                    depth = None;
                }
                _ => break,
            }
        }
        w.add_tree(&dir, idx, depth);
    }
    let names: Vec<&str> = w.specs.iter().map(|s| s.name.as_str()).collect();
    info!(services = ?names, directories = w.count, "watching files");
    for r in w.refused.drain(..) {
        warn!("watch: {r}");
    }
    Some(w)
}

impl Watching {
    /// Watches `dir` and its subdirectories down to `depth` for service `idx`.
    fn add_tree(&mut self, dir: &Path, idx: usize, depth: Option<usize>) {
        let mut stack = vec![(dir.to_path_buf(), depth)];
        while let Some((d, depth)) = stack.pop() {
            if d.starts_with(&self.logs) || in_git(&d) {
                continue;
            }
            if !self.add_one(&d, idx, depth) {
                continue;
            }
            if depth == Some(0) {
                continue;
            }
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) => {
                    self.refused.push(format!(
                        "cannot read {}: {}: changes below it are not seen",
                        d.display(),
                        crate::error::io_reason(&e)
                    ));
                    continue;
                }
            };
            for e in entries.flatten() {
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                let name = e.file_name();
                if is_dir && !ignored_name(&name.to_string_lossy()) {
                    stack.push((e.path(), depth.map(|n| n - 1)));
                }
            }
        }
    }

    /// Watches one directory; `false` when it could not be.
    fn add_one(&mut self, d: &Path, idx: usize, depth: Option<usize>) -> bool {
        if self.count >= MAX_DIRS {
            if self.count == MAX_DIRS {
                self.refused.push(format!(
                    "more than {MAX_DIRS} directories to watch: {} and others are not \
                     watched (narrow the watch patterns)",
                    d.display()
                ));
                self.count += 1;
            }
            return false;
        }
        let flags = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ONLYDIR;
        match self.inotify.add_watch(d, flags) {
            Ok(wd) => {
                let entry = self.dirs.entry(wd).or_insert_with(|| Dir {
                    path: d.to_path_buf(),
                    services: BTreeSet::new(),
                    depth,
                });
                entry.services.insert(idx);
                // The widest reach asked for wins.
                entry.depth = match (entry.depth, depth) {
                    (None, _) | (_, None) => None,
                    (Some(a), Some(b)) => Some(a.max(b)),
                };
                self.count += 1;
                true
            }
            Err(Errno::ENOSPC) => {
                self.refused.push(format!(
                    "the limit on inotify watches is reached (fs.inotify.max_user_watches = \
                     {}): {} and what is below it are not watched; raise it with sysctl",
                    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|_| "?".into()),
                    d.display()
                ));
                false
            }
            Err(e) => {
                self.refused.push(format!(
                    "cannot watch {}: {e}: changes below it are not seen",
                    d.display()
                ));
                false
            }
        }
    }

    /// Reads what inotify has; the services one of whose files changed.
    fn changes(&mut self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        loop {
            let events = match self.inotify.read_events() {
                Ok(e) if !e.is_empty() => e,
                Ok(_) | Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "watch: cannot read file events");
                    break;
                }
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    warn!(
                        "watch: the kernel's event queue overflowed; restarting every \
                           watched service, as a change may have been missed"
                    );
                    out.extend(self.specs.iter().map(|s| s.name.clone()));
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.dirs.remove(&ev.wd);
                    continue;
                }
                let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
                    continue;
                };
                let Some(name) = ev.name else {
                    continue;
                };
                let name_text = name.to_string_lossy();
                if ignored_name(&name_text) {
                    continue;
                }
                let path = dir.path.join(&name);
                if path.starts_with(&self.logs) || in_git(&path) {
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_ISDIR) {
                    // A new directory joins the watch (where the pattern reaches).
                    if ev
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                        && dir.depth != Some(0)
                    {
                        for &idx in &dir.services {
                            self.add_tree(&path, idx, dir.depth.map(|n| n - 1));
                        }
                        for r in self.refused.drain(..) {
                            warn!("watch: {r}");
                        }
                    }
                    continue;
                }
                for &idx in &dir.services {
                    let spec = &self.specs[idx];
                    if spec.own.contains(&path) {
                        continue;
                    }
                    if spec.set.is_match(&path) {
                        out.insert(spec.name.clone());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_finds_the_base_and_depth() {
        assert_eq!(split(Path::new("/p/src/**/*.py")), ("/p/src".into(), None));
        assert_eq!(split(Path::new("/p/src/*.py")), ("/p/src".into(), Some(0)));
        assert_eq!(split(Path::new("/p/*/x/*.py")), ("/p".into(), Some(2)));
        assert_eq!(split(Path::new("/p/app.toml")), ("/p".into(), Some(0)));
    }

    #[test]
    fn swap_files_and_git_are_ignored() {
        for n in [".git", "4913", "a.py~", ".#a.py", ".a.py.swp", ".a.py.swx"] {
            assert!(ignored_name(n), "{n}");
        }
        for n in ["a.py", "git", "swp.py"] {
            assert!(!ignored_name(n), "{n}");
        }
        assert!(in_git(Path::new("/p/.git/index")));
        assert!(!in_git(Path::new("/p/git/index")));
    }
}
