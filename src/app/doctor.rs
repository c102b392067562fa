//! `tend doctor`: checks what tend depends on and says, one line each, what is wrong and
//! how to fix it. It changes nothing: the database is opened without migrating it, the
//! daemon is only asked its status, PostgreSQL only gets a connection and a query.
//!
//! Exit 0 when every check is `ok` or only informs (`info`, `warn`); 1 when one `fail`s.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::session::{Failure, Session};
use super::term::{escape, Term};
use crate::daemon::client::{self, Probe};
use crate::error::exit;
use crate::home::Home;
use crate::store::diagnose::Diagnosis;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Worth knowing, nothing wrong (a daemon that is not running, no systemd unit).
    Info,
    /// Works, but not as it should (a database readable by others).
    Warn,
    /// Broken: tend cannot work properly until it is fixed. Makes `doctor` exit 1.
    Fail,
}

/// One line of the report.
#[derive(Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub status: Level,
    pub message: String,
    /// What to do about it, when something should be done.
    pub fix: Option<String>,
}

fn check(check: &'static str, status: Level, message: impl Into<String>) -> Check {
    Check {
        check,
        status,
        message: message.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

pub fn run(s: &mut Session, home: &Home, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let checks = checks(home);
    if json {
        super::output::json(out, &checks)?;
    } else {
        let term = Term::stdout(true);
        for c in &checks {
            let label = match c.status {
                Level::Ok => "ok",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            let colored = match (c.status, term.color) {
                (Level::Fail, true) => format!("\x1b[31m{label:<4}\x1b[0m"),
                (Level::Warn, true) => format!("\x1b[33m{label:<4}\x1b[0m"),
                (Level::Ok, true) => format!("\x1b[32m{label:<4}\x1b[0m"),
                _ => format!("{label:<4}"),
            };
            let mut line = format!("{colored}  {:<11}  {}", c.check, escape(&c.message));
            if let Some(f) = &c.fix {
                line.push_str(&format!(" — fix: {}", escape(f)));
            }
            writeln!(out, "{line}")?;
        }
    }
    if checks.iter().any(|c| c.status == Level::Fail) {
        s.fail_code(exit::FAILED);
    }
    Ok(())
}

/// Every check, in the order a person would look.
pub fn checks(home: &Home) -> Vec<Check> {
    let mut all = vec![state_home(home)];
    let db = home.db_path();
    // Opening the database beside a daemon that has other files open would read what
    // it does not see (and create a WAL): it is left unread then (see `daemon_files`).
    let beside = client::holder(home).and_then(|n| n.beside(home));
    let (checks, diagnosis) = database(&db, beside.is_some());
    all.extend(checks);
    all.push(wal_files(&db));
    all.push(daemon_files(home));
    all.push(daemon(home));
    all.push(open_files(home, diagnosis.as_ref().map(|d| d.services)));
    all.extend(systemd());
    all.extend(match &diagnosis {
        Some(d) => postgres(&d.config),
        None if db.exists() => vec![check(
            "postgres",
            Level::Info,
            "not checked: the database cannot be read",
        )],
        None => vec![check(
            "postgres",
            Level::Info,
            "not configured (no database yet)",
        )],
    });
    all.push(containment(home));
    if let Some(d) = &diagnosis {
        all.extend(hooks(home, d));
    }
    all
}

/// Hooks run only in the daemon (it sees every exit): with hooks defined and no daemon
/// running, nothing runs them.
fn hooks(home: &Home, d: &crate::store::diagnose::Diagnosis) -> Option<Check> {
    const NAME: &str = "hooks";
    let home_wide: Vec<&str> = d
        .config
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("hooks.on_"))
        .collect();
    if d.hooked == 0 && home_wide.is_empty() {
        return None;
    }
    let what = match (d.hooked, home_wide.is_empty()) {
        (n, true) => format!("{n} service(s) have hooks"),
        (0, false) => format!("home-wide {}", home_wide.join(", ")),
        (n, false) => format!(
            "{n} service(s) have hooks; home-wide {}",
            home_wide.join(", ")
        ),
    };
    Some(match client::probe(home) {
        Probe::Healthy(_) => check(NAME, Level::Ok, format!("{what}: the daemon runs them")),
        _ => check(
            NAME,
            Level::Warn,
            format!("{what}, but no daemon runs: hooks run only in the daemon, and none fire now"),
        )
        .fix("`tend daemon`"),
    })
}

fn quote(p: &Path) -> String {
    shell_words::quote(&p.to_string_lossy()).into_owned()
}

fn state_home(home: &Home) -> Check {
    const NAME: &str = "state home";
    let root = home.root();
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return check(
                NAME,
                Level::Info,
                format!(
                    "{} does not exist yet; the first command creates it (mode 0700)",
                    root.display()
                ),
            )
        }
        Err(e) => {
            return check(
                NAME,
                Level::Fail,
                format!("{}: {}", root.display(), crate::error::io_reason(&e)),
            )
        }
    };
    let mode = meta.permissions().mode() & 0o7777;
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return check(
            NAME,
            Level::Fail,
            format!("{} is not a directory", root.display()),
        )
        .fix("point --home or TEND_HOME at a directory");
    }
    if meta.uid() != me {
        return check(
            NAME,
            Level::Fail,
            format!(
                "{} belongs to uid {}, not to you (uid {me})",
                root.display(),
                meta.uid()
            ),
        )
        .fix(format!("chown {me} {}", quote(root)));
    }
    if let Err(e) = home.check_mode() {
        return check(NAME, Level::Fail, e.to_string()).fix(format!("chmod go-w {}", quote(root)));
    }
    if mode & 0o077 != 0 {
        return check(
            NAME,
            Level::Warn,
            format!(
                "{} is readable by others (mode {mode:04o}): command lines, environments and \
                 logs may hold secrets",
                root.display()
            ),
        )
        .fix(format!("chmod 700 {}", quote(root)));
    }
    check(
        NAME,
        Level::Ok,
        format!("{} (mode {mode:04o}, yours)", root.display()),
    )
}

