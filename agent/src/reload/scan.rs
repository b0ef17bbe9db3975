//! What a scan of the rule files is checked against, and what it returns.

use super::trigger::Trigger;
use edgewatch_engine::{RuleSet, Tables};

/// What of the configuration a rule must fit.
#[derive(Debug, Clone, Default)]
pub struct Against {
    /// The configured sinks' names: a rule may name only these in `notify` or `act`.
    pub sinks: Vec<String>,
    /// Fields pseudonymised with a rotation: a rule's `key` may not read them.
    pub rotating: Vec<String>,
}

impl Against {
    pub fn config(config: &crate::config::Config) -> Against {
        Against { sinks: config.sinks.iter().map(|s| s.name.clone()).collect(), rotating: config.rotating_fields() }
    }
}

/// A problem a scan found for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// `file:line:col: message`, a table's error, or a rule name declared twice.
    pub message: String,
    /// The file's previous version keeps running; otherwise nothing of it is loaded.
    pub previous_kept: bool,
    /// A problem between rules (an `inhibit` that cannot work): the rule runs regardless.
    pub runs: bool,
}

impl ScanError {
    /// Logs it: what is wrong and what runs instead.
    pub fn log(&self) {
        let error = &self.message;
        if self.runs {
            tracing::warn!(%error, "Rule loaded with a problem.");
        } else if self.previous_kept {
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
    /// What changed, file by file, for the audit trail: each file read in a new version (its
    /// loaded content hash before, the new one, whether it now runs, and its error), each
    /// removed file, and the tables' hash. Empty when nothing changed.
    pub changes: Vec<serde_json::Value>,
    /// Why the scan ran: set by whoever asked for it (the reloader), `None` at a start.
    pub trigger: Option<Trigger>,
}
