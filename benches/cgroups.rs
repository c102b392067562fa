//! What cgroup containment costs a start and a stop: `tend start` and `tend stop` (no
//! daemon) of a `sleep` service, alternating iteration by iteration between cgroup
//! containment and `TEND_CGROUP=off`, so machine noise falls on both alike.
//!
//! ```text
//! sudo cargo bench --bench cgroups        # needs a cgroup tend may create (root here)
//! ```
//!
//! `TEND_BIN` picks the binary (default: the release build beside this bench, built if
//! missing); `TEND_BENCH_N` the iterations per mode (default 200). Each home's cgroup is
//! removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TARGET_ADDED_MS: f64 = 0.3;

fn main() {
    let n: usize = std::env::var("TEND_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(200);
    let bin = tend_binary();
    let home = tempfile::tempdir().expect("temporary home");
    let run = |cgroups: bool, args: &[&str]| -> Duration {
        let mut c = Command::new(&bin);
        c.arg("--home").arg(home.path()).args(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if cgroups {
            c.env_remove("TEND_CGROUP");
        } else {
            c.env("TEND_CGROUP", "off");
        }
        let t = Instant::now();
        let out = c.output().expect("running tend");
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "tend {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    };
    run(true, &["add", "svc", "--", "sleep", "1000000"]);
    run(true, &["start", "svc"]);
    let status = Command::new(&bin)
        .arg("--home")
        .arg(home.path())
        .args(["status", "svc", "--json"])
        .output()
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let contained = v["cgroup"]["path"].as_str().map(str::to_string);
    run(true, &["stop", "svc"]);
    let Some(path) = contained else {
        println!("cgroups are not available to this user here: nothing to compare");
        return;
    };
    println!("binary: {}", bin.display());
    println!("cgroup of the instance: {path}");
    let (mut start_cg, mut stop_cg, mut start_pg, mut stop_pg) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 5 {
        for cgroups in [i % 2 == 0, i % 2 != 0] {
            let s = run(cgroups, &["start", "svc"]);
            let t = run(cgroups, &["stop", "svc"]);
            if i >= 5 {
                let (a, b) = if cgroups {
                    (&mut start_cg, &mut stop_cg)
                } else {
                    (&mut start_pg, &mut stop_pg)
                };
                a.push(s);
                b.push(t);
            }
        }
    }
    println!("n = {n} per mode, interleaved");
    println!("| command | cgroup (median, min) | process group (median, min) | added by cgroups (median) |");
    println!("| --- | --- | --- | --- |");
    for (what, cg, pg) in [
        ("start", &mut start_cg, &mut start_pg),
        ("stop", &mut stop_cg, &mut stop_pg),
    ] {
        let (mc, nc) = median_min(cg);
        let (mp, np) = median_min(pg);
        println!(
            "| tend {what} | {mc:.2} ms, {nc:.2} | {mp:.2} ms, {np:.2} | {:+.2} ms{} |",
            mc - mp,
            if what == "start" {
                format!(" (target ≤ +{TARGET_ADDED_MS} ms)")
            } else {
                String::new()
            }
        );
    }
    // The home's cgroup: empty now (every start was stopped); remove it.
    if let Some(root) = Path::new(&path).parent().and_then(Path::parent) {
        let _ = std::fs::remove_dir(root.join("svc.service"));
        let _ = std::fs::remove_dir(root.join("supervisor"));
        let _ = std::fs::remove_dir(root);
    }
}

fn median_min(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[0]))
}

fn tend_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TEND_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("bench executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the bench runs from target/<profile>/deps");
    let p = dir.join("tend");
    if !p.is_file() {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--bin", "tend"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build");
        assert!(status.success());
    }
    p
}