/// The database's checks, and what was read from it (`None` when it could not be read).
fn database(db: &Path, beside: bool) -> (Vec<Check>, Option<Diagnosis>) {
    const NAME: &str = "database";
    let meta = match std::fs::metadata(db) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && beside => {
            let c = check(
                NAME,
                Level::Fail,
                format!(
                    "{} is gone while the daemon has it open (see `db files`)",
                    db.display()
                ),
            );
            return (vec![c], None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let c = check(
                NAME,
                Level::Info,
                format!(
                    "{} does not exist yet; the first command creates it",
                    db.display()
                ),
            );
            return (vec![c], None);
        }
        Err(e) => {
            let c = check(
                NAME,
                Level::Fail,
                format!("{}: {}", db.display(), crate::error::io_reason(&e)),
            );
            return (vec![c], None);
        }
    };
    let mut checks = Vec::new();
    let mode = meta.permissions().mode() & 0o777;
    checks.push(if mode & 0o077 != 0 {
        check(
            NAME,
            Level::Warn,
            format!(
                "{} is readable or writable by others (mode {mode:04o})",
                db.display()
            ),
        )
        .fix(format!("chmod 600 {}", quote(db)))
    } else {
        check(
            NAME,
            Level::Ok,
            format!("{} (mode {mode:04o})", db.display()),
        )
    });
    if beside {
        checks.push(check(
            "integrity",
            Level::Warn,
            "not read: the daemon has other files open than the ones on disk (see `db files`)",
        ));
        return (checks, None);
    }
    let diagnosis = crate::store::diagnose::diagnose(db);
    match &diagnosis {
        Err(e) => checks.push(
            check("integrity", Level::Fail, format!("cannot read it: {e}")).fix(
                "see the WAL check below; if the file itself is damaged, move it aside \
                 (tend starts a new one) and add the services again",
            ),
        ),
        Ok(d) => {
            checks.push(if d.integrity == ["ok"] {
                check("integrity", Level::Ok, "PRAGMA integrity_check: ok")
            } else {
                check(
                    "integrity",
                    Level::Fail,
                    format!("PRAGMA integrity_check: {}", d.integrity.join("; ")),
                )
                .fix(format!(
                    "stop the daemon, then `sqlite3 {0} .recover > dump.sql` and rebuild, or \
                     move {0} aside and add the services again",
                    quote(db)
                ))
            });
            checks.push(if d.journal_mode.eq_ignore_ascii_case("wal") {
                check(
                    "journal",
                    Level::Ok,
                    format!(
                        "journal mode WAL, schema version {} (this tend: {})",
                        d.schema_version, d.schema_known
                    ),
                )
            } else {
                check(
                    "journal",
                    Level::Warn,
                    format!("journal mode {}, not WAL", d.journal_mode),
                )
                .fix("run any tend command (`tend list`): it switches the file back to WAL")
            });
            if d.schema_version > d.schema_known {
                checks.push(
                    check(
                        "schema",
                        Level::Fail,
                        format!(
                            "schema version {} is newer than this tend understands ({})",
                            d.schema_version, d.schema_known
                        ),
                    )
                    .fix("upgrade tend"),
                );
            }
        }
    }
    (checks, diagnosis.ok())
}

