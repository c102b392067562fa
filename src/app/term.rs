//! What human output may show and how wide it may be.
//!
//! Text that comes from a user or the network (command lines, paths, environment values,
//! NOTIFY payloads, error messages from a server) is printed through [`escape`], so a
//! newline or an escape sequence in it can never forge a row of a table or repaint the
//! terminal. On a terminal, lines are cut to its width (`--wide` and `--json` keep them
//! whole) and states are coloured unless `NO_COLOR` is set.

use std::borrow::Cow;
use std::io::IsTerminal;

/// How standard output is shown.
#[derive(Clone, Copy, Debug, Default)]
pub struct Term {
    /// Cut lines to this many characters (a terminal, without `--wide`).
    pub width: Option<usize>,
    /// Colour states (a terminal, `NO_COLOR` unset, `TERM` not `dumb`).
    pub color: bool,
}

impl Term {
    /// What standard output is: a terminal gets truncation (unless `wide`) and colour.
    pub fn stdout(wide: bool) -> Term {
        let out = std::io::stdout();
        if !out.is_terminal() {
            return Term::default();
        }
        let width = if wide {
            None
        } else {
            terminal_size::terminal_size_of(&out).map(|(w, _)| usize::from(w.0).max(20))
        };
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Term {
            width,
            color: !no_color,
        }
    }

    /// `line` cut to the width (an ellipsis marks the cut); `line` holds no colour codes.
    pub fn fit<'a>(&self, line: &'a str) -> Cow<'a, str> {
        match self.width {
            Some(w) => truncate(line, w),
            None => Cow::Borrowed(line),
        }
    }

    /// A state label, coloured on a terminal: running green, restarting and stopping
    /// yellow, failed red, stopped as is. `pad` is the column width (padding is added
    /// outside the colour codes, so columns stay aligned).
    pub fn state(&self, label: &str, pad: usize) -> String {
        let spaces = " ".repeat(pad.saturating_sub(label.chars().count()));
        let code = match label.split(' ').next().unwrap_or_default() {
            "running" => Some("32"),
            "restarting" | "stopping" | "unknown" => Some("33"),
            "failed" => Some("31"),
            _ => None,
        };
        match code {
            Some(c) if self.color => format!("\x1b[{c}m{label}\x1b[0m{spaces}"),
            _ => format!("{label}{spaces}"),
        }
    }
}

/// `s` with every control character (C0, DEL, C1) and every bidirectional-override
/// character shown as an escape (`\n`, `\t`, `\r`, `\x1b`, `\u{202e}`), so it stays on
/// one line and cannot move the cursor or reorder what follows.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for an owned string: no copy when nothing needs escaping.
pub fn escape_owned(s: String) -> String {
    match escape(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(e) => e,
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The first `width` characters of `s`, the last one replaced by `…` when cut.
pub fn truncate(s: &str, width: usize) -> Cow<'_, str> {
    match s.char_indices().nth(width) {
        None => Cow::Borrowed(s),
        Some(_) => {
            let keep: String = s.chars().take(width.saturating_sub(1)).collect();
            Cow::Owned(keep + "…")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_a_line() {
        assert_eq!(escape("plain /bin/x"), "plain /bin/x");
        assert_eq!(escape("a\nevil  running\t1\r"), "a\\nevil  running\\t1\\r");
        assert_eq!(escape("\x1b[2J\x7f"), "\\x1b[2J\\x7f");
        assert_eq!(escape("\u{85}x\u{202e}"), "\\u{85}x\\u{202e}");
        assert_eq!(escape("é ✓"), "é ✓");
    }

    #[test]
    fn truncates_by_characters() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdefg", 6), "abcde…");
        assert_eq!(truncate("ééééééé", 3), "éé…");
    }

    #[test]
    fn colours_only_when_asked() {
        let plain = Term::default();
        assert_eq!(plain.state("running", 9), "running  ");
        let color = Term {
            width: None,
            color: true,
        };
        assert_eq!(color.state("running", 9), "\x1b[32mrunning\x1b[0m  ");
        assert_eq!(color.state("stopped", 7), "stopped");
    }
}
