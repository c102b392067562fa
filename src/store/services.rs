//! Service definitions: name, command, environment, and the settings table's values as
//! one JSON object (see [`crate::service::settings`]), so a new setting needs no new
//! column and no migration.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, ErrorCode, OptionalExtension};

use super::{Overview, Tx};
use crate::error::{Error, Result};
use crate::record::{FileId, Instance, LogMark, Runtime};
use crate::service::{Defaults, Service, Settings};

const COLUMNS: &str = "id, name, argv, env, settings, created_at, updated_at";

/// A services row as SQLite holds it, before its JSON columns are read.
struct Row {
    id: i64,
    name: String,
    argv: String,
    env: String,
    settings: String,
    created_at: i64,
    updated_at: i64,
}

impl Row {
    fn read(r: &rusqlite::Row) -> rusqlite::Result<Row> {
        Ok(Row {
            id: r.get(0)?,
            name: r.get(1)?,
            argv: r.get(2)?,
            env: r.get(3)?,
            settings: r.get(4)?,
            created_at: r.get(5)?,
            updated_at: r.get(6)?,
        })
    }

    fn into_service(self, db: &Path) -> Result<(i64, Service)> {
        let corrupt = |message: String| Error::Corrupt {
            service: self.name.clone(),
            message,
        };
        let argv: Vec<String> =
            serde_json::from_str(&self.argv).map_err(|e| corrupt(format!("argv: {e}")))?;
        let env: BTreeMap<String, String> =
            serde_json::from_str(&self.env).map_err(|e| corrupt(format!("env: {e}")))?;
        if argv.is_empty() {
            return Err(corrupt("argv is empty".into()));
        }
        // Defaults only matter for a setting added to tend after this row was written.
        let name = &self.name;
        let defaults = || Defaults {
            cwd: "/".into(),
            log: db
                .parent()
                .unwrap_or(Path::new("/"))
                .join("logs")
                .join(format!("{name}.log")),
        };
        let settings = Settings::from_store(&self.settings, defaults).map_err(corrupt)?;
        Ok((
            self.id,
            Service {
                name: self.name,
                argv,
                env,
                settings,
                created_at: self.created_at,
                updated_at: self.updated_at,
            },
        ))
    }
}

/// The JSON columns of a definition.
fn encode(s: &Service) -> Result<(String, String, String)> {
    for p in [
        &s.settings.cwd,
        &s.settings.stdin,
        &s.settings.stdout,
        &s.settings.stderr,
    ] {
        if p.to_str().is_none() {
            return Err(Error::Invalid {
                what: "path",
                message: format!("{} is not valid UTF-8", p.display()),
            });
        }
    }
    Ok((
        serde_json::to_string(&s.argv).expect("a Vec<String> always serializes"),
        serde_json::to_string(&s.env).expect("a string map always serializes"),
        s.settings.to_store(),
    ))
}

