//! The daemon's HTTP API and `tend metrics`, with real daemons, real services and real
//! connections: what it answers matches `tend list --json`, the metrics parse with a real
//! Prometheus parser, a followed event stream carries a restart as it happens, writes
//! need the token, and hostile clients (a thousand idle connections, a 10 MB request)
//! do not keep the daemon from supervising.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

const LONG: Duration = Duration::from_secs(30);

/// The API's socket in the test's work directory.
fn socket(env: &Env) -> PathBuf {
    env.work().join("api.sock")
}

/// Starts the daemon with its API on a Unix socket (no port to collide with).
fn daemon_with_api(env: &Env) {
    let sock = socket(env);
    let out = env.ok(&["daemon", "--http", sock.to_str().unwrap()]);
    assert!(out.stdout.contains("daemon: started"), "{out:?}");
}

/// An HTTP answer: status, headers (lowercase names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// One request over the API's socket; the daemon closes the connection after answering.
fn request(env: &Env, method: &str, path: &str, headers: &[&str]) -> Answer {
    let mut s = UnixStream::connect(socket(env)).expect("connect to the API");
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: tend\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    parse_answer(&raw)
}

fn get(env: &Env, path: &str) -> Answer {
    request(env, "GET", path, &[])
}

/// The Python interpreter with `prometheus_client` (the distribution's package), if any.
fn prometheus_parser() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Parses `text` with `prometheus_client`'s parser and returns every sample as
/// `(name, labels, value)`: a text the real parser refuses fails the test.
fn parse_metrics(py: &str, text: &str) -> Vec<(String, serde_json::Map<String, Value>, f64)> {
    let script = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new(py)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap().to_string(),
                s[1].as_object().unwrap().clone(),
                s[2].as_f64().unwrap(),
            )
        })
        .collect()
}

