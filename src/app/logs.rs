//! `tend logs` over several services (or one with `--since` or `--json`): their log files
//! read as lines, merged in time order, each line prefixed with its service's name.
//! One service without those options is printed as it was written, by [`super::view`].

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use super::session::{notices, open_supervisor, Failure};
use super::term::{escape, Term};
use crate::cli::LogsArgs;
use crate::error::{io_reason, Error};
use crate::home::Home;
use crate::logs::stream::{self, Failed, Follower, Line, ReadError, Stream, Window};
use crate::service::{self, Service};

/// How many lines per file without `-n` (and without `--since`).
const DEFAULT_LINES: usize = 20;

/// Colours of service names on a terminal, in order of the services (red is left for
/// states that went wrong).
const COLORS: &[&str] = &["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

pub fn run(home: &Home, a: LogsArgs, out: &mut dyn Write) -> Result<(), Failure> {
    run_until(home, a, out, None)
}

/// Called between rounds of a follow, at least every [`crate::logs::FOLLOW_INTERVAL`];
/// `Ok(true)` ends the follow (after what was read so far is printed).
pub type Tick<'a> = dyn FnMut() -> Result<bool, Failure> + 'a;

/// [`run`], with `tick` asked between rounds of the follow whether to end it (`tend up`
/// follows until its services are stopped).
pub fn run_until(
    home: &Home,
    a: LogsArgs,
    out: &mut dyn Write,
    mut tick: Option<&mut Tick>,
) -> Result<(), Failure> {
    let since = a.since.as_deref().map(parse_since).transpose()?;
    let single = !a.which.all && a.which.names.len() == 1 && tick.is_none();
    if single && since.is_none() && !a.json {
        // Today's output, byte for byte: the files as the service wrote them.
        let lines = a.lines.unwrap_or(DEFAULT_LINES);
        return super::view::logs(home, &a.which.names[0], lines, a.follow, out);
    }
    // Standard output is line-buffered even into a pipe: one write per line would be most
    // of the cost of a large merge. Flushed after the first part and each follow round.
    let out = &mut std::io::BufWriter::with_capacity(64 * 1024, out);
    for n in &a.which.names {
        service::validate_name(n)?;
    }
    let mut sup = open_supervisor(home)?;
    let defined = sup.services()?;
    notices(&mut sup);
    let chosen = choose(&defined, &a.which.names, a.which.all)?;

    let mut paths = Vec::new();
    let mut sources = Vec::new();
    for (si, svc) in chosen.iter().enumerate() {
        let files = files_of(svc);
        if files.is_empty() {
            eprintln!(
                "tend: {}: output goes to {}, not to a file; nothing to show",
                svc.name,
                escape(&svc.settings.stdout.to_string_lossy())
            );
        }
        // Only a `stream` service's lines carry `out`/`err` after the time: in any other
        // service's line, such a word is the service's own text.
        let tagged = svc.settings.log_timestamps == crate::service::LogTimestamps::Stream;
        for (path, stream) in files {
            paths.push(path);
            sources.push(Source {
                service: si,
                stream,
                tagged,
            });
        }
    }
    let printer = Printer {
        names: chosen.iter().map(|s| s.name.as_str()).collect(),
        width: chosen.iter().map(|s| s.name.len()).max().unwrap_or(0),
        color: Term::stdout(true).color,
        json: a.json,
        prefixed: !single,
        sources,
    };
    let window = Window {
        // With --since, every line in the window unless -n says otherwise.
        last: match (a.lines, since) {
            (None, None) => Some(DEFAULT_LINES),
            (lines, _) => lines,
        },
        since,
        following: a.follow,
    };
    let resumes =
        stream::initial(&paths, window, &mut |l| printer.line(out, l)).map_err(|e| match e {
            Failed::Read(e) => read_failure(e),
            Failed::Write(e) => Failure::Output(e),
        })?;
    out.flush()?;
    // Following nothing (no services, or none writing to a file) would only wait: the
    // services followed are those defined when the command starts. (`tend up` waits
    // all the same: its tick decides when it ends.)
    if !a.follow || (paths.is_empty() && tick.is_none()) {
        return Ok(());
    }
    let mut follower = Follower::new(&paths, resumes);
    loop {
        let lines = follower.poll().map_err(read_failure)?;
        for l in &lines {
            printer.line(out, l)?;
        }
        if !lines.is_empty() {
            out.flush()?;
        }
        if let Some(tick) = tick.as_mut() {
            if tick()? {
                // What was written up to now, then the end.
                for l in &follower.poll().map_err(read_failure)? {
                    printer.line(out, l)?;
                }
                out.flush()?;
                return Ok(());
            }
        }
        if !follower.behind() {
            std::thread::sleep(crate::logs::FOLLOW_INTERVAL);
        }
    }
}

/// The services asked for, each once, in the order given (`--all`: every one, by name).
/// Every name is checked before anything is printed.
fn choose<'a>(
    defined: &'a [Service],
    names: &[String],
    all: bool,
) -> Result<Vec<&'a Service>, Error> {
    if all {
        return Ok(defined.iter().collect());
    }
    let mut chosen: Vec<&Service> = Vec::new();
    for n in names {
        let svc = defined
            .iter()
            .find(|s| &s.name == n)
            .ok_or_else(|| Error::UnknownService(n.clone()))?;
        if !chosen.iter().any(|c| c.name == svc.name) {
            chosen.push(svc);
        }
    }
    Ok(chosen)
}

