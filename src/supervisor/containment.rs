//! Where a service's processes are contained: a cgroup per instance when this process may
//! create them (see [`crate::process::cgroup`]), else the session tend created for it.

use super::{CgroupView, Supervisor};
use crate::error::{Error, Result, SpawnError};
use crate::process::cgroup::{self, Cgroup, Containment};
use crate::record::Instance;
use crate::service::Service;

/// How long to wait for killed leftovers of an earlier instance to be gone.
const LEFTOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Supervisor {
    /// The containment this process uses for the services it starts, found once.
    pub fn containment(&mut self) -> &Containment {
        let root = self.home.root().to_path_buf();
        self.containment
            .get_or_insert_with(|| cgroup::detect(&root))
    }

    /// The cgroup log writers join (`log-writers` in the home's cgroup, beside the
    /// services' and in none of them), created if needed; `None` without cgroup
    /// containment or if it cannot be created (the writer then stays where it starts).
    pub(super) fn writers_cgroup(&mut self) -> Option<std::path::PathBuf> {
        let dir = self.containment().root()?.path.join(cgroup::WRITERS);
        // `_all`: the home's cgroup itself may have been removed as unused meanwhile.
        std::fs::create_dir_all(&dir).ok().map(|()| dir)
    }

    /// A new, empty cgroup for an instance of `svc`, with the service's limits applied;
    /// `None` without cgroup containment.
    pub(super) fn new_instance_cgroup(&mut self, svc: &Service) -> Result<Option<Cgroup>> {
        let Some(root) = self.containment().root().cloned() else {
            return Ok(None);
        };
        let fail = |message: String| Error::Start {
            service: svc.name.clone(),
            source: SpawnError::Cgroup(message),
        };
        // The leaf first: while it is there, the service's cgroup (where the limits are
        // written) cannot be removed as unused under the start.
        let leaf = root.new_instance(&svc.name).map_err(|e| {
            fail(format!(
                "cannot create a cgroup in {}: {}",
                root.path.display(),
                crate::error::io_reason(&e)
            ))
        })?;
        if let Err(why) = apply_limits(&root, svc) {
            let _ = release(&leaf);
            return Err(fail(why));
        }
        Ok(Some(leaf))
    }

    /// Refuses limits this process cannot apply: they need cgroup containment and the
    /// controller, and are never silently ignored.
    pub(super) fn check_limits(&mut self, svc: &Service) -> Result<()> {
        let mut wanted = limits(svc);
        if svc.settings.pidfile.0.is_some() {
            // Only membership of the cgroup proves a pid file names the service.
            wanted.insert(0, ("--pidfile", "", "", String::new()));
        }
        let Some((option, ..)) = wanted.first() else {
            return Ok(());
        };
        let refuse = |message: String| Error::Invalid {
            what: option,
            message,
        };
        match self.containment() {
            Containment::ProcessGroup(why) => Err(refuse(format!(
                "needs cgroup containment, and this tend uses process groups: {why}"
            ))),
            Containment::Cgroup(root) => {
                for (option, controller, _, _) in wanted.iter().filter(|w| !w.1.is_empty()) {
                    root.controller_available(controller)
                        .map_err(|m| Error::Invalid {
                            what: option,
                            message: m,
                        })?;
                }
                Ok(())
            }
        }
    }

    /// After a start won its commit, before its process may exec: kills whatever earlier
    /// instances of the service left in their cgroups and removes those cgroups. Returns
    /// how many processes were killed.
    pub(super) fn kill_earlier(&mut self, name: &str, keep: &Cgroup) -> usize {
        let Some(svc_cg) = keep.path.parent().map(Cgroup::at) else {
            return 0;
        };
        let mut killed = 0;
        for leaf in svc_cg.children() {
            if leaf == *keep {
                continue;
            }
            // A leaf that another start created a moment ago and has not filled yet is
            // left to it (its start will find this one recorded and give up): only
            // populated leaves, or empty ones whose creator is gone, are taken.
            if !leaf.populated() && cgroup::creator_alive(&leaf) {
                continue;
            }
            if leaf.populated() {
                killed += leaf.pids().len();
                if let Err(e) = leaf.kill() {
                    self.notices.push(format!(
                        "{name}: cannot kill what is left in {}: {}",
                        leaf.path.display(),
                        crate::error::io_reason(&e)
                    ));
                }
                leaf.wait_empty(LEFTOVER_WAIT);
            }
            let _ = leaf.remove();
        }
        if killed > 0 {
            self.notices.push(format!(
                "{name}: killed {killed} leftover process(es) of an earlier instance"
            ));
        }
        killed
    }

    /// The service's cgroup as `status` shows it.
    pub(super) fn cgroup_view(&mut self, name: &str, inst: Option<&Instance>) -> CgroupView {
        let current = inst.and_then(|i| i.cgroup.as_deref()).map(Cgroup::at);
        let svc_cg = match &current {
            Some(c) => c.path.parent().map(Cgroup::at),
            None => self.containment().root().map(|r| r.service(name)),
        };
        let mut leftovers = Vec::new();
        if let Some(svc_cg) = svc_cg {
            for leaf in svc_cg.children() {
                if Some(&leaf) != current.as_ref() {
                    leftovers.extend(leaf.pids());
                }
            }
        }
        leftovers.sort_unstable();
        CgroupView {
            path: current.as_ref().map(|c| c.path.display().to_string()),
            usage: current.map(|c| c.usage()).unwrap_or_default(),
            leftovers,
        }
    }

    /// A removed service: kills what is left of it and removes its cgroup.
    pub(super) fn remove_service_cgroup(&mut self, name: &str) {
        let Some(svc_cg) = self.containment().root().map(|r| r.service(name)) else {
            return;
        };
        if !svc_cg.exists() {
            return;
        }
        if svc_cg.populated() {
            let _ = svc_cg.kill();
            svc_cg.wait_empty(LEFTOVER_WAIT);
        }
        if let Err(e) = svc_cg.remove() {
            self.notices.push(format!(
                "{name}: cannot remove its cgroup {}: {}",
                svc_cg.path.display(),
                crate::error::io_reason(&e)
            ));
        }
    }
}

