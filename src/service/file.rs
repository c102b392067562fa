//! Service files (`tend.toml`): reading one into definitions, and writing definitions
//! back out (`tend export`). Parsing is toml + serde; every key of a service is either
//! `cmd`, `env`, or a row of the settings table (by its file key, the option's name with
//! `_` for `-`), read by the row's own type so the file and `tend add` validate alike.
//! Errors carry the file name and the line of the offending key.
//!
//! ```toml
//! [services.api]
//! cmd = "python3 -m http.server 8080"
//! requires = ["db"]
//! ready = { http = "http://127.0.0.1:8080/", timeout = "20s" }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::settings::{Defaults, SettingChanges, ROWS};
use super::{graph, Service};
use crate::error::{Error, Result};

/// Keys a service table may have besides the settings.
const OWN_KEYS: &[&str] = &["cmd", "env"];

type Table = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    services: BTreeMap<Spanned<String>, Spanned<Table>>,
}

/// One service as a file describes it, with where each key is, for errors found later
/// (validation against the file system, unknown requirements).
#[derive(Clone, Debug)]
pub struct Described {
    pub service: Service,
    /// The line of the `[services.NAME]` header.
    pub line: usize,
    /// Line of each key given.
    pub keys: BTreeMap<String, usize>,
}

impl Described {
    /// The line of `key`, else of the service's header.
    pub fn line_of(&self, key: &str) -> usize {
        self.keys.get(key).copied().unwrap_or(self.line)
    }

    /// The line an error about this service is best reported at: the key of the option
    /// an `Invalid` error names, else the header.
    pub fn line_for(&self, e: &Error) -> usize {
        match e {
            Error::Invalid { what, .. } => {
                let key = if *what == "command" || *what == "--cmd" {
                    "cmd".to_string()
                } else if *what == "working directory" {
                    "cwd".to_string()
                } else {
                    what.trim_start_matches("--").replace('-', "_")
                };
                self.line_of(&key)
            }
            _ => self.line,
        }
    }
}

/// A parsed service file.
#[derive(Clone, Debug)]
pub struct ServiceFile {
    /// As errors name it.
    pub name: String,
    pub services: Vec<Described>,
}

impl ServiceFile {
    /// An error at `line` of this file.
    pub fn error(&self, line: usize, message: impl Into<String>) -> Error {
        Error::File {
            file: self.name.clone(),
            line,
            message: message.into(),
        }
    }
}

/// 1-based line of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The most a services file (or a Procfile, or a supervisord configuration given to
/// `import`) may hold: some thousands of services fit in a small fraction of it.
pub const FILE_CAP: u64 = 16 << 20;

/// The text of a services file, read as [`super::files`] reads any file on a service's
/// behalf (a FIFO, a device or a file over [`FILE_CAP`] is refused); `Err` says why.
pub fn read(path: &Path) -> std::result::Result<String, String> {
    let bytes = super::files::read_regular(path, FILE_CAP).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
}

