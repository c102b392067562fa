//! PostgreSQL control end to end: a real server, real NOTIFYs (from psql and from
//! `tend notify`), the real daemon acting on them, signed payloads, TLS, and reconnection
//! after the server restarts.
//!
//! Most tests use the run's shared server, each on a channel of its own: the one
//! `TEND_TEST_DATABASE_URL` names, else `postgres://postgres@127.0.0.1:5432/test` if a
//! server answers there, else a throwaway cluster the run starts itself. Tests that stop
//! the server or change its TLS setup run a private cluster, stopped and removed on drop.
//! Both kinds of cluster run as the current user (as root: the `postgres` OS user); see
//! [`server`]. Only without any PostgreSQL server programs do these tests fail, saying
//! what to install.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::util::*;
use server::{give_to_server, shared_url, Cluster};

mod fleet;
mod fleet_roles;
mod server;

/// Deadline for anything the daemon does in answer to a notification.
const LONG: Duration = Duration::from_secs(30);
/// Deadline for the listener to come back after the server does: the reconnect backoff
/// is capped at 2 s (jittered), plus a connect; generous for a loaded machine.
const RECONNECT: Duration = Duration::from_secs(60);

/// A unique number within this test process (channels, fences, ports).
fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A channel no other test (in this or another test process) listens on.
fn new_channel() -> String {
    format!("t_{}_{}", std::process::id(), unique())
}

