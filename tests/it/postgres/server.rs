//! The PostgreSQL servers the tests talk to.
//!
//! - The **shared** server, one per run, used by most tests (each on a channel of its own):
//!   the one `TEND_TEST_DATABASE_URL` names; else the default address, when a server
//!   answers there; else — or whenever `TEND_TEST_FORCE_PRIVATE_PG=1` — a throwaway
//!   cluster this run starts itself.
//! - **Private** clusters ([`Cluster::new`]) for tests that stop, restart or reconfigure
//!   their server.
//!
//! Every cluster this file starts is `initdb`'d in a fresh temporary directory and listens
//! on a free port of 127.0.0.1 with trust authentication. The server programs come from
//! `TEND_TEST_PG_BINDIR`, `pg_config --bindir`, `PATH` or the usual install directories,
//! and run as the current user — or, as root (`initdb` refuses root), as the `postgres`
//! OS user through `runuser`.
//!
//! Each cluster has a **guard**: a process forked before `initdb` that waits until the
//! cluster's owner is gone, then stops the server (`pg_ctl stop -m immediate`) and removes
//! the directory. The owner is this test process — the write end of a pipe only it holds,
//! closed when a private cluster is dropped (pass or fail) or when the process ends in
//! any way, Ctrl-C and SIGKILL included — or, for the shared cluster under cargo-nextest
//! (a process per test), the nextest runner, watched through a pidfd. So stopping a
//! cluster is always the same code, whether the test passed, failed or was killed.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{DirBuilder, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::util::{read, run, Out};

/// Where the shared server is looked for when `TEND_TEST_DATABASE_URL` is not set.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Set to `1` to use a throwaway cluster even when a server answers at [`DEFAULT_URL`]
/// (CI's unprivileged pass, which must not depend on the machine's server).
const FORCE_PRIVATE: &str = "TEND_TEST_FORCE_PRIVATE_PG";

/// What to install when no server programs are found.
const INSTALL_HINT: &str = "Install the PostgreSQL server: Debian/Ubuntu `apt-get install \
     postgresql`, Fedora/RHEL `dnf install postgresql-server`, Arch `pacman -S postgresql`, \
     Alpine `apk add postgresql` (or set TEND_TEST_PG_BINDIR to the directory holding initdb)";

/// The shared server's URL, settled once per test process (and once per run under
/// cargo-nextest); fails the test, saying what is missing, when there is none.
pub fn shared_url() -> String {
    static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
    SHARED
        .get_or_init(resolve_shared)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn resolve_shared() -> Result<String, String> {
    if let Some(url) = env_set("TEND_TEST_DATABASE_URL") {
        return answers(&url).map(|()| url.clone()).map_err(|e| {
            format!(
                "no PostgreSQL server answers at {url} (TEND_TEST_DATABASE_URL): {e}\n\
                 Point it at a server you may LISTEN/NOTIFY on, or unset it: the tests then \
                 use {DEFAULT_URL} if a server answers there, or start one of their own."
            )
        });
    }
    let forced = env_set(FORCE_PRIVATE).is_some_and(|v| v != "0");
    if !forced {
        match answers(DEFAULT_URL) {
            Ok(()) => return Ok(DEFAULT_URL.to_string()),
            Err(e) => eprintln!(
                "no PostgreSQL server usable at {DEFAULT_URL} ({e}); starting a throwaway one"
            ),
        }
    }
    match std::env::var("NEXTEST_RUN_ID") {
        Ok(id) if !id.is_empty() => throwaway_for_nextest_run(&id),
        _ => {
            let cluster = Cluster::create(&[], Owner::ThisProcess, None)?;
            let url = cluster.shared_url();
            // Never dropped: its guard stops it when this process ends.
            std::mem::forget(cluster);
            Ok(url)
        }
    }
}

/// Under cargo-nextest every test is a process of its own: the first one to get here
/// starts the cluster, for the whole run, in a directory named after the run; the others
/// find its URL there. Its guard watches the nextest runner (our parent) and removes that
/// directory too.
fn throwaway_for_nextest_run(run_id: &str) -> Result<String, String> {
    let runner = std::os::unix::process::parent_id() as libc::pid_t;
    let run_dir = std::env::temp_dir().join(format!("tend-test-pg-{run_id}"));
    // 0711: the server user (as root: `postgres`) must reach the cluster inside.
    match DirBuilder::new().mode(0o711).create(&run_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("create {}: {e}", run_dir.display())),
    }
    let meta = std::fs::symlink_metadata(&run_dir)
        .map_err(|e| format!("stat {}: {e}", run_dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
        return Err(format!("{} is not a directory of ours", run_dir.display()));
    }
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(run_dir.join("lock"))
        .map_err(|e| format!("open the run's lock file: {e}"))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "lock the run's lock file: {}",
            std::io::Error::last_os_error()
        ));
    }
    if let Ok(url) = std::fs::read_to_string(run_dir.join("url")) {
        return Ok(url);
    }
    if let Ok(e) = std::fs::read_to_string(run_dir.join("error")) {
        return Err(e);
    }
    let made = Cluster::create(&[], Owner::Process(runner), Some(&run_dir));
    let (file, text) = match &made {
        Ok(cluster) => ("url", cluster.shared_url()),
        Err(e) => ("error", e.clone()),
    };
    std::fs::write(run_dir.join(file), &text).map_err(|e| format!("write {file}: {e}"))?;
    match made {
        Ok(cluster) => {
            // Outlives this process: its guard stops it when the runner ends.
            std::mem::forget(cluster);
            Ok(text)
        }
        Err(e) => Err(e),
    }
}

