//! `tend top` driven for real: the binary runs in a tmux pane of a private tmux server
//! (its own socket), keys go in with `send-keys`, and the screen comes back with
//! `capture-pane`. Every wait is a deadline loop on what the screen shows.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{alive, wait_until, Env, TEND};

/// A screen the view should reach well within this, even on a loaded machine.
const SCREEN: Duration = Duration::from_secs(20);

/// A private tmux server with one session running `tend top`; dropping it kills the
/// server (and with it the pane's processes).
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// `tend --home HOME top ARGS` in a WIDTHxHEIGHT window; after it exits the pane
    /// prints `TOP-EXITED:<code>` and stays. `None` (with the reason printed) when tmux
    /// is missing.
    pub fn start(env: &Env, args: &str, width: u16, height: u16) -> Option<Tmux> {
        Tmux::start_command(env, &format!("top {args}"), width, height)
    }

    /// `tend --home HOME COMMAND` (a subcommand and its arguments, as shell words), as
    /// [`Tmux::start`].
    pub fn start_command(env: &Env, command: &str, width: u16, height: u16) -> Option<Tmux> {
        if !crate::util::require_tool("tmux") {
            return None;
        }
        let socket = format!(
            "tend-top-{}-{}",
            std::process::id(),
            env.home().file_name().unwrap().to_string_lossy()
        );
        let t = Tmux { socket };
        let script = format!(
            "{} --home {} {command}; echo TOP-EXITED:$?; exec sleep 600",
            quote(Path::new(TEND)),
            quote(env.home())
        );
        let ok = t
            .tmux(&[
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                "-c",
                &env.work().to_string_lossy(),
                &script,
            ])
            .status
            .success();
        assert!(ok, "tmux new-session failed");
        Some(t)
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .env_remove("NO_COLOR")
            // The pane runs its command with the user's shell, which for a system user
            // (CI's unprivileged one) is nologin.
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::null())
            .output()
            .expect("run tmux")
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "top"]).stdout)
            .into_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success(), "send-keys {keys:?}");
    }

    pub fn display(&self, format: &str) -> String {
        String::from_utf8_lossy(&self.tmux(&["display", "-p", "-t", "top", format]).stdout)
            .trim()
            .to_string()
    }

    fn resize(&self, width: u16, height: u16) {
        let (w, h) = (width.to_string(), height.to_string());
        let out = self.tmux(&["resize-window", "-t", "top", "-x", &w, "-y", &h]);
        assert!(out.status.success(), "resize-window: {out:?}");
    }

    /// Waits until `cond` holds for the screen; fails with the last screen otherwise.
    pub fn wait(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let held = wait_until(SCREEN, || {
            last = self.screen();
            cond(&last)
        });
        assert!(held, "the screen never showed {what}:\n{last}");
        last
    }

    /// The pid of `tend top` (the child of the pane's shell).
    fn top_pid(&self) -> i32 {
        let shell = self.display("#{pane_pid}");
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .expect("the pane's shell has children");
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("tend top runs in the pane")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // tmux leaves its socket file behind when its server is killed.
        let socket = self.display("#{socket_path}");
        let _ = self.tmux(&["kill-server"]);
        if !socket.is_empty() {
            let _ = std::fs::remove_file(socket);
        }
    }
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"))
}

/// The screen line of service `name` (its first cell), if shown.
pub fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
}

pub fn row_has(screen: &str, name: &str, word: &str) -> bool {
    row(screen, name).is_some_and(|l| l.split_whitespace().any(|w| w == word))
}

/// Back on the main screen with the cursor shown, and `tend top` exited 0.
pub fn assert_restored(t: &Tmux) {
    t.wait("top's exit", |s| s.contains("TOP-EXITED:0"));
    assert_eq!(
        t.display("#{alternate_on}"),
        "0",
        "still on the alternate screen"
    );
    assert_eq!(t.display("#{cursor_flag}"), "1", "cursor still hidden");
}

