//! End-to-end CLI benchmark: runs the release `tend` binary the way a user's shell does
//! (spawn, wait for exit) and measures wall time from outside with `Instant`.
//!
//! ```text
//! cargo bench --bench cli
//! ```
//!
//! Measured, each in a fresh temporary state home (`--home`), never the user's own:
//! 1. `tend start svc` (returns only after exec succeeded), `svc` = `sleep 1000000`;
//!    each timed start is followed by an untimed `tend stop svc`.
//! 2. `tend stop svc` (the service exits on SIGTERM); each after an untimed start.
//! 3. `tend list` with 1,000 defined (not started) services, stdout piped and read to
//!    the end by this process.
//!
//! Environment:
//! - `TEND_BIN`: the `tend` binary to measure (default: the one cargo built beside this
//!   bench, built with `cargo build --release --bin tend` if missing).
//! - `TEND_BENCH_N`: iterations for start and stop (default 200); `tend list` uses half.
//!
//! Every `tend` exit status is checked. At the end everything is stopped with
//! `tend stop --all`, and any process group this bench started that still has a live
//! member is killed and reported.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const WARMUP: usize = 5;
const LIST_SERVICES: usize = 1_000;
const TARGET_START_MS: f64 = 3.0;
const TARGET_STOP_MS: f64 = 3.0;
const TARGET_LIST_MS: f64 = 20.0;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument or `--list` from a harness-style
    // invocation has nothing to select here, so everything always runs.
    let n = std::env::var("TEND_BENCH_N")
        .ok()
        .map(|v| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| panic!("TEND_BENCH_N must be a positive integer, got {v:?}"))
        })
        .unwrap_or(200);
    let list_n = n.div_ceil(2);

    let bin = tend_binary();
    print_context(&bin);

    // Floors: process spawn alone, and opening a fresh database.
    let (floor, list_empty) = {
        let home = tempfile::tempdir().expect("creating a temporary home");
        let tend = Tend::new(&bin, home.path());
        for _ in 0..WARMUP {
            tend.run(&["--version"]);
            tend.run(&["list"]);
        }
        (
            Stats::new((0..list_n).map(|_| tend.time(&["--version"]).0).collect()),
            Stats::new((0..list_n).map(|_| tend.list_timed(0)).collect()),
        )
    };

    // 1. start, exec confirmed. Each phase gets a fresh home, so both start and stop
    //    are measured from the same database state (see `wal_note`).
    let start_home = tempfile::tempdir().expect("creating a temporary home");
    let mut start_tend = Tend::new(&bin, start_home.path());
    start_tend.run(&["add", "svc", "--", "sleep", "1000000"]);
    for _ in 0..WARMUP {
        start_tend.start_svc();
        start_tend.stop_svc();
    }
    let start = Stats::new(
        (0..n)
            .map(|_| {
                let took = start_tend.start_svc();
                start_tend.stop_svc();
                took
            })
            .collect(),
    );
    let start_wal = wal_note(start_home.path());
    let start_leftovers = start_tend.cleanup();

    // 2. stop, the service exits on TERM.
    let stop_home = tempfile::tempdir().expect("creating a temporary home");
    let mut tend = Tend::new(&bin, stop_home.path());
    tend.run(&["add", "svc", "--", "sleep", "1000000"]);
    for _ in 0..WARMUP {
        tend.start_svc();
        tend.stop_svc();
    }
    let stop = Stats::new(
        (0..n)
            .map(|_| {
                tend.start_svc();
                tend.stop_svc()
            })
            .collect(),
    );
    let stop_wal = wal_note(stop_home.path());

    // Context for list: the stop phase's home, one (stopped) service.
    for _ in 0..WARMUP {
        tend.list_timed(1);
    }
    let list_one = Stats::new((0..list_n).map(|_| tend.list_timed(1)).collect());

    // 3. list with 1,000 services (s0000..s0999, not started) in a home of their own.
    let list_home = tempfile::tempdir().expect("creating a temporary home");
    let list_tend = Tend::new(&bin, list_home.path());
    let adding = Instant::now();
    for i in 0..LIST_SERVICES {
        list_tend.run(&["add", &format!("s{i:04}"), "--", "sleep", "1000000"]);
    }
    let add_took = adding.elapsed();
    for _ in 0..WARMUP {
        list_tend.list_timed(LIST_SERVICES);
    }
    let list = Stats::new(
        (0..list_n)
            .map(|_| list_tend.list_timed(LIST_SERVICES))
            .collect(),
    );

    let list_wal = wal_note(list_home.path());
    let leftovers = start_leftovers + tend.cleanup();
    list_tend.run(&["stop", "--all"]);

    println!();
    println!(
        "setup: {LIST_SERVICES} x `tend add` took {:.2} s ({:.2} ms each)",
        add_took.as_secs_f64(),
        ms(add_took) / LIST_SERVICES as f64
    );
    println!("state after each phase (WAL recovery on open costs time per WAL frame):");
    println!("  start phase home: {start_wal}");
    println!("  stop phase home:  {stop_wal}");
    println!("  list phase home:  {list_wal}");
    println!("context (not targets):");
    println!("  {}", floor.line("tend --version (spawn floor)"));
    println!("  {}", list_empty.line("tend list  (0, fresh home)"));
    println!("  {}", list_one.line("tend list  (1, stop home)"));
    let (procs, zombies) = process_counts();
    println!(
        "  processes on the system at the end: {procs} ({zombies} zombies), {}",
        load_average()
    );
    println!();
    println!("{}", start.line("tend start (exec confirmed)"));
    println!("{}", stop.line("tend stop  (exits on TERM)"));
    println!("{}", list.line("tend list  (1,000 services)"));
    println!(
        "targets: start <= {TARGET_START_MS} ms, stop <= {TARGET_STOP_MS} ms, \
         list of 1,000 <= {TARGET_LIST_MS} ms"
    );
    let verdict = |what: &str, s: &Stats, target: f64| {
        let m = ms(s.median());
        let ok = if m <= target { "ok" } else { "OVER TARGET" };
        format!("{what} {ok} ({m:.2} ms)")
    };
    println!(
        "median vs target: {}, {}, {}",
        verdict("start", &start, TARGET_START_MS),
        verdict("stop", &stop, TARGET_STOP_MS),
        verdict("list", &list, TARGET_LIST_MS)
    );
    if leftovers > 0 {
        println!(
            "cleanup: killed {leftovers} process group(s) still alive after `tend stop --all`"
        );
    }
}