/// The `-wal` and `-shm` files: their modes, and above all a `-wal` deleted under a
/// process that still has the database open (every other command then fails with
/// "disk I/O error"), found through `/proc/PID/fd`.
fn wal_files(db: &Path) -> Check {
    const NAME: &str = "wal";
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let shm = PathBuf::from(format!("{}-shm", db.display()));
    let holders = deleted_wal_holders(&wal);
    if let Some((pid, fd)) = holders.first() {
        let pids: Vec<String> = holders.iter().map(|(p, _)| p.to_string()).collect();
        return check(
            NAME,
            Level::Fail,
            format!(
                "{} was deleted while process(es) {} still have it open: the commits in it \
                 are lost when they close it, and no other process can use the database \
                 meanwhile",
                wal.display(),
                pids.join(", ")
            ),
        )
        .fix(format!(
            "while pid {pid} lives, put the WAL back: `cp /proc/{pid}/fd/{fd} {}` (do not \
             stop it first)",
            quote(&wal)
        ));
    }
    let mut loose = Vec::new();
    for f in [&wal, &shm] {
        if let Ok(m) = std::fs::metadata(f) {
            if m.permissions().mode() & 0o077 != 0 {
                loose.push(quote(f));
            }
        }
    }
    if !loose.is_empty() {
        return check(
            NAME,
            Level::Warn,
            format!("{} readable by others", loose.join(", ")),
        )
        .fix(format!("chmod 600 {}", loose.join(" ")));
    }
    match (wal.exists(), shm.exists()) {
        (true, false) => check(
            NAME,
            Level::Warn,
            format!("{} exists without its -shm index", wal.display()),
        )
        .fix("run `tend list`: the next opener rebuilds the index from the WAL"),
        (w, _) => check(
            NAME,
            Level::Ok,
            if w {
                format!(
                    "{} present ({} bytes)",
                    wal.display(),
                    std::fs::metadata(&wal).map_or(0, |m| m.len())
                )
            } else {
                "no WAL file (everything is checkpointed)".to_string()
            },
        ),
    }
}

/// Whether the files the daemon has open are the database files on disk (see
/// [`crate::store::Files`]). When they are not, it no longer uses the database and
/// restarts nothing; the fix keeps what only its files hold: a deleted file is put back
/// from `/proc` while it runs, a WAL left beside a replaced database is moved aside, and
/// only then is it restarted.
fn daemon_files(home: &Home) -> Check {
    const NAME: &str = "db files";
    let Some(notes) = client::holder(home) else {
        return check(NAME, Level::Ok, "no daemon has the database open");
    };
    let who = notes.pid.map_or("the daemon (pid unknown)".into(), |p| {
        format!("the daemon (pid {p})")
    });
    match notes.beside(home) {
        Some(change) => check(
            NAME,
            Level::Fail,
            format!("{who}: {}", client::unhealthy_files(&change)),
        )
        .fix(files_fix(&home.db_path(), notes.pid)),
        None if notes.files.is_some() => check(
            NAME,
            Level::Ok,
            format!("{who} has the files on disk open (tend.db, -wal, -shm)"),
        ),
        None => check(
            NAME,
            Level::Info,
            format!(
                "{who} has not said which files it has open (starting up, or another version \
                 of tend)"
            ),
        ),
    }
}

