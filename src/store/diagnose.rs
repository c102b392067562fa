//! What `tend doctor` asks of the database, without changing it: no migration, no
//! switch of journal mode, no checkpoint on close.

use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::{db_err, schema};
use crate::error::Result;

/// The database as found.
#[derive(Debug)]
pub struct Diagnosis {
    /// `PRAGMA integrity_check`'s first lines: `["ok"]` when sound.
    pub integrity: Vec<String>,
    pub journal_mode: String,
    pub schema_version: i64,
    pub schema_known: i64,
    /// The `tend config` settings (empty when the table does not exist yet).
    pub config: Vec<(String, String)>,
    /// How many services are defined (0 when the table does not exist yet).
    pub services: usize,
    /// How many of them have a hook of their own (`on_exit`...).
    pub hooked: usize,
}

/// Opens `path` read-write (a WAL database cannot be read without its shared-memory
/// index) but writes nothing, and runs the checks.
pub fn diagnose(path: &Path) -> Result<Diagnosis> {
    let err = |e| db_err(path, e);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(err)?;
    let journal_mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(err)?;
    let schema_version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check(10)").map_err(err)?;
    let integrity = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(err)?;
    let config = match conn.prepare("SELECT key, value FROM config ORDER BY key") {
        Ok(mut stmt) => stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(err)?,
        // An old schema without the table: nothing configured.
        Err(_) => Vec::new(),
    };
    let services: i64 = conn
        .query_row("SELECT count(*) FROM services", [], |r| r.get(0))
        .unwrap_or(0);
    let hooked: i64 = conn
        .query_row(
            "SELECT count(*) FROM services WHERE \
             json_extract(settings, '$.on_start') IS NOT NULL OR \
             json_extract(settings, '$.on_exit') IS NOT NULL OR \
             json_extract(settings, '$.on_failed') IS NOT NULL OR \
             json_extract(settings, '$.on_unhealthy') IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    Ok(Diagnosis {
        hooked: hooked.max(0) as usize,
        integrity,
        journal_mode,
        schema_version,
        schema_known: schema::latest(),
        config,
        services: services.max(0) as usize,
    })
}