fn sample(
    samples: &[(String, serde_json::Map<String, Value>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

/// Three services: one running, one that exited with code 3 (seen by the daemon, its
/// parent), one never started. `tend metrics` without and beside the daemon, and `GET
/// /metrics`, parse with the real parser and carry the values `tend list --json` shows.
#[test]
fn metrics_parse_and_carry_what_list_shows() {
    let Some(py) = prometheus_parser() else {
        not_run("needs Python's prometheus_client (Debian: python3-prometheus-client)");
        return;
    };
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    env.add_fixture(
        "job",
        &["--restart", "never"],
        &["--exit-after", "10", "--exit-code", "3"],
    );
    env.add_fixture("idle", &[], &[]);
    env.ok(&["start", "web"]);

    let list: Value = serde_json::from_str(&env.ok(&["list", "--json"]).stdout).unwrap();
    let web = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap()
        .clone();
    let started: f64 = humantime::parse_rfc3339(web["started_at"].as_str().unwrap())
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();

    let check = |text: &str, daemon: bool| {
        let s = parse_metrics(py, text);
        assert_eq!(
            sample(&s, "tend_service_up", &[("service", "web")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&s, "tend_service_up", &[("service", "idle")]),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &s,
                "tend_service_state",
                &[("service", "web"), ("state", "running")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &s,
                "tend_service_state",
                &[("service", "idle"), ("state", "stopped")]
            ),
            Some(1.0)
        );
        // The seconds `started_at` shows; the metric has the milliseconds too.
        let start = sample(&s, "tend_service_start_time_seconds", &[("service", "web")])
            .expect("start time of web");
        assert!((start - started).abs() < 1.0, "{start} vs {started}");
        assert!(sample(&s, "tend_service_cpu_seconds_total", &[("service", "web")]).is_some());
        assert!(
            sample(&s, "tend_service_memory_bytes", &[("service", "web")]).is_some_and(|b| b > 0.0)
        );
        assert_eq!(
            sample(&s, "tend_service_cpu_seconds_total", &[("service", "idle")]),
            None
        );
        assert_eq!(sample(&s, "tend_daemon_up", &[]), Some(daemon as u8 as f64));
        s
    };
    check(&env.ok(&["metrics"]).stdout, false);

    daemon_with_api(&env);
    env.start_brief(&["job"]);
    assert!(
        wait_until(LONG, || env.status_json("job")["last_exit"] == "code 3"),
        "{}",
        env.status_json("job")
    );
    let a = get(&env, "/metrics");
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let s = check(&a.body, true);
    assert_eq!(
        sample(&s, "tend_service_last_exit_code", &[("service", "job")]),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &s,
            "tend_service_state",
            &[("service", "job"), ("state", "stopped")]
        ),
        Some(1.0)
    );
    assert!(sample(&s, "tend_daemon_requests_total", &[("transport", "http")]).unwrap() >= 1.0);
    assert!(sample(&s, "tend_daemon_uptime_seconds", &[]).is_some());
    // `tend metrics` beside a daemon takes its counters.
    let s = check(&env.ok(&["metrics"]).stdout, true);
    assert!(sample(&s, "tend_daemon_requests_total", &[("transport", "socket")]).unwrap() >= 1.0);
    assert_eq!(
        sample(&s, "tend_service_last_exit_code", &[("service", "job")]),
        Some(3.0)
    );
    env.ok(&["daemon", "stop", "--all"]);
}

/// `/v1/services` is `tend list --json`, `/v1/services/NAME` is `status NAME --json`;
/// an unknown service is 404 with the CLI's error, a bad path 404, a wrong method 405.
#[test]
fn reads_answer_what_the_cli_prints() {
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    env.add_fixture("idle", &[], &[]);
    daemon_with_api(&env);
    env.ok(&["start", "web"]);

    let cli: Value = serde_json::from_str(&env.ok(&["list", "--json"]).stdout).unwrap();
    let api = get(&env, "/v1/services");
    assert_eq!(api.status, 200, "{api:?}");
    assert_eq!(api.header("content-type"), Some("application/json"));
    let strip = |mut v: Value| {
        // Uptime moves on between the two looks.
        for s in v.as_array_mut().into_iter().flatten() {
            s["uptime_secs"] = Value::Null;
            s["cgroup"] = Value::Null;
        }
        v
    };
    assert_eq!(strip(api.json()), strip(cli));

    let one = get(&env, "/v1/services/web").json();
    assert_eq!(one["name"], "web");
    assert_eq!(one["pid"], env.pid("web").unwrap());

    let missing = get(&env, "/v1/services/nope");
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(missing.json()["error"]["code"], 4);
    assert_eq!(get(&env, "/v1/services/..%2f").status, 404);
    assert_eq!(get(&env, "/nothing/here").status, 404);
    assert_eq!(request(&env, "DELETE", "/v1/services", &[]).status, 405);
    assert_eq!(get(&env, "/v1/events?limit=0").status, 400);
    assert_eq!(get(&env, "/v1/events?bogus=1").status, 400);

    let events = get(&env, "/v1/events?service=web").json();
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["service"], "web");
    // `since` answers what came after that event only.
    let after = get(
        &env,
        &format!("/v1/events?since={}", last["id"].as_i64().unwrap()),
    )
    .json();
    assert!(after
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["id"].as_i64() > last["id"].as_i64()));
    env.ok(&["daemon", "stop", "--all"]);
}

/// A client follows the events; `tend restart web` (the CLI, not the daemon) is seen on
/// the stream as it happens: its stop and its start, each one JSON line.
#[test]
fn a_followed_event_stream_carries_a_restart_as_it_happens() {
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    daemon_with_api(&env);
    env.ok(&["start", "web"]);

    let mut s = UnixStream::connect(socket(&env)).unwrap();
    s.write_all(b"GET /v1/events?follow=1&service=web HTTP/1.1\r\nHost: tend\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // The head first: the stream is open before anything happens.
    assert!(
        wait_until(LONG, || {
            if let Ok(n) = s.read(&mut buf) {
                raw.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&raw).contains("\r\n\r\n")
        }),
        "no head: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(String::from_utf8_lossy(&raw).contains("application/x-ndjson"));
    env.ok(&["restart", "web"]);
    let kinds = |raw: &[u8]| -> Vec<String> {
        let text = String::from_utf8_lossy(raw);
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        body.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .filter_map(|v| v["kind"].as_str().map(str::to_string))
            .collect()
    };
    assert!(
        wait_until(LONG, || {
            if let Ok(n) = s.read(&mut buf) {
                raw.extend_from_slice(&buf[..n]);
            }
            let k = kinds(&raw);
            k.iter().any(|k| k == "stop") && k.iter().any(|k| k == "start")
        }),
        "stream: {:?}",
        String::from_utf8_lossy(&raw)
    );
    drop(s);
    env.ok(&["daemon", "stop", "--all"]);
}

fn token_file(env: &Env, token: &str, mode: u32) -> PathBuf {
    let p = env.work().join("token");
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Without a token file every write is refused (403); with one, a write without the
/// token or with a wrong one is 401 and changes nothing; with it, the restart happens.
#[test]
fn writes_need_the_token() {
    let env = Env::new();
    env.add_fixture("web", &[], &[]);
    daemon_with_api(&env);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();
    let off = request(&env, "POST", "/v1/services/web/restart", &[]);
    assert_eq!(off.status, 403, "{off:?}");
    env.ok(&["daemon", "stop"]);

    let token = token_file(&env, "k3y-Of-the-test", 0o600);
    env.ok(&["config", "set", "http.token_file", token.to_str().unwrap()]);
    daemon_with_api(&env);
    for auth in [
        &[][..],
        &["Authorization: Bearer wrong"],
        &["Authorization: Bearer k3y-Of-the-tes"],
    ] {
        let a = request(&env, "POST", "/v1/services/web/restart", auth);
        assert_eq!(a.status, 401, "{auth:?}: {a:?}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    }
    assert!(
        holds_for(Duration::from_millis(300), || env.pid("web") == Some(pid)),
        "a refused write changed the service"
    );
    let ok = request(
        &env,
        "POST",
        "/v1/services/web/restart",
        &["Authorization: Bearer k3y-Of-the-test"],
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()[0]["name"], "web");
    let new = env.pid("web").unwrap();
    assert_ne!(new, pid);
    let stop = request(
        &env,
        "POST",
        "/v1/services/nope/stop",
        &["Authorization: Bearer k3y-Of-the-test"],
    );
    assert_eq!(stop.status, 404, "{stop:?}");
    env.ok(&["daemon", "stop", "--all"]);
}

/// A token file others may read, a FIFO, or an empty file: `tend daemon` refuses at
/// once with one `tend:` line naming it, and no daemon runs.
#[test]
fn a_token_file_others_can_read_or_that_is_not_a_file_is_refused() {
    let env = Env::new();
    let sock = socket(&env);
    let fifo = env.work().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let empty = env.work().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cases = [
        (
            token_file(&env, "abc", 0o644),
            "group or others may access it",
        ),
        (fifo, "not a regular file"),
        (empty, "it is empty"),
    ];
    for (path, why) in cases {
        env.ok(&["config", "set", "http.token_file", path.to_str().unwrap()]);
        let started = Instant::now();
        let out = env.tend(&["daemon", "--http", sock.to_str().unwrap()]);
        assert_eq!(out.code, 2, "{path:?}: {out:?}");
        assert!(out.stderr.starts_with("tend: "), "{out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
        assert!(out.stderr.contains(why), "{why}: {out:?}");
        assert!(out.stderr.contains("http.token_file"), "{out:?}");
        assert!(started.elapsed() < LONG);
        let st = env.tend(&["daemon", "status"]);
        assert_eq!(st.code, 3, "a daemon runs after a refused start: {st:?}");
    }
}

/// An address other hosts can reach is refused unless allowed; a port in use is a clear
/// error of the start, and no daemon is left running.
#[test]
fn a_remote_address_or_a_port_in_use_is_refused() {
    let env = Env::new();
    let out = env.tend(&["daemon", "--http", "0.0.0.0:1"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("reachable from other hosts"), "{out:?}");
    let out = env.tend(&["daemon", "--http", "not-an-address"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--http"), "{out:?}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = env.tend(&["daemon", "--http", &addr]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("cannot listen on"), "{out:?}");
    assert!(out.stderr.contains("in use"), "{out:?}");
    assert_eq!(env.tend(&["daemon", "status"]).code, 3);
    // A live socket at the path is somebody's: refused, and left alone.
    let path = env.work().join("theirs.sock");
    let _theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let out = env.tend(&["daemon", "--http", path.to_str().unwrap()]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("another process listens"), "{out:?}");
    assert!(path.exists());
    assert_eq!(env.tend(&["daemon", "status"]).code, 3);
}

/// Raises this process's soft limit on open files to `want` (at most the hard limit);
/// returns the soft limit now in force.
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the rlimit it is given, which is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    let to = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max).max(lim.rlim_cur),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the valid rlimit it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &to) } != 0 {
        return lim.rlim_cur;
    }
    to.rlim_cur
}

/// A thousand connections that never send a byte, one that sends a 10 MB header and one
/// that sends a 10 MB body without the token: the daemon still restarts a crashed service
/// at once, answers the CLI, and, once the idle ones are closed by their header timeout,
/// answers the API again.
#[test]
fn hostile_clients_do_not_stop_supervision() {
    let env = Env::new();
    env.add_fixture("web", &["--restart", "always"], &[]);
    daemon_with_api(&env);
    env.ok(&["start", "web"]);
    let pid = env.pid("web").unwrap();

    let room = raise_nofile(1200);
    let idle_count = 1000.min(room.saturating_sub(100) as usize);
    let idle: Vec<UnixStream> = (0..idle_count)
        .filter_map(|_| UnixStream::connect(socket(&env)).ok())
        .collect();
    assert!(idle.len() >= 900, "only {} connections opened", idle.len());

    // 10 MB of header, then 10 MB of body, each on its own connection, written by a
    // thread of its own (the daemon may stop reading at any point).
    let sock = socket(&env);
    let big = std::thread::spawn(move || {
        let mut done = Vec::new();
        for head in [true, false] {
            let Ok(mut s) = UnixStream::connect(&sock) else {
                done.push("refused".to_string());
                continue;
            };
            s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
            let chunk = vec![b'a'; 64 * 1024];
            let start = if head {
                "GET /metrics HTTP/1.1\r\nX-Big: ".to_string()
            } else {
                "POST /v1/services/web/stop HTTP/1.1\r\nContent-Length: 10485760\r\n\r\n"
                    .to_string()
            };
            let mut r = s.write_all(start.as_bytes());
            for _ in 0..160 {
                if r.is_err() {
                    break;
                }
                r = s.write_all(&chunk);
            }
            done.push(format!("{r:?}"));
        }
        done
    });

    // Supervision goes on: a crash is restarted, the CLI is answered.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let new = env.wait_new_pid("web", pid);
    assert_ne!(new, pid);
    env.ok(&["daemon", "status"]);
    let _ = big.join();
    assert_eq!(
        env.pid("web"),
        Some(new),
        "the 10 MB stop without a token acted"
    );

    drop(idle);
    // The API answers again once the connections are gone.
    assert!(
        wait_until(LONG, || UnixStream::connect(socket(&env))
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                s.write_all(b"GET /v1/services/web HTTP/1.1\r\nHost: tend\r\n\r\n")
                    .ok()?;
                let mut raw = Vec::new();
                s.read_to_end(&mut raw).ok()?;
                Some(parse_answer(&raw).status == 200)
            })
            .unwrap_or(false)),
        "the API does not answer after the hostile clients left"
    );
    env.ok(&["daemon", "stop", "--all"]);
}

/// Connections that never send a request are closed by the daemon after the header
/// timeout, so they cannot hold the API's connection slots for ever.
#[test]
fn idle_connections_are_closed_by_the_header_timeout() {
    let env = Env::new();
    daemon_with_api(&env);
    let mut s = UnixStream::connect(socket(&env)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut raw = Vec::new();
    // End of file (after at most a short answer) or a reset: the daemon closed it. A
    // read that times out (40 s, four times the header timeout) means it kept it open.
    let r = s.read_to_end(&mut raw);
    match r {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the idle connection was not closed: {e}"),
    }
    env.ok(&["daemon", "stop"]);
}
