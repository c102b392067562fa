//! add / edit / remove of definitions.

use super::instances::{live_instance, lookup};
use super::start::with_spec;
use super::{Supervisor, Then};
use crate::error::{Error, Result};
use crate::process::spawn;
use crate::record::{event, now_ms};
use crate::service::{self, graph, Changes, Service};
use crate::store::Tx;
use crate::supervisor::StopOutcome;

impl Supervisor {
    /// Stores a new definition after validating it.
    pub fn add(&mut self, svc: Service) -> Result<()> {
        validate(&svc, &mut self.notices)?;
        self.check_limits(&svc)?;
        let mut notes = Vec::new();
        self.store.write(|tx| {
            notes.clear();
            check_graph(tx, &svc, &mut notes)?;
            tx.insert_service(&svc)?;
            tx.record(&svc.name, event::ADDED, &svc.command_line())
        })?;
        self.notices.extend(notes);
        Ok(())
    }

    /// Applies `changes`; returns the names of the fields that changed and whether the
    /// service is running (changes take effect at its next start).
    pub fn edit(&mut self, name: &str, changes: &Changes) -> Result<(Vec<&'static str>, bool)> {
        let mut notes = Vec::new();
        let (_, current) = self.store.read(|tx| lookup(tx, name))?;
        let updated = changes.apply(&current, now_ms());
        validate(&updated, &mut self.notices)?;
        self.check_limits(&updated)?;
        let changed = service::diff(&current, &updated);
        let seer = self.seer();
        let running = self.store.write(|tx| {
            notes.clear();
            let (id, now) = lookup(tx, name)?;
            if now != current {
                // Someone else edited it between our read and this write: apply the
                // changes on top of what is stored now rather than overwrite theirs.
                let again = changes.apply(&now, now_ms());
                check_graph(tx, &again, &mut notes)?;
                tx.update_service(id, &again)?;
            } else if !changed.is_empty() {
                check_graph(tx, &updated, &mut notes)?;
                tx.update_service(id, &updated)?;
            }
            if !changed.is_empty() {
                tx.record(name, event::CHANGED, &changed.join(", "))?;
            }
            // One whose check could not be made may run: the changes wait for its restart.
            Ok(live_instance(tx, id, &now, &seer, Then::Policy, &mut notes)?.may_run())
        })?;
        self.notices.extend(notes);
        Ok((changed, running))
    }

    /// Deletes a definition. A running service is refused unless `stop` is set, in which
    /// case it is stopped first. Its events are kept.
    pub fn remove(&mut self, name: &str, stop_first: bool) -> Result<StopOutcome> {
        let stopped = if stop_first {
            self.stop(name)?
        } else {
            StopOutcome::NotRunning
        };
        let mut notes = Vec::new();
        let seer = self.seer();
        self.store.write(|tx| {
            notes.clear();
            let (id, svc) = lookup(tx, name)?;
            let live = live_instance(tx, id, &svc, &seer, Then::Nothing, &mut notes)?;
            // Removing the definition of one that may still run would leave it running
            // with nothing to stop it by.
            if live.known(name, "not removed")?.is_some() {
                return Err(Error::Running(name.to_string()));
            }
            tx.delete_service(id)?;
            tx.record(name, event::REMOVED, "")
        })?;
        self.notices.extend(notes);
        self.remove_service_cgroup(name);
        Ok(stopped)
    }
}

/// Checks a definition before it is stored. A program that cannot be found is only a
/// notice: it may be installed later, and `tend start` reports it clearly.
pub(super) fn validate(svc: &Service, notices: &mut Vec<String>) -> Result<()> {
    service::validate(svc)?;
    if with_spec(
        svc,
        &Default::default(),
        &spawn::Setup::default(),
        None,
        None,
        spawn::find_program,
    )
    .is_none()
    {
        notices.push(format!(
            "{}: warning: program {:?} not found; `tend start` will fail until it exists",
            svc.name, svc.argv[0]
        ));
    }
    Ok(())
}

/// Refuses a definition that would close a cycle of `requires`/`after` among the stored
/// ones (naming it); notes requirements that are not defined (yet).
pub(super) fn check_graph(tx: &Tx, svc: &Service, notes: &mut Vec<String>) -> Result<()> {
    let mut all: Vec<Service> = tx
        .services()?
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.name != svc.name)
        .collect();
    for r in &svc.settings.requires {
        if r != &svc.name && !all.iter().any(|s| &s.name == r) {
            notes.push(format!(
                "{}: warning: {r} is not defined; `tend start {}` will fail until it is",
                svc.name, svc.name
            ));
        }
    }
    all.push(svc.clone());
    match graph::find_cycle(&all) {
        Some(c) => Err(Error::Cycle(format!("dependency cycle: {c}"))),
        None => Ok(()),
    }
}
