//! Fleet control end to end: several real daemons on this machine, each with
//! a home and a host id of its own, joined to a fleet in a schema of the test's own
//! (dropped at the end), driven by `tend fleet`.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::server::{shared_url, Cluster};
use super::{kill, new_channel, psql, try_psql, unique, LONG, RECONNECT};
use crate::util::*;

/// A fleet in a fresh schema of the server at `url`; the schema (and any role the test
/// created) is dropped on drop. Declare it before the hosts, so they go first.
pub(super) struct Fleet {
    pub(super) url: String,
    pub(super) schema: String,
    pub(super) roles: Vec<String>,
    pub(super) admin: Env,
}

impl Fleet {
    pub(super) fn new(url: &str) -> Fleet {
        let schema = format!("tf_{}_{}", std::process::id(), unique());
        let f = Fleet {
            url: url.to_string(),
            schema,
            roles: Vec::new(),
            admin: Env::new(),
        };
        let out = f.tend(&["init"]);
        assert_eq!(out.code, 0, "fleet init: {out:?}");
        assert!(
            out.stdout.contains("migrated from version 0 to 3"),
            "{out:?}"
        );
        f
    }

    /// `tend fleet ARGS --postgres URL --schema S` from an admin home of its own.
    pub(super) fn tend(&self, args: &[&str]) -> Out {
        let mut a = vec!["fleet"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--postgres", &self.url, "--schema", &self.schema]);
        self.admin.tend(&a)
    }

    pub(super) fn ok(&self, args: &[&str]) -> Out {
        let out = self.tend(args);
        assert_eq!(out.code, 0, "fleet {args:?}: {out:?}");
        out
    }

    pub(super) fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }

    pub(super) fn history(&self) -> Vec<Value> {
        self.json(&["history", "--json"])
            .as_array()
            .expect("an array")
            .clone()
    }

    pub(super) fn command(&self, id: i64) -> Value {
        self.history()
            .into_iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no command {id}"))
    }

    /// Waits until command `id` is finished; returns it.
    pub(super) fn wait_finished(&self, id: i64, deadline: Duration) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(deadline, || {
            last = self.command(id);
            last["finished_at"].is_number()
        });
        assert!(ok, "command {id} never finished: {last}");
        last
    }

    /// The daemon flags joining this fleet as `host_id`.
    pub(super) fn daemon_args(&self, host_id: &str) -> Vec<String> {
        vec![
            "--postgres".into(),
            self.url.clone(),
            "--schema".into(),
            self.schema.clone(),
            "--host-id".into(),
            host_id.into(),
            // A quick-mode channel of its own, so no other test's NOTIFY reaches it.
            "--channel".into(),
            new_channel(),
        ]
    }

    /// A host: a home with `web` running and a daemon joined as `host_id`; returns it
    /// once `fleet status` shows it with `web` running.
    pub(super) fn host(&self, host_id: &str) -> Env {
        let env = Env::new();
        env.add_fixture("web", &[], &["--marker", "web"]);
        env.ok(&["start", "web"]);
        self.join(&env, host_id);
        env
    }

    pub(super) fn join(&self, env: &Env, host_id: &str) {
        self.start_daemon(env, host_id);
        self.wait_host(host_id, env);
    }

    pub(super) fn start_daemon(&self, env: &Env, host_id: &str) {
        let args = self.daemon_args(host_id);
        let mut a = vec!["daemon"];
        a.extend(args.iter().map(String::as_str));
        env.ok(&a);
    }

    /// Waits until `host_id` has a fresh heartbeat and reports `web` running under the
    /// pid its home records.
    pub(super) fn wait_host(&self, host_id: &str, env: &Env) {
        let mut last = Value::Null;
        let ok = wait_until(LONG, || {
            let pid = env.pid("web");
            last = self.json(&["status", "--json"]);
            last.as_array().unwrap().iter().any(|h| {
                h["host"] == host_id
                    && h["stale"] == false
                    && h["services"].as_array().unwrap().iter().any(|s| {
                        s["name"] == "web"
                            && s["state"] == "running"
                            && s["pid"].as_i64().map(|p| p as i32) == pid
                    })
            })
        });
        assert!(
            ok,
            "{host_id} never joined: {last}\ndaemon.log:\n{}",
            env.daemon_log()
        );
    }

    pub(super) fn role(&mut self, suffix: &str) -> String {
        let r = format!("{}_{suffix}", self.schema);
        psql(&self.url, &[&format!("CREATE ROLE {r} NOLOGIN")]);
        self.roles.push(r.clone());
        r
    }

    /// A role that can log in with a password; returns the fleet URL as that role.
    pub(super) fn login_role(&mut self, suffix: &str) -> (String, String) {
        let r = format!("{}_{suffix}", self.schema);
        psql(
            &self.url,
            &[&format!("CREATE ROLE {r} LOGIN PASSWORD 'pw-{r}'")],
        );
        self.roles.push(r.clone());
        let rest = self.url.split_once("://").expect("a URL").1;
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        (r.clone(), format!("postgres://{r}:pw-{r}@{host}"))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let mut cmds = vec![format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)];
        for r in &self.roles {
            cmds.push(format!("DROP OWNED BY {r}"));
            cmds.push(format!("DROP ROLE {r}"));
        }
        let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
        let _ = try_psql(&self.url, &cmds);
    }
}

