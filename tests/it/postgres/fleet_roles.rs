//! The fleet among roles (what a host role can reach, through every channel) and the
//! command semantics a deploy script relies on: real daemons, the real server, roles
//! created by each test (dropped at the end with the test's schema).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::fleet::{fleet_events, issued, Fleet};
use super::server::{shared_url, Cluster};
use super::{kill, new_channel, now_secs, psql, sign, try_psql, wait_rejected, LONG, RECONNECT};
use crate::util::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn daemon_json(env: &Env) -> Value {
    let out = env.ok(&["daemon", "status", "--json"]);
    serde_json::from_str(&out.stdout).expect("daemon status --json")
}

/// Starts a daemon joined to `fleet` as `host` with the quick mode on `chan`, plus
/// `extra` flags; waits until `fleet status` shows it.
fn join_on(fleet: &Fleet, env: &Env, host: &str, chan: &str, extra: &[&str]) {
    let mut a = vec![
        "daemon",
        "--postgres",
        &fleet.url,
        "--schema",
        &fleet.schema,
        "--host-id",
        host,
        "--channel",
        chan,
    ];
    a.extend_from_slice(extra);
    env.ok(&a);
    fleet.wait_host(host, env);
}

/// A host role logged in as itself NOTIFYs another host's quick-mode channel with an
/// unsigned `restart web@HOST`: a daemon that joined the fleet refuses it (a `rejected`
/// event, web untouched) and `daemon status` and `doctor` say so; a signed payload still
/// works; `postgres.quick_unsigned true` is the explicit way back to unsigned payloads.
#[test]
fn unsigned_quick_notify_refused_in_a_fleet() {
    let mut fleet = Fleet::new(&shared_url());
    let (attacker, attacker_url) = fleet.login_role("qa");
    fleet.ok(&["grant", "--host-role", &attacker, "--host-id", "qa"]);

    // The victim is configured through `tend config`, so `doctor` reads the same.
    let victim = Env::new();
    victim.add_fixture("web", &[], &["--marker", "web"]);
    victim.ok(&["start", "web"]);
    let chan = new_channel();
    for (k, v) in [
        ("postgres.url", fleet.url.as_str()),
        ("postgres.schema", fleet.schema.as_str()),
        ("postgres.host_id", "qv"),
        ("postgres.channel", chan.as_str()),
    ] {
        victim.ok(&["config", "set", k, v]);
    }
    victim.ok(&["daemon"]);
    fleet.wait_host("qv", &victim);
    let pid = victim.pid("web").unwrap();

    psql(
        &attacker_url,
        &[&format!("NOTIFY {chan}, 'restart web@qv'")],
    );
    let ev = wait_rejected(&victim, 1);
    assert!(
        ev.detail
            .contains("unsigned payload refused: this daemon joined a fleet"),
        "{ev:?}"
    );
    assert_eq!(
        victim.pid("web"),
        Some(pid),
        "an unsigned payload was obeyed"
    );
    assert!(alive(pid));
    assert!(fleet.history().is_empty());

    let st = daemon_json(&victim);
    let pg = &st["postgres"];
    assert!(
        pg["quick_mode"]
            .as_str()
            .unwrap()
            .starts_with("unsigned payloads refused: joined a fleet"),
        "{st}"
    );
    assert_eq!(pg["fleet"]["state"], "joined", "{st}");
    assert_eq!(pg["fleet"]["host_id"], "qv", "{st}");
    assert_eq!(pg["fleet"]["joined_once"], true, "{st}");
    assert!(wait_until(LONG, || daemon_json(&victim)["postgres"]
        ["fleet"]["last_sweep"]
        .is_string()));
    let human = victim.ok(&["daemon", "status"]).stdout;
    assert!(
        human.contains("quick:    unsigned payloads refused: joined a fleet"),
        "{human}"
    );
    assert!(human.contains("fleet:    joined (schema "), "{human}");
    let doctor = victim.tend(&["doctor"]).stdout;
    assert!(
        doctor.contains("unsigned payloads refused: the daemon joins the fleet in"),
        "{doctor}"
    );

    // Signed payloads keep working (the sender holds the key; the role does not matter).
    let signer = Env::new();
    signer.add_fixture("web", &[], &["--marker", "web"]);
    signer.ok(&["start", "web"]);
    let key = b"fleet-roles-quick-mode-key-0123456789";
    let key_file = signer.work().join("notify.key");
    std::fs::write(&key_file, key).unwrap();
    let chan2 = new_channel();
    join_on(
        &fleet,
        &signer,
        "qs",
        &chan2,
        &["--notify-key-file", key_file.to_str().unwrap()],
    );
    let old = signer.pid("web").unwrap();
    let body = sign(key, now_secs(), "restart web@qs");
    psql(
        &attacker_url,
        &[&format!("NOTIFY {chan2}, '{}'", body.replace('\'', "''"))],
    );
    signer.wait_new_pid("web", old);
    assert!(daemon_json(&signer)["postgres"]["quick_mode"]
        .as_str()
        .unwrap()
        .starts_with("signed payloads only"));

    // Allowed explicitly: obeyed again, and said so.
    let open = Env::new();
    open.add_fixture("web", &[], &["--marker", "web"]);
    open.ok(&["start", "web"]);
    open.ok(&["config", "set", "postgres.quick_unsigned", "true"]);
    let chan3 = new_channel();
    join_on(&fleet, &open, "qo", &chan3, &[]);
    let old = open.pid("web").unwrap();
    psql(
        &attacker_url,
        &[&format!("NOTIFY {chan3}, 'restart web@qo'")],
    );
    open.wait_new_pid("web", old);
    assert_eq!(
        daemon_json(&open)["postgres"]["quick_mode"],
        "unsigned payloads obeyed (postgres.quick_unsigned = true)"
    );
    // Bad values of the setting are refused and change nothing.
    let out = open.tend(&["config", "set", "postgres.quick_unsigned", "yes"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.starts_with("tend: "), "{out:?}");
    let out = open.ok(&["config", "get", "postgres.quick_unsigned"]);
    assert_eq!(out.stdout.trim(), "true");
}

/// A fleet whose schema was created at version 1 (as an earlier tend left it), then
/// brought up to date by `fleet init`.
fn fleet_from_version_1(url: &str) -> Fleet {
    let schema = format!("tf_{}_{}", std::process::id(), super::unique());
    let f = Fleet {
        url: url.to_string(),
        schema: schema.clone(),
        roles: Vec::new(),
        admin: Env::new(),
    };
    let v1 = tend::pg::fleet::schema::migration(1, &schema).expect("version 1");
    psql(
        url,
        &[&format!(
            "BEGIN; CREATE SCHEMA {schema}; CREATE TABLE {schema}.migrations (\
             version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), \
             applied_by name NOT NULL DEFAULT current_user); {v1}; \
             INSERT INTO {schema}.migrations (version) VALUES (1); COMMIT"
        )],
    );
    let out = f.ok(&["init"]);
    assert!(
        out.stdout.contains("migrated from version 1 to 3"),
        "{out:?}"
    );
    f
}

/// The hijack staged for real: a host role with CREATE on a schema of its own defines an
/// operator `=` for `name` that matches another host's role, puts that schema first in
/// its search_path, and tries to make `my_host()` answer the other host (to read and
/// finish its commands). The pinned search_path keeps `my_host()` its own; the role map
/// shows a host role only its own row. On a schema `fleet init` migrated from version 1.
#[test]
fn search_path_hijack_refused() {
    let mut fleet = fleet_from_version_1(&shared_url());
    let s = fleet.schema.clone();
    let (ra, url_a) = fleet.login_role("ha");
    let rb = fleet.role("hb");
    fleet.ok(&["grant", "--host-role", &ra, "--host-id", "ha"]);
    fleet.ok(&["grant", "--host-role", &rb, "--host-id", "hb"]);
    let evil = format!("{s}_evil");
    psql(
        &fleet.url,
        &[
            &format!("INSERT INTO {s}.hosts (id) VALUES ('ha'), ('hb')"),
            &format!(
                "INSERT INTO {s}.commands (host_id, service, action) VALUES ('hb', 'web', 'restart')"
            ),
            // Owned by the attacker: DROP OWNED BY (at the end) removes it.
            &format!("CREATE SCHEMA {evil} AUTHORIZATION {ra}"),
        ],
    );
    let hijack = |sql: &str| {
        try_psql(
            &url_a,
            &[
                &format!(
                    "CREATE OR REPLACE FUNCTION {evil}.eq(name, name) RETURNS boolean \
                     LANGUAGE sql IMMUTABLE AS $$ SELECT $1::text OPERATOR(pg_catalog.=) '{rb}' $$"
                ),
                &format!(
                    "DO $$ BEGIN CREATE OPERATOR {evil}.= (LEFTARG = name, RIGHTARG = name, \
                     FUNCTION = {evil}.eq); EXCEPTION WHEN duplicate_function THEN NULL; END $$"
                ),
                &format!("SET search_path = {evil}, pg_catalog"),
                sql,
            ],
        )
    };
    // The operator is really picked up: `=` on names now answers what the attacker wants.
    let out = hijack(&format!("SELECT '{rb}'::name = 'nobody'::name"));
    assert_eq!(out.stdout.trim(), "t", "the hijack is not staged: {out:?}");

    let out = hijack(&format!("SELECT {s}.my_host()"));
    assert_eq!(out.stdout.trim(), "ha", "{out:?}");
    let out = hijack(&format!("SELECT count(*) FROM {s}.commands"));
    assert_eq!(out.stdout.trim(), "0", "{out:?}");
    let out = hijack(&format!(
        "UPDATE {s}.commands SET finished_at = now(), ok = true, outcome = 'done', \
         message = 'hijacked' WHERE host_id = 'hb'"
    ));
    assert_eq!(out.code, 0, "{out:?}");
    let out = hijack(&format!("SELECT role FROM {s}.host_roles"));
    assert_eq!(out.stdout.trim(), ra, "{out:?}");
    let finished = psql(
        &fleet.url,
        &[&format!(
            "SELECT count(*) FROM {s}.commands WHERE finished_at IS NOT NULL"
        )],
    );
    assert_eq!(finished.trim(), "0", "hb's command was finished by ha");
    // Every function of the schema pins its search_path.
    let unpinned = psql(
        &fleet.url,
        &[&format!(
            "SELECT string_agg(p.proname, ',') FROM pg_proc p \
             WHERE p.pronamespace = '{s}'::regnamespace \
               AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)"
        )],
    );
    assert_eq!(
        unpinned.trim(),
        "",
        "functions without a pinned search_path"
    );
}

/// What a host role writes is constrained where it is stored (names as `tend add`
/// takes them, known states, bounded plain text), and what no constraint can stop (a
/// role's name, as `issued_by`) is escaped where `fleet history` shows it.
#[test]
fn forged_text_refused_or_escaped() {
    let mut fleet = Fleet::new(&shared_url());
    let s = fleet.schema.clone();
    let (ra, url_a) = fleet.login_role("fa");
    fleet.ok(&["grant", "--host-role", &ra, "--host-id", "fa"]);
    psql(
        &fleet.url,
        &[
            &format!("INSERT INTO {s}.hosts (id) VALUES ('fa')"),
            &format!(
                "INSERT INTO {s}.commands (host_id, service, action) VALUES ('fa', 'web', 'stop')"
            ),
        ],
    );
    let as_host = |sql: &str| try_psql(&url_a, &[sql]);
    for sql in [
        format!("UPDATE {s}.hosts SET version = E'0.1\\nhb  1s ago  0.1  web running' WHERE id = 'fa'"),
        format!("UPDATE {s}.hosts SET version = repeat('1', 65) WHERE id = 'fa'"),
        format!("UPDATE {s}.hosts SET boot_id = E'\\x1b[2J' WHERE id = 'fa'"),
        format!("INSERT INTO {s}.services (host_id, name, state) VALUES ('fa', E'web\\nhb', 'running')"),
        format!("INSERT INTO {s}.services (host_id, name, state) VALUES ('fa', repeat('w', 65), 'running')"),
        format!("INSERT INTO {s}.services (host_id, name, state) VALUES ('fa', 'web', E'running\\x1b[2J')"),
        format!("INSERT INTO {s}.services (host_id, name, state) VALUES ('fa', 'web', 'pwned')"),
        format!("UPDATE {s}.commands SET message = E'ok\\nhb\\tdone\\tforged' WHERE host_id = 'fa'"),
        format!("UPDATE {s}.commands SET message = repeat('m', 1001) WHERE host_id = 'fa'"),
        format!("UPDATE {s}.commands SET message = E'\\u202eenod' WHERE host_id = 'fa'"),
        format!("UPDATE {s}.commands SET claimed_by = E'fa\\n' WHERE host_id = 'fa'"),
    ] {
        let out = as_host(&sql);
        assert_ne!(out.code, 0, "accepted: {sql}");
        assert!(out.stderr.contains("check constraint"), "{sql}: {out:?}");
    }
    // What a host really writes still goes in.
    let out = as_host(&format!(
        "INSERT INTO {s}.services (host_id, name, state, pid) \
         VALUES ('fa', 'web.1_x-y', 'restarting (no daemon)', 7)"
    ));
    assert_eq!(out.code, 0, "{out:?}");
    let out = as_host(&format!(
        "UPDATE {s}.commands SET message = 'stopped (pid 7) — done é' WHERE host_id = 'fa'"
    ));
    assert_eq!(out.code, 0, "{out:?}");

    // An operator whose role name carries a newline and an escape sequence.
    let hostile = format!("{s}_op\n\x1b[2J  99  forged");
    let quoted = format!("\"{}\"", hostile.replace('"', "\"\""));
    psql(&fleet.url, &[&format!("CREATE ROLE {quoted} NOLOGIN")]);
    fleet.roles.push(quoted.clone());
    fleet.ok(&["grant", "--operator", &hostile]);
    psql(
        &fleet.url,
        &[
            &format!("SET ROLE {quoted}"),
            &format!(
                "INSERT INTO {s}.commands (host_id, service, action) VALUES ('fa', 'web', 'start')"
            ),
        ],
    );
    let out = fleet.ok(&["history"]);
    assert!(!out.stdout.contains('\x1b'), "{:?}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 3, "{:?}", out.stdout);
    assert!(
        out.stdout.contains("_op\\n\\x1b[2J  99  forged"),
        "{:?}",
        out.stdout
    );
    let status = fleet.ok(&["status"]);
    assert!(
        status
            .stdout
            .contains("web.1_x-y restarting (no daemon) (pid 7)"),
        "{:?}",
        status.stdout
    );
}

/// A repeated `--dedup` key whose command finished answers with that command's id and
/// result (no second run) within the retention window (`postgres.dedup_keep`), and a new
/// command after it; a command that expired before its host began it frees its key and
/// is reported expired.
#[test]
fn dedup_key_answers_finished_and_expired_frees_it() {
    let fleet = Fleet::new(&shared_url());
    let env = fleet.host("dk");
    let out = fleet.ok(&[
        "restart", "web", "--host", "dk", "--dedup", "d1", "--wait", "60s",
    ]);
    let first = issued(&out);
    assert_eq!(first.len(), 1, "{out:?}");
    let pid = env.pid("web").unwrap();
    let result = format!("restarted (pid {pid})");
    assert!(
        out.stdout.contains(&format!("dk\tdone\t{result}")),
        "{out:?}"
    );

    let again = fleet.ok(&[
        "restart", "web", "--host", "dk", "--dedup", "d1", "--wait", "60s",
    ]);
    assert!(
        again.stdout.contains(&format!(
            "dk\tcommand {} already done under dedup key d1: {result}",
            first[0].1
        )),
        "{again:?}"
    );
    assert!(
        again.stdout.contains(&format!("dk\tdone\t{result}")),
        "{again:?}"
    );
    let json: Value = serde_json::from_str(
        &fleet
            .ok(&["restart", "web", "--host", "dk", "--dedup", "d1", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(json["issued"][0]["id"], first[0].1, "{json}");
    assert_eq!(json["issued"][0]["deduplicated"], true, "{json}");
    assert_eq!(json["issued"][0]["outcome"], "done", "{json}");
    assert_eq!(fleet.history().len(), 1, "a repeat added a command");
    assert_eq!(env.pid("web"), Some(pid), "a repeat ran again");

    // Bad keys and windows: one `tend:` line, exit 2, nothing stored.
    for args in [
        &["restart", "web", "--host", "dk", "--dedup", "d1\n\x1b[2J"][..],
        &["restart", "web", "--host", "dk", "--dedup", ""][..],
    ] {
        let out = fleet.tend(args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("tend: "), "{out:?}");
    }
    for bad in ["0", "soon", "-1s"] {
        let out = fleet
            .admin
            .tend(&["config", "set", "postgres.dedup_keep", bad]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
    }
    assert_eq!(fleet.history().len(), 1);

    // Past the retention window the key is free again.
    fleet
        .admin
        .ok(&["config", "set", "postgres.dedup_keep", "1s"]);
    let freed_at = now_ms() + 1_500;
    assert!(wait_until(LONG, || now_ms() > freed_at));
    let later = issued(&fleet.ok(&["restart", "web", "--host", "dk", "--dedup", "d1"]));
    assert_ne!(later[0].1, first[0].1);
    let done = fleet.wait_finished(later[0].1, LONG);
    assert_eq!(done["outcome"], "done", "{done}");
    fleet.admin.ok(&["config", "unset", "postgres.dedup_keep"]);

    // Expired while the host is away: the key is freed, the old command reported expired.
    env.ok(&["daemon", "stop"]);
    let pid = env.pid("web").unwrap();
    let gone = issued(&fleet.ok(&[
        "restart",
        "web",
        "--host",
        "dk",
        "--dedup",
        "d2",
        "--expires",
        "1s",
    ]));
    assert!(wait_until(LONG, || fleet.command(gone[0].1)["outcome"] == "expired"));
    let out = fleet.ok(&["restart", "web", "--host", "dk", "--dedup", "d2"]);
    let fresh = issued(&out);
    assert_ne!(fresh[0].1, gone[0].1, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "(command {} under dedup key d2 expired: key reused)",
            gone[0].1
        )),
        "{out:?}"
    );
    fleet.join(&env, "dk");
    let done = fleet.wait_finished(fresh[0].1, LONG);
    assert_eq!(done["outcome"], "done", "{done}");
    let expired = fleet.wait_finished(gone[0].1, LONG);
    assert_eq!(expired["outcome"], "expired", "{expired}");
    assert_eq!(expired["message"], "expired before the host ran it");
    assert_ne!(env.pid("web"), Some(pid));
    let ran: Vec<String> = fleet_events(&env)
        .into_iter()
        .filter(|d| d.starts_with(&format!("command {}:", gone[0].1)))
        .collect();
    assert!(ran.is_empty(), "the expired command ran: {ran:?}");
}

/// The daemon is SIGKILLed in the middle of a restart (web ignores SIGTERM, so the
/// restart waits in its stop), and the command expires before the daemon returns. A
/// begun command is not expired: the next daemon finishes it and says what happened.
/// Once with web gone meanwhile (the restart is completed with a start), once with the
/// old instance still running (reported interrupted, not restarted, with its pid).
#[test]
fn interrupted_restart_finished_after_expiry() {
    let fleet = Fleet::new(&shared_url());
    let env = Env::new();
    env.add_fixture(
        "web",
        &["--stop-timeout", "120s"],
        &["--marker", "web", "--ignore-term"],
    );
    env.ok(&["start", "web"]);
    fleet.join(&env, "ir");

    let interrupt = |env: &Env| -> (i64, i32) {
        let old = env.pid("web").unwrap();
        let id = issued(&fleet.ok(&["restart", "web", "--host", "ir", "--expires", "8s"]))[0].1;
        let requested = format!("command {id}: restart requested by");
        assert!(
            wait_until(LONG, || fleet_events(env)
                .iter()
                .any(|d| d.starts_with(&requested))),
            "never taken: {}",
            env.daemon_log()
        );
        env.kill_daemon();
        let c = fleet.command(id);
        let expires = c["expires_at"].as_i64().unwrap();
        assert!(wait_until(LONG, || now_ms() > expires + 500));
        assert_eq!(
            fleet.command(id)["outcome"],
            "running",
            "begun, not expired"
        );
        (id, old)
    };

    // Web is gone meanwhile (the stop went through, the start never came).
    let (id, old) = interrupt(&env);
    kill(old, libc::SIGKILL);
    assert!(wait_until(LONG, || !alive(old)));
    fleet.start_daemon(&env, "ir");
    let c = fleet.wait_finished(id, LONG);
    assert_eq!(c["outcome"], "done", "{c}");
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.starts_with("interrupted restart (the daemon died during it), completed: "),
        "{c}"
    );
    let new = env.pid("web").expect("web runs again");
    assert_ne!(new, old);
    assert!(msg.contains(&format!("(pid {new})")), "{c}");

    // The old instance still runs: not called a restart.
    fleet.wait_host("ir", &env);
    let (id, old) = interrupt(&env);
    assert!(alive(old));
    fleet.start_daemon(&env, "ir");
    let c = fleet.wait_finished(id, LONG);
    assert_eq!(c["outcome"], "failed", "{c}");
    assert_eq!(
        c["message"],
        format!(
            "interrupted: the daemon died during the restart; not restarted, still running \
             (pid {old}, started before the command)"
        )
    );
    assert_eq!(env.pid("web"), Some(old));
    env.ok(&["daemon", "stop"]);
    // web ignores SIGTERM: end it here rather than wait for its stop timeout.
    kill(old, libc::SIGKILL);
}

/// `fleet remove HOST` (an operator may; a host role may not): the host's unfinished
/// commands expire, its row and states go. A stale host's services are shown as last
/// known, not as running with a pid; fleet JSON times are integer milliseconds.
#[test]
fn fleet_remove_retires_a_host() {
    let mut fleet = Fleet::new(&shared_url());
    let s = fleet.schema.clone();
    let (op, op_url) = fleet.login_role("ro");
    let (hr, hr_url) = fleet.login_role("rh");
    fleet.ok(&["grant", "--operator", &op]);
    fleet.ok(&["grant", "--host-role", &hr, "--host-id", "keep"]);
    let env = fleet.host("gone");
    let v = fleet.json(&["status", "--json"]);
    let web = &v[0]["services"][0];
    assert!(web["since"].is_i64(), "{v}");
    assert!(v[0]["last_seen"].is_i64(), "{v}");
    env.ok(&["daemon", "stop"]);
    let pending = issued(&fleet.ok(&["restart", "web", "--host", "gone"]))[0].1;
    let h = fleet.json(&["history", "--json"]);
    assert!(
        h[0]["issued_at"].is_i64() && h[0]["expires_at"].is_i64(),
        "{h}"
    );

    // Stale: last seen an hour ago.
    psql(
        &fleet.url,
        &[&format!(
            "UPDATE {s}.hosts SET last_seen = now() - interval '1 hour' WHERE id = 'gone'"
        )],
    );
    let out = fleet.ok(&["status"]);
    let line = out.stdout.lines().find(|l| l.starts_with("gone")).unwrap();
    assert!(line.contains("STALE"), "{line}");
    assert!(line.contains("web last known running 1h"), "{line}");
    assert!(!line.contains("(pid"), "{line}");

    let as_role = |url: &str, args: &[&str]| {
        let mut a = vec!["fleet"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--postgres", url, "--schema", &fleet.schema]);
        fleet.admin.tend(&a)
    };
    let out = as_role(&hr_url, &["remove", "gone"]);
    assert_eq!(out.code, 1, "a host role removed a host: {out:?}");
    assert!(out.stderr.contains("permission denied"), "{out:?}");
    let out = as_role(&op_url, &["remove", "gone"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "fleet: removed host gone; 1 unfinished command(s) expired\n"
    );
    let v = fleet.json(&["status", "--json"]);
    assert!(
        v.as_array().unwrap().iter().all(|h| h["host"] != "gone"),
        "{v}"
    );
    let c = fleet.command(pending);
    assert_eq!(c["outcome"], "expired", "{c}");
    assert_eq!(c["message"], "expired: the host was removed from the fleet");
    let out = as_role(&op_url, &["remove", "gone"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.starts_with("tend: "), "{out:?}");
    let out = fleet.tend(&["remove", "bad host"]);
    assert_eq!(out.code, 2, "{out:?}");
}

/// `--wait` survives a server restart (private cluster): the command id is printed as
/// soon as it is stored, the waiter loses its connection when the server stops, reconnects
/// when it is back, and prints the result the host wrote meanwhile.
#[test]
fn wait_survives_server_restart() {
    let cluster = Cluster::new(&[]);
    let fleet = Fleet::new(&cluster.url("disable"));
    let env = fleet.host("wr");
    env.ok(&["daemon", "stop"]);
    let old = env.pid("web").unwrap();

    let mut c = std::process::Command::new(TEND);
    c.arg("--home")
        .arg(fleet.admin.home())
        .args(["fleet", "restart", "web", "--host", "wr", "--wait", "180s"])
        .args(["--postgres", &fleet.url, "--schema", &fleet.schema])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn tend");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(LONG).expect("the id is printed at once");
    assert!(first.starts_with("wr\tcommand "), "{first}");

    cluster.stop_fast();
    cluster.start();
    fleet.start_daemon(&env, "wr");
    let result = rx
        .recv_timeout(RECONNECT)
        .expect("a result after the restart");
    let new = env.pid("web").unwrap();
    assert_ne!(new, old);
    assert_eq!(result, format!("wr\tdone\trestarted (pid {new})"));
    let out = child.wait_with_output().expect("wait");
    reader.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reconnecting"), "{stderr}");
}

/// A command begun by a daemon of another home of the same host id that is gone (its
/// lease lapsed) and that expired meanwhile: closed as interrupted (whether it acted is
/// unknown), not left running, and the later command for that service runs.
#[test]
fn expired_claim_of_a_gone_home_does_not_block() {
    let fleet = Fleet::new(&shared_url());
    let s = &fleet.schema;
    let env = fleet.host("gh");
    let old = env.pid("web").unwrap();
    psql(
        &fleet.url,
        &[&format!(
            "INSERT INTO {s}.commands (host_id, service, action, issued_at, expires_at, \
                 claimed_at, claimed_by, lease_until) \
             VALUES ('gh', 'web', 'restart', now() - interval '10 minutes', \
                 now() - interval '5 minutes', now() - interval '9 minutes', \
                 'gh/0000000000000000/1', now() - interval '8 minutes')"
        )],
    );
    let later = issued(&fleet.ok(&["restart", "web", "--host", "gh"]))[0].1;
    let done = fleet.wait_finished(later, LONG);
    assert_eq!(done["outcome"], "done", "{done}");
    env.wait_new_pid("web", old);
    let stuck = &fleet.history()[0];
    assert_eq!(stuck["outcome"], "failed", "{stuck}");
    assert!(
        stuck["message"]
            .as_str()
            .unwrap()
            .starts_with("interrupted: begun by a daemon that is gone (gh/0000000000000000/1)"),
        "{stuck}"
    );
}