/// The limits `svc` sets: (option, controller, file, value).
fn limits(svc: &Service) -> Vec<(&'static str, &'static str, &'static str, String)> {
    let s = &svc.settings;
    let mut out = Vec::new();
    if let Some(m) = s.memory_max {
        out.push(("--memory-max", "memory", "memory.max", m.0.to_string()));
    }
    if let Some(w) = s.cpu_weight {
        out.push(("--cpu-weight", "cpu", "cpu.weight", w.0.to_string()));
    }
    if let Some(p) = s.cpu_max {
        // Quota per 100 ms period: 50% of one CPU is 50 ms of every 100 ms.
        out.push((
            "--cpu-max",
            "cpu",
            "cpu.max",
            format!("{} 100000", p.0 as u64 * 1000),
        ));
    }
    out
}

/// Writes the service's limits into its cgroup (`NAME.service`, shared by its instances),
/// enabling the controllers they need; limits no longer set go back to `max`.
fn apply_limits(root: &cgroup::Root, svc: &Service) -> std::result::Result<(), String> {
    let svc_cg = root.service(&svc.name);
    std::fs::create_dir_all(&svc_cg.path).map_err(|e| {
        format!(
            "cannot create {}: {}",
            svc_cg.path.display(),
            crate::error::io_reason(&e)
        )
    })?;
    let wanted = limits(svc);
    for (_, controller, file, value) in &wanted {
        root.enable(controller, &svc_cg)?;
        svc_cg.set(file, value).map_err(|e| {
            format!(
                "cannot write {value:?} to {}: {}",
                svc_cg.path.join(file).display(),
                crate::error::io_reason(&e)
            )
        })?;
    }
    // A limit removed by `edit`: back to none, where the file exists.
    for (file, none) in [
        ("memory.max", "max"),
        ("cpu.max", "max 100000"),
        ("cpu.weight", "100"),
    ] {
        if !wanted.iter().any(|(_, _, f, _)| f == &file) && svc_cg.path.join(file).exists() {
            let _ = svc_cg.set(file, none);
        }
    }
    Ok(())
}

impl Supervisor {
    /// After an instance's cgroup went: without a daemon (which does this when it
    /// stops), what of the home's cgroup nothing uses goes too once the service's own
    /// went, so that a home used without a daemon leaves no empty cgroups behind either
    /// (once its log writers have ended: the last of them may still run). `rmdir`
    /// refuses anything in use, and a start re-creates what it needs.
    pub(super) fn tidy_home_cgroup(&self, leaf: &Cgroup) {
        let Some(svc) = leaf.path.parent() else {
            return;
        };
        if self.supervised() || svc.exists() {
            return;
        }
        if let Some(home) = svc.parent() {
            cgroup::Root {
                path: home.to_path_buf(),
                parent: home.parent().unwrap_or(home).to_path_buf(),
            }
            .remove_if_idle();
        }
    }
}

/// Removes an instance's cgroup (its processes are gone) and then the service's, if no
/// other instance, leftover or start in progress has a cgroup in it (`rmdir` refuses a
/// cgroup with any below it).
pub(super) fn release(leaf: &Cgroup) -> std::io::Result<()> {
    leaf.remove()?;
    if let Some(svc) = leaf.path.parent() {
        let _ = Cgroup::at(svc).remove_empty();
    }
    Ok(())
}
