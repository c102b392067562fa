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

use std::cell::RefCell;
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
    /// The files this connection has open, noted by [`Store::keep_open`], and their
    /// paths: see [`Store::files_changed`].
    kept: Option<(Files, [PathBuf; 3])>,
    /// Told of the events each write transaction recorded, once it has committed (the
    /// daemon's hooks); `None`: nobody listens.
    sink: Option<EventSink>,
    /// Events committed but not told yet: held by [`Tx::hold_events`] until the caller
    /// says whether the operation they belong to stands ([`Store::release_held`]) or is
    /// taken back ([`Store::drop_held`]).
    held: Vec<Recorded>,
}

/// An event as a write transaction recorded it, with what the recorder knew in a form a
/// program can read (`pid`, `exit_code`, `signal`...), for whoever is told of it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub event: crate::record::Event,
    pub facts: serde_json::Map<String, serde_json::Value>,
}

/// See [`Store::set_sink`].
pub type EventSink = std::sync::Arc<dyn Fn(Vec<Recorded>) + Send + Sync>;

/// A database's files as a process found them when it opened the database: (device,
/// inode) of `tend.db`, of its `-wal` and of its `-shm`.
///
/// SQLite finds the WAL and the shared index by name when a connection opens, and keeps
/// them open from then on. So a connection that stays open is bound to the files it found:
/// if one is deleted or replaced, it goes on reading and committing to files nobody else
/// sees, while every new connection uses the ones on disk, with the same `-shm` index
/// (or a new one) describing a different WAL: the truth split in two, and a checkpoint
/// from either side could write pages of one into the other. What it committed there is
/// lost when it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Files([(u64, u64); 3]);

impl Files {
    /// The paths of the three files of the database at `db`. SQLite names the WAL and
    /// the index after the database's real path: when `db` is a symlink, they are beside
    /// the file it points to (one `lstat` finds out).
    pub fn paths(db: &Path) -> [PathBuf; 3] {
        let real = match std::fs::symlink_metadata(db) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf())
            }
            _ => db.to_path_buf(),
        };
        let beside = |suffix: &str| {
            let mut p = real.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        };
        [db.to_path_buf(), beside("-wal"), beside("-shm")]
    }

    /// The files at `paths` now; what is wrong when one cannot be seen.
    fn on_disk(paths: &[PathBuf; 3]) -> std::result::Result<Files, String> {
        use std::os::unix::fs::MetadataExt;
        let mut ids = [(0, 0); 3];
        for (id, path) in ids.iter_mut().zip(paths) {
            let m = std::fs::metadata(path).map_err(|e| missing(path, &e))?;
            *id = (m.dev(), m.ino());
        }
        Ok(Files(ids))
    }

    /// What became of these files at `paths` (see [`Files::paths`]): `None` while all
    /// three are still these very files, else what changed, naming each file (`tend.db-wal
    /// was deleted or renamed`). Three `stat`s, no allocation unless something changed.
    pub fn changes_at(&self, paths: &[PathBuf; 3]) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let mut changes: Vec<String> = Vec::new();
        for (&id, path) in self.0.iter().zip(paths) {
            match std::fs::metadata(path) {
                Ok(m) if (m.dev(), m.ino()) == id => {}
                Ok(_) => changes.push(format!("{} was replaced by another file", name(path))),
                Err(e) => changes.push(missing(path, &e)),
            }
        }
        (!changes.is_empty()).then(|| changes.join("; "))
    }

    /// [`Files::changes_at`] for the database at `db`.
    pub fn changes(&self, db: &Path) -> Option<String> {
        self.changes_at(&Files::paths(db))
    }
}

/// The file's own name: the messages about it name `tend.db-wal`, never a home's path
/// (they travel on one line, in the daemon's lock file too).
fn name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn missing(path: &Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!("{} was deleted or renamed", name(path))
    } else {
        format!("{} cannot be looked at: {}", name(path), io_reason(e))
    }
}

/// How [`Files`] are written down and read back (in the daemon's lock file): each file
/// as `DEVICE:INODE`, separated by spaces.
impl std::fmt::Display for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c] = self.0;
        write!(f, "{}:{} {}:{} {}:{}", a.0, a.1, b.0, b.1, c.0, c.1)
    }
}

