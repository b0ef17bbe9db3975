//! The CloudEvents Python SDK (`cloudevents` on PyPI, 2.x), an implementation nobody here
//! wrote, as a strict reader of the agent's events: its `cloudevents.core` refuses an event
//! whose required attributes are missing or mistyped, or whose extension attribute names
//! are not lowercase letters and digits.
//!
//! The tests that use it skip (saying why) when Python or the package is missing, unless
//! `EDGEWATCH_REQUIRE_CLOUDEVENTS=1`, in which case they fail. `EDGEWATCH_PYTHON` names the
//! interpreter (`.ci/run` installs the package in a virtual environment); default `python3`.

use std::io::Write;
use std::process::{Command, Stdio};

/// Reads each JSON line of stdin with the SDK; prints, per event, its attributes as the SDK
/// sees them (extensions included), or the SDK's error.
const READER: &str = r#"
import json, sys
from cloudevents.core.formats.json import JSONFormat
fmt = JSONFormat()
for line in sys.stdin:
    try:
        ev = fmt.read(None, line)
        attrs = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in ev.get_attributes().items()}
        print(json.dumps({"ok": attrs}))
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
"#;

fn python() -> String {
    std::env::var("EDGEWATCH_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Is the SDK there? `false` means skip; with `EDGEWATCH_REQUIRE_CLOUDEVENTS=1` it panics.
pub fn available() -> bool {
    let ok = crate::runs(&python(), &["-c", "import cloudevents.core.formats.json"]);
    let missing = format!("`{} -c 'import cloudevents.core'` fails (pip install cloudevents)", python());
    crate::peer_available((!ok).then_some(missing), "EDGEWATCH_REQUIRE_CLOUDEVENTS")
}

/// Each event (structured JSON) as the SDK read it: `Ok(attributes)` or `Err(its error)`.
pub fn read(events: &[Vec<u8>]) -> Vec<Result<serde_json::Value, String>> {
    let mut child = Command::new(python())
        .args(["-c", READER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut stdin = child.stdin.take().expect("stdin");
    for e in events {
        let line: serde_json::Value = serde_json::from_slice(e).expect("an event is JSON");
        writeln!(stdin, "{line}").expect("writes");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("python ends");
    assert!(out.status.success(), "the SDK reader failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("the reader prints JSON");
            match v.get("ok") {
                Some(attrs) => Ok(attrs.clone()),
                None => Err(v["error"].as_str().unwrap_or("?").to_owned()),
            }
        })
        .collect()
}
