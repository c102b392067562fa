//! The fleet's tables in a schema of their own, migrated by `tend fleet init`, and the
//! least-privilege grants of `tend fleet grant`.
//!
//! Row-level security: a role mapped to a host in `host_roles` sees and updates only
//! that host's commands, and writes only that host's row and service states; a role
//! that is not a host (an operator) reads everything and inserts commands. The table
//! owner (whoever ran `fleet init`) is not subject to it. What a role may touch at all is
//! decided by the grants; an operator can insert only the columns that say what to do,
//! never who issued it or what came of it.

use tokio_postgres::Client;

use super::{again, fail};
use crate::error::Error;

/// Each entry takes the schema from version `i` to `i + 1`; `{s}` is the schema name
/// (a validated plain identifier). Append only.
const MIGRATIONS: &[&str] = &[
    // 1: hosts, their services' state, commands, the wake-up triggers, row-level security.
    r#"
    CREATE TABLE {s}.fleet (
        id         text PRIMARY KEY DEFAULT md5(random()::text || clock_timestamp()::text),
        created_at timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO {s}.fleet DEFAULT VALUES;
    CREATE TABLE {s}.host_roles (
        role    name PRIMARY KEY,
        host_id text NOT NULL
    );
    CREATE FUNCTION {s}.my_host() RETURNS text LANGUAGE sql STABLE
        AS $$ SELECT host_id FROM {s}.host_roles WHERE role = current_user $$;
    CREATE TABLE {s}.hosts (
        id           text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$'),
        boot_id      text NOT NULL DEFAULT '',
        version      text NOT NULL DEFAULT '',
        pid          integer,
        started_at   timestamptz,
        heartbeat_ms integer NOT NULL DEFAULT 5000,
        last_seen    timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE {s}.services (
        host_id    text NOT NULL REFERENCES {s}.hosts(id) ON DELETE CASCADE,
        name       text NOT NULL,
        state      text NOT NULL,
        pid        integer,
        since      timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (host_id, name)
    );
    CREATE TABLE {s}.commands (
        id          bigserial PRIMARY KEY,
        host_id     text NOT NULL CHECK (host_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$'),
        service     text NOT NULL CHECK (service ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
        action      text NOT NULL CHECK (action IN ('start', 'stop', 'restart', 'signal')),
        signal      integer CHECK (signal BETWEEN 1 AND 64),
        issued_by   name NOT NULL DEFAULT current_user,
        issued_at   timestamptz NOT NULL DEFAULT now(),
        expires_at  timestamptz NOT NULL DEFAULT now() + interval '5 minutes',
        dedup_key   text CHECK (length(dedup_key) BETWEEN 1 AND 200),
        claimed_at  timestamptz,
        claimed_by  text,
        lease_until timestamptz,
        finished_at timestamptz,
        ok          boolean,
        outcome     text CHECK (outcome IN ('done', 'failed', 'expired')),
        message     text,
        CHECK ((action = 'signal') = (signal IS NOT NULL)),
        CHECK (expires_at > issued_at)
    );
    CREATE UNIQUE INDEX commands_dedup ON {s}.commands (host_id, dedup_key)
        WHERE finished_at IS NULL AND dedup_key IS NOT NULL;
    CREATE INDEX commands_pending ON {s}.commands (host_id, service, id)
        WHERE finished_at IS NULL;
    CREATE INDEX commands_by_service ON {s}.commands (service, id);
    CREATE FUNCTION {s}.wake() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{s}_wake', NEW.id::text);
        RETURN NULL;
    END $$;
    CREATE TRIGGER commands_wake AFTER INSERT ON {s}.commands
        FOR EACH ROW EXECUTE FUNCTION {s}.wake();
    CREATE FUNCTION {s}.done() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{s}_done', NEW.id::text);
        RETURN NULL;
    END $$;
    CREATE TRIGGER commands_done AFTER UPDATE OF finished_at ON {s}.commands
        FOR EACH ROW WHEN (OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL)
        EXECUTE FUNCTION {s}.done();
    ALTER TABLE {s}.commands ENABLE ROW LEVEL SECURITY;
    ALTER TABLE {s}.services ENABLE ROW LEVEL SECURITY;
    ALTER TABLE {s}.hosts ENABLE ROW LEVEL SECURITY;
    CREATE POLICY operator_read ON {s}.commands FOR SELECT USING ({s}.my_host() IS NULL);
    CREATE POLICY operator_issue ON {s}.commands FOR INSERT WITH CHECK ({s}.my_host() IS NULL);
    CREATE POLICY host_read ON {s}.commands FOR SELECT USING (host_id = {s}.my_host());
    CREATE POLICY host_finish ON {s}.commands FOR UPDATE
        USING (host_id = {s}.my_host()) WITH CHECK (host_id = {s}.my_host());
    CREATE POLICY operator_read ON {s}.services FOR SELECT USING ({s}.my_host() IS NULL);
    CREATE POLICY host_own ON {s}.services FOR ALL
        USING (host_id = {s}.my_host()) WITH CHECK (host_id = {s}.my_host());
    CREATE POLICY operator_read ON {s}.hosts FOR SELECT USING ({s}.my_host() IS NULL);
    CREATE POLICY host_own ON {s}.hosts FOR ALL
        USING (id = {s}.my_host()) WITH CHECK (id = {s}.my_host());
    "#,
    // 2: roles cannot reach another host. Every function pins its search_path and every
    // policy is recreated with qualified names and operators (a role that can create an
    // operator `=` in a schema of its own and put it first in its search_path would
    // otherwise change what `my_host()` answers); a host role sees only its own row of
    // the role map; what a host writes is constrained (names as `tend add` takes them,
    // states from the known set, bounded lengths, no control characters); a dedup key
    // stays with its command after it finished (issuing serializes on the key instead of
    // a unique index, so the key answers a repeat for a retention window and an expired
    // command frees it); `remove_host` retires a host. The statements run with the
    // search_path pinned too (see `migrate_once`), so nothing here resolves to an object
    // of someone else's schema while it is created.
    r#"
    CREATE OR REPLACE FUNCTION {s}.my_host() RETURNS text LANGUAGE sql STABLE
        SET search_path = pg_catalog, pg_temp
        AS $$ SELECT r.host_id FROM {s}.host_roles r
              WHERE r.role OPERATOR(pg_catalog.=) pg_catalog.current_user() $$;
    ALTER FUNCTION {s}.wake() SET search_path = pg_catalog, pg_temp;
    CREATE OR REPLACE FUNCTION {s}.done() RETURNS trigger LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp AS $$
    BEGIN
        PERFORM pg_catalog.pg_notify('{s}_done', NEW.id::pg_catalog.text);
        RETURN NULL;
    END $$;
    DROP POLICY operator_read ON {s}.commands;
    DROP POLICY operator_issue ON {s}.commands;
    DROP POLICY host_read ON {s}.commands;
    DROP POLICY host_finish ON {s}.commands;
    DROP POLICY operator_read ON {s}.services;
    DROP POLICY host_own ON {s}.services;
    DROP POLICY operator_read ON {s}.hosts;
    DROP POLICY host_own ON {s}.hosts;
    CREATE POLICY operator_read ON {s}.commands FOR SELECT USING ({s}.my_host() IS NULL);
    CREATE POLICY operator_issue ON {s}.commands FOR INSERT
        WITH CHECK ({s}.my_host() IS NULL);
    CREATE POLICY host_read ON {s}.commands FOR SELECT
        USING (host_id OPERATOR(pg_catalog.=) {s}.my_host());
    CREATE POLICY host_finish ON {s}.commands FOR UPDATE
        USING (host_id OPERATOR(pg_catalog.=) {s}.my_host())
        WITH CHECK (host_id OPERATOR(pg_catalog.=) {s}.my_host());
    CREATE POLICY operator_read ON {s}.services FOR SELECT USING ({s}.my_host() IS NULL);
    CREATE POLICY host_own ON {s}.services FOR ALL
        USING (host_id OPERATOR(pg_catalog.=) {s}.my_host())
        WITH CHECK (host_id OPERATOR(pg_catalog.=) {s}.my_host());
    CREATE POLICY operator_read ON {s}.hosts FOR SELECT USING ({s}.my_host() IS NULL);
    CREATE POLICY host_own ON {s}.hosts FOR ALL
        USING (id OPERATOR(pg_catalog.=) {s}.my_host())
        WITH CHECK (id OPERATOR(pg_catalog.=) {s}.my_host());
    ALTER TABLE {s}.host_roles ENABLE ROW LEVEL SECURITY;
    CREATE POLICY own_row ON {s}.host_roles FOR SELECT
        USING (role OPERATOR(pg_catalog.=) pg_catalog.current_user());

    -- What a host writes. Rows written before the constraints existed are made to fit
    -- (a host rewrites its own on its next heartbeat and state change).
    UPDATE {s}.hosts SET version = ''
        WHERE NOT (version ~ '^[0-9A-Za-z.+_-]{0,64}$');
    UPDATE {s}.hosts SET boot_id = ''
        WHERE NOT (boot_id ~ '^[0-9A-Za-z-]{0,64}$');
    ALTER TABLE {s}.hosts
        ADD CONSTRAINT version_plain CHECK (version ~ '^[0-9A-Za-z.+_-]{0,64}$'),
        ADD CONSTRAINT boot_id_plain CHECK (boot_id ~ '^[0-9A-Za-z-]{0,64}$'),
        ADD CONSTRAINT heartbeat_sane CHECK (heartbeat_ms BETWEEN 100 AND 86400000);
    DELETE FROM {s}.services
        WHERE NOT (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')
           OR state NOT IN ('running', 'starting', 'stopped', 'stopping', 'restarting',
                            'restarting (no daemon)', 'failed', 'unknown');
    ALTER TABLE {s}.services
        ADD CONSTRAINT name_as_tend_add CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
        ADD CONSTRAINT state_known CHECK (state IN ('running', 'starting', 'stopped',
            'stopping', 'restarting', 'restarting (no daemon)', 'failed', 'unknown'));
    UPDATE {s}.commands SET message = pg_catalog.left(
            pg_catalog.regexp_replace(message, '[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]', '?', 'g'),
            1000)
        WHERE message ~ '[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]'
           OR length(message) > 1000;
    UPDATE {s}.commands SET claimed_by = 'unknown'
        WHERE NOT (claimed_by ~ '^[0-9A-Za-z._/-]+$' AND length(claimed_by) <= 300);
    ALTER TABLE {s}.commands
        ADD CONSTRAINT message_plain CHECK (length(message) <= 1000
            AND message !~ '[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]'),
        ADD CONSTRAINT claimed_by_plain CHECK (claimed_by ~ '^[0-9A-Za-z._/-]+$'
            AND length(claimed_by) <= 300),
        ADD CONSTRAINT dedup_key_plain CHECK (dedup_key !~ '[\x01-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]');

    -- A dedup key outlives its command's end: `issue` serializes on (host, key) with an
    -- advisory lock and decides from the key's latest command.
    DROP INDEX {s}.commands_dedup;
    CREATE INDEX commands_dedup ON {s}.commands (host_id, dedup_key, id)
        WHERE dedup_key IS NOT NULL;

    -- Retiring a host: its unfinished commands expire, its rows go. For the owner and
    -- for the operators `fleet grant` names (EXECUTE is granted to them alone).
    CREATE FUNCTION {s}.remove_host(h text) RETURNS TABLE (expired bigint, removed boolean)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DECLARE n bigint; gone boolean;
    BEGIN
        UPDATE {s}.commands c SET finished_at = pg_catalog.now(), ok = false,
            outcome = 'expired', message = 'expired: the host was removed from the fleet'
            WHERE c.host_id OPERATOR(pg_catalog.=) h AND c.finished_at IS NULL;
        GET DIAGNOSTICS n = ROW_COUNT;
        DELETE FROM {s}.services v WHERE v.host_id OPERATOR(pg_catalog.=) h;
        DELETE FROM {s}.hosts x WHERE x.id OPERATOR(pg_catalog.=) h;
        gone := FOUND;
        RETURN QUERY SELECT n, gone;
    END $$;
    REVOKE ALL ON FUNCTION {s}.remove_host(text) FROM PUBLIC;
    "#,
    // 3: a wake-up channel per host, so that a command wakes only the host it is for
    // (one channel for all made every daemon claim on every command). A channel name is
    // at most 63 bytes and a host id up to 253, hence a digest; the schema is in it so
    // two fleets in one database never share a channel.
    r#"
    CREATE FUNCTION {s}.wake_channel(host text) RETURNS text LANGUAGE sql IMMUTABLE
        SET search_path = pg_catalog, pg_temp
        AS $$ SELECT 'tendw_' || pg_catalog.md5('{s}/' || host) $$;
    CREATE OR REPLACE FUNCTION {s}.wake() RETURNS trigger LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp AS $$
    BEGIN
        PERFORM pg_catalog.pg_notify({s}.wake_channel(NEW.host_id), NEW.id::text);
        RETURN NULL;
    END $$;
    -- No NOTIFY per finished command: PostgreSQL signals every listening backend of the
    -- database (every daemon's) at each notifying commit, whatever the channel, so one
    -- per result cost hosts x hosts wake-ups per fleet-wide command (200 commits with 200
    -- listeners: about 0.9 s of server CPU). `--wait` polls instead.
    DROP TRIGGER commands_done ON {s}.commands;
    DROP FUNCTION {s}.done();
    "#,
];

/// The statements that take schema `s` from `version - 1` to `version` (tests build
/// an older schema with them, to see `init` bring it up to date).
pub fn migration(version: usize, s: &str) -> Option<String> {
    MIGRATIONS
        .get(version.checked_sub(1)?)
        .map(|sql| sql.replace("{s}", s))
}

/// The schema version this build writes and needs.
pub fn latest() -> i32 {
    MIGRATIONS.len() as i32
}

/// What `init` did.
#[derive(Debug)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// Creates the schema or brings it up to date, in one transaction (so a half-migrated
/// schema is never seen), serialized against a concurrent `init` by a lock on the
/// version table. Idempotent; retried on conflicts (two inits creating the schema at
/// once).
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Migrated, Error> {
    let what = format!("fleet init (schema {schema})");
    let mut attempt = 0;
    loop {
        match migrate_once(client, schema).await {
            Ok(m) => return Ok(m),
            Err(e) => again(&what, &mut attempt, e).await?,
        }
    }
}

async fn migrate_once(client: &mut Client, s: &str) -> Result<Migrated, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // Every name in the migrations resolves in pg_catalog or is qualified: nothing of a
    // schema another role controls (its search_path entries) is picked up while the
    // functions and policies are created.
    tx.batch_execute(&format!(
        "SET LOCAL search_path = pg_catalog, pg_temp;
         CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now(),
             applied_by name NOT NULL DEFAULT current_user
         );
         LOCK TABLE {s}.migrations IN EXCLUSIVE MODE;"
    ))
    .await?;
    let from: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {s}.migrations"),
            &[],
        )
        .await?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from.max(0) as usize) {
        tx.batch_execute(&sql.replace("{s}", s)).await?;
        tx.execute(
            &format!("INSERT INTO {s}.migrations (version) VALUES ($1)"),
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Migrated {
        from,
        to: latest().max(from),
    })
}

/// The fleet's id and schema version, or a clear error when `init` was never run (or
/// this build is older than the schema).
pub async fn check(client: &Client, s: &str) -> Result<String, Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT id FROM {s}.fleet LIMIT 1), \
                 (SELECT coalesce(max(version), 0) FROM {s}.migrations)"
            ),
            &[],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c)
                if *c == tokio_postgres::error::SqlState::UNDEFINED_TABLE
                    || *c == tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME =>
            {
                Error::Postgres {
                    message: format!(
                        "no fleet in schema {s}: run `tend fleet init` (or grant this role \
                         access with `tend fleet grant`)"
                    ),
                }
            }
            _ => fail(&format!("reading fleet schema {s}"), &e),
        })?;
    let version: i32 = row.get(1);
    if version < latest() {
        return Err(Error::Postgres {
            message: format!(
                "fleet schema {s} is at version {version}, this tend needs {}: run `tend fleet init`",
                latest()
            ),
        });
    }
    if version > latest() {
        return Err(Error::Postgres {
            message: format!(
                "fleet schema {s} is at version {version}, newer than this tend knows ({}): upgrade tend",
                latest()
            ),
        });
    }
    row.get::<_, Option<String>>(0)
        .ok_or_else(|| Error::Postgres {
            message: format!("fleet schema {s} has no fleet id: run `tend fleet init`"),
        })
}

