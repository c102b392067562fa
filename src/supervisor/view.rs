//! Looking: one service or all with their live instances (a dead record is cleared on
//! the way), definitions, events, pending restarts.

use super::instances::{live_instance, lookup, Live};
use super::{CgroupView, Seer, Status, Supervisor, Then};
use crate::error::Result;
use crate::process::cgroup::Cgroup;
use crate::process::identity::Liveness;
use crate::record::{Event, Instance, Runtime};
use crate::service::Service;

/// A recorded instance as a look found it, with why its check could not be made if it
/// could not.
type Looked = (Option<Instance>, Option<String>);

impl Supervisor {
    /// One service with its live instance; dead records are cleared on the way, and an
    /// instance whose check could not be made is shown as such, untouched.
    pub fn status(&mut self, name: &str) -> Result<Status> {
        let seer = self.seer();
        let (svc, inst, runtime, ready) = self.store.read(|tx| {
            let (id, svc) = lookup(tx, name)?;
            let ready = tx.ready_marks()?.remove(&id);
            Ok((svc, tx.instance(id)?, tx.runtime(id)?, ready))
        })?;
        let (instance, runtime) = self.looked_at(name, inst, runtime, &seer)?;
        let cgroup = self.cgroup_view(name, instance.0.as_ref());
        let mut st = Status::new(svc, instance, runtime, self.supervised(), ready);
        if cgroup != CgroupView::default() {
            st.cgroup = Some(cgroup);
        }
        Ok(st)
    }

    /// All services, sorted by name, with the CPU and memory use of each running
    /// instance's cgroup; dead records are cleared on the way.
    pub fn list(&mut self) -> Result<Vec<Status>> {
        self.list_with(true)
    }

    /// [`Supervisor::list`] without reading any cgroup's usage (several files per
    /// running service), for views that do not show it: the plain `tend list` table.
    pub fn list_brief(&mut self) -> Result<Vec<Status>> {
        self.list_with(false)
    }

