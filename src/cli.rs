//! Command-line definitions (clap derive): one variant per subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Parses the process's arguments, noting where the state home came from.
    pub fn parse_args() -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches()?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.home_from_env =
            matches.value_source("home") == Some(clap::parser::ValueSource::EnvVariable);
        Ok(cli)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Define a service: `tend add NAME [OPTIONS] -- PROGRAM [ARGS...]` or `--cmd STRING`.
    Add(AddArgs),
    /// Change a definition; takes effect at the next start.
    Edit(EditArgs),
    /// Delete definitions (refused while running unless --stop).
    #[command(visible_alias = "rm")]
    Remove {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Stop a running service first.
        #[arg(long)]
        stop: bool,
        /// Keep the service's log files in <home>/logs (by default they are deleted, so a
        /// new service of the same name starts with an empty log).
        #[arg(long)]
        keep_logs: bool,
    },
    /// Show all services: name, state, pid, uptime, command.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Show one service in detail. Exit 0 running, 3 not running, 4 unknown service.
    Status {
        name: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Make the definitions match a service file (./tend.toml): add, change, remove.
    Apply(ApplyArgs),
    /// Print definitions as a service file (`tend export > tend.toml`).
    Export {
        /// Only these services (default: all).
        #[arg(value_name = "NAME")]
        names: Vec<String>,
    },
    /// Print a Procfile or a supervisord .conf as a service file (`tend import Procfile
    /// > tend.toml`); what cannot be mapped is listed on stderr.
    Import {
        /// The Procfile or supervisord configuration to read.
        path: PathBuf,
    },
    /// Start services, requirements first (no-op for one already running).
    Start(StartArgs),
    /// Stop services: stop signal to the process group, SIGKILL after the timeout.
    Stop(Which),
    /// Stop (if running) and start services.
    Restart(Which),
    /// Print the end of a service's log, and follow it with -f.
    Logs {
        name: String,
        /// Number of lines to print.
        #[arg(short = 'n', long, default_value_t = 20, value_name = "N")]
        lines: usize,
        /// Keep printing what is appended (Ctrl-C to end).
        #[arg(short, long)]
        follow: bool,
    },
    /// Send a signal to services' main processes: `tend signal HUP web`.
    Signal {
        /// Signal name or number: HUP, SIGUSR1, 10...
        signal: String,
        #[command(flatten)]
        which: Which,
    },
    /// Run the resident daemon (restarts crashed services), or ask it for its status or
    /// to stop.
    Daemon(DaemonArgs),
    /// Send a command to daemons over PostgreSQL NOTIFY: `tend notify restart web`.
    Notify(NotifyArgs),
    /// Control a fleet of hosts through PostgreSQL: durable commands, per-host results,
    /// every host's state (`tend fleet init`, then `tend fleet status`).
    Fleet(FleetArgs),
    /// Settings shared by the daemon and the CLI (the PostgreSQL connection).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Show the event history (start, stop, exit seen, stale record cleared, changes).
    Events {
        /// Only this service's events.
        name: Option<String>,
        /// Number of most recent events to show.
        #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
        lines: u32,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Check the state home, the database, the daemon, systemd, PostgreSQL and
    /// containment; one line per check with a fix. Exit 1 when something is wrong.
    Doctor {
        /// Print the checks as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: `tend completions bash > ~/.local/share/bash-completion/completions/tend`.
    Completions {
        /// The shell to write completions for.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, or write tend.1 and one page per subcommand
    /// into a directory with --dir.
    Man {
        /// Write tend.1, tend-add.1, ... into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// How a listing or report is printed.
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
    #[command(subcommand)]
    pub action: Option<DaemonAction>,
}

/// PostgreSQL connection options; each overrides the `tend config` value.
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

/// Options shared by `add` and `edit`: the command, the environment, and every setting
/// of the table in [`crate::service::settings`].
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

/// `tend fleet ...`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub action: FleetAction,
}

/// The fleet's database: each option overrides the `tend config` value.
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

/// One fleet command: which service, which hosts, how long to wait.
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
    /// A key that makes a repeat harmless: a host with a pending command under the same
    /// key gets no second one.
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