impl Tx<'_> {
    fn one_service(&self, sql: &str, key: &dyn rusqlite::ToSql) -> Result<Option<(i64, Service)>> {
        let mut stmt = self.0.prepare_cached(sql).map_err(|e| self.err(e))?;
        let row = stmt
            .query_row([key], Row::read)
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|r| r.into_service(self.1)).transpose()
    }

    /// The service named `name`, with its row id.
    pub fn service(&self, name: &str) -> Result<Option<(i64, Service)>> {
        self.one_service(
            &format!("SELECT {COLUMNS} FROM services WHERE name = ?1"),
            &name,
        )
    }

    /// The service with row id `id`.
    pub fn service_by_id(&self, id: i64) -> Result<Option<Service>> {
        Ok(self
            .one_service(
                &format!("SELECT {COLUMNS} FROM services WHERE id = ?1"),
                &id,
            )?
            .map(|(_, s)| s))
    }

    /// All services, sorted by name.
    pub fn services(&self) -> Result<Vec<(i64, Service)>> {
        let sql = format!("SELECT {COLUMNS} FROM services ORDER BY name");
        let mut stmt = self.0.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], Row::read).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| self.err(e))?.into_service(self.1)?);
        }
        Ok(out)
    }

    /// Every service that has a recorded instance, with the instance, sorted by name.
    pub fn recorded(&self) -> Result<Vec<(i64, Service, Instance)>> {
        use super::state::{instance_from_row, INSTANCE};
        let prefixed = |table: &str, cols: &str| {
            cols.split(", ")
                .map(|c| format!("{table}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sql = format!(
            "SELECT {}, {} FROM services s JOIN instances i ON i.service_id = s.id \
             ORDER BY s.name",
            prefixed("s", COLUMNS),
            prefixed("i", INSTANCE),
        );
        let mut stmt = self.0.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let row = Row::read(r).map_err(|e| self.err(e))?;
            let instance = instance_from_row(r, 7).map_err(|e| self.err(e))?;
            let (id, service) = row.into_service(self.1)?;
            out.push((id, service, instance));
        }
        Ok(out)
    }

    /// Every service, sorted by name, with its recorded instance (and when that passed
    /// its readiness check) and its restart bookkeeping (the default when it has none):
    /// all that `list` shows, in one statement rather than one per table.
    pub fn overview(&self) -> Result<Vec<Overview>> {
        use super::state::{instance_from_row, runtime_from_row, INSTANCE, RUNTIME};
        let prefixed = |table: &str, cols: &str| {
            cols.split(", ")
                .map(|c| format!("{table}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Columns: 0..7 the service, 7 whether an instance is recorded, 8..16 the
        // instance, 16 its ready_at, 17 whether bookkeeping is recorded, 18.. the latter.
        let sql = format!(
            "SELECT {}, i.service_id IS NOT NULL, {}, i.ready_at, r.service_id IS NOT NULL, {} \
             FROM services s \
             LEFT JOIN instances i ON i.service_id = s.id \
             LEFT JOIN runtime r ON r.service_id = s.id \
             ORDER BY s.name",
            prefixed("s", COLUMNS),
            prefixed("i", INSTANCE),
            prefixed("r", RUNTIME),
        );
        let mut stmt = self.0.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let row = Row::read(r).map_err(|e| self.err(e))?;
            let read = || -> rusqlite::Result<_> {
                let instance = match r.get::<_, bool>(7)? {
                    true => Some(instance_from_row(r, 8)?),
                    false => None,
                };
                let ready_at: Option<i64> = r.get(16)?;
                let runtime = match r.get::<_, bool>(17)? {
                    true => runtime_from_row(r, 18)?,
                    false => Runtime::default(),
                };
                Ok((instance, ready_at, runtime))
            };
            let (instance, ready_at, runtime) = read().map_err(|e| self.err(e))?;
            let (id, service) = row.into_service(self.1)?;
            out.push(Overview {
                id,
                service,
                instance,
                ready_at,
                runtime,
            });
        }
        Ok(out)
    }

    pub fn insert_service(&self, s: &Service) -> Result<i64> {
        let (argv, env, settings) = encode(s)?;
        self.0
            .prepare_cached(
                "INSERT INTO services (name, argv, env, settings, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    s.name,
                    argv,
                    env,
                    settings,
                    s.created_at,
                    s.updated_at
                ])
            })
            .map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::ConstraintViolation) => Error::AlreadyExists(s.name.clone()),
                _ => self.err(e),
            })?;
        Ok(self.0.last_insert_rowid())
    }

    pub fn update_service(&self, id: i64, s: &Service) -> Result<()> {
        let (argv, env, settings) = encode(s)?;
        self.exec(
            "UPDATE services SET argv = ?2, env = ?3, settings = ?4, updated_at = ?5 \
             WHERE id = ?1",
            params![id, argv, env, settings, s.updated_at],
        )
    }

    pub fn delete_service(&self, id: i64) -> Result<()> {
        self.exec("DELETE FROM services WHERE id = ?1", params![id])
    }

    /// The service whose recorded instance is `(pid, start_time)`, if any.
    pub fn instance_by_pid(
        &self,
        pid: i32,
        start_time: u64,
    ) -> Result<Option<(i64, Service, Instance)>> {
        let id: Option<i64> = self
            .0
            .prepare_cached("SELECT service_id FROM instances WHERE pid = ?1 AND start_time = ?2")
            .and_then(|mut s| {
                s.query_row(params![pid, start_time as i64], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        let Some(id) = id else { return Ok(None) };
        let Some(svc) = self.service_by_id(id)? else {
            return Ok(None);
        };
        Ok(self.instance(id)?.map(|i| (id, svc, i)))
    }

    /// The service file that owns each service that has one, by name.
    pub fn owners(&self) -> Result<BTreeMap<String, String>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT name, owner FROM services WHERE owner IS NOT NULL")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Marks `name` as owned by the service file `owner` (`None`: by nobody).
    pub fn set_owner(&self, name: &str, owner: Option<&str>) -> Result<()> {
        self.exec(
            "UPDATE services SET owner = ?2 WHERE name = ?1",
            params![name, owner],
        )
    }

    /// When each recorded instance passed its readiness check, by service id.
    pub fn ready_marks(&self) -> Result<BTreeMap<i64, i64>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT service_id, ready_at FROM instances WHERE ready_at IS NOT NULL")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Records that the instance `seen` of service `id` passed its readiness check.
    pub fn mark_ready(&self, id: i64, seen: &Instance, at: i64) -> Result<()> {
        self.exec(
            "UPDATE instances SET ready_at = ?4 WHERE service_id = ?1 AND pid = ?2 \
             AND start_time = ?3",
            params![id, seen.pid, seen.start_time as i64, at],
        )
    }

    /// Records where the instance `seen` of service `id` began in its log.
    pub fn set_log_from(&self, id: i64, seen: &Instance, at: LogMark) -> Result<()> {
        let ids = serde_json::to_string(&(at.file, at.backup)).expect("file ids serialize");
        self.exec(
            "UPDATE instances SET log_from = ?4, log_ids = ?5 WHERE service_id = ?1 \
             AND pid = ?2 AND start_time = ?3",
            params![id, seen.pid, seen.start_time as i64, at.offset as i64, ids],
        )
    }

    /// Where the recorded instance of service `id` began in its log, if that was noted.
    pub fn log_from(&self, id: i64) -> Result<Option<LogMark>> {
        type Ids = (Option<FileId>, Option<FileId>);
        let row: Option<(Option<i64>, Option<String>)> = self
            .0
            .prepare_cached("SELECT log_from, log_ids FROM instances WHERE service_id = ?1")
            .and_then(|mut s| {
                s.query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        let Some((Some(offset), ids)) = row else {
            return Ok(None);
        };
        let ids = ids.and_then(|t| serde_json::from_str::<Ids>(&t).ok());
        Ok(Some(LogMark {
            offset: offset.max(0) as u64,
            identified: ids.is_some(),
            file: ids.and_then(|i| i.0),
            backup: ids.and_then(|i| i.1),
        }))
    }
}