    fn list_with(&mut self, usage: bool) -> Result<Vec<Status>> {
        let seer = self.seer();
        let rows = self.store.read(|tx| tx.overview())?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let svc = row.service;
            let (instance, runtime) =
                self.looked_at(&svc.name, row.instance, row.runtime, &seer)?;
            let mut st = Status::new(svc, instance, runtime, self.supervised(), row.ready_at);
            // The table has no room for why: it is said beside it.
            if let crate::state::State::Unknown { pid, reason, .. } = &st.state {
                self.notices.push(format!(
                    "{}: cannot tell whether pid {pid} still runs ({reason}); its record is kept",
                    st.service.name
                ));
            }
            // Usage of running instances only: `status` also looks for leftovers.
            if let Some(path) = st.instance.as_ref().and_then(|i| i.cgroup.as_deref()) {
                st.cgroup = Some(CgroupView {
                    path: Some(path.to_string()),
                    usage: if usage {
                        Cgroup::at(path).usage()
                    } else {
                        Default::default()
                    },
                    leftovers: Vec::new(),
                });
            }
            out.push(st);
        }
        Ok(out)
    }

    /// All definitions with the [definitions version](crate::store::Tx::definitions_version)
    /// they are at, read in one snapshot; `None` when the version is still `known`.
    pub fn services_if_changed(
        &mut self,
        known: Option<i64>,
    ) -> Result<Option<(i64, Vec<Service>)>> {
        self.store.read(|tx| {
            let v = tx.definitions_version()?;
            if known == Some(v) {
                return Ok(None);
            }
            Ok(Some((
                v,
                tx.services()?.into_iter().map(|(_, s)| s).collect(),
            )))
        })
    }

    /// The definitions of `names` (those that exist), and with `requirements` those of
    /// everything they require, transitively: what ordering a start or a stop of these
    /// services needs, read in one snapshot without reading every definition.
    pub fn services_named(&mut self, names: &[String], requirements: bool) -> Result<Vec<Service>> {
        self.store.read(|tx| {
            let mut found: Vec<Service> = Vec::new();
            let mut stack: Vec<String> = names.iter().rev().cloned().collect();
            while let Some(n) = stack.pop() {
                if found.iter().any(|s| s.name == n) {
                    continue;
                }
                let Some((_, svc)) = tx.service(&n)? else {
                    continue;
                };
                if requirements {
                    stack.extend(svc.settings.requires.iter().rev().cloned());
                }
                found.push(svc);
            }
            Ok(found)
        })
    }

    /// Names of all defined services, sorted.
    pub fn names(&mut self) -> Result<Vec<String>> {
        Ok(self.services()?.into_iter().map(|s| s.name).collect())
    }

    /// All definitions, sorted by name, without looking at processes.
    pub fn services(&mut self) -> Result<Vec<Service>> {
        Ok(self
            .store
            .read(|tx| tx.services())?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    /// The last `limit` events, oldest first.
    pub fn events(&mut self, name: Option<&str>, limit: u32) -> Result<Vec<Event>> {
        self.store.read(|tx| tx.events(name, limit))
    }

    /// Events with an id above `after`, oldest first (at most `limit`).
    pub fn events_after(
        &mut self,
        after: i64,
        name: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>> {
        self.store.read(|tx| tx.events_after(after, name, limit))
    }

    /// The id of the newest event (0: none yet).
    pub fn last_event_id(&mut self) -> Result<i64> {
        self.store.read(|tx| tx.last_event_id())
    }

    /// Services with an automatic restart pending: (name, due unix ms).
    pub fn pending_restarts(&mut self) -> Result<Vec<(String, i64)>> {
        self.store.read(|tx| tx.pending_retries())
    }

    /// Names of services marked `--autostart`, with what they require, in start order
    /// (requirements first), each with the requirements it has.
    pub fn autostart_names(&mut self) -> Result<Vec<(String, Vec<String>)>> {
        let all = self.services()?;
        let marked: Vec<String> = all
            .iter()
            .filter(|s| s.settings.autostart)
            .map(|s| s.name.clone())
            .collect();
        Ok(crate::service::graph::start_order(&all, &marked)
            .into_iter()
            .map(|n| {
                let requires = all
                    .iter()
                    .find(|s| s.name == n)
                    .map(|s| s.settings.requires.clone())
                    .unwrap_or_default();
                (n, requires)
            })
            .collect())
    }

    /// What a look at the recorded instance `inst` finds: alive, unknown (with why), or
    /// dead (cleared on the way, see [`Supervisor::clear_dead`]).
    fn looked_at(
        &mut self,
        name: &str,
        inst: Option<Instance>,
        runtime: Runtime,
        seer: &Seer,
    ) -> Result<(Looked, Runtime)> {
        let Some(i) = inst else {
            return Ok(((None, None), runtime));
        };
        match seer.check(&i) {
            Liveness::Alive => Ok(((Some(i), None), runtime)),
            Liveness::Unknown(why) => Ok(((Some(i), Some(why)), runtime)),
            Liveness::Exited | Liveness::Stale(_) => self.clear_dead(name),
        }
    }

    /// Re-checks `name`'s instance under the write lock and clears it if it is dead.
    /// Returns the instance if it may run (it came back to life meanwhile: a new start;
    /// or its check could not be made now, with why) and the bookkeeping as it is now.
    pub(super) fn clear_dead(&mut self, name: &str) -> Result<(Looked, Runtime)> {
        let seer = self.seer();
        let mut notes = Vec::new();
        let out = self.store.write(|tx| {
            notes.clear();
            let (id, svc) = lookup(tx, name)?;
            let looked = match live_instance(tx, id, &svc, &seer, Then::Policy, &mut notes)? {
                Live::None => (None, None),
                Live::Alive(i) => (Some(i), None),
                Live::Unknown(i, why) => (Some(i), Some(why)),
            };
            Ok((looked, tx.runtime(id)?))
        })?;
        self.notices.extend(notes);
        Ok(out)
    }
}
