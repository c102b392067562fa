//! Drawing one frame of `tend top`: a header line, the table (and the log pane under it
//! when open), a status line. Everything is cut to the frame: columns drop on a narrow
//! terminal ([`super::model::columns`]), the log pane gives way on a short one, and below
//! three lines only a note is shown.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use super::model::{columns, fmt_bytes, Col, Row, View};
use crate::service::fmt_duration;

/// Keys, as the status line shows them when there is nothing else to say.
const HELP: &str = "↑↓ select  s start  x stop  r restart  l log  / filter  q quit";
const FLEET_HELP: &str =
    "↑↓ select  / filter  q quit  (looking only: `tend fleet restart NAME` acts)";

pub fn draw(f: &mut Frame, app: &mut View) {
    let area = f.area();
    if area.height < 3 || area.width < 8 {
        f.render_widget(Paragraph::new("tend top: too small"), area);
        return;
    }
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    header(f, app, head);
    // The log pane takes the lower 60% when there is room for a few rows of each.
    if app.log_open && body.height >= 8 {
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(body);
        table(f, app, top);
        log_pane(f, app, bottom);
    } else {
        table(f, app, body);
    }
    status_line(f, app, foot);
}

fn header(f: &mut Frame, app: &View, area: Rect) {
    let running = app.rows.iter().filter(|r| r.pid.is_some()).count();
    let every = fmt_duration(app.interval);
    let mut text = if app.fleet {
        let mut hosts: Vec<&str> = app.rows.iter().filter_map(|r| r.host.as_deref()).collect();
        hosts.dedup();
        format!(
            "tend top --fleet · {} host(s), {running} service(s) running · every {every}",
            hosts.len()
        )
    } else {
        format!(
            "tend top · {} service(s), {running} running · daemon {} · every {every}",
            app.rows.len(),
            if app.daemon { "running" } else { "not running" },
        )
    };
    if !app.selection.filter.is_empty() {
        text.push_str(&format!(
            " · filter: {}",
            crate::app::term::escape(&app.selection.filter)
        ));
    }
    f.render_widget(
        Paragraph::new(text).style(Style::new().add_modifier(Modifier::BOLD)),
        area,
    );
}

fn state_style(state: &str, color: bool) -> Style {
    if !color {
        return Style::new();
    }
    match state {
        "running" => Style::new().fg(Color::Green),
        "starting" | "stopping" | "restarting" => Style::new().fg(Color::Yellow),
        "failed" => Style::new().fg(Color::Red),
        _ => Style::new(),
    }
}

fn cell(row: &Row, col: Col) -> String {
    let dash = || "-".to_string();
    match col {
        Col::Name => row.name.clone(),
        Col::Host => row.host.clone().unwrap_or_else(dash),
        Col::Seen => row.seen.clone().unwrap_or_else(dash),
        Col::State => row.state.clone(),
        Col::Pid => row.pid.map_or_else(dash, |p| p.to_string()),
        Col::Uptime => row.uptime().unwrap_or_else(dash),
        Col::Restarts => row.restarts.to_string(),
        Col::LastExit => row.last_exit.clone().unwrap_or_else(dash),
        Col::Cpu => row.cpu.map_or_else(dash, |c| format!("{c:.1}")),
        Col::Memory => row.memory.map_or_else(dash, fmt_bytes),
    }
}

fn table(f: &mut Frame, app: &mut View, area: Rect) {
    let color = app.color;
    let cols = columns(area.width, app.fleet);
    let visible = app.selection.visible(&app.rows);
    let selected = app.selection.index(&visible);
    if visible.is_empty() {
        let note = if app.rows.is_empty() && app.fleet {
            "no host has joined this fleet yet"
        } else if app.rows.is_empty() {
            "no services (define one with `tend add NAME -- PROGRAM [ARGS...]`)"
        } else {
            "no service matches the filter"
        };
        f.render_widget(Paragraph::new(note), area);
        return;
    }
    let rows: Vec<TableRow> = visible
        .iter()
        .map(|r| {
            TableRow::new(cols.iter().map(|&c| {
                let text = cell(r, c);
                match c {
                    Col::State => Span::styled(text, state_style(&r.state, color)),
                    _ => Span::raw(text),
                }
            }))
        })
        .collect();
    let widths = cols.iter().map(|c| match c {
        Col::Name => Constraint::Min(c.width()),
        c => Constraint::Length(c.width()),
    });
    let header = TableRow::new(cols.iter().map(|c| c.title()))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let t = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    app.table.select(selected);
    // When every row fits, show them all from the top: the scroll kept from a smaller
    // window would otherwise hide the first ones.
    if visible.len() < usize::from(area.height) {
        *app.table.offset_mut() = 0;
    }
    f.render_stateful_widget(t, area, &mut app.table);
}

fn log_pane(f: &mut Frame, app: &View, area: Rect) {
    let (title, lines) = match &app.log {
        Some((name, lines)) => (format!(" {name}: log "), lines.as_slice()),
        None => (" log ".to_string(), &[][..]),
    };
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    let skip = lines.len().saturating_sub(usize::from(inner.height));
    let text: Vec<Line> = lines[skip..]
        .iter()
        .map(|l| Line::raw(l.as_str()))
        .collect();
    f.render_widget(Paragraph::new(text).block(block), area);
}

fn status_line(f: &mut Frame, app: &View, area: Rect) {
    let line = if app.editing {
        Line::raw(format!(
            "/{}▏ (Enter keeps it, Esc clears it)",
            crate::app::term::escape(&app.selection.filter)
        ))
    } else if let Some(s) = &app.status {
        let mut style = Style::new();
        if s.error && app.color {
            style = style.fg(Color::Red);
        }
        let busy = if app.pending > 0 {
            format!(" ({} pending)", app.pending)
        } else {
            String::new()
        };
        let prefix = if s.error { "error: " } else { "" };
        Line::styled(format!("{prefix}{}{busy}", s.text), style)
    } else {
        Line::raw(if app.fleet { FLEET_HELP } else { HELP })
    };
    f.render_widget(Paragraph::new(line), area);
}
