//! `edgewatch state ...`: look at, export and import a stopped agent's state and history.

use anyhow::Context;
use clap::Subcommand;
use edgewatch::Config;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Keys tracked per rule, devices and their heartbeat status, outbox depth, history.
    Inspect,
    /// Write everything (state, outbox and history) to a JSON file.
    Export { file: PathBuf },
    /// Load a file written by `export` into the state (for a new gateway, or a restore).
    Import {
        file: PathBuf,
        /// Leave the file's history out (the state and outbox only).
        #[arg(long)]
        no_history: bool,
    },
}

/// `edgewatch state ...`.
pub async fn state_command(action: StateAction, config: Config) -> anyhow::Result<()> {
    use edgewatch::store::{self, Store, StoreError};
    let dir = config.state_dir.display();
    let snapshot = config.state_dir.join("snapshot.json");
    let history_dir = edgewatch::history::dir_in(&config.state_dir);
    let open = || match Store::open(&config.state_dir, config.state.cache_bytes, config.state.max_outbox_bytes) {
        Ok(s) => Ok(s),
        // Says itself that the agent may be running.
        Err(e @ StoreError::Locked { .. }) => Err(anyhow::Error::new(e)),
        Err(e @ StoreError::Damaged { .. }) => Err(anyhow::Error::new(e).context(format!(
            "the state in {dir} is damaged; when the agent starts, it moves the database aside and restores {}",
            snapshot.display()
        ))),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot open the state in {dir}"))),
    };
    let now = || edgewatch_engine::Timestamp::from_system_time(std::time::SystemTime::now()).millis();
    match action {
        StateAction::Inspect => {
            let s = open()?;
            let report = store::inspect(&s)?;
            print!("{report}");
            let (log, _) = edgewatch::history::HistoryLog::open(&history_dir, config.history)?;
            let u = log.usage();
            let day = |t: Option<i64>| t.map_or("-".to_owned(), |t| edgewatch_engine::Timestamp(t).to_rfc3339());
            println!(
                "history: {} bytes in {} files (max {}), fine since {}, coarse since {}",
                u.bytes,
                u.files,
                config.history.max_bytes,
                day(u.oldest_fine),
                day(u.oldest_coarse)
            );
        }
        StateAction::Export { file } => {
            let s = open()?;
            let mut snap = s.snapshot(now())?;
            // History goes with an export (never with the periodic snapshot, which must not
            // grow with it): the history log's own lines, one JSON value each.
            let mut lines = Vec::new();
            edgewatch::history::export(&history_dir, &mut lines)?;
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                snap.history.push(serde_json::from_slice(line).context("history export line")?);
            }
            store::write_snapshot(&file, &snap)?;
            let what = serde_json::json!({
                "file": file.display().to_string(), "state_entries": snap.state.len(),
                "outbox_events": snap.outbox.len(), "history_rollups": snap.history.len(),
            });
            record(&config, now(), "state_export", what)?;
            println!(
                "exported {} state entries, {} outbox events and {} history roll-ups to {}",
                snap.state.len(),
                snap.outbox.len(),
                snap.history.len(),
                file.display()
            );
        }
        StateAction::Import { file, no_history } => {
            let snap = store::read_snapshot(&file)?;
            let s = open()?;
            s.restore(&snap).await?;
            let mut history = 0;
            if !no_history && !snap.history.is_empty() {
                let mut text = String::new();
                for line in &snap.history {
                    text.push_str(&line.to_string());
                    text.push('\n');
                }
                history = edgewatch::history::import(&history_dir, config.history, text.as_bytes())?;
            }
            println!(
                "imported {} state entries, {} outbox events and {history} history roll-ups from {}{}",
                snap.state.len(),
                snap.outbox.len(),
                file.display(),
                if no_history && !snap.history.is_empty() { " (its history left out)" } else { "" }
            );
            let what = serde_json::json!({
                "file": file.display().to_string(), "state_entries": snap.state.len(),
                "outbox_events": snap.outbox.len(), "history_rollups": history, "history_left_out": no_history,
            });
            record(&config, now(), "state_import", what)?;
            // Protected from now on, not only from the agent's first snapshot.
            let written = s.write_snapshot_file(&s.snapshot(now())?)?;
            println!("snapshot written to {}", written.display());
        }
    }
    Ok(())
}

/// Records what a command did to the state in the audit trail (sent upstream at the agent's
/// next start).
fn record(config: &Config, now_ms: i64, kind: &str, data: serde_json::Value) -> anyhow::Result<()> {
    let dir = edgewatch::audit::dir_in(&config.state_dir);
    let (mut log, _) = edgewatch::audit::AuditLog::open(&dir, config.audit)?;
    let entry = log.append(now_ms, kind, data)?;
    println!("recorded in the audit trail as entry {}", entry.seq);
    Ok(())
}