#[test]
fn top_shows_services_and_its_keys_stop_start_and_restart() {
    let env = Env::new();
    for name in ["alpha", "beta", "gamma"] {
        env.add_fixture(name, &[], &["--marker", name]);
    }
    env.ok(&["start", "alpha", "beta"]);
    let Some(t) = Tmux::start(&env, "--interval 200ms", 120, 30) else {
        return;
    };
    let s = t.wait("the services", |s| {
        row_has(s, "alpha", "running")
            && row_has(s, "beta", "running")
            && row_has(s, "gamma", "stopped")
    });
    for col in [
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "CPU%",
        "MEM",
    ] {
        assert!(s.contains(col), "no {col} column:\n{s}");
    }
    let beta = env.pid("beta").expect("beta runs");
    assert!(
        row_has(&s, "beta", &beta.to_string()),
        "beta's pid not shown:\n{s}"
    );

    // The selection starts on the first row: one down is beta.
    t.keys(&["j", "x"]);
    let s = t.wait("beta stopped", |s| {
        row_has(s, "beta", "stopped") && s.contains("beta: stopped (pid")
    });
    assert!(row_has(&s, "alpha", "running"), "alpha was touched:\n{s}");
    assert_eq!(
        env.tend(&["status", "beta"]).code,
        3,
        "tend status disagrees"
    );
    assert!(!alive(beta));

    t.keys(&["s"]);
    t.wait("beta started", |s| {
        row_has(s, "beta", "running") && s.contains("beta: started (pid")
    });
    let started = env.pid("beta").expect("beta runs again");

    t.keys(&["r"]);
    t.wait("beta restarted", |s| {
        s.contains("beta: stopped (pid") && s.contains(", started (pid")
    });
    let restarted = env.pid("beta").expect("beta runs after restart");
    assert_ne!(started, restarted);
    assert!(env.pid("alpha").is_some());

    t.keys(&["q"]);
    assert_restored(&t);
}

#[test]
fn top_filters_by_name_and_shows_a_log() {
    let env = Env::new();
    env.add_fixture("web", &[], &["--marker", "hello-from-web"]);
    env.add_fixture("worker", &[], &["--marker", "hello-from-worker"]);
    env.add_fixture("db", &[], &[]);
    env.ok(&["start", "web", "worker"]);
    let Some(t) = Tmux::start(&env, "", 120, 30) else {
        return;
    };
    t.wait("the services", |s| {
        row(s, "db").is_some() && row(s, "worker").is_some()
    });

    t.keys(&["/", "w", "o", "r"]);
    t.wait("the filter being typed", |s| s.contains("/wor"));
    t.keys(&["Enter"]);
    let s = t.wait("worker alone", |s| {
        row(s, "worker").is_some() && row(s, "web").is_none() && row(s, "db").is_none()
    });
    assert!(s.contains("filter: wor"), "{s}");

    // The log pane shows the selected (the only visible) service's log.
    t.keys(&["l"]);
    t.wait("worker's log", |s| {
        s.contains("worker: log") && s.contains("hello-from-worker")
    });
    // Esc closes the pane first, then a filter that matches nothing says so.
    t.keys(&["Escape"]);
    t.wait("the pane closed", |s| !s.contains("worker: log"));
    t.keys(&["/", "z", "z", "Enter"]);
    t.wait("no match", |s| s.contains("no service matches the filter"));
    t.keys(&["/", "Escape"]);
    t.wait("all again", |s| {
        row(s, "db").is_some() && row(s, "web").is_some()
    });
    t.keys(&["Escape"]);
    assert_restored(&t);
}

