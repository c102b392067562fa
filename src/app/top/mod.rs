//! `tend top`: a live view of every service on a terminal (ratatui on crossterm).
//!
//! Every `--interval` (1 s by default) it lists the services through the same supervisor
//! call as `tend list` (which also clears dead records, as a look always does) and reads
//! CPU and memory: a service's cgroup counters when it runs in one, else /proc for its
//! main process and descendants ([`crate::process::usage`]). Between refreshes it sleeps
//! in `poll` for keys, so an idle view costs a few reads of /proc and one SQLite read a
//! second.
//!
//! Start, stop and restart go through [`super::lifecycle::carry_out`], the path of
//! `tend start|stop|restart` (over the daemon's socket when one runs), on a thread of
//! their own: a stop can take the service's whole stop timeout, and the view keeps
//! updating meanwhile. Their result shows on the status line.
//!
//! The terminal is given back (raw mode off, main screen, cursor shown) whichever way
//! the view ends: `q`, Esc or Ctrl-C, an error, SIGTERM/SIGHUP/SIGINT, or a panic (a
//! panic hook restores it before the message is printed). Nothing in here writes to
//! stderr while the view is up: it would land in the middle of the screen.

mod model;
mod ui;

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};

use super::lifecycle::{carry_out, Answer};
use super::session::{open_supervisor, Failure};
use crate::api::{Outcome, Report, Selection as Which, Verb};
use crate::cli::FleetPgArgs;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::pg::fleet::operator::HostView;
use crate::service::fmt_duration;
use crate::supervisor::{StartOutcome, StopOutcome};
use model::{Sampler, Status, View};

/// Bounds of `--interval`: faster than a tenth of a second is a busy loop, slower than a
/// minute is not live.
const INTERVAL_MIN: Duration = Duration::from_millis(100);
const INTERVAL_MAX: Duration = Duration::from_secs(60);

/// The longest `poll` waits, so a SIGTERM or SIGHUP is noticed within this even when
/// `--interval` is long.
const WAKE: Duration = Duration::from_millis(250);

/// Lines of the selected service's log kept for the log pane (it shows the last ones that
/// fit).
const LOG_LINES: usize = 200;

/// `tend top [--interval D] [--fleet [PG OPTIONS]]`.
pub fn run(home: &Home, interval: &str, fleet: Option<FleetPgArgs>) -> Result<(), Failure> {
    run_until(home, interval, fleet, Arc::new(AtomicBool::new(false)))
}

/// [`run`], which also ends once `stop` is set (`tend up --tui` sets it when its
/// services are to stop).
pub fn run_until(
    home: &Home,
    interval: &str,
    fleet: Option<FleetPgArgs>,
    stop: Arc<AtomicBool>,
) -> Result<(), Failure> {
    let interval = crate::service::parse_duration(interval)
        .map_err(|message| Error::Invalid {
            what: "--interval",
            message,
        })
        .and_then(|d| {
            if (INTERVAL_MIN..=INTERVAL_MAX).contains(&d) {
                Ok(d)
            } else {
                Err(Error::Invalid {
                    what: "--interval",
                    message: format!("{} is outside 100ms..1m", fmt_duration(d)),
                })
            }
        })?;
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        return Err(Error::NotATerminal.into());
    }
    // Fail before taking the screen when the home cannot be opened at all, or the
    // fleet's database is not configured.
    drop(open_supervisor(home)?);
    let fleet = match fleet {
        Some(pg) => Some(super::fleet::settings(home, &pg)?),
        None => None,
    };

    let mut ids = Vec::new();
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        ids.push(signal_hook::flag::register(sig, Arc::clone(&stop))?);
    }
    let screen = Screen::enter()?;
    let finished = Arc::new(AtomicBool::new(false));
    watch_terminal(Arc::clone(&stop), Arc::clone(&finished));
    let mut terminal =
        ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    let mut app = App::new(home.clone(), interval);
    if let Some(settings) = fleet {
        app.view.fleet = true;
        app.view.status = Some(Status {
            text: "reading the fleet's status…".into(),
            error: false,
        });
        app.hosts = Some(watch_fleet(settings, interval));
    }
    let result = app.run(&mut terminal, &stop);
    finished.store(true, Ordering::Relaxed);
    drop(terminal);
    drop(screen);
    // The caller may go on (`tend up` stops its services): these signals are its again.
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    result.map_err(Failure::Output)
}

/// The terminal in raw mode on the alternate screen; dropping it gives the terminal back.
struct Screen;