/// A service's log files with the stream each holds: stdout's and stderr's (the stream
/// is known from the file only when they differ). Files that are not regular files
/// (/dev/null) are skipped, as `logs::files` does.
fn files_of(svc: &Service) -> Vec<(PathBuf, Option<Stream>)> {
    let (o, e) = (&svc.settings.stdout, &svc.settings.stderr);
    let mut files = if o == e {
        vec![(o.clone(), None)]
    } else {
        vec![
            (o.clone(), Some(Stream::Out)),
            (e.clone(), Some(Stream::Err)),
        ]
    };
    files.retain(|(p, _)| std::fs::metadata(p).map_or(true, |m| m.is_file()));
    files
}

/// `--since`: a duration back from now (`10m`, `2h`, `1d`, a bare number of seconds) or
/// an RFC 3339 time in UTC; microseconds since the epoch.
fn parse_since(text: &str) -> Result<i64, Error> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(stream::micros(t));
    }
    match service::parse_duration(text) {
        Ok(d) => {
            let back = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
            Ok(stream::micros(SystemTime::now()).saturating_sub(back))
        }
        Err(_) => Err(Error::Invalid {
            what: "--since",
            message: format!(
                "{text:?} is neither a duration (10m, 2h, 1d) nor a time in UTC \
                 (2026-12-06T21:00:00Z)"
            ),
        }),
    }
}

fn read_failure(e: ReadError) -> Failure {
    if e.error.kind() == std::io::ErrorKind::BrokenPipe {
        return Failure::Output(e.error);
    }
    Failure::Tend(Error::Io {
        path: e.path,
        reason: io_reason(&e.error),
    })
}

/// One element of `tend logs --json`.
#[derive(Serialize)]
struct LineJson<'a> {
    /// As written in the line (RFC 3339, UTC, microseconds); null without a prefix.
    time: Option<&'a str>,
    service: &'a str,
    /// From the prefix, else from the file when stdout and stderr go to different files.
    stream: Option<&'static str>,
    /// The line after its prefix, without the newline (invalid UTF-8 replaced).
    text: Cow<'a, str>,
}

struct Printer<'a> {
    names: Vec<&'a str>,
    /// Longest name: prefixes are padded to it.
    width: usize,
    color: bool,
    json: bool,
    /// `NAME | ` before each line (several services, or `--all`).
    prefixed: bool,
    /// Per file: its service, the stream the file holds, whether its lines carry stream tags.
    sources: Vec<Source>,
}

#[derive(Clone, Copy)]
struct Source {
    /// Index in `names`.
    service: usize,
    /// The stream the file holds, when stdout and stderr go to different files.
    stream: Option<Stream>,
    /// The service writes `--log-timestamps stream` lines.
    tagged: bool,
}