/// Quotes a role name as an SQL identifier.
pub fn ident(role: &str) -> String {
    format!("\"{}\"", role.replace('"', "\"\""))
}

/// `tend fleet grant --operator ROLE`: may read everything and insert commands (only
/// the columns that say what to do, to which host, until when, under which dedup key).
pub async fn grant_operator(client: &mut Client, s: &str, role: &str) -> Result<(), Error> {
    let r = ident(role);
    let sql = format!(
        "GRANT USAGE ON SCHEMA {s} TO {r};
         GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r};
         GRANT INSERT (host_id, service, action, signal, expires_at, dedup_key)
             ON {s}.commands TO {r};
         GRANT USAGE ON SEQUENCE {s}.commands_id_seq TO {r};
         GRANT EXECUTE ON FUNCTION {s}.remove_host(text) TO {r};"
    );
    let what = format!("granting operator rights to {role}");
    let mut attempt = 0;
    loop {
        let tried = async {
            let tx = client.transaction().await?;
            tx.execute(
                &format!("DELETE FROM {s}.host_roles WHERE role = $1"),
                &[&role],
            )
            .await?;
            tx.batch_execute(&sql).await?;
            tx.commit().await
        }
        .await;
        match tried {
            Ok(()) => return Ok(()),
            Err(e) => again(&what, &mut attempt, e).await?,
        }
    }
}

