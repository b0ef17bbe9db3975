//! Snapshots: everything the store holds as one JSON document (`state export`, `state
//! import`, and the periodic `snapshot.json` a damaged database is restored from), and the
//! readable report of `state inspect`.

use super::{Batch, SCHEMA_VERSION, Store, StoreError};
use crate::outbox::entry::OutboxEntry;
use edgewatch_engine::Touched;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything the agent keeps, as one JSON document: `state export`, `state import`, and
/// the periodic snapshot.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: u64,
    /// When it was taken (ms since the epoch).
    pub taken_ms: i64,
    /// When the agent was last known running, as of the snapshot (its `taken_ms` when the
    /// running agent took it): a restore from it is a restart, and the downtime counts from
    /// here. Absent in files of older versions: `taken_ms` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive_ms: Option<i64>,
    /// (key in the store, value as text: JSON, but the raw pieces as base64: see `value_text`).
    pub state: Vec<(String, String)>,
    pub outbox: Vec<OutboxEntry>,
    /// History roll-ups, as the history log exports them: only in `state export` files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
}

impl Snapshot {
    /// The engine state it holds, as [`Store::load_state`] gives it from the database: for
    /// an engine outside the agent (`edgewatch backtest --state`).
    pub fn engine_state(&self) -> Vec<(Touched, Vec<u8>)> {
        let named = |(k, v): &(String, String)| {
            Some((super::state::touched_of(k.as_bytes())?, super::state::value_bytes(k, v)))
        };
        self.state.iter().filter_map(named).collect()
    }
}

impl Store {
    /// Everything, as a snapshot document. Its "alive" mark is the store's; the running agent
    /// sets it to `now_ms`.
    pub fn snapshot(&self, now_ms: i64) -> Result<Snapshot, StoreError> {
        let mut s =
            Snapshot { schema: SCHEMA_VERSION, taken_ms: now_ms, alive_ms: self.last_alive(), ..Snapshot::default() };
        for (k, v) in self.state_records()? {
            s.state.push((String::from_utf8_lossy(&k).into_owned(), super::state::value_text(&k, &v)));
        }
        for item in self.db.scan_prefix(b"o/") {
            let (_, v) = item.map_err(|e| self.db_err(e))?;
            if let Ok(entry) = serde_json::from_slice(&v) {
                s.outbox.push(entry);
            }
        }
        Ok(s)
    }

    /// Loads a snapshot into this (empty) store, with its "alive" mark (unless this store's
    /// is later): the agent that starts on it sees a restart, and gives every device a full
    /// timeout from then.
    pub async fn restore(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        for (k, v) in &snap.state {
            // Through the journal, as any state: over what the journal holds already.
            batch.put_state(k.as_bytes().to_vec(), Some(super::state::value_bytes(k, v)));
        }
        let alive = snap.alive_ms.unwrap_or(snap.taken_ms).max(self.last_alive().unwrap_or(i64::MIN));
        self.mark_alive(&mut batch, alive);
        for entry in &snap.outbox {
            self.push_outbox(&mut batch, entry.clone());
        }
        self.commit(batch).await
    }

    /// Writes the snapshot file atomically: temp file, fsync, rename.
    pub fn write_snapshot_file(&self, snap: &Snapshot) -> Result<PathBuf, StoreError> {
        write_snapshot(&self.dir.join("snapshot.json"), snap)
    }
}

/// A readable report of what the store holds: keys per rule, heartbeat status per device,
/// outbox depth, size on disk.
pub fn inspect(store: &Store) -> Result<String, StoreError> {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut per_rule: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut devices: Vec<String> = Vec::new();
    let mut dedup = 0usize;
    let mut series = 0usize;
    let mut past: BTreeMap<String, usize> = BTreeMap::new();
    for (what, bytes) in store.load_state()? {
        match what {
            Touched::Dedup(_) | Touched::Held(_) | Touched::Watermark => dedup += 1,
            Touched::Series { .. } => series += 1,
            Touched::PastOpen { .. } => {}
            Touched::Past { rule, .. } => *past.entry(rule.to_string()).or_default() += 1,
            Touched::Rule { rule, key } => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                let kind = v["kind"].as_str().unwrap_or("?").to_owned();
                let e = per_rule.entry(rule.to_string()).or_insert((0, kind.clone()));
                e.0 += 1;
                if kind == "heartbeat" {
                    let when = |f: &str| {
                        v[f].as_i64().filter(|t| *t != i64::MIN).map(|t| edgewatch_engine::Timestamp(t).to_rfc3339())
                    };
                    let status = if when("missing_since").is_some() { "MISSING" } else { "ok" };
                    devices.push(format!(
                        "  {rule:<16} {key:<24} {status:<8} last seen {}",
                        when("last_seen").unwrap_or_else(|| "never".into())
                    ));
                }
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "rules:");
    for (rule, (n, kind)) in &per_rule {
        let _ = writeln!(out, "  {rule:<24} {kind:<10} {n} keys");
    }
    let _ = writeln!(out, "duplicate-detection entries: {dedup}");
    let _ = writeln!(out, "history series with an open roll-up: {series}");
    for (rule, keys) in &past {
        let _ = writeln!(out, "  rule {rule}: past kept for {keys} keys");
    }
    if !devices.is_empty() {
        let _ = writeln!(out, "heartbeats:");
        for d in &devices {
            let _ = writeln!(out, "{d}");
        }
    }
    let (n, bytes) = store.outbox_depth();
    let _ = writeln!(out, "outbox: {n} events, {bytes} bytes");
    let _ = writeln!(out, "on disk: {} bytes", store.size_on_disk());
    if let Some(t) = store.last_alive() {
        let _ = writeln!(out, "agent last alive: {}", edgewatch_engine::Timestamp(t).to_rfc3339());
    }
    Ok(out)
}

/// Writes `snap` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_snapshot(path: &Path, snap: &Snapshot) -> Result<PathBuf, StoreError> {
    use std::io::Write;
    let err = |e: std::io::Error| StoreError::Snapshot { path: path.display().to_string(), message: e.to_string() };
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(snap)
        .map_err(|e| StoreError::Snapshot { path: path.display().to_string(), message: e.to_string() })?;
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&text).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(path.to_owned())
}

/// Reads a snapshot file.
pub fn read_snapshot(path: &Path) -> Result<Snapshot, StoreError> {
    let err = |m: String| StoreError::Snapshot { path: path.display().to_string(), message: m };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| err(e.to_string()))
}
