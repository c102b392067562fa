//! SQLite state: all SQL lives in this module.
//!
//! One file, `tend.db`, in WAL mode so readers never block the writer. Every change runs
//! in `BEGIN IMMEDIATE`, which takes the write lock up front: a read-then-write
//! transaction can then never fail half-way with `SQLITE_BUSY`, and two `tend start`
//! calls for the same service are serialized (the second sees the first one's PID).
//! Contention beyond the busy timeout retries the whole transaction a bounded number of
//! times.

mod schema;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::error::{io_reason, Error, Result};
use crate::record::{now_ms, Event, Instance, Runtime};
use crate::service::{RestartPolicy, Service, StopSignal};

pub use schema::latest as schema_version;

/// How long one statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL size past which a committer checkpoints and truncates it (about 30 pages: the
/// checkpoint's fsyncs every few commits cost less than re-reading a longer WAL on
/// every open).
const WAL_LIMIT: u64 = 128 * 1024;
/// How many times a whole transaction is tried when it still meets contention.
const ATTEMPTS: u32 = 3;

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        if !path.exists() {
            // Create the file ourselves so it is 0600 from the first byte; SQLite gives
            // its -wal and -shm files the same mode.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::Home {
                    path: path.to_path_buf(),
                    reason: format!("cannot create the database: {}", io_reason(&e)),
                })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| db_err(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.configure()?;
        Ok(store)
    }

    fn configure(&mut self) -> Result<()> {
        let path = self.path.clone();
        let err = |e| db_err(&path, e);
        self.conn.busy_handler(Some(busy_wait)).map_err(err)?;
        // The last connection to close a WAL database checkpoints and fsyncs; every CLI
        // call is such a connection, and that fsync was the largest single cost of a
        // `tend start`. Automatic checkpoints during commits still bound the WAL.
        self.conn
            .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(err)?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let latest = schema::latest();
        if version > latest {
            return Err(Error::SchemaTooNew {
                path: self.path.clone(),
                found: version,
                known: latest,
            });
        }
        // NORMAL in WAL mode: commits do not fsync (checkpoints do). A power cut can lose
        // the last few commits but never corrupts the file; the PIDs they recorded would
        // be stale after a reboot anyway.
        self.conn
            .execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
            .map_err(err)?;
        if version < latest {
            self.migrate()?;
        }
        self.require_wal()
    }

    /// tend's concurrency rests on WAL mode: readers never block the writer, and a
    /// writer waits only for another writer. In a rollback journal a reader blocks every
    /// commit, so a held read lock would stall starts and stops. The mode is persistent;
    /// if something switched the file away from WAL, switch it back, and if that is not
    /// possible now (another process has it open), refuse with a clear error rather than
    /// run without the guarantees.
    fn require_wal(&mut self) -> Result<()> {
        let path = self.path.clone();
        let mode = |conn: &Connection, sql: &str| -> Result<String> {
            conn.query_row(sql, [], |r| r.get::<_, String>(0))
                .map_err(|e| db_err(&path, e))
        };
        let current = mode(&self.conn, "PRAGMA journal_mode")?;
        if current.eq_ignore_ascii_case("wal") {
            return Ok(());
        }
        match mode(&self.conn, "PRAGMA journal_mode = WAL") {
            Ok(m) if m.eq_ignore_ascii_case("wal") => Ok(()),
            Ok(_) => Err(Error::JournalMode {
                path: self.path.clone(),
                mode: current,
            }),
            Err(e) if e.is_busy() => Err(Error::JournalMode {
                path: self.path.clone(),
                mode: current,
            }),
            Err(e) => Err(e),
        }
    }

    fn migrate(&mut self) -> Result<()> {
        let path = self.path.clone();
        // journal_mode cannot change inside a transaction; it is persistent, so setting
        // it once per migration run is enough.
        with_retry(&path, || {
            self.conn
                .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
                .map_err(|e| db_err(&path, e))
        })?;
        self.write(|tx| {
            // Re-read inside the write lock: another tend may have migrated meanwhile.
            let version: i64 =
                tx.0.query_row("PRAGMA user_version", [], |r| r.get(0))
                    .map_err(|e| tx.err(e))?;
            for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.0.execute_batch(sql).map_err(|e| tx.err(e))?;
                tx.0.pragma_update(None, "user_version", (i + 1) as i64)
                    .map_err(|e| tx.err(e))?;
            }
            Ok(())
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction, committing when it returns `Ok`.
    /// On contention the whole transaction is retried: `f` must not have side effects
    /// outside the database before its last statement can fail with `SQLITE_BUSY`.
    pub fn write<T>(&mut self, mut f: impl FnMut(&Tx) -> Result<T>) -> Result<T> {
        self.run(TransactionBehavior::Immediate, &mut f)
    }

    /// Runs `f` in a read transaction: one consistent snapshot.
    pub fn read<T>(&mut self, mut f: impl FnMut(&Tx) -> Result<T>) -> Result<T> {
        self.run(TransactionBehavior::Deferred, &mut f)
    }

    fn run<T>(
        &mut self,
        behavior: TransactionBehavior,
        f: &mut dyn FnMut(&Tx) -> Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let conn = &mut self.conn;
        with_retry(&path, || {
            let tx = conn
                .transaction_with_behavior(behavior)
                .map_err(|e| db_err(&path, e))?;
            let wrapped = Tx(tx, &path);
            let value = f(&wrapped)?;
            wrapped.0.commit().map_err(|e| db_err(&path, e))?;
            Ok(value)
        })
        .inspect(|_| {
            if matches!(behavior, TransactionBehavior::Immediate) {
                self.keep_wal_short();
            }
        })
    }

    /// Every CLI call is the first connection to open the database, and the first opener
    /// rebuilds the WAL index by reading every frame in the WAL. It also cannot know
    /// that those frames were checkpointed already, so SQLite's automatic checkpoints
    /// never let a one-commit-per-process WAL start over: it grew without bound and
    /// reading it became most of a `tend start`. So once the WAL passes [`WAL_LIMIT`],
    /// the committer checkpoints it and truncates it to nothing (one fsync, every few
    /// dozen commits). Contention is not an error: someone else will do it.
    fn keep_wal_short(&mut self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_LIMIT) {
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

/// Waits for another connection's lock. SQLite's own busy timeout sleeps 1, 2, 5, 10,
/// 15, 20, 25... ms between tries, so a transaction that waits at all waits milliseconds
/// for a lock that is usually held for tens of microseconds. This handler starts at 50
/// µs and doubles up to 2 ms, giving up after [`BUSY_TIMEOUT`] in total.
fn busy_wait(count: i32) -> bool {
    const FIRST_US: u64 = 50;
    const MAX_US: u64 = 2_000;
    let count = count.max(0) as u64;
    // Steps 0..=5 sleep 50, 100, ..., 1600 µs (3.15 ms in all); then 2 ms each.
    let ramp = 6;
    let waited_us = if count < ramp {
        FIRST_US * ((1 << count) - 1)
    } else {
        FIRST_US * ((1 << ramp) - 1) + (count - ramp) * MAX_US
    };
    if waited_us >= BUSY_TIMEOUT.as_micros() as u64 {
        return false;
    }
    let next = (FIRST_US << count.min(ramp)).min(MAX_US);
    std::thread::sleep(Duration::from_micros(next));
    true
}

/// Retries `f` while it fails with contention, at most [`ATTEMPTS`] times.
fn with_retry<T>(path: &Path, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if e.is_busy() && attempt < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(5 * attempt as u64));
                attempt += 1;
            }
            Err(e) if e.is_busy() => {
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                })
            }
            other => return other,
        }
    }
}