impl std::str::FromStr for Files {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Files, ()> {
        let mut ids = [(0, 0); 3];
        let mut words = s.split_whitespace();
        for id in &mut ids {
            let (dev, ino) = words.next().and_then(|w| w.split_once(':')).ok_or(())?;
            *id = (dev.parse().map_err(drop)?, ino.parse().map_err(drop)?);
        }
        match words.next() {
            None => Ok(Files(ids)),
            Some(_) => Err(()),
        }
    }
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
            sink: None,
            held: Vec::new(),
            conn,
            path: path.to_path_buf(),
            kept: None,
        };
        store.configure()?;
        Ok(store)
    }

    /// Opens another connection of a resident process that has the database open
    /// already through `files` (see [`Store::keep_open`]). Refuses before opening when
    /// those are no longer the files on disk: SQLite would create a new WAL beside the
    /// one the process's other connections have open.
    pub fn open_kept(path: &Path, files: Files, cache_kib: u32) -> Result<Store> {
        if let Some(change) = files.changes(path) {
            return Err(Error::FilesChanged {
                path: path.to_path_buf(),
                change,
            });
        }
        let mut store = Store::open(path)?;
        store.keep_open(cache_kib, Some(files))?;
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
        let writes = matches!(behavior, TransactionBehavior::Immediate);
        // A kept connection writes only to the files on disk. (It may still read the ones
        // it has: they hold what was true a moment ago, and nobody writes the new ones
        // beside it, see `daemon::client::check_beside`; whoever hands it out checks.)
        if writes {
            self.check_files()?;
        }
        let path = self.path.clone();
        let conn = &mut self.conn;
        let mut recorded = Vec::new();
        let mut hold = false;
        // Events are copied for the sink only when there is one (the daemon's).
        let listening = self.sink.is_some();
        let value = with_retry(&path, || {
            let tx = conn
                .transaction_with_behavior(behavior)
                .map_err(|e| db_err(&path, e))?;
            let wrapped = Tx(tx, &path, RefCell::new((Vec::new(), false)), listening);
            let value = f(&wrapped)?;
            let Tx(tx, _, noted, _) = wrapped;
            tx.commit().map_err(|e| db_err(&path, e))?;
            // Only the attempt that committed counts: a retried one's events were
            // rolled back with it.
            (recorded, hold) = noted.into_inner();
            Ok(value)
        })?;
        if writes {
            // A commit made while the files were being deleted or replaced may have gone
            // where nobody will see it: the caller must not act on it (a start then kills
            // the process it holds at the gate). The checkpoint is skipped too: it would
            // copy pages from that WAL into whichever database file is there.
            self.check_files()?;
            self.keep_wal_short();
        }
        // Told only of what surely committed to the files on disk (see above).
        if self.sink.is_some() && !recorded.is_empty() {
            if hold {
                self.held.append(&mut recorded);
            } else if let Some(sink) = &self.sink {
                sink(recorded);
            }
        }
        Ok(value)
    }

    /// Tells `sink` of every event each later write transaction records, once it has
    /// committed (never from inside a transaction that may be retried).
    pub fn set_sink(&mut self, sink: Option<EventSink>) {
        self.sink = sink;
    }

    /// Tells the sink of the events held since the last release: the operation they
    /// belong to stands.
    pub fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        if let (Some(sink), false) = (&self.sink, held.is_empty()) {
            sink(held);
        }
    }

    /// Forgets the events held since the last release: the operation they belong to
    /// was taken back (its events deleted), so nobody hears of it.
    pub fn drop_held(&mut self) {
        self.held.clear();
    }

    fn wal_path(&self) -> PathBuf {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        PathBuf::from(wal)
    }

    /// Readies a connection that a resident process keeps open (the daemon's): its page
    /// cache is capped at `cache_kib` KiB (SQLite's default is 2 MiB; with 1,000 services
    /// the database is about 0.9 MB, and each idle connection would otherwise keep all of
    /// it), and the files it has open are noted: from then on every write transaction
    /// checks before and after that they are still the ones on disk (see
    /// [`Store::files_changed`]); whoever hands the connection out for reading asks too.
    ///
    /// `expected`: the files the process opened first. A connection opened later that
    /// found others (they were deleted or replaced meanwhile) fails here rather than
    /// write beside the process's other connections. Returns the files noted.
    pub fn keep_open(&mut self, cache_kib: u32, expected: Option<Files>) -> Result<Files> {
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{cache_kib}"))
            .map_err(|e| db_err(&self.path, e))?;
        let paths = Files::paths(&self.path);
        // Stat'ed after SQLite opened them (the first read opens the WAL and the index),
        // so these are the files this connection has open unless one was replaced in the
        // microseconds between.
        let changed = |change| Error::FilesChanged {
            path: self.path.clone(),
            change,
        };
        let files = Files::on_disk(&paths).map_err(changed)?;
        if let Some(change) = expected.and_then(|e| e.changes_at(&paths)) {
            return Err(changed(change));
        }
        self.kept = Some((files, paths));
        Ok(files)
    }

    /// For a connection kept open (see [`Store::keep_open`]): what became of the files it
    /// has open, when they are no longer the ones on disk; `None` while they are (or for a
    /// connection not kept: a command's own connection is closed before anyone could
    /// replace its files and matter).
    pub fn files_changed(&self) -> Option<String> {
        let (files, paths) = self.kept.as_ref()?;
        files.changes_at(paths)
    }

    /// Refuses to use a kept connection whose files are no longer the ones on disk.
    fn check_files(&self) -> Result<()> {
        match self.files_changed() {
            None => Ok(()),
            Some(change) => Err(Error::FilesChanged {
                path: self.path.clone(),
                change,
            }),
        }
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
pub struct Tx<'a>(
    rusqlite::Transaction<'a>,
    &'a Path,
    /// The events recorded in it, and whether to hold them (see [`Store::release_held`]).
    RefCell<(Vec<Recorded>, bool)>,
    /// Whether anyone is told of them: if not, they are not noted at all.
    bool,
);

