//! The log writer (`--log-timestamps on`): a service writing 50 MB of lines as fast as it
//! can, straight to its file (`off`) and through the writer (`on`). Target: through the
//! writer at least 50% of the direct throughput.
//!
//! ```text
//! cargo bench --bench log_writer
//! ```
//!
//! Two services, each run `TEND_BENCH_N` times (default 5) per mode, interleaved
//! (direct, writer, direct, ...), rotation off
//! (`--log-max-size 0`) so that both modes do the same work:
//!
//! - **blocks**: `yes LINE | head -c 50M` (60-byte lines, written in large blocks);
//! - **lines**: the test fixture printing numbered lines, one `write` per line (about
//!   11 bytes each), 1,000,000 of them.
//!
//! For each run: the **service time** (from `tend start` returning to the service's
//! process being gone: how much the writer slows the service) and the **total time**
//! (until the whole log is on disk: the writer has written everything and exited), as
//! MB/s of the service's own output; the ratio is the median over the pairs of the
//! direct run's service time against the writer run's total time. Then one run with
//! rotation at 10M (the default),
//! and the writer's memory: VmHWM and VmRSS of the keeper and the worker after a 50 MB
//! burst, while the service still runs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{alive, Tend};

const FIXTURE: &str = env!("CARGO_BIN_EXE_tend-test-service");
const BYTES: u64 = 50 * 1024 * 1024;
const LINE: &str = "2026-12-06 some service said something of about sixty bytes";

/// Pids of the log writer processes of `home`: (pid, is the worker).
fn writers(home: &Path) -> Vec<(i32, bool)> {
    let home = home.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) == Some("log-writer")
            && args.iter().any(|a| a.starts_with(&home))
            && alive(pid)
        {
            out.push((pid, args.iter().any(|a| a == "--worker")));
        }
    }
    out
}

fn wait(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pid_of(start_output: &str) -> i32 {
    start_output
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {start_output:?}"))
}

struct Run {
    service: f64,
    total: f64,
}

/// One run of `argv` in a fresh home; (service seconds, total seconds).
fn run(argv: &[&str], timestamps: &str, max: &str) -> Run {
    let t = Tend::new();
    let mut args = vec![
        "add",
        "svc",
        "--restart",
        "never",
        "--log-max-size",
        max,
        "--log-timestamps",
        timestamps,
        "--",
    ];
    args.extend_from_slice(argv);
    t.run(&args);
    let t0 = Instant::now();
    let out = t.run(&["start", "svc"]);
    let pid = pid_of(&out);
    wait("the service", Duration::from_secs(300), || !alive(pid));
    let service = t0.elapsed().as_secs_f64();
    wait("the writer", Duration::from_secs(300), || {
        writers(t.home.path()).is_empty()
    });
    let total = t0.elapsed().as_secs_f64();
    Run { service, total }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn main() {
    let n: usize = std::env::var("TEND_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let blocks = format!("yes '{LINE}' | head -c {BYTES}");
    let lines_n = 1_000_000u64;
    let lines_bytes: u64 = (0..lines_n)
        .map(|i| format!("line {i}\n").len() as u64)
        .sum();
    let lines_n_s = lines_n.to_string();
    let cases: Vec<(&str, Vec<&str>, u64)> = vec![
        ("blocks", vec!["sh", "-c", &blocks], BYTES),
        (
            "lines",
            vec![FIXTURE, "--lines", &lines_n_s, "--exit-now", "0"],
            lines_bytes,
        ),
    ];
    println!(
        "log writer throughput, median of {n} interleaved pairs, rotation off \
         (MB/s of the service's output)"
    );
    println!(
        "{:<8} {:>14} {:>14} {:>14} {:>10}",
        "service", "direct", "writer:service", "writer:total", "ratio"
    );
    for (name, argv, bytes) in &cases {
        // Interleaved, so that a change in the machine's load hits both modes alike.
        let mut direct = Vec::new();
        let mut through = Vec::new();
        for _ in 0..n {
            direct.push(run(argv, "off", "0"));
            through.push(run(argv, "on", "0"));
        }
        let d = median(direct.iter().map(|r| r.service).collect());
        let ws = median(through.iter().map(|r| r.service).collect());
        let wt = median(through.iter().map(|r| r.total).collect());
        // Each writer run against the direct run just before it.
        let ratio = median(
            direct
                .iter()
                .zip(&through)
                .map(|(d, w)| d.service / w.total)
                .collect(),
        );
        println!(
            "{:<8} {:>9.1} MB/s {:>9.1} MB/s {:>9.1} MB/s {:>9.0}%   (target >= 50%)",
            name,
            mb_s(*bytes, d),
            mb_s(*bytes, ws),
            mb_s(*bytes, wt),
            100.0 * ratio
        );
    }

    let rot = run(&["sh", "-c", &blocks], "on", "10M");
    println!(
        "blocks through the writer rotating at 10M: service {:.1} MB/s, total {:.1} MB/s",
        mb_s(BYTES, rot.service),
        mb_s(BYTES, rot.total)
    );

    // Memory: a burst, then the service stays up; the writer's peak and current RSS.
    let t = Tend::new();
    let script = format!("{blocks}; exec sleep 600");
    t.run(&[
        "add",
        "mem",
        "--log-max-size",
        "0",
        "--log-timestamps",
        "on",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    t.run(&["start", "mem"]);
    let log = t.home.path().join("logs/mem.log");
    let stamped = BYTES / (LINE.len() as u64 + 1) * (LINE.len() as u64 + 1 + 28);
    wait("the burst on disk", Duration::from_secs(300), || {
        std::fs::metadata(&log).is_ok_and(|m| m.len() >= stamped)
    });
    for (pid, worker) in writers(t.home.path()) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        println!(
            "{}: VmHWM {}, VmRSS {} (RssAnon {}, RssFile {}) after a 50 MB burst",
            if worker { "worker" } else { "keeper" },
            field("VmHWM:"),
            field("VmRSS:"),
            field("RssAnon:"),
            field("RssFile:")
        );
    }
    t.run(&["stop", "mem"]);
    wait("the writer to end", Duration::from_secs(30), || {
        writers(t.home.path()).is_empty()
    });
}
