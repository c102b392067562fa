//! The signed-payload replay cache kept in this home's database: a signature
//! obeyed once is refused for the rest of its window even after the daemon restarts
//! (an in-memory cache alone let each restart accept every recent payload once more).

use tracing::warn;

use super::auth::{self, Replays};
use crate::record::now_ms;
use crate::supervisor::Supervisor;

/// The cache as the database has it: every signature still within the window.
pub fn load(sup: &mut Supervisor) -> Replays {
    let now = now_ms() / 1000;
    match sup.notify_seen(now - 2 * auth::WINDOW) {
        Ok(seen) => Replays::from_seen(seen),
        Err(e) => {
            warn!(error = %e, "notify: cannot read the replay cache; starting empty");
            Replays::default()
        }
    }
}

/// Remembers an accepted signed payload's signature in the database. Called after it
/// was verified and before it is acted on, so a crash in between refuses it next time
/// rather than obeying it twice.
pub fn remember(sup: &mut Supervisor, signed: &str) -> crate::Result<()> {
    match auth::envelope(signed) {
        Some((ts, signature)) => {
            sup.add_notify_seen(&signature, ts, ts.min(now_ms() / 1000) - 2 * auth::WINDOW)
        }
        None => Ok(()),
    }
}