impl Tx<'_> {
    /// Notes an event this transaction recorded, for the store's sink.
    pub(crate) fn noted(
        &self,
        event: impl FnOnce() -> crate::record::Event,
        facts: serde_json::Map<String, serde_json::Value>,
    ) {
        if self.3 {
            self.2.borrow_mut().0.push(Recorded {
                event: event(),
                facts,
            });
        }
    }

    /// The events of this transaction are told only once the caller releases them
    /// ([`Store::release_held`]): they belong to an operation that may still be taken
    /// back (a start whose exec may fail).
    pub fn hold_events(&self) {
        self.2.borrow_mut().1 = true;
    }

    pub(crate) fn err(&self, e: rusqlite::Error) -> Error {
        db_err(self.1, e)
    }

    pub(crate) fn exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<()> {
        let mut stmt = self.0.prepare_cached(sql).map_err(|e| self.err(e))?;
        stmt.execute(p).map(drop).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::Files;

    #[test]
    fn files_are_written_and_read_back() {
        let f: Files = "2049:11 2049:12 64768:13".parse().unwrap();
        assert_eq!(f.to_string(), "2049:11 2049:12 64768:13");
        assert_eq!(f.to_string().parse::<Files>(), Ok(f));
        for bad in [
            "",
            "1:2 3:4",
            "1:2 3:4 5:6 7:8",
            "1:2 3:x 5:6",
            "1-2 3:4 5:6",
        ] {
            assert!(bad.parse::<Files>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn changes_name_each_file_deleted_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tend.db");
        let paths = Files::paths(&db);
        for p in &paths {
            std::fs::write(p, b"x").unwrap();
        }
        let files = Files::on_disk(&paths).unwrap();
        assert_eq!(files.changes(&db), None);
        std::fs::remove_file(&paths[1]).unwrap();
        assert_eq!(
            files.changes(&db).as_deref(),
            Some("tend.db-wal was deleted or renamed")
        );
        let other = dir.path().join("other");
        std::fs::write(&other, b"y").unwrap();
        std::fs::rename(&other, &db).unwrap();
        assert_eq!(
            files.changes(&db).as_deref(),
            Some("tend.db was replaced by another file; tend.db-wal was deleted or renamed")
        );
        assert_eq!(
            Files::on_disk(&paths),
            Err("tend.db-wal was deleted or renamed".to_string())
        );
    }
}
