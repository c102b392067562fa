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

use std::time::{Duration, Instant};

mod common;
use common::{alive, Tend};

fn main() {
    let url = std::env::var("TEND_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEND_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let n: usize = std::env::var("TEND_BENCH_N")
        .ok()
        .map(|v| v.parse().expect("TEND_BENCH_N must be a number"))
        .unwrap_or(200);
    let channel = format!("tend_bench_{}", std::process::id());

    let t = Tend::new();
    let tend = |args: &[&str]| t.run(args);
    tend(&["add", "svc", "--", "sleep", "1000000"]);
    tend(&["daemon", "--postgres", &url, "--channel", &channel]);
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
            t.home.path().join("tend.db"),
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
