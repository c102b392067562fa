//! NOTIFY-to-restarted latency over loopback.
//!
//! ```text
//! cargo bench --bench notify
//! ```
//!
//! A daemon LISTENs on a fresh channel; a service (`sleep`, which exits at once on
//! SIGTERM) runs. Each sample sends `SELECT pg_notify(channel, 'restart svc')` in
//! autocommit (the notification is delivered at that statement's commit) and measures
//! from just before sending it until the database records a new instance (recorded only
//! after its exec succeeded) whose process is alive. The clock starts before the commit,
//! so the figures include the sender's round trip: an upper bound of commit-to-running.
//!
//! Environment: `TEND_BENCH_DATABASE_URL` or `TEND_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), `TEND_BENCH_N` (samples, default 200),
//! `TEND_BIN`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let url = std::env::var("TEND_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEND_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let n: usize = std::env::var("TEND_BENCH_N")
        .ok()
        .map(|v| v.parse().expect("TEND_BENCH_N must be a number"))
        .unwrap_or(200);
    let bin = std::env::var_os("TEND_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tend")));
    let channel = format!("tend_bench_{}", std::process::id());

    let home = tempfile::tempdir().expect("temporary home");
    let tend = |args: &[&str]| {
        let out = Command::new(&bin)
            .arg("--home")
            .arg(home.path())
            .args(args)
            .env_remove("TEND_HOME")
            .stdin(Stdio::null())
            .output()
            .expect("run tend");
        assert!(
            out.status.success(),
            "tend {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    tend(&["add", "svc", "--", "sleep", "1000000"]);
    tend(&["daemon", "--postgres", &url, "--channel", &channel]);
    let _cleanup = Cleanup(bin.clone(), home.path().to_path_buf());
    tend(&["start", "svc"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tend(&["daemon", "status", "--json"]).contains("\"state\": \"connected\"") {
        assert!(
            Instant::now() < deadline,
            "the daemon did not connect to {url}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let samples = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        tokio::spawn(connection);
        let db = rusqlite::Connection::open_with_flags(
            home.path().join("tend.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open tend.db");
        let pid_of = || -> Option<i32> {
            db.query_row("SELECT pid FROM instances", [], |r| r.get(0))
                .ok()
        };
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 5 {
            let old = pid_of().expect("svc is running");
            let t0 = Instant::now();
            client
                .execute("SELECT pg_notify($1, 'restart svc')", &[&channel])
                .await
                .expect("NOTIFY");
            let deadline = t0 + Duration::from_secs(10);
            loop {
                if let Some(p) = pid_of() {
                    if p != old && alive(p) {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "no restart after NOTIFY {i}");
                // Yield briefly; polling SQLite is cheap next to a restart.
                std::thread::sleep(Duration::from_micros(50));
            }
            if i >= 5 {
                samples.push(t0.elapsed());
            }
        }
        samples
    });
    let mut s = samples;
    s.sort();
    let pct = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    println!(
        "NOTIFY -> restarted (loopback, sleep exits on TERM)   median {:.2} ms  p90 {:.2} ms  \
         p99 {:.2} ms  min {:.2} ms  (n={})",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        s[0].as_secs_f64() * 1e3,
        s.len()
    );
    println!("target: median <= 5 ms");
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(false)
}

/// Stops the service and the daemon, whatever happened.
struct Cleanup(PathBuf, PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in [&["daemon", "stop", "--all"][..], &["stop", "--all"][..]] {
            let _ = Command::new(&self.0)
                .arg("--home")
                .arg(&self.1)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
