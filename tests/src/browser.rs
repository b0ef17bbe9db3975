//! Debian's headless Chromium, driven by Playwright (`playwright-core` from npm, in
//! `tests/browser/`), as the console's user: the script `tests/browser/console.mjs` says what
//! a person would see, and fails saying what was not seen.
//!
//! The tests that use it skip (saying why) when Node.js, Chromium or the npm package is
//! missing, unless `EDGEWATCH_REQUIRE_BROWSER=1` (set by `.ci/run`, which installs them),
//! in which case they fail. `EDGEWATCH_CHROMIUM` names the browser; default `/usr/bin/chromium`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `tests/browser`, where the script and its `node_modules` are.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn chromium() -> String {
    std::env::var("EDGEWATCH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// Is everything there? `false` means skip; with `EDGEWATCH_REQUIRE_BROWSER=1` it panics.
pub fn available() -> bool {
    let missing = if !crate::runs("node", &["--version"]) {
        Some("Node.js is missing (apt install nodejs)".to_owned())
    } else if !std::path::Path::new(&chromium()).exists() {
        Some(format!("Chromium is missing at {} (apt install chromium)", chromium()))
    } else if !dir().join("node_modules/playwright-core").exists() {
        Some(format!("playwright-core is missing (npm ci --prefix {})", dir().display()))
    } else {
        None
    };
    crate::peer_available(missing, "EDGEWATCH_REQUIRE_BROWSER")
}

/// Runs `script` (in `tests/browser`) with `env`: the steps that passed, or the report of the
/// one that failed.
pub fn run(script: &str, env: &[(&str, String)]) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new("node");
    cmd.arg(dir().join(script)).current_dir(dir()).env("CHROMIUM", chromium()).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| format!("node does not run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout.lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    match report {
        Some(r) if out.status.success() => Ok(r),
        r => Err(format!("{r:?}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))),
    }
}
