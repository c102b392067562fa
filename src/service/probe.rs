//! Readiness and health checks as settings (`ready`, `health`): what to check, how long
//! to wait, how often. Running them is [`crate::probe`]'s business; this is only the
//! definition, its text form (`--ready "tcp=5433 timeout=20s"`), its file form
//! (`ready = { tcp = 5433, timeout = "20s" }`) and its stored form.
//!
//! The text and file forms share one parser ([`Probe::from_pairs`]): a file's table is
//! read as the same `key = value` pairs, so both are validated alike.

use std::time::Duration;

use super::values::{exact_duration, parse_duration, Value};

/// Default time a `ready` check may take before the start counts as failed.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default timeout of one `health` check.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default interval between `health` checks.
pub const DEFAULT_HEALTH_EVERY: Duration = Duration::from_secs(10);
/// Default number of failed health checks in a row before the service is restarted.
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;

/// What is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// A TCP connection to `host:port` is accepted.
    Tcp { host: String, port: u16 },
    /// An HTTP GET of the URL answers 2xx or 3xx (`http://` only).
    Http { url: String },
    /// `sh -c CMD` exits 0 (run in the service's directory, with its environment).
    Cmd { cmd: String },
    /// The regular expression matches a line the service wrote to its stdout log since
    /// it started.
    Log { pattern: String },
    /// The service is still up after this long (supervisord's `startsecs`).
    Grace { after: Duration },
}

/// A check with its timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub check: Check,
    /// `ready`: how long to wait for the check to pass; `health`: how long one check may
    /// take before it is killed and counted as failed.
    pub timeout: Option<Duration>,
    /// `health` only: interval between checks.
    pub every: Option<Duration>,
    /// `health` only: failures in a row before a restart.
    pub failures: Option<u32>,
}

impl Probe {
    pub fn ready_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_READY_TIMEOUT)
    }
    pub fn health_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_HEALTH_TIMEOUT)
    }
    pub fn every(&self) -> Duration {
        self.every.unwrap_or(DEFAULT_HEALTH_EVERY)
    }
    pub fn failures(&self) -> u32 {
        self.failures.unwrap_or(DEFAULT_HEALTH_FAILURES).max(1)
    }

    /// Reads `key = value` pairs: exactly one of `tcp`, `http`, `cmd`, `log`, `grace`, and
    /// optionally `timeout`, `every`, `failures`.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Probe, String> {
        let mut check = None;
        let mut p = Probe {
            check: Check::Grace {
                after: Duration::ZERO,
            },
            timeout: None,
            every: None,
            failures: None,
        };
        for (k, v) in pairs {
            let c = match k.as_str() {
                "tcp" => Some(parse_tcp(v)?),
                "http" => {
                    if !v.starts_with("http://") {
                        return Err(format!("http check {v:?}: only http:// URLs are supported"));
                    }
                    Some(Check::Http { url: v.clone() })
                }
                "cmd" => {
                    if v.trim().is_empty() {
                        return Err("the cmd check is empty".into());
                    }
                    Some(Check::Cmd { cmd: v.clone() })
                }
                "log" => {
                    regex_lite::Regex::new(v)
                        .map_err(|e| format!("log check {v:?}: not a regular expression: {e}"))?;
                    Some(Check::Log { pattern: v.clone() })
                }
                "grace" => Some(Check::Grace {
                    after: parse_duration(v)?,
                }),
                "timeout" => {
                    p.timeout = Some(parse_duration(v)?);
                    None
                }
                "every" => {
                    let d = parse_duration(v)?;
                    if d.is_zero() {
                        return Err("every must be more than 0".into());
                    }
                    p.every = Some(d);
                    None
                }
                "failures" => {
                    p.failures = Some(
                        v.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("failures {v:?} is not a whole number > 0"))?,
                    );
                    None
                }
                other => {
                    return Err(format!(
                        "unknown key {other:?} (expected one of tcp, http, cmd, log, grace, \
                         and timeout, every, failures)"
                    ))
                }
            };
            if let Some(c) = c {
                if check.is_some() {
                    return Err(
                        "more than one check given (one of tcp, http, cmd, log, grace)".into(),
                    );
                }
                check = Some(c);
            }
        }
        p.check = check.ok_or("no check given (one of tcp, http, cmd, log, grace)")?;
        Ok(p)
    }

    /// The pairs [`Probe::from_pairs`] reads, in a stable order.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![match &self.check {
            Check::Tcp { host, port } => (
                "tcp",
                if host == "127.0.0.1" {
                    port.to_string()
                } else {
                    format!("{host}:{port}")
                },
            ),
            Check::Http { url } => ("http", url.clone()),
            Check::Cmd { cmd } => ("cmd", cmd.clone()),
            Check::Log { pattern } => ("log", pattern.clone()),
            Check::Grace { after } => ("grace", exact_duration(*after)),
        }];
        if let Some(t) = self.timeout {
            out.push(("timeout", exact_duration(t)));
        }
        if let Some(e) = self.every {
            out.push(("every", exact_duration(e)));
        }
        if let Some(f) = self.failures {
            out.push(("failures", f.to_string()));
        }
        out
    }
}

