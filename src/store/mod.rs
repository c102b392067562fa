//! SQLite state: all SQL lives in this module.
//!
//! One file, `tend.db`, in WAL mode so readers never block the writer. Every change runs
//! in `BEGIN IMMEDIATE`, which takes the write lock up front: a read-then-write
//! transaction can then never fail half-way with `SQLITE_BUSY`, and two `tend start`
//! calls for the same service are serialized (the second sees the first one's PID).
//! Contention beyond the busy timeout retries the whole transaction a bounded number of
//! times.

pub mod diagnose;
mod fleet;
mod schema;
mod services;
mod state;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::error::{io_reason, Error, Result};

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
    /// (device, inode) of the database file and of its WAL, noted by
    /// [`Store::keep_open`]: see [`Store::files_unchanged`].
    files: Option<[(u64, u64); 2]>,
}

/// (device, inode) of `path`, if it exists.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
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
            files: None,
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

    fn wal_path(&self) -> PathBuf {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        PathBuf::from(wal)
    }

    /// Readies a connection that a resident process keeps open (the daemon's): its page
    /// cache is capped at `cache_kib` KiB (SQLite's default is 2 MiB; with 1,000 services
    /// the database is about 0.9 MB, and each idle connection would otherwise keep all of
    /// it), and the files it has open are noted for [`Store::files_unchanged`].
    pub fn keep_open(&mut self, cache_kib: u32) -> Result<()> {
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{cache_kib}"))
            .map_err(|e| db_err(&self.path, e))?;
        self.files = file_id(&self.path)
            .zip(file_id(&self.wal_path()))
            .map(|(d, w)| [d, w]);
        Ok(())
    }

    /// True while the database file and its WAL on disk are still the ones this
    /// connection had open when [`Store::keep_open`] noted them (false if it never did).
    /// A connection kept open for a long time (the daemon's) must ask before each use: if someone deleted or replaced either file, this connection
    /// would go on reading and committing to files nobody else sees, and everything it
    /// wrote would be lost when it closes. A new connection fails instead, loudly.
    pub fn files_unchanged(&self) -> bool {
        self.files.is_some_and(|[db, wal]| {
            file_id(&self.path) == Some(db) && file_id(&self.wal_path()) == Some(wal)
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
        let wal = self.wal_path();
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

/// One service as [`Tx::overview`] reads it.
pub struct Overview {
    pub id: i64,
    pub service: crate::service::Service,
    pub instance: Option<crate::record::Instance>,
    /// When the instance passed its readiness check, if it did.
    pub ready_at: Option<i64>,
    pub runtime: crate::record::Runtime,
}

/// An open transaction. All reads and writes of tend's tables go through its methods
/// (definitions in `services.rs`; instances, bookkeeping, settings and events in
/// `state.rs`).
pub struct Tx<'a>(rusqlite::Transaction<'a>, &'a Path);

impl Tx<'_> {
    pub(crate) fn err(&self, e: rusqlite::Error) -> Error {
        db_err(self.1, e)
    }

    pub(crate) fn exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<()> {
        let mut stmt = self.0.prepare_cached(sql).map_err(|e| self.err(e))?;
        stmt.execute(p).map(drop).map_err(|e| self.err(e))
    }
}