/// Size of the database and its write-ahead log in `home`.
fn wal_note(home: &Path) -> String {
    let size = |f: &str| std::fs::metadata(home.join(f)).map_or(0, |m| m.len());
    let (db, wal) = (size("tend.db"), size("tend.db-wal"));
    // A WAL file is a 32-byte header and frames of (24-byte header + page); tend's
    // database uses 4 KiB pages.
    let frames = wal.saturating_sub(32) / (24 + 4096);
    format!(
        "tend.db {:.1} KiB, tend.db-wal {:.1} MiB (~{frames} frames)",
        db as f64 / 1024.0,
        wal as f64 / (1024.0 * 1024.0)
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sorted samples.
struct Stats(Vec<Duration>);

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Stats {
        assert!(!samples.is_empty());
        samples.sort();
        Stats(samples)
    }

    fn median(&self) -> Duration {
        let s = &self.0;
        if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2
        }
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:<29} median {:.2} ms  p90 {:.2} ms  min {:.2} ms  max {:.2} ms  (n={})",
            ms(self.median()),
            ms(self.pct(90.0)),
            ms(self.0[0]),
            ms(self.0[self.0.len() - 1]),
            self.0.len()
        )
    }
}

/// A service instance this bench started: enough to find it again at cleanup.
struct Started {
    pid: i32,
    pgid: i32,
    start_time: u64,
}

struct Tend {
    bin: PathBuf,
    home: PathBuf,
    started: Vec<Started>,
}