/// `5433`, `:5433` or `host:5433`.
fn parse_tcp(v: &str) -> Result<Check, String> {
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (if h.is_empty() { "127.0.0.1" } else { h }, p),
        None => ("127.0.0.1", v),
    };
    let port = port
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("tcp check {v:?}: not a port (1-65535) or HOST:PORT"))?;
    Ok(Check::Tcp {
        host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    })
}

/// Text form on the command line: `tcp=5433 timeout=20s`, split by shell-word rules
/// (`cmd='pg_isready -q'`); an empty text clears the setting.
impl Value for Option<Probe> {
    fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let words =
            shell_words::split(text).map_err(|_| format!("unbalanced quotes in {text:?}"))?;
        let pairs = words
            .iter()
            .map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("{w:?} is not of the form KEY=VALUE"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Probe::from_pairs(&pairs).map(Some)
    }
    fn to_json(&self) -> serde_json::Value {
        match self {
            None => serde_json::Value::Null,
            Some(p) => {
                let mut m = serde_json::Map::new();
                for (k, v) in p.to_pairs() {
                    m.insert(k.into(), v.into());
                }
                m.into()
            }
        }
    }
    fn from_json(v: &serde_json::Value) -> Option<Self> {
        match v {
            serde_json::Value::Null => Some(None),
            serde_json::Value::Object(m) => {
                let pairs: Option<Vec<(String, String)>> = m
                    .iter()
                    .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect();
                Probe::from_pairs(&pairs?).ok().map(Some)
            }
            _ => None,
        }
    }
    fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
        Self::from_json(&v).ok_or_else(|| serde::de::Error::custom("not a check"))
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Table(t) => {
                let pairs = t
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), super::values::toml_text(v)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                Probe::from_pairs(&pairs).map(Some)
            }
            toml::Value::String(s) => Self::parse(s),
            other => Err(format!(
                "expected a table such as {{ tcp = 5433 }}, found a {}",
                other.type_str()
            )),
        }
    }
    fn to_toml(&self) -> Option<toml::Value> {
        let p = self.as_ref()?;
        let mut t = toml::Table::new();
        for (k, v) in p.to_pairs() {
            let value = match (k, v.parse::<i64>()) {
                ("tcp" | "failures", Ok(n)) => toml::Value::Integer(n),
                _ => toml::Value::String(v),
            };
            t.insert(k.into(), value);
        }
        Some(toml::Value::Table(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for text in [
            "tcp=5433",
            "tcp=db.local:5432 timeout=20s",
            "http=http://127.0.0.1:8080/ every=10s failures=3 timeout=2s",
            "cmd='pg_isready -q'",
            "log='listening on .*'",
            "grace=1500ms",
        ] {
            let p = <Option<Probe>>::parse(text).unwrap().unwrap();
            let again = <Option<Probe>>::from_json(&Some(p.clone()).to_json()).unwrap();
            assert_eq!(again, Some(p.clone()), "{text}");
            let t = Some(p.clone()).to_toml().unwrap();
            assert_eq!(<Option<Probe>>::from_toml(&t).unwrap(), Some(p), "{text}");
        }
        assert_eq!(<Option<Probe>>::parse("").unwrap(), None);
    }

    #[test]
    fn bad_checks_are_named() {
        for (text, word) in [
            ("tcp=0", "port"),
            ("tcp=1 http=http://x/", "more than one"),
            ("timeout=1s", "no check"),
            ("http=https://x/", "only http://"),
            ("log='('", "regular expression"),
            ("tpc=1", "unknown key"),
            ("failures=0 tcp=1", "failures"),
        ] {
            let e = <Option<Probe>>::parse(text).unwrap_err();
            assert!(e.contains(word), "{text}: {e}");
        }
    }
}
