//! `tend logs` over many services: what reading, merging and following cost.
//!
//! ```text
//! cargo bench --bench logs
//! ```
//!
//! 100 services (defined, never started); each log file is written by the bench with
//! `TEND_BENCH_LINES` timestamped lines (default 10,000 of ~64 bytes: 640 KB per file,
//! 64 MB in all), times interleaved across the services. Measured, `TEND_BENCH_N` runs
//! each (default 20), output read through a pipe and thrown away:
//! - `logs --all` (the last 20 lines of each file, merged: 2,000 lines);
//! - `logs --all --json`;
//! - `logs --all --since T` with T at 99% of the time span (reads every file whole);
//! - a follow of all 100 files: CPU per minute while nothing is written (10 s, scaled),
//!   and how fast appended lines come out (100,000 lines appended to 10 files at once).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Tend;

const SERVICES: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `2026-12-06T00:00:00.000000Z` plus `us` microseconds (within one day).
fn stamp(us: u64) -> String {
    let s = us / 1_000_000;
    format!(
        "2026-12-06T{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        us % 1_000_000
    )
}

fn command(tend: &Tend, args: &[&str]) -> Command {
    let mut c = Command::new(&tend.bin);
    c.arg("--home")
        .arg(tend.home.path())
        .args(args)
        .env_remove("TEND_HOME")
        .stdin(Stdio::null());
    c
}

/// Runs `tend ARGS` `n` times; returns the median and minimum in ms and the output size.
fn time(tend: &Tend, args: &[&str], n: usize) -> (f64, f64, usize) {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        let out = command(tend, args).output().expect("run tend");
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(out.status.success(), "tend {args:?}: {:?}", out);
        bytes = out.stdout.len();
    }
    ms.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    (ms[n / 2], ms[0], bytes)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let rest = stat.rsplit_once(')').expect("stat has a comm").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn main() {
    let lines = env_usize("TEND_BENCH_LINES", 10_000);
    let n = env_usize("TEND_BENCH_N", 20);
    let tend = Tend::new();
    let logs = tend.home.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let step = 86_000_000_000 / (lines * SERVICES) as u64;
    for s in 0..SERVICES {
        let name = format!("svc{s:03}");
        tend.run(&["add", &name, "--", "true"]);
        let mut text = String::with_capacity(lines * 64);
        for i in 0..lines {
            let at = (i * SERVICES + s) as u64 * step;
            text.push_str(&stamp(at));
            text.push_str(&format!(" {name} request {i:08} handled in 12 ms\n"));
        }
        std::fs::write(logs.join(format!("{name}.log")), text).expect("write a log");
    }
    let total: u64 = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "{SERVICES} services, {lines} lines each, {:.1} MB of logs; n={n} per figure",
        total as f64 / 1e6
    );
    let since = stamp(((lines * SERVICES) as u64 * step) / 100 * 99);
    let cases: [(&str, Vec<&str>); 3] = [
        ("logs --all (20 lines each)", vec!["logs", "--all"]),
        ("logs --all --json", vec!["logs", "--all", "--json"]),
        (
            "logs --all --since (last 1%, reads all)",
            vec!["logs", "--all", "--since", &since],
        ),
    ];
    for (what, args) in cases {
        let (median, min, bytes) = time(&tend, &args, n);
        println!("{what:<42} median {median:>8.2} ms  min {min:>8.2} ms  ({bytes} bytes out)");
    }

    // A follow of every file: idle cost, then throughput.
    let mut child = command(&tend, &["logs", "--all", "-f", "-n", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the follow");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(1));
    let t0 = cpu_ticks(pid);
    let idle = Duration::from_secs(10);
    std::thread::sleep(idle);
    assert!(common::alive(pid as i32), "the follow ended early");
    let ticks = cpu_ticks(pid) - t0;
    // Linux reports them in ticks of 1/100 s (USER_HZ).
    let cpu_per_min = ticks as f64 / 100.0 * (60.0 / idle.as_secs_f64());
    println!("follow of {SERVICES} files, idle: {cpu_per_min:.2} s CPU per minute");

    let appended = 100_000;
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let t0 = Instant::now();
    let writer = {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let mut files: Vec<_> = (0..10)
                .map(|s| {
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(logs.join(format!("svc{s:03}.log")))
                        .expect("open a log")
                })
                .collect();
            for i in 0..appended {
                let line = format!("{} svc appended {i:08}\n", stamp(86_100_000_000 + i as u64));
                files[i % 10].write_all(line.as_bytes()).expect("append");
            }
        })
    };
    let mut line = String::new();
    for _ in 0..appended {
        line.clear();
        out.read_line(&mut line).expect("read the follow");
    }
    let took = t0.elapsed();
    writer.join().expect("writer");
    println!(
        "follow, {appended} lines appended to 10 files: all out after {:.0} ms ({:.0} lines/s)",
        took.as_secs_f64() * 1e3,
        appended as f64 / took.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
}
