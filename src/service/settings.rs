//! The table of service settings. Every setting a service has besides its command and
//! environment is one row of the `settings!` invocation at the end of this file: its
//! type, its command-line option, its name in `--json`, its name in `edit`'s report of
//! changes, its default and its check. Everything else follows from the row:
//!
//! - the typed [`Settings`] and [`SettingChanges`] (`edit`: `None` leaves a value alone),
//!   `apply`, [`diff`], [`check`], defaults for `add`;
//! - the command-line options of `add` and `edit` ([`SettingArgs`], built with clap's
//!   builder from [`ROWS`]), each value parsed by its type ([`Value`]) with an error that
//!   names the option;
//! - the store: one JSON object per service, keyed by the field names;
//! - the `--json` output, keyed by each row's `json` name.
//!
//! So a new setting is one row here (with its type's [`Value`] if the type is new) and a
//! line of documentation in the README: nothing else to edit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::execution::{
    check_group, check_limit, check_nice, check_oom_score_adj, check_user, Account, Limit, Nice,
    OomScoreAdj, Resource, Umask,
};
use super::hooks::{Hook, HookTimeout};
use super::paths::{check_cwd, check_readable, check_writable};
use super::probe::{Check, Probe};
use super::values::{
    Bytes, Globs, LogTimestamps, Percent, PidFile, RestartPolicy, StopSignal, Text, Value, Weight,
};
use crate::error::{Error, Result};

/// Default time between the stop signal and SIGKILL (systemd's TimeoutStopSec is 90 s;
/// supervisord's stopwaitsecs is 10 s, which suits interactive use better).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default delay before the first automatic restart (systemd's RestartSec); it doubles
/// with each quick crash up to [`crate::policy::MAX_RESTART_DELAY`].
pub const DEFAULT_RESTART_DELAY: Duration = Duration::from_millis(100);
/// Default start limit: this many starts within [`DEFAULT_START_LIMIT_INTERVAL`] mark the
/// service failed (systemd's StartLimitBurst=5 within StartLimitIntervalSec=10s).
pub const DEFAULT_START_LIMIT: u32 = 5;
pub const DEFAULT_START_LIMIT_INTERVAL: Duration = Duration::from_secs(10);
/// Default size at which the daemon rotates a log file.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// What a setting's default may depend on, for a new definition.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// The directory `tend add` ran in.
    pub cwd: PathBuf,
    /// `<home>/logs/NAME.log`.
    pub log: PathBuf,
}

/// How a setting appears on the command line.
#[derive(Clone, Copy, Debug)]
pub enum Flag {
    /// `--name VALUE`, optionally also `-c VALUE`.
    Option {
        long: &'static str,
        short: Option<char>,
        value_name: &'static str,
    },
    /// `--name` sets it, `--negation` clears it.
    Switch {
        long: &'static str,
        negation: &'static str,
    },
}

/// One setting, as the command line, the output and the docs see it.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// The field name, also the key in the store.
    pub field: &'static str,
    pub flag: Flag,
    /// `--name`, as errors name the option.
    pub option: &'static str,
    pub help: &'static str,
    /// The key in `--json` output.
    pub json: &'static str,
    /// The word `tend edit` reports when it changed.
    pub label: &'static str,
}

impl Row {
    /// The key of this setting in a service file (`tend.toml`): the option's name with
    /// `_` for `-` (`--stop-timeout` is `stop_timeout`).
    pub fn file_key(&self) -> String {
        self.option.trim_start_matches("--").replace('-', "_")
    }

    /// The clap arguments of this row.
    fn args(&self) -> Vec<clap::Arg> {
        match self.flag {
            Flag::Option {
                long,
                short,
                value_name,
            } => {
                let mut a = clap::Arg::new(self.field)
                    .long(long)
                    .value_name(value_name)
                    .help(self.help)
                    // `--nice -5`, `--oom-score-adj -500`: a value, not an option.
                    .allow_negative_numbers(true)
                    .action(clap::ArgAction::Set);
                if let Some(c) = short {
                    a = a.short(c);
                }
                vec![a]
            }
            Flag::Switch { long, negation } => vec![
                clap::Arg::new(self.field)
                    .long(long)
                    .help(self.help)
                    .action(clap::ArgAction::SetTrue)
                    .conflicts_with(negation),
                clap::Arg::new(negation)
                    .long(negation)
                    .help(format!("The opposite of --{long}"))
                    .action(clap::ArgAction::SetTrue),
            ],
        }
    }