impl Screen {
    fn enter() -> io::Result<Screen> {
        let previous = std::panic::take_hook();
        // Only a panic of the thread that draws ends the view; an action's thread that
        // panics leaves it running (its action then never answers).
        let drawing = std::thread::current().id();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == drawing {
                restore();
            }
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        // From here on, the guard restores whatever fails next.
        let screen = Screen;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Ends the process when the loop cannot: crossterm's reader retries forever on a terminal
/// that hung up (each read returns 0 bytes) and never returns to the loop, so neither the
/// stop flag nor a read error would end the view, and `tend top` would spin on a closed
/// pty (a closed terminal emulator, a killed tmux). Every 250 ms this looks at standard
/// input: hung up (or gone), or a stop signal the loop has not acted on within a second,
/// ends the process (giving the terminal back in the second case).
/// It ends once `finished` is set (the view gave the terminal back).
fn watch_terminal(stop: Arc<AtomicBool>, finished: Arc<AtomicBool>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    std::thread::spawn(move || {
        let mut stop_seen: Option<Instant> = None;
        while !finished.load(Ordering::Relaxed) {
            let stdin = io::stdin();
            let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::empty())];
            let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
            let hung_up = matches!(poll(&mut fds, PollTimeout::from(250u16)), Ok(n) if n > 0)
                && fds[0].revents().is_some_and(|r| r.intersects(gone));
            if stop.load(Ordering::Relaxed) {
                stop_seen.get_or_insert_with(Instant::now);
            }
            let stuck = stop_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(1));
            if finished.load(Ordering::Relaxed) {
                return;
            }
            if hung_up {
                // Nothing left to give back. (The main thread may hold stdout's lock.)
                std::process::exit(0);
            }
            if stuck {
                // Past stdout's lock, which the stuck main thread may hold: raw mode off,
                // then the main screen and the cursor back in one write to the descriptor.
                let _ = terminal::disable_raw_mode();
                let _ = nix::unistd::write(io::stdout().as_fd(), b"\x1b[?1049l\x1b[?25h");
                std::process::exit(0);
            }
        }
    });
}

/// Raw mode off, main screen back, cursor shown. Safe to call twice (the panic hook and
/// then the guard while unwinding).
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
}

/// The view and what feeds it.
pub struct App {
    home: Home,
    sampler: Sampler,
    view: View,
    /// Fleet mode: what the thread reading the fleet's status sends.
    hosts: Option<mpsc::Receiver<Result<Vec<HostView>, String>>>,
    done: mpsc::Sender<Status>,
    answers: mpsc::Receiver<Status>,
}

#[derive(PartialEq, Eq)]
enum Next {
    Go,
    Redraw,
    Quit,
}

impl App {
    fn new(home: Home, interval: Duration) -> App {
        let (done, answers) = mpsc::channel();
        App {
            home,
            sampler: Sampler::default(),
            view: View::new(interval),
            hosts: None,
            done,
            answers,
        }
    }

    fn run<B: ratatui::backend::Backend>(
        &mut self,
        terminal: &mut ratatui::Terminal<B>,
        stop: &AtomicBool,
    ) -> io::Result<()>
    where
        io::Error: From<B::Error>,
    {
        self.refresh();
        let mut next_refresh = Instant::now() + self.view.interval;
        let mut dirty = true;
        while !stop.load(Ordering::Relaxed) {
            if dirty {
                terminal.draw(|f| ui::draw(f, &mut self.view))?;
                dirty = false;
            }
            let now = Instant::now();
            let wait = next_refresh.saturating_duration_since(now).min(WAKE);
            if event::poll(wait)? {
                match self.event(event::read()?) {
                    Next::Quit => break,
                    Next::Redraw => dirty = true,
                    Next::Go => {}
                }
            }
            // An action's answer: show it, and what it changed, at once.
            let mut answered = false;
            while let Ok(s) = self.answers.try_recv() {
                self.view.pending = self.view.pending.saturating_sub(1);
                self.view.status = Some(s);
                answered = true;
            }
            if answered || Instant::now() >= next_refresh {
                self.refresh();
                next_refresh = Instant::now() + self.view.interval;
                dirty = true;
            }
        }
        Ok(())
    }

