//! `edgewatch history`: what its arguments mean, and the rows it prints.

use super::{HistoryError, Resolution, Rollup};
use edgewatch_engine::Timestamp;
use std::time::UNIX_EPOCH;

/// How rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A header line, then `start,count,avg,min,max,stddev,first,last`.
    Csv,
    /// A JSON object per line with the same names.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err(format!("`{s}`: expected csv or json")),
        }
    }
}

/// `fine` or `coarse`; `1m` and `1h`, the default periods, name them too.
pub fn parse_resolution(s: &str) -> Result<Resolution, String> {
    match s {
        "fine" | "1m" => Ok(Resolution::Fine),
        "coarse" | "1h" => Ok(Resolution::Coarse),
        _ => Err(format!("`{s}`: expected fine (1m) or coarse (1h)")),
    }
}

/// A time argument: a duration before `now_ms` (`7d`, `90m`, `1h 30m`), or a UTC time in
/// RFC 3339 (`2026-12-04T10:00:00Z`, also `2026-12-04 10:00:00`).
pub fn parse_when(text: &str, now_ms: i64) -> Result<i64, String> {
    // A number without a unit (humantime takes a bare `0`) says neither how long nor when.
    let unitless = text.bytes().all(|b| b.is_ascii_digit());
    if let Some(d) = humantime::parse_duration(text).ok().filter(|_| !unitless) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms.saturating_sub(ms));
    }
    // A date alone is its midnight.
    let full = if text.len() == 10 { format!("{text}T00:00:00") } else { text.trim_end_matches('Z').to_owned() };
    let t = humantime::parse_rfc3339_weak(&full).map_err(|_| {
        format!("`{text}`: expected a duration before now (7d, 90m) or a UTC time (2026-12-04T10:00:00Z)")
    })?;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        Err(_) => Err(format!("`{text}`: before 1970")),
    }
}

/// `--since` and `--until` (default: now) as a range of period starts.
pub fn parse_range(since: &str, until: Option<&str>, now_ms: i64) -> Result<(i64, i64), String> {
    let since = parse_when(since, now_ms).map_err(|e| format!("--since: {e}"))?;
    let until = until.map_or(Ok(now_ms), |u| parse_when(u, now_ms).map_err(|e| format!("--until: {e}")))?;
    if since >= until {
        return Err("--since must be before --until".into());
    }
    Ok((since, until))
}

/// Writes the history of `key`'s `field` in `dir` to `out`, a row per period; how many.
pub fn show(
    dir: &std::path::Path,
    (key, field, res): (&str, &str, Resolution),
    (since, until): (i64, i64),
    format: Format,
    out: &mut impl std::io::Write,
) -> Result<usize, HistoryError> {
    let rows = super::read(dir, key, field, res, since, until)?;
    write_rows(out, &rows, format).map_err(HistoryError::Output)?;
    Ok(rows.len())
}

/// Prints a row per period.
pub fn write_rows(out: &mut impl std::io::Write, rows: &[(i64, Rollup)], format: Format) -> std::io::Result<()> {
    if format == Format::Csv {
        writeln!(out, "start,count,avg,min,max,stddev,first,last")?;
    }
    for (start, r) in rows {
        let row = Row::of(*start, r);
        match format {
            Format::Csv => {
                let Row { start, count, avg, min, max, stddev, first, last } = row;
                writeln!(out, "{start},{count},{avg},{min},{max},{stddev},{first},{last}")?;
            }
            Format::Json => {
                serde_json::to_writer(&mut *out, &row)?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

/// A row as JSON, its fields in the CSV's order: what `--format json` prints and what the
/// console's history API answers.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    start: String,
    count: u64,
    avg: f64,
    min: f64,
    max: f64,
    stddev: f64,
    first: f64,
    last: f64,
}

impl Row {
    /// The roll-up of the period starting at `start` (ms).
    pub fn of(start: i64, r: &Rollup) -> Row {
        let start = Timestamp(start).to_rfc3339();
        Row {
            start,
            count: r.count,
            avg: r.mean(),
            min: r.min,
            max: r.max,
            stddev: r.stddev(),
            first: r.first,
            last: r.last,
        }
    }
}