    /// What the command line said for this row: a value's text, `"true"`/`"false"` for a
    /// switch, or nothing.
    fn raw(&self, m: &clap::ArgMatches) -> Option<String> {
        match self.flag {
            Flag::Option { .. } => m.get_one::<String>(self.field).cloned(),
            Flag::Switch { negation, .. } => {
                if m.get_flag(self.field) {
                    Some("true".into())
                } else if m.get_flag(negation) {
                    Some("false".into())
                } else {
                    None
                }
            }
        }
    }
}

/// The setting options of `add` and `edit`, as typed; parsed by [`SettingArgs::changes`]
/// so an error names the option in tend's own words.
#[derive(Clone, Debug, Default)]
pub struct SettingArgs {
    raw: Vec<(&'static str, String)>,
}

impl clap::FromArgMatches for SettingArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> std::result::Result<Self, clap::Error> {
        let raw = ROWS
            .iter()
            .filter_map(|r| r.raw(m).map(|v| (r.field, v)))
            .collect();
        Ok(SettingArgs { raw })
    }

    fn update_from_arg_matches(
        &mut self,
        m: &clap::ArgMatches,
    ) -> std::result::Result<(), clap::Error> {
        *self = SettingArgs::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for SettingArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        ROWS.iter().flat_map(Row::args).fold(cmd, |c, a| c.arg(a))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl SettingArgs {
    fn get(&self, field: &str) -> Option<&str> {
        self.raw
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the text given for `row` as a `T`, naming the option in the error.
fn parse_as<T: Value>(row: &Row, text: Option<&str>) -> Result<Option<T>> {
    text.map(|t| {
        T::parse(t).map_err(|message| Error::Invalid {
            what: row.option,
            message,
        })
    })
    .transpose()
}

/// Declares the settings: see the module documentation.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty {
            flag: $flag:expr,
            option: $option:literal,
            help: $help:literal,
            json: $json:literal,
            label: $label:literal,
            default: $default:expr,
            check: $check:expr $(,)?
        }
    )*) => {
        /// Every setting of a service besides its command and environment.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        /// Changes to settings (`tend edit`): `None` leaves a setting as it is.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct SettingChanges {
            $( pub $field: Option<$ty>, )*
        }

        /// The table, for the command line and the docs.
        pub const ROWS: &[Row] = &[
            $( Row {
                field: stringify!($field),
                flag: $flag,
                option: $option,
                help: $help,
                json: $json,
                label: $label,
            }, )*
        ];

        impl SettingChanges {
            /// Sets every setting that is `Some` here.
            pub fn apply(&self, s: &mut Settings) {
                $( if let Some(v) = &self.$field { s.$field = v.clone(); } )*
            }

            /// Makes every path absolute against `base` (the directory the command ran
            /// in), so a definition means the same from wherever it is started later.
            pub fn absolutize(&mut self, base: &Path) {
                $( if let Some(v) = &mut self.$field { v.absolutize(base); } )*
            }

            /// Every setting, when each is given; else these changes back.
            pub fn complete(self) -> std::result::Result<Settings, Box<SettingChanges>> {
                if $( self.$field.is_some() && )* true {
                    Ok(Settings { $( $field: self.$field.expect("checked above"), )* })
                } else {
                    Err(Box::new(self))
                }
            }

            /// A new definition's settings: what was given, else each row's default.
            pub fn build(&self, d: &Defaults) -> Settings {
                Settings {
                    $( $field: match &self.$field {
                        Some(v) => v.clone(),
                        None => {
                            let default: fn(&Defaults, &SettingChanges) -> $ty = $default;
                            default(d, self)
                        }
                    }, )*
                }
            }
        }