    /// Reads the services, their usage and the open log again (fleet mode: takes what
    /// the fleet thread read last).
    fn refresh(&mut self) {
        if let Some(hosts) = &self.hosts {
            while let Ok(read) = hosts.try_recv() {
                match read {
                    Ok(h) => {
                        self.view.rows = model::fleet_rows(&h);
                        if self
                            .view
                            .status
                            .as_ref()
                            .is_some_and(|s| s.text.starts_with("reading"))
                        {
                            self.view.status = None;
                        }
                    }
                    Err(e) => {
                        self.view.status = Some(Status {
                            text: crate::app::term::escape_owned(e),
                            error: true,
                        })
                    }
                }
            }
            return;
        }
        self.view.daemon = crate::daemon::client::present(&self.home);
        // A fresh supervisor each time: whether a daemon watches (and so who records an
        // exit) is decided when it is opened, and a daemon may have come or gone.
        let listed = open_supervisor(&self.home).and_then(|mut sup| {
            let rows = sup.list()?;
            Ok((rows, sup.take_notices()))
        });
        match listed {
            Ok((statuses, notices)) => {
                self.view.rows = self.sampler.rows(&statuses, Instant::now());
                if let Some(n) = notices.last() {
                    self.view.status = Some(Status {
                        text: crate::app::term::escape_owned(n.clone()),
                        error: false,
                    });
                }
            }
            Err(e) => {
                self.view.status = Some(Status {
                    text: format!("cannot read the services: {e}"),
                    error: true,
                })
            }
        }
        self.read_log();
    }

    /// The last lines of the selected service's log files, when the pane is open.
    fn read_log(&mut self) {
        if !self.view.log_open {
            self.view.log = None;
            return;
        }
        let visible = self.view.selection.visible(&self.view.rows);
        let Some(i) = self.view.selection.index(&visible) else {
            self.view.log = None;
            return;
        };
        let row = visible[i];
        let files = crate::logs::files(&row.stdout, &row.stderr);
        let mut lines = Vec::new();
        if files.is_empty() {
            lines.push(format!(
                "output goes to {}, not to a file: nothing to show",
                crate::app::term::escape(&row.stdout.to_string_lossy())
            ));
        }
        for path in &files {
            if files.len() > 1 {
                lines.push(format!(
                    "==> {} <==",
                    crate::app::term::escape(&path.to_string_lossy())
                ));
            }
            let mut buf = Vec::new();
            match crate::logs::tail(&mut buf, path, LOG_LINES) {
                Ok(_) => lines.extend(
                    String::from_utf8_lossy(&buf)
                        .lines()
                        .map(|l| crate::app::term::escape(l).into_owned()),
                ),
                Err(e) => lines.push(format!("cannot read it: {e}")),
            }
        }
        self.view.log = Some((row.name.clone(), lines));
    }

    fn event(&mut self, ev: Event) -> Next {
        match ev {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.key(k),
            Event::Resize(..) => Next::Redraw,
            _ => Next::Go,
        }
    }

    fn key(&mut self, k: KeyEvent) -> Next {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Next::Quit;
        }
        if self.view.editing {
            match k.code {
                KeyCode::Enter => self.view.editing = false,
                KeyCode::Esc => {
                    self.view.editing = false;
                    self.view.selection.filter.clear();
                }
                KeyCode::Backspace => {
                    self.view.selection.filter.pop();
                }
                KeyCode::Char(c) if !c.is_control() => self.view.selection.filter.push(c),
                _ => return Next::Go,
            }
            self.read_log();
            return Next::Redraw;
        }
        let visible_len = self.view.selection.visible(&self.view.rows).len() as isize;
        match k.code {
            KeyCode::Char('q') => return Next::Quit,
            KeyCode::Esc if self.view.log_open => self.view.log_open = false,
            KeyCode::Esc => return Next::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::PageUp => self.step(-10),
            KeyCode::PageDown => self.step(10),
            KeyCode::Home | KeyCode::Char('g') => self.step(-visible_len),
            KeyCode::End | KeyCode::Char('G') => self.step(visible_len),
            KeyCode::Char('s') => self.act(Verb::Start),
            KeyCode::Char('x') | KeyCode::Char('S') => self.act(Verb::Stop),
            KeyCode::Char('r') => self.act(Verb::Restart),
            KeyCode::Char('l') | KeyCode::Enter if self.view.fleet => {
                self.view.status = Some(Status {
                    text: "fleet mode has no log pane: the logs are on each host".into(),
                    error: true,
                });
            }
            KeyCode::Char('l') | KeyCode::Enter => {
                self.view.log_open = !self.view.log_open;
                self.read_log();
            }
            KeyCode::Char('/') => {
                self.view.editing = true;
                self.view.status = None;
            }
            _ => return Next::Go,
        }
        Next::Redraw
    }

    fn step(&mut self, delta: isize) {
        let visible = self.view.selection.visible(&self.view.rows);
        self.view.selection.step(&visible, delta);
        if self.view.log_open {
            self.read_log();
        }
    }

    /// Sends `verb` for the selected service on a thread of its own; the answer comes
    /// back on the channel the loop reads.
    fn act(&mut self, verb: Verb) {
        if self.view.fleet {
            self.view.status = Some(Status {
                text: "fleet mode only looks: `tend fleet start|stop|restart NAME` acts on \
                       every host"
                    .into(),
                error: true,
            });
            return;
        }
        let visible = self.view.selection.visible(&self.view.rows);
        let Some(i) = self.view.selection.index(&visible) else {
            return;
        };
        let name = visible[i].name.clone();
        let doing = match verb {
            Verb::Start => "starting",
            Verb::Stop => "stopping",
            _ => "restarting",
        };
        self.view.status = Some(Status {
            text: format!("{name}: {doing}…"),
            error: false,
        });
        self.view.pending += 1;
        let home = self.home.clone();
        let done = self.done.clone();
        let spawned = std::thread::Builder::new()
            .name("tend-top-act".into())
            .spawn(move || {
                let answer = carry_out(
                    &home,
                    verb,
                    Which::Names {
                        names: vec![name.clone()],
                    },
                    None,
                );
                let _ = done.send(summary(&name, answer));
            });
        if let Err(e) = spawned {
            self.view.pending -= 1;
            self.view.status = Some(Status {
                text: format!("cannot start a thread for the action: {e}"),
                error: true,
            });
        }
    }
}

