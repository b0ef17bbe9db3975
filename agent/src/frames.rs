//! Checksummed frames: the one framing of Edgewatch's append-only files (history segments,
//! journal segments), and the one reader that tells a torn tail from damage.
//!
//! ```text
//! frame    u32 LE body length, u32 LE CRC-32 (IEEE) of the body, body
//! ```
//!
//! A bad frame (length past the end, checksum mismatch, or a body its reader refuses) is
//! told apart as follows. At the end of the file, with nothing sound after it, it is a write
//! cut short: [`End::Torn`], which a writer cuts off at open and readers skip silently (the
//! writer may be in the middle of it). With a sound frame somewhere after it, it is damage:
//! [`End::Damaged`], which readers report. A scan either stops there (history: the writer goes
//! on in a new part) or, with `resync`, goes on at the next sound frame (the journal: one bad
//! spot costs only the records in it).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The bytes before a frame's body.
pub(crate) const HEAD: u64 = 8;

/// Appends `body` as a frame. Bodies are far below 4 GiB: each writer bounds its own.
pub(crate) fn put(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// The files of `dir` whose names `parse` accepts, sorted; none if `dir` does not exist.
/// Other names are left alone.
pub(crate) fn list<T: Ord>(
    dir: &Path,
    parse: impl Fn(&str) -> Option<T>,
) -> std::io::Result<Vec<(T, std::path::PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(&parse) {
            out.push((id, entry.path()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Clean,
    /// A bad frame with nothing sound after it: a write cut short (or under way).
    Torn,
    /// A bad frame at `at` with a sound frame after it (the last such, with `resync`).
    Damaged {
        at: u64,
        why: &'static str,
    },
}

/// What a scan of one file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Bytes of sound frames from the start, up to the first bad frame: where a writer may
    /// append.
    pub good: u64,
    /// The file's length when the scan began.
    pub len: u64,
    pub end: End,
    /// Bad stretches skipped (with `resync`), each reported to `damaged` as it was found.
    pub skipped: u64,
}

/// Reads `path` frame by frame, handing each body to `each`, up to the first bad frame: a
/// frame longer than `max_body`, a checksum mismatch, or a body `each` refuses (`Err(why)`,
/// which is always damage: its checksum held). With `resync`, a damaged stretch is reported
/// to `damaged(offset, why)` and the scan goes on at the next sound frame. Reads no further
/// than the length the file had when the scan began, so a frame being appended meanwhile is
/// not seen.
pub(crate) fn scan(
    path: &Path,
    max_body: u32,
    resync: bool,
    mut each: impl FnMut(&[u8]) -> Result<(), &'static str>,
    mut damaged: impl FnMut(u64, &'static str),
) -> std::io::Result<Scanned> {
    // One copy of the loop for every caller (the binary's size), not one per closure.
    scan_dyn(path, max_body, resync, &mut each, &mut damaged)
}

fn scan_dyn(
    path: &Path,
    max_body: u32,
    resync: bool,
    each: &mut dyn FnMut(&[u8]) -> Result<(), &'static str>,
    damaged: &mut dyn FnMut(u64, &'static str),
) -> std::io::Result<Scanned> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut scanned = Scanned { good: 0, len, end: End::Clean, skipped: 0 };
    let mut at = 0u64;
    let mut body = Vec::new();
    loop {
        file.seek(SeekFrom::Start(at))?;
        let mut input = std::io::BufReader::with_capacity(1 << 16, (&mut file).take(len - at));
        // Frames from `at` until a bad one (or the end).
        let bad = loop {
            let remaining = len - at;
            if remaining == 0 {
                break None;
            }
            let mut head = [0u8; HEAD as usize];
            if remaining < HEAD {
                break Some(("frame header cut short", false));
            }
            match input.read_exact(&mut head) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Some(("file cut while read", false)),
                read => read?,
            }
            let blen = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            if blen > max_body || HEAD + u64::from(blen) > remaining {
                break Some(("frame length past the end of the file", false));
            }
            body.resize(blen as usize, 0);
            match input.read_exact(&mut body) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Some(("file cut while read", false)),
                read => read?,
            }
            if crc32fast::hash(&body) != crc {
                break Some(("checksum mismatch", false));
            }
            if let Err(why) = each(&body) {
                break Some((why, true));
            }
            at += HEAD + u64::from(blen);
            if scanned.skipped == 0 && scanned.end == End::Clean {
                scanned.good = at;
            }
        };
        let Some((why, sound)) = bad else { return Ok(scanned) };
        drop(input);
        // What follows the bad frame: is there a sound frame in it, and where?
        let from = if sound { at + 1 } else { at };
        file.seek(SeekFrom::Start(from))?;
        let mut rest = Vec::new();
        (&mut file).take(len - from).read_to_end(&mut rest)?;
        let next = next_sound_frame(&rest, usize::from(!sound), max_body);
        match next {
            None if !sound => {
                if scanned.skipped == 0 {
                    scanned.end = End::Torn;
                }
                return Ok(scanned);
            }
            _ => {
                scanned.end = End::Damaged { at, why };
                scanned.skipped += 1;
                damaged(at, why);
                match next {
                    Some(offset) if resync => at = from + offset as u64,
                    _ => return Ok(scanned),
                }
            }
        }
    }
}

/// The first offset at or past `first` in `rest` where a sound frame starts. Only called
/// after a bad frame; a CRC-32 that matches by chance is a 1 in 4 billion event per offset.
fn next_sound_frame(rest: &[u8], first: usize, max_body: u32) -> Option<usize> {
    let word = |o: usize| u32::from_le_bytes([rest[o], rest[o + 1], rest[o + 2], rest[o + 3]]);
    (first..rest.len().saturating_sub(HEAD as usize - 1)).find(|&at| {
        let blen = word(at);
        let body = at + HEAD as usize;
        blen > 0
            && blen <= max_body
            && blen as usize <= rest.len() - body
            && crc32fast::hash(&rest[body..body + blen as usize]) == word(at + 4)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), bytes).expect("write");
        f
    }

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            put(&mut out, b);
        }
        out
    }

    fn read_all(bytes: &[u8], resync: bool) -> (Vec<Vec<u8>>, Scanned, Vec<u64>) {
        let f = file(bytes);
        let (mut got, mut bad) = (Vec::new(), Vec::new());
        let scanned = scan(
            f.path(),
            1 << 20,
            resync,
            |b| {
                if b == b"refused" {
                    return Err("refused");
                }
                got.push(b.to_vec());
                Ok(())
            },
            |at, _| bad.push(at),
        )
        .expect("scan");
        (got, scanned, bad)
    }

    #[test]
    fn a_cut_tail_is_torn_and_damage_before_a_sound_frame_is_not() {
        let whole = frames(&[b"one", b"two", b"three"]);
        let (got, s, _) = read_all(&whole, false);
        assert_eq!((got.len(), s.good, s.end), (3, whole.len() as u64, End::Clean));
        // Cut in the last frame: torn, and `good` is where the writer may go on.
        let (got, s, bad) = read_all(&whole[..whole.len() - 2], true);
        assert_eq!((got.len(), s.end, bad.len()), (2, End::Torn, 0));
        assert_eq!(s.good, (2 * HEAD + 3 + 3));
        // A flipped byte in the middle frame: damage, and with resync the third is read.
        let mut flipped = whole.clone();
        flipped[(HEAD as usize + 3) + HEAD as usize] ^= 0xff;
        let (got, s, bad) = read_all(&flipped, false);
        assert_eq!(got, vec![b"one".to_vec()]);
        assert_eq!(s.end, End::Damaged { at: HEAD + 3, why: "checksum mismatch" });
        let (got, s, bad2) = read_all(&flipped, true);
        assert_eq!(got, vec![b"one".to_vec(), b"three".to_vec()]);
        assert_eq!((s.skipped, s.good, bad2), (1, HEAD + 3, vec![HEAD + 3]));
        assert_eq!(bad, vec![HEAD + 3]);
        // A body its reader refuses has a sound checksum: damage even at the end.
        let (got, s, _) = read_all(&frames(&[b"one", b"refused"]), true);
        assert_eq!((got.len(), s.end), (1, End::Damaged { at: HEAD + 3, why: "refused" }));
        // Foreign bytes then frames: the frames after them are found.
        let mut foreign = b"not a frame at all, just text".to_vec();
        foreign.extend(frames(&[b"after"]));
        let (got, s, _) = read_all(&foreign, true);
        assert_eq!((got, s.skipped), (vec![b"after".to_vec()], 1));
    }
}
