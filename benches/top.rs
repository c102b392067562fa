//! What `tend top` costs while it watches 100 services: it runs in a tmux pane (a
//! private tmux server) at its default 1 s interval, and its CPU time (utime + stime from
//! /proc/PID/stat) is read before and after a minute of watching. Twice: with the
//! services in cgroups (CPU and memory read from the cgroup; where tend can create them)
//! and with `TEND_CGROUP=off` (read from /proc for each process tree).
//!
//! ```text
//! cargo bench --bench top
//! ```
//!
//! `TEND_BIN` picks the binary (default: the release build beside this bench);
//! `TEND_BENCH_SECS` how long each mode watches (default 60); `TEND_BENCH_N` the number
//! of services (default 100). Needs tmux.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Tend;

/// The figure the README promises: at most this much CPU per minute of watching.
const TARGET_CPU_SECS_PER_MIN: f64 = 1.0;

fn main() {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("tmux is not installed: nothing measured");
        return;
    }
    let secs: u64 = env_num("TEND_BENCH_SECS", 60);
    let n: usize = env_num("TEND_BENCH_N", 100) as usize;
    println!("tend top watching {n} services for {secs} s per mode, default 1 s interval");
    for (mode, cgroup) in [("cgroup", true), ("/proc", false)] {
        measure(mode, cgroup, n, Duration::from_secs(secs));
    }
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

fn measure(mode: &str, cgroup: bool, n: usize, watch: Duration) {
    // Declared before the home, so it is dropped after the home stopped its services.
    let _cleanup: Option<CgroupRoot>;
    let t = Tend::new();
    for i in 0..n {
        t.run(&["add", &format!("svc{i:03}"), "--", "sleep", "1000000"]);
    }
    let mut start = Command::new(&t.bin);
    start
        .arg("--home")
        .arg(t.home.path())
        .args(["start", "--all"])
        .env_remove("TEND_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if !cgroup {
        start.env("TEND_CGROUP", "off");
    }
    assert!(start.status().expect("tend start --all").success());
    let status: serde_json::Value =
        serde_json::from_str(&t.run(&["status", "svc000", "--json"])).expect("status JSON");
    // The home's cgroup (`tend-HASH`, above `svc000.service/run-...`), removed at the end.
    let root = status["cgroup"]["path"]
        .as_str()
        .and_then(|p| std::path::Path::new(p).ancestors().nth(2))
        .map(std::path::Path::to_path_buf);
    _cleanup = root.clone().map(CgroupRoot);
    if cgroup && root.is_none() {
        println!("{mode:>7}: tend cannot create cgroups here; skipped");
        return;
    }

    let tmux = Tmux(format!("tend-top-bench-{}", std::process::id()));
    let script = format!(
        "exec '{}' --home '{}' top",
        t.bin.display(),
        t.home.path().display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "50",
        &script,
    ]);
    let want = format!("{n} service(s), {n} running");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tmux
        .run(&["capture-pane", "-p", "-t", "top"])
        .contains(&want)
    {
        assert!(Instant::now() < deadline, "tend top never showed {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid: i32 = tmux
        .run(&["display", "-p", "-t", "top", "#{pane_pid}"])
        .trim()
        .parse()
        .expect("pane pid");
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(watch);
    assert!(common::alive(pid), "tend top died while watching");
    let (cpu1, wall) = (cpu_ticks(pid), t0.elapsed());
    let rss_kib = rss_kib(pid);
    drop(tmux);

    let hz = 100.0; // USER_HZ: /proc/PID/stat counts in 1/100 s on Linux
    let cpu = (cpu1 - cpu0) as f64 / hz;
    let per_min = cpu * 60.0 / wall.as_secs_f64();
    println!(
        "{mode:>7}: {cpu:.2} s CPU in {:.0} s = {per_min:.2} s per minute ({:.2}% of one core), \
         RSS {} KiB {}",
        wall.as_secs_f64(),
        per_min / 60.0 * 100.0,
        rss_kib,
        if per_min <= TARGET_CPU_SECS_PER_MIN {
            "(within the 1 s/min target)"
        } else {
            "(OVER the 1 s/min target)"
        }
    );
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("tend top runs");
    let rest = stat.rsplit_once(')').expect("stat line").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3: utime is field 14, stime field 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Removes a home's (empty) cgroup tree on drop, after the services were stopped.
struct CgroupRoot(std::path::PathBuf);

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        fn remove(dir: &std::path::Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        remove(&self.0);
    }
}

/// A private tmux server; dropping it kills the server and `tend top` with it.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // tmux leaves its socket file behind when its server is killed.
        let socket = Command::new("tmux")
            .args(["-L", &self.0, "display", "-p", "#{socket_path}"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .arg("kill-server")
            .status();
        if !socket.trim().is_empty() {
            let _ = std::fs::remove_file(socket.trim());
        }
    }
}
