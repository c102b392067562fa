//! `tend up`: a services file in the foreground, for a developer's terminal or as a
//! container's PID 1.
//!
//! # How it runs
//!
//! 1. The file (`./tend.toml`, else `./Procfile`, or `-f FILE`) gets a state home of its
//!    own: `<state dir>/up/<hash of the file's canonical path>` unless `--home` or
//!    `TEND_HOME` names one, so two projects never mix. `up.lock` in it (an OFD lock,
//!    released however `up` ends) makes a second `tend up` of the same home a clear
//!    error.
//! 2. Services an earlier run left running are stopped; the file is applied with
//!    `--prune` (the home is the file's).
//! 3. A daemon for the home is started as a child of `up`, in a process group of its own
//!    (a Ctrl-C on the terminal is `up`'s to handle), tied to `up` by
//!    `PR_SET_PDEATHSIG`: when `up` ends, however it ends (SIGKILL included), the kernel
//!    sends the daemon SIGTERM, and a tied daemon stops every service in reverse
//!    dependency order before it exits. The daemon restarts what crashes (each service's
//!    `restart` policy), runs health checks and the `watch` of files, exactly as
//!    `tend daemon` does: one code path.
//! 4. The services are started through the daemon (so it is their parent), each after
//!    what it requires is ready, independent ones side by side (see [`start_services`]),
//!    while `up` follows their logs merged and prefixed as `tend logs --all -f` prints
//!    them (or shows `tend top` with `--tui`).
//! 5. Ctrl-C or SIGTERM: SIGTERM to the daemon, which stops everything; `up` prints the
//!    output until the daemon has exited. A second Ctrl-C is a second SIGTERM to the
//!    daemon, whose stops then send SIGKILL at once instead of waiting out their
//!    timeouts.
//!
//! # As PID 1
//!
//! `--init`, or when `up` finds itself PID 1: every process of the namespace whose
//! parent ends is re-parented to `up`, which reaps whatever exits on every turn of its
//! loop (at least ten times a second), so none stays a zombie; SIGTERM/SIGINT stop
//! everything as above. The daemon logs to standard error instead of `daemon.log`.
//! (In every mode SIGHUP is forwarded to every service, and the end of a service marked
//! `required` stops everything, `up` then exiting with that service's status.)
//!
//! # Exit status
//!
//! 0 after a clean stop (Ctrl-C, SIGTERM); the first failure's otherwise: a service that
//! could not start (the code `tend start` would give), or with `--exit-on-failure` (or a
//! `required` service) the status of the service that ended: its exit code, or 128 +
//! the signal that killed it; 1 when the daemon itself failed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use sha2::Digest;

use super::lifecycle::{self, Answer};
use super::session::{notices, open_supervisor, Failure, Session};
use super::term::escape;
use crate::api::{Selection, Verb};
use crate::cli::{LogsArgs, UpArgs, Which};
use crate::daemon::client;
use crate::error::{exit, io_reason, Error, Result};
use crate::home::Home;
use crate::process::init;
use crate::record::event;
use crate::service::{self, graph};
use crate::supervisor::Supervisor;

/// How long the daemon may take to answer after it was started.
const DAEMON_START: Duration = Duration::from_secs(30);
/// How often the events are read for exits (`--exit-on-failure`, `required`).
const EXITS_EVERY: Duration = Duration::from_millis(200);

