//! `tend import FILE`: a Procfile or a supervisord configuration as a service file, printed
//! on stdout (`tend import Procfile > tend.toml`, then `tend apply`). Whatever cannot be
//! mapped is listed on stderr, one `tend: import:` line each, never silently dropped.
//!
//! - Procfile: each `NAME: COMMAND` line is a service run by `/bin/sh -c` (as Heroku and
//!   foreman run them: `$PORT` and pipes work), in the Procfile's directory.
//! - supervisord: each `[program:NAME]` section (INI, read with the `rust-ini` crate);
//!   `command` is split by shell-word rules as supervisord does (no shell), `%(here)s`
//!   and `%(program_name)s` are expanded. `user` and `umask` map to the settings of the
//!   same names; `[supervisord]`'s `umask`, `user`, `minfds` and `minprocs` go to every
//!   program (see `supervisord_globals`).
//!   `[eventlistener:NAME]` sections become hooks of every service where their `events`
//!   map (`PROCESS_STATE_EXITED` and `_STOPPED`: `on_exit`, `PROCESS_STATE_FATAL`:
//!   `on_failed`, `PROCESS_STATE_STARTING` and `_RUNNING`: `on_start`); the rest is listed.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::session::Failure;
use crate::error::{io_reason, Error, Result};
use crate::service;

/// One imported service: its table and the keys that could not be mapped.
struct Imported {
    name: String,
    table: toml::Table,
}

pub fn import(path: &Path, out: &mut dyn Write) -> Result<(), Failure> {
    let text = service::file::read(path).map_err(|reason| Error::Io {
        path: path.to_path_buf(),
        reason,
    })?;
    let here = std::env::current_dir().map_err(|e| Error::Io {
        path: ".".into(),
        reason: io_reason(&e),
    })?;
    let abs = service::absolute(&here, path);
    let dir = abs
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let name = path.display().to_string();
    let mut skipped = Vec::new();
    let services = if looks_like_ini(&text) {
        supervisord(&name, &dir, &text, &mut skipped)?
    } else {
        procfile(&name, &dir, &text, &mut skipped)?
    };
    for s in &skipped {
        eprintln!("tend: import: {s}");
    }
    writeln!(out, "# imported from {name} by `tend import`")?;
    out.write_all(as_toml(services).as_bytes())?;
    Ok(())
}

fn as_toml(services: Vec<Imported>) -> String {
    let mut all = toml::Table::new();
    for s in services {
        all.insert(s.name, toml::Value::Table(s.table));
    }
    let mut root = toml::Table::new();
    root.insert("services".into(), toml::Value::Table(all));
    toml::to_string(&root).expect("strings and tables always serialize")
}

/// A Procfile's text (`name` and `dir` as for [`import`]) as a service file's text, for
/// `tend up -f Procfile`; what cannot be mapped is said on stderr.
pub fn procfile_as_toml(name: &str, dir: &Path, text: &str) -> Result<String> {
    let mut skipped = Vec::new();
    let services = procfile(name, dir, text, &mut skipped)?;
    for s in &skipped {
        eprintln!("tend: up: {s}");
    }
    Ok(as_toml(services))
}

fn looks_like_ini(text: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with('['))
}

fn string(s: impl Into<String>) -> toml::Value {
    toml::Value::String(s.into())
}

/// `NAME: COMMAND` lines; `#` comments and blank lines are skipped.
fn procfile(
    file: &str,
    dir: &Path,
    text: &str,
    skipped: &mut Vec<String>,
) -> Result<Vec<Imported>> {
    let mut out: Vec<Imported> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let bad = |message: String| Error::File {
            file: file.to_string(),
            line: i + 1,
            message,
        };
        let (name, cmd) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("{l:?} is not of the form NAME: COMMAND")))?;
        let name = name.trim();
        service::validate_name(name).map_err(|e| bad(e.to_string()))?;
        if out.iter().any(|s| s.name == name) {
            skipped.push(format!("{file}:{}: a second {name} line is ignored", i + 1));
            continue;
        }
        let mut t = toml::Table::new();
        t.insert(
            "cmd".into(),
            toml::Value::Array(vec![string("/bin/sh"), string("-c"), string(cmd.trim())]),
        );
        t.insert("cwd".into(), string(dir.display().to_string()));
        out.push(Imported {
            name: name.to_string(),
            table: t,
        });
    }
    Ok(out)
}

