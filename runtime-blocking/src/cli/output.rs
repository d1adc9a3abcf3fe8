//! What a command prints: one value rendered either as a plain-text table or as JSON.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tinker_core::types::Timestamp;

use super::Format;

/// A command's result: the JSON document and its table rendering.
#[derive(Debug)]
pub(crate) struct Output {
    pub json: Value,
    pub table: Table,
}

/// A titled table; property sheets are tables with the columns `Property` and `Value`.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub title: Option<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines printed after the table (summaries, hints).
    pub footer: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        Table {
            title: Some(title.into()),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            ..Table::default()
        }
    }

    /// A `Property | Value` sheet.
    pub fn properties(title: impl Into<String>) -> Table {
        Table::new(title, &["Property", "Value"])
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn prop(&mut self, name: &str, value: impl Into<String>) {
        self.rows.push(vec![name.to_owned(), value.into()]);
    }

    /// Only lines, no grid (confirmations such as "Published …").
    pub fn lines(lines: Vec<String>) -> Table {
        Table {
            footer: lines,
            ..Table::default()
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(title) = &self.title {
            let _ = writeln!(out, "{title}");
        }
        if !self.columns.is_empty() && !self.rows.is_empty() {
            let width = |s: &str| s.chars().count();
            let mut widths: Vec<usize> = self.columns.iter().map(|c| width(c)).collect();
            for row in &self.rows {
                for (i, cell) in row.iter().enumerate() {
                    if let Some(w) = widths.get_mut(i) {
                        *w = (*w).max(width(cell));
                    }
                }
            }
            let line = |cells: &[String]| {
                let mut s = String::new();
                for (i, cell) in cells.iter().enumerate() {
                    let last = i + 1 == cells.len();
                    if last {
                        s.push_str(cell);
                    } else {
                        let pad = widths.get(i).copied().unwrap_or(0);
                        let _ = write!(s, "{cell:<pad$}  ");
                    }
                }
                s.trim_end().to_owned()
            };
            let _ = writeln!(out, "{}", line(&self.columns));
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "{}", line(&rule));
            for row in &self.rows {
                let _ = writeln!(out, "{}", line(row));
            }
        }
        for l in &self.footer {
            let _ = writeln!(out, "{l}");
        }
        out
    }
}

impl Output {
    pub fn new(json: Value, table: Table) -> Output {
        Output { json, table }
    }

    /// Nothing to print: the command already wrote its result (e.g. a trace on stdout).
    pub fn nothing() -> Output {
        Output::new(Value::Null, Table::default())
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json if self.json.is_null() => String::new(),
            Format::Json => {
                let mut s = serde_json::to_string_pretty(&self.json).unwrap_or_default();
                s.push('\n');
                s
            }
            Format::Table => self.table.render(),
        }
    }
}

/// `1.5 KB`-style sizes, as the official CLI prints them.
pub(crate) fn format_size(bytes: Option<u64>) -> String {
    let Some(bytes) = bytes else {
        return "N/A".into();
    };
    let mut size = bytes as f64;
    for unit in ["B", "KB", "MB", "GB", "TB", "PB"] {
        if size < 1024.0 {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{size:.1} {unit}")
            };
        }
        size /= 1024.0;
    }
    format!("{size:.1} EB")
}

pub(crate) fn format_bool(b: bool) -> String {
    if b { "Yes" } else { "No" }.into()
}

/// A time relative to now ("3 hours ago", "in 2 days"), or its date when more than 30 days away.
pub(crate) fn format_time(t: Option<&Timestamp>) -> String {
    let Some(t) = t else {
        return "N/A".into();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    relative_time(t, now)
}

fn relative_time(t: &Timestamp, now_unix: i64) -> String {
    let delta = now_unix - t.unix_seconds();
    let future = delta < 0;
    let secs = delta.unsigned_abs();
    let days = secs / 86_400;
    let label = |n: u64, unit: &str| {
        let plural = if n == 1 { "" } else { "s" };
        if future {
            format!("in {n} {unit}{plural}")
        } else {
            format!("{n} {unit}{plural} ago")
        }
    };
    if days > 30 {
        t.as_str().get(..10).unwrap_or(t.as_str()).to_owned()
    } else if days > 7 {
        label(days / 7, "week")
    } else if days > 0 {
        label(days, "day")
    } else if secs > 3600 {
        label(secs / 3600, "hour")
    } else if secs > 60 {
        label(secs / 60, "minute")
    } else if future {
        "in less than a minute".into()
    } else {
        "just now".into()
    }
}

/// A JSON value as a table cell: strings bare, null as `null`, the rest as JSON.
pub(crate) fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "null".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units_with_one_decimal() {
        assert_eq!(format_size(Some(512)), "512 B");
        assert_eq!(format_size(Some(1536)), "1.5 KB");
        assert_eq!(format_size(Some(200 * 1024 * 1024)), "200.0 MB");
        assert_eq!(format_size(None), "N/A");
    }

    #[test]
    fn times_read_relative_to_now_and_as_dates_when_far() {
        let t = Timestamp::parse("2026-01-10T00:00:00Z").unwrap();
        let at = |offset: i64| relative_time(&t, t.unix_seconds() + offset);
        assert_eq!(at(30), "just now");
        assert_eq!(at(-30), "in less than a minute");
        assert_eq!(at(7200), "2 hours ago");
        assert_eq!(at(-86_400 * 3), "in 3 days");
        assert_eq!(at(86_400 * 8), "1 week ago");
        assert_eq!(at(86_400 * 40), "2026-01-10");
    }

    #[test]
    fn tables_align_columns_and_skip_the_grid_when_empty() {
        let mut t = Table::new("2 things", &["Id", "Name"]);
        t.row(vec!["a".into(), "first".into()]);
        t.row(vec!["long-id".into(), "second".into()]);
        assert_eq!(
            t.render(),
            "2 things\nId       Name\n-------  ------\na        first\nlong-id  second\n"
        );
        assert_eq!(Table::new("none", &["Id"]).render(), "none\n");
    }
}
