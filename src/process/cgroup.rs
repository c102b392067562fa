//! cgroup v2 containment: each service instance in a cgroup of its own.
//!
//! A process group is a courtesy: a process leaves it with `setsid()`, and a program that
//! daemonizes itself leaves it behind. A cgroup is a boundary: a process cannot leave
//! one without write access to the hierarchy above it, every child it forks is born in
//! it, and `cgroup.kill` takes down everything inside at once. So wherever tend may create
//! cgroups, it puts every service there, and *membership is the proof* that a process is
//! the service's.
//!
//! # Layout
//!
//! ```text
//! <parent>                      tend's own cgroup (`0::` in /proc/self/cgroup), or $TEND_CGROUP
//! └── tend-<key>                one per state home (key: a hash of its path)
//!     ├── supervisor            the daemon moves itself here (the "no internal processes" rule)
//!     └── NAME.service          one per service: where its limits are set
//!         └── run-<ms>-<pid>-<n>  one per instance: the process writes itself into it before exec
//! ```
//!
//! A leaf per instance keeps what an earlier instance left behind apart from the new one:
//! a start that won its commit kills every other leaf of the service before the new
//! process may exec, without any chance of touching the process it has just started.
//!
//! Nothing here is trusted from a pid number alone: a member is pinned with a pidfd and
//! its membership read again afterwards (see [`Cgroup::pin_members`]).

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::handle::Handle;

/// The environment variable that turns cgroups off (`off`) or names the cgroup (a
/// directory on a cgroup2 mount) under which tend creates its own.
pub const ENV: &str = "TEND_CGROUP";

/// The leaf the daemon moves itself into.
pub const SUPERVISOR: &str = "supervisor";

/// How services of one home are contained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Containment {
    /// Each service in a cgroup under this root.
    Cgroup(Root),
    /// Process groups and sessions only; the reason cgroups are not used.
    ProcessGroup(String),
}

impl Containment {
    pub fn root(&self) -> Option<&Root> {
        match self {
            Containment::Cgroup(r) => Some(r),
            Containment::ProcessGroup(_) => None,
        }
    }

    /// `cgroup PATH` or `process-group (why)`, as `daemon status` and `doctor` say it.
    pub fn describe(&self) -> String {
        match self {
            Containment::Cgroup(r) => format!("cgroup {}", r.path.display()),
            Containment::ProcessGroup(why) => format!("process-group ({why})"),
        }
    }
}

/// `tend-<key>`: the cgroup of one state home.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    /// The directory of `tend-<key>` on the cgroup2 mount.
    pub path: PathBuf,
    /// The cgroup it was created in.
    pub parent: PathBuf,
}

/// The cgroup of a home's log writers, beside its `NAME.service` cgroups (a name no
/// service cgroup can have).
pub const WRITERS: &str = "log-writers";

