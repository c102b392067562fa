//! Instances, restart bookkeeping, `tend config` settings and the event log.

use rusqlite::{params, OptionalExtension};

use super::Tx;
use crate::error::Result;
use crate::record::{now_ms, Event, Instance, Runtime};

impl Tx<'_> {
    pub fn instance(&self, service_id: i64) -> Result<Option<Instance>> {
        let mut stmt = self
            .0
            .prepare_cached(&format!(
                "SELECT {INSTANCE} FROM instances WHERE service_id = ?1"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_row([service_id], |r| instance_from_row(r, 0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn set_instance(&self, service_id: i64, i: &Instance) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO instances (service_id, pid, pgid, start_time, boot_id, \
             started_at, stopping, cgroup, launching) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                service_id,
                i.pid,
                i.pgid,
                i.start_time as i64,
                i.boot_id,
                i.started_at,
                i.stopping,
                i.cgroup,
                i.launching
            ],
        )
    }

    /// The session (`pgid`) of every recorded instance but `except` (`(pid, start_time)`).
    pub fn sessions_except(&self, except: Option<(i32, u64)>) -> Result<Vec<i32>> {
        let (pid, start_time) = except.unwrap_or((0, 0));
        self.0
            .prepare_cached("SELECT pgid FROM instances WHERE NOT (pid = ?1 AND start_time = ?2)")
            .and_then(|mut s| {
                s.query_map(params![pid, start_time as i64], |r| r.get(0))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Removes the instance record, but only if it is still the one the caller saw:
    /// a concurrent `tend start` may have replaced it meanwhile.
    pub fn clear_instance(&self, service_id: i64, seen: &Instance) -> Result<bool> {
        let mut stmt = self
            .0
            .prepare_cached(
                "DELETE FROM instances WHERE service_id = ?1 AND pid = ?2 AND start_time = ?3",
            )
            .map_err(|e| self.err(e))?;
        let n = stmt
            .execute(params![service_id, seen.pid, seen.start_time as i64])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Marks the instance as being stopped on purpose (only if it is still `seen`).
    pub fn mark_stopping(&self, service_id: i64, seen: &Instance) -> Result<()> {
        self.exec(
            "UPDATE instances SET stopping = 1 WHERE service_id = ?1 AND pid = ?2 \
             AND start_time = ?3",
            params![service_id, seen.pid, seen.start_time as i64],
        )
    }

    /// Takes back [`Tx::mark_stopping`] for a stop that did nothing (only if the
    /// instance is still `seen`).
    pub fn unmark_stopping(&self, service_id: i64, seen: &Instance) -> Result<()> {
        self.exec(
            "UPDATE instances SET stopping = 0 WHERE service_id = ?1 AND pid = ?2 \
             AND start_time = ?3",
            params![service_id, seen.pid, seen.start_time as i64],
        )
    }

    pub fn runtime(&self, service_id: i64) -> Result<Runtime> {
        let mut stmt = self
            .0
            .prepare_cached(&format!(
                "SELECT {RUNTIME} FROM runtime WHERE service_id = ?1"
            ))
            .map_err(|e| self.err(e))?;
        let row = stmt
            .query_row([service_id], |r| runtime_from_row(r, 0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.unwrap_or_default())
    }

    pub fn set_runtime(&self, service_id: i64, rt: &Runtime) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO runtime (service_id, restarts, last_exit, last_exit_at, \
             backoff_ms, next_retry_at, failed, recent_starts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                service_id,
                rt.restarts,
                rt.last_exit,
                rt.last_exit_at,
                rt.backoff_ms.min(i64::MAX as u64) as i64,
                rt.next_retry_at,
                rt.failed,
                serde_json::to_string(&rt.recent_starts).expect("a Vec<i64> always serializes")
            ],
        )
    }

    pub fn config(&self, key: &str) -> Result<Option<String>> {
        self.0
            .prepare_cached("SELECT value FROM config WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    pub fn config_all(&self) -> Result<Vec<(String, String)>> {
        self.0
            .prepare_cached("SELECT key, value FROM config ORDER BY key")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.err(e))
    }

    /// Sets (`Some`) or removes (`None`) a setting.
    pub fn set_config(&self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => self.exec(
                "INSERT OR REPLACE INTO config (key, value) VALUES (?1, ?2)",
                params![key, v],
            ),
            None => self.exec("DELETE FROM config WHERE key = ?1", params![key]),
        }
    }

    /// Whether `service` has an event of `kind` recorded at or after `since` (unix ms)
    /// whose detail begins with `prefix`.
    pub fn has_event(&self, service: &str, kind: &str, since: i64, prefix: &str) -> Result<bool> {
        self.0
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM events WHERE service = ?1 AND kind = ?2 \
                 AND at >= ?3 AND substr(detail, 1, length(?4)) = ?4)",
            )
            .and_then(|mut s| s.query_row(params![service, kind, since, prefix], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    pub fn record(&self, service: &str, kind: &str, detail: &str) -> Result<()> {
        self.record_id(service, kind, detail).map(drop)
    }

    /// Appends an event and returns its id; then applies the retention (`tend config`
    /// `events.keep_per_service` and `events.keep_for`) in the same transaction, so the
    /// table never grows past it.
    pub fn record_id(&self, service: &str, kind: &str, detail: &str) -> Result<i64> {
        self.record_facts(service, kind, detail, serde_json::Map::new())
    }

    /// [`Tx::record_id`], with what the recorder knows in a form a program can read
    /// (`pid`, `exit_code`...), for whoever is told of the event once it committed (the
    /// daemon's hooks). The facts are not stored: the detail is the record.
    pub fn record_facts(
        &self,
        service: &str,
        kind: &str,
        detail: &str,
        facts: serde_json::Map<String, serde_json::Value>,
    ) -> Result<i64> {
        let now = now_ms();
        self.exec(
            "INSERT INTO events (at, service, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now, service, kind, detail],
        )?;
        let id = self.0.last_insert_rowid();
        self.prune_events(service, id, now)?;
        self.noted(
            || Event {
                id,
                at: now,
                service: service.to_string(),
                kind: kind.to_string(),
                detail: detail.to_string(),
            },
            facts,
        );
        Ok(id)
    }

    /// Applies the retention after event `id` of `service` was written. Both limits
    /// delete in batches of a hundredth, so the work is rare and the common case costs one
    /// statement of index lookups:
    /// - count: ids grow, so `service` has at most `id - (its oldest id) + 1` events; only
    ///   when that span passes the limit are they counted (a walk of the index on
    ///   (service, id)), and once they pass it the oldest are deleted down to 99 % of it;
    /// - age: only when the oldest event (by primary key) has expired are the events older
    ///   than 99 % of the limit deleted.
    fn prune_events(&self, service: &str, id: i64, now: i64) -> Result<()> {
        // One statement for the settings, the oldest event's time and the service's
        // oldest id: every CLI call is a fresh process, and preparing a statement costs
        // more than running it.
        type Row = (Option<String>, Option<String>, Option<i64>, Option<i64>);
        let (per_service, keep_for, oldest, first_id): Row = self
            .0
            .prepare_cached(
                "SELECT (SELECT value FROM config WHERE key = ?1), \
                        (SELECT value FROM config WHERE key = ?2), \
                        (SELECT at FROM events ORDER BY id LIMIT 1), \
                        (SELECT min(id) FROM events WHERE service = ?3)",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        crate::config::EVENTS_KEEP_PER_SERVICE,
                        crate::config::EVENTS_KEEP_FOR,
                        service
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
            })
            .map_err(|e| self.err(e))?;
        let (count, age) = crate::config::retention(per_service.as_deref(), keep_for.as_deref());
        if let (Some(n), Some(first)) = (count, first_id) {
            let n = n.min(i64::MAX as u64) as i64;
            if id - first + 1 > n {
                let over: Option<i64> = self
                    .0
                    .prepare_cached(
                        "SELECT id FROM events WHERE service = ?1 ORDER BY id DESC \
                         LIMIT 1 OFFSET ?2",
                    )
                    .and_then(|mut s| s.query_row(params![service, n], |r| r.get(0)).optional())
                    .map_err(|e| self.err(e))?;
                if over.is_some() {
                    let keep = n - n / 100;
                    self.exec(
                        "DELETE FROM events WHERE service = ?1 AND id <= (SELECT id FROM \
                         events WHERE service = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                        params![service, keep],
                    )?;
                }
            }
        }
        if let Some(age) = age {
            let cutoff = now - age.as_millis() as i64;
            if oldest.is_some_and(|at| at < cutoff) {
                let batch = cutoff + (age.as_millis() / 100) as i64;
                self.exec("DELETE FROM events WHERE at < ?1", params![batch])?;
            }
        }
        Ok(())
    }

    /// Removes an event written earlier in an operation that is being taken back as a
    /// whole (a start whose exec failed after its record was committed).
    pub fn delete_event(&self, id: i64) -> Result<()> {
        self.exec("DELETE FROM events WHERE id = ?1", params![id])
    }

    /// The last `limit` events, oldest first; only `service`'s when given.
    pub fn events(&self, service: Option<&str>, limit: u32) -> Result<Vec<Event>> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT id, at, service, kind, detail FROM (\
                   SELECT * FROM events WHERE ?1 IS NULL OR service = ?1 \
                   ORDER BY id DESC LIMIT ?2) ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![service, limit], event_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Events with an id above `after`, oldest first, at most `limit` of them.
    pub fn events_after(
        &self,
        after: i64,
        service: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT id, at, service, kind, detail FROM events \
                 WHERE id > ?1 AND (?2 IS NULL OR service = ?2) ORDER BY id LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![after, service, limit], event_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// The id of the newest event, 0 when there is none.
    pub fn last_event_id(&self) -> Result<i64> {
        self.0
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// A number that changes whenever any definition is added, changed or removed
    /// (kept by triggers, schema 8).
    pub fn definitions_version(&self) -> Result<i64> {
        self.0
            .prepare_cached("SELECT v FROM definitions_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// Services with an automatic restart pending: (name, due unix ms), in one query (the
    /// daemon asks after every request, whatever the number of services).
    pub fn pending_retries(&self) -> Result<Vec<(String, i64)>> {
        self.0
            .prepare_cached(
                "SELECT s.name, r.next_retry_at FROM runtime r \
                 JOIN services s ON s.id = r.service_id \
                 WHERE r.next_retry_at IS NOT NULL ORDER BY s.name",
            )
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| self.err(e))
    }
}

/// The columns [`runtime_from_row`] reads.
pub(super) const RUNTIME: &str =
    "restarts, last_exit, last_exit_at, backoff_ms, next_retry_at, failed, recent_starts";

/// Restart bookkeeping from the [`RUNTIME`] columns starting at `at`. Bookkeeping that
/// cannot be read is only a lost start history: start over.
pub(super) fn runtime_from_row(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Runtime> {
    Ok(Runtime {
        restarts: r.get::<_, i64>(at)?.clamp(0, u32::MAX as i64) as u32,
        last_exit: r.get(at + 1)?,
        last_exit_at: r.get(at + 2)?,
        backoff_ms: r.get::<_, i64>(at + 3)?.max(0) as u64,
        next_retry_at: r.get(at + 4)?,
        failed: r.get(at + 5)?,
        recent_starts: serde_json::from_str(&r.get::<_, String>(at + 6)?).unwrap_or_default(),
    })
}

/// The columns [`instance_from_row`] reads.
pub(super) const INSTANCE: &str =
    "pid, pgid, start_time, boot_id, started_at, stopping, cgroup, launching";

pub(super) fn instance_from_row(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Instance> {
    Ok(Instance {
        pid: r.get(at)?,
        pgid: r.get(at + 1)?,
        start_time: r.get::<_, i64>(at + 2)? as u64,
        boot_id: r.get(at + 3)?,
        started_at: r.get(at + 4)?,
        stopping: r.get(at + 5)?,
        cgroup: r.get(at + 6)?,
        launching: r.get(at + 7)?,
    })
}

/// One row of `SELECT id, at, service, kind, detail FROM events`.
fn event_row(r: &rusqlite::Row) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        at: r.get(1)?,
        service: r.get(2)?,
        kind: r.get(3)?,
        detail: r.get(4)?,
    })
}
