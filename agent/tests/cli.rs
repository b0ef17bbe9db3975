//! The `edgewatch` binary as a user runs it: exit codes and messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn edgewatch(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("edgewatch runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn an_unknown_config_key_exits_2_and_names_the_key_and_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("edgewatch.toml");
    std::fs::write(&file, "[agent]\nid = \"x\"\n[source]\nurll = \"mqtt://x\"\n[[subscriptions]]\ntopic = \"a\"\n")
        .expect("write");
    let out = edgewatch(&["run", "--config", file.to_str().expect("utf-8 path")], dir.path());
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("`source.urll`") && err.contains("edgewatch.toml"), "{err}");
}

#[test]
fn a_missing_config_file_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = edgewatch(&["run", "--config", "nope.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope.toml"));
}

#[test]
fn a_bad_environment_override_exits_2_and_names_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(["run", "--config"])
        .arg(repo().join("config/edgewatch.toml"))
        .env("EDGEWATCH_SOURCE__PROTOCOL", "7")
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("EDGEWATCH_SOURCE__PROTOCOL") && err.contains("`source.protocol`"), "{err}");
}

#[test]
fn every_example_config_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("config")).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = edgewatch::Config::load(&path) {
                panic!("{e}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 2, "found {seen} example configs");
}

#[test]
fn check_accepts_the_shipped_rules() {
    let out = edgewatch(&["check", "rules"], &repo());
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("0 error(s)"));
}

#[test]
fn check_reports_a_broken_rule_with_file_line_col_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("good.rhai"), "rule(\"ok\", #{ on: \"a/b\" });\n").expect("write");
    std::fs::write(
        dir.path().join("bad.rhai"),
        "// comment\nrule(\"x\", #{\n  on: \"a\",\n  when: |e| e.value >> ,\n});\n",
    )
    .expect("write");
    let out = edgewatch(&["check", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("./bad.rhai:4:")), "{stdout}");
    assert!(stdout.contains("2 file(s), 1 rule(s), 1 error(s)"), "{stdout}");
}

#[test]
fn the_demo_prints_events_and_a_summary_and_exits_0() {
    // From an empty directory: the built-in rules and the embedded broker are enough.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = edgewatch(&["demo", "--duration", "4s", "--devices", "5"], dir.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.lines().any(|l| l.contains("overheat") && l.contains("t-003") && l.contains("celsius")), "{stdout}");
    let summary = stdout.lines().find(|l| l.starts_with("summary:")).unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert!(summary.contains("events received upstream"), "{summary}");
}
