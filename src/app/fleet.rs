//! `tend fleet init | status | start | stop | restart | signal | history | grant`.

use std::io::Write;
use std::time::Duration;

use super::output::{self, fmt_uptime};
use super::session::{open_supervisor, Failure, Session};
use super::term::escape;
use crate::cli::{FleetAction, FleetArgs, FleetOrder, FleetPgArgs};
use crate::error::{exit, Error};
use crate::fleet::Action;
use crate::home::Home;
use crate::pg::fleet::operator::{self, CommandView};
use crate::pg::Settings;
use crate::record::now_ms;
use crate::service;

pub fn run(
    s: &mut Session,
    home: &Home,
    args: FleetArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match args.action {
        FleetAction::Init { pg } => {
            let st = settings(home, &pg)?;
            let m = operator::init(&st)?;
            if m.from == m.to {
                writeln!(
                    out,
                    "fleet: schema {} is up to date (version {})",
                    st.schema, m.to
                )?;
            } else {
                writeln!(
                    out,
                    "fleet: schema {} migrated from version {} to {} on {}",
                    st.schema,
                    m.from,
                    m.to,
                    st.display_url()
                )?;
            }
        }
        FleetAction::Status { json, pg } => {
            let st = settings(home, &pg)?;
            let hosts = operator::status(&st)?;
            if json {
                output::json(out, &hosts)?;
            } else {
                status_table(out, &hosts)?;
            }
        }
        FleetAction::Start(o) => order(s, home, Action::Start, o, out)?,
        FleetAction::Stop(o) => order(s, home, Action::Stop, o, out)?,
        FleetAction::Restart(o) => order(s, home, Action::Restart, o, out)?,
        FleetAction::Signal { signal, order: o } => {
            let signal = super::lifecycle::parse_signal(&signal)?;
            order(s, home, Action::Signal(signal), o, out)?
        }
        FleetAction::History {
            service,
            lines,
            json,
            pg,
        } => {
            if let Some(name) = &service {
                service::validate_name(name)?;
            }
            let st = settings(home, &pg)?;
            let rows = operator::history(&st, service.as_deref(), i64::from(lines))?;
            if json {
                output::json(out, &rows)?;
            } else {
                history_table(out, &rows)?;
            }
        }
        FleetAction::Remove { host, pg } => {
            crate::config::validate_host_id(&host).map_err(|message| Error::Invalid {
                what: "fleet remove",
                message,
            })?;
            let st = settings(home, &pg)?;
            let r = operator::remove_host(&st, &host)?;
            if !r.removed && r.expired == 0 {
                return Err(Error::Invalid {
                    what: "fleet remove",
                    message: format!("unknown host {host}: not in this fleet"),
                }
                .into());
            }
            writeln!(
                out,
                "fleet: removed host {host}; {} unfinished command(s) expired",
                r.expired
            )?;
        }
        FleetAction::Grant {
            operator,
            host_role,
            host_id,
            pg,
        } => {
            let st = settings(home, &pg)?;
            match (operator, host_role, host_id) {
                (Some(role), None, None) => {
                    operator::grant_operator(&st, &role)?;
                    writeln!(
                        out,
                        "fleet: {role} may issue commands and read the fleet (schema {})",
                        st.schema
                    )?;
                }
                (None, Some(role), Some(host)) => {
                    crate::config::validate_host_id(&host).map_err(|message| Error::Invalid {
                        what: "fleet grant",
                        message,
                    })?;
                    operator::grant_host(&st, &role, &host)?;
                    writeln!(
                        out,
                        "fleet: {role} acts for host {host}: its own commands and status only \
                         (schema {})",
                        st.schema
                    )?;
                }
                _ => {
                    return Err(Error::Invalid {
                        what: "fleet grant",
                        message: "use --operator ROLE, or --host-role ROLE --host-id HOST".into(),
                    }
                    .into())
                }
            }
        }
    }
    Ok(())
}

