//! `tend config` (settings shared by the daemon and the CLI) and `tend notify` (one
//! NOTIFY with those settings).

use std::io::Write;

use super::daemon::pg_overrides;
use super::session::{open_supervisor, Failure};
use super::term::escape;
use crate::cli::{ConfigAction, NotifyArgs};
use crate::config as cfg;
use crate::error::Error;
use crate::home::Home;
use crate::service;

/// `tend notify ACTION NAME... [--host H]`: one NOTIFY, signed when a key is configured.
pub fn notify(home: &Home, args: NotifyArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let mut words = vec![args.action.to_ascii_lowercase()];
    let (names, signal) = if words[0] == "signal" {
        let mut names = args.names.clone();
        let sig = names.pop();
        (names, sig)
    } else {
        (args.names.clone(), None)
    };
    for n in &names {
        service::validate_name(n)?;
        words.push(match &args.host {
            Some(h) => format!("{n}@{h}"),
            None => n.clone(),
        });
    }
    words.extend(signal);
    let payload = words.join(" ");
    // Never send what a daemon would refuse.
    crate::pg::payload::parse(&payload).map_err(|e| Error::Invalid {
        what: "notify",
        message: e.to_string(),
    })?;
    let mut sup = open_supervisor(home)?;
    let settings = crate::pg::Settings::resolve(&mut sup, &pg_overrides(args.pg, None))?
        .ok_or_else(|| Error::Invalid {
            what: "notify",
            message: "no PostgreSQL URL: use --postgres URL or `tend config set postgres.url URL`"
                .into(),
        })?;
    crate::pg::notify(&settings, &payload)?;
    writeln!(
        out,
        "notified {} on channel {}: {payload}",
        settings.display_url(),
        settings.channel
    )?;
    Ok(())
}

/// `tend config set|get|unset|list`.
pub fn config(home: &Home, action: ConfigAction, out: &mut dyn Write) -> Result<(), Failure> {
    if let ConfigAction::Set { key, value } = &action {
        cfg::validate(key, value)?;
    }
    let mut sup = open_supervisor(home)?;
    match action {
        ConfigAction::Set { key, value } => {
            let value = cfg::validate(&key, &value)?;
            sup.config_set(&key, Some(&value))?;
            writeln!(out, "{key} = {}", cfg::display(&key, &value))?;
        }
        ConfigAction::Get { key } => match sup.config_get(&key)? {
            Some(v) => writeln!(out, "{}", escape(&cfg::display(&key, &v)))?,
            None => {
                return Err(Error::Invalid {
                    what: "config",
                    message: format!("{key} is not set"),
                }
                .into())
            }
        },
        ConfigAction::Unset { key } => {
            sup.config_set(&key, None)?;
            writeln!(out, "{key}: unset")?;
        }
        ConfigAction::List { json } => {
            let set = sup.config_all()?;
            let value = |k: &str| {
                set.iter()
                    .find(|(sk, _)| sk == k)
                    .map(|(_, v)| cfg::display(k, v))
            };
            if json {
                let items: Vec<serde_json::Value> = cfg::KEYS
                    .iter()
                    .map(|(k, what)| {
                        serde_json::json!({"key": k, "value": value(k), "description": what})
                    })
                    .collect();
                super::output::json(out, &items)?;
            } else {
                for (k, what) in cfg::KEYS {
                    match value(k) {
                        Some(v) => writeln!(out, "{k} = {}", escape(&v))?,
                        None => writeln!(out, "# {k}: {what}")?,
                    }
                }
            }
        }
    }
    Ok(())
}