/// `[program:NAME]` sections.
fn supervisord(
    file: &str,
    dir: &Path,
    text: &str,
    skipped: &mut Vec<String>,
) -> Result<Vec<Imported>> {
    let ini = ini::Ini::load_from_str_noescape(text).map_err(|e| Error::File {
        file: file.to_string(),
        line: e.line,
        message: e.msg.to_string(),
    })?;
    let globals = supervisord_globals(&ini, skipped);
    let mut out = Vec::new();
    let mut listeners: Vec<(&'static str, String, String)> = Vec::new();
    for (section, props) in ini.iter() {
        let Some(section) = section else { continue };
        if section == "supervisord" {
            continue;
        }
        if let Some(listener) = section.strip_prefix("eventlistener:") {
            listeners.extend(event_listener(listener.trim(), dir, props, skipped));
            continue;
        }
        let Some(name) = section.strip_prefix("program:") else {
            skipped.push(format!(
                "[{section}]: only [program:x] sections are imported"
            ));
            continue;
        };
        let name = name.trim();
        if let Err(e) = service::validate_name(name) {
            skipped.push(format!("[{section}]: {e}"));
            continue;
        }
        let expand = |v: &str| {
            v.replace("%(here)s", &dir.display().to_string())
                .replace("%(program_name)s", name)
        };
        let mut t = toml::Table::new();
        let mut skip = |key: &str, value: &str, why: &str| {
            skipped.push(format!("{name}: {key} = {value}: {why}"));
        };
        // supervisord's defaults that differ from tend's.
        let mut autostart = true;
        let mut redirect = false;
        let mut stdout_set = false;
        let mut stderr_set = false;
        for (key, raw) in props.iter() {
            let v = expand(raw.trim());
            if v.contains("%(") {
                skip(key, raw, "an expansion tend does not know");
                continue;
            }
            match key {
                "command" => {
                    t.insert("cmd".into(), string(v));
                }
                "directory" => {
                    t.insert("cwd".into(), string(v));
                }
                "environment" => match environment(&v) {
                    Ok(env) => {
                        t.insert("env".into(), toml::Value::Table(env));
                    }
                    Err(why) => skip(key, raw, &why),
                },
                "autostart" => match truth(&v) {
                    Some(b) => autostart = b,
                    None => skip(key, raw, "not true or false"),
                },
                "autorestart" => {
                    let policy = match v.to_ascii_lowercase().as_str() {
                        "true" => "always",
                        "false" => "never",
                        "unexpected" => "on-failure",
                        _ => {
                            skip(key, raw, "not true, false or unexpected");
                            continue;
                        }
                    };
                    t.insert("restart".into(), string(policy));
                }
                "startsecs" => {
                    let mut r = toml::Table::new();
                    r.insert("grace".into(), string(format!("{v}s")));
                    t.insert("ready".into(), toml::Value::Table(r));
                }
                "stopsignal" => {
                    t.insert("stop_signal".into(), string(v));
                }
                "stopwaitsecs" => {
                    t.insert("stop_timeout".into(), string(format!("{v}s")));
                }
                "stdout_logfile" | "stderr_logfile" => {
                    if matches!(v.to_ascii_uppercase().as_str(), "AUTO" | "NONE" | "") {
                        skip(
                            key,
                            raw,
                            "tend always logs to a file (default <home>/logs/NAME.log)",
                        );
                        continue;
                    }
                    let k = if key == "stdout_logfile" {
                        stdout_set = true;
                        "stdout"
                    } else {
                        stderr_set = true;
                        "stderr"
                    };
                    t.insert(k.into(), string(v));
                }
                "redirect_stderr" => match truth(&v) {
                    Some(b) => redirect = b,
                    None => skip(key, raw, "not true or false"),
                },
                // Both are checked when the file is applied, as any value of the file.
                "user" | "umask" => {
                    t.insert(key.into(), string(v));
                }
                _ => skip(key, raw, "no equivalent in tend"),
            }
        }
        if !t.contains_key("cmd") {
            skipped.push(format!("[{section}]: no command: not imported"));
            continue;
        }
        if autostart {
            t.insert("autostart".into(), toml::Value::Boolean(true));
        }
        if redirect && stderr_set {
            skipped.push(format!(
                "{name}: stderr_logfile: ignored, since redirect_stderr = true"
            ));
            t.remove("stderr");
        }
        if !redirect && !stderr_set {
            skipped.push(format!(
                "{name}: stderr goes to the same file as stdout{} (supervisord keeps a \
                 separate log unless redirect_stderr = true)",
                if stdout_set { "" } else { " (the default log)" }
            ));
        }
        if !t.contains_key("cwd") {
            t.insert("cwd".into(), string(dir.display().to_string()));
        }
        for (k, v) in &globals {
            if !t.contains_key(k) {
                t.insert(k.clone(), v.clone());
            }
        }
        out.push(Imported {
            name: name.to_string(),
            table: t,
        });
    }
    // A listener hears every program's events: its hooks go to every service, the
    // first listener's where two map to the same hook.
    let mut taken: Vec<(&str, &str)> = Vec::new();
    for (hook, listener, command) in &listeners {
        if let Some((_, first)) = taken.iter().find(|(h, _)| h == hook) {
            skipped.push(format!(
                "[eventlistener:{listener}]: {hook} is already [eventlistener:{first}]'s: not mapped again"
            ));
            continue;
        }
        taken.push((hook, listener));
        for s in out.iter_mut() {
            s.table.insert((*hook).into(), string(command.clone()));
        }
    }
    Ok(out)
}

/// What the `[supervisord]` section gives every program: supervisord applies `umask`,
/// `user`, `minfds` and `minprocs` to itself and its programs inherit them, so each
/// becomes a setting of every program (`minfds = N`: `limit_nofile = N`, soft and hard;
/// supervisord only raises its soft limit to at least N). A program's own `umask` or
/// `user` wins. The section's other keys are about supervisord itself: listed.
fn supervisord_globals(ini: &ini::Ini, skipped: &mut Vec<String>) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    let Some(props) = ini.section(Some("supervisord")) else {
        return out;
    };
    for (key, raw) in props.iter() {
        let v = raw.trim();
        let setting = match key {
            "umask" => "umask",
            "user" => "user",
            "minfds" => "limit_nofile",
            "minprocs" => "limit_nproc",
            _ => {
                skipped.push(format!(
                    "[supervisord] {key} = {raw}: about supervisord itself, no equivalent \
                     in a service"
                ));
                continue;
            }
        };
        out.push((setting.to_string(), string(v)));
    }
    out
}