/// The name of a home's cgroup: `tend-` and 16 hex digits of the SHA-256 of its path.
pub fn home_cgroup_name(home: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(home.as_os_str().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("tend-{hex}")
}

/// Finds where this process may contain the services of the home `home`: creates (or
/// finds) `tend-<key>` under its own cgroup, or the one `$TEND_CGROUP` names, and checks
/// that tend may move processes into it. Every reason not to is reported, not hidden.
pub fn detect(home: &Path) -> Containment {
    let name = home_cgroup_name(home);
    let parent = match std::env::var(ENV) {
        Ok(v) if v == "off" => return Containment::ProcessGroup(format!("{ENV}=off")),
        Ok(v) if !v.is_empty() => {
            let p = PathBuf::from(&v);
            if !p.is_absolute() || !is_cgroup2(&p) {
                return Containment::ProcessGroup(format!(
                    "{ENV}={v} is not a directory on a cgroup2 mount"
                ));
            }
            p
        }
        _ => match own_cgroup_dir() {
            Ok(p) => strip_own(&p, &name),
            Err(why) => return Containment::ProcessGroup(why),
        },
    };
    let path = parent.join(&name);
    if let Err(e) = mkdir(&path) {
        return Containment::ProcessGroup(format!(
            "cannot create {}: {}",
            path.display(),
            crate::error::io_reason(&e)
        ));
    }
    // Moving a process between cgroups needs write access to `cgroup.procs` of their
    // common ancestor: the parent, for a child forked by tend.
    for dir in [&parent, &path] {
        let procs = dir.join("cgroup.procs");
        if nix::unistd::access(&procs, nix::unistd::AccessFlags::W_OK).is_err() {
            return Containment::ProcessGroup(format!(
                "{} is not writable (the cgroup is not delegated to this user)",
                procs.display()
            ));
        }
    }
    if !path.join("cgroup.kill").exists() && !path.join("cgroup.freeze").exists() {
        return Containment::ProcessGroup(format!(
            "{} has neither cgroup.kill nor cgroup.freeze (kernel older than 5.2)",
            path.display()
        ));
    }
    Containment::Cgroup(Root { path, parent })
}

/// A daemon that moved itself into `<parent>/tend-<key>/supervisor` still belongs to
/// `<parent>`.
fn strip_own(own: &Path, name: &str) -> PathBuf {
    if own.file_name().is_some_and(|n| n == SUPERVISOR) {
        if let Some(home_cg) = own.parent() {
            if home_cg.file_name().is_some_and(|n| n == name) {
                if let Some(p) = home_cg.parent() {
                    return p.to_path_buf();
                }
            }
        }
    }
    own.to_path_buf()
}

/// The directory of this process's own cgroup v2.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| "no cgroup v2 (no 0:: line in /proc/self/cgroup)".to_string())?;
    let mount = cgroup2_mount().ok_or_else(|| "no cgroup2 file system is mounted".to_string())?;
    let rel = rel.trim().trim_start_matches('/');
    if rel.ends_with(" (deleted)") {
        return Err(format!("tend's own cgroup /{rel} was removed"));
    }
    Ok(if rel.is_empty() {
        mount
    } else {
        mount.join(rel)
    })
}

/// The mount point of the cgroup2 file system (see [`super::mounts`]).
pub use super::mounts::cgroup2_mount;

