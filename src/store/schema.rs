//! Versioned schema. `PRAGMA user_version` holds the number of migrations applied; the
//! list below is append-only: never edit a migration that has shipped, add a new one.

/// Each entry takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: definitions, running instances, and the append-only event log.
    r#"
    CREATE TABLE services (
        id              INTEGER PRIMARY KEY,
        name            TEXT    NOT NULL UNIQUE,
        argv            TEXT    NOT NULL,  -- JSON array of strings
        cwd             TEXT    NOT NULL,
        stdin           TEXT    NOT NULL,
        stdout          TEXT    NOT NULL,
        stderr          TEXT    NOT NULL,
        env             TEXT    NOT NULL,  -- JSON object
        stop_signal     TEXT    NOT NULL,  -- short name, e.g. TERM
        stop_timeout_ms INTEGER NOT NULL,
        restart         TEXT    NOT NULL,  -- never | on-failure | always
        created_at      INTEGER NOT NULL,  -- unix ms
        updated_at      INTEGER NOT NULL
    );
    CREATE TABLE instances (
        service_id  INTEGER PRIMARY KEY REFERENCES services(id) ON DELETE CASCADE,
        pid         INTEGER NOT NULL,
        pgid        INTEGER NOT NULL,
        start_time  INTEGER NOT NULL,  -- /proc/PID/stat field 22 (clock ticks after boot)
        boot_id     TEXT    NOT NULL,
        started_at  INTEGER NOT NULL   -- unix ms
    );
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,      -- unix ms
        service TEXT    NOT NULL,      -- by name, so history outlives the definition
        kind    TEXT    NOT NULL,
        detail  TEXT    NOT NULL DEFAULT ''
    );
    CREATE INDEX events_by_service ON events(service, id);
    "#,
    // 2: daemon settings per service, the stop-in-progress mark, and restart bookkeeping.
    r#"
    ALTER TABLE services ADD COLUMN autostart INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE services ADD COLUMN restart_delay_ms INTEGER NOT NULL DEFAULT 100;
    ALTER TABLE services ADD COLUMN start_limit INTEGER NOT NULL DEFAULT 5;
    ALTER TABLE services ADD COLUMN start_limit_interval_ms INTEGER NOT NULL DEFAULT 10000;
    ALTER TABLE services ADD COLUMN log_max_bytes INTEGER NOT NULL DEFAULT 10485760;
    -- Set by a stop before it signals: the exit that follows was asked for.
    ALTER TABLE instances ADD COLUMN stopping INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE runtime (
        service_id    INTEGER PRIMARY KEY REFERENCES services(id) ON DELETE CASCADE,
        restarts      INTEGER NOT NULL DEFAULT 0,   -- automatic restarts since a person's start
        last_exit     TEXT,                         -- "code 1", "signal KILL", "unknown"
        last_exit_at  INTEGER,                      -- unix ms
        backoff_ms    INTEGER NOT NULL DEFAULT 0,   -- delay before the last automatic restart
        next_retry_at INTEGER,                      -- unix ms of a pending automatic restart
        failed        TEXT,                         -- why the service was given up on
        recent_starts TEXT    NOT NULL DEFAULT '[]' -- JSON unix ms of starts, for the start limit
    );
    "#,
    // 3: settings shared by the daemon and the CLI (`tend config`).
    r#"
    CREATE TABLE config (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 4: the settings of a service as one JSON object (the table in service::settings):
    // a new setting then needs no column and no migration. Durations in ms, sizes in
    // bytes, as `--json` shows them.
    r#"
    ALTER TABLE services ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
    UPDATE services SET settings = json_object(
        'cwd', cwd,
        'stdin', stdin,
        'stdout', stdout,
        'stderr', stderr,
        'stop_signal', stop_signal,
        'stop_timeout', stop_timeout_ms,
        'restart', restart,
        'autostart', json(CASE autostart WHEN 0 THEN 'false' ELSE 'true' END),
        'restart_delay', restart_delay_ms,
        'start_limit', start_limit,
        'start_limit_interval', start_limit_interval_ms,
        'log_max_bytes', log_max_bytes
    );
    ALTER TABLE services DROP COLUMN cwd;
    ALTER TABLE services DROP COLUMN stdin;
    ALTER TABLE services DROP COLUMN stdout;
    ALTER TABLE services DROP COLUMN stderr;
    ALTER TABLE services DROP COLUMN stop_signal;
    ALTER TABLE services DROP COLUMN stop_timeout_ms;
    ALTER TABLE services DROP COLUMN restart;
    ALTER TABLE services DROP COLUMN autostart;
    ALTER TABLE services DROP COLUMN restart_delay_ms;
    ALTER TABLE services DROP COLUMN start_limit;
    ALTER TABLE services DROP COLUMN start_limit_interval_ms;
    ALTER TABLE services DROP COLUMN log_max_bytes;
    "#,
    // 5 (cgroups): the cgroup an instance runs in, when it has one; whether it is the
    // first process of a self-daemonizing service (`--pidfile`) still handing over.
    r#"
    ALTER TABLE instances ADD COLUMN cgroup TEXT;
    ALTER TABLE instances ADD COLUMN launching INTEGER NOT NULL DEFAULT 0;
    "#,
    // 6 (service files, readiness): which service file owns a definition (NULL: added by hand), when
    // an instance passed its readiness check (NULL: not yet; `starting`), and where its
    // log ended when it started (for a `log` readiness check).
    r#"
    ALTER TABLE services ADD COLUMN owner TEXT;
    ALTER TABLE instances ADD COLUMN ready_at INTEGER;
    ALTER TABLE instances ADD COLUMN log_from INTEGER;
    "#,
    // 7 (fleet): fleet commands this home has taken, by the fleet's id and the
    // command's id in PostgreSQL. A command is taken here (in its own committed write)
    // before it is acted on, and its result is written here before it is reported, so a
    // daemon that dies anywhere in between never acts on it twice. Also the signatures of
    // signed NOTIFY payloads seen within the window, so a replay is refused across a
    // daemon restart.
    r#"
    CREATE TABLE fleet_taken (
        fleet       TEXT    NOT NULL,
        id          INTEGER NOT NULL,
        service     TEXT    NOT NULL,
        action      TEXT    NOT NULL,
        taken_at    INTEGER NOT NULL,  -- unix ms
        finished_at INTEGER,           -- unix ms; NULL while (or if interrupted while) acting
        ok          INTEGER,
        message     TEXT,
        reported    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (fleet, id)
    );
    CREATE TABLE notify_seen (
        signature TEXT    PRIMARY KEY,
        signed_at INTEGER NOT NULL     -- unix seconds from the envelope
    );
    "#,
    // 8 (speed): a counter of changes to the definitions, kept by triggers whatever
    // writes them, so that the daemon's threads that depend only on definitions (log
    // rotation; which services have health checks) re-read them only when they changed,
    // not after every start and stop.
    r#"
    CREATE TABLE definitions_version (v INTEGER NOT NULL);
    INSERT INTO definitions_version (v) VALUES (0);
    CREATE TRIGGER definitions_added AFTER INSERT ON services
        BEGIN UPDATE definitions_version SET v = v + 1; END;
    CREATE TRIGGER definitions_changed AFTER UPDATE ON services
        BEGIN UPDATE definitions_version SET v = v + 1; END;
    CREATE TRIGGER definitions_removed AFTER DELETE ON services
        BEGIN UPDATE definitions_version SET v = v + 1; END;
    "#,
    // 9 (logs across rotation): which files the log and its newest backup were when an
    // instance started (JSON, beside `log_from`), so a `log` readiness check finds this
    // instance's output after a rotation moved it.
    r#"
    ALTER TABLE instances ADD COLUMN log_ids TEXT;
    "#,
];

/// The schema version this build writes and understands.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}