impl Tend {
    fn new(bin: &Path, home: &Path) -> Tend {
        Tend {
            bin: bin.to_path_buf(),
            home: home.to_path_buf(),
            started: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--home")
            .arg(&self.home)
            .args(args)
            .current_dir(&self.home)
            .env_remove("TEND_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `tend ARGS` to completion (stdout and stderr read to the end) and returns the
    /// wall time from spawn to exit; panics with stderr unless it exited 0.
    fn time(&self, args: &[&str]) -> (Duration, Output) {
        let mut cmd = self.command(args);
        let t = Instant::now();
        let out = cmd.output();
        let took = t.elapsed();
        let out = out.unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        if !out.status.success() {
            panic!(
                "`tend {}` failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (took, out)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.time(args).1
    }

    /// Times `tend start svc` and records the instance it reports.
    fn start_svc(&mut self) -> Duration {
        let (took, out) = self.time(&["start", "svc"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text
            .strip_prefix("svc: started (pid ")
            .and_then(|rest| rest.split(')').next())
            .and_then(|p| p.parse::<i32>().ok())
            .unwrap_or_else(|| panic!("unexpected `tend start` output: {text:?}"));
        let stat = read_stat(pid)
            .unwrap_or_else(|| panic!("started pid {pid} has no /proc/{pid}/stat right after"));
        self.started.push(Started {
            pid,
            pgid: stat.pgrp,
            start_time: stat.start_time,
        });
        took
    }

    /// Times `tend stop svc`; the service must have exited on the stop signal.
    fn stop_svc(&self) -> Duration {
        let (took, out) = self.time(&["stop", "svc"]);
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.starts_with("svc: stopped (pid ") || text.contains("killed") {
            panic!(
                "unexpected `tend stop` output: {text:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        took
    }

    /// Times `tend list` (stdout piped and read to the end) and checks its row count.
    fn list_timed(&self, services: usize) -> Duration {
        let (took, out) = self.time(&["list"]);
        let rows = out.stdout.iter().filter(|&&b| b == b'\n').count();
        // A header line plus one line per service.
        assert!(
            rows > services,
            "`tend list` printed {rows} lines for {services} services:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        took
    }

    /// `tend stop --all`, then kills any group of ours that still has a live member.
    /// Returns how many groups had to be killed.
    fn cleanup(&mut self) -> usize {
        let stop_all = self.command(&["stop", "--all"]).output();
        match stop_all {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: `tend stop --all` failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("warning: cannot run `tend stop --all`: {e}"),
        }
        let mut killed = 0;
        for s in self.started.drain(..) {
            if let Some(st) = read_stat(s.pid) {
                if st.start_time == s.start_time && !matches!(st.state, b'Z' | b'X') {
                    eprintln!(
                        "warning: pid {} (group {}) still alive after `tend stop --all`; killing",
                        s.pid, s.pgid
                    );
                    // SAFETY: plain syscall; the identity check above makes the group ours.
                    unsafe { libc::killpg(s.pgid, libc::SIGKILL) };
                    killed += 1;
                }
            }
        }
        killed
    }
}

impl Drop for Tend {
    /// On a panic mid-run, still take down whatever this bench started.
    fn drop(&mut self) {
        if !self.started.is_empty() {
            self.cleanup();
        }
    }
}

struct Stat {
    state: u8,
    pgrp: i32,
    start_time: u64,
}

/// Fields 3 (state), 5 (pgrp) and 22 (start time) of /proc/PID/stat.
fn read_stat(pid: i32) -> Option<Stat> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &line[line.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(Stat {
        state: *fields.first()?.as_bytes().first()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Other work on the machine skews every figure: say how busy it was.
fn load_average() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let first: Vec<&str> = avg.split_whitespace().take(3).collect();
    format!("load average {}", first.join(" "))
}

/// (processes, zombies) currently visible in /proc.
fn process_counts() -> (usize, usize) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    let pids: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    let zombies = pids
        .iter()
        .filter(|&&p| read_stat(p).is_some_and(|s| s.state == b'Z'))
        .count();
    (pids.len(), zombies)
}

/// The `tend` binary: `$TEND_BIN`, else the one cargo built for this bench, else
/// `target/release/tend` beside this bench's executable, built if missing.
fn tend_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TEND_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "TEND_BIN={} is not a file", p.display());
        return p;
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_tend").map(PathBuf::from) {
        if p.is_file() {
            return p;
        }
    }
    // target/release/deps/cli-HASH -> target/release/tend
    let exe = std::env::current_exe().expect("locating the bench executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the bench runs from target/<profile>/deps");
    let p = dir.join("tend");
    if !p.is_file() {
        eprintln!("{} missing; building it", p.display());
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--bin", "tend"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build --release --bin tend failed");
        assert!(p.is_file(), "{} still missing after the build", p.display());
    }
    p
}

fn print_context(bin: &Path) {
    let mut s = String::new();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let (procs, zombies) = process_counts();
    let _ = writeln!(s, "tend CLI benchmark");
    let _ = writeln!(s, "  binary: {}", bin.display());
    let _ = writeln!(s, "  nproc: {nproc}, kernel: {kernel}");
    let _ = writeln!(s, "  build: {}", build_profile());
    let _ = writeln!(s, "  source: {}", source_state());
    let _ = writeln!(
        s,
        "  processes on the system at the start: {procs} ({zombies} zombies), {}",
        load_average()
    );
    print!("{s}");
}

/// The commit measured, and whether src/ had uncommitted changes (figures from a dirty
/// tree are not comparable with a commit's).
fn source_state() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--",
                "src",
                "Cargo.toml",
                "Cargo.lock",
            ])
            .map(|s| s.lines().count())
            .unwrap_or(0);
            if dirty == 0 {
                format!("commit {head}, src clean")
            } else {
                format!("commit {head} + uncommitted changes in {dirty} file(s) of src/, Cargo.toml, Cargo.lock")
            }
        }
        None => "not a git checkout".into(),
    }
}

/// The LTO and codegen settings of the release profile (which `cargo bench` uses), read
/// from Cargo.toml, with any `CARGO_PROFILE_*` override in the environment.
fn build_profile() -> String {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .unwrap_or_default();
    let mut in_release = false;
    let mut settings = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_release = line == "[profile.release]";
        } else if in_release && (line.starts_with("lto") || line.starts_with("codegen-units")) {
            settings.push(line.replace(' ', ""));
        }
    }
    if !settings.iter().any(|s| s.starts_with("lto")) {
        settings.push("lto=false (default)".into());
    }
    for var in ["CARGO_PROFILE_RELEASE_LTO", "CARGO_PROFILE_BENCH_LTO"] {
        if let Ok(v) = std::env::var(var) {
            settings.push(format!("{var}={v} (overrides)"));
        }
    }
    let opt = if cfg!(debug_assertions) {
        "debug assertions ON (not an optimized build)"
    } else {
        "optimized"
    };
    format!("release profile, {}, {opt}", settings.join(", "))
}