/// The state home `tend up` uses for `file` when none is given: under the user's state
/// directory (as `tend` resolves it), `up/` and the first 16 hex digits of the SHA-256 of
/// the file's canonical path.
pub fn home_for(file: &Path) -> Result<Home> {
    let base = Home::resolve(None, false)?;
    let digest = sha2::Sha256::digest(file.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Home::resolve(Some(&base.root().join("up").join(hex)), false)
}

/// `tend up [-f FILE] [NAME...] [--exit-on-failure] [--tui] [--init]`.
pub fn run(
    s: &mut Session,
    explicit_home: Option<&Path>,
    home_from_env: bool,
    a: UpArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    for n in &a.names {
        service::validate_name(n)?;
    }
    let as_init = a.init || init::is_pid1();
    let here = std::env::current_dir().map_err(|e| Error::Io {
        path: ".".into(),
        reason: io_reason(&e),
    })?;
    let file = match &a.file {
        Some(f) => f.clone(),
        None if !here.join("tend.toml").exists() && here.join("Procfile").exists() => {
            PathBuf::from("Procfile")
        }
        None => PathBuf::from("tend.toml"),
    };
    let procfile = file
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("Procfile"));
    let canonical =
        std::fs::canonicalize(service::absolute(&here, &file)).map_err(|e| Error::Io {
            path: file.clone(),
            reason: io_reason(&e),
        })?;
    let home = match explicit_home.filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => Home::resolve(Some(p), home_from_env)?,
        None => home_for(&canonical)?,
    };
    // The file first: a mistake in it (or a name it lacks) changes nothing, not even
    // the creation of the home.
    let (parsed, owner) = super::apply::read_file_as(&home, &file, procfile)?;
    for n in &a.names {
        if !parsed.services.iter().any(|d| &d.service.name == n) {
            return Err(Error::UnknownService(n.clone()).into());
        }
    }
    home.ensure()?;
    let lock_path = home.root().join("up.lock");
    let lock = crate::process::lock::acquire(&lock_path).map_err(|e| Error::Io {
        path: lock_path.clone(),
        reason: format!("cannot lock: {}", io_reason(&e)),
    })?;
    let Some(lock) = lock else {
        let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
        let mut lines = holder.lines();
        let pid = lines.next().unwrap_or("?").trim().to_string();
        let what = lines.next().unwrap_or("").trim().to_string();
        return Err(Error::UpRunning {
            home: home.root().to_path_buf(),
            holder: format!(
                "pid {pid}{}",
                if what.is_empty() {
                    "".into()
                } else {
                    format!(", {what}")
                }
            ),
        }
        .into());
    };
    let _ = lock.note(&format!("file {}", canonical.display()));
    if client::present(&home) {
        return Err(Error::DaemonRunning {
            home: home.root().to_path_buf(),
            pid: client::lock_pid(&home).map_or("unknown".into(), |p| p.to_string()),
        }
        .into());
    }
    let mut sup = open_supervisor(&home)?;
    let running: Vec<String> = sup
        .list()?
        .into_iter()
        .filter(|st| st.state.is_running())
        .map(|st| st.service.name)
        .collect();
    drop(sup);
    if !running.is_empty() {
        eprintln!(
            "tend: up: stopping {} left running by an earlier run",
            running.join(", ")
        );
        lifecycle::carry_out(&home, Verb::Stop, Selection::All, None)?;
    }
    let mut sup = open_supervisor(&home)?;
    let applied = sup.apply(&parsed, &owner, true);
    notices(&mut sup);
    applied?;
    let services = sup.services()?;
    let chosen: Vec<String> = if a.names.is_empty() {
        services.iter().map(|d| d.name.clone()).collect()
    } else {
        graph::start_order(&services, &a.names)
    };
    let required: Vec<String> = services
        .iter()
        .filter(|d| d.settings.required)
        .map(|d| d.name.clone())
        .collect();
    let baseline = sup.events(None, 1)?.last().map_or(0, |e| e.id);
    drop(sup);

    let flags = Flags::register()?;
    let daemon = start_daemon(&home, as_init)?;
    let mut up = Up {
        home: home.clone(),
        daemon,
        daemon_status: None,
        flags,
        as_init,
        exit_on_failure: a.exit_on_failure,
        chosen: chosen.clone(),
        required,
        presses: 0,
        stopping: false,
        code: exit::OK,
        started: None,
        reported: Default::default(),
        sup: None,
        seen: baseline,
        exits_at: Instant::now(),
        begun: Instant::now(),
        quit: Arc::new(AtomicBool::new(false)),
        done: false,
    };
    if let Err(e) = up.wait_daemon() {
        up.abandon();
        return Err(e.into());
    }
    up.started = Some(start_services(&home, &services, &chosen));
    let result = if a.tui {
        up.run_tui()
    } else {
        let args = LogsArgs {
            which: Which {
                names: chosen,
                all: false,
            },
            lines: Some(0),
            follow: true,
            since: None,
            json: false,
        };
        super::logs::run_until(&home, args, out, Some(&mut || Ok(up.tick())))
    };
    if let Err(e) = result {
        // Output failed (a closed pipe): the services still stop.
        up.abandon();
        return Err(e);
    }
    up.finish();
    s.code = up.code;
    drop(lock);
    Ok(())
}