/// The fleet's database: options, else `tend config`, else an error saying how to set it.
/// The fleet's database settings: `pg` over `tend config` (also `tend top --fleet`'s).
pub fn settings(home: &Home, pg: &FleetPgArgs) -> Result<Settings, Error> {
    let here = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let overrides = crate::pg::Overrides {
        url: pg.url.clone(),
        schema: pg.schema.clone(),
        ca_file: pg.ca_file.as_ref().map(|p| service::absolute(&here, p)),
        ..Default::default()
    };
    let mut sup = open_supervisor(home)?;
    Settings::resolve(&mut sup, &overrides)?.ok_or_else(|| Error::Invalid {
        what: "fleet",
        message: "no PostgreSQL URL: use --postgres URL or `tend config set postgres.url URL`"
            .into(),
    })
}

fn duration(what: &'static str, text: &str) -> Result<Duration, Error> {
    service::parse_duration(text).map_err(|message| Error::Invalid {
        what,
        message: format!("{text:?}: {message}"),
    })
}

fn order(
    s: &mut Session,
    home: &Home,
    action: Action,
    o: FleetOrder,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    service::validate_name(&o.name)?;
    for h in &o.hosts {
        crate::config::validate_host_id(h).map_err(|message| Error::Invalid {
            what: "fleet",
            message,
        })?;
    }
    if let Some(k) = &o.dedup {
        if k.is_empty() || k.len() > 200 || k.chars().any(char::is_control) {
            return Err(Error::Invalid {
                what: "fleet",
                message: "a dedup key has 1 to 200 characters, none of them a control character"
                    .into(),
            }
            .into());
        }
    }
    let wait = o
        .wait
        .as_deref()
        .map(|w| duration("--wait", w))
        .transpose()?;
    let expires = duration("--expires", &o.expires)?;
    if expires.is_zero() {
        return Err(Error::Invalid {
            what: "--expires",
            message: "must be longer than 0s".into(),
        }
        .into());
    }
    let st = settings(home, &o.pg)?;
    let dedup_keep = dedup_keep(home)?;
    let req = operator::Order {
        action,
        service: &o.name,
        hosts: &o.hosts,
        expires,
        dedup: o.dedup.as_deref(),
        dedup_keep,
        wait,
    };
    // The ids as soon as they are stored, then results as they arrive; a write error
    // ends the printing, not the wait.
    let mut write_err = None;
    let json = o.json;
    let key = o.dedup.as_deref().unwrap_or("");
    let mut print = |p: operator::Progress<'_>| {
        let lines: Vec<String> = match p {
            _ if json => return,
            operator::Progress::Reconnecting(why) => {
                eprintln!(
                    "tend: lost the connection while waiting ({}); reconnecting",
                    escape(why)
                );
                return;
            }
            operator::Progress::Issued(issued) => issued
                .iter()
                .map(|i| issued_line(i, action, &o.name, key))
                .collect(),
            operator::Progress::Result(v) => vec![format!(
                "{}\t{}\t{}",
                escape(&v.host),
                escape(&v.outcome),
                escape(v.message.as_deref().unwrap_or(""))
            )],
        };
        for line in lines {
            if write_err.is_none() {
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    write_err = Some(e);
                }
            }
        }
    };
    let got = operator::issue(&st, &req, &mut print)?;
    if let Some(e) = write_err {
        return Err(Failure::Output(e));
    }
    if !got.skipped_stale.is_empty() {
        eprintln!(
            "tend: not sent to stale hosts {} (name them with --host to queue it for their return)",
            got.skipped_stale.join(", ")
        );
    }
    let failed = got.results.iter().any(|r| r.ok != Some(true));
    let missing: Vec<&operator::Issued> = got
        .issued
        .iter()
        .filter(|i| !got.results.iter().any(|r| r.id == i.id))
        .collect();
    if json {
        #[derive(serde::Serialize)]
        struct Shape<'a> {
            issued: &'a [operator::Issued],
            results: &'a [CommandView],
            skipped_stale: &'a [String],
        }
        output::json(
            out,
            &Shape {
                issued: &got.issued,
                results: &got.results,
                skipped_stale: &got.skipped_stale,
            },
        )?;
    } else if wait.is_some() {
        for i in &missing {
            writeln!(
                out,
                "{}\tno result within {} (command {} still pending)",
                i.host,
                o.wait.as_deref().unwrap_or(""),
                i.id
            )?;
        }
    }
    if wait.is_some() && (failed || !missing.is_empty()) {
        s.code = exit::FAILED;
    }
    Ok(())
}