/// What an `[eventlistener:NAME]` section maps to: (hook key, listener, command) for
/// each hook its `events` name. A listener is a resident program speaking supervisord's
/// protocol (READY, headers, RESULT) on stdin and stdout; a tend hook is run once per
/// event with the event as JSON on stdin, so the command usually needs adapting: said on
/// stderr.
fn event_listener(
    listener: &str,
    dir: &Path,
    props: &ini::Properties,
    skipped: &mut Vec<String>,
) -> Vec<(&'static str, String, String)> {
    let mut command = None;
    let mut events = Vec::new();
    for (key, raw) in props.iter() {
        let v = raw.trim().replace("%(here)s", &dir.display().to_string());
        match key {
            "command" => command = Some(v),
            "events" => events = v.split(',').map(|e| e.trim().to_string()).collect(),
            _ => skipped.push(format!(
                "[eventlistener:{listener}]: {key} = {raw}: no equivalent for a tend hook"
            )),
        }
    }
    let Some(command) = command.filter(|c| !c.contains("%(")) else {
        skipped.push(format!(
            "[eventlistener:{listener}]: no command (or an expansion tend does not know): not imported"
        ));
        return Vec::new();
    };
    let mut hooks: Vec<&'static str> = Vec::new();
    for e in events.iter().filter(|e| !e.is_empty()) {
        let mapped: &[&'static str] = match e.as_str() {
            "PROCESS_STATE_STARTING" | "PROCESS_STATE_RUNNING" => &["on_start"],
            "PROCESS_STATE_EXITED" | "PROCESS_STATE_STOPPED" => &["on_exit"],
            "PROCESS_STATE_FATAL" => &["on_failed"],
            "PROCESS_STATE" => &["on_start", "on_exit", "on_failed"],
            _ => &[],
        };
        if mapped.is_empty() {
            skipped.push(format!(
                "[eventlistener:{listener}]: event {e}: no tend hook for it (tend has on_start, on_exit, on_failed, on_unhealthy)"
            ));
        }
        if e == "PROCESS_STATE" {
            skipped.push(format!(
                "[eventlistener:{listener}]: event PROCESS_STATE: mapped to on_start, on_exit and on_failed; STOPPING, BACKOFF and UNKNOWN have no tend hook"
            ));
        }
        for h in mapped {
            if !hooks.contains(h) {
                hooks.push(h);
            }
        }
    }
    if hooks.is_empty() {
        skipped.push(format!(
            "[eventlistener:{listener}]: none of its events maps to a tend hook: not imported"
        ));
        return Vec::new();
    }
    skipped.push(format!(
        "[eventlistener:{listener}]: imported as {} of every service; a tend hook runs once per event with the event as JSON on stdin, not supervisord's listener protocol: adapt the command if it speaks that protocol",
        hooks.join(", ")
    ));
    hooks
        .into_iter()
        .map(|h| (h, listener.to_string(), command.clone()))
        .collect()
}

