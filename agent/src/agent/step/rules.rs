//! Rules changing under the running loop: a reload swapped in between two inputs, and the
//! pasts it leaves empty seeded from history; what the engine loop reads from the rules' status.

use super::{Scan, Sink, Step};
use crate::agent::reports::{self, wall_clock};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

impl Step {
    /// Swaps in the rules a rescan built (if they changed) and reports the rules' status.
    pub(super) fn reload(&mut self, scan: Scan) {
        let Scan { rules, tables, changed, errors, summary, status, changes, trigger } = scan;
        let disabled = |engine: &edgewatch_engine::Engine| -> Vec<String> {
            engine.stats().rules.into_iter().filter(|r| r.3).map(|r| r.0).collect()
        };
        let was_disabled = disabled(&self.engine);
        if changed {
            self.stats.detail.rules_loaded.store(rules.len() as u64, Relaxed);
            self.engine.reload(rules, wall_clock());
            if let Some(tables) = tables {
                self.engine.set_tables(tables);
            }
            self.stats.reloads.fetch_add(1, Relaxed);
            tracing::info!(%summary, "Rules reloaded.");
            self.seed_past();
        }
        // Rules that their failures had disabled and that this reload runs again.
        let still = disabled(&self.engine);
        let reenabled: Vec<&String> = was_disabled.iter().filter(|r| !still.contains(r)).collect();
        // Recorded: every change, every new error, and every explicit request (a file watch
        // that found nothing new is not one).
        if let Some(trigger) = trigger.filter(|t| changed || !errors.is_empty() || *t != crate::reload::Trigger::Files)
        {
            let errors: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
            self.audit(
                "reload",
                serde_json::json!({
                    "trigger": trigger.word(), "by": trigger.by(), "changed": changed, "changes": changes,
                    "errors": errors, "summary": summary, "reenabled": reenabled,
                }),
            );
        }
        // New errors only: a broken file is reported once, not at every reload.
        for error in &errors {
            self.stats.reload_errors.fetch_add(1, Relaxed);
            error.log();
        }
        self.rule_versions = rule_versions(&status);
        self.heartbeat_rules = heartbeat_rules(&status);
        self.rules_status = status;
        if let Some(feed) = self.feed.as_mut().filter(|f| f.watched()) {
            feed.tell("rules", &serde_json::json!({ "changed": changed, "errors": errors.len() }).to_string());
        }
        self.queue(reports::status_entry(&self.config, &self.rules_status, &self.stats));
        // Committed promptly even with no message in the batch.
        self.pending.nudge();
    }

    /// Fills rules' pasts that a load or reload left empty from the history on disk (durable
    /// only), and persists what that changed with the next batch. Reads the files in this
    /// loop: it happens only when a rule gains a past, and a reload is rare.
    pub(super) fn seed_past(&mut self) {
        if !matches!(self.sink, Sink::Disk { .. }) || self.engine.past_wanted().is_empty() {
            return;
        }
        let dir = crate::history::dir_in(&self.config.state_dir);
        self.outputs.clear();
        crate::history::seed(&mut self.engine, &dir, &self.config.history, wall_clock(), &mut self.outputs);
        self.collect();
        self.pending.nudge();
    }
}

/// Each rule's version, `<file>#<hash>`, from the rules' status document.
pub(super) fn rule_versions(status: &serde_json::Value) -> std::collections::HashMap<Arc<str>, Arc<str>> {
    let rules = status["rules"].as_array().map(Vec::as_slice).unwrap_or_default();
    rules
        .iter()
        .filter_map(|r| {
            let version = format!("{}#{}", r["file"].as_str()?, r["hash"].as_str()?);
            Some((Arc::from(r["name"].as_str()?), Arc::from(version)))
        })
        .collect()
}

/// The heartbeat rules' names, from the rules' status document.
pub(super) fn heartbeat_rules(status: &serde_json::Value) -> std::collections::HashSet<Arc<str>> {
    let rules = status["rules"].as_array().map(Vec::as_slice).unwrap_or_default();
    rules.iter().filter(|r| r["kind"] == "heartbeat").filter_map(|r| Some(Arc::from(r["name"].as_str()?))).collect()
}