/// How to get from a daemon holding database files that are no longer on disk back to
/// one daemon on the files on disk, losing nothing only the old files hold.
fn files_fix(db: &Path, pid: Option<i32>) -> String {
    let [db, wal, _] = crate::store::Files::paths(db);
    let held = |path: &Path| pid.and_then(|p| held_deleted(p, path).map(|fd| (p, fd)));
    let mut steps = Vec::new();
    for path in [&db, &wal] {
        if let (false, Some((pid, fd))) = (path.exists(), held(path)) {
            steps.push(format!(
                "put {} back while the daemon runs: `cp /proc/{pid}/fd/{fd} {}`",
                path.display(),
                quote(path)
            ));
        }
    }
    if db.exists() && held(&db).is_some() && wal.exists() && held(&wal).is_none() {
        steps.push(format!(
            "if the new {} came without its own -wal, move {} aside (`mv {} {}.old`): it \
             belongs to the file that was replaced, and the next opener would apply it to \
             the new one",
            db.display(),
            wal.display(),
            quote(&wal),
            quote(&wal)
        ));
    }
    steps.push(
        "restart the daemon: `tend daemon stop && tend daemon` (what only its old files hold \
         is lost when it stops)"
            .into(),
    );
    steps.join("; then ")
}

/// A descriptor of process `pid` open on `path` although that was deleted (or renamed
/// over), found through `/proc/PID/fd`.
fn held_deleted(pid: i32, path: &Path) -> Option<String> {
    let target = format!("{} (deleted)", path.display());
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == &*target))
        .map(|fd| fd.file_name().to_string_lossy().into_owned())
}

/// Processes of ours holding `wal` open although it was deleted, with the descriptor.
fn deleted_wal_holders(wal: &Path) -> Vec<(i32, String)> {
    let target = format!("{} (deleted)", wal.display());
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // Other users' fds are unreadable; ours are what matters.
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let held = fds
            .flatten()
            .find(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == &*target));
        if let Some(fd) = held {
            pids.push((pid, fd.file_name().to_string_lossy().into_owned()));
        }
    }
    pids
}

fn daemon(home: &Home) -> Check {
    const NAME: &str = "daemon";
    let sock = client::socket_path(home);
    match client::probe(home) {
        Probe::Healthy(st) => check(
            NAME,
            Level::Ok,
            format!(
                "running (pid {}, tend {}), answering on {}",
                st.pid,
                st.version,
                sock.display()
            ),
        ),
        Probe::Unhealthy { pid, problem } => check(
            NAME,
            Level::Fail,
            format!(
                "alive but unhealthy ({}): {problem}",
                pid.map_or("pid unknown".into(), |p| format!("pid {p}"))
            ),
        )
        .fix(format!(
            "see {}; restart it: `tend daemon stop && tend daemon`",
            home.root().join("daemon.log").display()
        )),
        Probe::NotRunning if sock.exists() => check(
            NAME,
            Level::Info,
            format!(
                "not running (a stale {} is left; the next daemon replaces it)",
                sock.display()
            ),
        )
        .fix("`tend daemon` to restart crashed services automatically"),
        Probe::NotRunning => check(NAME, Level::Info, "not running")
            .fix("`tend daemon` to restart crashed services automatically"),
    }
}

