//! Scaffolding shared by the daemon and notify benchmarks.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(false)
}

/// The tend binary cargo built for the bench (the release profile), or `TEND_BIN`.
pub fn tend_binary() -> PathBuf {
    std::env::var_os("TEND_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tend")))
}

/// `tend --home HOME ...` in a temporary home; dropping it stops every service and the
/// daemon, whatever happened.
pub struct Tend {
    pub bin: PathBuf,
    pub home: tempfile::TempDir,
}

impl Tend {
    pub fn new() -> Tend {
        Tend {
            bin: tend_binary(),
            home: tempfile::tempdir().expect("temporary home"),
        }
    }

    /// Runs tend and returns its stdout; panics with its stderr if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run tend");
        assert!(
            out.status.success(),
            "tend {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--home")
            .arg(self.home.path())
            .args(args)
            .env_remove("TEND_HOME")
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Tend {
    fn drop(&mut self) {
        for args in [&["daemon", "stop", "--all"][..], &["stop", "--all"][..]] {
            let _ = self
                .command(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
