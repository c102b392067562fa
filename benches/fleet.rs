//! Fleet control over loopback PostgreSQL (issue 10).
//!
//! ```text
//! cargo bench --bench fleet
//! ```
//!
//! 1. `tend fleet restart svc --wait 30s` across `TEND_BENCH_HOSTS` (default 20) local
//!    daemons, each its own home and host id with one service (`sleep`, which exits at
//!    once on SIGTERM): wall time of the whole command (a process start, connect, LISTEN,
//!    insert one row per host, every host's claim/restart/report, the results read),
//!    as a person's shell sees it.
//! 2. What idle hosts cost the database: for 20 s, transactions committed in the
//!    database (`pg_stat_database.xact_commit`) and the hosts' connections
//!    (`pg_stat_activity`, application_name `tend daemon HOST`), per host and scaled to 1,000. The
//!    bench runs in a database of its own (created and dropped), so only its hosts count.
//! 3. Commands per second one daemon claims and finishes: 500 `start svc` rows for one
//!    host (a no-op: it is running) inserted at once; time until the last is finished.
//!
//! Environment: `TEND_BENCH_DATABASE_URL` or `TEND_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), `TEND_BENCH_HOSTS`, `TEND_BENCH_N`
//! (restart samples, default 20), `TEND_BIN`.

use std::time::{Duration, Instant};

#[allow(dead_code)] // `alive` serves the other benches.
mod common;
use common::Tend;

fn main() {
    let server = std::env::var("TEND_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("TEND_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    // A database of its own, so its transaction count is the hosts' alone; loopback
    // without TLS unless the URL asks for it (this server's certificate does not name
    // 127.0.0.1, and `prefer` would try TLS first on every connect).
    let database = format!("tend_bench_fleet_{}", std::process::id());
    let (base, query) = server.split_once('?').unwrap_or((&server, ""));
    let (root, _) = base.rsplit_once('/').expect("a URL with a database");
    let query = if query.contains("sslmode") {
        query.to_string()
    } else if query.is_empty() {
        "sslmode=disable".to_string()
    } else {
        format!("{query}&sslmode=disable")
    };
    let url = format!("{root}/{database}?{query}");
    let hosts: usize = env_num("TEND_BENCH_HOSTS", 20);
    let n: usize = env_num("TEND_BENCH_N", 20);
    let schema = format!("tend_bench_fleet_{}", std::process::id());
    let admin = Tend::new();
    let fleet = |args: &[&str]| {
        let mut a = vec!["fleet"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--postgres", &url, "--schema", &schema]);
        admin.run(&a)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    {
        let (admin_db, connection) = rt
            .block_on(tokio_postgres::connect(&server, tokio_postgres::NoTls))
            .unwrap_or_else(|e| panic!("cannot connect to {server}: {e}"));
        rt.spawn(connection);
        rt.block_on(admin_db.batch_execute(&format!("CREATE DATABASE {database}")))
            .expect("create the bench database");
    }
    let _drop = DropDatabase {
        server: server.clone(),
        database: database.clone(),
    };
    let (client, connection) = rt
        .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    rt.spawn(connection);
    fleet(&["init"]);

    let homes: Vec<Tend> = (0..hosts)
        .map(|i| {
            let t = Tend::new();
            t.run(&["add", "svc", "--", "sleep", "1000000"]);
            t.run(&["start", "svc"]);
            t.run(&[
                "daemon",
                "--postgres",
                &url,
                "--schema",
                &schema,
                "--host-id",
                &format!("b{i}"),
                "--channel",
                &format!("{schema}_q"),
            ]);
            t
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = rt
            .block_on(client.query_one(
                &format!(
                    "SELECT count(*) FROM {schema}.services WHERE state = 'running' \
                     AND host_id IN (SELECT id FROM {schema}.hosts \
                                     WHERE last_seen > now() - interval '10 seconds')"
                ),
                &[],
            ))
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if live as usize == hosts {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {live} of {hosts} hosts joined"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // 1. fleet restart --wait across every host.
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 2 {
        let t0 = Instant::now();
        let out = fleet(&["restart", "svc", "--wait", "30s"]);
        let took = t0.elapsed();
        let done = out.lines().filter(|l| l.contains("\tdone\t")).count();
        assert_eq!(done, hosts, "sample {i}: {out}");
        if i >= 2 {
            samples.push(took);
        }
    }
    samples.sort();
    let pct =
        |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    println!(
        "fleet restart --wait, {hosts} daemons        median {:.1} ms  p90 {:.1} ms  min {:.1} ms  (n={})",
        pct(0.5),
        pct(0.9),
        samples[0].as_secs_f64() * 1e3,
        samples.len()
    );
    println!("target: median <= 200 ms");

    // 2. The cost of idle hosts.
    let stats = || -> (i64, i64) {
        let r = rt
            .block_on(client.query_one(
                "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), \
                        (SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'tend daemon %')",
                &[],
            ))
            .expect("stats");
        (r.get(0), r.get(1))
    };
    // Let the burst above settle: an idle backend flushes its statistics within 10 s.
    std::thread::sleep(Duration::from_secs(12));
    let (x0, _) = stats();
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let (x1, conns) = stats();
    let per_host = (x1 - x0) as f64 / window.as_secs_f64() / hosts as f64;
    println!(
        "idle cost per host                         {per_host:.2} transactions/s, {:.1} connections",
        conns as f64 / hosts as f64
    );
    println!(
        "scaled to 1,000 hosts                      {:.0} transactions/s, {:.0} connections",
        per_host * 1000.0,
        conns as f64 / hosts as f64 * 1000.0
    );
    // 3. Commands per second for one daemon (no-op: start of a running service).
    let count = 500i64;
    let t0 = Instant::now();
    rt.block_on(client.execute(
        &format!(
            "INSERT INTO {schema}.commands (host_id, service, action) \
             SELECT 'b0', 'svc', 'start' FROM generate_series(1, $1::bigint)"
        ),
        &[&count],
    ))
    .expect("insert");
    let deadline = t0 + Duration::from_secs(120);
    loop {
        let left: i64 = rt
            .block_on(client.query_one(
                &format!("SELECT count(*) FROM {schema}.commands WHERE finished_at IS NULL"),
                &[],
            ))
            .expect("count")
            .get(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} commands left");
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "one daemon claims and finishes            {:.0} commands/s  ({count} no-op starts in {:.2} s)",
        count as f64 / secs,
        secs
    );

    drop(homes);
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

/// Drops the bench's database whatever happened (after the daemons are gone).
struct DropDatabase {
    server: String,
    database: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-X", "-q", "-d", &self.server, "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
