//! Rule files and lookup tables on disk -> a compiled rule set and tables.
//!
//! Every `*.rhai` file directly in the rules directory is loaded, in file-name order, by
//! [`crate::reload`]: one loader for the agent and the tools. A file that fails to compile
//! is left out and reported with `file:line:col`; the others load.
//! Lookup tables are the `*.csv` and `*.toml` files of `<rules dir>/tables/` (named by file
//! stem) plus those the configuration names.

use edgewatch_engine::{CompileError, RuleSet, Table, Tables};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A lookup table that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TableFileError {
    pub path: String,
    pub message: String,
}

/// Loads the tables of `<rules dir>/tables/` and `extra` (name -> file). Every table that
/// fails is reported; the others load.
pub fn load_tables(rules_dir: &Path, extra: &BTreeMap<String, PathBuf>) -> (Tables, Vec<TableFileError>) {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    let dir =
        if rules_dir.is_file() { rules_dir.parent().map(|p| p.join("tables")) } else { Some(rules_dir.join("tables")) };
    if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
        for p in entries.filter_map(Result::ok).map(|e| e.path()) {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if let (true, Some(stem)) = (matches!(ext, "csv" | "toml"), p.file_stem().and_then(|s| s.to_str())) {
                files.insert(stem.to_owned(), p.clone());
            }
        }
    }
    files.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut tables = Tables::new();
    let mut errors = Vec::new();
    for (name, path) in files {
        let shown = path.display().to_string();
        let parsed =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read: {e}")).and_then(|text| {
                match path.extension().and_then(|e| e.to_str()) {
                    Some("toml") => Table::from_toml(&name, &text).map_err(|e| e.to_string()),
                    _ => Table::from_csv(&name, &text).map_err(|e| e.to_string()),
                }
            });
        match parsed {
            Ok(t) => {
                tables.insert(name, Arc::new(t));
            }
            Err(message) => errors.push(TableFileError { path: shown, message }),
        }
    }
    (tables, errors)
}

/// The rules directory could not be read at all. The I/O error is part of the message, not
/// a separate `source`, so a printed chain does not say it twice.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the rules directory {dir}: {error}")]
pub struct RulesDirError {
    pub dir: PathBuf,
    pub error: std::io::Error,
}

/// The result of loading a directory.
#[derive(Debug)]
pub struct Loaded {
    pub rules: RuleSet,
    /// Files that did not compile (or could not be read), with positions.
    pub errors: Vec<CompileError>,
    /// How many rule files were found.
    pub files: usize,
}

/// The `.rhai` files in `dir`, sorted by name.
pub fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, RulesDirError> {
    let err = |error| RulesDirError { dir: dir.to_owned(), error };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}
