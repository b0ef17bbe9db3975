//! Hot reload: rule files and lookup tables, recompiled file by file, swapped in whole.
//!
//! Each file is compiled on its own and only when its content changed. A file that fails
//! keeps its previous version running (and says where it is broken); the other files'
//! changes still apply. The new rule set goes to the engine task as one input, so it is
//! swapped in between two events: no event sees half the old and half the new rules, and
//! none is skipped. Triggers: a debounced watch of the rules directory (editors save by
//! writing a temp file and renaming it; a burst of saves is one reload), SIGHUP, and an
//! opt-in MQTT control topic.

use crate::rules::{self, RulesDirError};
use edgewatch_engine::{CompileError, Rule, RuleSet, Sandbox, Tables, Timestamp};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// One rule file as last seen.
#[derive(Debug)]
struct FileState {
    hash: u64,
    /// When its current rules were loaded.
    loaded_at: Timestamp,
    /// The last version that compiled.
    rules: Vec<Arc<Rule>>,
    /// Why the latest version did not compile, if it did not.
    error: Option<CompileError>,
}

/// The rules directory, file by file.
#[derive(Debug)]
pub struct RuleFiles {
    path: PathBuf,
    extra_tables: BTreeMap<String, PathBuf>,
    sandbox: Arc<Sandbox>,
    files: BTreeMap<PathBuf, FileState>,
    /// Hash of every table file's content, to notice changes.
    tables_hash: Option<u64>,
}

/// What a scan found.
#[derive(Debug)]
pub struct Scan {
    /// Rules from every file's last good version.
    pub rules: RuleSet,
    /// New tables, when they changed (or on the first scan).
    pub tables: Option<Tables>,
    /// Anything changed since the last scan (rules or tables).
    pub changed: bool,
    /// Files whose latest version is not running, with positions; table files that failed.
    pub errors: Vec<String>,
    /// Rules added, changed or removed, by name.
    pub summary: String,
    /// The retained status document.
    pub status: serde_json::Value,
}

impl RuleFiles {
    /// Tracks `path` (a rules directory or one file); nothing is read until [`RuleFiles::scan`].
    pub fn new(path: &Path, extra_tables: BTreeMap<String, PathBuf>, sandbox: Arc<Sandbox>) -> Self {
        RuleFiles { path: path.to_owned(), extra_tables, sandbox, files: BTreeMap::new(), tables_hash: None }
    }

    /// The sandbox rules are compiled in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// Reads the directory, compiles what changed, and assembles the rule set.
    pub fn scan(&mut self, now: Timestamp) -> Result<Scan, RulesDirError> {
        let paths = if self.path.is_file() { vec![self.path.clone()] } else { rules::rule_files(&self.path)? };
        let mut changed = false;
        let before: Vec<String> =
            self.files.values().flat_map(|f| f.rules.iter().map(|r| r.name.to_string())).collect();
        self.files.retain(|p, _| {
            let keep = paths.contains(p);
            changed |= !keep;
            keep
        });
        for path in &paths {
            let name = path.display().to_string();
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    // Vanished between listing and reading (an editor's rename): next scan.
                    tracing::debug!(file = %name, error = %e, "Rule file not readable now.");
                    continue;
                }
            };
            let hash = xxh3_64(text.as_bytes());
            if self.files.get(path).is_some_and(|f| f.hash == hash) {
                continue;
            }
            changed = true;
            match self.sandbox.compile_file(&name, &text) {
                Ok(rules) => {
                    self.files.insert(
                        path.clone(),
                        FileState {
                            hash,
                            loaded_at: now,
                            rules: rules.into_iter().map(Arc::new).collect(),
                            error: None,
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(%error, "Rule file not reloaded; its previous version keeps running.");
                    let entry = self.files.entry(path.clone()).or_insert(FileState {
                        hash,
                        loaded_at: now,
                        rules: Vec::new(),
                        error: None,
                    });
                    entry.hash = hash;
                    entry.error = Some(error);
                }
            }
        }
        // Assemble in file order; a name already taken by an earlier file loses.
        let (rules, dropped) = RuleSet::from_rules(self.files.values().flat_map(|f| f.rules.iter().cloned()));
        let mut errors: Vec<String> =
            self.files.values().filter_map(|f| f.error.as_ref().map(|e| e.to_string())).collect();
        for d in &dropped {
            let first = rules.get(&d.name).map(|r| r.origin.to_string()).unwrap_or_default();
            errors.push(format!("{}: rule `{}` is already declared at {first}; not loaded", d.origin, d.name));
        }
        // Tables: reloaded whole when any file changed.
        let (tables, table_errors, hash) = self.read_tables();
        errors.extend(table_errors);
        let tables = if self.tables_hash != Some(hash) {
            changed |= self.tables_hash.is_some();
            self.tables_hash = Some(hash);
            Some(tables)
        } else {
            None
        };
        let after: Vec<String> = rules.iter().map(|r| r.name.to_string()).collect();
        let added: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
        let removed: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
        let summary = format!("{} rules; added {added:?}; removed {removed:?}", after.len());
        let status = self.status(now, &dropped);
        Ok(Scan { rules, tables, changed, errors, summary, status })
    }

