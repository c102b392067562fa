//! The types of settings' values, and how each is read from the command line, shown and
//! stored ([`Value`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;

/// A setting's value: how it is parsed from what a person types, how it appears in
/// `--json` output and in the store (one JSON value for both), and how a path in it is
/// made absolute.
pub trait Value: Clone + PartialEq + std::fmt::Debug + Sized {
    fn parse(text: &str) -> Result<Self, String>;
    fn to_json(&self) -> serde_json::Value;
    fn from_json(v: &serde_json::Value) -> Option<Self>;
    /// Reads what [`Value::to_json`] wrote straight from a deserializer (the store reads
    /// every service's settings for a `list`: no intermediate JSON tree).
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
    /// Makes a path absolute against `base`; nothing for other values.
    fn absolutize(&mut self, _base: &Path) {}
    /// Reads a value of a service file (`tend.toml`): a scalar is read as the text a
    /// person would type for the option, so the file and the command line are validated
    /// alike.
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        Self::parse(&toml_text(v)?)
    }
    /// The value as `tend export` writes it (`None`: the key is left out).
    fn to_toml(&self) -> Option<toml::Value> {
        json_to_toml(&self.to_json())
    }
}

/// The text of a scalar TOML value, as a person would type it on the command line.
pub fn toml_text(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string, a number or true/false, found a {}",
            other.type_str()
        )),
    }
}

fn json_to_toml(v: &serde_json::Value) -> Option<toml::Value> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => toml::Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => toml::Value::String(s.clone()),
        serde_json::Value::Array(a) => {
            toml::Value::Array(a.iter().filter_map(json_to_toml).collect())
        }
        serde_json::Value::Object(m) => toml::Value::Table(
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), json_to_toml(v)?)))
                .collect(),
        ),
    })
}

/// An optional path (`--env-file`): an empty text clears it.
impl Value for Option<PathBuf> {
    fn parse(text: &str) -> Result<Self, String> {
        Ok((!text.is_empty()).then(|| PathBuf::from(text)))
    }
    fn to_json(&self) -> serde_json::Value {
        match self {
            Some(p) => p.to_json(),
            None => serde_json::Value::Null,
        }
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Null => Some(None),
            other => PathBuf::from_json(other).map(Some),
        }
    }
    fn absolutize(&mut self, base: &Path) {
        if let Some(p) = self {
            p.absolutize(base);
        }
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <Option<PathBuf> as serde::Deserialize>::deserialize(d)
    }
}

/// Service names (`--requires db,cache`): comma-separated on the command line, an array
/// in the file and the store; an empty text clears the list. Each must be a valid name.
impl Value for Vec<String> {
    fn parse(text: &str) -> Result<Self, String> {
        let mut out: Vec<String> = Vec::new();
        for n in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            super::names::validate_name(n).map_err(|e| e.to_string())?;
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }
    fn to_json(&self) -> serde_json::Value {
        self.iter()
            .map(|s| serde_json::Value::from(s.as_str()))
            .collect()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_array()?
            .iter()
            .map(|x| x.as_str().map(String::from))
            .collect()
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <Vec<String> as serde::Deserialize>::deserialize(d)
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Array(a) => {
                let names = a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(String::from)
                            .ok_or_else(|| "expected an array of service names".to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if names.iter().any(|n| n.contains(',')) {
                    return Err("a service name cannot contain ','".into());
                }
                Self::parse(&names.join(","))
            }
            toml::Value::String(s) => Self::parse(s),
            other => Err(format!(
                "expected an array of service names, found a {}",
                other.type_str()
            )),
        }
    }
}

impl Value for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the path is empty".into());
        }
        Ok(PathBuf::from(text))
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::String(self.to_string_lossy().into_owned())
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_str().map(PathBuf::from)
    }
    fn absolutize(&mut self, base: &Path) {
        *self = super::paths::absolute(base, self);
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <PathBuf as serde::Deserialize>::deserialize(d)
    }
}

/// Durations: `10`, `10s`, `500ms`, `1m` on the command line; milliseconds in JSON.
impl Value for Duration {
    fn parse(text: &str) -> Result<Self, String> {
        parse_duration(text)
    }
    fn to_json(&self) -> serde_json::Value {
        (self.as_millis().min(u64::MAX as u128) as u64).into()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_u64().map(Duration::from_millis)
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(Duration::from_millis)
    }
    fn to_toml(&self) -> Option<toml::Value> {
        Some(toml::Value::String(exact_duration(*self)))
    }
}

/// Counts.
impl Value for u32 {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number"))
    }
    fn to_json(&self) -> serde_json::Value {
        (*self).into()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_u64().and_then(|n| u32::try_from(n).ok())
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <u32 as serde::Deserialize>::deserialize(d)
    }
}

/// Sizes in bytes: `10M`, `512K`, `1G`, `1000` on the command line; bytes in JSON.
impl Value for u64 {
    fn parse(text: &str) -> Result<Self, String> {
        parse_size(text)
    }
    fn to_json(&self) -> serde_json::Value {
        (*self).into()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_u64()
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d)
    }
}