        impl SettingChanges {
            /// Sets the setting whose file key is `key` from a value of a service file.
            /// `Ok(false)`: no setting has that key. An error names the row.
            pub fn set_from_toml(
                &mut self,
                key: &str,
                v: &toml::Value,
            ) -> std::result::Result<bool, (&'static Row, String)> {
                let mut rows = ROWS.iter();
                $( {
                    let row = rows.next().expect("one row per field");
                    if row.file_key() == key {
                        self.$field = Some(<$ty as Value>::from_toml(v).map_err(|m| (row, m))?);
                        return Ok(true);
                    }
                } )*
                Ok(false)
            }
        }

        impl Settings {
            /// The settings as `tend export` writes them: (file key, value), in table
            /// order; a setting with no value (an unset optional one) is left out.
            pub fn to_toml(&self) -> Vec<(String, toml::Value)> {
                let mut rows = ROWS.iter();
                let mut out = Vec::new();
                $( {
                    let row = rows.next().expect("one row per field");
                    if let Some(v) = self.$field.to_toml() {
                        out.push((row.file_key(), v));
                    }
                } )*
                out
            }
        }

        impl SettingArgs {
            /// The typed changes the command line asks for.
            pub fn changes(&self) -> Result<SettingChanges> {
                let mut rows = ROWS.iter();
                Ok(SettingChanges {
                    $( $field: {
                        let row = rows.next().expect("one row per field");
                        parse_as::<$ty>(row, self.get(row.field))?
                    }, )*
                })
            }
        }

        /// The labels of the settings that differ, in table order.
        pub fn diff(a: &Settings, b: &Settings) -> Vec<&'static str> {
            let mut out = Vec::new();
            $( if a.$field != b.$field { out.push($label); } )*
            out
        }

        /// Checks every setting against the file system (paths that must exist or be
        /// writable); the first failure.
        pub fn check(s: &Settings) -> Result<()> {
            $( {
                let check: fn(&$ty) -> Result<()> = $check;
                check(&s.$field)?;
            } )*
            Ok(())
        }

        impl Settings {
            /// The settings as `--json` shows them, in table order.
            pub fn json(&self) -> Vec<(&'static str, serde_json::Value)> {
                vec![ $( ($json, self.$field.to_json()), )* ]
            }

            /// The settings as the store keeps them: one JSON object by field name.
            pub fn to_store(&self) -> String {
                let mut m = serde_json::Map::new();
                $( m.insert(stringify!($field).to_string(), self.$field.to_json()); )*
                serde_json::Value::Object(m).to_string()
            }

            /// Reads what [`Settings::to_store`] wrote, straight into typed fields. A
            /// setting the object does not have (added to tend after the definition was
            /// stored) takes its default; one that cannot be read is an error naming it.
            /// `defaults` is called only when a setting is missing.
            pub fn from_store(
                text: &str,
                defaults: impl FnOnce() -> Defaults,
            ) -> std::result::Result<Settings, String> {
                let mut de = serde_json::Deserializer::from_str(text);
                let found = serde::Deserializer::deserialize_map(&mut de, StoredVisitor)
                    .map_err(|e| format!("settings: {e}"))?;
                match found.complete() {
                    Ok(s) => Ok(s),
                    Err(partial) => Ok(partial.build(&defaults())),
                }
            }
        }

        /// Reads the store's JSON object into [`SettingChanges`]: what is there.
        struct StoredVisitor;

        impl<'de> serde::de::Visitor<'de> for StoredVisitor {
            type Value = SettingChanges;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of settings")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<SettingChanges, A::Error> {
                let mut c = SettingChanges::default();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match key.as_ref() {
                        $( stringify!($field) => {
                            c.$field = Some(map.next_value::<Stored<$ty>>()
                                .map_err(|e| serde::de::Error::custom(
                                    format!("setting {}: {e}", stringify!($field))))?.0);
                        } )*
                        // A setting this tend does not know (written by a newer one that
                        // was then downgraded within the same schema): ignored.
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(c)
            }
        }
    };
}

