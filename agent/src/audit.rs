//! The audit trail: what was done to the agent, who asked and when, in an append-only,
//! hash-chained log in the state directory. The local log is the authority; a copy of each
//! entry goes upstream on `<prefix>/audit` through the durable outbox.
//!
//! ```text
//! start (version, configuration hash, rule files) ─┐
//! reload (trigger, caller, each file's hashes)     │
//! alarm command, rule disabled by its failures     ├─▶ AuditLog::append ─▶ <state>/audit/<seq>.jsonl (fsync), HEAD
//! restore after damage, state export / import  ────┘                   └▶ engine loop: outbox ─▶ <prefix>/audit
//! edgewatch audit [--since] ─▶ read            edgewatch audit verify ─▶ verify
//! ```
//!
//! One JSON line per entry, keys sorted: `{"data":{..},"hash":"..","kind":"reload",
//! "prev":"..","seq":7,"t":1764900000000,"time":"2026-12-05T14:00:00.000Z"}`. `hash` is the
//! SHA-256 (hex) of the line's JSON without `hash`, compact; `prev` is the previous entry's
//! `hash` (64 zeros before the first). So a changed byte breaks its entry's hash, and a removed
//! or reordered entry breaks the next one's `prev` or the sequence. `HEAD` (rewritten
//! atomically after each append) holds the last entry's seq and hash and the first seq still
//! kept, so removing entries at either end is seen too. Files rotate at a size; the oldest go
//! first when the total passes `audit.max_mb`, and verification then starts at the first kept
//! entry. SHA-256 comes from `ring`, already linked for TLS.
//!
//! What it does not stop: someone who can write the state directory can rewrite the whole
//! log, hashes and HEAD included. The upstream copy (each entry with its seq and hash) is
//! what such a rewrite cannot reach.

use edgewatch_engine::Timestamp;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Where the audit log of a state directory lives.
pub fn dir_in(state_dir: &Path) -> PathBuf {
    state_dir.join("audit")
}

/// The `prev` of the first entry ever.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("audit log {path}: {message}")]
    Damaged { path: String, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io { path: path.display().to_string(), source }
}

/// One entry, as stored and as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    /// When, in ms since the epoch, and as text for people.
    pub t: i64,
    pub time: String,
    /// `start`, `reload`, `alarm_command`, `rule_disabled`, `restored`, `state_export`,
    /// `state_import`.
    pub kind: String,
    pub data: serde_json::Value,
    pub prev: String,
    pub hash: String,
}

impl Entry {
    /// The SHA-256 (hex) of the entry's JSON without `hash`.
    fn digest(&self) -> String {
        let body = serde_json::json!({
            "data": self.data, "kind": self.kind, "prev": self.prev, "seq": self.seq, "t": self.t, "time": self.time,
        });
        firmware_sim::record::hex(ring::digest::digest(&ring::digest::SHA256, body.to_string().as_bytes()).as_ref())
    }

    /// The entry as one line of JSON (without the newline): what is stored and published.
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `HEAD`: where the chain ends, and where the kept part of it begins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    /// The last entry's seq and hash (0 and the genesis hash before any).
    seq: u64,
    hash: String,
    /// The first seq still kept (older files rotated out).
    first: u64,
}

/// The log's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    /// Most bytes kept, all files together; the oldest file goes first beyond it.
    pub max_bytes: u64,
}

impl Default for AuditLimits {
    fn default() -> Self {
        AuditLimits { max_bytes: 16 * 1024 * 1024 }
    }
}

impl AuditLimits {
    /// Size at which a file is closed and a new one begun: an eighth of the budget, so a
    /// rotation drops an eighth, at most 1 MiB.
    fn segment_bytes(self) -> u64 {
        (self.max_bytes / 8).clamp(4096, 1 << 20)
    }
}

/// The log, open for appending: one writer (the agent, or a command on a stopped agent's
/// state directory, which sled's lock keeps apart).
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    limits: AuditLimits,
    /// The files, oldest first: (first seq, path, bytes).
    segments: Vec<(u64, PathBuf, u64)>,
    head: Head,
}

