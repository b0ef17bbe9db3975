//! Hot reload: rule files and lookup tables, recompiled file by file, swapped in whole.
//!
//! Each file is compiled on its own and only when its content changed. A file that fails
//! keeps its previous version running, if it has one, and says where it is broken; the other
//! files' changes still apply. A scan returns only the errors no earlier scan returned, so
//! each broken version is logged and counted once, however many reloads it sits through;
//! the status document lists every current error. The new rule set goes to the engine task as one input, so it is
//! swapped in between two events: no event sees half the old and half the new rules, and
//! none is skipped. Triggers: a debounced watch of the rules directory (editors save by
//! writing a temp file and renaming it; a burst of saves is one reload), SIGHUP, and an
//! opt-in MQTT control topic.

use crate::rules::{self, RulesDirError};
use edgewatch_engine::{CompileError, Rule, RuleSet, Sandbox, Tables, Timestamp};
use std::collections::{BTreeMap, HashSet};
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
    /// Some version compiled: when the latest does not, `rules` are that version's.
    compiled_once: bool,
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
    /// The errors of the last scan, by identity (a file's content hash, a table set's hash,
    /// a message): only those not among them are new.
    reported: HashSet<String>,
}

/// A problem a scan found for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// `file:line:col: message`, a table's error, or a rule name declared twice.
    pub message: String,
    /// The file's previous version keeps running; otherwise nothing of it is loaded.
    pub previous_kept: bool,
}

impl ScanError {
    /// Logs it: what is wrong and what runs instead.
    pub fn log(&self) {
        let error = &self.message;
        if self.previous_kept {
            tracing::error!(%error, "Not reloaded; the previous version keeps running.");
        } else {
            tracing::error!(%error, "Not loaded (no previous version).");
        }
    }
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
    /// Errors this scan found that no earlier scan returned: files whose latest version is
    /// not running (with positions), table files that failed, rule names declared twice.
    pub errors: Vec<ScanError>,
    /// Rules added, changed or removed, by name.
    pub summary: String,
    /// The retained status document.
    pub status: serde_json::Value,
}

impl RuleFiles {
    /// Tracks `path` (a rules directory or one file); nothing is read until [`RuleFiles::scan`].
    pub fn new(path: &Path, extra_tables: BTreeMap<String, PathBuf>, sandbox: Arc<Sandbox>) -> Self {
        RuleFiles {
            path: path.to_owned(),
            extra_tables,
            sandbox,
            files: BTreeMap::new(),
            tables_hash: None,
            reported: HashSet::new(),
        }
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
                            compiled_once: true,
                        },
                    );
                }
                Err(error) => {
                    let entry = self.files.entry(path.clone()).or_insert(FileState {
                        hash,
                        loaded_at: now,
                        rules: Vec::new(),
                        error: None,
                        compiled_once: false,
                    });
                    entry.hash = hash;
                    entry.error = Some(error);
                }
            }
        }
        // Assemble in file order; a name already taken by an earlier file loses.
        let (rules, dropped) = RuleSet::from_rules(self.files.values().flat_map(|f| f.rules.iter().cloned()));
        // Every current error with its identity: a new version of a file is a new error even
        // if the message is the same.
        let mut current: Vec<(String, ScanError)> = Vec::new();
        for (path, f) in &self.files {
            if let Some(e) = &f.error {
                let error = ScanError { message: e.to_string(), previous_kept: f.compiled_once };
                current.push((format!("{}#{:016x}", path.display(), f.hash), error));
            }
        }
        for d in &dropped {
            let first = rules.get(&d.name).map(|r| r.origin.to_string()).unwrap_or_default();
            let message = format!("{}: rule `{}` is already declared at {first}; not loaded", d.origin, d.name);
            current.push((message.clone(), ScanError { message, previous_kept: false }));
        }
        // Tables: reloaded whole when any file changed; a table that fails is left out.
        let (tables, table_errors, hash) = self.read_tables();
        for message in table_errors {
            current.push((format!("{message}#{hash:016x}"), ScanError { message, previous_kept: false }));
        }
        let errors = current.iter().filter(|(id, _)| !self.reported.contains(id)).map(|(_, e)| e.clone()).collect();
        self.reported = current.into_iter().map(|(id, _)| id).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use edgewatch_engine::Limits;

    const GOOD: &str = r#"rule("a", #{ on: "sensors/#", when: |e| e.value > 1 });"#;

    fn files(dir: &Path) -> RuleFiles {
        RuleFiles::new(dir, BTreeMap::new(), Arc::new(Sandbox::new(Limits::default())))
    }

    fn new_errors(files: &mut RuleFiles) -> Vec<(String, bool)> {
        let scan = files.scan(Timestamp(0)).expect("the directory is readable");
        scan.errors.iter().map(|e| (e.message.clone(), e.previous_kept)).collect()
    }

    /// Issue 14: every reload reported (logged and counted) again the errors of files that
    /// were broken but unchanged, and said "previous version keeps running" of new files
    /// that never had one. Each distinct broken content is reported once.
    #[test]
    fn each_broken_version_is_reported_once_saying_whether_a_previous_version_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("a.rhai"), GOOD).expect("write");
        let mut files = files(dir.path());
        assert_eq!(new_errors(&mut files), []);

        // A new file, broken: not loaded, no previous version. Reported once.
        std::fs::write(path("b.rhai"), "rule(\"b\", #{ on: ").expect("write");
        let errors = new_errors(&mut files);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].0.contains("b.rhai:"), "{errors:?}");
        assert!(!errors[0].1, "b never compiled: no previous version");
        assert_eq!(new_errors(&mut files), [], "unchanged: not reported again");

        // A good file broken: its previous version keeps running. b is not reported again.
        std::fs::write(path("a.rhai"), "rule(\"a\", #{ on: 7 ").expect("write");
        let errors = new_errors(&mut files);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].0.contains("a.rhai:") && errors[0].1, "{errors:?}");
        assert_eq!(new_errors(&mut files), []);

        // Another broken version of b is a new error, still with nothing to fall back on.
        std::fs::write(path("b.rhai"), "rule(\"b\", #{ on: \"x/#\", when: |e| e. });").expect("write");
        let errors = new_errors(&mut files);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].0.contains("b.rhai:") && !errors[0].1, "{errors:?}");

        // Errors outside the rule files (a broken table, a duplicate name) are also reported once.
        std::fs::create_dir(path("tables")).expect("mkdir");
        std::fs::write(path("tables/devices.csv"), "device,a\nx\n\"").expect("write");
        std::fs::write(path("c.rhai"), GOOD).expect("write");
        let errors = new_errors(&mut files);
        assert_eq!(errors.len(), 2, "the table and the duplicate `a`: {errors:?}");
        assert_eq!(new_errors(&mut files), []);

        // The status still shows every current error.
        let scan = files.scan(Timestamp(0)).expect("readable");
        let status = scan.status.to_string();
        assert!(status.contains("a.rhai:") && status.contains("b.rhai:"), "{status}");
    }
}