/// Switches.
impl Value for bool {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("{text:?} is not true or false")),
        }
    }
    fn to_json(&self) -> serde_json::Value {
        (*self).into()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_bool()
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <bool as serde::Deserialize>::deserialize(d)
    }
}

impl Value for RestartPolicy {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn to_json(&self) -> serde_json::Value {
        self.as_str().into()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_str()?.parse().ok()
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(text) = serde::Deserialize::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Value for StopSignal {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn to_json(&self) -> serde_json::Value {
        self.name().into()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_str()?.parse().ok()
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(text) = serde::Deserialize::deserialize(d)?;
        // The store holds the short name; the usual ones are read without the general
        // parse's allocations (`tend list` reads every service's).
        match text.as_ref() {
            "TERM" => Ok(StopSignal(Signal::SIGTERM)),
            "INT" => Ok(StopSignal(Signal::SIGINT)),
            "HUP" => Ok(StopSignal(Signal::SIGHUP)),
            "QUIT" => Ok(StopSignal(Signal::SIGQUIT)),
            other => other.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What the daemon does when a service exits on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Never,
    #[default]
    OnFailure,
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            other => Err(format!(
                "unknown restart policy {other:?} (expected never, on-failure or always)"
            )),
        }
    }
}

/// Whether a service's output goes through tend's log writer, which prefixes each line
/// with its time (and stream): `off` (the default: the service writes its files
/// directly), `on` (`<time> <text>`), `stream` (`<time> <out|err> <text>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogTimestamps {
    #[default]
    Off,
    On,
    Stream,
}

impl LogTimestamps {
    pub fn as_str(self) -> &'static str {
        match self {
            LogTimestamps::Off => "off",
            LogTimestamps::On => "on",
            LogTimestamps::Stream => "stream",
        }
    }
}

impl fmt::Display for LogTimestamps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogTimestamps {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "off" => Ok(LogTimestamps::Off),
            "on" => Ok(LogTimestamps::On),
            "stream" => Ok(LogTimestamps::Stream),
            other => Err(format!(
                "unknown log timestamps {other:?} (expected off, on or stream)"
            )),
        }
    }
}

impl Value for LogTimestamps {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn to_json(&self) -> serde_json::Value {
        self.as_str().into()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_str()?.parse().ok()
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(text) = serde::Deserialize::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A string read from a deserializer, borrowed from its input when it can be: serde's
/// own `Cow<str>` always copies, and the store's settings are read for every service a
/// `tend list` shows (every key and every named value).
pub(super) struct Text<'de>(pub std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A signal as a person names it: `TERM`, `SIGTERM` or `15`. Stored by its short name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopSignal(pub Signal);

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal(Signal::SIGTERM)
    }
}

impl StopSignal {
    /// Short name without the `SIG` prefix, e.g. `TERM`.
    pub fn name(self) -> &'static str {
        let full = self.0.as_str();
        full.strip_prefix("SIG").unwrap_or(full)
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StopSignal {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        let sig = if let Ok(n) = t.parse::<i32>() {
            Signal::try_from(n).map_err(|_| format!("unknown signal number {n}"))?
        } else {
            let upper = t.to_ascii_uppercase();
            let full = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            Signal::from_str(&full).map_err(|_| format!("unknown signal {s:?}"))?
        };
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            // KILL would skip the graceful phase entirely and STOP never ends a process;
            // both make "stop signal, wait, then KILL" meaningless.
            return Err(format!(
                "{} cannot be used as a stop signal",
                StopSignal(sig).name()
            ));
        }
        Ok(StopSignal(sig))
    }
}

/// Parses `10M`, `512K`, `1G`, `1000` (bytes; binary multiples).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let mult: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return Err(format!("invalid size {s:?} (use e.g. 10M, 512K, 1G)")),
            };
            (&t[..i], mult)
        }
        None => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?} (use e.g. 10M, 512K, 1G)"))
}

/// Parses `10`, `10s`, `1.5s`, `500ms`, `2m`: a bare number means seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if (0.0..1e9).contains(&secs) {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("invalid duration {s:?}"));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// `10s`, `1.5s`, `250ms`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// A cgroup resource limit, `None` meaning no limit (`max`). On the command line `max`
/// or `none` clears it; in JSON it is `null` or the number.
pub trait LimitValue: Copy + PartialEq + fmt::Debug {
    fn parse_some(text: &str) -> Result<Self, String>;
    fn to_number(self) -> u64;
    fn from_number(n: u64) -> Option<Self>;
}

/// `memory.max` in bytes: `512M`, `2G`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl LimitValue for Bytes {
    fn parse_some(text: &str) -> Result<Self, String> {
        match parse_size(text)? {
            0 => Err("a memory limit of 0 would kill the service at once".into()),
            n => Ok(Bytes(n)),
        }
    }
    fn to_number(self) -> u64 {
        self.0
    }
    fn from_number(n: u64) -> Option<Self> {
        Some(Bytes(n))
    }
}

