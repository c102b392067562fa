//! Command-line definitions (clap derive): one variant per subcommand.

use std::path::PathBuf;

use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, FromArgMatches, Parser, Subcommand};

use crate::service::SettingArgs;

#[derive(Debug, Parser)]
#[command(
    name = "tend",
    version,
    about = "Keep services running without root: daemonize, watch and stop them.",
    propagate_version = true
)]
pub struct Cli {
    /// State home (database and default logs). Default: $XDG_STATE_HOME/tend or
    /// ~/.local/state/tend.
    #[arg(long, global = true, env = "TEND_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,

    /// `home` came from `$TEND_HOME` rather than `--home` (a relative `TEND_HOME` is
    /// refused: its meaning would change with the directory each command runs in).
    #[arg(skip)]
    pub home_from_env: bool,
}

impl Cli {
    /// The whole command tree, every subcommand's arguments built (not deferred): what
    /// completions and man pages are made from, identical to what each subcommand parses.
    pub fn full_command() -> clap::Command {
        use clap::CommandFactory;
        FULL.store(true, Ordering::Relaxed);
        let cmd = Cli::command();
        FULL.store(false, Ordering::Relaxed);
        cmd
    }

    /// Parses the process's arguments, noting where the state home came from.
    pub fn parse_args() -> Result<Cli, clap::Error> {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(std::env::args_os());
        // Not dropped: freeing the tree and the matches one allocation at a time was
        // about a tenth of `tend --version`'s remaining instructions, for a few
        // kilobytes the process gives back when it exits.
        std::mem::forget(cmd);
        let matches = std::mem::ManuallyDrop::new(matches?);
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.home_from_env =
            matches.value_source("home") == Some(clap::parser::ValueSource::EnvVariable);
        Ok(cli)
    }
}

/// One variant per subcommand. Each carries its arguments in a [`Lazy`], so that only
/// the subcommand that runs has its arguments built.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Define a service: `tend add NAME [OPTIONS] -- PROGRAM [ARGS...]` or `--cmd STRING`.
    Add(Lazy<AddArgs>),
    /// Change a definition; takes effect at the next start.
    Edit(Lazy<EditArgs>),
    /// Delete definitions (refused while running unless --stop).
    #[command(visible_alias = "rm")]
    Remove(Lazy<RemoveArgs>),
    /// Show all services: name, state, pid, uptime, command.
    #[command(visible_alias = "ls")]
    List(Lazy<OutputArgs>),
    /// Show one service in detail. Exit 0 running, 3 not running, 4 unknown service.
    Status(Lazy<StatusArgs>),
    /// Make the definitions match a service file (./tend.toml): add, change, remove.
    Apply(Lazy<ApplyArgs>),
    /// Run a services file in the foreground, in a state home of its own (<state
    /// dir>/up/HASH unless --home): start everything in dependency order, print the
    /// merged output; Ctrl-C stops it all (a second one kills). As PID 1 (--init), reap
    /// orphans and forward signals.
    Up(Lazy<UpArgs>),
    /// Print definitions as a service file (`tend export > tend.toml`).
    Export(Lazy<ExportArgs>),
    /// Print a Procfile or a supervisord .conf as a service file (`tend import Procfile
    /// > tend.toml`); what cannot be mapped is listed on stderr.
    Import(Lazy<ImportArgs>),
    /// Start services, requirements first (no-op for one already running).
    Start(Lazy<StartArgs>),
    /// Stop services: stop signal to the process group, SIGKILL after the timeout.
    Stop(Lazy<Which>),
    /// Stop (if running) and start services.
    Restart(Lazy<Which>),
    /// Print the end of services' logs, and follow them with -f: one service as it
    /// wrote it, several merged in time order with each line prefixed by its service.
    Logs(Lazy<LogsArgs>),
    /// Send a signal to services' main processes: `tend signal HUP web`.
    Signal(Lazy<SignalArgs>),
    /// Run the resident daemon (restarts crashed services), or ask it for its status or
    /// to stop.
    Daemon(Lazy<DaemonArgs>),
    /// Send a command to daemons over PostgreSQL NOTIFY: `tend notify restart web`.
    Notify(Lazy<NotifyArgs>),
    /// Control a fleet of hosts through PostgreSQL: durable commands, per-host results,
    /// every host's state (`tend fleet init`, then `tend fleet status`).
    Fleet(Lazy<FleetArgs>),
    /// Settings shared by the daemon and the CLI (the PostgreSQL connection).
    Config(Lazy<ConfigArgs>),
    /// Show the event history (start, stop, exit seen, stale record cleared, changes).
    Events(Lazy<EventsArgs>),
    /// Print every service's state, restarts, last exit, CPU time and memory, and the
    /// daemon's counters when one runs, in the Prometheus text format.
    Metrics(Lazy<MetricsArgs>),
    /// A live view of every service (state, pid, uptime, restarts, last exit, CPU,
    /// memory) with keys to start, stop, restart and read logs; q quits.
    Top(Lazy<TopArgs>),
    /// Check the state home, the database, the daemon, systemd, PostgreSQL and
    /// containment; one line per check with a fix. Exit 1 when something is wrong.
    Doctor(Lazy<DoctorArgs>),
    /// Print a shell completion script: `tend completions bash > ~/.local/share/bash-completion/completions/tend`.
    Completions(Lazy<CompletionsArgs>),
    /// Print the man page (roff) on stdout, or write tend.1 and one page per subcommand
    /// into a directory with --dir.
    Man(Lazy<ManArgs>),
}