impl Printer<'_> {
    fn line(&self, out: &mut dyn Write, l: &Line) -> std::io::Result<()> {
        let Source {
            service: si,
            stream: file_stream,
            tagged,
        } = self.sources[l.source];
        let name = self.names[si];
        if self.json {
            let (tag, text) = match l.prefix {
                Some(p) if p.stream.is_some() && !tagged => {
                    (None, &l.raw[(stream::TIME_LEN + 1).min(l.raw.len())..])
                }
                Some(p) => (p.stream, l.text()),
                None => (None, l.text()),
            };
            let j = LineJson {
                time: l.time_text(),
                service: name,
                stream: tag.or(file_stream).map(Stream::name),
                text: String::from_utf8_lossy(text),
            };
            serde_json::to_writer(&mut *out, &j)?;
            return out.write_all(b"\n");
        }
        if !self.prefixed {
            // One service: its bytes as written, like `tail`.
            out.write_all(&l.raw)?;
            return out.write_all(b"\n");
        }
        // Interleaved with other services, a line must not be able to pose as another
        // service's (a `\r` or an escape sequence): control characters are escaped, tabs
        // kept.
        let text = String::from_utf8_lossy(&l.raw);
        let shown: Vec<Cow<str>> = text.split('\t').map(escape).collect();
        let pad = self.width;
        if self.color {
            let c = COLORS[si % COLORS.len()];
            write!(out, "\x1b[{c}m{name:<pad$} |\x1b[0m ")?;
        } else {
            write!(out, "{name:<pad$} | ")?;
        }
        writeln!(out, "{}", shown.join("\t"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(p: &Printer, raw: &[u8], source: usize) -> String {
        let mut out = Vec::new();
        let line = Line {
            source,
            raw: raw.to_vec(),
            prefix: stream::parse_prefix(raw),
        };
        p.line(&mut out, &line).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn prefixes_pad_colour_and_escape() {
        let mut p = Printer {
            names: vec!["web", "worker"],
            width: 6,
            color: false,
            json: false,
            prefixed: true,
            sources: vec![
                Source {
                    service: 0,
                    stream: None,
                    tagged: false,
                },
                Source {
                    service: 1,
                    stream: Some(Stream::Err),
                    tagged: true,
                },
            ],
        };
        assert_eq!(shown(&p, b"a\tb\x1b[2J\r", 0), "web    | a\tb\\x1b[2J\\r\n");
        p.color = true;
        assert_eq!(
            shown(&p, b"x", 1),
            "\x1b[33mworker |\x1b[0m x\n",
            "the second service's colour, padding inside it"
        );
        p.prefixed = false;
        assert_eq!(
            shown(&p, b"raw\x1b[2J", 0),
            "raw\x1b[2J\n",
            "one service: as written"
        );
        p.json = true;
        assert_eq!(
            shown(&p, b"2026-12-06T21:58:01.000001Z \xff", 1),
            "{\"time\":\"2026-12-06T21:58:01.000001Z\",\"service\":\"worker\",\
             \"stream\":\"err\",\"text\":\"\u{fffd}\"}\n"
        );
        assert_eq!(
            shown(&p, b"2026-12-06T21:58:01.000001Z out x", 1),
            "{\"time\":\"2026-12-06T21:58:01.000001Z\",\"service\":\"worker\",\
             \"stream\":\"out\",\"text\":\"x\"}\n",
            "a `stream` service: the tag is the stream"
        );
        assert_eq!(
            shown(&p, b"2026-12-06T21:58:01.000001Z out x", 0),
            "{\"time\":\"2026-12-06T21:58:01.000001Z\",\"service\":\"web\",\
             \"stream\":null,\"text\":\"out x\"}\n",
            "any other service: `out` is its own text"
        );
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = stream::micros(SystemTime::now());
        let ten = parse_since("10m").unwrap();
        assert!((now - 600_000_000 - ten).abs() < 5_000_000);
        assert!((now - 86_400_000_000 - parse_since("1d").unwrap()).abs() < 5_000_000);
        assert_eq!(
            parse_since("2026-12-06T21:00:00Z").unwrap(),
            stream::parse_prefix(b"2026-12-06T21:00:00.000000Z")
                .unwrap()
                .micros
        );
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("2026-12-06T21:00:00+02:00").is_err());
    }
}
