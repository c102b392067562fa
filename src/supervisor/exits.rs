//! What the daemon's worker asks: record an exit (with the policy's decision), adopt what
//! runs when a daemon comes up, give a service up.

use super::instances::{lookup, record_exit};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use super::{Adoption, Deferred, Exit, Supervisor, Then, Watch};
use crate::error::Result;
use crate::policy::ExitStatus;
use crate::process::handle::{Found, Handle};
use crate::record::event;
use crate::state;

impl Supervisor {
    /// Records the exit of process `(pid, start_time)` if it is a service's instance, and
    /// applies the restart policy unless the exit was asked for. `None`: not a service.
    pub fn on_exit(
        &mut self,
        pid: i32,
        start_time: u64,
        status: ExitStatus,
    ) -> Result<Option<Exit>> {
        // Most children the daemon reaps are not instances (intermediates of the double
        // fork, helpers): a read answers that without taking the write lock.
        if self
            .store
            .read(|tx| tx.instance_by_pid(pid, start_time))?
            .is_none()
        {
            return Ok(None);
        }
        self.store.write(|tx| {
            let Some((id, svc, inst)) = tx.instance_by_pid(pid, start_time)? else {
                return Ok(None);
            };
            // The first process of a self-daemonizing service handing over: the start
            // that runs it records the outcome.
            if status == ExitStatus::Code(0) && super::forking::handing_over(&inst) {
                return Ok(None);
            }
            Ok(Some(record_exit(
                tx,
                id,
                &svc,
                &inst,
                status,
                Then::Policy,
            )?))
        })
    }

    /// For a daemon coming up (or reloading): every recorded instance that is alive is
    /// adopted (returned with a handle, for watching, and recorded); every dead or stale
    /// one goes through the restart policy as an exit with unknown status; one whose
    /// check could not be made is left exactly as it is (see [`Adoption::deferred`]).
    /// Instances for which `skip(pid)` holds (already watched, or children of the
    /// daemon) are left alone.
    ///
    /// `max_fd`: the highest descriptor number a watched instance's pidfd may have. One
    /// above it is given back, and its instance deferred: the daemon keeps the
    /// descriptors above for its own work (reaping, requests, starts), rather than hold
    /// every last one on watching.
    pub fn adopt_all(&mut self, skip: &dyn Fn(i32) -> bool, max_fd: i32) -> Result<Adoption> {
        let boot = self.boot_id.clone();
        let mut handles = Vec::new();
        let mut deferred = Vec::new();
        let (watches, exits) = self.store.write(|tx| {
            handles.clear();
            deferred.clear();
            let mut watches = Vec::new();
            let mut exits = Vec::new();
            for (id, svc) in tx.services()? {
                let Some(inst) = tx.instance(id)? else {
                    continue;
                };
                if skip(inst.pid) {
                    continue;
                }
                let cgroup = inst.cgroup.as_deref().map(Path::new);
                match Handle::open(inst.pid, inst.start_time, &inst.boot_id, &boot, cgroup) {
                    Found::Alive(h) if h.as_fd().as_raw_fd() > max_fd => {
                        deferred.push(Deferred {
                            name: svc.name.clone(),
                            pid: inst.pid,
                            checked: true,
                            why: format!(
                                "alive, but not watched: the daemon keeps its descriptors \
                                 above {max_fd} for its own work (raise its limit of open \
                                 files; see `tend doctor`)"
                            ),
                        });
                    }
                    Found::Alive(h) => {
                        tx.record(&svc.name, event::ADOPTED, &format!("pid {}", inst.pid))?;
                        handles.push(h);
                        watches.push(Watch {
                            name: svc.name.clone(),
                            pid: inst.pid,
                            start_time: inst.start_time,
                        });
                    }
                    // Nothing is known: neither an exit nor a reason to start anything.
                    Found::Unknown(why) => deferred.push(Deferred {
                        name: svc.name.clone(),
                        pid: inst.pid,
                        checked: false,
                        why,
                    }),
                    found => {
                        if let Found::Stale(why) = found {
                            // It exited while nobody watched and its pid went to someone
                            // else: as much an exit as any, and the policy says what next.
                            tx.record(
                                &svc.name,
                                event::STALE,
                                &format!("pid {}: {why}; not signalled", inst.pid),
                            )?;
                        }
                        exits.push(record_exit(
                            tx,
                            id,
                            &svc,
                            &inst,
                            ExitStatus::Unknown,
                            Then::Policy,
                        )?);
                    }
                }
            }
            Ok((watches, exits))
        })?;
        Ok(Adoption {
            watches: handles.into_iter().zip(watches).collect(),
            exits,
            deferred,
        })
    }

    /// Marks the service failed (an automatic restart could not even spawn it).
    pub fn give_up(&mut self, name: &str, reason: &str) -> Result<()> {
        self.store.write(|tx| {
            let (id, _) = lookup(tx, name)?;
            let rt = state::given_up(&tx.runtime(id)?, reason);
            tx.set_runtime(id, &rt)?;
            tx.record(name, event::FAILED, reason)
        })
    }
}
