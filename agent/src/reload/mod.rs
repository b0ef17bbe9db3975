//! Hot reload: rule files and lookup tables, recompiled file by file, swapped in whole.
//!
//! Each file is compiled on its own and only when its content changed. A file is the unit of
//! failure: one that does not compile, or that declares a rule name an earlier file (in
//! name order) already declares, keeps its previous version running, if it has one, and
//! says where it is broken; the other files' changes still apply. The same loader serves
//! `edgewatch check`, `test` and `replay` ([`load`]), so they judge a directory as the
//! running agent does. A scan returns only the errors no earlier scan returned, so
//! each broken version is logged and counted once, however many reloads it sits through;
//! the status document lists every current error. The new rule set goes to the engine task as one input, so it is
//! swapped in between two events: no event sees half the old and half the new rules, and
//! none is skipped. Triggers: a debounced watch of the rules directory (editors save by
//! writing a temp file and renaming it; a burst of saves is one reload), SIGHUP, and an
//! opt-in MQTT control topic.

mod scan;
mod trigger;

pub use scan::{Against, Scan, ScanError};
pub use trigger::{Trigger, watch};

use crate::rules::{self, RulesDirError};
use edgewatch_engine::{CompileError, Rule, RuleSet, Sandbox, Tables, Timestamp};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// One rule file as last seen.
#[derive(Debug)]
struct FileState {
    /// Hash of the latest version read.
    hash: u64,
    /// The latest version, compiled, or why it does not compile. Kept when a clash with
    /// another file's names holds it back, so it is tried again when the clash goes.
    latest: Result<Vec<Arc<Rule>>, CompileError>,
    /// The rules running from this file: the latest version, or an earlier one that was
    /// running when the latest was refused (nothing if it never ran).
    rules: Vec<Arc<Rule>>,
    /// When `rules` were loaded, and the hash of their version.
    loaded_at: Timestamp,
    loaded_hash: Option<u64>,
    /// Why the latest version is not the one running, if it is not.
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
    /// The errors of the last scan, by identity (a file's content hash, a table set's hash,
    /// a message): only those not among them are new.
    reported: HashSet<String>,
    /// What rules are checked against in the configuration, when they are (the agent, and
    /// `check --config`): a rule that breaks it does not compile.
    against: Option<Against>,
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
            against: None,
        }
    }

    /// Rules must fit this configuration (its sinks, its privacy).
    pub fn against(mut self, against: Against) -> Self {
        self.against = Some(against);
        self
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
        let mut changes = Vec::new();
        self.files.retain(|p, f| {
            let keep = paths.contains(p);
            if !keep {
                changed = true;
                changes.push(serde_json::json!({
                    "file": p.display().to_string(), "old": f.loaded_hash.map(hex), "new": null, "loaded": true,
                }));
            }
            keep
        });
        let mut read_anew: Vec<(PathBuf, Option<u64>)> = Vec::new();
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
            read_anew.push((path.clone(), self.files.get(path).and_then(|f| f.loaded_hash)));
            let latest = self.sandbox.compile_file(&name, &text).and_then(|r| match &self.against {
                Some(against) => fits(&name, r, against),
                None => Ok(r),
            });
            let latest = latest.map(|r| r.into_iter().map(Arc::new).collect());
            match self.files.get_mut(path) {
                Some(f) => {
                    f.hash = hash;
                    f.latest = latest;
                }
                None => {
                    let f =
                        FileState { hash, latest, rules: Vec::new(), loaded_at: now, loaded_hash: None, error: None };
                    self.files.insert(path.clone(), f);
                }
            }
        }
        let rules = self.assemble(now);
        for (path, old) in read_anew {
            if let Some(f) = self.files.get(&path) {
                changes.push(serde_json::json!({
                    "file": path.display().to_string(),
                    "old": old.map(hex),
                    "new": hex(f.hash),
                    "loaded": f.loaded_hash == Some(f.hash),
                    "error": f.error.as_ref().map(ToString::to_string),
                }));
            }
        }
        // Every current error with its identity: a new version of a file is a new error even
        // if the message is the same.
        let mut current: Vec<(String, ScanError)> = Vec::new();
        for (path, f) in &self.files {
            if let Some(e) = &f.error {
                let error = ScanError { message: e.to_string(), previous_kept: f.loaded_hash.is_some(), runs: false };
                current.push((format!("{}#{:016x}", path.display(), f.hash), error));
            }
        }
        // Tables: reloaded whole when any file changed; a table that fails is left out.
        let (tables, table_errors, hash) = self.read_tables();
        for message in table_errors {
            current.push((format!("{message}#{hash:016x}"), ScanError { message, previous_kept: false, runs: false }));
        }
        for (origin, message) in rules.inhibit_problems(&tables) {
            let message = format!("{origin}: {message}");
            current.push((format!("{message}#{hash:016x}"), ScanError { message, previous_kept: false, runs: true }));
        }
        let errors = current.iter().filter(|(id, _)| !self.reported.contains(id)).map(|(_, e)| e.clone()).collect();
        self.reported = current.into_iter().map(|(id, _)| id).collect();
        let tables = if self.tables_hash != Some(hash) {
            changed |= self.tables_hash.is_some();
            if self.tables_hash.is_some() {
                changes.push(serde_json::json!({ "tables": true, "old": self.tables_hash.map(hex), "new": hex(hash) }));
            }
            self.tables_hash = Some(hash);
            Some(tables)
        } else {
            None
        };
        let after: Vec<String> = rules.iter().map(|r| r.name.to_string()).collect();
        let added: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
        let removed: Vec<&String> = before.iter().filter(|n| !after.contains(n)).collect();
        let summary = format!("{} rules; added {added:?}; removed {removed:?}", after.len());
        let status = self.status(now);
        Ok(Scan { rules, tables, changed, errors, summary, status, changes, trigger: None })
    }

    /// The content hash of each rule file's running version, and of the tables: what a
    /// start records in the audit trail.
    pub fn loaded(&self) -> serde_json::Value {
        let files: serde_json::Map<String, serde_json::Value> = self
            .files
            .iter()
            .filter_map(|(p, f)| Some((p.display().to_string(), hex(f.loaded_hash?).into())))
            .collect();
        serde_json::json!({ "files": files, "tables": self.tables_hash.map(hex) })
    }

    /// Puts the rule set together in file order. Each file runs its latest version if it
    /// compiled and declares no name an earlier file runs; otherwise the version it was
    /// running, if that clashes with nothing (else none of it), and the file has an error.
    fn assemble(&mut self, now: Timestamp) -> RuleSet {
        let mut running: Vec<Arc<Rule>> = Vec::new();
        let clash = |running: &[Arc<Rule>], rules: &[Arc<Rule>]| {
            rules.iter().find_map(|r| running.iter().find(|o| o.name == r.name).map(|o| (r.clone(), o.clone())))
        };
        for (path, f) in &mut self.files {
            let refused = match &f.latest {
                Err(e) => Some(e.clone()),
                Ok(latest) => match clash(&running, latest) {
                    None => {
                        if f.loaded_hash != Some(f.hash) {
                            f.loaded_hash = Some(f.hash);
                            f.loaded_at = now;
                        }
                        f.rules = latest.clone();
                        None
                    }
                    Some((dup, first)) => Some(CompileError {
                        file: path.display().to_string(),
                        line: dup.origin.line,
                        col: dup.origin.col,
                        message: format!("rule `{}` is already declared at {}", dup.name, first.origin),
                    }),
                },
            };
            if refused.is_some() && clash(&running, &f.rules).is_some() {
                // What it ran before clashes too (an earlier file took one of its names).
                f.rules.clear();
                f.loaded_hash = None;
            }
            f.error = refused;
            running.extend(f.rules.iter().cloned());
        }
        RuleSet::from_rules(running).0
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
    fn status(&self, now: Timestamp) -> serde_json::Value {
        let mut rules = Vec::new();
        for (path, f) in &self.files {
            for r in &f.rules {
                rules.push(serde_json::json!({
                    "name": &*r.name,
                    "kind": r.kind(),
                    "file": path.display().to_string(),
                    "hash": hex(f.loaded_hash.unwrap_or(f.hash)),
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

/// A content hash as the status document and the audit trail show it.
fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// The rules of a file, unless one does not fit the configuration: then the error at that
/// rule. A rule may name only configured sinks, and its `key` may not read a field that a
/// subscription pseudonymises with a rotation (the key would change every period).
fn fits(file: &str, rules: Vec<Rule>, against: &Against) -> Result<Vec<Rule>, CompileError> {
    for r in &rules {
        let error =
            |message: String| CompileError { file: file.to_owned(), line: r.origin.line, col: r.origin.col, message };
        if let Some(missing) = r.sinks().find(|name| !against.sinks.iter().any(|s| s == name)) {
            let known = if against.sinks.is_empty() {
                "none is configured".to_owned()
            } else {
                format!("configured: {}", against.sinks.join(", "))
            };
            return Err(error(format!(
                "rule `{}`: sink `{}` is not in the configuration's [[sinks]] ({known})",
                r.name, missing
            )));
        }
        let reads = r.key_reads().unwrap_or_default();
        if let Some(field) = against.rotating.iter().find(|f| reads.contains(f.split('.').next_back().unwrap_or(f))) {
            return Err(error(format!(
                "rule `{}`: `key` reads `{field}`, which a subscription's `privacy` pseudonymises with a \
                 rotation; a key must not change every period (pseudonymise it with \"never\", or key on another field)",
                r.name
            )));
        }
    }
    Ok(rules)
}

/// Loads `path` (a rules directory or one file) once, exactly as the running agent does:
/// for `edgewatch check`, `test` and `replay`, so that they judge a directory as the agent
/// would. Tables are read by the caller ([`rules::load_tables`]).
pub fn load(sandbox: Arc<Sandbox>, path: &Path) -> Result<rules::Loaded, RulesDirError> {
    load_checked(sandbox, path, None)
}

/// [`load`], with the rules checked against a configuration when given (`check --config`).
pub fn load_checked(
    sandbox: Arc<Sandbox>,
    path: &Path,
    against: Option<Against>,
) -> Result<rules::Loaded, RulesDirError> {
    let listed = if path.is_file() { vec![path.to_owned()] } else { rules::rule_files(path)? };
    let mut files = RuleFiles::new(path, BTreeMap::new(), sandbox);
    if let Some(against) = against {
        files = files.against(against);
    }
    let scan = files.scan(Timestamp(0))?;
    let mut errors: Vec<CompileError> = files.files.values().filter_map(|f| f.error.clone()).collect();
    if let Some(tables) = &scan.tables {
        for (origin, message) in scan.rules.inhibit_problems(tables) {
            errors.push(CompileError { file: origin.file.to_string(), line: origin.line, col: origin.col, message });
        }
    }
    for p in listed.iter().filter(|p| !files.files.contains_key(*p)) {
        let message = match std::fs::read_to_string(p) {
            Err(e) => format!("cannot read: {e}"),
            Ok(_) => "cannot read it steadily (it changed while being read)".to_owned(),
        };
        errors.push(CompileError { file: p.display().to_string(), line: 0, col: 0, message });
    }
    Ok(rules::Loaded { rules: scan.rules, errors, files: listed.len() })
}

#[cfg(test)]
mod tests;
