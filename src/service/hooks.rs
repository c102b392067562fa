//! Event hooks: the command lines a service (or the home, in `tend config`) runs when
//! it starts, exits, fails or is found unhealthy, and how long one may take. The values
//! here are what is stored and typed; the daemon runs them (see `daemon::hooks`).

use std::path::Path;
use std::time::Duration;

use super::values::{parse_duration, Value};

/// A hook's default time limit, after which it is killed whole (its own process group
/// or cgroup leaf).
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest hook command accepted (it is one `sh -c` argument).
pub const MAX_HOOK_LEN: usize = 4096;

/// The events a hook can be run for, by the event kind recorded for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookEvent {
    /// `start` (a person's or a command's) and `restart` (the restart policy's).
    Start,
    /// `exit`: the main process ended, for whatever reason.
    Exit,
    /// `failed`: the start limit was reached, or an automatic restart could not even
    /// spawn the program.
    Failed,
    /// `unhealthy`: health checks failed in a row; the instance is killed.
    Unhealthy,
}

impl HookEvent {
    pub const ALL: [HookEvent; 4] = [
        HookEvent::Start,
        HookEvent::Exit,
        HookEvent::Failed,
        HookEvent::Unhealthy,
    ];

    /// The hook an event of `kind` runs, if any.
    pub fn of_kind(kind: &str) -> Option<HookEvent> {
        use crate::record::event;
        match kind {
            event::START | event::RESTART => Some(HookEvent::Start),
            event::EXIT => Some(HookEvent::Exit),
            event::FAILED => Some(HookEvent::Failed),
            event::UNHEALTHY => Some(HookEvent::Unhealthy),
            _ => None,
        }
    }

    /// The setting's name: `on_start`...; also `TEND_EVENT`'s value without `on_`.
    pub fn key(self) -> &'static str {
        match self {
            HookEvent::Start => "on_start",
            HookEvent::Exit => "on_exit",
            HookEvent::Failed => "on_failed",
            HookEvent::Unhealthy => "on_unhealthy",
        }
    }

    /// The word `TEND_EVENT` and the JSON's `event` carry: `start`, `exit`, `failed`,
    /// `unhealthy`.
    pub fn word(self) -> &'static str {
        &self.key()[3..]
    }
}

/// A hook command line (`sh -c`), or none; an empty text clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hook(pub Option<String>);

/// Checks a hook command as typed: no NUL byte (it could not be passed to `sh`), not
/// over [`MAX_HOOK_LEN`].
pub fn check_hook_text(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err("a hook command cannot contain a NUL byte".into());
    }
    if text.len() > MAX_HOOK_LEN {
        return Err(format!(
            "a hook command is at most {MAX_HOOK_LEN} bytes (this one has {})",
            text.len()
        ));
    }
    Ok(())
}

impl Value for Hook {
    fn parse(text: &str) -> Result<Self, String> {
        check_hook_text(text)?;
        Ok(Hook((!text.trim().is_empty()).then(|| text.to_string())))
    }
    fn to_json(&self) -> serde_json::Value {
        match &self.0 {
            Some(s) => s.as_str().into(),
            None => serde_json::Value::Null,
        }
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Null => Some(Hook(None)),
            serde_json::Value::String(s) => Hook::parse(s).ok(),
            _ => None,
        }
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <Option<String> as serde::Deserialize>::deserialize(d).map(Hook)
    }
    fn absolutize(&mut self, _base: &Path) {}
}

/// A hook time limit, or none (then the home's `hooks.timeout`, else
/// [`DEFAULT_HOOK_TIMEOUT`]); an empty text clears it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookTimeout(pub Option<Duration>);

impl Value for HookTimeout {
    fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(HookTimeout(None));
        }
        let d = parse_duration(text)?;
        if d.is_zero() {
            return Err("a hook's timeout must be more than 0".into());
        }
        Ok(HookTimeout(Some(d)))
    }
    fn to_json(&self) -> serde_json::Value {
        match self.0 {
            Some(d) => (d.as_millis() as u64).into(),
            None => serde_json::Value::Null,
        }
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Null => Some(HookTimeout(None)),
            other => other
                .as_u64()
                .map(|ms| HookTimeout(Some(Duration::from_millis(ms)))),
        }
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <Option<u64> as serde::Deserialize>::deserialize(d)
            .map(|v| HookTimeout(v.map(Duration::from_millis)))
    }
    fn to_toml(&self) -> Option<toml::Value> {
        self.0
            .map(|d| toml::Value::String(super::values::exact_duration(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_parse_and_round_trip() {
        assert_eq!(Hook::parse("").unwrap(), Hook(None));
        assert_eq!(Hook::parse("  ").unwrap(), Hook(None));
        let h = Hook::parse("notify-send \"$TEND_SERVICE\"").unwrap();
        assert_eq!(Hook::from_json(&h.to_json()), Some(h.clone()));
        assert!(Hook::parse("a\0b").is_err());
        assert!(Hook::parse(&"x".repeat(MAX_HOOK_LEN + 1)).is_err());
        assert_eq!(HookTimeout::parse("").unwrap(), HookTimeout(None));
        let t = HookTimeout::parse("1500ms").unwrap();
        assert_eq!(t, HookTimeout(Some(Duration::from_millis(1500))));
        assert_eq!(HookTimeout::from_json(&t.to_json()), Some(t));
        assert_eq!(HookTimeout::from_toml(&t.to_toml().unwrap()), Ok(t));
        assert!(HookTimeout::parse("0").is_err());
    }

    #[test]
    fn kinds_map_to_hooks() {
        assert_eq!(HookEvent::of_kind("restart"), Some(HookEvent::Start));
        assert_eq!(HookEvent::of_kind("exit"), Some(HookEvent::Exit));
        assert_eq!(HookEvent::of_kind("hook-failed"), None);
        assert_eq!(HookEvent::Unhealthy.word(), "unhealthy");
    }
}