/// One host's line when its command is stored (or answered by its dedup key).
fn issued_line(i: &operator::Issued, action: Action, service: &str, key: &str) -> String {
    let host = escape(&i.host);
    let key = escape(key);
    if !i.deduplicated {
        let freed = match i.expired_before {
            Some(old) => format!(" (command {old} under dedup key {key} expired: key reused)"),
            None => String::new(),
        };
        return format!("{host}\tcommand {}: {action} {service}{freed}", i.id);
    }
    let outcome = i.outcome.as_deref().unwrap_or("pending");
    match &i.message {
        Some(m) => format!(
            "{host}\tcommand {} already {} under dedup key {key}: {}",
            i.id,
            escape(outcome),
            escape(m)
        ),
        None => format!(
            "{host}\tcommand {} already {} under dedup key {key}",
            i.id,
            escape(outcome)
        ),
    }
}

/// `postgres.dedup_keep`, else the default.
fn dedup_keep(home: &Home) -> Result<Duration, Error> {
    let mut sup = open_supervisor(home)?;
    Ok(sup
        .config_get(crate::config::POSTGRES_DEDUP_KEEP)?
        .and_then(|v| service::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(crate::config::DEFAULT_DEDUP_KEEP))
}

fn ago(ms: i64) -> String {
    format!(
        "{} ago",
        fmt_uptime(Duration::from_millis(ms.max(0) as u64))
    )
}

fn status_table(out: &mut dyn Write, hosts: &[operator::HostView]) -> std::io::Result<()> {
    if hosts.is_empty() {
        return writeln!(out, "no host has joined this fleet yet");
    }
    // Everything here was written by the hosts: shown escaped, one host per line.
    let width = hosts
        .iter()
        .map(|h| escape(&h.host).chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:width$}  {:<14}  {:<8}  SERVICES",
        "HOST", "LAST SEEN", "VERSION"
    )?;
    for h in hosts {
        let seen = if h.stale {
            format!("{} STALE", ago(h.age_ms))
        } else {
            ago(h.age_ms)
        };
        let services: Vec<String> = h
            .services
            .iter()
            .map(|v| {
                let (name, state) = (escape(&v.name), escape(&v.state));
                if h.stale {
                    // Not what runs now: what the host said when it was last heard from.
                    return format!("{name} last known {state} {}", ago(h.age_ms));
                }
                match (v.pid, v.since) {
                    (Some(pid), Some(since)) => format!(
                        "{name} {state} (pid {pid}, up {})",
                        fmt_uptime(Duration::from_millis((now_ms() - since).max(0) as u64))
                    ),
                    (Some(pid), None) => format!("{name} {state} (pid {pid})"),
                    _ => format!("{name} {state}"),
                }
            })
            .collect();
        writeln!(
            out,
            "{:width$}  {:<14}  {:<8}  {}",
            escape(&h.host),
            seen,
            escape(&h.version),
            if services.is_empty() {
                "-".to_string()
            } else {
                services.join(", ")
            }
        )?;
    }
    Ok(())
}

fn history_table(out: &mut dyn Write, rows: &[CommandView]) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "no fleet command yet");
    }
    writeln!(
        out,
        "{:>6}  {:<20}  {:<10}  {:<12}  {:<20}  {:<8}  MESSAGE",
        "ID", "ISSUED", "BY", "HOST", "COMMAND", "OUTCOME"
    )?;
    for r in rows {
        let what = match Action::from_row(&r.action, r.signal) {
            Some(a) => format!("{a} {}", r.service),
            None => format!("{} {}", r.action, r.service),
        };
        writeln!(
            out,
            "{:>6}  {:<20}  {:<10}  {:<12}  {:<20}  {:<8}  {}",
            r.id,
            output::rfc3339(r.issued_at),
            escape(&r.issued_by),
            escape(&r.host),
            escape(&what),
            escape(&r.outcome),
            escape(r.message.as_deref().unwrap_or(""))
        )?;
    }
    Ok(())
}