/// `tend fleet grant --host-role ROLE --host-id H`: maps the role to the host; it may
/// read and finish that host's commands and write that host's row and service states,
/// nothing else.
pub async fn grant_host(
    client: &mut Client,
    s: &str,
    role: &str,
    host_id: &str,
) -> Result<(), Error> {
    let r = ident(role);
    let sql = format!(
        "GRANT USAGE ON SCHEMA {s} TO {r};
         GRANT SELECT ON {s}.fleet, {s}.migrations, {s}.host_roles TO {r};
         GRANT SELECT, UPDATE (claimed_at, claimed_by, lease_until, finished_at, ok, outcome,
             message) ON {s}.commands TO {r};
         GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.services TO {r};
         GRANT SELECT, INSERT, UPDATE ON {s}.hosts TO {r};"
    );
    let what = format!("granting host rights to {role}");
    let mut attempt = 0;
    loop {
        let tried = async {
            let tx = client.transaction().await?;
            tx.execute(
                &format!(
                    "INSERT INTO {s}.host_roles (role, host_id) VALUES ($1, $2) \
                     ON CONFLICT (role) DO UPDATE SET host_id = EXCLUDED.host_id"
                ),
                &[&role, &host_id],
            )
            .await?;
            tx.batch_execute(&sql).await?;
            tx.commit().await
        }
        .await;
        match tried {
            Ok(()) => return Ok(()),
            Err(e) => again(&what, &mut attempt, e).await?,
        }
    }
}
