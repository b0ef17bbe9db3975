//! Golden tests of rules (`edgewatch test`): each case under `<rules>/tests/<case>/` is a
//! recording (`in.jsonl`) replayed through the rules it names (`case.toml`), its output
//! compared with `out.jsonl`, and a difference shown as a unified diff.

use super::{EVENTS_PREFIX, ReplayError, engine_only, parse, run};
use crate::config::RawEngine;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a golden case may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseConfig {
    /// Names of the rules to run; absent: all.
    rules: Option<Vec<String>>,
    #[serde(default)]
    engine: RawEngine,
}

/// One golden case's outcome.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// `None` when the output matched; else a unified diff (expected -> actual).
    pub diff: Option<String>,
}

/// The golden cases under `<rules>/tests/`, sorted.
pub fn cases(rules: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(rules.join("tests"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("in.jsonl").is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn read(path: &Path) -> Result<String, ReplayError> {
    std::fs::read_to_string(path).map_err(|source| ReplayError::Read { file: path.display().to_string(), source })
}

/// Runs one golden case. With `bless`, writes the actual output as the expected one.
pub fn run_case(rules: &Path, case: &Path, bless: bool) -> Result<CaseResult, ReplayError> {
    let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let config_file = case.join("case.toml");
    let case_config: CaseConfig = if config_file.is_file() {
        toml::from_str(&read(&config_file)?)
            .map_err(|e| ReplayError::Config { file: config_file.display().to_string(), message: e.to_string() })?
    } else {
        CaseConfig::default()
    };
    let config = case_config.engine.to_engine_config(EVENTS_PREFIX);
    let mut engine = engine_only(rules, config, case_config.rules.as_deref())?;
    let input_file = case.join("in.jsonl");
    let recording = parse(&read(&input_file)?, &input_file.display().to_string())?;
    let actual: String = run(&mut engine, &recording, false).iter().map(|v| format!("{v}\n")).collect();
    let expected_file = case.join("out.jsonl");
    if bless {
        std::fs::write(&expected_file, &actual)
            .map_err(|source| ReplayError::Read { file: expected_file.display().to_string(), source })?;
        return Ok(CaseResult { name, diff: None });
    }
    let expected_text = if expected_file.is_file() { read(&expected_file)? } else { String::new() };
    // Compare as JSON values, so formatting and key order in the file do not matter.
    let normalise = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(l).map(|v| v.to_string()).unwrap_or_else(|_| l.to_owned()) + "\n")
            .collect()
    };
    let expected = normalise(&expected_text);
    if expected == actual {
        return Ok(CaseResult { name, diff: None });
    }
    let diff = unified_diff(&expected, &actual, &format!("{} (expected)", expected_file.display()), "actual");
    Ok(CaseResult { name, diff: Some(diff) })
}

/// A unified diff of two texts, line by line, with three lines of context. Myers' algorithm
/// from `similar`, called once with one hook type: its `TextDiff` front end compiles every
/// algorithm for several hook types into the binary (about 0.5 MB, for a test report).
fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    use std::fmt::Write as _;
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    // `Replace` turns a delete next to an insert into one replace: `-` lines before `+` lines.
    let mut hook = similar::algorithms::Replace::new(similar::algorithms::Capture::new());
    let Ok(()) = similar::algorithms::myers::diff(&mut hook, &old, 0..old.len(), &new, 0..new.len());
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    for hunk in hook.into_inner().into_grouped_ops(3) {
        let (Some(first), Some(last)) = (hunk.first(), hunk.last()) else { continue };
        let (o, n) = (first.old_range().start..last.old_range().end, first.new_range().start..last.new_range().end);
        // 1-based starts; an empty side names the line before it (0 at the top).
        let start = |r: &std::ops::Range<usize>| if r.is_empty() { r.start } else { r.start + 1 };
        let _ = writeln!(out, "@@ -{},{} +{},{} @@", start(&o), o.len(), start(&n), n.len());
        for op in &hunk {
            let (tag, o, n) = op.as_tag_tuple();
            let (del, ins) = match tag {
                similar::DiffTag::Equal => {
                    o.for_each(|i| {
                        let _ = writeln!(out, " {}", old[i]);
                    });
                    continue;
                }
                similar::DiffTag::Delete => (o, 0..0),
                similar::DiffTag::Insert => (0..0, n),
                similar::DiffTag::Replace => (o, n),
            };
            del.for_each(|i| {
                let _ = writeln!(out, "-{}", old[i]);
            });
            ins.for_each(|i| {
                let _ = writeln!(out, "+{}", new[i]);
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified_diff;

    #[test]
    fn the_diff_shows_changed_lines_in_hunks_with_context() {
        let old: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line 2\n", "line two\n").replace("line 9\n", "");
        let diff = unified_diff(&old, &new, "expected", "actual");
        // Changes 7 lines apart share a hunk (3 lines of context each side overlap).
        let want = "--- expected\n+++ actual\n@@ -1,10 +1,9 @@\n\
                    \x20line 1\n-line 2\n+line two\n line 3\n line 4\n line 5\n line 6\n line 7\n line 8\n-line 9\n line 10\n";
        assert_eq!(diff, want);
        let far: String = (1..=30).map(|i| format!("l{i}\n")).collect();
        let diff = unified_diff(&far, &far.replace("l2\n", "").replace("l29\n", "x\n"), "a", "b");
        assert_eq!(diff.matches("@@ ").count(), 2, "{diff}");
        assert!(diff.contains("-l2\n") && diff.contains("-l29\n+x\n"), "{diff}");
        assert_eq!(unified_diff("same\n", "same\n", "a", "b"), "--- a\n+++ b\n");
        // A new case with no expected output yet, and a rule that now produces nothing.
        assert_eq!(unified_diff("", "x\ny\n", "a", "b"), "--- a\n+++ b\n@@ -0,0 +1,2 @@\n+x\n+y\n");
        assert_eq!(unified_diff("x\n", "", "a", "b"), "--- a\n+++ b\n@@ -1,1 +0,0 @@\n-x\n");
    }
}
