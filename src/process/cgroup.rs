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
//!     ├── checks/run-<ms>-<pid>-<n>  one per run of a check command, removed after it
//!     ├── hooks/run-<ms>-<pid>-<n>   one per run of a hook (`on_exit`...), removed after it
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

/// The cgroup of a home's check commands (`ready`/`health` `cmd`), beside the
/// services' and the log writers': each run gets a leaf of its own in it.
pub const CHECKS: &str = "checks";

/// The cgroup of a home's hooks (`on_exit`...), run as check commands are: a leaf per
/// run.
pub const HOOKS: &str = "hooks";

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
    // The home's cgroup is removed when nothing uses it (see [`Root::remove_unused`]): one
    // that goes between its creation and the checks is created again.
    let mut tries = 0;
    loop {
        tries += 1;
        match check_root(&parent, &path) {
            Err(_) if tries < 3 && !path.exists() => continue,
            Err(why) => return Containment::ProcessGroup(why),
            Ok(()) => return Containment::Cgroup(Root { path, parent }),
        }
    }
}

/// Creates (or finds) the home's cgroup `path` under `parent` and checks that tend may
/// use it.
fn check_root(parent: &Path, path: &Path) -> Result<(), String> {
    if let Err(e) = mkdir(path) {
        return Err(format!(
            "cannot create {}: {}",
            path.display(),
            crate::error::io_reason(&e)
        ));
    }
    // Moving a process between cgroups needs write access to `cgroup.procs` of their
    // common ancestor: the parent, for a child forked by tend.
    for dir in [parent, path] {
        let procs = dir.join("cgroup.procs");
        if nix::unistd::access(&procs, nix::unistd::AccessFlags::W_OK).is_err() {
            return Err(format!(
                "{} is not writable (the cgroup is not delegated to this user)",
                procs.display()
            ));
        }
    }
    if !path.join("cgroup.kill").exists() && !path.join("cgroup.freeze").exists() {
        return Err(format!(
            "{} has neither cgroup.kill nor cgroup.freeze (kernel older than 5.2)",
            path.display()
        ));
    }
    Ok(())
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

    /// Creates a new, empty leaf for an instance of service `name` (named
    /// `run-<ms>-<pid>-<n>`, see [`creator_alive`]). The service's cgroup, and the
    /// home's, are created too where they are missing: they are removed whenever nothing
    /// uses them, and once the leaf is in place they cannot be.
    pub fn new_instance(&self, name: &str) -> io::Result<Cgroup> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let svc = self.service(name);
        let leaf = svc.path.join(format!(
            "run-{}-{}-{}",
            crate::record::now_ms(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut tries = 0;
        loop {
            tries += 1;
            std::fs::create_dir_all(&svc.path)?;
            match std::fs::create_dir(&leaf) {
                // Its parent was removed as unused between the two calls.
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 5 => continue,
                Err(e) => return Err(e),
                Ok(()) => return Ok(Cgroup { path: leaf }),
            }
        }
    }

    /// Creates a new, empty leaf for one run of a check command, in `<root>/checks`.
    /// Leaves that a tend process which has since died left there (killed in the middle
    /// of a check) are killed and removed first.
    pub fn new_check(&self) -> io::Result<Cgroup> {
        self.new_helper(CHECKS)
    }

    /// Creates a new, empty leaf for one run of a helper command in `<root>/<group>`
    /// ([`CHECKS`] or [`HOOKS`]), after [`Root::sweep_helpers`].
    pub fn new_helper(&self, group: &str) -> io::Result<Cgroup> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let checks = Cgroup {
            path: self.path.join(group),
        };
        mkdir(&checks.path)?;
        self.sweep_helpers(group);
        let leaf = checks.path.join(format!(
            "run-{}-{}-{}",
            crate::record::now_ms(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&leaf)?;
        Ok(Cgroup { path: leaf })
    }

    /// Kills and removes the leaves of `<root>/<group>` whose creator is gone: runs of
    /// helper commands a tend process was carrying out when it died (a daemon killed
    /// with SIGKILL while a hook ran). The daemon does this as it comes up; each new
    /// run does it too. A group that does not exist is left so.
    pub fn sweep_helpers(&self, group: &str) {
        let helpers = Cgroup {
            path: self.path.join(group),
        };
        for leaf in helpers.children() {
            if !leaf_creator_gone(&leaf) {
                continue;
            }
            if leaf.populated() {
                let _ = leaf.kill();
                leaf.wait_empty(Duration::from_secs(1));
            }
            let _ = leaf.remove();
        }
    }

    /// Moves the calling process into `<root>/supervisor` (the daemon: a cgroup whose
    /// children have controllers enabled may not hold processes itself).
    pub fn enter_supervisor(&self) -> io::Result<()> {
        let leaf = self.path.join(SUPERVISOR);
        std::fs::create_dir_all(&leaf)?;
        std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
    }

    /// Moves the calling process back into the cgroup the home's was created in (the
    /// daemon, as it stops), so that `supervisor` can be removed. Refused (EBUSY) where
    /// that cgroup has controllers enabled for its children.
    pub fn leave_supervisor(&self) -> io::Result<()> {
        std::fs::write(
            self.parent.join("cgroup.procs"),
            std::process::id().to_string(),
        )
    }

    /// Removes what of the home's cgroup nothing uses: empty instance leaves whose
    /// creator is gone (a start in progress keeps its own, see [`creator_alive`]), then
    /// every cgroup below the home's that is empty and has none below it, then the home's
    /// own. A cgroup that holds processes, or one below it, is left: `rmdir` refuses it.
    pub fn remove_unused(&self) {
        for child in Cgroup::at(&self.path).children() {
            for leaf in child.children() {
                if !leaf.populated() && !creator_alive(&leaf) {
                    let _ = leaf.remove_empty();
                }
            }
            let _ = child.remove_empty();
        }
        let _ = Cgroup::at(&self.path).remove_empty();
    }

    /// Removes the home's cgroup if nothing is in it but the empty cgroups of its own
    /// helpers (`log-writers`, `checks`, `hooks`, `supervisor`): one look at the directory, for
    /// a caller that has just removed a service's cgroup (unlike [`Root::remove_unused`],
    /// which looks into every service's). Whatever is in use stays: `rmdir` refuses it.
    pub fn remove_if_idle(&self) {
        let Ok(rd) = std::fs::read_dir(&self.path) else {
            return;
        };
        let mut helpers = Vec::new();
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if [WRITERS, CHECKS, HOOKS, SUPERVISOR]
                .iter()
                .any(|h| e.file_name() == *h)
            {
                helpers.push(Cgroup::at(e.path()));
            } else {
                return;
            }
        }
        for h in helpers {
            if h.remove_empty().is_err() {
                return;
            }
        }
        let _ = Cgroup::at(&self.path).remove_empty();
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
        self.event("populated").unwrap_or(false)
    }

    /// A flag of `cgroup.events` (`populated`, `frozen`); `None` where it cannot be read.
    fn event(&self, key: &str) -> Option<bool> {
        let text = std::fs::read_to_string(self.path.join("cgroup.events")).ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix(' '))
                .map(|v| v.trim() == "1")
        })
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
        self.kill_frozen()
    }

    /// The way to kill everything in the cgroup without `cgroup.kill`: freeze it, SIGKILL
    /// each member, thaw. Freezing is asynchronous: until `cgroup.events` says
    /// `frozen 1`, a member may still fork, and a child born after the members were
    /// listed would survive. So the members are listed once the cgroup is frozen (or
    /// after [`FREEZE_WAIT`], if a member cannot be frozen: one in uninterruptible sleep
    /// holds it up; the caller's wait for `populated 0` then tells).
    fn kill_frozen(&self) -> io::Result<()> {
        let freeze = self.path.join("cgroup.freeze");
        std::fs::write(&freeze, "1")?;
        self.wait_event("frozen", true, FREEZE_WAIT);
        for h in self.pin_members() {
            let _ = h.signal(nix::sys::signal::Signal::SIGKILL);
        }
        std::fs::write(&freeze, "0")
    }

    /// Waits until nothing runs in the cgroup (`populated 0`), up to `timeout`; true if
    /// it is empty.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        self.wait_event("populated", false, timeout)
    }

    /// Waits until flag `key` of `cgroup.events` is `want`, up to `timeout`; whether it
    /// is. A cgroup that does not exist is empty and not frozen. Woken by inotify on
    /// `cgroup.events`, with a slow recheck for the notifications the kernel drops.
    fn wait_event(&self, key: &str, want: bool, timeout: Duration) -> bool {
        const RECHECK: Duration = Duration::from_millis(20);
        let deadline = Instant::now() + timeout;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok();
        let watching = inotify.as_ref().is_some_and(|i| {
            i.add_watch(&self.path.join("cgroup.events"), AddWatchFlags::IN_MODIFY)
                .is_ok()
        });
        loop {
            // Read after the watch is in place, so a change in between is not missed.
            if self.event(key).unwrap_or(false) == want {
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

    /// Removes this cgroup if it is empty and has no cgroup below it; `rmdir` refuses
    /// (EBUSY) otherwise, which is what makes this safe beside a start that has just
    /// created a leaf below it. One that is gone already is no error.
    pub fn remove_empty(&self) -> io::Result<()> {
        match std::fs::remove_dir(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
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

/// True when the process that created the leaf `run-<ms>-<pid>-<n>` no longer exists,
/// or has exited and waits to be reaped (a zombie runs nothing, and a daemon killed with
/// SIGKILL stays one for as long as its parent leaves it unreaped; its number cannot be
/// reused meanwhile). A number in use by a live process (a reuse, or the creator itself)
/// keeps the leaf: left for a later look rather than taken from a process that may still
/// be using it.
fn leaf_creator_gone(leaf: &Cgroup) -> bool {
    let pid = leaf
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("run-"))
        .and_then(|rest| rest.split('-').nth(1))
        .and_then(|p| p.parse::<i32>().ok());
    pid.is_some_and(|p| match super::identity::stat(p) {
        Ok(Some(st)) => st.exited(),
        Ok(None) => true,
        // Not readable now: proves nothing.
        Err(_) => false,
    })
}

/// Whether the process that created an instance cgroup (`run-<ms>-<pid>-<n>`, see
/// [`Root::new_instance`]) may still be using it: it runs, and the cgroup is less than a
/// minute old (a pid alone may have been reused since).
pub fn creator_alive(leaf: &Cgroup) -> bool {
    let Some(name) = leaf.path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let mut parts = name.strip_prefix("run-").unwrap_or("").split('-');
    let (Some(ms), Some(pid)) = (
        parts.next().and_then(|v| v.parse::<i64>().ok()),
        parts.next().and_then(|v| v.parse::<i32>().ok()),
    ) else {
        return false;
    };
    crate::record::now_ms() - ms < 60_000 && Path::new(&format!("/proc/{pid}")).exists()
}

/// How long [`Cgroup::kill`] without `cgroup.kill` waits for a cgroup to be frozen.
const FREEZE_WAIT: Duration = Duration::from_secs(1);

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

    /// A cgroup of a test's own below this process's, killed and removed when dropped
    /// (pass or fail).
    struct Scratch(Cgroup);

    impl Scratch {
        /// `None` (and the test does not run) unless this process may create cgroups
        /// and move processes into them: root, on a cgroup2 hierarchy.
        fn new(test: &str) -> Option<Scratch> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("{test}: not run: needs root to create cgroups");
                return None;
            }
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let own = own_cgroup_dir().ok()?;
            let dir = own.join(format!(
                "tend-unit-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => Some(Scratch(Cgroup::at(dir))),
                Err(e) => {
                    eprintln!("{test}: not run: cannot create {}: {e}", dir.display());
                    None
                }
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = self.0.kill();
            self.0.wait_empty(Duration::from_secs(10));
            let _ = self.0.remove();
        }
    }

    /// The path without `cgroup.kill`: eight members that fork as fast as they can are
    /// taken with every child they forked, however late, because the members are listed
    /// only once the cgroup is frozen (listed at once, a child born meanwhile survived
    /// in every run tried). Called directly (this kernel has `cgroup.kill`), five times
    /// over.
    #[test]
    fn kill_without_cgroup_kill_takes_a_forking_member() {
        let Some(scratch) = Scratch::new("kill_without_cgroup_kill_takes_a_forking_member") else {
            return;
        };
        let cg = &scratch.0;
        for round in 1..=5 {
            let mut forker = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > {}/cgroup.procs && for i in 1 2 3 4 5 6 7 8; do \
                     (while :; do sleep 1000 & done) & done; wait",
                    cg.path.display()
                ))
                .spawn()
                .expect("spawn sh");
            let deadline = Instant::now() + Duration::from_secs(20);
            while cg.pids().len() < 50 {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the forker did not get going: {:?}",
                    cg.pids()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            cg.kill_frozen().expect("freeze, kill, thaw");
            let empty = cg.wait_empty(Duration::from_secs(10));
            let _ = forker.kill();
            let _ = forker.wait();
            assert!(
                empty,
                "round {round}: survivors of the kill: {:?}",
                cg.pids()
            );
        }
    }
}