/// Parses `text` (the file `name`, whose directory is `dir`). Relative paths are taken
/// against `dir`, which is also the default working directory; `log` gives each
/// service's default log file. Checks names, values, requirements within the file and
/// cycles; not the file system (see [`super::validate`]).
pub fn parse(
    name: &str,
    dir: &Path,
    text: &str,
    log: &dyn Fn(&str) -> std::path::PathBuf,
    now: i64,
) -> Result<ServiceFile> {
    let err = |line: usize, message: String| Error::File {
        file: name.to_string(),
        line,
        message,
    };
    let doc: Document = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_at(text, s.start));
        err(line, e.message().trim().to_string())
    })?;
    let mut services = Vec::new();
    for (svc_name, table) in doc.services {
        let header = line_at(text, svc_name.span().start);
        let svc_name = svc_name.into_inner();
        super::validate_name(&svc_name).map_err(|e| err(header, e.to_string()))?;
        let mut changes = SettingChanges::default();
        let mut argv = None;
        let mut env = BTreeMap::new();
        let mut keys = BTreeMap::new();
        for (key, value) in table.into_inner() {
            let line = line_at(text, key.span().start);
            let key = key.into_inner();
            let value = value.into_inner();
            keys.insert(key.clone(), line);
            match key.as_str() {
                "cmd" => argv = Some(command(&value).map_err(|m| err(line, format!("cmd: {m}")))?),
                "env" => env = environment(&value).map_err(|m| err(line, format!("env: {m}")))?,
                _ => match changes.set_from_toml(&key, &value) {
                    Ok(true) => {}
                    Ok(false) => {
                        let known: Vec<String> = OWN_KEYS
                            .iter()
                            .map(|k| k.to_string())
                            .chain(ROWS.iter().map(|r| r.file_key()))
                            .collect();
                        return Err(err(
                            line,
                            format!(
                                "services.{svc_name}: unknown key {key:?} (known: {})",
                                known.join(", ")
                            ),
                        ));
                    }
                    Err((_, m)) => return Err(err(line, format!("{key}: {m}"))),
                },
            }
        }
        let argv = argv.ok_or_else(|| err(header, format!("services.{svc_name}: no cmd given")))?;
        changes.absolutize(dir);
        let settings = changes.build(&Defaults {
            cwd: dir.to_path_buf(),
            log: log(&svc_name),
        });
        services.push(Described {
            service: Service {
                name: svc_name,
                argv,
                env,
                settings,
                created_at: now,
                updated_at: now,
            },
            line: header,
            keys,
        });
    }
    let file = ServiceFile {
        name: name.to_string(),
        services,
    };
    let all: Vec<Service> = file.services.iter().map(|d| d.service.clone()).collect();
    if let Some(c) = graph::find_cycle(&all) {
        let line = file.services.first().map_or(1, |d| {
            let first = c.split(" -> ").next().unwrap_or("");
            file.services
                .iter()
                .find(|x| x.service.name == first)
                .unwrap_or(d)
                .line_of("requires")
        });
        return Err(file.error(line, format!("dependency cycle: {c}")));
    }
    Ok(file)
}

/// `cmd = "prog arg"` (split by shell-word rules, as `--cmd`) or `cmd = ["prog", "arg"]`
/// (used as is, as after `--`).
fn command(v: &toml::Value) -> std::result::Result<Vec<String>, String> {
    match v {
        toml::Value::String(s) => super::split_command(s).map_err(|e| match e {
            Error::Invalid { message, .. } => message,
            other => other.to_string(),
        }),
        toml::Value::Array(a) => {
            let argv = a
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
                .ok_or("expected a string or an array of strings")?;
            if argv.first().is_none_or(|p| p.is_empty()) {
                return Err("the command is empty".into());
            }
            Ok(argv)
        }
        other => Err(format!(
            "expected a string or an array of strings, found a {}",
            other.type_str()
        )),
    }
}

/// `env = { KEY = "value" }`: each checked as `--env KEY=VALUE` is.
fn environment(v: &toml::Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let t = v.as_table().ok_or("expected a table of KEY = \"value\"")?;
    let mut out = BTreeMap::new();
    for (k, v) in t {
        let text = super::values::toml_text(v).map_err(|m| format!("{k}: {m}"))?;
        let (k, v) = super::parse_env(&format!("{k}={text}")).map_err(|e| match e {
            Error::Invalid { message, .. } => message,
            other => other.to_string(),
        })?;
        out.insert(k, v);
    }
    Ok(out)
}

