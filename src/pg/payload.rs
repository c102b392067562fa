//! NOTIFY payloads: what may arrive over the wire, parsed strictly.
//!
//! Two forms:
//! - text: `ACTION NAME [NAME...]`, each name optionally `NAME@HOST`; for signals
//!   `signal NAME [NAME...] SIG`.
//! - JSON: `{"action": ..., "service": "web"}` or `"services": [...]`, optional
//!   `"host"` (applies to every name without its own `@HOST`) and `"signal"`.
//!
//! Only start, stop, restart and signal exist, and only service names (never commands,
//! paths or environment) can be named: nothing received here can define or change what
//! runs. Anything else is an error that names the problem.

use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::api::Verb;
use crate::service::StopSignal;

/// PostgreSQL refuses payloads of 8000 bytes or more; anything longer is not ours.
pub const MAX_PAYLOAD: usize = 8000;
/// More names than this in one payload is refused.
pub const MAX_TARGETS: usize = 256;

/// One named service, optionally for one host only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub host: Option<String>,
}

/// A parsed NOTIFY command: a verb (the same as the CLI's) for some services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub verb: Verb,
    pub targets: Vec<Target>,
}

impl Order {
    /// The services this command names for `host` (targets without a host are for all).
    pub fn services_for(&self, host: &str) -> Vec<String> {
        self.targets
            .iter()
            .filter(|t| t.host.as_deref().is_none_or(|h| h == host))
            .map(|t| t.service.clone())
            .collect()
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty payload")]
    Empty,
    #[error("payload longer than {MAX_PAYLOAD} bytes")]
    TooLong,
    #[error("unknown action {0:?} (expected start, stop, restart or signal)")]
    UnknownAction(String),
    #[error("no service named")]
    NoService,
    #[error("more than {MAX_TARGETS} services named")]
    TooManyTargets,
    #[error("invalid service name {0:?}")]
    InvalidName(String),
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    #[error("signal: {0}")]
    BadSignal(String),
    #[error("`signal` needs a signal name (signal NAME SIG)")]
    MissingSignal,
    #[error("a signal is only valid with the signal action")]
    UnexpectedSignal,
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("both `service` and `services` given")]
    BothServiceFields,
}

/// Parses one payload (already authenticated, if authentication is on).
pub fn parse(payload: &str) -> Result<Order, ParseError> {
    if payload.len() >= MAX_PAYLOAD {
        return Err(ParseError::TooLong);
    }
    let p = payload.trim();
    if p.is_empty() {
        return Err(ParseError::Empty);
    }
    if p.starts_with('{') {
        parse_json(p)
    } else {
        parse_text(p)
    }
}

