//! Daemon benchmark: crash-to-restart latency, and what an idle daemon costs.
//!
//! ```text
//! cargo bench --bench daemon
//! ```
//!
//! 1. Crash to restart: a service (`sleep`) is SIGKILLed; the time is taken from just
//!    before the kill until the database records a new instance whose process is alive
//!    and runs the program (a new instance is recorded while it waits at tend's gate,
//!    before exec, so the bench also waits for /proc/PID/cmdline to be `sleep`). With the default policy (100 ms first
//!    delay; each sample starts from a fresh `tend start`, so every crash is a "first"
//!    crash) and with `--restart-delay 0 --start-limit 0`.
//! 2. Idle cost: 1,000 services running, the daemon left alone for 60 s: CPU seconds
//!    (utime + stime from /proc), context switches, and RSS at the end. Twice: with the
//!    services as the daemon's children, and after a daemon restart, adopted (pidfds).
//!
//! Environment: `TEND_BIN` (the tend binary; default: the one cargo builds for the
//! bench), `TEND_BENCH_N` (zero-backoff samples, default 200), `TEND_BENCH_IDLE_SECS`
//! (default 60), `TEND_BENCH_SERVICES` (default 1000).
//!
//! Everything runs in a temporary state home and is stopped at the end.

use std::time::{Duration, Instant};

mod common;
use common::{alive, Tend};

fn main() {
    let t = Tend::new();
    let n: usize = env_num("TEND_BENCH_N", 200);
    let idle_secs: u64 = env_num("TEND_BENCH_IDLE_SECS", 60);
    let services: usize = env_num("TEND_BENCH_SERVICES", 1000);
    println!(
        "tend daemon benchmark: {} cores, kernel {}, binary {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        t.bin.display()
    );
    t.run(&["daemon"]);

    // 1a. Default policy.
    t.run(&["add", "dflt", "--", "sleep", "1000000"]);
    let default_n = (n / 10).clamp(5, 30);
    let mut dflt = Vec::new();
    for _ in 0..default_n + 2 {
        t.run(&["start", "dflt"]);
        dflt.push(crash_to_restart(&t, "dflt"));
        t.run(&["stop", "dflt"]);
    }
    let dflt = Stats::new(dflt.split_off(2)); // the first two warm up

    // 1b. Zero backoff, no start limit.
    t.run(&[
        "add",
        "zero",
        "--restart-delay",
        "0",
        "--start-limit",
        "0",
        "--",
        "sleep",
        "1000000",
    ]);
    t.run(&["start", "zero"]);
    let mut zero = Vec::new();
    for _ in 0..n + 5 {
        zero.push(crash_to_restart(&t, "zero"));
    }
    let zero = Stats::new(zero.split_off(5));
    t.run(&["stop", "dflt", "zero"]);
    t.run(&["remove", "dflt", "zero"]);

    println!();
    println!(
        "{}",
        dflt.line("crash -> restarted, default policy (100 ms delay)")
    );
    println!("{}", zero.line("crash -> restarted, --restart-delay 0"));

    // 2. Idle with many services.
    let adding = Instant::now();
    for i in 0..services {
        t.run(&["add", &format!("s{i:04}"), "--", "sleep", "1000000"]);
    }
    let started = Instant::now();
    t.run(&["start", "--all"]);
    println!();
    println!(
        "setup: {services} services added in {:.1} s, started through the daemon in {:.1} s",
        (started - adding).as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let idle_children = idle(&t, idle_secs);
    println!(
        "idle {idle_secs} s, {services} services (children):  {}",
        idle_children
    );
    t.run(&["daemon", "stop"]);
    t.run(&["daemon"]);
    let idle_adopted = idle(&t, idle_secs);
    println!(
        "idle {idle_secs} s, {services} services (adopted):   {}",
        idle_adopted
    );
    println!(
        "targets: restart <= 3 ms with zero backoff; idle RSS <= 8 MB and idle CPU <= 0.05 s \
         per minute with 1,000 services"
    );
}

/// SIGKILLs the service's process and waits until a new instance is recorded and alive.
fn crash_to_restart(t: &Tend, name: &str) -> Duration {
    let db = rusqlite::Connection::open_with_flags(
        t.home.path().join("tend.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database");
    let pid_of = || -> Option<i32> {
        db.query_row(
            "SELECT i.pid FROM instances i JOIN services s ON s.id = i.service_id \
             WHERE s.name = ?1",
            [name],
            |r| r.get(0),
        )
        .ok()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let old = loop {
        if let Some(p) = pid_of().filter(|&p| alive(p) && runs_program(p)) {
            break p;
        }
        assert!(Instant::now() < deadline, "{name} is not running");
        std::thread::sleep(Duration::from_millis(1));
    };
    let t0 = Instant::now();
    // SAFETY: kill with a pid the daemon just recorded for our own service.
    unsafe {
        libc::kill(old, libc::SIGKILL);
    }
    let deadline = t0 + Duration::from_secs(30);
    loop {
        // Recorded, alive, and running the program (a new instance is recorded while it
        // still waits at tend's gate, before exec).
        if let Some(p) = pid_of() {
            if p != old && alive(p) && runs_program(p) {
                return t0.elapsed();
            }
        }
        assert!(Instant::now() < deadline, "{name} was not restarted");
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// True once `pid` has exec'd the service's program (`sleep`), not still tend's code.
fn runs_program(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
}

/// The daemon's pid, from `tend daemon status --json`.
fn daemon_pid(t: &Tend) -> i32 {
    let out = t.run(&["daemon", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
    v["pid"].as_i64().expect("daemon pid") as i32
}

/// The daemon's CPU time, context switches and RSS over `secs` of doing nothing.
fn idle(t: &Tend, secs: u64) -> String {
    let pid = daemon_pid(t);
    // Let the start-up and adoption work finish before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let (cpu0, sw0) = (cpu_ticks(pid), switches(pid));
    std::thread::sleep(Duration::from_secs(secs));
    let (cpu1, sw1) = (cpu_ticks(pid), switches(pid));
    let hz = 100.0; // USER_HZ is 100 on Linux
    let cpu = (cpu1 - cpu0) as f64 / hz;
    format!(
        "CPU {cpu:.2} s ({:.3} s per minute), {} context switches, RSS {:.1} MB (peak {:.1} MB)",
        cpu * 60.0 / secs as f64,
        sw1 - sw0,
        status_kb(pid, "VmRSS:") as f64 / 1024.0,
        status_kb(pid, "VmHWM:") as f64 / 1024.0
    )
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon stat");
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn switches(pid: i32) -> u64 {
    status_kb(pid, "voluntary_ctxt_switches:") + status_kb(pid, "nonvoluntary_ctxt_switches:")
}

fn status_kb(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Stats(Vec<Duration>);

impl Stats {
    fn new(mut v: Vec<Duration>) -> Stats {
        assert!(!v.is_empty());
        v.sort();
        Stats(v)
    }

    fn pct(&self, p: f64) -> Duration {
        let i = ((self.0.len() - 1) as f64 * p).round() as usize;
        self.0[i]
    }

    fn line(&self, what: &str) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "{what:<52} median {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  min {:.2} ms  (n={})",
            ms(self.pct(0.5)),
            ms(self.pct(0.9)),
            ms(self.pct(0.99)),
            ms(self.0[0]),
            self.0.len()
        )
    }
}

fn env_num<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key} must be a number, got {v:?}")),
        Err(_) => default,
    }
}
