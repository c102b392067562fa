//! `tend start --wait` on a service with a TCP readiness check: how long after the
//! service starts listening does the command return? That is the overhead readiness
//! adds (time from command to return, minus the service's own time to listen).
//!
//! ```text
//! cargo bench --bench ready
//! ```
//!
//! The service is the test fixture: it sleeps D ms, binds 127.0.0.1:PORT and prints the
//! wall-clock time it bound at (`LISTENING at_ns=...`); the service's `ready` is
//! `tcp=PORT`. Each run: take the time, run `tend start svc --wait`, take the time when
//! it exits; overhead = exit time − bind time. Then an untimed `tend stop svc`. Measured
//! for D = 0 and 50 ms, without and with a daemon. `TEND_BENCH_N` iterations (default
//! 100).

mod common;

use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use common::Tend;

const FIXTURE: &str = env!("CARGO_BIN_EXE_tend-test-service");
const TARGET_MS: f64 = 5.0;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// The bind time of the run that began at `t0`, from the service's log. The service may
/// not have written its line yet when tend returns (it writes it after binding): waited
/// for, up to 2 s.
fn bound_at(log: &std::path::Path, t0: u128) -> u128 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let text = std::fs::read_to_string(log).expect("read the service log");
        let last = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("LISTENING at_ns="))
            .and_then(|v| v.trim().parse().ok());
        match last {
            Some(at) if at >= t0 => return at,
            _ if std::time::Instant::now() > deadline => {
                panic!("no LISTENING line of this run in {}", log.display())
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

struct Stats(Vec<f64>);

impl Stats {
    fn show(mut self, what: &str) {
        self.0.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let n = self.0.len();
        let q = |p: f64| self.0[((n as f64 - 1.0) * p).round() as usize];
        println!(
            "{what:<44} median {:>6.2} ms  p90 {:>6.2}  min {:>6.2}  max {:>6.2}  (n={n})",
            q(0.5),
            q(0.9),
            q(0.0),
            q(1.0)
        );
    }
}

fn measure(tend: &Tend, n: usize, delay_ms: u32) -> (Stats, Stats) {
    let port = free_port();
    let name = format!("svc{delay_ms}");
    tend.run(&[
        "add",
        &name,
        "--ready",
        &format!("tcp={port} timeout=10s"),
        "--stop-timeout",
        "2s",
        "--",
        FIXTURE,
        "--sleep",
        &delay_ms.to_string(),
        "--listen",
        &port.to_string(),
    ]);
    let log = tend.home.path().join("logs").join(format!("{name}.log"));
    let mut overhead = Vec::with_capacity(n);
    let mut total = Vec::with_capacity(n);
    for i in 0..n + 3 {
        let t0 = now_ns();
        let out = std::process::Command::new(&tend.bin)
            .arg("--home")
            .arg(tend.home.path())
            .args(["start", &name, "--wait"])
            .stdin(Stdio::null())
            .output()
            .expect("run tend");
        let t1 = now_ns();
        assert!(
            out.status.success(),
            "start --wait failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bound = bound_at(&log, t0);
        assert!(
            bound <= t1,
            "tend returned before the service bound its port: t0 {t0} bound {bound} t1 {t1}; {}",
            String::from_utf8_lossy(&out.stdout)
        );
        if i >= 3 {
            overhead.push((t1 - bound) as f64 / 1e6);
            total.push((t1 - t0) as f64 / 1e6);
        }
        tend.run(&["stop", &name]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid: i32 = stdout
            .split("(pid ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|p| p.parse().ok())
            .expect("`NAME: ready (pid N, ...)`");
        assert!(!common::alive(pid), "pid {pid} still runs after stop");
    }
    (Stats(overhead), Stats(total))
}

fn main() {
    let n = std::env::var("TEND_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    println!("tend start --wait, TCP readiness check; target overhead <= {TARGET_MS} ms");
    for daemon in [false, true] {
        let tend = Tend::new();
        if daemon {
            tend.run(&["daemon"]);
        }
        let how = if daemon { "daemon" } else { "no daemon" };
        for delay in [0, 50] {
            let (overhead, total) = measure(&tend, n, delay);
            overhead.show(&format!("overhead, listens after {delay} ms, {how}"));
            total.show(&format!(
                "command to return, listens after {delay} ms, {how}"
            ));
        }
    }
}
