//! Schemathesis (`schemathesis` on PyPI, 4.x), an API tester nobody here wrote: it reads the
//! console's OpenAPI document, generates requests for every operation (valid ones and ones
//! the document forbids), and checks each response: never a 5xx, a documented status and
//! content type, a body that matches the documented schema, invalid input refused, a
//! missing token refused.
//!
//! The test that uses it skips (saying why) when it is missing, unless
//! `EDGEWATCH_REQUIRE_BROWSER=1` (the console's browser and API-fuzzing tests must run),
//! in which case it fails. `EDGEWATCH_SCHEMATHESIS` names the program (`.ci/run` installs it
//! in a virtual environment); default `schemathesis` on the PATH.

use std::process::{Command, Stdio};

fn program() -> String {
    std::env::var("EDGEWATCH_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned())
}

/// Is it there? `false` means skip; with `EDGEWATCH_REQUIRE_BROWSER=1` it panics.
pub fn available() -> bool {
    let missing = format!("`{} --version` fails (pip install schemathesis)", program());
    crate::peer_available((!crate::runs(&program(), &["--version"])).then_some(missing), "EDGEWATCH_REQUIRE_BROWSER")
}

/// Runs every check on every operation of the document at `base` + `/api/v1/openapi.json`,
/// sending `headers`, with up to `examples` generated requests per operation and phase; its
/// report when anything failed.
pub fn run(base: &str, headers: &[(&str, &str)], examples: u32) -> Result<(), String> {
    let mut cmd = Command::new(program());
    cmd.args(["run", &format!("{base}/api/v1/openapi.json"), "--url", base, "--checks", "all"])
        .args(["--max-examples", &examples.to_string(), "--workers", "1", "--request-timeout", "15"])
        .args(["--seed", "1"])
        // The live stream never ends by itself: the console test reads it.
        .args(["--exclude-path", "/api/v1/stream"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (name, value) in headers {
        cmd.args(["-H", &format!("{name}: {value}")]);
    }
    let out = cmd.output().map_err(|e| format!("{} does not run: {e}", program()))?;
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(()) } else { Err(report) }
}