fn parse_text(p: &str) -> Result<Order, ParseError> {
    let mut words = p.split_ascii_whitespace();
    let verb = words.next().ok_or(ParseError::Empty)?;
    let mut rest: Vec<&str> = words.collect();
    let action = match verb.to_ascii_lowercase().as_str() {
        "start" => Verb::Start,
        "stop" => Verb::Stop,
        "restart" => Verb::Restart,
        "signal" => {
            if rest.len() < 2 {
                return Err(if rest.is_empty() {
                    ParseError::NoService
                } else {
                    ParseError::MissingSignal
                });
            }
            let sig = rest.pop().expect("checked above");
            Verb::Signal {
                signal: parse_signal(sig)? as i32,
            }
        }
        _ => return Err(ParseError::UnknownAction(truncate(verb))),
    };
    targets(action, rest.iter().map(|s| s.to_string()).collect(), None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    action: String,
    service: Option<String>,
    services: Option<Vec<String>>,
    host: Option<String>,
    signal: Option<String>,
}

fn parse_json(p: &str) -> Result<Order, ParseError> {
    let j: Json = serde_json::from_str(p).map_err(|e| ParseError::Json(e.to_string()))?;
    let names = match (j.service, j.services) {
        (Some(_), Some(_)) => return Err(ParseError::BothServiceFields),
        (Some(s), None) => vec![s],
        (None, Some(v)) => v,
        (None, None) => Vec::new(),
    };
    let action = match (j.action.to_ascii_lowercase().as_str(), j.signal) {
        ("start", None) => Verb::Start,
        ("stop", None) => Verb::Stop,
        ("restart", None) => Verb::Restart,
        ("signal", Some(sig)) => Verb::Signal {
            signal: parse_signal(&sig)? as i32,
        },
        ("signal", None) => return Err(ParseError::MissingSignal),
        ("start" | "stop" | "restart", Some(_)) => return Err(ParseError::UnexpectedSignal),
        (other, _) => return Err(ParseError::UnknownAction(truncate(other))),
    };
    if let Some(h) = &j.host {
        validate_host(h)?;
    }
    targets(action, names, j.host)
}

fn targets(
    action: Verb,
    names: Vec<String>,
    default_host: Option<String>,
) -> Result<Order, ParseError> {
    if names.is_empty() {
        return Err(ParseError::NoService);
    }
    if names.len() > MAX_TARGETS {
        return Err(ParseError::TooManyTargets);
    }
    let mut targets = Vec::with_capacity(names.len());
    for n in names {
        let (service, host) = match n.split_once('@') {
            Some((s, h)) => {
                validate_host(h)?;
                (s.to_string(), Some(h.to_string()))
            }
            None => (n, default_host.clone()),
        };
        if crate::service::validate_name(&service).is_err() {
            return Err(ParseError::InvalidName(truncate(&service)));
        }
        targets.push(Target { service, host });
    }
    Ok(Order {
        verb: action,
        targets,
    })
}

fn parse_signal(s: &str) -> Result<Signal, ParseError> {
    // The same names the CLI accepts for stop signals, plus KILL and STOP: a signal
    // command is explicit about what it sends.
    match s.to_ascii_uppercase().trim_start_matches("SIG") {
        "KILL" => return Ok(Signal::SIGKILL),
        "STOP" => return Ok(Signal::SIGSTOP),
        _ => {}
    }
    s.parse::<StopSignal>()
        .map(|s| s.0)
        .map_err(|e| ParseError::BadSignal(truncate(&e)))
}

fn validate_host(h: &str) -> Result<(), ParseError> {
    if crate::service::is_host_id(h) {
        Ok(())
    } else {
        Err(ParseError::InvalidHost(truncate(h)))
    }
}

/// Bounds what of a hostile payload ends up in logs and events.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A payload as it may appear in a log line or event: bounded and with control
/// characters escaped.
pub fn quote(payload: &str) -> String {
    let short = truncate(payload);
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(service: &str, host: Option<&str>) -> Target {
        Target {
            service: service.into(),
            host: host.map(Into::into),
        }
    }

    #[test]
    fn text_forms() {
        assert_eq!(
            parse("restart web").unwrap(),
            Order {
                verb: Verb::Restart,
                targets: vec![t("web", None)]
            }
        );
        assert_eq!(
            parse("  stop worker@web-3 api ").unwrap(),
            Order {
                verb: Verb::Stop,
                targets: vec![t("worker", Some("web-3")), t("api", None)]
            }
        );
        assert_eq!(
            parse("signal web HUP").unwrap().verb,
            Verb::Signal {
                signal: Signal::SIGHUP as i32
            }
        );
        assert_eq!(parse("signal a b SIGUSR1").unwrap().targets.len(), 2);
        assert_eq!(parse("START web").unwrap().verb, Verb::Start);
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            parse(r#"{"action":"restart","service":"web"}"#).unwrap(),
            Order {
                verb: Verb::Restart,
                targets: vec![t("web", None)]
            }
        );
        assert_eq!(
            parse(r#"{"action":"stop","services":["a","b@h2"],"host":"h1"}"#).unwrap(),
            Order {
                verb: Verb::Stop,
                targets: vec![t("a", Some("h1")), t("b", Some("h2"))]
            }
        );
        assert_eq!(
            parse(r#"{"action":"signal","service":"web","signal":"USR2"}"#)
                .unwrap()
                .verb,
            Verb::Signal {
                signal: Signal::SIGUSR2 as i32
            }
        );
    }

    #[test]
    fn rejections() {
        use ParseError::*;
        let cases: &[(&str, ParseError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("restart", NoService),
            ("delete web", UnknownAction("delete".into())),
            ("start ../etc", InvalidName("../etc".into())),
            ("start web@", InvalidHost(String::new())),
            ("start web@h/x", InvalidHost("h/x".into())),
            ("signal web", MissingSignal),
            (
                "signal web NOPE",
                BadSignal("unknown signal \"NOPE\"".into()),
            ),
            (r#"{"action":"signal","service":"web"}"#, MissingSignal),
            (
                r#"{"action":"start","service":"web","signal":"HUP"}"#,
                UnexpectedSignal,
            ),
            (
                r#"{"action":"start","service":"a","services":["b"]}"#,
                BothServiceFields,
            ),
            (r#"{"action":"start"}"#, NoService),
        ];
        for (payload, want) in cases {
            assert_eq!(&parse(payload).unwrap_err(), want, "{payload}");
        }
        // Anything that could define or change a service is not even a field.
        assert!(matches!(
            parse(r#"{"action":"start","service":"web","command":"rm -rf /"}"#),
            Err(Json(_))
        ));
        assert!(matches!(parse("{not json"), Err(Json(_))));
        assert_eq!(parse(&"x".repeat(MAX_PAYLOAD)).unwrap_err(), TooLong);
        let many = format!("start {}", vec!["a"; MAX_TARGETS + 1].join(" "));
        assert_eq!(parse(&many).unwrap_err(), TooManyTargets);
    }

    #[test]
    fn host_targeting() {
        let c = parse("restart a@h1 b@h2 c").unwrap();
        assert_eq!(c.services_for("h1"), vec!["a", "c"]);
        assert_eq!(c.services_for("h3"), vec!["c"]);
    }

    // Property tests: the parser is a trust boundary, so it is fuzzed on every
    // `cargo test` (a coverage-guided target for cargo-fuzz lives in fuzz/).
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Arbitrary text never panics, and whatever is accepted names only valid
            /// services and hosts.
            #[test]
            fn arbitrary_text(s in "\\PC{0,200}") {
                if let Ok(c) = parse(&s) {
                    prop_assert!(!c.targets.is_empty());
                    for t in &c.targets {
                        prop_assert!(crate::service::validate_name(&t.service).is_ok());
                        if let Some(h) = &t.host {
                            prop_assert!(validate_host(h).is_ok());
                        }
                    }
                }
            }

            /// Arbitrary bytes (as PostgreSQL would deliver them, lossily decoded).
            #[test]
            fn arbitrary_bytes(v in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse(&String::from_utf8_lossy(&v));
            }

            /// Near-miss commands: a real verb followed by anything.
            #[test]
            fn verbs_with_noise(verb in "(start|stop|restart|signal|START)", rest in "[ -~]{0,120}") {
                let _ = parse(&format!("{verb} {rest}"));
            }

            /// JSON objects with arbitrary keys and values: only the known keys pass.
            #[test]
            fn arbitrary_json(
                keys in proptest::collection::vec("[a-z]{1,8}", 0..6),
                vals in proptest::collection::vec("[ -~]{0,20}", 0..6),
            ) {
                let mut obj = serde_json::Map::new();
                for (k, v) in keys.iter().zip(vals.iter()) {
                    obj.insert(k.clone(), serde_json::Value::String(v.clone()));
                }
                let text = serde_json::Value::Object(obj.clone()).to_string();
                if parse(&text).is_ok() {
                    let allowed = ["action", "service", "services", "host", "signal"];
                    prop_assert!(obj.keys().all(|k| allowed.contains(&k.as_str())));
                }
            }

            /// Well-formed text commands parse to exactly what was written.
            #[test]
            fn valid_text_round_trips(
                action in "(start|stop|restart)",
                names in proptest::collection::vec("[A-Za-z0-9][A-Za-z0-9._-]{0,20}", 1..6),
                host in proptest::option::of("[a-z][a-z0-9-]{0,12}"),
            ) {
                let words: Vec<String> = names
                    .iter()
                    .map(|n| match &host {
                        Some(h) => format!("{n}@{h}"),
                        None => n.clone(),
                    })
                    .collect();
                let c = parse(&format!("{action} {}", words.join(" "))).unwrap();
                prop_assert_eq!(c.verb.to_string(), action);
                let got: Vec<&str> = c.targets.iter().map(|t| t.service.as_str()).collect();
                let want: Vec<&str> = names.iter().map(String::as_str).collect();
                prop_assert_eq!(got, want);
                prop_assert!(c.targets.iter().all(|t| t.host == host));
            }

            /// Signature checking never panics on arbitrary envelopes.
            #[test]
            fn arbitrary_envelopes(s in "sig1 [0-9-]{0,12} [0-9a-f]{0,17} [0-9a-fA-F]{0,70} \\PC{0,40}") {
                let key = crate::pg::auth::Key::load_bytes(b"0123456789abcdef");
                let mut seen = crate::pg::auth::Replays::default();
                let _ = crate::pg::auth::verify(&key, &s, 0, &mut seen);
            }
        }
    }

    #[test]
    fn quoting_is_bounded_and_escaped() {
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        assert!(quote(&"é".repeat(100)).len() < 160);
    }
}
