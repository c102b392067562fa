//! `tend apply`: make the stored definitions match a service file, as a computed plan
//! carried out in one transaction. Only services the file owns are touched (a service
//! added by hand is left alone unless `prune`); a bad file changes nothing.

use std::collections::BTreeMap;

use super::definitions::validate;
use super::instances::live_instance;
use super::{Supervisor, Then};
use crate::error::{Error, Result};
use crate::process::identity::Liveness;
use crate::record::event;
use crate::service::file::ServiceFile;
use crate::service::{self, graph, Service};
use crate::store::Tx;

/// What apply does to one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not stored yet: added.
    Add,
    /// Stored and different: these fields change. `running`: the running instance keeps
    /// the old definition until it is restarted.
    Change {
        fields: Vec<&'static str>,
        running: bool,
    },
    /// Stored and the same.
    Same,
    /// Stored, owned by the file (or any, with `prune`), not in the file: removed.
    /// `running`: it must be stopped first.
    Remove { running: bool },
}

/// One line of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanItem {
    pub name: String,
    pub step: Step,
    /// The owner before, when the file takes over a service it did not own (`None`:
    /// added by hand).
    pub taken_from: Option<Option<String>>,
}

impl Supervisor {
    /// The plan for making the stored definitions match `file` (owned as `owner`),
    /// without changing anything. Checks the file's definitions as `add` would.
    pub fn plan_apply(
        &mut self,
        file: &ServiceFile,
        owner: &str,
        prune: bool,
    ) -> Result<Vec<PlanItem>> {
        self.check_file(file, owner, prune)?;
        let seer = self.seer();
        self.store.read(|tx| {
            plan(tx, file, owner, prune, &mut |tx, id, _| {
                // One whose check could not be made may run, as far as the plan knows.
                Ok(tx.instance(id)?.is_some_and(|i| {
                    !matches!(seer.check(&i), Liveness::Exited | Liveness::Stale(_))
                }))
            })
        })
    }

    /// Carries out the plan in one transaction; the plan carried out is returned. A
    /// service to remove that runs is refused (stop it first): nothing is changed.
    pub fn apply(&mut self, file: &ServiceFile, owner: &str, prune: bool) -> Result<Vec<PlanItem>> {
        self.check_file(file, owner, prune)?;
        let seer = self.seer();
        let mut notes = Vec::new();
        let desired: BTreeMap<&str, &Service> = file
            .services
            .iter()
            .map(|d| (d.service.name.as_str(), &d.service))
            .collect();
        let done = self.store.write(|tx| {
            notes.clear();
            let steps = plan(tx, file, owner, prune, &mut |tx, id, svc| {
                Ok(live_instance(tx, id, svc, &seer, Then::Policy, &mut notes)?.may_run())
            })?;
            let why = format!("({})", file.name);
            for item in &steps {
                let name = item.name.as_str();
                match &item.step {
                    Step::Add => {
                        tx.insert_service(desired[name])?;
                        tx.record(
                            name,
                            event::ADDED,
                            &format!("{} {why}", desired[name].command_line()),
                        )?;
                    }
                    Step::Change { fields, .. } => {
                        let (id, stored) = tx
                            .service(name)?
                            .ok_or_else(|| Error::UnknownService(name.to_string()))?;
                        let mut svc = desired[name].clone();
                        svc.created_at = stored.created_at;
                        tx.update_service(id, &svc)?;
                        tx.record(
                            name,
                            event::CHANGED,
                            &format!("{} {why}", fields.join(", ")),
                        )?;
                    }
                    Step::Same => {}
                    Step::Remove { running: true } => return Err(Error::Running(name.into())),
                    Step::Remove { running: false } => {
                        if let Some((id, _)) = tx.service(name)? {
                            tx.delete_service(id)?;
                            tx.record(name, event::REMOVED, &why)?;
                        }
                    }
                }
                if !matches!(item.step, Step::Remove { .. }) {
                    tx.set_owner(name, Some(owner))?;
                }
            }
            Ok(steps)
        })?;
        self.notices.extend(notes);
        Ok(done)
    }

    /// Everything about the file that can be checked before a transaction: each
    /// definition as `add` checks it (against the file system), requirements that
    /// exist among the services there will be, and no cycle among them. Errors name the
    /// file and line.
    fn check_file(&mut self, file: &ServiceFile, owner: &str, prune: bool) -> Result<()> {
        for d in &file.services {
            let mut notes = Vec::new();
            validate(&d.service, &mut notes)
                .map_err(|e| file.error(d.line_for(&e), format!("{}: {e}", d.service.name)))?;
            self.notices.extend(notes);
        }
        let (stored, owners) = self.store.read(|tx| Ok((tx.services()?, tx.owners()?)))?;
        let in_file = |n: &str| file.services.iter().any(|d| d.service.name == n);
        let mut all: Vec<Service> = stored
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| !in_file(&s.name) && !removed(&s.name, &owners, owner, prune))
            .collect();
        all.extend(file.services.iter().map(|d| d.service.clone()));
        for d in &file.services {
            for r in &d.service.settings.requires {
                if !all.iter().any(|s| &s.name == r) {
                    return Err(file.error(
                        d.line_of("requires"),
                        format!("{}: requires {r}, which is not defined", d.service.name),
                    ));
                }
            }
        }
        if let Some(c) = graph::find_cycle(&all) {
            return Err(file.error(1, format!("dependency cycle: {c}")));
        }
        Ok(())
    }
}

/// A stored service not in the file is removed when the file owns it, or with `prune`.
fn removed(name: &str, owners: &BTreeMap<String, String>, owner: &str, prune: bool) -> bool {
    prune || owners.get(name).map(String::as_str) == Some(owner)
}

/// The plan, computed from what is stored; `running` says whether a service runs.
fn plan(
    tx: &Tx,
    file: &ServiceFile,
    owner: &str,
    prune: bool,
    running: &mut dyn FnMut(&Tx, i64, &Service) -> Result<bool>,
) -> Result<Vec<PlanItem>> {
    let stored = tx.services()?;
    let owners = tx.owners()?;
    let mut out = Vec::new();
    for d in &file.services {
        let want = &d.service;
        let found = stored.iter().find(|(_, s)| s.name == want.name);
        let taken_from = match owners.get(&want.name) {
            Some(o) if o == owner => None,
            _ if found.is_none() => None,
            other => Some(other.cloned()),
        };
        let step = match found {
            None => Step::Add,
            Some((id, s)) => {
                let fields = service::diff(s, want);
                if fields.is_empty() {
                    Step::Same
                } else {
                    Step::Change {
                        fields,
                        running: running(tx, *id, s)?,
                    }
                }
            }
        };
        out.push(PlanItem {
            name: want.name.clone(),
            step,
            taken_from,
        });
    }
    for (id, s) in &stored {
        if file.services.iter().any(|d| d.service.name == s.name) {
            continue;
        }
        if removed(&s.name, &owners, owner, prune) {
            out.push(PlanItem {
                name: s.name.clone(),
                step: Step::Remove {
                    running: running(tx, *id, s)?,
                },
                taken_from: None,
            });
        }
    }
    Ok(out)
}
