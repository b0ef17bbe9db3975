//! What asks for a reload: the debounced watch of the rules directory, SIGHUP, the control
//! topic and the console, each a [`Trigger`] that the audit trail records.

use std::path::Path;

/// Why a reload was asked for (and by whom, where known): recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The rules directory's watch saw a change.
    Files,
    /// SIGHUP (`systemctl reload`), or the embedding program's request.
    Signal,
    /// A message on `<prefix>/control/reload`; `by` from its JSON payload, if it says.
    Control { by: Option<String> },
    /// `POST /api/v1/reload` on the console (with the write token); `by` from its body.
    Console { by: Option<String> },
}

impl Trigger {
    /// The trigger as a word, for the audit trail.
    pub fn word(&self) -> &'static str {
        match self {
            Trigger::Files => "file",
            Trigger::Signal => "signal",
            Trigger::Control { .. } => "control",
            Trigger::Console { .. } => "console",
        }
    }

    /// Who asked, where known.
    pub fn by(&self) -> Option<&str> {
        match self {
            Trigger::Control { by } | Trigger::Console { by } => by.as_deref(),
            _ => None,
        }
    }
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