/// What opening found that needs saying (the log is usable regardless).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Bytes of a half-written last line (a crash during an append), cut off.
    pub torn_bytes: u64,
    /// The files end before `HEAD` says they should: entries removed at the end.
    pub missing_tail: Option<String>,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path, limits: AuditLimits) -> Result<(AuditLog, Opened), AuditError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let segments = segments(dir)?;
        let mut opened = Opened::default();
        let head_file = read_head(dir)?;
        let mut last: Option<Entry> = None;
        // The last complete entry: in the newest file, or an older one if the newest holds
        // none (a crash right after it was begun). A half-written line is cut off.
        for (i, (_, path, _)) in segments.iter().enumerate().rev() {
            let bytes = std::fs::read(path).map_err(io(path))?;
            let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if end < bytes.len() && i + 1 == segments.len() {
                opened.torn_bytes = (bytes.len() - end) as u64;
                let f = std::fs::OpenOptions::new().write(true).open(path).map_err(io(path))?;
                f.set_len(end as u64).map_err(io(path))?;
                f.sync_all().map_err(io(path))?;
            }
            let text = String::from_utf8_lossy(&bytes[..end]);
            if let Some(line) = text.lines().last() {
                last = Some(serde_json::from_str(line).map_err(|e| AuditError::Damaged {
                    path: path.display().to_string(),
                    message: format!("its last entry is unreadable: {e}"),
                })?);
                break;
            }
        }
        let segments = self::segments(dir)?;
        let (seq, hash) = last.map_or((0, GENESIS.to_owned()), |e| (e.seq, e.hash));
        let first = segments.first().map_or(seq + 1, |s| s.0);
        if let Some(h) = &head_file {
            if h.seq > seq {
                opened.missing_tail =
                    Some(format!("HEAD says the log ends at entry {}, the files end at {seq}", h.seq));
            }
        }
        let head = Head { seq, hash, first };
        Ok((AuditLog { dir: dir.to_owned(), limits, segments, head }, opened))
    }

    /// The last entry's seq (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.head.seq
    }

    /// Appends an entry of `kind` at `now_ms`, on disk (flushed) before it returns.
    pub fn append(&mut self, now_ms: i64, kind: &str, data: serde_json::Value) -> Result<Entry, AuditError> {
        let mut entry = Entry {
            seq: self.head.seq + 1,
            t: now_ms,
            time: Timestamp(now_ms).to_rfc3339(),
            kind: kind.to_owned(),
            data,
            prev: self.head.hash.clone(),
            hash: String::new(),
        };
        entry.hash = entry.digest();
        let mut line = entry.line();
        line.push('\n');
        let full = self.segments.last().is_none_or(|s| s.2 + line.len() as u64 > self.limits.segment_bytes());
        if full {
            let path = self.dir.join(format!("{:020}.jsonl", entry.seq));
            self.segments.push((entry.seq, path, 0));
        }
        let Some((_, path, bytes)) = self.segments.last_mut() else {
            return Err(AuditError::Damaged {
                path: self.dir.display().to_string(),
                message: "no file to append to".into(),
            });
        };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&*path).map_err(io(path))?;
        f.write_all(line.as_bytes()).map_err(io(path))?;
        f.sync_data().map_err(io(path))?;
        *bytes += line.len() as u64;
        self.head.seq = entry.seq;
        self.head.hash.clone_from(&entry.hash);
        self.rotate()?;
        self.write_head()?;
        Ok(entry)
    }

    /// Drops the oldest files while the total is over the budget (never the one in use).
    fn rotate(&mut self) -> Result<(), AuditError> {
        while self.segments.len() > 1 && self.segments.iter().map(|s| s.2).sum::<u64>() > self.limits.max_bytes {
            let (_, path, _) = self.segments.remove(0);
            std::fs::remove_file(&path).map_err(io(&path))?;
            tracing::info!(file = %path.display(), "Oldest audit file rotated out.");
        }
        self.head.first = self.segments.first().map_or(self.head.seq + 1, |s| s.0);
        Ok(())
    }

    fn write_head(&self) -> Result<(), AuditError> {
        let path = self.dir.join("HEAD");
        let tmp = self.dir.join("HEAD.tmp");
        let text = serde_json::to_string(&self.head).unwrap_or_default();
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_data().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }
}

/// The log's files, oldest first: (first seq, path, bytes).
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>, AuditError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let path = e.path();
        let Some(first) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = e.metadata().map_err(io(&path))?.len();
        out.push((first, path, bytes));
    }
    out.sort();
    Ok(out)
}

fn read_head(dir: &Path) -> Result<Option<Head>, AuditError> {
    let path = dir.join("HEAD");
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AuditError::Damaged { path: path.display().to_string(), message: e.to_string() }),
    }
}

