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
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
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
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
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
