//! Fleet commands this home has taken and the signed-payload replay cache.

use rusqlite::{params, OptionalExtension};

use super::Tx;
use crate::error::Result;
use crate::record::{now_ms, Taken};

impl Tx<'_> {
    /// The local record of fleet command `id`, if this home took it before.
    pub fn fleet_taken(&self, fleet: &str, id: i64) -> Result<Option<Taken>> {
        self.0
            .prepare_cached(
                "SELECT id, service, action, finished_at, ok, message, reported, taken_at \
                 FROM fleet_taken WHERE fleet = ?1 AND id = ?2",
            )
            .and_then(|mut s| s.query_row(params![fleet, id], taken_from_row).optional())
            .map_err(|e| self.err(e))
    }

    pub fn fleet_take(&self, fleet: &str, id: i64, service: &str, action: &str) -> Result<()> {
        self.exec(
            "INSERT INTO fleet_taken (fleet, id, service, action, taken_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![fleet, id, service, action, now_ms()],
        )
    }

    pub fn fleet_finish(&self, fleet: &str, id: i64, ok: bool, message: &str) -> Result<()> {
        self.exec(
            "UPDATE fleet_taken SET finished_at = ?3, ok = ?4, message = ?5 \
             WHERE fleet = ?1 AND id = ?2",
            params![fleet, id, now_ms(), ok, message],
        )
    }

    /// Finished here, not yet written back to PostgreSQL.
    pub fn fleet_unreported(&self, fleet: &str) -> Result<Vec<Taken>> {
        self.0
            .prepare_cached(
                "SELECT id, service, action, finished_at, ok, message, reported, taken_at \
                 FROM fleet_taken WHERE fleet = ?1 AND finished_at IS NOT NULL \
                 AND reported = 0 ORDER BY id",
            )
            .and_then(|mut s| s.query_map([fleet], taken_from_row)?.collect())
            .map_err(|e| self.err(e))
    }

    /// Marks results as written back; records older than a week are forgotten (a
    /// command that old has expired in PostgreSQL long ago).
    pub fn fleet_reported(&self, fleet: &str, ids: &[i64]) -> Result<()> {
        for id in ids {
            self.exec(
                "UPDATE fleet_taken SET reported = 1 WHERE fleet = ?1 AND id = ?2",
                params![fleet, id],
            )?;
        }
        self.exec(
            "DELETE FROM fleet_taken WHERE reported = 1 AND taken_at < ?1",
            params![now_ms() - 7 * 24 * 3600 * 1000],
        )
    }

    /// Signatures of signed NOTIFY payloads seen at or after `since` (unix seconds).
    pub fn notify_seen(&self, since: i64) -> Result<Vec<(String, i64)>> {
        self.0
            .prepare_cached("SELECT signature, signed_at FROM notify_seen WHERE signed_at >= ?1")
            .and_then(|mut s| {
                s.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Remembers a signature; forgets those signed before `forget_before`.
    pub fn add_notify_seen(&self, signature: &str, at: i64, forget_before: i64) -> Result<()> {
        self.exec(
            "DELETE FROM notify_seen WHERE signed_at < ?1",
            params![forget_before],
        )?;
        self.exec(
            "INSERT OR REPLACE INTO notify_seen (signature, signed_at) VALUES (?1, ?2)",
            params![signature, at],
        )
    }
}

fn taken_from_row(r: &rusqlite::Row) -> rusqlite::Result<Taken> {
    Ok(Taken {
        id: r.get(0)?,
        service: r.get(1)?,
        action: r.get(2)?,
        finished: r.get::<_, Option<i64>>(3)?.is_some(),
        ok: r.get::<_, Option<bool>>(4)?.unwrap_or(false),
        message: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        reported: r.get(6)?,
        taken_at: r.get(7)?,
    })
}