/// A string as an SQL literal (standard_conforming_strings is on since PostgreSQL 9.1).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs `psql` against `url` with `commands` (one `-c` each, in one session), unaligned
/// and tuples-only; asserts it succeeded and returns its stdout.
fn psql(url: &str, commands: &[&str]) -> String {
    let out = try_psql(url, commands);
    assert_eq!(
        out.code, 0,
        "psql {commands:?} failed\nstdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    out.stdout
}

fn try_psql(url: &str, commands: &[&str]) -> Out {
    let mut c = Command::new(server::psql());
    c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
    for cmd in commands {
        c.arg("-c").arg(cmd);
    }
    run(c)
}

/// A server URL plus this test's channel.
struct Pg {
    url: String,
    chan: String,
}

impl Pg {
    /// The shared server, on a fresh channel.
    fn shared() -> Pg {
        Pg {
            url: shared_url(),
            chan: new_channel(),
        }
    }

    /// `NOTIFY chan, 'payload'` (or a bare `NOTIFY chan` for an empty payload) from psql;
    /// returns the backend pid that sent it.
    fn notify(&self, payload: &str) -> i32 {
        let notify = if payload.is_empty() {
            format!("NOTIFY {}", self.chan)
        } else {
            format!("NOTIFY {}, {}", self.chan, literal(payload))
        };
        backend_pid(&psql(&self.url, &["SELECT pg_backend_pid()", &notify]))
    }

    /// `SELECT pg_notify('chan', 'payload')` from psql; returns the backend pid.
    fn pg_notify(&self, payload: &str) -> i32 {
        let select = format!(
            "SELECT pg_notify({}, {})",
            literal(&self.chan),
            literal(payload)
        );
        backend_pid(&psql(&self.url, &["SELECT pg_backend_pid()", &select]))
    }

    /// The daemon flags that point it at this server and channel.
    fn daemon_args(&self) -> Vec<String> {
        vec![
            "--postgres".into(),
            self.url.clone(),
            "--channel".into(),
            self.chan.clone(),
        ]
    }
}

fn backend_pid(stdout: &str) -> i32 {
    stdout
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no backend pid in psql output {stdout:?}"))
}

/// `tend daemon EXTRA...`; asserts it started.
fn start_daemon(env: &Env, extra: &[String]) {
    let mut args = vec!["daemon"];
    args.extend(extra.iter().map(String::as_str));
    let out = env.ok(&args);
    assert!(out.stdout.starts_with("daemon: started"), "{out:?}");
}

/// `tend daemon EXTRA...` then waits until it LISTENs (postgres.state `connected`).
fn start_listening(env: &Env, extra: &[String]) -> Value {
    start_daemon(env, extra);
    wait_pg(env, LONG, "connected", |p| p["state"] == "connected")
}

fn daemon_json(env: &Env) -> Value {
    let out = env.tend(&["daemon", "status", "--json"]);
    assert!(out.code == 0 || out.code == 3, "{out:?}");
    serde_json::from_str(&out.stdout).expect("daemon status --json is JSON")
}

/// The `postgres` object of `tend daemon status --json`.
fn pg_status(env: &Env) -> Value {
    daemon_json(env)["postgres"].clone()
}

/// Waits until the daemon's `postgres` status satisfies `cond`; returns it.
fn wait_pg(env: &Env, deadline: Duration, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(deadline, || {
        last = pg_status(env);
        cond(&last)
    });
    assert!(
        ok,
        "postgres status never became {what}; last: {last}\ndaemon.log:\n{}",
        env.daemon_log()
    );
    last
}

#[derive(Clone, Debug, PartialEq)]
struct Ev {
    service: String,
    kind: String,
    detail: String,
}

/// Every event (all services, and `-` for rejected payloads), oldest first.
fn events(env: &Env) -> Vec<Ev> {
    let out = env.ok(&["events", "--json", "-n", "100000"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("events --json is JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|e| Ev {
            service: e["service"].as_str().unwrap().to_string(),
            kind: e["kind"].as_str().unwrap().to_string(),
            detail: e["detail"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn of_kind(env: &Env, kind: &str) -> Vec<Ev> {
    events(env).into_iter().filter(|e| e.kind == kind).collect()
}

/// Waits until there are `n` `rejected` events; returns the last one.
fn wait_rejected(env: &Env, n: usize) -> Ev {
    let mut got = Vec::new();
    let ok = wait_until(LONG, || {
        got = of_kind(env, "rejected");
        got.len() >= n
    });
    assert!(
        ok,
        "expected {n} rejected events, got {got:#?}\ndaemon.log:\n{}",
        env.daemon_log()
    );
    assert_eq!(got.len(), n, "one payload, one rejection: {got:#?}");
    got.pop().unwrap()
}

/// Waits until `name` has no running instance and `old` is gone.
fn wait_stopped(env: &Env, name: &str, old: i32) {
    let ok = wait_until(LONG, || env.pid(name).is_none() && !alive(old));
    assert!(
        ok,
        "{name} was not stopped; events: {:#?}\ndaemon.log:\n{}",
        events(env),
        env.daemon_log()
    );
}

/// Sends `start fence-N` (an unknown service) and waits for its rejection. The daemon
/// carries out notifications one at a time in arrival order, so once the fence is
/// rejected every notification sent before it has been dealt with: what they should
/// not have done can then be checked without guessing a grace period.
fn fence(env: &Env, pg: &Pg) {
    let name = format!("fence-{}", unique());
    pg.notify(&format!("start {name}"));
    let ok = wait_until(LONG, || {
        of_kind(env, "rejected").iter().any(|e| e.service == name)
    });
    assert!(
        ok,
        "fence {name} was not rejected; events: {:#?}\ndaemon.log:\n{}",
        events(env),
        env.daemon_log()
    );
}

/// Events other than fences.
fn without_fences(evs: Vec<Ev>) -> Vec<Ev> {
    evs.into_iter()
        .filter(|e| !e.service.starts_with("fence-"))
        .collect()
}

/// Sends `sig` to `pid`, a process this test started through tend.
fn kill(pid: i32, sig: i32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) touches no memory; the pid belongs to this test.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signed envelope as the daemon expects it:
/// `sig1 <ts> <nonce> <hex HMAC-SHA256(key, "sig1 <ts> <nonce> <payload>")> <payload>`.
/// The nonce is fixed here so a test can send the very same envelope twice (a replay).
fn sign(key: &[u8], ts: i64, payload: &str) -> String {
    let nonce = "00112233445566ff";
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key size");
    mac.update(format!("sig1 {ts} {nonce} {payload}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sig1 {ts} {nonce} {hex} {payload}")
}

/// A running `web` fixture service; returns its pid.
fn start_web(env: &Env) -> i32 {
    env.add_fixture("web", &[], &["--marker", "web"]);
    env.ok(&["start", "web"]);
    env.pid("web").expect("web is running")
}

/// Runs openssl with `args` in `dir`; asserts it worked.
fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new("openssl");
    c.args(args).current_dir(dir).stdin(Stdio::null());
    let out = run(c);
    assert_eq!(out.code, 0, "openssl {args:?} failed: {out:?}");
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// A text-form `NOTIFY chan, 'restart web'` from psql restarts the service (new pid, old
/// one gone); `tend events` shows a `notify` event naming psql's backend pid, followed by
/// the restart's stop and start; the status counts the notification.
#[test]
fn notify_text_restarts() {
    let pg = Pg::shared();
    let env = Env::new();
    let old = start_web(&env);
    let status = start_listening(&env, &pg.daemon_args());
    assert_eq!(status["channel"], pg.chan.as_str(), "{status}");
    assert_eq!(status["received"], 0, "{status}");
    assert!(status["last_error"].is_null(), "{status}");

    let backend = pg.notify("restart web");
    let new = env.wait_new_pid("web", old);
    assert!(!alive(old), "the old instance is gone");
    assert!(alive(new));

    let web: Vec<Ev> = events(&env)
        .into_iter()
        .filter(|e| e.service == "web")
        .collect();
    let want = format!("restart requested by notify (backend pid {backend})");
    let at = web
        .iter()
        .position(|e| e.kind == "notify" && e.detail == want)
        .unwrap_or_else(|| panic!("no notify event {want:?} in {web:#?}"));
    let after: Vec<&str> = web[at + 1..].iter().map(|e| e.kind.as_str()).collect();
    let stop = after.iter().position(|k| *k == "stop");
    let start = after.iter().position(|k| *k == "start");
    assert!(
        matches!((stop, start), (Some(a), Some(b)) if a < b),
        "expected stop then start after the notify event: {web:#?}"
    );
    assert_eq!(pg_status(&env)["received"], 1);
}

/// The JSON forms: `{"action":"restart","service":"web"}` sent with `pg_notify`, and a
/// `services` list restarting two services at once.
#[test]
fn notify_json_restarts() {
    let pg = Pg::shared();
    let env = Env::new();
    let web = start_web(&env);
    env.add_fixture("api", &[], &["--marker", "api"]);
    env.ok(&["start", "api"]);
    let api = env.pid("api").unwrap();
    start_listening(&env, &pg.daemon_args());

    pg.pg_notify(r#"{"action":"restart","service":"web"}"#);
    let web2 = env.wait_new_pid("web", web);
    fence(&env, &pg);
    assert_eq!(env.pid("api"), Some(api), "only web was named");

    pg.pg_notify(r#"{"action":"restart","services":["web","api"]}"#);
    env.wait_new_pid("web", web2);
    env.wait_new_pid("api", api);
    assert!(of_kind(&env, "rejected")
        .iter()
        .all(|e| e.service.starts_with("fence-")));
}

/// With `--host-id h1`, payloads for another host (`web@h2`, JSON `"host":"h2"`) are
/// ignored quietly (no event, nothing done); those for h1 are obeyed.
#[test]
fn host_targeting() {
    let pg = Pg::shared();
    let env = Env::new();
    let pid = start_web(&env);
    let mut args = pg.daemon_args();
    args.extend(["--host-id".into(), "h1".into()]);
    let status = start_listening(&env, &args);
    assert_eq!(status["host_id"], "h1", "{status}");
    let before = events(&env);

    pg.notify("stop web@h2");
    pg.pg_notify(r#"{"action":"stop","service":"web","host":"h2"}"#);
    pg.pg_notify(r#"{"action":"stop","services":["web@h2"],"host":"h1"}"#);
    fence(&env, &pg);
    assert_eq!(env.pid("web"), Some(pid), "payloads for h2 were obeyed");
    assert!(alive(pid));
    assert_eq!(
        without_fences(events(&env)),
        before,
        "payloads for another host leave no trace"
    );
    assert_eq!(pg_status(&env)["received"], 4, "all four were received");

    pg.notify("stop web@h1");
    wait_stopped(&env, "web", pid);

    pg.pg_notify(r#"{"action":"start","service":"web","host":"h1"}"#);
    let ok = wait_until(LONG, || env.pid("web").is_some_and(alive));
    assert!(ok, "JSON start for h1 not obeyed: {:#?}", events(&env));
}

/// Everything the daemon must refuse is recorded as a `rejected` event (service `-` for
/// payloads that do not parse, else the unknown name) and not acted on; the daemon keeps
/// answering and still obeys a valid payload afterwards.
#[test]
fn rejections() {
    let pg = Pg::shared();
    let env = Env::new();
    let pid = start_web(&env);
    start_listening(&env, &pg.daemon_args());
    let dpid = env.daemon_pid().expect("daemon pid");

    let cases: &[(&str, &str, &str)] = &[
        // (payload, service of the rejected event, text in its detail)
        ("delete web", "-", r#"unknown action "delete""#),
        (
            "restart nosuch",
            "nosuch",
            "restart of unknown service nosuch",
        ),
        ("restart ../x", "-", r#"invalid service name "../x""#),
        (r#"{"action":"restart","service":"#, "-", "malformed JSON"),
        (
            r#"{"action":"restart","service":"web","command":"rm -rf /"}"#,
            "-",
            "malformed JSON",
        ),
        ("", "-", "empty payload"),
        ("   ", "-", "empty payload"),
        ("start /usr/bin/sleep", "-", "invalid service name"),
        (
            r#"{"action":"start","service":"/bin/sh"}"#,
            "-",
            "invalid service name",
        ),
        ("restart web@", "-", "invalid host"),
        ("signal web NOPE", "-", "signal"),
        ("restart", "-", "no service named"),
        ("restart web; stop web", "-", "invalid service name"),
    ];
    for (i, (payload, service, detail)) in cases.iter().enumerate() {
        let backend = pg.notify(payload);
        let ev = wait_rejected(&env, i + 1);
        assert_eq!(&ev.service, service, "payload {payload:?}: {ev:?}");
        assert!(
            ev.detail.contains(detail)
                && ev
                    .detail
                    .contains(&format!("notify (backend pid {backend})")),
            "payload {payload:?}: detail {:?} should mention {detail:?}",
            ev.detail
        );
    }

    assert_eq!(env.pid("web"), Some(pid), "a rejected payload was acted on");
    assert!(alive(pid));
    assert!(
        of_kind(&env, "notify").is_empty(),
        "nothing was accepted: {:#?}",
        events(&env)
    );
    let j = daemon_json(&env);
    assert_eq!(j["running"], true, "{j}");
    assert_eq!(j["pid"], dpid, "{j}");
    assert_eq!(j["postgres"]["state"], "connected", "{j}");
    assert_eq!(j["postgres"]["received"], cases.len(), "{j}");

    // Still obeying.
    pg.notify("restart web");
    env.wait_new_pid("web", pid);
}

/// `signal web HUP` (text and JSON) sends SIGHUP to the main process, which stays the
/// same process; `tend signal HUP web` does the same without PostgreSQL.
#[test]
fn signal_action() {
    let pg = Pg::shared();
    let env = Env::new();
    env.ok(&[
        "add",
        "web",
        "--",
        "sh",
        "-c",
        "trap 'echo got-hup' HUP; echo ready; while :; do sleep 0.1; done",
    ]);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();
    let log = env.log_path("web");
    assert!(
        wait_until(LONG, || read(&log).contains("ready")),
        "the trap is set before any HUP is sent"
    );
    start_listening(&env, &pg.daemon_args());
    let hups = || read(&log).matches("got-hup").count();

    let backend = pg.notify("signal web HUP");
    assert!(
        wait_until(LONG, || hups() == 1),
        "no HUP seen: {:?}\n{:#?}",
        read(&log),
        events(&env)
    );
    assert_eq!(env.pid("web"), Some(pid));
    assert!(alive(pid));
    let want = format!("signal HUP requested by notify (backend pid {backend})");
    assert!(
        of_kind(&env, "notify").iter().any(|e| e.detail == want),
        "no notify event {want:?}: {:#?}",
        events(&env)
    );

    pg.pg_notify(r#"{"action":"signal","service":"web","signal":"SIGHUP"}"#);
    assert!(wait_until(LONG, || hups() == 2), "{:?}", read(&log));

    env.ok(&["signal", "HUP", "web"]);
    assert!(wait_until(LONG, || hups() == 3), "{:?}", read(&log));
    assert_eq!(env.pid("web"), Some(pid));
    assert!(alive(pid));
}

/// `tend notify` round trip with the settings stored by `tend config` (shared by the CLI
/// and the daemon): the message names URL, channel and payload; `--host` targets one
/// daemon.
#[test]
fn tend_notify_round_trip() {
    let pg = Pg::shared();
    let env = Env::new();
    let pid = start_web(&env);
    env.ok(&["config", "set", "postgres.url", &pg.url]);
    env.ok(&["config", "set", "postgres.channel", &pg.chan]);
    env.ok(&["config", "set", "postgres.host_id", "h1"]);
    let status = start_listening(&env, &[]);
    assert_eq!(status["url"], pg.url.as_str(), "{status}");
    assert_eq!(status["channel"], pg.chan.as_str(), "{status}");
    assert_eq!(status["host_id"], "h1", "{status}");

    let out = env.ok(&["notify", "restart", "web"]);
    assert_eq!(
        out.stdout,
        format!("notified {} on channel {}: restart web\n", pg.url, pg.chan)
    );
    let pid2 = env.wait_new_pid("web", pid);
    assert!(
        of_kind(&env, "notify")
            .iter()
            .any(|e| e.service == "web" && e.detail.starts_with("restart requested by notify")),
        "{:#?}",
        events(&env)
    );

    let out = env.ok(&["notify", "restart", "web", "--host", "h2"]);
    assert!(out.stdout.ends_with(": restart web@h2\n"), "{}", out.stdout);
    fence(&env, &pg);
    assert_eq!(
        env.pid("web"),
        Some(pid2),
        "a notify for h2 was obeyed by h1"
    );

    let out = env.ok(&["notify", "RESTART", "web", "--host", "h1"]);
    assert!(out.stdout.ends_with(": restart web@h1\n"), "{}", out.stdout);
    env.wait_new_pid("web", pid2);
}

/// With `--notify-key-file`, only correctly signed, fresh, first-seen payloads are
/// obeyed: `tend notify` with the key works; unsigned, forged (envelope fine, HMAC
/// wrong), replayed and stale payloads are rejected and not acted on.
#[test]
fn signed_payloads() {
    let pg = Pg::shared();
    let env = Env::new();
    let key = b"k3y-for-tend-notify-tests-0123456789";
    let key_file = env.work().join("notify.key");
    // Surrounding whitespace is not part of the key.
    std::fs::write(&key_file, [&key[..], b"\n"].concat()).unwrap();
    let key_path = key_file.to_str().unwrap();
    let pid = start_web(&env);
    let mut args = pg.daemon_args();
    args.extend(["--notify-key-file".into(), key_path.into()]);
    start_listening(&env, &args);

    // tend notify signs with the same key.
    let out = env.ok(&[
        "notify",
        "restart",
        "web",
        "--postgres",
        &pg.url,
        "--channel",
        &pg.chan,
        "--notify-key-file",
        key_path,
    ]);
    assert!(out.stdout.ends_with(": restart web\n"), "{}", out.stdout);
    let pid = env.wait_new_pid("web", pid);

    // Unsigned.
    pg.notify("restart web");
    let ev = wait_rejected(&env, 1);
    assert_eq!(ev.service, "-");
    assert!(ev.detail.contains("unsigned payload"), "{ev:?}");

    // Forged: a well-formed envelope with a wrong HMAC, and one signed with another key.
    pg.notify(&format!(
        "sig1 {} 00112233445566ff {} restart web",
        now_secs(),
        "0".repeat(64)
    ));
    let ev = wait_rejected(&env, 2);
    assert!(ev.detail.contains("bad signature"), "{ev:?}");
    pg.notify(&sign(
        b"not-the-key-at-all-0123456789",
        now_secs(),
        "restart web",
    ));
    let ev = wait_rejected(&env, 3);
    assert!(ev.detail.contains("bad signature"), "{ev:?}");
    // The signature covers the payload: a signed `start web` turned into `stop web`.
    let signed = sign(key, now_secs(), "start web");
    pg.notify(&signed.replace(" start web", " stop web"));
    let ev = wait_rejected(&env, 4);
    assert!(ev.detail.contains("bad signature"), "{ev:?}");

    // Stale: correctly signed two minutes ago.
    pg.notify(&sign(key, now_secs() - 120, "restart web"));
    let ev = wait_rejected(&env, 5);
    assert!(ev.detail.contains("stale"), "{ev:?}");
    assert_eq!(env.pid("web"), Some(pid), "a refused payload was acted on");

    // Replay: the same signed payload twice; the first is obeyed, the second refused.
    // (JSON, so it cannot equal what `tend notify` signed above within the same second.)
    let signed = sign(key, now_secs(), r#"{"action":"restart","service":"web"}"#);
    pg.notify(&signed);
    let pid2 = env.wait_new_pid("web", pid);
    pg.notify(&signed);
    let ev = wait_rejected(&env, 6);
    assert!(ev.detail.contains("replayed payload"), "{ev:?}");
    assert_eq!(env.pid("web"), Some(pid2), "a replay was acted on");
    assert!(alive(pid2));

    // A signed payload still has to parse.
    pg.notify(&sign(key, now_secs(), "delete web"));
    let ev = wait_rejected(&env, 7);
    assert!(ev.detail.contains("malformed payload"), "{ev:?}");
    assert_eq!(env.pid("web"), Some(pid2));
}

/// On a private cluster: stopping the server turns the listener to `reconnecting` with
/// the error; meanwhile local supervision goes on (a killed service is restarted and the
/// CLI works); when the server is back the listener reconnects and obeys NOTIFY again.
#[test]
fn reconnects_after_server_restart() {
    let cluster = Cluster::new(&[]);
    let pg = Pg {
        url: cluster.url("disable"),
        chan: new_channel(),
    };
    let env = Env::new();
    let pid = start_web(&env);
    start_listening(&env, &pg.daemon_args());

    cluster.stop_fast();
    let status = wait_pg(&env, LONG, "reconnecting with an error", |p| {
        p["state"] == "reconnecting" && p["last_error"].is_string()
    });
    assert!(
        !status["last_error"].as_str().unwrap().is_empty(),
        "{status}"
    );

    // Local supervision does not depend on PostgreSQL.
    kill(pid, libc::SIGKILL);
    let pid2 = env.wait_new_pid("web", pid);
    assert_ne!(pg_status(&env)["state"], "connected");
    env.ok(&["status", "web"]);

    cluster.start();
    wait_pg(&env, RECONNECT, "connected again", |p| {
        p["state"] == "connected"
    });
    pg.notify("restart web");
    env.wait_new_pid("web", pid2);
}

/// TLS on a private cluster whose certificate is signed by a test CA: `sslmode=require`
/// without that CA fails verification (and says so); with `--ca-file ca.pem` it connects
/// over TLS (as `pg_stat_ssl` confirms) and obeys NOTIFY; `sslmode=prefer` without the CA
/// falls back to plain TCP, never unverified TLS.
#[test]
fn tls_ca_signed_certificate() {
    let certs = tls_files();
    let ca = certs.path().join("ca.pem");
    tls_scenario(certs.path(), &ca);
}

/// The same with the self-signed server certificate PostgreSQL's documentation shows how
/// to make (`openssl req -x509 ...`, which OpenSSL 3 marks CA:TRUE), trusted with
/// `--ca-file` naming that certificate itself, as libpq's `sslrootcert` allows.
#[test]
fn tls_self_signed_certificate() {
    let certs = tempfile::tempdir().expect("cert dir");
    openssl(
        certs.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ],
    );
    give_server_files(certs.path());
    let crt = certs.path().join("server.crt");
    tls_scenario(certs.path(), &crt);
}

/// Runs a cluster with `server.crt`/`server.key` from `certs`, and checks the daemon's
/// sslmode handling without and with `--ca-file ca`.
fn tls_scenario(certs: &Path, ca: &Path) {
    let crt = certs.join("server.crt");
    let key = certs.join("server.key");
    let cluster = Cluster::new(&[
        "ssl = on".to_string(),
        format!("ssl_cert_file = '{}'", crt.display()),
        format!("ssl_key_file = '{}'", key.display()),
    ]);
    let chan = new_channel();
    let admin = Pg {
        url: cluster.url("disable"),
        chan: chan.clone(),
    };
    let env = Env::new();
    let pid = start_web(&env);
    let daemon = |sslmode: &str, ca_file: Option<&Path>| {
        let mut args = vec![
            "--postgres".to_string(),
            cluster.url(sslmode),
            "--channel".into(),
            chan.clone(),
        ];
        if let Some(ca) = ca_file {
            args.extend(["--ca-file".into(), ca.to_str().unwrap().into()]);
        }
        start_daemon(&env, &args);
    };
    // Whether the daemon's connection uses TLS ("t"/"f"), once it is the only one.
    let daemon_ssl = |want: &str| {
        let mut got = String::new();
        let ok = wait_until(LONG, || {
            got = psql(
                &admin.url,
                &[
                    "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                   WHERE a.application_name LIKE 'tend daemon %'",
                ],
            );
            got.trim() == want
        });
        assert!(ok, "daemon connection ssl: {got:?}, want {want:?}");
    };

    // require, without the CA: refused, and the error says why.
    daemon("require", None);
    let status = wait_pg(&env, LONG, "failed with an error", |p| {
        p["last_error"].is_string()
    });
    assert_ne!(status["state"], "connected", "{status}");
    let err = status["last_error"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        err.contains("certificate") || err.contains("verif"),
        "the error should be about the certificate: {status}"
    );
    env.ok(&["daemon", "stop"]);

    // require, with the CA: verified TLS, and it obeys.
    daemon("require", Some(ca));
    wait_pg(&env, LONG, "connected", |p| p["state"] == "connected");
    daemon_ssl("t");
    admin.notify("restart web");
    env.wait_new_pid("web", pid);
    env.ok(&["daemon", "stop"]);

    // prefer, without the CA: the certificate cannot be verified, so plain TCP.
    daemon("prefer", None);
    wait_pg(&env, LONG, "connected", |p| p["state"] == "connected");
    daemon_ssl("f");
}

/// Makes `server.crt` and `server.key` in `dir` readable by the server (as root: the
/// postgres user), the key private to it, as PostgreSQL requires.
fn give_server_files(dir: &Path) {
    give_to_server(dir);
    for f in ["server.crt", "server.key"] {
        give_to_server(&dir.join(f));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// A test CA (`ca.pem`) and a server certificate it signed for 127.0.0.1 and localhost
/// (`server.crt`, `server.key`), in a directory the server can read,
/// its key private to it.
fn tls_files() -> tempfile::TempDir {
    let certs = tempfile::tempdir().expect("cert dir");
    let d = certs.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=tend test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
         basicConstraints=critical,CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    give_server_files(d);
    certs
}

/// Without a reachable server: `tend notify` fails with one `tend: postgres: ...` line
/// and exit 1; a daemon still starts, reports `reconnecting` with the error, and keeps
/// supervising.
#[test]
fn server_unreachable() {
    let url = "postgres://postgres@127.0.0.1:1/test";
    let env = Env::new();
    let out = env.tend(&["notify", "restart", "web", "--postgres", url]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("tend: postgres: "),
        "{out:?}"
    );

    let pid = start_web(&env);
    start_daemon(&env, &["--postgres".into(), url.into()]);
    let status = wait_pg(&env, LONG, "reconnecting with an error", |p| {
        p["state"] == "reconnecting" && p["last_error"].is_string()
    });
    assert_eq!(status["url"], url, "{status}");
    kill(pid, libc::SIGKILL);
    env.wait_new_pid("web", pid);
    assert_eq!(daemon_json(&env)["running"], true);
}

/// A password in the URL is never shown: not by `config set/get/list`, not by `daemon
/// status` (human or JSON), not in `tend notify`'s error, not in the daemon's log.
#[test]
fn password_never_printed() {
    let env = Env::new();
    let url = "postgres://app:hunter2@127.0.0.1:1/x";
    let masked = "postgres://app:****@127.0.0.1:1/x";
    let out = env.ok(&["config", "set", "postgres.url", url]);
    assert_eq!(out.stdout, format!("postgres.url = {masked}\n"));
    let out = env.ok(&["config", "get", "postgres.url"]);
    assert_eq!(out.stdout, format!("{masked}\n"));
    let out = env.ok(&["config", "list"]);
    assert!(
        out.stdout.contains(&format!("postgres.url = {masked}\n")),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);

    let out = env.tend(&["notify", "restart", "web"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);

    start_daemon(&env, &[]);
    let status = wait_pg(&env, LONG, "reconnecting with an error", |p| {
        p["state"] == "reconnecting" && p["last_error"].is_string()
    });
    assert_eq!(status["url"], masked, "{status}");
    for args in [&["daemon", "status"][..], &["daemon", "status", "--json"]] {
        let out = env.ok(args);
        assert!(out.stdout.contains(masked), "{args:?}: {}", out.stdout);
        assert!(
            !out.stdout.contains("hunter2") && !out.stderr.contains("hunter2"),
            "{args:?}: {out:?}"
        );
    }
    let log = env.daemon_log();
    assert!(!log.contains("hunter2"), "daemon.log:\n{log}");
}

/// A password given with `tend daemon --postgres URL` does not stay readable by every
/// local user in the background daemon's command line (`/proc/PID/cmdline`, `ps`) for
/// as long as it runs.
#[test]
fn password_not_in_daemon_command_line() {
    let env = Env::new();
    start_daemon(
        &env,
        &[
            "--postgres".into(),
            "postgres://app:hunter2@127.0.0.1:1/x".into(),
        ],
    );
    let dpid = env.daemon_pid().expect("daemon pid");
    let cmdline = std::fs::read(format!("/proc/{dpid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        !cmdline.contains("hunter2"),
        "the daemon's command line shows the password: {cmdline}"
    );
}

/// With a notify key, every `tend notify` that reports success is obeyed, even several
/// in a row: two identical commands sent within the same second are two commands, not a
/// replay of one. (Three in quick succession: at least two share a second.)
#[test]
fn signed_notify_repeated_quickly() {
    let pg = Pg::shared();
    let env = Env::new();
    let key_file = env.work().join("notify.key");
    std::fs::write(&key_file, "k3y-for-tend-notify-tests-0123456789").unwrap();
    let key_path = key_file.to_str().unwrap();
    start_web(&env);
    let mut args = pg.daemon_args();
    args.extend(["--notify-key-file".into(), key_path.into()]);
    start_listening(&env, &args);

    for _ in 0..3 {
        env.ok(&[
            "notify",
            "restart",
            "web",
            "--postgres",
            &pg.url,
            "--channel",
            &pg.chan,
            "--notify-key-file",
            key_path,
        ]);
    }
    let ok = wait_until(LONG, || {
        let evs = events(&env);
        let done = |k: &str| evs.iter().filter(|e| e.kind == k).count();
        done("notify") + done("rejected") >= 3
    });
    assert!(ok, "not all three were handled: {:#?}", events(&env));
    assert!(
        of_kind(&env, "rejected").is_empty(),
        "a `tend notify` that reported success was refused: {:#?}",
        events(&env)
    );
    assert_eq!(of_kind(&env, "notify").len(), 3, "{:#?}", events(&env));
}

/// A flood of rejected payloads (500 distinct ones, sent in one transaction) becomes one
/// `rejected` event and one daemon log line per burst, with the count, instead of 500 of
/// each pushing real events out of `tend events`.
#[test]
fn rejected_flood_is_coalesced() {
    let pg = Pg::shared();
    let env = Env::new();
    let pid = start_web(&env);
    start_listening(&env, &pg.daemon_args());
    psql(
        &pg.url,
        &[&format!(
            "SELECT count(pg_notify({}, 'bogus ' || g)) FROM generate_series(1, 500) g",
            literal(&pg.chan)
        )],
    );
    let count = |e: &Ev| -> u64 {
        e.detail
            .split_once(" payloads rejected")
            .map_or(1, |(n, _)| n.parse().expect("a count"))
    };
    let mut got = Vec::new();
    let ok = wait_until(LONG, || {
        got = of_kind(&env, "rejected");
        got.iter().map(count).sum::<u64>() >= 500
    });
    assert!(
        ok,
        "rejections: {got:#?}\ndaemon.log:\n{}",
        env.daemon_log()
    );
    assert_eq!(got.iter().map(count).sum::<u64>(), 500, "{got:#?}");
    // One burst (a pause of a second mid-flood would split it; a few are tolerated).
    assert!(
        got.len() <= 3,
        "{} events for one burst: {got:#?}",
        got.len()
    );
    assert!(
        got[0].detail.contains("first: notify (backend pid "),
        "{got:#?}"
    );
    let log = env.daemon_log();
    let lines = log.lines().filter(|l| l.contains("bogus")).count();
    assert_eq!(lines, got.len(), "one log line per burst:\n{log}");
    // The real history is still there.
    assert!(events(&env).iter().any(|e| e.kind == "start"));
    assert_eq!(env.pid("web"), Some(pid), "nothing rejected was acted on");
}

/// `tend doctor` connects with the configured settings and asks the server whether the
/// connection is encrypted: verified TLS with `require` and the CA, plain with `disable`,
/// and a FAIL (exit 1) once the server is gone.
#[test]
fn doctor_checks_postgres_reachability_and_tls() {
    let certs = tempfile::tempdir().expect("cert dir");
    openssl(
        certs.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ],
    );
    give_server_files(certs.path());
    let crt = certs.path().join("server.crt");
    let cluster = Cluster::new(&[
        "ssl = on".to_string(),
        format!("ssl_cert_file = '{}'", crt.display()),
        format!(
            "ssl_key_file = '{}'",
            certs.path().join("server.key").display()
        ),
    ]);
    let env = Env::new();
    let postgres_line = |out: &Out| -> String {
        out.stdout
            .lines()
            .find(|l| l[6..].starts_with("postgres"))
            .unwrap_or_else(|| panic!("no postgres check: {out:?}"))
            .to_string()
    };
    let out = env.ok(&["doctor"]);
    assert!(postgres_line(&out).contains("not configured"), "{out:?}");

    env.ok(&["config", "set", "postgres.url", &cluster.url("require")]);
    env.ok(&["config", "set", "postgres.ca_file", crt.to_str().unwrap()]);
    let out = env.ok(&["doctor"]);
    let line = postgres_line(&out);
    assert!(
        line.starts_with("ok") && line.contains("TLS in use"),
        "{line}"
    );

    env.ok(&["config", "set", "postgres.url", &cluster.url("disable")]);
    let line = postgres_line(&env.ok(&["doctor"]));
    assert!(
        line.starts_with("ok") && line.contains("without TLS"),
        "{line}"
    );

    drop(cluster);
    let out = env.tend(&["doctor", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let pg = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "postgres")
        .unwrap();
    assert_eq!(pg["status"], "fail", "{pg}");
}