/// A subcommand's arguments, built only when that subcommand is parsed: building the
/// whole tree of about 25 subcommands (and dropping it) was most of what every `tend`
/// command spent before doing anything. [`Cli::full_command`] builds it all at once for
/// completions and man pages.
///
/// The arguments are added after the variant's attributes, so a doc comment on an
/// argument struct would replace the variant's description: the structs used here carry
/// plain `//` comments (`tests::deferred_and_full_trees_agree` checks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lazy<T>(pub T);

/// Set while [`Cli::full_command`] builds the tree.
static FULL: AtomicBool = AtomicBool::new(false);

impl<T: Args> Args for Lazy<T> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        if FULL.load(Ordering::Relaxed) {
            T::augment_args(cmd)
        } else {
            cmd.defer(T::augment_args)
        }
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        if FULL.load(Ordering::Relaxed) {
            T::augment_args_for_update(cmd)
        } else {
            cmd.defer(T::augment_args_for_update)
        }
    }
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

impl<T: FromArgMatches> FromArgMatches for Lazy<T> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Lazy)
    }
    fn from_arg_matches_mut(m: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(m).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}

impl<T> std::ops::Deref for Lazy<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Stop a running service first.
    #[arg(long)]
    pub stop: bool,
    /// Keep the service's log files in <home>/logs (by default they are deleted, so a
    /// new service of the same name starts with an empty log).
    #[arg(long)]
    pub keep_logs: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub name: String,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only these services (default: all).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The Procfile or supervisord configuration to read.
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    /// Signal name or number: HUP, SIGUSR1, 10...
    pub signal: String,
    #[command(flatten)]
    pub which: Which,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this service's events.
    pub name: Option<String>,
    /// Number of most recent events to show.
    #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
    pub lines: u32,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// How often to read the database and /proc again (100ms to 1m).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub interval: String,
    /// Show every host of the fleet (the state each publishes in PostgreSQL) instead
    /// of this home's services; looking only.
    #[arg(long)]
    pub fleet: bool,
    #[command(flatten)]
    pub pg: FleetPgArgs,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write tend.1, tend-add.1, ... into this directory instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

// `tend logs`: which services, which lines, how.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub which: Which,
    /// Number of lines to print per log file [default: 20; with --since: all in the
    /// window].
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<usize>,
    /// Keep printing what is appended (Ctrl-C to end).
    #[arg(short, long)]
    pub follow: bool,
    /// Only lines from this long ago (10m, 2h, 1d) or since this time
    /// (2026-12-06T21:00:00Z).
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// One JSON object per line: {"time", "service", "stream", "text"}.
    #[arg(long)]
    pub json: bool,
}