/// The ids of the commands a `fleet ACTION` without `--wait` printed, by host.
pub(super) fn issued(out: &Out) -> Vec<(String, i64)> {
    out.stdout
        .lines()
        .filter_map(|l| {
            let (host, rest) = l.split_once('\t')?;
            let id = rest.strip_prefix("command ")?.split([':', ' ']).next()?;
            Some((host.to_string(), id.parse().ok()?))
        })
        .collect()
}

pub(super) fn fleet_events(env: &Env) -> Vec<String> {
    let out = env.ok(&["events", "web", "--json", "-n", "100000"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("events --json");
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "fleet")
        .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `fleet restart web --wait` reaches every live host that defines web and prints one
/// result per host; each host's web really restarted; history names who issued it.
#[test]
fn fleet_restart_reaches_every_host() {
    let fleet = Fleet::new(&shared_url());
    let hosts: Vec<(String, Env)> = (0..3)
        .map(|i| {
            let id = format!("h{i}");
            let env = fleet.host(&id);
            (id, env)
        })
        .collect();
    let before: Vec<i32> = hosts.iter().map(|(_, e)| e.pid("web").unwrap()).collect();
    let out = fleet.ok(&["restart", "web", "--wait", "30s"]);
    for ((id, env), old) in hosts.iter().zip(&before) {
        let new = env.pid("web").expect("web runs");
        assert_ne!(new, *old, "{id} did not restart");
        assert!(
            out.stdout
                .lines()
                .any(|l| l == format!("{id}\tdone\trestarted (pid {new})")),
            "{id}: {}",
            out.stdout
        );
    }
    let history = fleet.history();
    assert_eq!(history.len(), 3, "{history:?}");
    for c in &history {
        assert_eq!(c["outcome"], "done", "{c}");
        assert_eq!(c["issued_by"], "postgres", "{c}");
        assert_eq!(c["action"], "restart", "{c}");
    }
    // A service no host defines: nothing issued, exit 4.
    let out = fleet.tend(&["restart", "nosuch"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.starts_with("tend: "), "{out:?}");
    assert_eq!(fleet.history().len(), 3);
}

/// A host whose daemon is down when the command is issued runs it when it returns; an
/// expired command is marked expired and never run; a repeated dedup key runs once.
#[test]
fn offline_host_catches_up_expires_and_dedups() {
    let fleet = Fleet::new(&shared_url());
    let env = fleet.host("solo");
    env.ok(&["daemon", "stop"]);
    let pid = env.pid("web").unwrap();

    let expiring = issued(&fleet.ok(&["restart", "web", "--host", "solo", "--expires", "1s"]));
    let first = issued(&fleet.ok(&["restart", "web", "--host", "solo", "--dedup", "deploy-1"]));
    let again = fleet.ok(&["restart", "web", "--host", "solo", "--dedup", "deploy-1"]);
    assert!(
        again.stdout.contains(&format!(
            "command {} already pending under dedup key deploy-1",
            first[0].1
        )),
        "{again:?}"
    );
    assert_eq!(fleet.history().len(), 2, "the repeat added no command");
    // Let the first one expire while the host is away.
    assert!(wait_until(LONG, || fleet.command(expiring[0].1)["outcome"]
        == "expired"));

    fleet.join(&env, "solo");
    let expired = fleet.wait_finished(expiring[0].1, LONG);
    assert_eq!(expired["outcome"], "expired", "{expired}");
    assert_eq!(expired["ok"], false);
    let done = fleet.wait_finished(first[0].1, LONG);
    assert_eq!(done["outcome"], "done", "{done}");
    let new = env.pid("web").unwrap();
    assert_ne!(new, pid);
    assert_eq!(done["message"], format!("restarted (pid {new})"));
    // One restart requested in all: the expired command never ran.
    let evs: Vec<String> = fleet_events(&env)
        .into_iter()
        .filter(|d| d.contains("requested by"))
        .collect();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(
        evs[0].starts_with(&format!("command {}:", first[0].1)),
        "{evs:?}"
    );
}

/// The daemon restarts web for a fleet command, records the result locally, and is
/// SIGKILLed before it can report (the report is held in PostgreSQL by a trigger, and
/// its backend is then terminated, so nothing of it commits). The next daemon of that
/// home reports the recorded result and does not restart web again.
#[test]
fn sigkilled_after_acting_does_not_act_again() {
    let fleet = Fleet::new(&shared_url());
    let env = fleet.host("k1");
    let s = &fleet.schema;
    psql(
        &fleet.url,
        &[
            &format!("CREATE TABLE {s}.hold (x int)"),
            &format!("INSERT INTO {s}.hold VALUES (1)"),
            &format!(
                "CREATE FUNCTION {s}.hold_finish() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN WHILE EXISTS (SELECT 1 FROM {s}.hold) LOOP PERFORM pg_sleep(0.05); \
                 END LOOP; RETURN NEW; END $$"
            ),
            &format!(
                "CREATE TRIGGER hold BEFORE UPDATE ON {s}.commands FOR EACH ROW \
                 WHEN (NEW.finished_at IS NOT NULL) EXECUTE FUNCTION {s}.hold_finish()"
            ),
        ],
    );
    let old = env.pid("web").unwrap();
    let id = issued(&fleet.ok(&["restart", "web", "--host", "k1"]))[0].1;
    let new = env.wait_new_pid("web", old);
    // The result is recorded locally (the report is what is held).
    let db = env.db();
    assert!(wait_until(LONG, || recorded_result(&db, id).is_some()));
    env.kill_daemon();
    // Abort the held report: its transaction never commits.
    psql(
        &fleet.url,
        &[&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE wait_event = 'PgSleep' AND query LIKE '%{s}.commands%'"
        )],
    );
    psql(&fleet.url, &[&format!("DELETE FROM {s}.hold")]);
    assert!(fleet.command(id)["finished_at"].is_null());

    fleet.join(&env, "k1");
    let c = fleet.wait_finished(id, LONG);
    assert_eq!(c["outcome"], "done", "{c}");
    assert_eq!(c["message"], format!("restarted (pid {new})"));
    assert_eq!(env.pid("web"), Some(new), "web was restarted a second time");
    let requested = fleet_events(&env)
        .into_iter()
        .filter(|d| d.contains("requested by"))
        .count();
    assert_eq!(requested, 1);
    assert!(env
        .daemon_log()
        .contains("reported a result recorded before"));
}

fn recorded_result(db: &Path, id: i64) -> Option<String> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row(
        "SELECT message FROM fleet_taken WHERE id = ?1 AND finished_at IS NOT NULL",
        [id],
        |r| r.get(0),
    )
    .ok()
}

/// PostgreSQL stops mid-way (private cluster): supervision goes on (a killed service is
/// restarted), a host whose command was queued before the stop runs it once the server
/// is back, and a fleet restart afterwards reaches both hosts.
#[test]
fn postgres_restart_loses_nothing() {
    let cluster = Cluster::new(&[]);
    let fleet = Fleet::new(&cluster.url("disable"));
    let a = fleet.host("pa");
    let b = fleet.host("pb");
    b.ok(&["daemon", "stop"]);
    let b_pid = b.pid("web").unwrap();
    let queued = issued(&fleet.ok(&["restart", "web", "--host", "pb"]))[0].1;

    cluster.stop_fast();
    // Local supervision does not wait on PostgreSQL.
    let a_pid = a.pid("web").unwrap();
    kill(a_pid, libc::SIGKILL);
    let a_pid = a.wait_new_pid("web", a_pid);
    fleet.start_daemon(&b, "pb");
    cluster.start();

    let c = fleet.wait_finished(queued, RECONNECT);
    assert_eq!(c["outcome"], "done", "{c}");
    let b_new = b.wait_new_pid("web", b_pid);
    fleet.wait_host("pa", &a);
    fleet.wait_host("pb", &b);
    let out = fleet.ok(&["restart", "web", "--wait", "30s"]);
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.contains("\tdone\t"))
            .count(),
        2,
        "{out:?}"
    );
    assert_ne!(a.pid("web"), Some(a_pid));
    assert_ne!(b.pid("web"), Some(b_new));
}