/// Signals `up` handles: handlers only set flags, read on each turn of its loop.
struct Flags {
    term: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Flags {
    fn register() -> Result<Flags> {
        let f = Flags {
            term: Arc::new(AtomicBool::new(false)),
            hup: Arc::new(AtomicBool::new(false)),
        };
        let fail = |e: std::io::Error| Error::Daemon {
            message: format!("cannot install signal handlers: {e}"),
        };
        for (sig, flag) in [
            (libc::SIGINT, &f.term),
            (libc::SIGTERM, &f.term),
            (libc::SIGHUP, &f.hup),
        ] {
            signal_hook::flag::register(sig, flag.clone()).map_err(fail)?;
        }
        Ok(f)
    }
}

/// Starts the home's daemon as a child tied to this process (see the module's doc).
fn start_daemon(home: &Home, as_init: bool) -> Result<i32> {
    let exe = std::env::current_exe().map_err(|e| Error::Daemon {
        message: format!("cannot find tend's own executable: {}", io_reason(&e)),
    })?;
    let stderr = if as_init {
        Stdio::inherit()
    } else {
        let path = home.root().join("daemon.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::Io {
                path: path.clone(),
                reason: io_reason(&e),
            })?;
        Stdio::from(f)
    };
    use std::os::unix::process::CommandExt;
    let child = Command::new(exe)
        .arg("--home")
        .arg(home.root())
        .args(["daemon", "--foreground", "--bound-to"])
        .arg(std::process::id().to_string())
        // The home's own settings only: a PostgreSQL URL in the environment is not
        // this file's.
        .env_remove("TEND_POSTGRES_URL")
        .env_remove("TEND_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Daemon {
            message: format!("cannot start the daemon: {}", io_reason(&e)),
        })?;
    // Reaped by `reap_any` with every other child, never through `Child`.
    Ok(child.id() as i32)
}

/// Starts `names` through the daemon, waiting for each to be ready, on threads: the
/// loop goes on printing output and handling signals meanwhile. One request per service
/// that no other of `names` requires (a leaf), all at once: each starts what its leaf
/// requires first, in dependency order, and a requirement two leaves share is started
/// once (the second finds it running and waits for it to be ready). So independent
/// services start side by side, and each waits only for what it requires.
fn start_services(
    home: &Home,
    defined: &[service::Service],
    names: &[String],
) -> (mpsc::Receiver<Result<Answer>>, usize) {
    let required: std::collections::BTreeSet<&str> = defined
        .iter()
        .filter(|d| names.contains(&d.name))
        .flat_map(|d| d.settings.requires.iter().map(String::as_str))
        .collect();
    let leaves: Vec<String> = names
        .iter()
        .filter(|n| !required.contains(n.as_str()))
        .cloned()
        .collect();
    let (tx, rx) = mpsc::channel();
    for leaf in &leaves {
        let (tx, home, leaf) = (tx.clone(), home.clone(), leaf.clone());
        std::thread::spawn(move || {
            let _ = tx.send(lifecycle::carry_out(
                &home,
                Verb::Start,
                Selection::Names { names: vec![leaf] },
                Some(None),
            ));
        });
    }
    (rx, leaves.len())
}

struct Up {
    home: Home,
    daemon: i32,
    /// The daemon's `waitpid` status, once reaped.
    daemon_status: Option<i32>,
    flags: Flags,
    as_init: bool,
    exit_on_failure: bool,
    chosen: Vec<String>,
    required: Vec<String>,
    /// Ctrl-C / SIGTERM received so far.
    presses: u32,
    /// Everything is being stopped.
    stopping: bool,
    /// The exit status so far (the first failure's).
    code: u8,
    /// The start's answers to come, and how many.
    started: Option<(mpsc::Receiver<Result<Answer>>, usize)>,
    /// Services whose start was reported (a requirement shared by two leaves is in two
    /// answers).
    reported: std::collections::BTreeSet<String>,

    sup: Option<Supervisor>,
    /// The last event looked at.
    seen: i64,
    exits_at: Instant,
    begun: Instant,
    /// Set to end `--tui`'s view.
    quit: Arc<AtomicBool>,
    /// The daemon has exited after a stop: the end.
    done: bool,
}