// How a listing or report is printed.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct OutputArgs {
    /// Print JSON (a stable shape, see the README) instead of text; never truncated.
    #[arg(long)]
    pub json: bool,
    /// Do not truncate lines to the terminal's width.
    #[arg(long, short = 'w')]
    pub wide: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DaemonArgs {
    /// Stay in the foreground and log to stderr (for systemd --user and containers).
    #[arg(long)]
    pub foreground: bool,
    #[command(flatten)]
    pub pg: PgArgs,
    /// This host's name in NOTIFY payloads (NAME@HOST); default: config
    /// postgres.host_id, else the hostname.
    #[arg(long, value_name = "NAME")]
    pub host_id: Option<String>,
    /// Serve the HTTP API (metrics, services, events; writes with http.token_file) on
    /// HOST:PORT (loopback unless http.allow_remote) or a Unix socket path. Default:
    /// config http.listen, else off.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    // `tend up` starts its daemon with its own pid here: the daemon stops every service
    // and exits when that process ends.
    #[arg(long, hide = true, value_name = "PID", requires = "foreground")]
    pub bound_to: Option<i32>,
    #[command(subcommand)]
    pub action: Option<DaemonAction>,
}

// PostgreSQL connection options; each overrides the `tend config` value.
#[derive(Debug, Args, Default)]
pub struct PgArgs {
    /// PostgreSQL URL (default: config postgres.url). sslmode=disable|prefer|require.
    /// The environment variable keeps a password out of the process list.
    #[arg(
        long = "postgres",
        value_name = "URL",
        env = "TEND_POSTGRES_URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
    /// NOTIFY channel (default: config postgres.channel, else "tend").
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// PostgreSQL schema of the fleet tables (default: config postgres.schema, else
    /// "tend_fleet").
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,
    /// PEM file of extra CA certificates trusted for TLS.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// HMAC key file: payloads must be signed (the daemon) / are signed (notify).
    #[arg(long, value_name = "PATH")]
    pub notify_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct NotifyArgs {
    /// start, stop, restart, or signal (`tend notify signal web HUP`).
    pub action: String,
    /// Service names (for signal: names, then the signal).
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Only the daemon with this host id acts on it.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    #[command(flatten)]
    pub pg: PgArgs,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Store a setting.
    Set { key: String, value: String },
    /// Print a setting (a password in a URL is shown as ****).
    Get { key: String },
    /// Remove a setting.
    Unset { key: String },
    /// Print every setting, and the known keys.
    List {
        /// Print a JSON array of {"key", "value", "description"} (value null when unset).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DaemonAction {
    /// Is a daemon running? pid, uptime, services watched, version. Exit 3 if not.
    Status {
        /// Print a JSON object (see the README).
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon; services keep running (a new daemon adopts them).
    Stop {
        /// Stop every service too.
        #[arg(long)]
        all: bool,
    },
    /// Make the daemon re-read definitions and adopt running services (as SIGHUP).
    Reload,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The service file.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "tend.toml"
    )]
    pub file: PathBuf,
    /// Print the plan only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove services the file does not own (added by hand or by another file).
    #[arg(long)]
    pub prune: bool,
    /// Restart running services whose definition changed.
    #[arg(long)]
    pub restart_changed: bool,
}

// `tend up`: which file, which services, how it ends.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The services file [default: ./tend.toml, else ./Procfile]; a file named
    /// Procfile* is read as a Procfile.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Only these services and what they require [default: all].
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// When a service exits (without being asked to), stop everything and exit with its
    /// status.
    #[arg(long)]
    pub exit_on_failure: bool,
    /// Show `tend top` instead of the merged output (q stops everything).
    #[arg(long)]
    pub tui: bool,
    /// Be a container's init: reap every orphan, log to stdout/stderr (the default when
    /// tend runs as PID 1).
    #[arg(long)]
    pub init: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub which: Which,
    /// Wait until each service is ready (its `ready` check passes, or it stayed up 1 s
    /// without one); give up after DURATION (default: the check's timeout).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "")]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct Which {
    /// Service names.
    #[arg(
        required_unless_present = "all",
        conflicts_with = "all",
        value_name = "NAME"
    )]
    pub names: Vec<String>,
    /// Every defined service.
    #[arg(long)]
    pub all: bool,
}

// Options shared by `add` and `edit`: the command, the environment, and every setting
// of the table in [`crate::service::settings`].
#[derive(Debug, Args)]
pub struct DefinitionArgs {
    /// The command as one string, split with shell-word rules (no shell runs it).
    #[arg(long, value_name = "STRING", conflicts_with = "argv")]
    pub cmd: Option<String>,
    /// Environment variable for the service (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    #[command(flatten)]
    pub settings: SettingArgs,
    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    pub argv: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub name: String,
    #[command(flatten)]
    pub def: DefinitionArgs,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    pub name: String,
    #[command(flatten)]
    pub def: DefinitionArgs,
    /// Remove an environment variable (repeatable).
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,
}

