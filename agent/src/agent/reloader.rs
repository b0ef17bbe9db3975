//! Rule reloads: rescans the rules directory on each trigger (a file changed, a message on
//! the control topic, a request from outside: SIGHUP in the binary) and hands the result to
//! the engine loop, which swaps it in between two events. The scan (compiling) runs off the
//! runtime's threads; a broken file keeps its previous version (see `reload`).

use super::step::Input;
use crate::config::Config;
use crate::reload::{self, RuleFiles, Trigger};
use edgewatch_engine::Timestamp;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where reload requests come from.
pub(super) struct Triggers {
    /// The file watcher's and the control topic's (this sender is the watcher's).
    pub internal: (mpsc::Sender<Trigger>, mpsc::Receiver<Trigger>),
    /// The caller's ([`crate::agent::Agent::run`]); a closed one only ends those requests.
    pub external: mpsc::Receiver<Trigger>,
}

/// Runs until `stop`.
pub(super) async fn run(
    files: RuleFiles,
    triggers: Triggers,
    inputs: mpsc::Sender<Input>,
    config: Arc<Config>,
    stop: CancellationToken,
) {
    let Triggers { internal: (watch_tx, mut internal), external } = triggers;
    // Kept alive for as long as the task runs.
    let _watcher = if config.watch_rules {
        match reload::watch(&config.rules_dir, watch_tx) {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(dir = %config.rules_dir.display(), %error, "Cannot watch the rules directory; reload with SIGHUP.");
                None
            }
        }
    } else {
        None
    };
    let mut files = Some(files);
    let mut external = Some(external);
    loop {
        let requested = async {
            match external.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let trigger = tokio::select! {
            () = stop.cancelled() => break,
            t = internal.recv() => match t {
                Some(t) => t,
                None => break,
            },
            t = requested => match t {
                Some(t) => t,
                None => {
                    // Whoever asked for reloads is gone; the other triggers still work.
                    external = None;
                    continue;
                }
            },
        };
        // Requests that queued up meanwhile are served by this one scan.
        while internal.try_recv().is_ok() {}
        let Some(mut f) = files.take() else { break };
        let scanned = tokio::task::spawn_blocking(move || {
            let scan = f.scan(Timestamp::from_system_time(SystemTime::now()));
            (f, scan)
        })
        .await;
        let Ok((f, scan)) = scanned else { break };
        files = Some(f);
        match scan {
            Ok(mut scan) => {
                tracing::debug!(?trigger, changed = scan.changed, "Rules rescanned.");
                scan.trigger = Some(trigger);
                if inputs.send(Input::Reload(Box::new(scan))).await.is_err() {
                    break;
                }
            }
            Err(error) => tracing::error!(%error, "Rules not reloaded."),
        }
    }
}
