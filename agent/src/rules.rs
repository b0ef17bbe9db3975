//! Rule files on disk -> a compiled rule set.
//!
//! Every `*.rhai` file directly in the rules directory is loaded, in file-name order. A file
//! that fails to compile is left out and reported with `file:line:col`; the others load.

use edgewatch_engine::{CompileError, RuleSet, Sandbox};
use std::path::{Path, PathBuf};

/// The rules directory could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the rules directory {dir}: {source}")]
pub struct RulesDirError {
    pub dir: PathBuf,
    pub source: std::io::Error,
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
    let err = |source| RulesDirError { dir: dir.to_owned(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Loads and compiles every rule file in `dir` (or the single file `dir` names).
pub fn load(sandbox: &Sandbox, path: &Path) -> Result<Loaded, RulesDirError> {
    let files = if path.is_file() { vec![path.to_owned()] } else { rule_files(path)? };
    let mut sources: Vec<(String, String)> = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for file in &files {
        let name = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => sources.push((name, text)),
            Err(e) => errors.push(CompileError { file: name, line: 0, col: 0, message: format!("cannot read: {e}") }),
        }
    }
    let (rules, mut compile_errors) = RuleSet::compile(sandbox, sources.iter().map(|(n, s)| (n.as_str(), s.as_str())));
    errors.append(&mut compile_errors);
    Ok(Loaded { rules, errors, files: files.len() })
}
