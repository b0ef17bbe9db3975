//! Reading the journal, from any process while the agent writes it: [`read`] hands the
//! records of a time range to a function, [`export`] writes them in the replay format.

use super::segment::{self, Segment};
use super::{Entry, JournalError};
use crate::decode::Format;
use firmware_sim::{Encoding, RecordLine};
use std::io::Write;
use std::path::Path;

/// What a read found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadReport {
    /// Segments read (those entirely before `since` are not opened).
    pub segments: usize,
    /// Records in the range, handed on.
    pub records: u64,
    /// Damaged stretches skipped, as `file: offset N: why`.
    pub damaged: Vec<String>,
    /// The first and last arrival time handed on.
    pub first: Option<i64>,
    pub last: Option<i64>,
}

/// Hands every record that arrived in `since..until` (ms) to `each`, oldest segment first
/// and in the order written. A damaged stretch of a segment is skipped and reported; a torn
/// tail (a record being written) is skipped silently; a segment deleted meanwhile (the
/// budget) is passed over. Segments whose successor was opened at or before `since` are not
/// read: every record in them arrived before it.
pub fn read(dir: &Path, range: (i64, i64), mut each: impl FnMut(Entry<'_>)) -> Result<ReadReport, JournalError> {
    // One copy of the reader for every caller (the binary's size), not one per closure.
    read_dyn(dir, range, &mut each)
}

fn read_dyn(
    dir: &Path,
    (since, until): (i64, i64),
    each: &mut dyn FnMut(Entry<'_>),
) -> Result<ReadReport, JournalError> {
    let segments = segment::list(dir)?;
    let mut report = ReadReport::default();
    for (i, seg) in segments.iter().enumerate() {
        let next_created = segments.get(i + 1).map(|s: &Segment| s.created);
        if next_created.is_some_and(|n| n <= since) || seg.created >= until {
            continue;
        }
        let mut damaged = Vec::new();
        let scanned = segment::scan(
            &seg.path,
            |e| {
                let t = e.t();
                if (since..until).contains(&t) {
                    report.records += 1;
                    report.first.get_or_insert(t);
                    report.last = Some(t);
                    each(e);
                }
            },
            |at, why| damaged.push(format!("{}: offset {at}: {why}", seg.path.display())),
        );
        match scanned {
            Ok(s) if s.end == crate::frames::End::Torn && !segment::torn(&s) => {
                damaged.push(format!("{}: offset 0: not a journal segment", seg.path.display()));
            }
            Ok(_) => report.segments += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(JournalError::io(&seg.path)(e)),
        }
        report.damaged.extend(damaged);
    }
    Ok(report)
}

/// Writes the records of `since..until` to `out` as a recording for `edgewatch replay`
/// and golden tests (JSON lines: `payload` for JSON, `text`, or `hex`), ending with a line
/// that moves the clock on to `until`, so that what the silence meant (a missing heartbeat)
/// is replayed too. The sensor link's ups and downs have no line in that format and are
/// left out.
pub fn export(dir: &Path, range: (i64, i64), out: &mut impl Write) -> Result<ReadReport, ExportError> {
    let mut failed = None;
    let report = read(dir, range, |e| {
        if failed.is_some() {
            return;
        }
        let Entry::Message { t, format, topic, payload } = e else { return };
        if let Err(error) = write_line(out, &message_line(t, format, topic, payload)) {
            failed = Some(error);
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    write_line(out, &RecordLine::clock(range.1))?;
    Ok(report)
}

fn write_line(out: &mut impl Write, line: &RecordLine) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// The recording line of a journaled message.
pub(crate) fn message_line(t: i64, format: Format, topic: &str, payload: &[u8]) -> RecordLine {
    let is_json = || serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok();
    let encoding = match format {
        Format::Json => Encoding::Json,
        Format::Scalar => Encoding::Text,
        Format::Postcard | Format::Sparkplug => Encoding::Binary,
        Format::Auto if is_json() => Encoding::Json,
        Format::Auto => Encoding::Text,
    };
    // JSON lines hold one line each: a payload spread over lines is written compact.
    if encoding == Encoding::Json && payload.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
            return RecordLine::of_message(t, topic, encoding, value.to_string().as_bytes());
        }
    }
    RecordLine::of_message(t, topic, encoding, payload)
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("cannot write the recording: {0}")]
    Write(#[from] std::io::Error),
}
