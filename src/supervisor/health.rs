//! Health checks, as the daemon's health thread asks for them: run one service's check
//! once against its running instance, and, after too many failures in a row, record an
//! `unhealthy` event and kill the instance so that the restart policy decides what
//! follows (a kill counts as a failure, as for any crash).

use std::time::Duration;

use super::instances::lookup;
use super::start::read_env_file;
use super::Supervisor;
use crate::error::Result;
use crate::probe;
use crate::process::check;
use crate::process::stop::{self, Recorded};
use crate::record::event;
use crate::service::probe::Probe;

/// One check of one running instance.
#[derive(Clone, Debug)]
pub struct Checked {
    pub pid: i32,
    pub start_time: u64,
    /// `Err`: why it failed (a command's output included).
    pub result: std::result::Result<(), String>,
    pub probe: Probe,
}

/// A service the health thread looks after: its probe, and whether its instance still
/// waits for its readiness check (`starting`).
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub health: Option<Probe>,
    /// Running, with a `ready` check that has not passed: (pid, started_at unix ms,
    /// ready timeout).
    pub starting: Option<(i32, i64, Duration)>,
}

/// Names of the services among `services` that have a health or readiness check.
pub fn checked(services: &[crate::service::Service]) -> Vec<String> {
    services
        .iter()
        .filter(|s| s.settings.health.is_some() || s.settings.ready.is_some())
        .map(|s| s.name.clone())
        .collect()
}

impl Supervisor {
    /// Of `names` (the services that have a health or readiness check, see
    /// [`checked`]), those with a health check or an instance still `starting`.
    ///
    /// Only services that have a check are looked at: the health thread asks after every
    /// request, and a process check of every running service each time would cost the
    /// daemon a read per service for nothing.
    pub fn watched(&mut self, names: &[String]) -> Result<Vec<Watched>> {
        let mut looked = Vec::with_capacity(names.len());
        for name in names {
            match self.status(name) {
                Ok(st) => looked.push(st),
                // Removed since.
                Err(crate::Error::UnknownService(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(looked
            .into_iter()
            .filter_map(|st| {
                let starting = match (&st.state, &st.service.settings.ready) {
                    (crate::state::State::Starting { pid, since }, Some(p)) => {
                        Some((*pid, *since, p.ready_timeout()))
                    }
                    _ => None,
                };
                let health = st.service.settings.health.clone();
                (health.is_some() || starting.is_some()).then(|| Watched {
                    name: st.service.name.clone(),
                    health,
                    starting,
                })
            })
            .collect())
    }

    /// Runs `name`'s health check once, if it runs and has one.
    pub fn check_health(&mut self, name: &str) -> Result<Option<Checked>> {
        let (svc, inst) = self.store.read(|tx| {
            let (id, svc) = lookup(tx, name)?;
            Ok((svc, tx.instance(id)?))
        })?;
        let (Some(probe), Some(inst)) = (svc.settings.health.clone(), inst) else {
            return Ok(None);
        };
        if inst.stopping || !self.seer().alive(&inst) {
            return Ok(None);
        }
        let file_env = read_env_file(&svc).unwrap_or_default();
        let setup = match super::start::setup_of(&svc) {
            Ok(s) => s,
            // The user is gone since the start: the check cannot run as the service
            // does, and never runs as tend instead.
            Err(e) => {
                return Ok(Some(Checked {
                    pid: inst.pid,
                    start_time: inst.start_time,
                    result: Err(e.to_string()),
                    probe,
                }))
            }
        };
        let env = super::start::service_env(&svc, &file_env, &setup);
        let board = self.ctx.board.clone();
        let cgroups = self.containment().root().cloned();
        let proceed = self.proceeding();
        let store = std::cell::RefCell::new(&mut self.store);
        let owned = || super::stop::sessions_elsewhere(&mut store.borrow_mut(), None);
        let target = probe::Target {
            cwd: &svc.settings.cwd,
            env: &env,
            log: &svc.settings.stdout,
            // Health checks are tcp, http or cmd: no log.
            log_from: None,
            scope: check::Scope {
                board: board.as_deref(),
                cgroups: cgroups.as_ref(),
                proceed: &proceed,
                owned: &owned,
                setup: &setup,
            },
        };
        let result = probe::run(&probe.check, &target, probe.health_timeout());
        Ok(Some(Checked {
            pid: inst.pid,
            start_time: inst.start_time,
            result,
            probe,
        }))
    }

    /// Records that the instance `(pid, start_time)` of `name` is unhealthy and kills it
    /// (only if it is still the recorded instance). True if it was killed.
    pub fn unhealthy(
        &mut self,
        name: &str,
        pid: i32,
        start_time: u64,
        detail: &str,
    ) -> Result<bool> {
        let inst = self.store.read(|tx| {
            let (id, _) = lookup(tx, name)?;
            tx.instance(id)
        })?;
        let Some(inst) = inst.filter(|i| i.pid == pid && i.start_time == start_time) else {
            return Ok(false);
        };
        self.record(name, event::UNHEALTHY, detail)?;
        let target = Recorded {
            pid: inst.pid,
            session: inst.pgid,
            start_time: inst.start_time,
            boot_id: &inst.boot_id,
            cgroup: inst.cgroup.as_deref().map(std::path::Path::new),
        };
        let killed = stop::signal(&target, &self.boot_id, nix::sys::signal::Signal::SIGKILL)
            .map(|o| matches!(o, stop::Signalled::Delivered))
            .unwrap_or(false);
        Ok(killed)
    }
}