/// Row-level security: a host role sees and finishes only its own host's commands and
/// writes only its own status; an operator inserts commands (never who issued them) and
/// reads everything but cannot finish one.
#[test]
fn host_role_sees_only_its_own_commands() {
    let mut fleet = Fleet::new(&shared_url());
    let s = fleet.schema.clone();
    let host_role = fleet.role("host_a");
    let operator = fleet.role("op");
    fleet.ok(&["grant", "--host-role", &host_role, "--host-id", "ha"]);
    fleet.ok(&["grant", "--operator", &operator]);
    psql(
        &fleet.url,
        &[
            &format!("INSERT INTO {s}.hosts (id) VALUES ('ha'), ('hb')"),
            &format!(
                "INSERT INTO {s}.commands (host_id, service, action) \
                 VALUES ('ha', 'web', 'restart'), ('hb', 'web', 'restart')"
            ),
        ],
    );
    let as_role = |role: &str, sql: &str| try_psql(&fleet.url, &[&format!("SET ROLE {role}"), sql]);
    let out = as_role(
        &host_role,
        &format!("SELECT host_id FROM {s}.commands ORDER BY id"),
    );
    assert_eq!(out.stdout.trim(), "ha", "{out:?}");
    let out = as_role(
        &host_role,
        &format!("UPDATE {s}.commands SET finished_at = now(), ok = true WHERE host_id = 'hb'"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = as_role(
        &host_role,
        &format!("UPDATE {s}.commands SET finished_at = now(), ok = true WHERE host_id = 'ha'"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let finished = psql(
        &fleet.url,
        &[&format!(
            "SELECT host_id FROM {s}.commands WHERE finished_at IS NOT NULL ORDER BY id"
        )],
    );
    assert_eq!(finished.trim(), "ha", "only its own command was finished");
    // Moving a command to itself or inserting commands is refused.
    let out = as_role(
        &host_role,
        &format!("UPDATE {s}.commands SET host_id = 'ha' WHERE host_id = 'hb'"),
    );
    assert_ne!(out.code, 0, "{out:?}");
    let out = as_role(
        &host_role,
        &format!(
            "INSERT INTO {s}.commands (host_id, service, action) VALUES ('hb', 'web', 'stop')"
        ),
    );
    assert_ne!(out.code, 0, "{out:?}");
    let out = as_role(
        &host_role,
        &format!("INSERT INTO {s}.services (host_id, name, state) VALUES ('hb', 'web', 'running')"),
    );
    assert!(out.stderr.contains("row-level security"), "{out:?}");
    let out = as_role(
        &host_role,
        &format!("INSERT INTO {s}.services (host_id, name, state) VALUES ('ha', 'web', 'running')"),
    );
    assert_eq!(out.code, 0, "{out:?}");

    let out = as_role(&operator, &format!("SELECT count(*) FROM {s}.commands"));
    assert_eq!(out.stdout.trim(), "2", "{out:?}");
    let out = as_role(
        &operator,
        &format!(
            "INSERT INTO {s}.commands (host_id, service, action) VALUES ('hb', 'web', 'stop')"
        ),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = as_role(
        &operator,
        &format!(
            "INSERT INTO {s}.commands (host_id, service, action, issued_by) \
             VALUES ('hb', 'web', 'stop', 'someone_else')"
        ),
    );
    assert!(out.stderr.contains("permission denied"), "{out:?}");
    let out = as_role(&operator, &format!("UPDATE {s}.commands SET ok = true"));
    assert!(out.stderr.contains("permission denied"), "{out:?}");
    // Nothing in a row can be a command line: unknown actions are refused.
    let out = as_role(
        &operator,
        &format!(
            "INSERT INTO {s}.commands (host_id, service, action) VALUES ('hb', 'web', 'exec')"
        ),
    );
    assert!(out.stderr.contains("check constraint"), "{out:?}");
    let issuer = psql(
        &fleet.url,
        &[&format!(
            "SELECT issued_by FROM {s}.commands ORDER BY id DESC LIMIT 1"
        )],
    );
    assert_eq!(issuer.trim(), operator);
}

/// `fleet init` is idempotent; bad input is one `tend:` line with exit 2 and changes
/// nothing.
#[test]
fn fleet_bad_input() {
    let fleet = Fleet::new(&shared_url());
    let out = fleet.ok(&["init"]);
    assert!(out.stdout.contains("up to date (version 3)"), "{out:?}");
    for (args, code) in [
        (vec!["restart", "web", "--host", "nobody"], 2),
        (vec!["restart", "web", "--host", "bad host"], 2),
        (vec!["restart", "bad name"], 2),
        (vec!["restart", "web", "--wait", "soon"], 2),
        (vec!["restart", "web", "--expires", "0s"], 2),
        (vec!["signal", "NOPE", "web"], 2),
        (vec!["grant", "--host-role", "x"], 2),
    ] {
        let out = fleet.tend(&args);
        assert_eq!(out.code, code, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("tend: "), "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out:?}");
    }
    assert!(fleet.history().is_empty());
    // No URL anywhere.
    let env = Env::new();
    let out = env.tend(&["fleet", "status"]);
    assert_eq!(out.code, 2, "{out:?}");
    // A schema that was never initialised.
    let out = env.tend(&[
        "fleet",
        "status",
        "--postgres",
        &fleet.url,
        "--schema",
        "tf_never",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("tend fleet init"), "{out:?}");
}

/// Quick mode: a signed payload obeyed once is refused as a replay by the next daemon
/// of the same home too (the replay cache lives in the home's database).
#[test]
fn signed_replay_refused_after_daemon_restart() {
    let pg = super::Pg::shared();
    let env = Env::new();
    let key = b"k3y-for-tend-replay-tests-0123456789";
    let key_file = env.work().join("notify.key");
    std::fs::write(&key_file, key).unwrap();
    let pid = super::start_web(&env);
    let mut args = pg.daemon_args();
    args.extend([
        "--notify-key-file".into(),
        key_file.to_str().unwrap().into(),
    ]);
    super::start_listening(&env, &args);
    let signed = super::sign(key, super::now_secs(), "restart web");
    pg.notify(&signed);
    let pid2 = env.wait_new_pid("web", pid);

    env.ok(&["daemon", "stop"]);
    super::start_listening(&env, &args);
    pg.notify(&signed);
    let ev = super::wait_rejected(&env, 1);
    assert!(ev.detail.contains("replayed payload"), "{ev:?}");
    assert_eq!(env.pid("web"), Some(pid2), "a replay was acted on");
}

/// A network namespace joined to this one by a veth pair; removed (with the pair) on drop.
struct Netns {
    name: String,
    outer: String,
    host_ip: String,
}

impl Netns {
    pub(super) fn new() -> Netns {
        let k = (std::process::id() + unique()) % 250 + 1;
        let name = format!("tendt{}_{}", std::process::id(), unique());
        let outer = format!("tvh{k}_{}", std::process::id() % 10000);
        let inner = format!("tvn{k}_{}", std::process::id() % 10000);
        let host_ip = format!("10.213.{k}.1");
        let ns = Netns {
            name: name.clone(),
            outer: outer.clone(),
            host_ip: host_ip.clone(),
        };
        for args in [
            vec!["netns", "add", &name],
            vec![
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ],
            vec!["link", "set", &inner, "netns", &name],
            vec!["addr", "add", &format!("{host_ip}/30"), "dev", &outer],
            vec!["link", "set", &outer, "up"],
            vec![
                "-n",
                &name,
                "addr",
                "add",
                &format!("10.213.{k}.2/30"),
                "dev",
                &inner,
            ],
            vec!["-n", &name, "link", "set", &inner, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            ip(&args);
        }
        ns
    }

    fn link(&self, state: &str) {
        ip(&["link", "set", &self.outer, state]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it ours.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.outer])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn ip(args: &[&str]) {
    let mut c = std::process::Command::new("ip");
    c.args(args);
    let out = run(c);
    assert_eq!(out.code, 0, "ip {args:?}: {out:?}");
}

/// A host in a network namespace, cut off from the database by taking the veth link down
/// (packets are dropped, the connection goes half-open): its daemon notices within
/// seconds, keeps supervising, and once the link is back reconnects, runs the command
/// issued meanwhile and reports again.
#[test]
fn network_partition_noticed_and_healed() {
    if !require_root(
        "postgres::fleet::network_partition_noticed_and_healed",
        "create network namespaces",
    ) {
        return;
    }
    let net = Netns::new();
    let cluster = Cluster::new(&[format!("listen_addresses = '127.0.0.1,{}'", net.host_ip)]);
    cluster.allow_network(&format!("{}/30", net.host_ip));
    let fleet = Fleet::new(&cluster.url("disable"));
    let env = Env::new();
    env.add_fixture("web", &[], &["--marker", "web"]);
    env.ok(&["start", "web"]);
    let mut args = fleet.daemon_args("np");
    args[1] = format!(
        "postgres://postgres@{}:{}/postgres?sslmode=disable",
        net.host_ip,
        cluster.port()
    );
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", &net.name, TEND, "--home"])
        .arg(env.home())
        .arg("daemon")
        .args(&args)
        .current_dir(env.work())
        .env_remove("TEND_HOME")
        .env_remove("TEND_POSTGRES_URL");
    let out = run(c);
    assert_eq!(out.code, 0, "daemon in the namespace: {out:?}");
    fleet.wait_host("np", &env);

    net.link("down");
    assert!(
        wait_until(LONG, || env
            .daemon_log()
            .contains("PostgreSQL connection lost")),
        "the partition went unnoticed:\n{}",
        env.daemon_log()
    );
    // Supervision goes on.
    let pid = env.pid("web").unwrap();
    kill(pid, libc::SIGKILL);
    let pid = env.wait_new_pid("web", pid);
    let id = issued(&fleet.ok(&["restart", "web", "--host", "np"]))[0].1;
    assert!(fleet.command(id)["finished_at"].is_null());

    net.link("up");
    let c = fleet.wait_finished(id, RECONNECT);
    assert_eq!(c["outcome"], "done", "{c}");
    env.wait_new_pid("web", pid);
    fleet.wait_host("np", &env);
}

/// Eight `fleet restart --dedup` at once for the same host and key: every one succeeds
/// (conflicts are retried, not reported) and exactly one command exists.
#[test]
fn concurrent_dedup_issues_one_command() {
    let fleet = Fleet::new(&shared_url());
    let env = fleet.host("cd");
    env.ok(&["daemon", "stop"]);
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = std::process::Command::new(TEND);
            c.arg("--home")
                .arg(fleet.admin.home())
                .args(["fleet", "restart", "web", "--host", "cd", "--dedup", "same"])
                .args(["--postgres", &fleet.url, "--schema", &fleet.schema])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().expect("spawn tend")
        })
        .collect();
    let mut ids = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let id: i64 = text
            .split("command ")
            .nth(1)
            .and_then(|r| r.split([':', ' ']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no command id in {text:?}"));
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(fleet.history().len(), 1);
}

/// Two daemons (two homes) sharing one host id: every command is carried out by exactly
/// one of them (claims are `FOR UPDATE SKIP LOCKED`), and all of them finish.
#[test]
fn two_daemons_sharing_a_host_id_claim_each_command_once() {
    let fleet = Fleet::new(&shared_url());
    let a = fleet.host("twin");
    let b = fleet.host("twin");
    let s = &fleet.schema;
    let n = 30;
    psql(
        &fleet.url,
        &[&format!(
            "INSERT INTO {s}.commands (host_id, service, action) \
             SELECT 'twin', 'web', 'start' FROM generate_series(1, {n} / 2)"
        )],
    );
    psql(
        &fleet.url,
        &[&format!(
            "INSERT INTO {s}.commands (host_id, service, action, signal) \
             SELECT 'twin', 'web', 'signal', 28 FROM generate_series(1, {n} / 2)"
        )],
    );
    let ok = wait_until(LONG, || {
        psql(
            &fleet.url,
            &[&format!(
                "SELECT count(*) FROM {s}.commands WHERE finished_at IS NULL"
            )],
        )
        .trim()
            == "0"
    });
    assert!(ok, "commands left unfinished");
    let requested = |env: &Env| {
        fleet_events(env)
            .into_iter()
            .filter(|d| d.contains("requested by"))
            .count()
    };
    assert_eq!(requested(&a) + requested(&b), n as usize);
    let done = psql(
        &fleet.url,
        &[&format!(
            "SELECT count(*) FROM {s}.commands WHERE outcome = 'done'"
        )],
    );
    assert_eq!(done.trim(), n.to_string());
}

/// The least-privilege roles end to end: a daemon connecting as a host role joins,
/// reports its state and carries out its commands; an operator role issues a restart,
/// waits for the result and reads status and history; the row records who issued it.
#[test]
fn least_privilege_roles_end_to_end() {
    let mut fleet = Fleet::new(&shared_url());
    let (host_role, host_url) = fleet.login_role("lh");
    let (operator, operator_url) = fleet.login_role("lo");
    fleet.ok(&["grant", "--host-role", &host_role, "--host-id", "lp"]);
    fleet.ok(&["grant", "--operator", &operator]);
    let env = Env::new();
    env.add_fixture("web", &[], &["--marker", "web"]);
    env.ok(&["start", "web"]);
    let mut args = fleet.daemon_args("lp");
    args[1] = host_url;
    let mut a = vec!["daemon"];
    a.extend(args.iter().map(String::as_str));
    env.ok(&a);
    fleet.wait_host("lp", &env);
    let old = env.pid("web").unwrap();

    let as_operator = |args: &[&str]| {
        let mut a = vec!["fleet"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--postgres", &operator_url, "--schema", &fleet.schema]);
        fleet.admin.tend(&a)
    };
    let out = as_operator(&["restart", "web", "--wait", "30s"]);
    assert_eq!(out.code, 0, "{out:?}\ndaemon.log:\n{}", env.daemon_log());
    let new = env.pid("web").unwrap();
    assert_ne!(new, old);
    // The command's id as soon as it is stored, then its result.
    assert_eq!(
        out.stdout,
        format!("lp\tcommand 1: restart web\nlp\tdone\trestarted (pid {new})\n")
    );
    let out = as_operator(&["status", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\"host\": \"lp\""), "{}", out.stdout);
    let out = as_operator(&["history", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("history --json");
    assert_eq!(v[0]["issued_by"], operator.as_str(), "{v}");
    // A host role that lacks a grant shows up as PostgreSQL's "permission
    // denied for ..." in the daemon's log. The containment report may say
    // "permission denied" too (an unprivileged user cannot create cgroups
    // here), which is not about the roles.
    let log = env.daemon_log();
    let denied: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("permission denied") && !l.contains("containment"))
        .collect();
    assert!(denied.is_empty(), "{denied:#?}\ndaemon.log:\n{log}");
}

/// `tend top --fleet` shows every host's services as they publish them, and only looks.
#[test]
fn top_fleet_shows_every_host() {
    use crate::top::{assert_restored, row_has, Tmux};
    let fleet = Fleet::new(&shared_url());
    let hosts: Vec<Env> = ["h0", "h1"].iter().map(|id| fleet.host(id)).collect();
    let args = format!(
        "--fleet --postgres '{}' --schema {}",
        fleet.url, fleet.schema
    );
    let Some(t) = Tmux::start(&fleet.admin, &args, 120, 30) else {
        return;
    };
    let s = t.wait("both hosts", |s| {
        s.contains("2 host(s), 2 service(s) running")
            && row_has(s, "h0", "running")
            && row_has(s, "h1", "running")
    });
    for (id, env) in ["h0", "h1"].iter().zip(&hosts) {
        let pid = env.pid("web").expect("web runs").to_string();
        assert!(
            row_has(&s, id, &pid),
            "{id}'s web pid {pid} not shown:\n{s}"
        );
    }
    for col in ["HOST", "NAME", "STATE", "PID", "UPTIME", "LAST SEEN"] {
        assert!(s.contains(col), "no {col} column:\n{s}");
    }
    // It only looks: a stop key says how to act, and nothing is issued.
    t.keys(&["x"]);
    t.wait("the looking-only note", |s| {
        s.contains("fleet mode only looks")
    });
    assert!(fleet.history().is_empty());
    t.keys(&["/", "h", "1", "Enter"]);
    t.wait("h1 alone", |s| {
        row_has(s, "h1", "running") && !row_has(s, "h0", "running")
    });
    t.keys(&["q"]);
    assert_restored(&t);
}

/// A host id no other test (in this or another test process) uses, for tests that find
/// a daemon's connection in `pg_stat_activity` by its name.
fn lone_host_id(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), unique())
}

/// A host whose backstop sweep is an hour away (`fleet.sweep_every`), so in a test only
/// wake-ups and (re)connects make it claim; `url` overrides the fleet's URL (a host
/// role's). Returns the home and the daemon's quick-mode channel.
fn quiet_host(fleet: &Fleet, host_id: &str, url: Option<&str>) -> (Env, String) {
    let env = Env::new();
    env.ok(&["config", "set", "fleet.sweep_every", "1h"]);
    // The connection tests send unsigned quick-mode payloads too, which a daemon in a
    // fleet obeys only when told so.
    env.ok(&["config", "set", "postgres.quick_unsigned", "true"]);
    env.add_fixture("web", &[], &["--marker", "web"]);
    env.ok(&["start", "web"]);
    let mut args = fleet.daemon_args(host_id);
    if let Some(url) = url {
        args[1] = url.to_string();
    }
    let channel = args[7].clone();
    let mut a = vec!["daemon"];
    a.extend(args.iter().map(String::as_str));
    env.ok(&a);
    fleet.wait_host(host_id, &env);
    (env, channel)
}

/// What a daemon counts of its fleet work (`daemon status --json`): wake-ups received
/// on its channel, claim attempts, sweeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counters {
    wakeups: u64,
    claims: u64,
    sweeps: u64,
}

fn counters(env: &Env) -> Counters {
    let p = super::pg_status(env);
    let n = |k: &str| {
        p[k].as_u64()
            .unwrap_or_else(|| panic!("no {k} in daemon status: {p}"))
    };
    Counters {
        wakeups: n("fleet_wakeups"),
        claims: n("fleet_claims"),
        sweeps: n("fleet_sweeps"),
    }
}

/// Waits until the counters stop moving (the claims a daemon makes on joining are
/// over), and returns them.
fn settled(env: &Env) -> Counters {
    let mut last = counters(env);
    let ok = wait_until(LONG, || {
        let now = counters(env);
        let still = now == last && holds_for(Duration::from_millis(500), || counters(env) == now);
        last = now;
        still
    });
    assert!(ok, "the counters never settled: {last:?}");
    last
}

/// The server connections a daemon of `host_id` holds (`pg_stat_activity`, by the
/// application name the daemon gives its connection).
fn daemon_connections(url: &str, host_id: &str) -> i64 {
    psql(
        url,
        &[&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tend daemon {host_id}'"
        )],
    )
    .trim()
    .parse()
    .expect("a count")
}

/// A command for one host wakes that host alone: it receives one wake-up and claims
/// twice (the command, then nothing more); the other hosts receive nothing and claim
/// nothing, watched for 3 s after the result.
#[test]
fn one_host_command_wakes_only_that_host() {
    let fleet = Fleet::new(&shared_url());
    let ids: Vec<String> = (0..3).map(|_| lone_host_id("wo")).collect();
    let hosts: Vec<Env> = ids
        .iter()
        .map(|id| quiet_host(&fleet, id, None).0)
        .collect();
    let before: Vec<Counters> = hosts.iter().map(settled).collect();
    let old = hosts[0].pid("web").unwrap();
    let out = fleet.ok(&["restart", "web", "--host", &ids[0], "--wait", "30s"]);
    let new = hosts[0].pid("web").unwrap();
    assert_ne!(new, old);
    // The command's id line, then its result.
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(
        lines[0].starts_with(&format!("{}\tcommand ", ids[0])),
        "{out:?}"
    );
    assert_eq!(lines[1], format!("{}\tdone\trestarted (pid {new})", ids[0]));
    let woken = settled(&hosts[0]);
    assert_eq!(woken.wakeups, before[0].wakeups + 1, "{woken:?} {before:?}");
    assert_eq!(woken.claims, before[0].claims + 2, "{woken:?} {before:?}");
    let quiet = holds_for(Duration::from_secs(3), || {
        hosts[1..]
            .iter()
            .zip(&before[1..])
            .all(|(env, b)| counters(env) == *b)
    });
    let now: Vec<Counters> = hosts.iter().map(counters).collect();
    assert!(
        quiet,
        "another host was woken or claimed: before {before:?}, now {now:?}"
    );
}

/// One daemon holds exactly one server connection, carrying the quick mode (a NOTIFY on
/// its channel restarts web) and the fleet (a command runs); when the server terminates
/// it, the daemon comes back with exactly one again and both modes still work.
#[test]
fn one_daemon_holds_one_connection() {
    let fleet = Fleet::new(&shared_url());
    let id = lone_host_id("oc");
    let (env, channel) = quiet_host(&fleet, &id, None);
    assert_eq!(daemon_connections(&fleet.url, &id), 1);
    let both_modes = |round: &str| {
        let old = env.pid("web").unwrap();
        psql(
            &fleet.url,
            &[&format!("NOTIFY {channel}, 'restart web@{id}'")],
        );
        let quick = env.wait_new_pid("web", old);
        let out = fleet.ok(&["restart", "web", "--host", &id, "--wait", "30s"]);
        let new = env.pid("web").unwrap();
        assert_ne!(new, quick, "{round}");
        assert!(out.stdout.contains("\tdone\t"), "{round}: {out:?}");
        assert_eq!(daemon_connections(&fleet.url, &id), 1, "{round}");
    };
    both_modes("first connection");
    let terminated = psql(
        &fleet.url,
        &[&format!(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'tend daemon {id}') t"
        )],
    );
    assert_eq!(terminated.trim(), "1");
    assert!(
        wait_until(RECONNECT, || env
            .daemon_log()
            .matches("joined the fleet")
            .count()
            == 2),
        "never rejoined:\n{}",
        env.daemon_log()
    );
    super::wait_pg(&env, LONG, "connected", |p| p["state"] == "connected");
    assert!(
        holds_for(Duration::from_secs(2), || daemon_connections(
            &fleet.url, &id
        ) == 1),
        "not exactly one connection after the reconnect"
    );
    both_modes("after the reconnect");
}

/// A command issued while the daemon cannot connect (its role's LOGIN revoked and its
/// backend terminated) is found by the read on reconnect, not by a sweep (an hour away)
/// nor a wake-up (sent while nobody listened): it runs once LOGIN is back.
#[test]
fn pending_work_runs_on_reconnect() {
    let mut fleet = Fleet::new(&shared_url());
    let id = lone_host_id("pr");
    let (role, url) = fleet.login_role("pr");
    fleet.ok(&["grant", "--host-role", &role, "--host-id", &id]);
    let (env, _) = quiet_host(&fleet, &id, Some(&url));
    let before = settled(&env);
    let old = env.pid("web").unwrap();
    psql(
        &fleet.url,
        &[
            &format!("ALTER ROLE {role} NOLOGIN"),
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'tend daemon {id}'"
            ),
        ],
    );
    super::wait_pg(&env, LONG, "reconnecting", |p| p["state"] == "reconnecting");
    let cmd = issued(&fleet.ok(&["restart", "web", "--host", &id]))[0].1;
    // Refused logins meanwhile: nothing runs.
    assert!(
        wait_until(LONG, || env
            .daemon_log()
            .contains("not permitted to log in")),
        "{}",
        env.daemon_log()
    );
    assert!(fleet.command(cmd)["finished_at"].is_null());
    assert_eq!(env.pid("web"), Some(old));
    psql(&fleet.url, &[&format!("ALTER ROLE {role} LOGIN")]);
    let c = fleet.wait_finished(cmd, RECONNECT);
    assert_eq!(c["outcome"], "done", "{c}");
    env.wait_new_pid("web", old);
    let after = counters(&env);
    assert_eq!(
        after.wakeups, before.wakeups,
        "the command's NOTIFY was missed"
    );
    assert_eq!(after.sweeps, before.sweeps, "no sweep ran");
}

/// Anyone who can connect may NOTIFY a host's wake-up channel. 1,000 NOTIFYs in one
/// transaction and 1,000 more in 1,000 transactions reach the daemon, and cost at most
/// one claim per 100 ms of the flood (plus two: the round in progress and the one
/// stored wake-up), not one each; a real command still runs at once afterwards.
#[test]
fn wake_flood_costs_bounded_claims() {
    let fleet = Fleet::new(&shared_url());
    let id = lone_host_id("wf");
    let (env, _) = quiet_host(&fleet, &id, None);
    let s = &fleet.schema;
    let before = settled(&env);
    let began = std::time::Instant::now();
    psql(
        &fleet.url,
        &[&format!(
            "SELECT count(pg_notify({s}.wake_channel('{id}'), g::text)) \
             FROM generate_series(1, 1000) g"
        )],
    );
    let one_each: Vec<String> = (0..1000)
        .map(|i| format!("SELECT pg_notify({s}.wake_channel('{id}'), 'x{i}')"))
        .collect();
    let one_each: Vec<&str> = one_each.iter().map(String::as_str).collect();
    psql(&fleet.url, &one_each);
    assert!(
        wait_until(LONG, || counters(&env).wakeups == before.wakeups + 2000),
        "not every NOTIFY arrived: {:?}",
        counters(&env)
    );
    let flood = began.elapsed();
    let after = settled(&env);
    let claims = after.claims - before.claims;
    // Rounded up: the daemon and the test read their clocks at slightly different moments.
    let bound = 2 + (flood.as_millis() as u64).div_ceil(100);
    eprintln!("2000 NOTIFYs over {flood:?}: {claims} claims (bound {bound})");
    assert!(
        claims <= bound,
        "{claims} claims for 2000 NOTIFYs over {flood:?}; at most {bound} expected"
    );
    let out = fleet.ok(&["restart", "web", "--host", &id, "--wait", "30s"]);
    assert!(out.stdout.contains("\tdone\t"), "{out:?}");
}

/// The fleet periods are checked when set: one `tend:` line, exit 2, nothing stored.
#[test]
fn fleet_periods_validated() {
    let env = Env::new();
    env.ok(&["config", "set", "fleet.heartbeat_every", "20s"]);
    for bad in ["0", "500ms", "2h", "soon", "-1s", "99999999999"] {
        for key in ["fleet.sweep_every", "fleet.heartbeat_every"] {
            let out = env.tend(&["config", "set", key, bad]);
            assert_eq!(out.code, 2, "{key} {bad}: {out:?}");
            assert!(out.stderr.starts_with("tend: "), "{out:?}");
            assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
        }
    }
    assert_eq!(
        env.ok(&["config", "get", "fleet.heartbeat_every"])
            .stdout
            .trim(),
        "20s"
    );
    assert_eq!(
        env.tend(&["config", "get", "fleet.sweep_every"])
            .stdout
            .trim(),
        ""
    );
}