/// One stored value, read by its type's [`Value::deserialize`].
struct Stored<T>(T);

impl<'de, T: Value> serde::Deserialize<'de> for Stored<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        T::deserialize(d).map(Stored)
    }
}

fn no_check<T>(_: &T) -> Result<()> {
    Ok(())
}

settings! {
    /// Working directory; must exist.
    cwd: PathBuf {
        flag: Flag::Option { long: "cwd", short: None, value_name: "DIR" },
        option: "--cwd",
        help: "Working directory (default for add: the current directory)",
        json: "cwd",
        label: "cwd",
        default: |d, _| d.cwd.clone(),
        check: |p| check_cwd(p),
    }
    /// File the service reads as stdin.
    stdin: PathBuf {
        flag: Flag::Option { long: "stdin", short: Some('i'), value_name: "PATH" },
        option: "--stdin",
        help: "File to read stdin from (default /dev/null)",
        json: "stdin",
        label: "stdin",
        default: |_, _| PathBuf::from("/dev/null"),
        check: |p| check_readable(p),
    }
    /// File stdout is appended to.
    stdout: PathBuf {
        flag: Flag::Option { long: "stdout", short: Some('o'), value_name: "PATH" },
        option: "--stdout",
        help: "File stdout appends to (default <home>/logs/NAME.log)",
        json: "stdout",
        label: "stdout",
        default: |d, _| d.log.clone(),
        check: |p| check_writable("stdout", p),
    }
    /// File stderr is appended to.
    stderr: PathBuf {
        flag: Flag::Option { long: "stderr", short: Some('e'), value_name: "PATH" },
        option: "--stderr",
        help: "File stderr appends to (default: the same file as stdout)",
        json: "stderr",
        label: "stderr",
        default: |d, c| c.stdout.clone().unwrap_or_else(|| d.log.clone()),
        check: |p| check_writable("stderr", p),
    }
    /// First signal of a stop.
    stop_signal: StopSignal {
        flag: Flag::Option { long: "stop-signal", short: None, value_name: "SIGNAL" },
        option: "--stop-signal",
        help: "Signal sent first by stop (default TERM)",
        json: "stop_signal",
        label: "stop-signal",
        default: |_, _| StopSignal::default(),
        check: no_check,
    }
    /// Wait between the stop signal and SIGKILL.
    stop_timeout: Duration {
        flag: Flag::Option { long: "stop-timeout", short: None, value_name: "DURATION" },
        option: "--stop-timeout",
        help: "Time between the stop signal and SIGKILL: 10, 10s, 500ms (default 10s)",
        json: "stop_timeout_ms",
        label: "stop-timeout",
        default: |_, _| DEFAULT_STOP_TIMEOUT,
        check: no_check,
    }
    /// What the daemon does when the service exits.
    restart: RestartPolicy {
        flag: Flag::Option { long: "restart", short: None, value_name: "POLICY" },
        option: "--restart",
        help: "What the daemon does when the service exits: never, on-failure (default), always",
        json: "restart",
        label: "restart",
        default: |_, _| RestartPolicy::default(),
        check: no_check,
    }
    /// Started by the daemon when it comes up.
    autostart: bool {
        flag: Flag::Switch { long: "autostart", negation: "no-autostart" },
        option: "--autostart",
        help: "Start the service when the daemon comes up (default: no)",
        json: "autostart",
        label: "autostart",
        default: |_, _| false,
        check: no_check,
    }
    /// Delay before the first automatic restart; doubles per quick crash.
    restart_delay: Duration {
        flag: Flag::Option { long: "restart-delay", short: None, value_name: "DURATION" },
        option: "--restart-delay",
        help: "Delay before the first automatic restart; doubles per quick crash up to 30s (default 100ms)",
        json: "restart_delay_ms",
        label: "restart-delay",
        default: |_, _| DEFAULT_RESTART_DELAY,
        check: no_check,
    }
    /// Starts allowed within `start_limit_interval` before the service is marked failed;
    /// 0 means no limit.
    start_limit: u32 {
        flag: Flag::Option { long: "start-limit", short: None, value_name: "N" },
        option: "--start-limit",
        help: "Starts allowed within --start-limit-interval before the daemon marks the service failed; 0 means no limit (default 5)",
        json: "start_limit",
        label: "start-limit",
        default: |_, _| DEFAULT_START_LIMIT,
        check: no_check,
    }
    /// Window of the start limit.
    start_limit_interval: Duration {
        flag: Flag::Option { long: "start-limit-interval", short: None, value_name: "DURATION" },
        option: "--start-limit-interval",
        help: "Window of the start limit (default 10s)",
        json: "start_limit_interval_ms",
        label: "start-limit-interval",
        default: |_, _| DEFAULT_START_LIMIT_INTERVAL,
        check: no_check,
    }
    /// Size at which the daemon rotates the log file(s); 0 means never.
    log_max_bytes: u64 {
        flag: Flag::Option { long: "log-max-size", short: None, value_name: "SIZE" },
        option: "--log-max-size",
        help: "Size at which the daemon rotates the log file, keeping 3 backups: 10M, 512K, 1G; 0 never rotates (default 10M)",
        json: "log_max_bytes",
        label: "log-max-size",
        default: |_, _| DEFAULT_LOG_MAX_BYTES,
        check: no_check,
    }
    /// Whether the output goes through tend's log writer, each line prefixed with its
    /// time (`on`) and stream (`stream`); `off` writes the files directly.
    log_timestamps: LogTimestamps {
        flag: Flag::Option { long: "log-timestamps", short: None, value_name: "WHEN" },
        option: "--log-timestamps",
        help: "Prefix each log line with its time: off (default: the service writes its files directly), on, stream (time and out/err); through tend's log writer, which also rotates the files",
        json: "log_timestamps",
        label: "log-timestamps",
        default: |_, _| LogTimestamps::Off,
        check: no_check,
    }
    /// The program daemonizes itself and writes its main pid here (systemd's
    /// `Type=forking` with `PIDFile=`); needs cgroup containment.
    pidfile: PidFile {
        flag: Flag::Option { long: "pidfile", short: None, value_name: "PATH" },
        option: "--pidfile",
        help: "The program daemonizes itself (its first process exits) and writes its main pid to PATH; tend follows that process. Needs cgroup containment (none: unset)",
        json: "pidfile",
        label: "pidfile",
        default: |_, _| PidFile(None),
        check: no_check,
    }
    /// `memory.max` of the service's cgroup; needs the memory controller.
    memory_max: Option<Bytes> {
        flag: Flag::Option { long: "memory-max", short: None, value_name: "SIZE" },
        option: "--memory-max",
        help: "Memory limit of the service's cgroup (512M, 2G; max: none); needs cgroup containment with the memory controller",
        json: "memory_max_bytes",
        label: "memory-max",
        default: |_, _| None,
        check: no_check,
    }
    /// `cpu.weight` of the service's cgroup; needs the cpu controller.
    cpu_weight: Option<Weight> {
        flag: Flag::Option { long: "cpu-weight", short: None, value_name: "WEIGHT" },
        option: "--cpu-weight",
        help: "CPU weight of the service's cgroup, 1-10000 (the default weight is 100; max: unset); needs the cpu controller",
        json: "cpu_weight",
        label: "cpu-weight",
        default: |_, _| None,
        check: no_check,
    }
    /// `cpu.max` of the service's cgroup, in percent of one CPU; needs the cpu controller.
    cpu_max: Option<Percent> {
        flag: Flag::Option { long: "cpu-max", short: None, value_name: "PERCENT" },
        option: "--cpu-max",
        help: "CPU limit of the service's cgroup in percent of one CPU (50%, 200%; max: none); needs the cpu controller",
        json: "cpu_max_percent",
        label: "cpu-max",
        default: |_, _| None,
        check: no_check,
    }
    /// A file of `KEY=VALUE` lines (dotenv rules) read each time the service starts;
    /// `--env` values win over it.
    env_file: Option<PathBuf> {
        flag: Flag::Option { long: "env-file", short: None, value_name: "PATH" },
        option: "--env-file",
        help: "File of KEY=VALUE lines (dotenv rules) read at every start; --env wins over it (\"\" clears)",
        json: "env_file",
        label: "env-file",
        default: |_, _| None,
        check: no_check,
    }
    /// Services started before this one, which does not start if one of them cannot.
    requires: Vec<String> {
        flag: Flag::Option { long: "requires", short: None, value_name: "NAMES" },
        option: "--requires",
        help: "Services to start first (comma-separated); if one cannot start, this one does not (\"\" clears)",
        json: "requires",
        label: "requires",
        default: |_, _| Vec::new(),
        check: no_check,
    }
    /// Services started before this one when both are started (order only).
    after: Vec<String> {
        flag: Flag::Option { long: "after", short: None, value_name: "NAMES" },
        option: "--after",
        help: "Start after these services when they are started too; order only (comma-separated, \"\" clears)",
        json: "after",
        label: "after",
        default: |_, _| Vec::new(),
        check: no_check,
    }
    /// When a start counts as done: `start --wait` waits for it; `starting` until then.
    ready: Option<Probe> {
        flag: Flag::Option { long: "ready", short: None, value_name: "CHECK" },
        option: "--ready",
        help: "Readiness check: \"tcp=PORT\", \"http=URL\", \"cmd=COMMAND\", \"log=REGEX\" or \"grace=DURATION\", plus \"timeout=DURATION\" (\"\" clears)",
        json: "ready",
        label: "ready",
        default: |_, _| None,
        check: no_check,
    }
    /// Liveness check the daemon runs every interval; N failures in a row restart.
    health: Option<Probe> {
        flag: Flag::Option { long: "health", short: None, value_name: "CHECK" },
        option: "--health",
        help: "Health check the daemon runs: \"tcp=PORT\", \"http=URL\", \"cmd=COMMAND\", plus \"every=10s failures=3 timeout=5s\" (\"\" clears)",
        json: "health",
        label: "health",
        default: |_, _| None,
        check: |h| check_health(h),
    }
    // The process settings, applied between fork and exec (see `execution`).
    /// File mode creation mask of the service.
    umask: Umask {
        flag: Flag::Option { long: "umask", short: None, value_name: "OCTAL" },
        option: "--umask",
        help: "File mode creation mask of the service, in octal (default 022)",
        json: "umask",
        label: "umask",
        default: |_, _| Umask::default(),
        check: no_check,
    }
    /// `RLIMIT_NOFILE`; unset: the soft limit tend was started with.
    limit_nofile: Limit {
        flag: Flag::Option { long: "limit-nofile", short: None, value_name: "SOFT[:HARD]" },
        option: "--limit-nofile",
        help: "Limit on open files: SOFT[:HARD], one value for both, infinity for none (\"\" clears: the limit tend was started with)",
        json: "limit_nofile",
        label: "limit-nofile",
        default: |_, _| Limit(None),
        check: |l| check_limit(Resource::Nofile, l),
    }
    /// `RLIMIT_NPROC` (counted per user, not per service).
    limit_nproc: Limit {
        flag: Flag::Option { long: "limit-nproc", short: None, value_name: "SOFT[:HARD]" },
        option: "--limit-nproc",
        help: "Limit on processes of the service's user: SOFT[:HARD], infinity for none (\"\" clears: inherited)",
        json: "limit_nproc",
        label: "limit-nproc",
        default: |_, _| Limit(None),
        check: |l| check_limit(Resource::Nproc, l),
    }
    /// `RLIMIT_CORE`, in bytes.
    limit_core: Limit {
        flag: Flag::Option { long: "limit-core", short: None, value_name: "SOFT[:HARD]" },
        option: "--limit-core",
        help: "Largest core dump: SOFT[:HARD] in bytes (0, 64M), infinity for none (\"\" clears: inherited)",
        json: "limit_core",
        label: "limit-core",
        default: |_, _| Limit(None),
        check: |l| check_limit(Resource::Core, l),
    }
    /// `RLIMIT_MEMLOCK`, in bytes.
    limit_memlock: Limit {
        flag: Flag::Option { long: "limit-memlock", short: None, value_name: "SOFT[:HARD]" },
        option: "--limit-memlock",
        help: "Most memory locked in RAM: SOFT[:HARD] in bytes (64K, 1G), infinity for none (\"\" clears: inherited)",
        json: "limit_memlock",
        label: "limit-memlock",
        default: |_, _| Limit(None),
        check: |l| check_limit(Resource::Memlock, l),
    }
    /// Nice value; unset: tend's own.
    nice: Nice {
        flag: Flag::Option { long: "nice", short: None, value_name: "N" },
        option: "--nice",
        help: "Nice value, -20 (first) to 19 (last); below tend's own needs root (\"\" clears: tend's own)",
        json: "nice",
        label: "nice",
        default: |_, _| Nice(None),
        check: check_nice,
    }
    /// `oom_score_adj`; unset: tend's own.
    oom_score_adj: OomScoreAdj {
        flag: Flag::Option { long: "oom-score-adj", short: None, value_name: "N" },
        option: "--oom-score-adj",
        help: "OOM killer adjustment, -1000 (never) to 1000 (first); below tend's own needs root (\"\" clears: tend's own)",
        json: "oom_score_adj",
        label: "oom-score-adj",
        default: |_, _| OomScoreAdj(None),
        check: check_oom_score_adj,
    }
    /// The user the service runs as (tend runs as root); its groups from the group
    /// database, HOME, USER, LOGNAME and SHELL from its passwd entry.
    user: Account {
        flag: Flag::Option { long: "user", short: None, value_name: "USER" },
        option: "--user",
        help: "Run the service as this user (name or uid), with its groups, HOME, USER, LOGNAME, SHELL; needs tend to run as root (\"\" clears)",
        json: "user",
        label: "user",
        default: |_, _| Account(None),
        check: check_user,
    }
    /// The group the service runs as; unset: the user's primary group.
    group: Account {
        flag: Flag::Option { long: "group", short: None, value_name: "GROUP" },
        option: "--group",
        help: "Run the service with this group (name or gid; default: the user's primary group); needs tend to run as root (\"\" clears)",
        json: "group",
        label: "group",
        default: |_, _| Account(None),
        check: check_group,
    }
    // Foreground (`tend up`) settings, kept together.
    /// Under `tend up`, the end of this service ends the run (a container, as PID 1).
    required: bool {
        flag: Flag::Switch { long: "required", negation: "no-required" },
        option: "--required",
        help: "Under `tend up`, the end of this service stops everything, and tend up exits with its status (default: no)",
        json: "required",
        label: "required",
        default: |_, _| false,
        check: no_check,
    }
    /// Glob patterns of files whose change restarts the service (the daemon and `tend up`).
    watch: Globs {
        flag: Flag::Option { long: "watch", short: None, value_name: "GLOBS" },
        option: "--watch",
        help: "Restart the service (and those that require it) when a file matching one of these globs changes: \"src/**/*.py\", relative to --cwd (comma-separated, \"\" clears)",
        json: "watch",
        label: "watch",
        default: |_, _| Globs::default(),
        check: no_check,
    }
    // Event hooks (run by the daemon; see docs/hooks.md). A service's hook replaces
    // the home's default (`tend config set hooks.on_exit ...`) for that event.
    /// Run (`sh -c`) when the service starts or is restarted.
    on_start: Hook {
        flag: Flag::Option { long: "on-start", short: None, value_name: "COMMAND" },
        option: "--on-start",
        help: "Hook run by the daemon (sh -c, the event as JSON on stdin) when the service starts or is restarted (\"\" clears; default: config hooks.on_start)",
        json: "on_start",
        label: "on-start",
        default: |_, _| Hook(None),
        check: no_check,
    }
    /// Run when the service's main process exits.
    on_exit: Hook {
        flag: Flag::Option { long: "on-exit", short: None, value_name: "COMMAND" },
        option: "--on-exit",
        help: "Hook run by the daemon when the service's main process exits (\"\" clears; default: config hooks.on_exit)",
        json: "on_exit",
        label: "on-exit",
        default: |_, _| Hook(None),
        check: no_check,
    }
    /// Run when the service becomes `failed`.
    on_failed: Hook {
        flag: Flag::Option { long: "on-failed", short: None, value_name: "COMMAND" },
        option: "--on-failed",
        help: "Hook run by the daemon when the service becomes failed: start limit reached, or a restart could not start the program (\"\" clears; default: config hooks.on_failed)",
        json: "on_failed",
        label: "on-failed",
        default: |_, _| Hook(None),
        check: no_check,
    }
    /// Run when health checks failed in a row and the instance is killed.
    on_unhealthy: Hook {
        flag: Flag::Option { long: "on-unhealthy", short: None, value_name: "COMMAND" },
        option: "--on-unhealthy",
        help: "Hook run by the daemon when the health check failed too often and the instance is killed (\"\" clears; default: config hooks.on_unhealthy)",
        json: "on_unhealthy",
        label: "on-unhealthy",
        default: |_, _| Hook(None),
        check: no_check,
    }
    /// Time a hook may run before it is killed whole.
    hook_timeout: HookTimeout {
        flag: Flag::Option { long: "hook-timeout", short: None, value_name: "DURATION" },
        option: "--hook-timeout",
        help: "Time a hook may run before it is killed with everything it started (\"\" clears; default: config hooks.timeout, else 30s)",
        json: "hook_timeout_ms",
        label: "hook-timeout",
        default: |_, _| HookTimeout(None),
        check: no_check,
    }
}

