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
    },
    /// Show all services: name, state, pid, uptime, command.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one service in detail. Exit 0 running, 3 not running, 4 unknown service.
    Status {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Start services (no-op for one already running).
    Start(Which),
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
        #[arg(long)]
        json: bool,
    },
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
    List,
}

#[derive(Debug, Subcommand)]
pub enum DaemonAction {
    /// Is a daemon running? pid, uptime, services watched, version. Exit 3 if not.
    Status {
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
