//! The `firmware-sim` binary: `--seed` makes dry runs repeatable byte for byte, and flags
//! are checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_firmware-sim"));
    c.env("RUST_LOG", "warn").env("RUST_BACKTRACE", "0");
    c
}

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/scenarios").join(name)
}

fn dry_run(dir: &Path, tag: &str, seed: &str) -> (Output, Vec<u8>, Vec<u8>) {
    let record = dir.join(format!("{tag}-rec.jsonl"));
    let truth = dir.join(format!("{tag}-truth.jsonl"));
    let out = bin()
        .arg("--scenario")
        .arg(scenario("accuracy.toml"))
        .args(["--dry-run", "--seed", seed, "--record"])
        .arg(&record)
        .arg("--truth")
        .arg(&truth)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (out, std::fs::read(record).expect("record written"), std::fs::read(truth).expect("truth written"))
}

#[test]
fn same_seed_same_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_a, rec_a, truth_a) = dry_run(dir.path(), "a", "7");
    let (_, rec_b, truth_b) = dry_run(dir.path(), "b", "7");
    let (_, rec_c, truth_c) = dry_run(dir.path(), "c", "8");
    assert_eq!(out_a.stdout, rec_a, "--dry-run prints the recording");
    assert_eq!((&rec_a, &truth_a), (&rec_b, &truth_b));
    assert_ne!(rec_a, rec_c);
    assert_eq!(truth_a, truth_c, "faults are scheduled, not random");
    assert_eq!(truth_a.iter().filter(|&&b| b == b'\n').count(), 8);
}

#[test]
fn fleet_flags_still_work_without_a_scenario() {
    let out =
        bin().args(["--devices", "3", "--duration", "2s", "--dry-run", "--overheat", "1"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    // 3 devices × 2 readings; heartbeats every 5 s, staggered: t-000 at 0 s, t-001 at 1.67 s
    // (t-002's is at 3.33 s, after the end).
    assert_eq!(text.lines().count(), 3 * 2 + 2);
    assert!(text.starts_with(r#"{"t":1732170000000,"topic":"sensors/t-000/temperature","payload":{"device":"t-000""#));
}

#[test]
fn bad_flags_and_files_are_refused() {
    let out = bin().arg("--scenario").arg(scenario("demo.toml")).args(["--devices", "3"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "a scenario and fleet flags conflict");
    let out = bin().args(["--speed", "0"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[groups]]\nname = \"t\"\ncount = 2\nreading_interval = \"0s\"\n").expect("writes");
    let out = bin().arg("--scenario").arg(&bad).arg("--dry-run").output().expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("groups[0].reading_interval"), "{err}");
    let out = bin().args(["--devices", "3", "--dry-run"]).output().expect("runs");
    assert!(!out.status.success(), "a dry run needs an end");
}