fn truth(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// supervisord's `KEY="value",KEY2=value2`: commas inside quotes belong to the value.
fn environment(v: &str) -> std::result::Result<toml::Table, String> {
    let mut out = toml::Table::new();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in v.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("unbalanced quotes".into());
    }
    parts.push(cur);
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let (k, val) = service::parse_env(p).map_err(|e| e.to_string())?;
        out.insert(k, string(val));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_listeners_map_to_hooks_and_the_rest_is_listed() {
        let conf = "[program:web]\ncommand=/bin/sleep 9\n\n\
                    [eventlistener:mail]\ncommand=notify %(here)s\n\
                    events=PROCESS_STATE_EXITED,PROCESS_STATE_FATAL,TICK_60\nbuffer_size=10\n\n\
                    [eventlistener:second]\ncommand=other\nevents=PROCESS_STATE_FATAL,PROCESS_STATE_RUNNING\n";
        let mut skipped = Vec::new();
        let out = supervisord("s.conf", Path::new("/etc/sv"), conf, &mut skipped).unwrap();
        let t = &out[0].table;
        assert_eq!(t["on_exit"].as_str(), Some("notify /etc/sv"));
        assert_eq!(t["on_failed"].as_str(), Some("notify /etc/sv"));
        assert_eq!(t["on_start"].as_str(), Some("other"));
        let said = skipped.join("\n");
        for want in [
            "buffer_size = 10: no equivalent",
            "event TICK_60: no tend hook",
            "on_failed is already [eventlistener:mail]'s",
            "not supervisord's listener protocol",
        ] {
            assert!(said.contains(want), "{want:?} not in:\n{said}");
        }
    }

    #[test]
    fn supervisord_environment() {
        let t = environment(r#"A="1,2",B=x, C='y z'"#).unwrap();
        assert_eq!(t["A"].as_str(), Some("1,2"));
        assert_eq!(t["B"].as_str(), Some("x"));
        assert_eq!(t["C"].as_str(), Some("y z"));
        assert!(environment("A=\"x").is_err());
    }
}