/// A health check must be something that can fail while the service runs.
fn check_health(h: &Option<Probe>) -> Result<()> {
    match h.as_ref().map(|p| &p.check) {
        Some(Check::Grace { .. }) | Some(Check::Log { .. }) => Err(Error::Invalid {
            what: "--health",
            message: "a health check is one of tcp, http or cmd".into(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            cwd: "/srv".into(),
            log: "/h/logs/w.log".into(),
        }
    }

    #[test]
    fn build_takes_defaults_and_stderr_follows_stdout() {
        let s = SettingChanges::default().build(&defaults());
        assert_eq!(s.cwd, PathBuf::from("/srv"));
        assert_eq!(s.stderr, s.stdout);
        let c = SettingChanges {
            stdout: Some("/x/out".into()),
            ..SettingChanges::default()
        };
        let s = c.build(&defaults());
        assert_eq!(s.stderr, PathBuf::from("/x/out"));
    }

    #[test]
    fn store_round_trips_and_fills_missing_settings() {
        let s = SettingChanges {
            stop_timeout: Some(Duration::from_millis(1500)),
            autostart: Some(true),
            ..SettingChanges::default()
        }
        .build(&defaults());
        assert_eq!(Settings::from_store(&s.to_store(), defaults), Ok(s.clone()));
        let partial = r#"{"cwd":"/a","stop_timeout":250}"#;
        let p = Settings::from_store(partial, defaults).unwrap();
        assert_eq!(p.cwd, PathBuf::from("/a"));
        assert_eq!(p.stop_timeout, Duration::from_millis(250));
        assert_eq!(p.restart, RestartPolicy::OnFailure);
        assert!(Settings::from_store(r#"{"stop_timeout":"x"}"#, defaults).is_err());
    }

    #[test]
    fn diff_names_rows_by_label() {
        let a = SettingChanges::default().build(&defaults());
        let mut b = a.clone();
        b.log_max_bytes = 1;
        b.autostart = true;
        assert_eq!(diff(&a, &b), ["autostart", "log-max-size"]);
    }

    #[test]
    fn every_row_is_a_field_and_an_option() {
        assert_eq!(ROWS.len(), 38);
        for r in ROWS {
            assert!(r.option.starts_with("--"), "{}", r.field);
            let long = match r.flag {
                Flag::Option { long, .. } | Flag::Switch { long, .. } => long,
            };
            assert_eq!(r.option, format!("--{long}"));
        }
    }
}