#[test]
fn top_survives_tiny_windows_and_resizes_and_gives_the_terminal_back_on_sigterm() {
    let env = Env::new();
    env.add_fixture("svc", &[], &[]);
    env.ok(&["start", "svc"]);
    let Some(t) = Tmux::start(&env, "--interval 100ms", 120, 30) else {
        return;
    };
    t.wait("the full table", |s| {
        s.contains("LAST EXIT") && row_has(s, "svc", "running")
    });

    // 40 columns: the history columns go, the name, state, CPU and memory stay.
    t.resize(40, 10);
    let s = t.wait("the narrow table", |s| {
        row_has(s, "svc", "running") && s.contains("CPU%") && !s.contains("LAST EXIT")
    });
    assert!(s.lines().all(|l| l.chars().count() <= 40), "{s}");
    t.resize(12, 2);
    t.wait("the too-small note", |s| s.contains("tend top"));
    t.resize(120, 30);
    t.wait("the full table again", |s| {
        s.contains("LAST EXIT") && row(s, "svc").is_some()
    });

    // Still the same process, never crashed; SIGTERM ends it cleanly.
    let pid = t.top_pid();
    // SAFETY: kill on the pid of the tend top this test started, which is alive.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_restored(&t);
    assert!(wait_until(SCREEN, || !alive(pid)));
    assert!(env.pid("svc").is_some(), "top's exit touched the service");
}

#[test]
fn top_acts_through_a_running_daemon() {
    let env = Env::new();
    env.add_fixture("svc", &[], &[]);
    env.ok(&["daemon"]);
    env.ok(&["start", "svc"]);
    let Some(t) = Tmux::start(&env, "--interval 200ms", 120, 30) else {
        return;
    };
    t.wait("the daemon and the service", |s| {
        s.contains("daemon running") && row_has(s, "svc", "running")
    });
    t.keys(&["x"]);
    t.wait("svc stopped", |s| {
        row_has(s, "svc", "stopped") && s.contains("svc: stopped (pid")
    });
    // The daemon carried it out: its event log has the stop.
    let events = env.ok(&["events", "svc"]).stdout;
    assert!(events.contains("stop"), "{events}");
    t.keys(&["C-c"]);
    assert_restored(&t);
}

#[test]
fn top_refuses_what_is_not_a_terminal_and_a_bad_interval() {
    let env = Env::new();
    let out = env.tend(&["top"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(
        out.stderr.starts_with("tend: tend top needs a terminal"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty());
    for bad in ["10ms", "2m", "soon"] {
        let out = env.tend(&["top", "--interval", bad]);
        assert_eq!(out.code, 2, "{bad}: {out:?}");
        assert!(
            out.stderr.starts_with("tend: invalid --interval"),
            "{bad}: {out:?}"
        );
    }
}

#[test]
fn top_shows_a_failed_action_on_the_status_line() {
    let env = Env::new();
    env.ok(&["add", "broken", "--", "/nonexistent/tend-top-program"]);
    let Some(t) = Tmux::start(&env, "", 120, 30) else {
        return;
    };
    t.wait("the service", |s| row_has(s, "broken", "stopped"));
    t.keys(&["s"]);
    let s = t.wait("the error", |s| s.contains("error: broken:"));
    assert!(s.contains("no such program"), "{s}");
    assert!(row_has(&s, "broken", "stopped"), "{s}");
    t.keys(&["q"]);
    assert_restored(&t);
}

#[test]
fn top_gives_the_terminal_back_on_sighup() {
    let env = Env::new();
    env.add_fixture("svc", &[], &[]);
    let Some(t) = Tmux::start(&env, "", 80, 20) else {
        return;
    };
    t.wait("the service", |s| row_has(s, "svc", "stopped"));
    assert_eq!(
        t.display("#{alternate_on}"),
        "1",
        "top is not on the alternate screen"
    );
    let pid = t.top_pid();
    // SAFETY: kill on the pid of the tend top this test started, which is alive.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert_restored(&t);
}

/// The terminal itself goes away (its tmux server killed: the pty hangs up): `tend top`
/// ends instead of spinning on a terminal that reads as empty forever.
#[test]
fn top_ends_when_its_terminal_hangs_up() {
    let env = Env::new();
    env.add_fixture("svc", &[], &[]);
    let Some(t) = Tmux::start(&env, "", 80, 20) else {
        return;
    };
    t.wait("the service", |s| row_has(s, "svc", "stopped"));
    let pid = t.top_pid();
    drop(t);
    let ended = wait_until(Duration::from_secs(30), || !alive(pid));
    if !ended {
        // SAFETY: kill on the pid of the tend top this test started (still alive).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(
        ended,
        "tend top (pid {pid}) still ran after its terminal hung up"
    );
}