/// The value of an environment variable, unless it is unset or empty.
fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether `SELECT 1` works at `url`; the error says why not.
fn answers(url: &str) -> Result<(), String> {
    let mut c = Command::new(psql());
    c.args(["-X", "-q", "-A", "-t", "-d", url, "-c", "SELECT 1"])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null());
    match c.output() {
        Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" => {
            Ok(())
        }
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(format!(
            "psql could not be run ({e}); the PostgreSQL tests need the PostgreSQL client \
             (Debian/Ubuntu: apt-get install postgresql-client)"
        )),
    }
}

/// The psql to run: the one on `PATH`, else the one beside the server programs.
pub fn psql() -> PathBuf {
    static PSQL: OnceLock<PathBuf> = OnceLock::new();
    PSQL.get_or_init(|| {
        let on_path = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("psql").is_file()));
        match bindir() {
            Ok(bin) if !on_path && bin.join("psql").is_file() => bin.join("psql"),
            _ => PathBuf::from("psql"),
        }
    })
    .clone()
}

// ---------------------------------------------------------------------------------------
// Finding the server programs and the user to run them as
// ---------------------------------------------------------------------------------------

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
fn bindir() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find_bindir).clone()
}

fn find_bindir() -> Result<PathBuf, String> {
    let complete = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| d.join(p).is_file())
    };
    if let Some(d) = env_set("TEND_TEST_PG_BINDIR") {
        let d = PathBuf::from(d);
        return if complete(&d) {
            Ok(d)
        } else {
            Err(format!(
                "TEND_TEST_PG_BINDIR={} does not hold initdb, pg_ctl and postgres",
                d.display()
            ))
        };
    }
    // pg_config may belong to a client library without a server (Debian's libpq-dev).
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && complete(&d) {
            return Ok(d);
        }
    }
    // Fedora, Arch, Alpine, Nix put them on PATH; use the directory they really live in.
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if complete(&d) {
                let real = std::fs::canonicalize(d.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .filter(|r| complete(r));
                return Ok(real.unwrap_or(d));
            }
        }
    }
    // Debian/Ubuntu (/usr/lib/postgresql/15/bin), PGDG RPMs (/usr/pgsql-16/bin): newest.
    let mut found: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(version) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let Ok(version) = version
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
            else {
                continue;
            };
            let bin = e.path().join("bin");
            if complete(&bin) {
                found.push((version, bin));
            }
        }
    }
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    let source_build = PathBuf::from("/usr/local/pgsql/bin");
    if complete(&source_build) {
        return Ok(source_build);
    }
    Err(format!(
        "No PostgreSQL server programs found (initdb, pg_ctl and postgres; looked at \
         TEND_TEST_PG_BINDIR, pg_config --bindir, PATH, /usr/lib/postgresql/*/bin, \
         /usr/pgsql-*/bin, /usr/local/pgsql/bin). The PostgreSQL tests start servers of their \
         own with them: a throwaway one when TEND_TEST_DATABASE_URL is not set and no server \
         answers at {DEFAULT_URL}, and private ones for the tests that stop or reconfigure \
         theirs. {INSTALL_HINT}."
    ))
}