/// Definitions as a service file that [`parse`] reads back to the same definitions.
/// Settings at their default are left out, except `cwd` (its default depends on where
/// the file is) and `stderr` when `stdout` is given (its default follows `stdout`).
pub fn export(services: &[Service], log: &dyn Fn(&str) -> std::path::PathBuf) -> String {
    let mut root = toml::Table::new();
    let mut all = toml::Table::new();
    for svc in services {
        let mut t = toml::Table::new();
        t.insert("cmd".into(), toml::Value::String(svc.command_line()));
        let defaults = SettingChanges::default()
            .build(&Defaults {
                cwd: svc.settings.cwd.clone(),
                log: log(&svc.name),
            })
            .to_toml();
        let mine = svc.settings.to_toml();
        let stdout_given = mine
            .iter()
            .zip(&defaults)
            .any(|((k, a), (_, b))| k == "stdout" && a != b);
        for (k, v) in mine {
            let default = defaults.iter().find(|(d, _)| *d == k).map(|(_, v)| v);
            if k == "cwd" || (k == "stderr" && stdout_given) || default != Some(&v) {
                t.insert(k, v);
            }
        }
        if !svc.env.is_empty() {
            t.insert(
                "env".into(),
                toml::Value::Table(
                    svc.env
                        .iter()
                        .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
                        .collect(),
                ),
            );
        }
        all.insert(svc.name.clone(), toml::Value::Table(t));
    }
    root.insert("services".into(), toml::Value::Table(all));
    toml::to_string(&root).expect("a table of strings, numbers and tables always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: &str) -> std::path::PathBuf {
        format!("/h/logs/{n}.log").into()
    }

    fn read(text: &str) -> Result<ServiceFile> {
        parse("tend.toml", Path::new("/srv/app"), text, &log, 0)
    }

    #[test]
    fn reads_the_issue_example() {
        let f = read(
            r#"
[services.db]
cmd = "postgres -D ./data"
ready = { tcp = 5433 }

[services.api]
cmd = "python3 -m http.server 8080"
env_file = ".env"
requires = ["db"]
ready = { http = "http://127.0.0.1:8080/", timeout = "20s" }
health = { http = "http://127.0.0.1:8080/", every = "10s", failures = 3 }
restart = "always"
"#,
        )
        .unwrap();
        let api = &f.services[0].service;
        assert_eq!(api.name, "api");
        assert_eq!(api.settings.cwd, Path::new("/srv/app"));
        assert_eq!(
            api.settings.env_file.as_deref(),
            Some(Path::new("/srv/app/.env"))
        );
        assert_eq!(api.settings.requires, ["db"]);
        assert_eq!(f.services[0].line, 6);
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, line, word) in [
            ("[services.a]\ncmd = \"x\"\nstop_timeout = \"soon\"\n", 3, "stop_timeout"),
            ("[services.a]\ncmd = \"x\"\nbogus = 1\n", 3, "unknown key"),
            ("[services.a]\ncmd = 'x\n", 2, ""),
            ("[services.a]\nrestart = \"always\"\n", 1, "no cmd"),
            ("[services.\"a b\"]\ncmd = \"x\"\n", 1, "invalid service name"),
            (
                "[services.a]\ncmd = \"x\"\nrequires = [\"b\"]\n[services.b]\ncmd = \"x\"\nafter = [\"a\"]\n",
                3,
                "a -> b -> a",
            ),
        ] {
            match read(text) {
                Err(Error::File { line: l, message, .. }) => {
                    assert_eq!(l, line, "{text}: {message}");
                    assert!(message.contains(word), "{text}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn export_reads_back_the_same() {
        let f = read(
            r#"
[services.w]
cmd = ["sh", "-c", "echo 'hi there'"]
stdout = "out.log"
stop_timeout = "1500ms"
log_max_size = "1M"
autostart = true
env = { A = "1", B = "two words" }
requires = ["x"]
ready = { cmd = "test -e /tmp", timeout = "3s" }
[services.x]
cmd = "sleep 1"
"#,
        )
        .unwrap();
        let svcs: Vec<Service> = f.services.iter().map(|d| d.service.clone()).collect();
        let text = export(&svcs, &log);
        let back = parse("e.toml", Path::new("/elsewhere"), &text, &log, 0).unwrap();
        let again: Vec<Service> = back.services.iter().map(|d| d.service.clone()).collect();
        assert_eq!(again, svcs, "{text}");
    }
}