/// The limit on open files a daemon has (one runs) or would get (started from here: it
/// raises its soft limit to the hard one), against what it needs: a descriptor per
/// service it watches, beside its own.
fn open_files(home: &Home, services: Option<usize>) -> Check {
    const NAME: &str = "open files";
    let services = services.unwrap_or(0);
    let need = crate::daemon::descriptors_needed(services);
    // Whoever holds the daemon's lock (its pid is in the lock file), not asked again.
    let running = client::present(home)
        .then(|| client::lock_pid(home))
        .flatten();
    let (limit, whose) = match running {
        Some(pid) => match soft_nofile_of(pid) {
            Some(l) => (l, format!("the daemon (pid {pid}) has")),
            None => {
                return check(
                    NAME,
                    Level::Info,
                    format!("cannot read /proc/{pid}/limits of the daemon"),
                )
            }
        },
        None => match crate::process::limits::nofile() {
            Ok((_, hard)) => (hard, "a daemon started from here would get".to_string()),
            Err(e) => {
                return check(
                    NAME,
                    Level::Info,
                    format!("cannot read the limit: {}", crate::error::io_reason(&e)),
                )
            }
        },
    };
    let said =
        format!("{whose} a limit of {limit} open files; {services} service(s) need about {need}");
    if limit >= need {
        return check(NAME, Level::Ok, said);
    }
    check(
        NAME,
        Level::Warn,
        format!(
            "{said}: services beyond it are not watched, their exits are noticed only \
             every few seconds, and a check that cannot be made leaves them unknown"
        ),
    )
    .fix(format!(
        "raise the hard limit to at least {need}: `LimitNOFILE=` in the systemd unit, or \
         `ulimit -Hn` (as root: limits.conf) where the daemon is started; then restart it"
    ))
}

/// The soft limit on open files of process `pid` (`unlimited` as u64::MAX).
fn soft_nofile_of(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// The user unit: installed, enabled, and lingering (so it runs while you are logged out).
fn systemd() -> Vec<Check> {
    const NAME: &str = "systemd";
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    let Some(config) = config else {
        return vec![check(
            NAME,
            Level::Info,
            "HOME is not set; unit not looked for",
        )];
    };
    let units = config.join("systemd/user");
    let unit = units.join("tend.service");
    if !unit.exists() {
        return vec![check(
            NAME,
            Level::Info,
            format!("no user unit at {}", unit.display()),
        )
        .fix("to run the daemon under systemd --user, see the README (Under systemd --user)")];
    }
    let mut checks = Vec::new();
    let enabled = std::fs::read_dir(&units).is_ok_and(|dirs| {
        dirs.flatten().any(|d| {
            d.file_name().to_string_lossy().ends_with(".wants")
                && d.path().join("tend.service").exists()
        })
    });
    checks.push(if enabled {
        check(
            NAME,
            Level::Ok,
            format!("{} installed and enabled", unit.display()),
        )
    } else {
        check(
            NAME,
            Level::Warn,
            format!("{} installed but not enabled", unit.display()),
        )
        .fix("systemctl --user enable --now tend")
    });
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME"));
    if let Ok(user) = user {
        let linger = Path::new("/var/lib/systemd/linger").join(&user);
        checks.push(if linger.exists() {
            check(
                "linger",
                Level::Ok,
                format!("lingering is enabled for {user}"),
            )
        } else {
            check(
                "linger",
                Level::Warn,
                format!("lingering is off for {user}: the daemon stops when you log out"),
            )
            .fix(format!("loginctl enable-linger {user}"))
        });
    }
    checks
}

/// PostgreSQL control, when configured: can we connect, and is the connection
/// encrypted (as the server sees it, in `pg_stat_ssl`). The settings come from what
/// [`crate::store::diagnose`] read, so the database is not opened for writing.
/// Also says which quick-mode payloads a daemon with these settings obeys.
fn postgres(config: &[(String, String)]) -> Vec<Check> {
    const NAME: &str = "postgres";
    let get = |key: &str| {
        config
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let Some(raw_url) = get(crate::config::POSTGRES_URL) else {
        return vec![check(NAME, Level::Info, "not configured (no postgres.url)")];
    };
    let schema = get(crate::config::POSTGRES_SCHEMA)
        .unwrap_or_else(|| crate::config::DEFAULT_SCHEMA.to_string());
    let ca_file = get(crate::config::POSTGRES_CA_FILE).map(PathBuf::from);
    let url = crate::config::mask_password(&raw_url);
    let probe = || -> Result<(bool, bool), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        rt.block_on(async {
            let tls = crate::pg::connect::tls(ca_file.as_deref()).map_err(|e| e.to_string())?;
            let (client, connection) = crate::pg::connect::connect(&raw_url, &tls)
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), \
                     false), to_regclass($1) IS NOT NULL",
                    &[&format!("{schema}.fleet")],
                )
                .await
                .map_err(|e| crate::pg::connect::describe(&e));
            drop(client);
            let _ = driver.await;
            row.map(|r| (r.get::<_, bool>(0), r.get::<_, bool>(1)))
        })
    };
    let probed = probe();
    let quick = quick_mode(
        get(crate::config::POSTGRES_KEY_FILE).is_some(),
        get(crate::config::POSTGRES_QUICK_UNSIGNED).is_some_and(|v| crate::config::truthy(&v)),
        probed.as_ref().ok().map(|p| p.1),
        &schema,
    );
    let reach = match probed.map(|p| p.0) {
        Ok(true) => check(
            NAME,
            Level::Ok,
            format!("{url} reachable, TLS in use (verified)"),
        ),
        Ok(false) => {
            let c = check(NAME, Level::Ok, format!("{url} reachable, without TLS"));
            if url.contains("localhost") || url.contains("127.0.0.1") || url.contains("[::1]") {
                c
            } else {
                Check {
                    status: Level::Warn,
                    ..c
                }
                .fix("add sslmode=require to the URL (and postgres.ca_file for a private CA)")
            }
        }
        Err(e) => check(NAME, Level::Fail, format!("{url}: {e}"))
            .fix("check the URL, the server and the password (`tend config list`)"),
    };
    vec![reach, quick]
}

