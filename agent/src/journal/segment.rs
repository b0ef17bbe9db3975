//! One journal segment: its name, header and records (the format is in the parent's `//!`),
//! the listing of a directory, and [`scan`], the one reader of a file.

use super::{Entry, JournalError};
use crate::decode::Format;
use crate::frames;
use edgewatch_engine::history::rollup::{get_varint, put_varint, unzigzag, zigzag};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"EWJRNL";
const VERSION: u8 = 1;
/// No record is longer: a payload is bounded by `limits.max_payload_bytes` (at most 256 MiB
/// by the configuration's check) and a topic by MQTT's 64 KiB.
pub(super) const MAX_BODY: u32 = (256 << 20) + (1 << 17);

/// A segment file: its sequence number (the order of files) and when it was opened.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Segment {
    pub seq: u64,
    pub created: i64,
    pub path: PathBuf,
}

impl Segment {
    pub fn name(seq: u64, created: i64) -> String {
        format!("{seq:010}-{created}.jnl")
    }

    fn parse(dir: &Path, name: &str) -> Option<Segment> {
        let (seq, created) = name.strip_suffix(".jnl")?.split_once('-')?;
        let ok = seq.len() == 10 && seq.bytes().all(|b| b.is_ascii_digit());
        let (seq, created) = (seq.parse().ok().filter(|_| ok)?, created.parse().ok()?);
        Some(Segment { seq, created, path: dir.join(name) })
    }
}

/// The segment files in `dir`, oldest first; none if it does not exist.
pub(crate) fn list(dir: &Path) -> Result<Vec<Segment>, JournalError> {
    let files = crate::frames::list(dir, |name| Segment::parse(dir, name)).map_err(JournalError::io(dir))?;
    Ok(files.into_iter().map(|(s, _)| s).collect())
}

/// The header frame of a new file.
pub(crate) fn put_header(out: &mut Vec<u8>, created: i64) {
    let mut body = MAGIC.to_vec();
    body.push(VERSION);
    put_varint(&mut body, zigzag(created));
    frames::put(out, &body);
}

fn format_byte(f: Format) -> u8 {
    match f {
        Format::Auto => 0,
        Format::Json => 1,
        Format::Scalar => 2,
        Format::Postcard => 3,
        Format::Sparkplug => 4,
    }
}

fn format_of(b: u8) -> Option<Format> {
    Some(match b {
        0 => Format::Auto,
        1 => Format::Json,
        2 => Format::Scalar,
        3 => Format::Postcard,
        4 => Format::Sparkplug,
        _ => return None,
    })
}

/// Appends the frame of `entry` to `out` (`body` is scratch space, kept for its capacity).
pub(crate) fn put_entry(out: &mut Vec<u8>, body: &mut Vec<u8>, entry: &Entry<'_>) {
    body.clear();
    match *entry {
        Entry::Message { t, format, topic, payload } => {
            body.push(0);
            put_varint(body, zigzag(t));
            body.push(format_byte(format));
            put_varint(body, topic.len() as u64);
            body.extend_from_slice(topic.as_bytes());
            body.extend_from_slice(payload);
        }
        Entry::LinkDown { t } | Entry::LinkUp { t } => {
            body.push(if matches!(entry, Entry::LinkDown { .. }) { 1 } else { 2 });
            put_varint(body, zigzag(t));
        }
        Entry::Event { t, seq, id, topic, body: event } => {
            body.push(3);
            put_varint(body, zigzag(t));
            put_varint(body, seq);
            body.extend_from_slice(&id.to_le_bytes());
            put_varint(body, topic.len() as u64);
            body.extend_from_slice(topic.as_bytes());
            body.extend_from_slice(event);
        }
        Entry::Published { t, seq } | Entry::Acked { t, seq } => {
            body.push(if matches!(entry, Entry::Published { .. }) { 4 } else { 5 });
            put_varint(body, zigzag(t));
            put_varint(body, seq);
        }
    }
    frames::put(out, body);
}