impl Up {
    /// Waits until the daemon answers (or has exited, which is an error).
    fn wait_daemon(&mut self) -> Result<()> {
        let deadline = Instant::now() + DAEMON_START;
        loop {
            self.reap();
            if let Some(status) = self.daemon_status {
                return Err(Error::Daemon {
                    message: format!(
                        "the daemon exited at once (status {}); see {}",
                        init::shell_status(status),
                        if self.as_init {
                            "the messages above".to_string()
                        } else {
                            self.home.root().join("daemon.log").display().to_string()
                        }
                    ),
                });
            }
            if matches!(client::probe(&self.home), client::Probe::Healthy(_)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Daemon {
                    message: format!("the daemon did not answer within {DAEMON_START:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reaps every exited child (as PID 1: every orphan of the namespace).
    fn reap(&mut self) {
        while let Some((pid, status)) = init::reap_any() {
            if pid == self.daemon {
                self.daemon_status = Some(status);
            }
        }
    }

    /// One turn of the loop; `true` once everything is stopped and the daemon has exited.
    fn tick(&mut self) -> bool {
        self.reap();
        if self.flags.term.swap(false, Ordering::SeqCst) || self.quit.load(Ordering::SeqCst) {
            self.quit.store(false, Ordering::SeqCst);
            self.presses += 1;
            if self.presses == 1 {
                self.stop(
                    exit::OK,
                    "stopping every service (Ctrl-C again kills them at once)",
                );
            } else if self.presses == 2 {
                eprintln!("tend: up: killing every service");
                // The daemon's second SIGTERM: its stops send SIGKILL now.
                if self.daemon_status.is_none() {
                    let _ = init::signal_child(self.daemon, libc::SIGTERM);
                }
            }
        }
        if self.flags.hup.swap(false, Ordering::SeqCst) {
            self.in_background(Verb::Signal {
                signal: libc::SIGHUP,
            });
        }
        while let Some((rx, left)) = &mut self.started {
            match rx.try_recv() {
                Ok(answer) => {
                    *left -= 1;
                    let last = *left == 0;
                    if last {
                        self.started = None;
                    }
                    self.started(answer, last);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => self.started = None,
            }
        }
        if self.exits_at <= Instant::now() {
            self.exits_at = Instant::now() + EXITS_EVERY;
            self.exits();
        }
        if let Some(status) = self.daemon_status {
            if !self.stopping {
                eprintln!(
                    "tend: up: the daemon ended unexpectedly (status {}); stopping every service",
                    init::shell_status(status)
                );
                self.fail(exit::FAILED);
                self.stopping = true;
                // No daemon: this process stops them itself.
                if let Err(e) = lifecycle::carry_out(&self.home, Verb::Stop, Selection::All, None) {
                    eprintln!("tend: up: {}", escape(&e.to_string()));
                }
            }
            self.done = true;
            self.quit.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }

    fn fail(&mut self, code: u8) {
        if self.code == exit::OK {
            self.code = code;
        }
    }

    /// Begins the stop of everything: SIGTERM to the daemon (see the module's doc).
    fn stop(&mut self, code: u8, why: &str) {
        self.fail(code);
        if self.stopping {
            return;
        }
        self.stopping = true;
        eprintln!("tend: up: {why}");
        if self.daemon_status.is_none() {
            if let Err(e) = init::signal_child(self.daemon, libc::SIGTERM) {
                eprintln!("tend: up: cannot signal the daemon: {}", io_reason(&e));
            }
        }
    }

    /// Carries out `verb` on every service on a thread of its own (the loop goes on).
    fn in_background(&self, verb: Verb) {
        let home = self.home.clone();
        std::thread::spawn(move || {
            if let Err(e) = lifecycle::carry_out(&home, verb, Selection::All, None) {
                eprintln!("tend: up: {}", escape(&e.to_string()));
            }
        });
    }

    /// One of the start's answers (`last`: all are in): any service that did not start
    /// ends the run with its code.
    fn started(&mut self, answer: Result<Answer>, last: bool) {
        // Reported as `tend start --wait` reports, on stderr (standard output is the
        // services').
        let mut s = Session::new();
        match answer {
            Ok(Answer::Reports(reports)) => {
                let fresh: Vec<_> = reports
                    .into_iter()
                    .filter(|r| self.reported.insert(r.name.clone()))
                    .collect();
                // Only a failed write to stderr can fail here: nothing to tell it to.
                let _ = lifecycle::print_reports(&mut s, &mut std::io::stderr(), &fresh);
            }
            Ok(Answer::Refused { message, code }) => {
                eprintln!("tend: up: {}", escape(&message));
                s.fail_code(code);
            }
            Err(e) => {
                eprintln!("tend: up: {}", escape(&e.to_string()));
                s.fail_code(e.exit_code());
            }
        }
        if self.stopping {
            return;
        }
        if s.code != exit::OK {
            self.stop(s.code, "a service did not start: stopping every service");
        } else if last {
            eprintln!(
                "tend: up: {} ready in {} ms",
                match self.chosen.len() {
                    1 => "1 service".to_string(),
                    n => format!("{n} services"),
                },
                self.begun.elapsed().as_millis()
            );
        }
    }

    /// Exits recorded since the last look: a note for each, and the end of the run when
    /// one must end it (`--exit-on-failure`; a `required` service as PID 1).
    fn exits(&mut self) {
        if self.sup.is_none() {
            self.sup = Supervisor::open(self.home.clone()).ok();
        }
        let Some(sup) = self.sup.as_mut() else {
            return;
        };
        let Ok(events) = sup.events(None, 500) else {
            return;
        };
        let mut ending: Option<(String, u8)> = None;
        let seen = self.seen;
        for e in events.into_iter().filter(|e| e.id > seen) {
            self.seen = e.id;
            if e.kind != event::EXIT || e.detail.ends_with("(stop requested)") {
                continue;
            }
            if !self.chosen.contains(&e.service) {
                continue;
            }
            let status = status_of(&e.detail);
            if !self.stopping {
                eprintln!("tend: up: {} exited: {}", e.service, escape(&e.detail));
            }
            let ends = self.exit_on_failure || self.required.contains(&e.service);
            if ends && ending.is_none() {
                ending = Some((e.service.clone(), status));
            }
        }
        if let Some((name, status)) = ending {
            if !self.stopping {
                let why = format!("{name} exited (status {status}): stopping every service");
                self.stop(status, &why);
            }
        }
    }

    /// `--tui`: `tend top` in the foreground, this loop on a thread beside it; the view
    /// ends when the stop begins (q, Ctrl-C, or a service that ends the run), and the
    /// output of the stop then follows on the terminal.
    fn run_tui(&mut self) -> Result<(), Failure> {
        let quit = self.quit.clone();
        let home = self.home.clone();
        let shown = std::thread::scope(|scope| {
            let ticking = scope.spawn(|| {
                // Until the view ends: then the stop (if the view ended it) is this
                // loop's, in the foreground.
                while !self.stopping && !self.done {
                    if self.tick() {
                        break;
                    }
                    std::thread::sleep(crate::logs::FOLLOW_INTERVAL);
                }
                self.quit.store(true, Ordering::SeqCst);
            });
            let shown = super::top::run_until(&home, "1s", None, quit.clone());
            // The view ended: q or Ctrl-C asks for the stop, as Ctrl-C does without it.
            quit.store(true, Ordering::SeqCst);
            let _ = ticking.join();
            shown
        });
        if !self.stopping && !self.done {
            self.flags.term.store(true, Ordering::SeqCst);
        }
        self.quit.store(false, Ordering::SeqCst);
        while !self.tick() {
            std::thread::sleep(crate::logs::FOLLOW_INTERVAL);
        }
        shown
    }

    /// Something failed before or while following: every service is stopped all the
    /// same (SIGTERM to the daemon, and wait for it), and as PID 1 nothing is left.
    fn abandon(&mut self) {
        self.stop(exit::FAILED, "stopping every service");
        // A daemon that does not end within a minute of its SIGTERM is hung: killed, so
        // that `up` ends (it never answered, so it started nothing).
        let until = Instant::now() + Duration::from_secs(60);
        while self.daemon_status.is_none() {
            self.reap();
            if Instant::now() > until {
                let _ = init::signal_child(self.daemon, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.finish();
    }

    /// The end: as PID 1, what is left of the namespace's processes is reaped (they are
    /// ended with it when this process exits).
    fn finish(&mut self) {
        self.reap();
        if let Some(status) = self.daemon_status {
            if status != 0 && self.stopping {
                self.fail(exit::FAILED);
            }
        }
        if self.code == exit::OK {
            eprintln!("tend: up: stopped");
        }
    }
}

/// The shell status of an `exit` event's detail (`pid 12: code 3`, `pid 12: signal KILL`);
/// 1 when it is unknown.
fn status_of(detail: &str) -> u8 {
    let what = detail.split_once(": ").map_or(detail, |(_, w)| w);
    let what = what.trim_end_matches(" (stop requested)");
    if let Some(code) = what.strip_prefix("code ") {
        return code.trim().parse().unwrap_or(exit::FAILED);
    }
    if what == "oom-killed" {
        return 128 + libc::SIGKILL as u8;
    }
    if let Some(sig) = what.strip_prefix("signal ") {
        if let Ok(n) = lifecycle::parse_signal(sig.trim()) {
            return (128 + n).min(255) as u8;
        }
    }
    exit::FAILED
}

#[cfg(test)]
mod tests {
    use super::status_of;

    #[test]
    fn exit_details_become_shell_statuses() {
        assert_eq!(status_of("pid 12: code 3"), 3);
        assert_eq!(status_of("pid 12: code 0"), 0);
        assert_eq!(status_of("pid 12: signal KILL"), 137);
        assert_eq!(status_of("pid 12: signal TERM (stop requested)"), 143);
        assert_eq!(status_of("pid 12: unknown"), 1);
        assert_eq!(status_of("pid 12: oom-killed"), 137);
    }
}