/// Every entry of the log in `dir` at or after `since_ms`, oldest first. Lines that do not
/// parse are skipped (`verify` names them).
pub fn read(dir: &Path, since_ms: i64) -> Result<Vec<Entry>, AuditError> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for (_, path, _) in segments(dir)? {
        let f = std::fs::File::open(&path).map_err(io(&path))?;
        for line in std::io::BufReader::new(f).lines() {
            let line = line.map_err(io(&path))?;
            if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                if e.t >= since_ms {
                    out.push(e);
                }
            }
        }
    }
    Ok(out)
}

/// The entries after `after` (a seq), oldest first, reading only the files that can hold
/// them: with `None`, the newest file's entries after its last `start` (what was recorded
/// since the agent last started). A start reads at most a file or two, not the whole log.
pub fn read_after(dir: &Path, after: Option<u64>) -> Result<Vec<Entry>, AuditError> {
    let files = segments(dir)?;
    let from = match after {
        // The last file whose first entry is at or before the one wanted.
        Some(seq) => files.iter().rposition(|f| f.0 <= seq + 1).unwrap_or(0),
        None => files.len().saturating_sub(1),
    };
    let mut out = Vec::new();
    for (_, path, _) in &files[from..] {
        let f = std::fs::File::open(path).map_err(io(path))?;
        for line in std::io::BufReader::new(f).lines() {
            let line = line.map_err(io(path))?;
            if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                if after.is_none_or(|seq| e.seq > seq) {
                    out.push(e);
                }
            }
        }
    }
    if after.is_none() {
        if let Some(i) = out.iter().rposition(|e| e.kind == "start") {
            out.drain(..=i);
        }
    }
    Ok(out)
}

/// What [`verify`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries checked, and the first and last seq.
    pub entries: u64,
    pub first: Option<u64>,
    pub last: Option<u64>,
    /// Each break of the chain, where it is (`file:line`, entry seq) and what is wrong.
    pub problems: Vec<String>,
}

/// Checks the whole log in `dir`: each entry's hash, each `prev` against the entry before,
/// the sequence without gaps or reordering, and both ends against `HEAD`.
pub fn verify(dir: &Path) -> Result<Verified, AuditError> {
    let mut v = Verified::default();
    let head = read_head(dir)?;
    let mut before: Option<(u64, String)> = None;
    for (_, path, _) in segments(dir)? {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.split_terminator('\n').enumerate() {
            let at = format!("{}:{}", path.display(), i + 1);
            let e: Entry = match serde_json::from_str(line) {
                Ok(e) => e,
                Err(error) => {
                    v.problems.push(format!("{at}: unreadable entry ({error})"));
                    before = None;
                    continue;
                }
            };
            v.entries += 1;
            v.first.get_or_insert(e.seq);
            v.last = Some(e.seq);
            if e.digest() != e.hash {
                v.problems.push(format!("{at}: entry {} was changed (its hash does not match its content)", e.seq));
            }
            match &before {
                None if v.entries == 1 => {
                    if let Some(h) = &head {
                        if e.seq != h.first {
                            v.problems.push(format!(
                                "{at}: the log begins at entry {}, HEAD says {}: entries removed at the start",
                                e.seq, h.first
                            ));
                        }
                    } else if e.seq == 1 && e.prev != GENESIS {
                        v.problems.push(format!("{at}: entry 1 does not start the chain"));
                    }
                }
                None => {}
                Some((seq, hash)) => {
                    if e.seq != seq + 1 {
                        v.problems
                            .push(format!("{at}: entry {} follows entry {seq}: entries removed or reordered", e.seq));
                    } else if &e.prev != hash {
                        v.problems.push(format!("{at}: entry {} does not follow the entry before it", e.seq));
                    }
                }
            }
            before = Some((e.seq, e.hash));
        }
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            v.problems.push(format!("{}: a half-written last line", path.display()));
        }
    }
    match (&head, &before) {
        (Some(h), Some((seq, hash))) if h.seq != *seq || &h.hash != hash => v
            .problems
            .push(format!("the log ends at entry {seq}, HEAD says {}: entries removed or changed at the end", h.seq)),
        (Some(h), None) if h.seq > 0 => {
            v.problems.push(format!("no entries, HEAD says the log ends at entry {}", h.seq));
        }
        _ => {}
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