fn is_cgroup2(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

fn mkdir(p: &Path) -> io::Result<()> {
    match std::fs::create_dir(p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl Root {
    /// The cgroup of service `name` (every instance's leaf is inside it).
    pub fn service(&self, name: &str) -> Cgroup {
        Cgroup {
            path: self.path.join(format!("{name}.service")),
        }
    }

    /// Creates a new, empty leaf for an instance of service `name`.
    pub fn new_instance(&self, name: &str) -> io::Result<Cgroup> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let svc = self.service(name);
        mkdir(&svc.path)?;
        let leaf = svc.path.join(format!(
            "run-{}-{}-{}",
            crate::record::now_ms(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&leaf)?;
        Ok(Cgroup { path: leaf })
    }

    /// Moves the calling process into `<root>/supervisor` (the daemon: a cgroup whose
    /// children have controllers enabled may not hold processes itself).
    pub fn enter_supervisor(&self) -> io::Result<()> {
        let leaf = self.path.join(SUPERVISOR);
        mkdir(&leaf)?;
        std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
    }

    /// Whether `controller` (memory, cpu) can be enabled for services: it must be listed
    /// in the parent's `cgroup.controllers`.
    pub fn controller_available(&self, controller: &str) -> Result<(), String> {
        let file = self.parent.join("cgroup.controllers");
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.split_whitespace().any(|c| c == controller) {
            return Ok(());
        }
        Err(format!(
            "the {controller} controller is not available in {} (cgroup.controllers: {}); \
             it may be bound to a cgroup v1 hierarchy or not delegated",
            self.parent.display(),
            if text.trim().is_empty() {
                "none"
            } else {
                text.trim()
            }
        ))
    }

    /// Enables `controller` for the services' cgroups: in the parent's and the root's
    /// `cgroup.subtree_control`, and in the service's.
    pub fn enable(&self, controller: &str, service: &Cgroup) -> Result<(), String> {
        self.controller_available(controller)?;
        for dir in [&self.parent, &self.path, &service.path] {
            let file = dir.join("cgroup.subtree_control");
            let on = std::fs::read_to_string(&file).unwrap_or_default();
            if on.split_whitespace().any(|c| c == controller) {
                continue;
            }
            std::fs::write(&file, format!("+{controller}")).map_err(|e| {
                format!(
                    "cannot enable the {controller} controller in {}: {}{}",
                    file.display(),
                    crate::error::io_reason(&e),
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        " (that cgroup holds processes of its own: run the daemon, which \
                         moves itself into a leaf, or use a delegated cgroup)"
                    } else {
                        ""
                    }
                )
            })?;
        }
        Ok(())
    }
}

/// One cgroup directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    pub path: PathBuf,
}

/// Resource use of a cgroup, where the files exist.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// `cpu.stat` usage_usec (always there in cgroup v2).
    pub cpu_usec: Option<u64>,
    /// `memory.current` (needs the memory controller).
    pub memory_current: Option<u64>,
    /// `memory.peak` (needs the memory controller, Linux 5.19).
    pub memory_peak: Option<u64>,
}

impl Cgroup {
    pub fn at(path: impl Into<PathBuf>) -> Cgroup {
        Cgroup { path: path.into() }
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// The path of `cgroup.procs`, prepared for the forked child, which writes its own
    /// pid there before it may exec.
    pub fn procs_path(&self) -> CString {
        CString::new(self.path.join("cgroup.procs").as_os_str().as_bytes()).unwrap_or_default()
    }

    /// The pids in this cgroup and every cgroup below it.
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        self.walk(&mut |dir| {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        });
        out
    }

    /// Calls `f` for this directory and every cgroup below it, parents first.
    fn walk(&self, f: &mut dyn FnMut(&Path)) {
        fn go(dir: &Path, f: &mut dyn FnMut(&Path)) {
            f(dir);
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        go(&e.path(), f);
                    }
                }
            }
        }
        go(&self.path, f);
    }

    /// The leaves directly below (a service's instances).
    pub fn children(&self) -> Vec<Cgroup> {
        let Ok(rd) = std::fs::read_dir(&self.path) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| Cgroup { path: e.path() })
            .collect()
    }

    /// `populated` from `cgroup.events`: any process here or below. A cgroup that does
    /// not exist holds nothing.
    pub fn populated(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.events"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("populated ").map(|v| v.trim() == "1"))
            })
            .unwrap_or(false)
    }

    /// Pins every process in this cgroup (and below) with a pidfd, keeping only those
    /// still members after they were pinned: a pid read from `cgroup.procs` may have been
    /// reused by the time it is opened, but a process that is in our cgroup after its
    /// pidfd was opened is the one the pidfd refers to, and ours.
    pub fn pin_members(&self) -> Vec<Handle> {
        self.pids()
            .into_iter()
            .filter_map(|pid| self.pin(pid))
            .collect()
    }

    /// Pins `pid` if it is a member (here or below), proven as in [`Cgroup::pin_members`].
    pub fn pin(&self, pid: i32) -> Option<Handle> {
        let (h, _) = Handle::pin(pid)?;
        let inside = member_of(pid).is_some_and(|cg| cg.starts_with(&self.path));
        // Still there after the membership was read: the read was about it.
        (inside && h.stat().is_some()).then_some(h)
    }

    /// Kills everything in the cgroup at once: `cgroup.kill` (Linux 5.14), else freeze,
    /// SIGKILL each member, thaw.
    pub fn kill(&self) -> io::Result<()> {
        if !self.exists() {
            return Ok(());
        }
        let kill = self.path.join("cgroup.kill");
        if kill.exists() {
            return std::fs::write(kill, "1");
        }
        let freeze = self.path.join("cgroup.freeze");
        std::fs::write(&freeze, "1")?;
        for h in self.pin_members() {
            let _ = h.signal(nix::sys::signal::Signal::SIGKILL);
        }
        std::fs::write(&freeze, "0")
    }

    /// Waits until nothing runs in the cgroup (`populated 0`), up to `timeout`; true if
    /// it is empty. Woken by inotify on `cgroup.events`, with a slow recheck for the
    /// notifications the kernel drops.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        const RECHECK: Duration = Duration::from_millis(20);
        let deadline = Instant::now() + timeout;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok();
        let watching = inotify.as_ref().is_some_and(|i| {
            i.add_watch(&self.path.join("cgroup.events"), AddWatchFlags::IN_MODIFY)
                .is_ok()
        });
        loop {
            // Read after the watch is in place, so a change in between is not missed.
            if !self.populated() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match (&inotify, watching) {
                (Some(i), true) => {
                    // The last notification can fail to come: the soak saw it when a
                    // concurrent start removed its own leaf at once (the kernel delays
                    // a notification that follows another within 10 ms, and, as far
                    // as we can tell from its source, cancels it when the cgroup goes).
                    // So inotify only hurries the wait; it also looks again every
                    // RECHECK.
                    let mut fds = [PollFd::new(i.as_fd(), PollFlags::POLLIN)];
                    let ms = (left.min(RECHECK).as_millis() as i32).max(1);
                    let _ = poll(
                        &mut fds,
                        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                    );
                    let _ = i.read_events();
                }
                // No inotify (out of instances): look again shortly.
                _ => std::thread::sleep(left.min(Duration::from_millis(5))),
            }
        }
    }

    /// Removes this cgroup and every (empty) cgroup below it, deepest first.
    pub fn remove(&self) -> io::Result<()> {
        let mut dirs = Vec::new();
        self.walk(&mut |d| dirs.push(d.to_path_buf()));
        let mut first_err = None;
        for d in dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(d) {
                if e.kind() != io::ErrorKind::NotFound && first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CPU time and memory, where the files exist.
    pub fn usage(&self) -> Usage {
        let read_u64 = |f: &str| {
            std::fs::read_to_string(self.path.join(f))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        let cpu_usec = std::fs::read_to_string(self.path.join("cpu.stat"))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("usage_usec ")
                        .and_then(|v| v.trim().parse().ok())
                })
            });
        Usage {
            cpu_usec,
            memory_current: read_u64("memory.current"),
            memory_peak: read_u64("memory.peak"),
        }
    }

    /// `oom_kill` from `memory.events` (needs the memory controller).
    pub fn oom_kills(&self) -> Option<u64> {
        let t = std::fs::read_to_string(self.path.join("memory.events")).ok()?;
        t.lines().find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// Writes a limit file (`memory.max`, `cpu.weight`, `cpu.max`).
    pub fn set(&self, file: &str, value: &str) -> io::Result<()> {
        std::fs::write(self.path.join(file), value)
    }
}

/// The cgroup v2 directory process `pid` is in, from /proc/PID/cgroup.
pub fn member_of(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mount = cgroup2_mount()?;
    let rel = rel.trim().trim_start_matches('/');
    Some(if rel.is_empty() {
        mount
    } else {
        mount.join(rel)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let n = home_cgroup_name(Path::new("/home/u/.local/state/tend"));
        assert!(n.starts_with("tend-") && n.len() == 21, "{n}");
        assert_eq!(n, home_cgroup_name(Path::new("/home/u/.local/state/tend")));
        assert_ne!(n, home_cgroup_name(Path::new("/other")));
        let own = PathBuf::from("/sys/fs/cgroup/u.service")
            .join(&n)
            .join(SUPERVISOR);
        assert_eq!(
            strip_own(&own, &n),
            PathBuf::from("/sys/fs/cgroup/u.service")
        );
        let other = PathBuf::from("/sys/fs/cgroup/x/supervisor");
        assert_eq!(strip_own(&other, &n), other);
    }
}