/// Reads every host's published state every `interval` on a thread of its own (a
/// connection to PostgreSQL can take its time, and the keys must not wait for it) and
/// sends it; the thread ends when the view is gone.
fn watch_fleet(
    settings: crate::pg::Settings,
    interval: Duration,
) -> mpsc::Receiver<Result<Vec<HostView>, String>> {
    let (tx, rx) = mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("tend-top-fleet".into())
        .spawn(move || loop {
            let read = crate::pg::fleet::operator::status(&settings)
                .map_err(|e| format!("cannot read the fleet's status: {e}"));
            if tx.send(read).is_err() {
                return;
            }
            std::thread::sleep(interval);
        });
    rx
}

/// One line for the status bar from an action's answer.
fn summary(name: &str, answer: Result<Answer>) -> Status {
    let fail = |text: String| Status { text, error: true };
    let reports = match answer {
        Err(e) => return fail(format!("{name}: {e}")),
        Ok(Answer::Refused { message, .. }) => return fail(format!("{name}: {message}")),
        Ok(Answer::Reports(r)) => r,
    };
    let Some(Report { result, .. }) = reports.into_iter().next() else {
        return fail(format!("{name}: no answer"));
    };
    let text = match result {
        Outcome::Start { outcome } => started(&outcome),
        Outcome::Stop { outcome } => stopped(&outcome),
        Outcome::Restart { stop, start } => match stop {
            StopOutcome::NotRunning => started(&start),
            stop => stopped(&stop).and_then(|a| started(&start).map(|b| format!("{a}, {b}"))),
        },
        Outcome::Signal { .. } => Ok("signalled".into()),
        Outcome::Error { message, .. } => Err(message),
    };
    match text {
        Ok(t) => Status {
            text: crate::app::term::escape_owned(format!("{name}: {t}")),
            error: false,
        },
        Err(t) => fail(crate::app::term::escape_owned(format!("{name}: {t}"))),
    }
}

fn started(o: &StartOutcome) -> std::result::Result<String, String> {
    match o {
        StartOutcome::Started { pid } => Ok(format!("started (pid {pid})")),
        StartOutcome::AlreadyRunning { pid } => Ok(format!("already running (pid {pid})")),
        StartOutcome::NotDue => Ok("start not due".into()),
        StartOutcome::Ready { pid, took } => {
            Ok(format!("ready (pid {pid}, {})", fmt_duration(*took)))
        }
        StartOutcome::NotReady { pid, reason, .. } => Err(format!("pid {pid} not ready: {reason}")),
        StartOutcome::ExitedAtOnce { pid, status, .. } => {
            let status = status.as_deref().unwrap_or("status unknown");
            Err(format!("pid {pid} exited at once ({status})"))
        }
    }
}

fn stopped(o: &StopOutcome) -> std::result::Result<String, String> {
    match *o {
        StopOutcome::NotRunning => Ok("not running".into()),
        StopOutcome::Stopped {
            pid, killed, took, ..
        } => Ok(if killed {
            format!("stopped (pid {pid} ignored the stop signal; killed)")
        } else {
            format!("stopped (pid {pid}, {})", fmt_duration(took))
        }),
    }
}
