//! Which quick-mode payloads a daemon obeys. Any role that can connect to the database
//! can NOTIFY any channel, so an unsigned payload proves nothing about who sent it. A
//! daemon that has joined a fleet has roles that reach only their own host; obeying
//! an unsigned `restart web@h02` from any of them would undo that. Such a daemon obeys
//! only signed payloads, unless `postgres.quick_unsigned = true` says otherwise.

use std::sync::Arc;
use std::time::Duration;

use super::fleet::Watch;

/// How long the first unsigned payload waits for the fleet to say whether this daemon
/// is in one (the fleet connection reads its schema right after connecting).
pub const FIRST_LOOK: Duration = Duration::from_secs(15);

/// The daemon's quick-mode policy.
#[derive(Clone)]
pub struct Quick {
    /// A notify key is configured: only signed payloads are obeyed, always.
    pub signed: bool,
    /// `postgres.quick_unsigned = true`: unsigned payloads are obeyed even in a fleet.
    pub unsigned_allowed: bool,
    pub fleet: Arc<Watch>,
}

/// What is known of the fleet when an unsigned payload arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fleet {
    /// Joined at least once during this daemon's life.
    Joined,
    /// Looked, and the database has no fleet this daemon could join.
    None,
    /// Not known yet (the fleet connection has not answered).
    Unknown,
}

/// Whether an unsigned payload may be obeyed: `Err(why)` when it is refused.
pub fn unsigned(allowed: bool, fleet: Fleet) -> Result<(), &'static str> {
    match (allowed, fleet) {
        (true, _) => Ok(()),
        (false, Fleet::None) => Ok(()),
        (false, Fleet::Joined) => Err(
            "unsigned payload refused: this daemon joined a fleet (sign payloads with \
             postgres.notify_key_file, or set postgres.quick_unsigned true)",
        ),
        (false, Fleet::Unknown) => Err(
            "unsigned payload refused: whether this daemon is in a fleet is not known yet \
             (the fleet connection has not answered)",
        ),
    }
}

impl Quick {
    /// The decision for one unsigned payload (waiting up to [`FIRST_LOOK`] for the
    /// fleet's first answer). Signed daemons never get here: they refuse unsigned
    /// payloads before parsing them.
    pub fn admit_unsigned(&self) -> Result<(), &'static str> {
        if self.unsigned_allowed {
            return Ok(());
        }
        unsigned(false, self.fleet_within(FIRST_LOOK))
    }

    fn fleet_within(&self, wait: Duration) -> Fleet {
        match self.fleet.joined_within(wait) {
            Some(true) => Fleet::Joined,
            Some(false) => Fleet::None,
            None => Fleet::Unknown,
        }
    }

    /// One phrase for `daemon status`.
    pub fn describe(&self) -> String {
        if self.signed {
            return "signed payloads only (postgres.notify_key_file)".into();
        }
        if self.unsigned_allowed {
            return "unsigned payloads obeyed (postgres.quick_unsigned = true)".into();
        }
        match self.fleet_within(Duration::ZERO) {
            Fleet::Joined => "unsigned payloads refused: joined a fleet (sign them, or set \
                              postgres.quick_unsigned true)"
                .into(),
            Fleet::None => "unsigned payloads obeyed (no fleet joined)".into(),
            Fleet::Unknown => "unsigned payloads refused until the fleet answers".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_only_outside_a_fleet_or_when_allowed() {
        assert!(unsigned(false, Fleet::None).is_ok());
        assert!(unsigned(false, Fleet::Joined).is_err());
        assert!(unsigned(false, Fleet::Unknown).is_err());
        assert!(unsigned(true, Fleet::Joined).is_ok());
        assert!(unsigned(true, Fleet::Unknown).is_ok());
    }
}