/// Who runs the server programs.
#[derive(Clone)]
enum ServerUser {
    /// The current user.
    Me,
    /// Another OS user, through `runuser` (we are root, which initdb refuses).
    Other(nix::unistd::User),
}

fn server_user() -> Result<ServerUser, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(ServerUser::Me);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(u)) => Ok(ServerUser::Other(u)),
        _ => Err(
            "As root, the tests run PostgreSQL's server as the `postgres` OS user (initdb \
             refuses root), and there is no such user: create it (useradd --system postgres), \
             or run the tests as an ordinary user"
                .to_string(),
        ),
    }
}

impl ServerUser {
    /// The argv that runs `program ARGS` as this user.
    fn argv(&self, program: &Path, args: &[&OsStr]) -> Vec<OsString> {
        let mut v: Vec<OsString> = match self {
            ServerUser::Me => Vec::new(),
            ServerUser::Other(u) => {
                vec!["runuser".into(), "-u".into(), (&u.name).into(), "--".into()]
            }
        };
        v.push(program.into());
        v.extend(args.iter().map(|a| a.to_os_string()));
        v
    }

    /// Makes `path` the server user's (as root, the server cannot read root's 0700 files).
    fn give(&self, path: &Path) -> Result<(), String> {
        match self {
            ServerUser::Me => Ok(()),
            ServerUser::Other(u) => nix::unistd::chown(path, Some(u.uid), Some(u.gid))
                .map_err(|e| format!("chown {} to {}: {e}", path.display(), u.name)),
        }
    }
}

/// Makes `path` readable by the server of the clusters this run starts: as root, gives it
/// to the `postgres` OS user; otherwise it is ours already.
pub fn give_to_server(path: &Path) {
    let user = server_user().unwrap_or_else(|e| panic!("{e}"));
    user.give(path).unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------------------

/// A PostgreSQL cluster started by this run: `initdb`'d in a directory of its own, on a
/// free loopback port. Dropping a private one stops it and removes its directory.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    user: ServerUser,
    port: u16,
    guard: Guard,
}