// `tend fleet ...`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub action: FleetAction,
}

// The fleet's database: each option overrides the `tend config` value.
#[derive(Debug, Args, Default, Clone)]
pub struct FleetPgArgs {
    /// PostgreSQL URL (default: config postgres.url).
    #[arg(
        long = "postgres",
        value_name = "URL",
        env = "TEND_POSTGRES_URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
    /// Schema of the fleet's tables (default: config postgres.schema, else tend_fleet).
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,
    /// PEM file of extra CA certificates trusted for TLS.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum FleetAction {
    /// Create the fleet's schema, or bring it up to date (idempotent).
    Init {
        #[command(flatten)]
        pg: FleetPgArgs,
    },
    /// Every host: last heartbeat (stale marked), version, each service's state.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pg: FleetPgArgs,
    },
    /// Start a service on every live host that defines it (or on --host ones).
    Start(FleetOrder),
    /// Stop a service on every live host that defines it (or on --host ones).
    Stop(FleetOrder),
    /// Restart a service on every live host that defines it (or on --host ones).
    Restart(FleetOrder),
    /// Send a signal to a service's main process across the fleet: `signal HUP web`.
    Signal {
        /// Signal name or number: HUP, SIGUSR1, 10...
        signal: String,
        #[command(flatten)]
        order: FleetOrder,
    },
    /// Who issued what, when, and each host's outcome (oldest first).
    History {
        /// Only this service's commands.
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Number of most recent commands to show.
        #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
        lines: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pg: FleetPgArgs,
    },
    /// Retire a host that left: its unfinished commands expire, its row and its
    /// services' states go (it joins again if its daemon comes back).
    Remove {
        /// The host id.
        host: String,
        #[command(flatten)]
        pg: FleetPgArgs,
    },
    /// Least-privilege rights: an operator (issue commands, read all) or a host's role
    /// (its own commands and status only).
    Grant {
        /// Role that may insert commands and read everything.
        #[arg(long, value_name = "ROLE", conflicts_with_all = ["host_role", "host_id"],
              required_unless_present = "host_role")]
        operator: Option<String>,
        /// Role a daemon connects as: it sees and finishes only --host-id's commands.
        #[arg(long, value_name = "ROLE", requires = "host_id")]
        host_role: Option<String>,
        /// The host id that role acts for.
        #[arg(long, value_name = "HOST", requires = "host_role")]
        host_id: Option<String>,
        #[command(flatten)]
        pg: FleetPgArgs,
    },
}

// One fleet command: which service, which hosts, how long to wait.
#[derive(Debug, Args)]
pub struct FleetOrder {
    /// The service (as the hosts define it).
    pub name: String,
    /// Only this host (repeatable); default: every live host that defines the service.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Wait up to this long for every host's result, printing each as it arrives.
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
    /// A key that makes a repeat harmless: a host whose command under the same key is
    /// pending, running or finished within postgres.dedup_keep (default 24h) gets no
    /// second one; the repeat is answered with that command and its result.
    #[arg(long, value_name = "KEY")]
    pub dedup: Option<String>,
    /// A host that has not run the command within this long never runs it.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub expires: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pg: FleetPgArgs,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every (sub)command's path and long help, depth first. clap's own `help`
    /// subcommands are left out: their copies of the tree are made before deferred
    /// subcommands are built (`tend help config set` looks in the real tree).
    fn helps(cmd: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        out.push((path.to_string(), cmd.render_long_help().to_string()));
        for sub in cmd.get_subcommands_mut() {
            if sub.get_name() != "help" {
                let path = format!("{path} {}", sub.get_name());
                helps(sub, &path, out);
            }
        }
    }

    /// What a user sees of a deferred subcommand (its help, built when asked for) is what
    /// the full tree (completions, man pages) says, for every subcommand.
    #[test]
    fn deferred_and_full_trees_agree() {
        let mut full = super::Cli::full_command();
        full.build();
        let mut deferred = super::Cli::command();
        deferred.build();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        helps(&mut full, "tend", &mut a);
        helps(&mut deferred, "tend", &mut b);
        assert!(a.len() > 30, "{} commands", a.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y);
        }
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn definitions_are_consistent() {
        super::Cli::full_command().debug_assert();
        super::Cli::command().debug_assert();
    }
}
