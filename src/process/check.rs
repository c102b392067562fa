//! Running a check command (`ready = { cmd = ... }`, `health = { cmd = ... }`): `sh -c`
//! in a process group of its own, its output captured, killed with its whole group at
//! its timeout. In the daemon the event loop reaps every child, so the status may come
//! from its [`ExitBoard`] instead of our own `waitpid`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::handle::Handle;
use super::reap::ExitBoard;

/// How a check command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    /// The `waitpid` status word, when known.
    pub status: Option<i32>,
    /// It was killed at its timeout.
    pub timed_out: bool,
    /// The start of what it wrote to stdout and stderr.
    pub output: String,
}

impl Ran {
    pub fn passed(&self) -> bool {
        !self.timed_out && self.status == Some(0)
    }
}

/// Output kept per stream.
const OUTPUT_CAP: usize = 2048;

/// Runs `sh -c cmd` in `cwd` with exactly `env`, for at most `timeout`.
pub fn run(
    cmd: &str,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    board: Option<&ExitBoard>,
) -> std::io::Result<Ran> {
    use std::os::unix::process::CommandExt;
    let mark = board.map(ExitBoard::mark);
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout ends whatever it started too.
        .process_group(0)
        .spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        // A reader per pipe; detached, since a helper that left the group may keep the
        // pipe open long after the check is over.
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stream.take(OUTPUT_CAP as u64).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    drop(tx);
    let pinned = Handle::pin(pid);
    let exited = match &pinned {
        Some((h, _)) => h.wait(timeout),
        // Gone already (exited and reaped by the daemon's loop).
        None => true,
    };
    let mut timed_out = false;
    if !exited {
        timed_out = true;
        // The leader is alive (not reaped), so its group number is still its own.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let status = match child.wait() {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            Some(s.into_raw())
        }
        // Reaped by the daemon's event loop: it posts the status.
        Err(_) => match (board, mark) {
            (Some(b), Some(mark)) => b.wait_for_child(pid, mark, Duration::from_secs(1)),
            _ => None,
        },
    };
    let mut output = Vec::new();
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(part) => output.extend(part),
            Err(_) => break,
        }
    }
    Ok(Ran {
        status,
        timed_out,
        output: String::from_utf8_lossy(&output).trim().to_string(),
    })
}