fn db_err(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => Error::NotADatabase {
            path: path.to_path_buf(),
        },
        _ => Error::Database {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// An open transaction. All reads and writes of tend's tables go through its methods.
pub struct Tx<'a>(rusqlite::Transaction<'a>, &'a Path);

const SERVICE_COLUMNS: &str = "id, name, argv, cwd, stdin, stdout, stderr, env, stop_signal, \
                               stop_timeout_ms, restart, created_at, updated_at, autostart, \
                               restart_delay_ms, start_limit, start_limit_interval_ms, \
                               log_max_bytes";

impl Tx<'_> {
    fn err(&self, e: rusqlite::Error) -> Error {
        db_err(self.1, e)
    }

    /// The service named `name`, with its row id.
    pub fn service(&self, name: &str) -> Result<Option<(i64, Service)>> {
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE name = ?1");
        let mut stmt = self.0.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let row = stmt
            .query_row([name], RawService::from_row)
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(RawService::into_service).transpose()
    }

    /// All services, sorted by name.
    pub fn services(&self) -> Result<Vec<(i64, Service)>> {
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services ORDER BY name");
        let mut stmt = self.0.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], RawService::from_row)
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| self.err(e))?.into_service()?);
        }
        Ok(out)
    }

    /// All running instances by service id.
    pub fn instances(&self) -> Result<BTreeMap<i64, Instance>> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT service_id, pid, pgid, start_time, boot_id, started_at, stopping \
                 FROM instances",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, instance_from_row(r, 1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    pub fn instance(&self, service_id: i64) -> Result<Option<Instance>> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT pid, pgid, start_time, boot_id, started_at, stopping FROM instances \
                 WHERE service_id = ?1",
            )
            .map_err(|e| self.err(e))?;
        stmt.query_row([service_id], |r| instance_from_row(r, 0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn insert_service(&self, s: &Service) -> Result<i64> {
        let raw = RawService::from_service(s)?;
        let sql = format!(
            "INSERT INTO services (name, created_at, {}) VALUES (?1, ?2, {})",
            RawService::COLUMNS.join(", "),
            (3..3 + RawService::COLUMNS.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&raw.name, &raw.created_at];
        values.extend(raw.values());
        self.0
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.execute(values.as_slice()))
            .map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::ConstraintViolation) => Error::AlreadyExists(s.name.clone()),
                _ => self.err(e),
            })?;
        Ok(self.0.last_insert_rowid())
    }

    pub fn update_service(&self, id: i64, s: &Service) -> Result<()> {
        let raw = RawService::from_service(s)?;
        let sql = format!(
            "UPDATE services SET {} WHERE id = ?1",
            RawService::COLUMNS
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c} = ?{}", i + 2))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut values: Vec<&dyn rusqlite::ToSql> = vec![&id];
        values.extend(raw.values());
        self.exec(&sql, values.as_slice())
    }

    pub fn delete_service(&self, id: i64) -> Result<()> {
        self.exec("DELETE FROM services WHERE id = ?1", params![id])
    }

    pub fn set_instance(&self, service_id: i64, i: &Instance) -> Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO instances (service_id, pid, pgid, start_time, boot_id, \
             started_at, stopping) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                service_id,
                i.pid,
                i.pgid,
                i.start_time as i64,
                i.boot_id,
                i.started_at,
                i.stopping
            ],
        )
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
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = ?1");
        let svc = self
            .0
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_row([id], RawService::from_row))
            .map_err(|e| self.err(e))?
            .into_service()?
            .1;
        Ok(self.instance(id)?.map(|i| (id, svc, i)))
    }

    /// Marks the instance as being stopped on purpose (only if it is still `seen`).
    pub fn mark_stopping(&self, service_id: i64, seen: &Instance) -> Result<()> {
        self.exec(
            "UPDATE instances SET stopping = 1 WHERE service_id = ?1 AND pid = ?2 \
             AND start_time = ?3",
            params![service_id, seen.pid, seen.start_time as i64],
        )
    }

    pub fn runtime(&self, service_id: i64) -> Result<Runtime> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT restarts, last_exit, last_exit_at, backoff_ms, next_retry_at, failed, \
                 recent_starts FROM runtime WHERE service_id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let row = stmt
            .query_row([service_id], |r| {
                Ok((
                    Runtime {
                        restarts: r.get::<_, i64>(0)?.clamp(0, u32::MAX as i64) as u32,
                        last_exit: r.get(1)?,
                        last_exit_at: r.get(2)?,
                        backoff_ms: r.get::<_, i64>(3)?.max(0) as u64,
                        next_retry_at: r.get(4)?,
                        failed: r.get(5)?,
                        recent_starts: Vec::new(),
                    },
                    r.get::<_, String>(6)?,
                ))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(match row {
            // Bookkeeping that cannot be read is only a lost start history: start over.
            Some((mut rt, starts)) => {
                rt.recent_starts = serde_json::from_str(&starts).unwrap_or_default();
                rt
            }
            None => Runtime::default(),
        })
    }

    /// Restart bookkeeping of every service that has any.
    pub fn runtimes(&self) -> Result<BTreeMap<i64, Runtime>> {
        let ids: Vec<i64> = self
            .0
            .prepare_cached("SELECT service_id FROM runtime")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(|e| self.err(e))?;
        ids.into_iter()
            .map(|id| Ok((id, self.runtime(id)?)))
            .collect()
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

    pub fn record(&self, service: &str, kind: &str, detail: &str) -> Result<()> {
        self.record_id(service, kind, detail).map(drop)
    }

    /// Appends an event and returns its id.
    pub fn record_id(&self, service: &str, kind: &str, detail: &str) -> Result<i64> {
        self.exec(
            "INSERT INTO events (at, service, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms(), service, kind, detail],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    /// Removes an event written earlier in an operation that is being taken back as a
    /// whole (a start whose exec failed after its record was committed).
    pub fn delete_event(&self, id: i64) -> Result<()> {
        self.exec("DELETE FROM events WHERE id = ?1", params![id])
    }

    /// The service with row id `id`.
    pub fn service_by_id(&self, id: i64) -> Result<Option<Service>> {
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = ?1");
        let mut stmt = self.0.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let row = stmt
            .query_row([id], RawService::from_row)
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|r| r.into_service().map(|(_, s)| s)).transpose()
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
            .query_map(params![service, limit], |r| {
                Ok(Event {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    service: r.get(2)?,
                    kind: r.get(3)?,
                    detail: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<()> {
        let mut stmt = self.0.prepare_cached(sql).map_err(|e| self.err(e))?;
        stmt.execute(p).map(drop).map_err(|e| self.err(e))
    }
}

fn instance_from_row(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Instance> {
    Ok(Instance {
        pid: r.get(at)?,
        pgid: r.get(at + 1)?,
        start_time: r.get::<_, i64>(at + 2)? as u64,
        boot_id: r.get(at + 3)?,
        started_at: r.get(at + 4)?,
        stopping: r.get(at + 5)?,
    })
}

/// A services row as SQLite holds it, before the JSON and enum columns are decoded.
struct RawService {
    id: i64,
    name: String,
    argv: String,
    cwd: String,
    stdin: String,
    stdout: String,
    stderr: String,
    env: String,
    stop_signal: String,
    stop_timeout_ms: i64,
    restart: String,
    created_at: i64,
    updated_at: i64,
    autostart: bool,
    restart_delay_ms: i64,
    start_limit: i64,
    start_limit_interval_ms: i64,
    log_max_bytes: i64,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn from_ms(v: i64) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

impl RawService {
    /// The columns a definition writes (all but id, name and created_at), in the order
    /// of [`RawService::values`].
    const COLUMNS: [&'static str; 15] = [
        "argv",
        "cwd",
        "stdin",
        "stdout",
        "stderr",
        "env",
        "stop_signal",
        "stop_timeout_ms",
        "restart",
        "updated_at",
        "autostart",
        "restart_delay_ms",
        "start_limit",
        "start_limit_interval_ms",
        "log_max_bytes",
    ];

    fn values(&self) -> [&dyn rusqlite::ToSql; 15] {
        [
            &self.argv,
            &self.cwd,
            &self.stdin,
            &self.stdout,
            &self.stderr,
            &self.env,
            &self.stop_signal,
            &self.stop_timeout_ms,
            &self.restart,
            &self.updated_at,
            &self.autostart,
            &self.restart_delay_ms,
            &self.start_limit,
            &self.start_limit_interval_ms,
            &self.log_max_bytes,
        ]
    }

    fn from_row(r: &rusqlite::Row) -> rusqlite::Result<RawService> {
        Ok(RawService {
            id: r.get(0)?,
            name: r.get(1)?,
            argv: r.get(2)?,
            cwd: r.get(3)?,
            stdin: r.get(4)?,
            stdout: r.get(5)?,
            stderr: r.get(6)?,
            env: r.get(7)?,
            stop_signal: r.get(8)?,
            stop_timeout_ms: r.get(9)?,
            restart: r.get(10)?,
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
            autostart: r.get(13)?,
            restart_delay_ms: r.get(14)?,
            start_limit: r.get(15)?,
            start_limit_interval_ms: r.get(16)?,
            log_max_bytes: r.get(17)?,
        })
    }

    fn from_service(s: &Service) -> Result<RawService> {
        let text = |what: &'static str, p: &Path| {
            p.to_str()
                .map(str::to_string)
                .ok_or_else(|| Error::Invalid {
                    what,
                    message: format!("{} is not valid UTF-8", p.display()),
                })
        };
        Ok(RawService {
            id: 0,
            name: s.name.clone(),
            argv: serde_json::to_string(&s.argv).expect("a Vec<String> always serializes"),
            cwd: text("working directory", &s.cwd)?,
            stdin: text("stdin", &s.stdin)?,
            stdout: text("stdout", &s.stdout)?,
            stderr: text("stderr", &s.stderr)?,
            env: serde_json::to_string(&s.env).expect("a string map always serializes"),
            stop_signal: s.stop_signal.name().to_string(),
            stop_timeout_ms: ms(s.stop_timeout),
            restart: s.restart.as_str().to_string(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            autostart: s.autostart,
            restart_delay_ms: ms(s.restart_delay),
            start_limit: s.start_limit as i64,
            start_limit_interval_ms: ms(s.start_limit_interval),
            log_max_bytes: s.log_max_bytes.min(i64::MAX as u64) as i64,
        })
    }

    fn into_service(self) -> Result<(i64, Service)> {
        let corrupt = |message: String| Error::Corrupt {
            service: self.name.clone(),
            message,
        };
        let argv: Vec<String> =
            serde_json::from_str(&self.argv).map_err(|e| corrupt(format!("argv: {e}")))?;
        let env: BTreeMap<String, String> =
            serde_json::from_str(&self.env).map_err(|e| corrupt(format!("env: {e}")))?;
        let stop_signal: StopSignal = self
            .stop_signal
            .parse()
            .map_err(|e| corrupt(format!("stop signal: {e}")))?;
        let restart: RestartPolicy = self
            .restart
            .parse()
            .map_err(|e| corrupt(format!("restart: {e}")))?;
        if argv.is_empty() {
            return Err(corrupt("argv is empty".into()));
        }
        Ok((
            self.id,
            Service {
                name: self.name,
                argv,
                cwd: self.cwd.into(),
                stdin: self.stdin.into(),
                stdout: self.stdout.into(),
                stderr: self.stderr.into(),
                env,
                stop_signal,
                stop_timeout: from_ms(self.stop_timeout_ms),
                restart,
                autostart: self.autostart,
                restart_delay: from_ms(self.restart_delay_ms),
                start_limit: self.start_limit.clamp(0, u32::MAX as i64) as u32,
                start_limit_interval: from_ms(self.start_limit_interval_ms),
                log_max_bytes: self.log_max_bytes.max(0) as u64,
                created_at: self.created_at,
                updated_at: self.updated_at,
            },
        ))
    }
}