/// Which quick-mode NOTIFY payloads a daemon with these settings obeys (`fleet`: whether
/// the database has a fleet in `schema`, `None` when it could not be asked).
fn quick_mode(signed: bool, unsigned_allowed: bool, fleet: Option<bool>, schema: &str) -> Check {
    const NAME: &str = "quick mode";
    if signed {
        return check(
            NAME,
            Level::Ok,
            "signed payloads only (postgres.notify_key_file)",
        );
    }
    match (unsigned_allowed, fleet) {
        (true, Some(true)) => check(
            NAME,
            Level::Warn,
            format!(
                "unsigned payloads obeyed although the daemon joins the fleet in {schema} \
                 (postgres.quick_unsigned = true): any role that can connect can start, stop \
                 and restart this host's services"
            ),
        )
        .fix("tend config set postgres.notify_key_file FILE, then postgres.quick_unsigned false"),
        (true, _) => check(
            NAME,
            Level::Info,
            "unsigned payloads obeyed (postgres.quick_unsigned = true): any role that can \
             connect can start, stop and restart services",
        ),
        (false, Some(true)) => check(
            NAME,
            Level::Ok,
            format!(
                "unsigned payloads refused: the daemon joins the fleet in {schema} (only \
                 signed ones would be obeyed; none is configured)"
            ),
        ),
        (false, _) => check(
            NAME,
            Level::Info,
            "unsigned payloads obeyed while the daemon is in no fleet (refused once it joins \
             one): any role that can connect can start, stop and restart services",
        )
        .fix("tend config set postgres.notify_key_file FILE (see the README's threat model)"),
    }
}

/// How a service's processes are kept together and found at stop: the daemon's
/// containment when one answers, else what this process (the CLI acting alone) finds.
pub fn containment(home: &Home) -> Check {
    const NAME: &str = "containment";
    let (found, whose) = match client::probe(home) {
        Probe::Healthy(st) if !st.containment.is_empty() => (st.containment, "the daemon"),
        _ => (
            crate::process::cgroup::detect(home.root()).describe(),
            "tend without a daemon",
        ),
    };
    if found.starts_with("cgroup ") {
        check(
            NAME,
            Level::Ok,
            format!("{found} ({whose}): each service in a cgroup of its own"),
        )
    } else {
        check(
            NAME,
            Level::Info,
            format!(
                "{found} ({whose}): a process that leaves the service's session and whose \
                 parent is gone is not found by stop"
            ),
        )
        .fix("run the daemon under systemd --user with systemd/tend.service (Delegate=yes)")
    }
}