fn entry(body: &[u8]) -> Result<Entry<'_>, &'static str> {
    let mut at = 1;
    let t = get_varint(body, &mut at).map(unzigzag).map_err(|_| "bad time")?;
    let entry = match body.first() {
        Some(0) => {
            let format = body.get(at).copied().and_then(format_of).ok_or("unknown format")?;
            at += 1;
            let (topic, end) = text(body, at)?;
            Entry::Message { t, format, topic, payload: &body[end..] }
        }
        Some(1) if at == body.len() => Entry::LinkDown { t },
        Some(2) if at == body.len() => Entry::LinkUp { t },
        Some(3) => {
            let seq = get_varint(body, &mut at).map_err(|_| "bad seq")?;
            let id = body.get(at..at + 16).and_then(|b| <[u8; 16]>::try_from(b).ok()).ok_or("id cut short")?;
            at += 16;
            let (topic, end) = text(body, at)?;
            Entry::Event { t, seq, id: u128::from_le_bytes(id), topic, body: &body[end..] }
        }
        Some(k @ (4 | 5)) => {
            let seq = get_varint(body, &mut at).map_err(|_| "bad seq")?;
            if at != body.len() {
                return Err("unknown record");
            }
            if *k == 4 { Entry::Published { t, seq } } else { Entry::Acked { t, seq } }
        }
        _ => return Err("unknown record"),
    };
    Ok(entry)
}

/// A topic at `at`: its varint length and UTF-8 text; and where it ends.
fn text(body: &[u8], mut at: usize) -> Result<(&str, usize), &'static str> {
    let n = get_varint(body, &mut at).map_err(|_| "bad topic length")?;
    let end = usize::try_from(n).ok().and_then(|n| at.checked_add(n)).ok_or("bad topic length")?;
    let topic = body.get(at..end).ok_or("topic cut short")?;
    Ok((std::str::from_utf8(topic).map_err(|_| "topic not UTF-8")?, end))
}

fn header(body: &[u8]) -> Result<i64, &'static str> {
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or("not a journal segment")?;
    match rest {
        [VERSION, ..] => {
            let mut at = 1;
            let created = get_varint(rest, &mut at).map(unzigzag).map_err(|_| "bad header")?;
            if at != rest.len() {
                return Err("bad header");
            }
            Ok(created)
        }
        _ => Err("unknown journal version"),
    }
}

/// Longer than any header frame: a file with no sound frame in its first this many bytes is
/// not a journal segment whose header was cut short, but something else.
const HEADER_MAX: u64 = 64;

/// Is what `scan` found a torn tail, to cut off (not foreign bytes with no header)?
pub(crate) fn torn(scanned: &frames::Scanned) -> bool {
    scanned.end == frames::End::Torn && (scanned.good > 0 || scanned.len <= HEADER_MAX)
}

/// Reads a segment's records, handing each to `each`; a damaged stretch is reported to
/// `damaged(offset, why)` and the records after it are read. A torn tail is skipped silently
/// (the writer may be in the middle of it).
pub(crate) fn scan(
    path: &Path,
    mut each: impl FnMut(Entry<'_>),
    mut damaged: impl FnMut(u64, &'static str),
) -> std::io::Result<frames::Scanned> {
    scan_dyn(path, &mut each, &mut damaged)
}

fn scan_dyn(
    path: &Path,
    each: &mut dyn FnMut(Entry<'_>),
    damaged: &mut dyn FnMut(u64, &'static str),
) -> std::io::Result<frames::Scanned> {
    let mut headed = false;
    frames::scan(
        path,
        MAX_BODY,
        true,
        |body| {
            // The first sound frame is the header, unless the header was damaged (reported
            // already) and this is a record.
            if !std::mem::replace(&mut headed, true) && header(body).is_ok() {
                return Ok(());
            }
            each(entry(body)?);
            Ok(())
        },
        damaged,
    )
}