/// `cpu.weight`: 1 to 10000 (the default weight is 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weight(pub u32);

impl LimitValue for Weight {
    fn parse_some(text: &str) -> Result<Self, String> {
        match text.trim().parse::<u32>() {
            Ok(n @ 1..=10000) => Ok(Weight(n)),
            _ => Err(format!("{text:?} is not a weight from 1 to 10000")),
        }
    }
    fn to_number(self) -> u64 {
        self.0.into()
    }
    fn from_number(n: u64) -> Option<Self> {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=10000).contains(n))
            .map(Weight)
    }
}

/// `cpu.max` as a percentage of one CPU: `50%` (half a CPU), `200%` (two CPUs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percent(pub u32);

impl LimitValue for Percent {
    fn parse_some(text: &str) -> Result<Self, String> {
        let t = text.trim();
        match t.strip_suffix('%').unwrap_or(t).trim().parse::<u32>() {
            Ok(n @ 1..=100_000) => Ok(Percent(n)),
            _ => Err(format!(
                "{text:?} is not a CPU share in percent of one CPU (e.g. 50%, 200%)"
            )),
        }
    }
    fn to_number(self) -> u64 {
        self.0.into()
    }
    fn from_number(n: u64) -> Option<Self> {
        u32::try_from(n).ok().filter(|n| *n >= 1).map(Percent)
    }
}

impl<T: LimitValue> Value for Option<T> {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "max" | "none" => Ok(None),
            t => T::parse_some(t).map(Some),
        }
    }
    fn to_json(&self) -> serde_json::Value {
        match self {
            Some(v) => v.to_number().into(),
            None => serde_json::Value::Null,
        }
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Null => Some(None),
            v => v.as_u64().and_then(T::from_number).map(Some),
        }
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match <Option<u64> as serde::Deserialize>::deserialize(d)? {
            None => Ok(None),
            Some(n) => T::from_number(n)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid limit {n}"))),
        }
    }
}

/// `--pidfile PATH`: the program daemonizes itself (forks, and the foreground process
/// exits) and writes its main process's pid here; `none` clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PidFile(pub Option<PathBuf>);

impl Value for PidFile {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "" => Err("the path is empty".into()),
            "none" => Ok(PidFile(None)),
            t => Ok(PidFile(Some(PathBuf::from(t)))),
        }
    }
    fn to_json(&self) -> serde_json::Value {
        match &self.0 {
            Some(p) => p.to_json(),
            None => serde_json::Value::Null,
        }
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Null => Some(PidFile(None)),
            v => PathBuf::from_json(v).map(|p| PidFile(Some(p))),
        }
    }
    fn absolutize(&mut self, base: &Path) {
        if let Some(p) = &mut self.0 {
            p.absolutize(base);
        }
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <Option<PathBuf> as serde::Deserialize>::deserialize(d).map(PidFile)
    }
}

/// A duration as text that [`parse_duration`] reads back to exactly the same value.
pub fn exact_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `watch`: glob patterns of files whose change restarts the service (`src/**/*.py`),
/// relative to the service's working directory unless absolute. Comma-separated on the
/// command line, an array in the file and the store; an empty text clears the list.
/// Each pattern is checked with the matcher that will use it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Globs(pub Vec<String>);

/// At most this many patterns per service: a list is typed by a person.
pub const MAX_GLOBS: usize = 64;

impl Globs {
    fn check(list: Vec<String>) -> Result<Globs, String> {
        if list.len() > MAX_GLOBS {
            return Err(format!("at most {MAX_GLOBS} patterns"));
        }
        for g in &list {
            if g.len() > 4096 {
                return Err("a pattern is longer than 4096 bytes".into());
            }
            if g.contains('\0') {
                return Err("a pattern contains a NUL byte".into());
            }
            globset::Glob::new(g).map_err(|e| format!("{g:?}: {}", e.kind()))?;
        }
        Ok(Globs(list))
    }
}

impl Value for Globs {
    fn parse(text: &str) -> Result<Self, String> {
        let list: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect();
        Globs::check(list)
    }
    fn to_json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|s| serde_json::Value::from(s.as_str()))
            .collect()
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        v.as_array()?
            .iter()
            .map(|x| x.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .map(Globs)
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <Vec<String> as serde::Deserialize>::deserialize(d).map(Globs)
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Array(a) => Globs::check(
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .map(String::from)
                            .ok_or_else(|| "expected an array of glob patterns".to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            toml::Value::String(s) => Self::parse(s),
            other => Err(format!(
                "expected an array of glob patterns, found a {}",
                other.type_str()
            )),
        }
    }
    fn to_toml(&self) -> Option<toml::Value> {
        (!self.0.is_empty()).then(|| {
            toml::Value::Array(
                self.0
                    .iter()
                    .map(|s| toml::Value::String(s.clone()))
                    .collect(),
            )
        })
    }
}