impl Cluster {
    /// A private cluster for one test, which it may stop, restart and reconfigure;
    /// `extra_conf` lines are appended to postgresql.conf.
    pub fn new(extra_conf: &[String]) -> Cluster {
        Cluster::create(extra_conf, Owner::ThisProcess, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// initdb and start. The cluster lives in a new temporary directory, or in
    /// `<run_dir>/cluster` (then the guard removes all of `run_dir`).
    fn create(
        extra_conf: &[String],
        owner: Owner,
        run_dir: Option<&Path>,
    ) -> Result<Cluster, String> {
        let bin = bindir()?;
        let user = server_user()?;
        let (dir, remove) = match run_dir {
            Some(run) => {
                let dir = run.join("cluster");
                DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| format!("create {}: {e}", dir.display()))?;
                (dir, run.to_path_buf())
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("tend-test-pg-")
                    .tempdir()
                    .map_err(|e| format!("create a directory for a PostgreSQL cluster: {e}"))?
                    .keep();
                (dir.clone(), dir)
            }
        };
        let data = dir.join("data");
        let stop = user.argv(
            &bin.join("pg_ctl"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "stop".as_ref(),
            ],
        );
        // The guard first: from here on, whatever happens, the directory goes away.
        let guard = Guard::spawn(owner, &remove, &stop).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&remove);
        })?;
        let mut cluster = Cluster {
            dir,
            bin,
            user,
            port: 0,
            guard,
        };
        cluster.user.give(&cluster.dir)?;
        cluster.init(extra_conf)?;
        cluster.first_start()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The URL of its `postgres` database (TLS per `sslmode`).
    pub fn url(&self, sslmode: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode={sslmode}",
            self.port
        )
    }

    /// The URL the shared tests use (no sslmode, as [`DEFAULT_URL`]).
    fn shared_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of the server programs as the server user.
    fn server(&self, program: &str, args: &[&OsStr]) -> Out {
        let argv = self.user.argv(&self.bin.join(program), args);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .current_dir(&self.dir)
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .stdin(Stdio::null());
        run(c)
    }

    fn pg_ctl(&self, args: &[&str]) -> Out {
        let data = self.data();
        let mut all: Vec<&OsStr> = vec!["-D".as_ref(), data.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        self.server("pg_ctl", &all)
    }

    /// initdb (trust authentication, superuser `postgres`) and the settings every cluster
    /// gets, then `extra_conf`.
    fn init(&self, extra_conf: &[String]) -> Result<(), String> {
        let data = self.data();
        let out = self.server(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "--auth=trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        if out.code != 0 {
            return Err(format!("initdb failed: {out:?}"));
        }
        // The socket goes beside the data (the distribution's default directory may not be
        // writable); none if the path would be too long for a socket address.
        let sockets = if self.dir.as_os_str().len() < 80 {
            self.dir.display().to_string()
        } else {
            String::new()
        };
        let mut conf = format!(
            "\n# tend tests\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sockets}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        );
        for line in extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = data.join("postgresql.conf");
        let mut text = read(&conf_path);
        text.push_str(&conf);
        // Rewriting in place keeps the file's owner (the server user).
        std::fs::write(&conf_path, text).map_err(|e| format!("write postgresql.conf: {e}"))
    }

    /// Starts on a free port; tries another when someone took it in the meantime.
    fn first_start(&mut self) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port()?;
            match self.try_start() {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            let log = read(&self.log());
            if !log.contains("could not bind") && !log.contains("already in use") {
                break;
            }
        }
        Err(last)
    }

    fn try_start(&self) -> Result<(), String> {
        let log = self.log();
        let port = format!("-p {}", self.port);
        let out = self.pg_ctl(&[
            "-w",
            "-t",
            "60",
            "-l",
            log.to_str().expect("a UTF-8 temporary path"),
            "-o",
            &port,
            "start",
        ]);
        if out.code == 0 {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start failed: {out:?}\nserver.log:\n{}",
                read(&log)
            ))
        }
    }

    /// Starts it again (after [`Cluster::stop_fast`]) on the same port.
    pub fn start(&self) {
        self.try_start().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn stop_fast(&self) {
        let out = self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"]);
        assert_eq!(out.code, 0, "pg_ctl stop failed: {out:?}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lets clients from `cidr` in (trust, as the rest) and reloads the configuration.
    pub fn allow_network(&self, cidr: &str) {
        let hba = self.data().join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        text.push_str(&format!("host all all {cidr} trust\n"));
        std::fs::write(&hba, text).expect("write pg_hba.conf");
        let out = self.pg_ctl(&["reload"]);
        assert_eq!(out.code, 0, "pg_ctl reload failed: {out:?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The guard stops the server and removes the directory; wait until it has.
        self.guard.finish();
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on right now (the kernel's pick).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}

// ---------------------------------------------------------------------------------------
// Guards
// ---------------------------------------------------------------------------------------

/// Whose end ends a cluster.
enum Owner {
    /// This process: the cluster is stopped when it is dropped or the process ends.
    ThisProcess,
    /// Another process (the nextest runner): the cluster is stopped when it ends.
    Process(libc::pid_t),
}

/// The guard process of one cluster (our child).
struct Guard {
    pid: libc::pid_t,
    /// The write end of the pipe the guard waits on (with [`Owner::ThisProcess`]).
    tie: Option<OwnedFd>,
}

/// What the guard runs once its owner is gone, as `sh -c CLEANUP $0 DIR STOP...`: the stop
/// command (`pg_ctl stop -m immediate`, which lets the server remove its shared memory),
/// then DIR is removed once no process works in it any more. Every program of a cluster
/// runs in DIR or in its data directory; if the owner died in the middle of an `initdb` or
/// a `pg_ctl start`, those finish or fail on their own, and a server that came up
/// meanwhile is stopped on the next round (one a second, for at most two minutes).
/// Nothing is killed by pid: a pid read here may belong to someone else by the time a
/// signal would land.
const CLEANUP: &str = r#"dir=$1; shift
busy() {
    for p in /proc/[0-9]*; do
        case $(readlink "$p/cwd" 2>/dev/null) in
            "$dir" | "$dir"/*) return 0 ;;
        esac
    done
    return 1
}
i=0
while :; do
    "$@" >/dev/null 2>&1
    if ! busy; then
        rm -rf -- "$dir"
        exit
    fi
    i=$((i + 1))
    if [ "$i" -ge 120 ]; then exit 1; fi
    sleep 1
done"#;

impl Guard {
    /// Forks a guard that waits for `owner` to end, then runs `stop` (an argv) and
    /// removes `remove`.
    fn spawn(owner: Owner, remove: &Path, stop: &[OsString]) -> Result<Guard, String> {
        let os_err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
        let (watch, tie) = match owner {
            Owner::ThisProcess => {
                let mut fds = [0; 2];
                // SAFETY: pipe2 fills the two-element array on success.
                if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                    return Err(os_err("pipe2"));
                }
                // SAFETY: both descriptors were just created and are owned by nobody else.
                unsafe {
                    (
                        OwnedFd::from_raw_fd(fds[0]),
                        Some(OwnedFd::from_raw_fd(fds[1])),
                    )
                }
            }
            Owner::Process(pid) => {
                // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
                if fd < 0 {
                    return Err(os_err("pidfd_open of the nextest runner"));
                }
                // SAFETY: a new descriptor, owned by nobody else.
                (unsafe { OwnedFd::from_raw_fd(fd as RawFd) }, None)
            }
        };

        // Everything the child needs is built now: after fork, in a copy of a process with
        // many threads, it may only make async-signal-safe calls (no allocation).
        let cstr = |s: &OsStr| CString::new(s.as_bytes()).expect("no NUL in arguments");
        let mut args: Vec<CString> = vec![
            cstr("/bin/sh".as_ref()),
            cstr("-c".as_ref()),
            cstr(CLEANUP.as_ref()),
            cstr("tend-test-pg-guard".as_ref()),
            cstr(remove.as_os_str()),
        ];
        args.extend(stop.iter().map(|a| cstr(a)));
        let env: Vec<CString> = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                cstr(&kv)
            })
            .collect();
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let devnull = c"/dev/null";
        let root = c"/";

        // SAFETY: the child only calls async-signal-safe functions (see guard_main).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os_err("fork a guard for the PostgreSQL cluster"));
        }
        if pid == 0 {
            // SAFETY: in the child of fork; every pointer was prepared before it.
            unsafe {
                guard_main(
                    watch.as_raw_fd(),
                    devnull.as_ptr(),
                    root.as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                )
            }
        }
        Ok(Guard { pid, tie })
    }

    /// For a guard tied to this process: let it clean up now, and wait until it has.
    fn finish(&mut self) {
        if self.tie.take().is_some() {
            let mut status = 0;
            // SAFETY: the guard is our child; nobody else waits for it.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
    }
}

/// A signal handler that does nothing: its only use is to interrupt `poll`.
extern "C" fn wake(_: libc::c_int) {}

/// The guard, in the child of fork: a new session (Ctrl-C in the terminal does not reach
/// it), stdio on /dev/null and no other descriptor but the one it watches (a pipe of the
/// test process held open here would make e.g. nextest wait for the test's output), then
/// wait until the watched descriptor is readable (the pipe's last writer closed it, or
/// the watched process ended) or SIGINT/SIGTERM/SIGHUP arrives, and exec the cleanup.
///
/// # Safety
/// Call only in a child of fork; the pointers must be valid NUL-terminated strings and
/// NULL-terminated arrays of them.
unsafe fn guard_main(
    watch: RawFd,
    devnull: *const libc::c_char,
    root: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    // SAFETY: only async-signal-safe calls on memory prepared before fork.
    unsafe {
        libc::setsid();
        // Out of the test's working directory (the server user may not even enter it).
        libc::chdir(root);
        if watch != 3 && libc::dup2(watch, 3) < 0 {
            libc::_exit(1);
        }
        let null = libc::open(devnull, libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
        }
        if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
            for fd in 4..65536 {
                libc::close(fd);
            }
        }
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = wake as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let mut p = libc::pollfd {
            fd: 3,
            events: libc::POLLIN,
            revents: 0,
        };
        // Returns on readable/hang-up, or -1 (EINTR from one of the signals above).
        while libc::poll(&mut p, 1, -1) == 0 {}
        libc::close(3);
        // The cleanup runs to the end: a second Ctrl-C or TERM does not cut it short (an
        // ignored signal stays ignored across exec); SIGPIPE back to its default.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(*argv, argv, envp);
        libc::_exit(127)
    }
}