    fn read_tables(&self) -> (Tables, Vec<String>, u64) {
        let (tables, errors) = rules::load_tables(&self.path, &self.extra_tables);
        // Hash the files' contents, in name order.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let dir = if self.path.is_file() {
            self.path.parent().map(|p| p.join("tables"))
        } else {
            Some(self.path.join("tables"))
        };
        let mut files: Vec<PathBuf> = dir
            .and_then(|d| std::fs::read_dir(d).ok())
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.extend(self.extra_tables.values().cloned());
        files.sort();
        for f in files {
            h.update(f.to_string_lossy().as_bytes());
            h.update(&std::fs::read(&f).unwrap_or_default());
        }
        (tables, errors.iter().map(|e| e.to_string()).collect(), h.digest())
    }

    /// Every rule with its file, content hash, load time and current error.
    fn status(&self, now: Timestamp, dropped: &[Arc<Rule>]) -> serde_json::Value {
        let mut rules = Vec::new();
        for (path, f) in &self.files {
            for r in &f.rules {
                if dropped.iter().any(|d| Arc::ptr_eq(d, r)) {
                    continue;
                }
                rules.push(serde_json::json!({
                    "name": &*r.name,
                    "kind": r.kind(),
                    "file": path.display().to_string(),
                    "hash": format!("{:016x}", f.hash),
                    "loaded_at": f.loaded_at.to_rfc3339(),
                    "error": f.error.as_ref().map(|e| e.to_string()),
                }));
            }
        }
        let files: Vec<serde_json::Value> = self
            .files
            .iter()
            .map(|(p, f)| {
                serde_json::json!({
                    "file": p.display().to_string(),
                    "hash": format!("{:016x}", f.hash),
                    "rules": f.rules.len(),
                    "error": f.error.as_ref().map(|e| e.to_string()),
                })
            })
            .collect();
        serde_json::json!({ "updated": now.to_rfc3339(), "rules": rules, "files": files })
    }
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Files,
    Signal,
    Control,
}

/// Watches `dir` (recursively: tables too) and sends a trigger per burst of changes.
pub fn watch(
    dir: &Path,
    tx: tokio::sync::mpsc::Sender<Trigger>,
) -> Result<
    notify_debouncer_full::Debouncer<notify::RecommendedWatcher, notify_debouncer_full::RecommendedCache>,
    notify::Error,
> {
    use notify_debouncer_full::{DebounceEventResult, new_debouncer};
    // Saves that come within 200 ms of each other are one reload.
    let mut debouncer =
        new_debouncer(std::time::Duration::from_millis(200), None, move |result: DebounceEventResult| match result {
            Ok(events) if events.iter().any(|e| !e.kind.is_access()) => {
                let _ = tx.try_send(Trigger::Files);
            }
            Ok(_) => {}
            Err(errors) => tracing::warn!(?errors, "Rules directory watch reported errors."),
        })?;
    let target = if dir.is_file() { dir.parent().unwrap_or(dir) } else { dir };
    debouncer.watch(target, notify::RecursiveMode::Recursive)?;
    Ok(debouncer)
}
