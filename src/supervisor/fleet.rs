//! What the fleet executor keeps in this home's database: which fleet commands were
//! taken here and with what result (so none acts twice), and the signatures of signed
//! NOTIFY payloads already obeyed (so a replay is refused across a daemon restart).

use super::{Supervisor, Take};
use crate::error::Result;
use crate::record::Taken;

impl Supervisor {
    /// Records that fleet command `id` is taken here, unless it was taken before (then
    /// returns that record), and, when the service is defined here, a `fleet` event
    /// saying what was `requested`. One transaction, committed before anything is done,
    /// so a daemon that dies while acting leaves a trace its successor finds.
    pub fn fleet_take(
        &mut self,
        fleet: &str,
        id: i64,
        service: &str,
        action: &str,
        requested: &str,
    ) -> Result<Take> {
        self.store.write(|tx| {
            if let Some(t) = tx.fleet_taken(fleet, id)? {
                return Ok(Take::Before(t));
            }
            tx.fleet_take(fleet, id, service, action)?;
            let known = tx.service(service)?.is_some();
            if known {
                tx.record(service, crate::record::event::FLEET, requested)?;
            }
            Ok(Take::Fresh { known })
        })
    }

    /// Records the result of a taken command, with an event naming it.
    pub fn fleet_finish(
        &mut self,
        fleet: &str,
        id: i64,
        service: &str,
        ok: bool,
        message: &str,
    ) -> Result<()> {
        self.store.write(|tx| {
            tx.fleet_finish(fleet, id, ok, message)?;
            tx.record(
                service,
                crate::record::event::FLEET,
                &format!("command {id}: {message}"),
            )
        })
    }

    /// This home's record of command `id`, if it took it.
    pub fn fleet_taken(&mut self, fleet: &str, id: i64) -> Result<Option<Taken>> {
        self.store.read(|tx| tx.fleet_taken(fleet, id))
    }

    pub fn fleet_unreported(&mut self, fleet: &str) -> Result<Vec<Taken>> {
        self.store.read(|tx| tx.fleet_unreported(fleet))
    }

    pub fn fleet_reported(&mut self, fleet: &str, ids: &[i64]) -> Result<()> {
        self.store.write(|tx| tx.fleet_reported(fleet, ids))
    }

    /// Signatures seen since `since` (unix seconds), for the replay cache.
    pub fn notify_seen(&mut self, since: i64) -> Result<Vec<(String, i64)>> {
        self.store.read(|tx| tx.notify_seen(since))
    }

    pub fn add_notify_seen(&mut self, signature: &str, at: i64, forget_before: i64) -> Result<()> {
        self.store
            .write(|tx| tx.add_notify_seen(signature, at, forget_before))
    }
}
