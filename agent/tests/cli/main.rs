//! The `edgewatch` binary as a user runs it: exit codes and messages.

mod console;

use edgewatch_e2e::{AgentToml, TomlValue};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

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
fn a_bad_schema_exits_2_and_names_the_key_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("edgewatch.toml");
    let base = "[agent]\nid = \"x\"\n[source]\nurl = \"mqtt://127.0.0.1:1\"\n[[subscriptions]]\ntopic = \"a/#\"\n";
    for (extra, path) in [
        ("schema = \"nope\"\n", "`subscriptions[0].schema`"),
        (
            "schema = \"s\"\n[schemas.s.fields]\nt = { type = \"number\", min = 9, max = 1 }\n",
            "`schemas.s.fields.t.min`",
        ),
        ("schema = \"s\"\n[schemas.s.fields]\nt = { type = \"numbr\" }\n", "`schemas.s.fields.t.type`"),
    ] {
        std::fs::write(&file, format!("{base}{extra}")).expect("write");
        let out = edgewatch(&["run", "--config", file.to_str().expect("utf-8 path")], dir.path());
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(path), "{extra}: {}", text(&out.stderr));
    }
}

/// Issue 20, privacy: a field that keys device state cannot be pseudonymised with a
/// rotation, in the configuration (exit 2, naming the key) or in a rule's `key`
/// (`check --config` refuses the rule at its position); "never" is fine in both.
#[test]
fn a_rotating_pseudonym_that_would_key_state_is_refused_by_the_config_and_by_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("privacy.key"), "0123456789abcdef0123456789abcdef").expect("key");
    let config = dir.path().join("edgewatch.toml");
    let with = |pseudonymise: &str| {
        AgentToml::new()
            .dirs_in(dir.path())
            .subscribe_with("b/#", &[("privacy", TomlValue::raw(format!("{{ pseudonymise = {pseudonymise} }}")))])
            .set("privacy.key_file", "privacy.key")
            .write(&config);
    };
    with(r#"{ device = "1d" }"#);
    let out = edgewatch(&["run", "--config", "edgewatch.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("`subscriptions[0].privacy.pseudonymise.device`") && err.contains("cannot rotate"), "{err}");

    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("owners.rhai"),
        "rule(\"site\", #{ on: \"b/#\", key: |e| e.payload.site, when: |e| true });\n\
         rule(\"by-owner\", #{ on: \"b/#\", key: |e| e.payload.owner, when: |e| true });\n",
    )
    .expect("write");
    with(r#"{ owner = "1d", device = "never" }"#);
    let out = edgewatch(&["check", "rules", "--config", "edgewatch.toml"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("rules/owners.rhai:2:") && stdout.contains("`key` reads `owner`"), "{stdout}");
    with(r#"{ owner = "never" }"#);
    let out = edgewatch(&["check", "rules", "--config", "edgewatch.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
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
fn check_with_the_config_refuses_a_rule_that_names_an_unknown_sink() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules dir");
    std::fs::write(
        rules.join("hot.rhai"),
        "rule(\"hot\", #{\n  on: \"s/{device}/t\",\n  when: |e| e.value > 80,\n  notify: [\"pager\", \"chat\"],\n  escalate: #{ after: \"15m\", to: \"oncall\" },\n});\n",
    )
    .expect("write");
    let config = dir.path().join("edgewatch.toml");
    let with = |sinks: &[&str]| {
        let mut c = AgentToml::new().dirs_in(dir.path()).subscribe("s/#");
        for s in sinks {
            c = c.sink(s, "mqtt", &[("topic", "cmd/{key}".into())]);
        }
        c.write(&config);
        edgewatch(&["check", "rules", "--config", "edgewatch.toml"], dir.path())
    };
    let out = with(&["pager"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("rules/hot.rhai:"), "names the file: {stdout}");
    assert!(stdout.contains("sink `chat` is not in the configuration"), "{stdout}");
    // Escalation sinks are checked too.
    let out = with(&["pager", "chat"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sink `oncall` is not in the configuration"), "{}", text(&out.stdout));
    let out = with(&["pager", "chat", "oncall"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    // Without --config, sinks are not checked: the rules alone are valid.
    let out = edgewatch(&["check", "rules"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn the_demo_prints_events_and_a_summary_and_exits_0() {
    // From an empty directory: the built-in rules and the embedded broker are enough.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = edgewatch(&["demo", "--duration", "4s", "--devices", "5"], dir.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.lines().any(|l| l.contains("overheat") && l.contains("t-003") && l.contains("celsius")), "{stdout}");
    let summary = stdout.split("summary:").nth(1).unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert!(summary.contains("events received upstream: "), "{summary}");
    assert!(!summary.contains("events received upstream: 0"), "{summary}");
}

#[test]
fn the_shipped_rules_pass_their_golden_tests() {
    let out = edgewatch(&["test", "rules"], &repo());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let cases = std::fs::read_dir(repo().join("rules/tests")).expect("rules/tests").count();
    assert!(stdout.contains(&format!("{cases} passed, 0 failed")), "{stdout}");
}

#[test]
fn a_golden_test_that_fails_shows_a_diff_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let case = dir.path().join("tests/hot");
    std::fs::create_dir_all(&case).expect("mkdir");
    std::fs::write(dir.path().join("hot.rhai"), "rule(\"hot\", #{ on: \"s/{device}/t\", when: |e| e.value > 80 });\n")
        .expect("write");
    std::fs::write(case.join("in.jsonl"), "{\"t\": 1, \"topic\": \"s/a/t\", \"text\": \"81\"}\n").expect("write");
    std::fs::write(case.join("out.jsonl"), "{\"t\": 1, \"rule\": \"hot\", \"key\": \"b\", \"data\": 81}\n")
        .expect("write");
    let out = edgewatch(&["test", "."], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAILED  hot"), "{stdout}");
    assert!(
        stdout.contains("-{\"data\":81,\"key\":\"b\"") && stdout.contains("+{\"data\":81,\"key\":\"a\""),
        "{stdout}"
    );
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
    // --bless accepts the actual output.
    assert!(edgewatch(&["test", ".", "--bless"], dir.path()).status.success());
    assert!(edgewatch(&["test", "."], dir.path()).status.success());
}

#[test]
fn replay_prints_composite_events_with_ids() {
    let dir = tempfile::tempdir().expect("temp dir");
    let events = dir.path().join("rec.jsonl");
    let lines: String = (0..3)
        .map(|i| {
            format!(
                "{{\"t\": {}, \"topic\": \"sensors/t-001/temperature\", \"payload\": {{\"temperature\": 90}}}}\n",
                i * 1000
            )
        })
        .collect();
    std::fs::write(&events, lines).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(["replay", "--rules"])
        .arg(repo().join("rules"))
        .arg("--events")
        .arg(&events)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["rule"], "overheat");
    assert_eq!(lines[0]["t"], 2000);
    assert_eq!(lines[0]["id"].as_str().map(str::len), Some(36));
}

#[test]
fn state_export_import_and_inspect_round_trip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write_config = |name: &str, state: &std::path::Path| {
        let file = dir.path().join(name);
        state_only_config(state).write(&file);
        file
    };
    let old = write_config("old.toml", &dir.path().join("old-state"));
    let new = write_config("new.toml", &dir.path().join("new-state"));
    // A snapshot as an old gateway would have written it: one heartbeat key, one event waiting.
    let snapshot = serde_json::json!({
        "schema": 1,
        "taken_ms": 1000,
        "state": [["s/offline\u{0}t-007", "{\"kind\":\"heartbeat\",\"last_seen\":5000,\"deadline\":15000,\"timer_at\":15000,\"missing_since\":-9223372036854775808,\"timeout_ms\":10000,\"never_seen\":false,\"flap\":null}"]],
        "outbox": [{"topic": "edgewatch/x/events/overheat", "payload": "{}", "qos": 1}],
    });
    let file = dir.path().join("backup.json");
    std::fs::write(&file, snapshot.to_string()).expect("snapshot");
    let run = |args: &[&str], config: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(
        run(&["state", "import", file.to_str().expect("utf-8")], &old)
            .contains("imported 1 state entries, 1 outbox events and 0 history roll-ups")
    );
    // The old gateway kept three hours of history of one device's temperature.
    let now = edgewatch_engine::Timestamp::from_system_time(std::time::SystemTime::now()).millis();
    let hour = 3_600_000;
    let first = now - now.rem_euclid(hour) - 3 * hour;
    let closed = |res, start, values: &[f64]| {
        let mut rollup = edgewatch::history::Rollup::of(values[0]);
        values[1..].iter().for_each(|v| rollup.fold(*v));
        edgewatch::history::Closed {
            key: "t-007".into(),
            field: "temperature".into(),
            resolution: res,
            start,
            opened: start + 5,
            rollup,
        }
    };
    use edgewatch::history::Resolution::{Coarse, Fine};
    let kept = [
        closed(Fine, first, &[21.5, 22.5]),
        closed(Fine, first + 60_000, &[23.0]),
        closed(Coarse, first, &[21.5, 22.5, 23.0]),
        closed(Coarse, first + hour, &[30.0, 31.0, 32.0, 33.0]),
    ];
    let (mut log, _) = edgewatch::history::HistoryLog::open(
        &edgewatch::history::dir_in(&dir.path().join("old-state")),
        edgewatch::history::HistoryLimits::default(),
    )
    .expect("history opens");
    log.append(&kept, now).expect("history written");
    drop(log);
    let report = run(&["state", "inspect"], &old);
    assert!(report.contains("offline") && report.contains("t-007") && report.contains("outbox: 1 events"), "{report}");
    // One fine file (an hour), and a coarse file per UTC day the two hours fall in (two
    // when the first hour is 23:00).
    let day = 24 * hour;
    let files = if first.div_euclid(day) == (first + hour).div_euclid(day) { 2 } else { 3 };
    assert!(report.contains("history: ") && report.contains(&format!("in {files} files")), "{report}");
    let coarse =
        |config: &Path| run(&["history", "t-007", "temperature", "--since", "6h", "--resolution", "coarse"], config);
    let rows = coarse(&old);
    assert_eq!(rows.lines().count(), 3, "a header and two hours:\n{rows}");
    assert!(rows.contains(",3,22.3") && rows.contains(",4,31.5,30,33,"), "count, avg, min, max per hour:\n{rows}");
    let fine = run(&["history", "t-007", "temperature", "--since", "6h", "--format", "json"], &old);
    let fine: Vec<serde_json::Value> = fine.lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    assert_eq!(fine.iter().map(|r| r["count"].as_u64()).collect::<Vec<_>>(), [Some(2), Some(1)]);
    // Move the state, history included, to a new gateway; or the state without history.
    let moved = dir.path().join("moved.json");
    assert!(run(&["state", "export", moved.to_str().expect("utf-8")], &old).contains("and 4 history roll-ups"));
    run(&["state", "import", moved.to_str().expect("utf-8")], &new);
    let report = run(&["state", "inspect"], &new);
    assert!(report.contains("t-007") && report.contains("outbox: 1 events"), "{report}");
    assert_eq!(coarse(&new), rows, "history moved with the state");
    let bare = write_config("bare.toml", &dir.path().join("bare-state"));
    let said = run(&["state", "import", moved.to_str().expect("utf-8"), "--no-history"], &bare);
    assert!(said.contains("its history left out"), "{said}");
    assert_eq!(coarse(&bare).lines().count(), 1, "only the header: no history imported");
}

#[test]
fn history_with_bad_arguments_exits_2_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("x.toml");
    state_only_config(&dir.path().join("state")).write(&config);
    let c = config.to_str().expect("utf-8");
    for (args, says) in [
        (vec!["history", "t-1", "temperature", "--resolution", "weekly", "--config", c], "weekly"),
        (vec!["history", "t-1", "temperature", "--since", "yesterday-ish", "--config", c], "yesterday-ish"),
    ] {
        let out = edgewatch(&args, dir.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
    }
}

/// An agent `x` with its state in `state` and every other key at its default (the rules
/// directory too): enough for the `state` commands.
fn state_only_config(state: &Path) -> AgentToml {
    AgentToml::new().id("x").set("agent.state_dir", state).unset("rules.dir").subscribe("a/#")
}

/// A state directory with one heartbeat key imported: (config file, state directory).
fn imported_state(dir: &Path) -> (PathBuf, PathBuf) {
    let state = dir.join("state");
    let config = dir.join("edgewatch.toml");
    state_only_config(&state).write(&config);
    let snapshot = serde_json::json!({
        "schema": 1,
        "taken_ms": 1000,
        "state": [["s/offline\u{0}t-007", "{\"kind\":\"heartbeat\",\"last_seen\":5000,\"deadline\":15000,\"timer_at\":15000,\"missing_since\":-9223372036854775808,\"timeout_ms\":10000,\"never_seen\":false,\"flap\":null}"]],
        "outbox": [],
    });
    let file = dir.join("backup.json");
    std::fs::write(&file, snapshot.to_string()).expect("snapshot");
    let out = edgewatch(
        &["state", "import", file.to_str().expect("utf-8"), "--config", config.to_str().expect("utf-8")],
        dir,
    );
    assert!(out.status.success(), "import: {}", text(&out.stderr));
    (config, state)
}

/// Issue 14 B: an imported state had no snapshot until the agent took its first one, so a
/// database damaged before then lost it.
#[test]
fn state_import_writes_a_snapshot_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, state) = imported_state(dir.path());
    let snapshot = std::fs::read_to_string(state.join("snapshot.json")).expect("a snapshot after the import");
    assert!(snapshot.contains("t-007"), "{snapshot}");
}

/// Issue 20: `state import` and `export` are recorded in the audit trail, which `edgewatch
/// audit` lists and `audit verify` checks.
#[test]
fn state_import_and_export_are_in_the_audit_trail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = imported_state(dir.path());
    let c = config.to_str().expect("utf-8");
    let out = edgewatch(&["state", "export", "again.json", "--config", c], dir.path());
    assert!(out.status.success(), "export: {}", text(&out.stderr));
    let out = edgewatch(&["audit", "--format", "json", "--config", c], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entries: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON per line")).collect();
    let kinds: Vec<_> = entries.iter().map(|e| e["kind"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds, ["state_import", "state_export"], "{entries:?}");
    assert_eq!(entries[0]["data"]["state_entries"], 1);
    assert_eq!(entries[1]["data"]["file"], "again.json");
    assert_eq!(entries[1]["prev"], entries[0]["hash"]);
    let out = edgewatch(&["audit", "verify", "--config", c], dir.path());
    assert!(out.status.success() && text(&out.stdout).contains("chain intact"), "{}", text(&out.stdout));
    let out = edgewatch(&["audit", "--since", "yesterday-ish", "--config", c], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Issue 20: `edgewatch trace` reads the event log the agent's writer wrote: text and JSON,
/// exit 1 for an event it does not hold, 2 for an id that is not one.
#[test]
fn trace_explains_a_logged_event_and_exits_1_for_one_it_does_not_hold() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let config = dir.path().join("edgewatch.toml");
    state_only_config(&state).write(&config);
    let c = config.to_str().expect("utf-8");
    let id: u128 = 0x0123_4567_89ab_8def_9011_2233_4455_6677;
    let event = serde_json::json!({
        "specversion": "1.0", "id": "01234567-89ab-8def-9011-223344556677", "source": "edgewatch/x",
        "type": "edgewatch.hot", "subject": "t-1", "time": "2026-12-05T10:00:00Z",
        "edgewatchcauses": "n=1;aaaaaaaaaaaaaaaa@1764928800000", "edgewatchrule": "rules/hot.rhai#00000000000000ff",
        "data": {"t": 90},
    });
    {
        let limits = edgewatch::journal::JournalLimits { max_bytes: 1 << 20, max_age_ms: i64::MAX / 2 };
        let log = edgewatch::events::EventLog::start(&edgewatch::events::dir_in(&state), limits, Default::default())
            .expect("opens");
        log.event(1_764_928_800_005, 3, id, "edgewatch/x/events/hot", event.to_string().as_bytes());
        log.published(1_764_928_800_006, 3);
        log.acked(1_764_928_800_009, 3);
    }
    let out = edgewatch(&["trace", "01234567-89ab-8def-9011-223344556677", "--config", c], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for want in ["edgewatch.hot", "rules/hot.rhai#00000000000000ff", "acknowledged 2025-12-05T10:00:00.009Z"] {
        assert!(shown.contains(want), "`{want}` in:\n{shown}");
    }
    assert!(shown.contains("aaaaaaaaaaaaaaaa@1764928800000") && shown.contains("not in the input journal"), "{shown}");
    let out = edgewatch(&["trace", "0123456789ab8def", "--format", "json", "--config", c], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["found"]["event"], event);
    assert_eq!(json["found"]["published"], "2025-12-05T10:00:00.006Z");
    let out = edgewatch(&["trace", "ffffffff-89ab-8def-9011-223344556677", "--config", c], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not in the event log"), "{}", text(&out.stderr));
    let out = edgewatch(&["trace", "not-an-id", "--config", c], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Issue 14 B: `state inspect` on a damaged database asked "is the agent running?".
#[test]
fn state_inspect_on_a_damaged_database_says_it_is_damaged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, state) = imported_state(dir.path());
    // Garbage in every file of the database (sled then finds it corrupt).
    for f in std::fs::read_dir(state.join("db")).expect("db dir").flatten().filter(|f| f.path().is_file()) {
        std::fs::write(f.path(), b"not a database").expect("wreck");
    }
    let out = edgewatch(&["state", "inspect", "--config", config.to_str().expect("utf-8")], dir.path());
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(err.contains("damaged") && !err.contains("is the agent running"), "{err}");
}

#[test]
fn no_secret_reaches_the_logs_even_at_trace_level() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = edgewatch_e2e::Broker::embedded();
    let ca = edgewatch_e2e::pki::Ca::new(dir.path(), "ca");
    let client = ca.client("gw");
    let key_pem = std::fs::read_to_string(&client.key).expect("key");
    let key_body = key_pem.lines().nth(1).expect("a PEM body line").to_owned();
    let dead = edgewatch::broker::free_port().expect("port");
    let config = dir.path().join("edgewatch.toml");
    std::fs::create_dir_all(dir.path().join("rules")).expect("rules");
    AgentToml::new()
        .id("gw")
        .dirs_in(dir.path())
        .source(broker.addr())
        .set("source.username", "edge")
        .set("source.password", "hunter2-SOURCE-SECRET")
        .subscribe("sensors/#")
        .set("upstream.broker.url", format!("mqtts://localhost:{}", dead.port()))
        .set("upstream.broker.username", "edge")
        .set("upstream.broker.password_env", "UPSTREAM_PW")
        .set("upstream.broker.ca_file", &ca.cert)
        .set("upstream.broker.client_cert", &client.cert)
        .set("upstream.broker.client_key", &client.key)
        .set("upstream.broker.reconnect_min", Duration::from_millis(100))
        .set("upstream.broker.reconnect_max", Duration::from_millis(200))
        .write(&config);
    let logs = agent_logs(
        &["--log-format", "json", "run", "--config"],
        &config,
        &[("RUST_LOG", "trace"), ("UPSTREAM_PW", "hunter2-UPSTREAM-SECRET")],
        &["Connected to the source broker", "MQTT connection attempt failed"],
    );
    assert!(logs.lines().count() > 10, "trace logging produced little: {logs}");
    assert!(logs.contains("Connected to the source broker"), "the source link worked:\n{logs}");
    assert!(logs.contains("MQTT connection attempt failed"), "upstream failed:\n{logs}");
    for secret in ["hunter2-SOURCE-SECRET", "hunter2-UPSTREAM-SECRET", key_body.as_str(), "PRIVATE KEY"] {
        assert!(!logs.contains(secret), "`{secret}` appears in the logs");
    }
    // `--log-format json` means every line is one JSON object, as tracing-subscriber's json
    // formatter writes it (with the level and the sentence where a log reader expects them).
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let level = v["level"].as_str().unwrap_or_else(|| panic!("no level: {line}"));
        assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level), "level `{level}`: {line}");
        assert!(v["timestamp"].is_string() && v["target"].is_string(), "timestamp and target: {line}");
        assert!(v["fields"].is_object(), "fields: {line}");
    }
    assert!(
        logs.lines().any(|l| l.contains(r#""message":"Connected to the source broker"#)),
        "the sentence is in `fields.message`:\n{logs}"
    );
}

/// Without `--log-format`, logs are lines for people: time, level, target, sentence; not JSON.
#[test]
fn logs_are_human_readable_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = edgewatch_e2e::Broker::embedded();
    let config = dir.path().join("edgewatch.toml");
    std::fs::create_dir_all(dir.path().join("rules")).expect("rules");
    AgentToml::new().id("gw").dirs_in(dir.path()).source(broker.addr()).subscribe("sensors/#").write(&config);
    let logs = agent_logs(
        &["run", "--config"],
        &config,
        &[("RUST_LOG", "info"), ("NO_COLOR", "1")],
        &["Connected to the source broker"],
    );
    let line = logs
        .lines()
        .find(|l| l.contains("Connected to the source broker"))
        .unwrap_or_else(|| panic!("the source link worked:\n{logs}"));
    assert!(line.contains(" INFO ") && line.contains("edgewatch"), "level and target: {line}");
    assert!(line.starts_with(|c: char| c.is_ascii_digit()), "starts with the time: {line}");
    assert!(!line.contains('\u{1b}'), "no colour with NO_COLOR: {line:?}");
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_err(), "a JSON line by default: {line}");
    }
}

/// Runs `edgewatch <args> <config>` until its logs contain every one of `until` (at most 15 s),
/// stops it with SIGTERM, and returns what it wrote to stderr (the logs).
fn agent_logs(args: &[&str], config: &Path, env: &[(&str, &str)], until: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(args)
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("EDGEWATCH_LOG_FORMAT")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    // Read while it runs: trace logging fills a pipe quickly.
    let stderr = child.stderr.take().expect("stderr");
    let until: Vec<String> = until.iter().map(|s| (*s).to_owned()).collect();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut logs = String::new();
        let mut pending = until;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            pending.retain(|s| !line.contains(s.as_str()));
            if pending.is_empty() {
                let _ = seen_tx.send(());
            }
            logs.push_str(&line);
            logs.push('\n');
        }
        logs
    });
    let _ = seen_rx.recv_timeout(std::time::Duration::from_secs(15));
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    for _ in 0..100 {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().expect("reader")
}

#[test]
fn rust_log_takes_target_directives_and_says_when_it_cannot() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ok.rhai"), "rule(\"x\", #{ on: \"a/{device}\", when: |e| true });\n")
        .expect("write");
    let run = |rust_log: &str| {
        Command::new(env!("CARGO_BIN_EXE_edgewatch"))
            .args(["check", "."])
            .current_dir(dir.path())
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .output()
            .expect("edgewatch runs")
    };
    // A span filter is EnvFilter syntax: refused with a warning, at the default level, and the command still works.
    let out = run("[request{id=1}]=debug");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("RUST_LOG not understood") && err.contains("request"), "{err}");
    // Target directives are taken as they are.
    let out = run("warn,edgewatch=debug");
    assert!(out.status.success() && !text(&out.stderr).contains("not understood"), "{}", text(&out.stderr));
}

/// Issue 14: a missing rules directory exited 1 (a run-time failure) with "No such file or
/// directory" twice; it is a configuration error: exit 2, one message naming the key.
#[test]
fn a_missing_rules_directory_exits_2_and_names_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("edgewatch.toml");
    AgentToml::new()
        .id("x")
        .set("agent.state_dir", dir.path().join("state"))
        .set("rules.dir", dir.path().join("no-such-rules"))
        .set("source.url", "mqtt://127.0.0.1:9")
        .subscribe("a/#")
        .write(&file);
    let out = edgewatch(&["run", "--config", file.to_str().expect("utf-8 path")], dir.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("`rules.dir`") && err.contains("no-such-rules"), "{err}");
    assert!(err.contains("edgewatch.toml"), "names the file: {err}");
    assert_eq!(err.matches("os error 2").count(), 1, "the cause once: {err}");
}

/// Issue 14: logs written to a file or a pipe carried ANSI colour codes. Colour is for a
/// terminal only (and never with `NO_COLOR`): stderr here is a pipe.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ok.rhai"), "rule(\"x\", #{ on: \"a/{device}\", when: |e| true });\n")
        .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(["check", "."])
        .current_dir(dir.path())
        // A value it cannot read: a warning is logged, whatever the level.
        .env("RUST_LOG", "[span]=debug")
        .env_remove("NO_COLOR")
        .env_remove("EDGEWATCH_LOG_FORMAT")
        .output()
        .expect("edgewatch runs");
    let err = text(&out.stderr);
    assert!(err.contains("RUST_LOG not understood"), "a log line was written: {err}");
    assert!(!out.stderr.contains(&0x1b), "no escape codes in piped logs: {err:?}");
}

/// A rules directory with a threshold rule `hot` at `limit` and a rule `cold` that no edit
/// here touches.
fn threshold_rules(dir: &Path, limit: f64) -> PathBuf {
    std::fs::create_dir_all(dir).expect("rules dir");
    let rules = format!(
        r#"
rule("hot", #{{
    on: "sensors/{{device}}/temperature",
    when: |e| e.value > {limit:.1},
    clear: |e| e.value <= {limit:.1} - 5.0,
    emit: |e| #{{ device: e.device, celsius: e.value }},
}});
rule("cold", #{{
    on: "sensors/{{device}}/temperature",
    when: |e| e.value < 0.0,
    clear: |e| e.value >= 2.0,
    emit: |e| #{{ device: e.device, celsius: e.value }},
}});
"#
    );
    std::fs::write(dir.join("rules.rhai"), rules).expect("rules");
    dir.to_owned()
}

/// Readings (device, celsius), a second apart.
fn readings(path: &Path, readings: &[(&str, f64)]) {
    let lines: String = readings
        .iter()
        .enumerate()
        .map(|(i, (d, v))| {
            format!(
                "{{\"t\": {}, \"topic\": \"sensors/{d}/temperature\", \"payload\": {{\"temperature\": {v}}}}}\n",
                i * 1000
            )
        })
        .collect();
    std::fs::write(path, lines).expect("recording");
}

fn backtest_json(dir: &Path, args: &[&str]) -> (serde_json::Value, Output) {
    let out = edgewatch(&[&["backtest", "--format", "json"], args].concat(), dir);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (report, out)
}

fn rule_of<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["rules"].as_array().and_then(|r| r.iter().find(|r| r["rule"] == name)).expect("rule in the report")
}

const TRACE: &[(&str, f64)] = &[
    ("t-001", 85.0), // both fire
    ("t-002", 77.0), // the candidate (75) fires
    ("t-003", 79.0), // the candidate fires ...
    ("t-001", 70.0), // both clear
    ("t-002", 60.0), // the candidate clears
    ("t-003", 81.0), // ... and the baseline (80) only now
    ("t-001", 90.0), // both fire again
    ("t-002", 78.0), // the candidate fires again
    ("t-004", -3.0), // cold, on both sides
];

#[test]
fn backtest_of_a_rule_set_against_itself_reports_no_difference() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = threshold_rules(&dir.path().join("rules"), 80.0);
    let same = threshold_rules(&dir.path().join("copy"), 80.0);
    readings(&dir.path().join("rec.jsonl"), TRACE);
    let (report, out) = backtest_json(
        dir.path(),
        &[
            "--rules",
            same.to_str().expect("utf-8"),
            "--baseline",
            rules.to_str().expect("utf-8"),
            "--events",
            "rec.jsonl",
            "--exit-code",
        ],
    );
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(report["identical"], true);
    assert_eq!(report["inputs"], TRACE.len());
    let hot = rule_of(&report, "hot");
    assert_eq!(
        (hot["status"].as_str(), hot["baseline"].as_u64(), hot["same"].as_u64()),
        (Some("same"), Some(3), Some(3))
    );
    assert_eq!(rule_of(&report, "cold")["same"], 1);
}

#[test]
fn backtest_of_a_threshold_change_reports_exactly_the_events_it_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = threshold_rules(&dir.path().join("rules"), 80.0);
    let lower = threshold_rules(&dir.path().join("candidate"), 75.0);
    readings(&dir.path().join("rec.jsonl"), TRACE);
    let args = [
        "--rules",
        lower.to_str().expect("utf-8"),
        "--baseline",
        rules.to_str().expect("utf-8"),
        "--events",
        "rec.jsonl",
    ];
    let (report, out) = backtest_json(dir.path(), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(report["identical"], false);
    let hot = rule_of(&report, "hot");
    assert_eq!(hot["status"], "differs");
    let counts =
        ["baseline", "candidate", "same", "only_baseline", "only_candidate"].map(|k| hot[k].as_u64().unwrap_or(99));
    assert_eq!(counts, [3, 5, 2, 1, 3], "{hot}");
    let keys: Vec<(String, u64, u64)> = hot["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap_or("").to_owned(),
                k["only_baseline"].as_u64().unwrap_or(0),
                k["only_candidate"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(keys, [("t-002".to_owned(), 0, 2), ("t-003".to_owned(), 1, 1)]);
    let first: Vec<(String, String, i64)> = hot["first_differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| {
            (
                d["side"].as_str().unwrap_or("").to_owned(),
                d["key"].as_str().unwrap_or("").to_owned(),
                d["t"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let want = [
        ("candidate", "t-002", 1000),
        ("candidate", "t-003", 2000),
        ("baseline", "t-003", 5000),
        ("candidate", "t-002", 7000),
    ];
    assert_eq!(first, want.map(|(s, k, t)| (s.to_owned(), k.to_owned(), t)));
    assert_eq!(rule_of(&report, "cold")["status"], "same");
    // The table says the same for people, and --exit-code makes a difference a failure.
    let out = edgewatch(&[&["backtest", "--exit-code"], &args[..]].concat(), dir.path());
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(
        table.contains("differs") && table.contains("t-002, t-003") && table.contains("the candidate differs"),
        "{table}"
    );
}

#[test]
fn backtest_of_rules_that_do_not_compile_says_where_and_runs_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = threshold_rules(&dir.path().join("rules"), 80.0);
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).expect("dir");
    std::fs::write(broken.join("bad.rhai"), "rule(\"x\", #{\n  on: \"a/b\",\n  when: |e| e.value >,\n});\n")
        .expect("rule");
    readings(&dir.path().join("rec.jsonl"), TRACE);
    let out = edgewatch(
        &[
            "backtest",
            "--rules",
            broken.to_str().expect("utf-8"),
            "--baseline",
            rules.to_str().expect("utf-8"),
            "--events",
            "rec.jsonl",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad.rhai:3:"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing ran: {}", text(&out.stdout));
    // Without a baseline or a configuration, it says what it needs.
    let out = edgewatch(&["backtest", "--rules", "broken", "--events", "rec.jsonl"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--baseline"), "{}", text(&out.stderr));
}

/// Peak resident memory of a running process, in KiB (Linux).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn replay_streams_a_large_recording_in_bounded_memory() {
    use std::io::Write;
    // 300 000 readings of 1 000 devices on stdin: held whole, as replay did before, they took
    // ~0.9 KB a line (270 MB) before any output.
    const LINES: usize = 300_000;
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(["replay", "--events", "-", "--rules"])
        .arg(repo().join("rules"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("replay runs");
    let mut stdout = child.stdout.take().expect("stdout");
    let counter = std::thread::spawn(move || {
        let mut lines = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match std::io::Read::read(&mut stdout, &mut buf) {
                Ok(0) | Err(_) => return lines,
                Ok(n) => lines += buf[..n].iter().filter(|b| **b == b'\n').count(),
            }
        }
    });
    let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
    for i in 0..LINES {
        let d = i % 1000;
        // Every 50th device runs hot: overheat events come out as it goes.
        let v = if d % 50 == 0 { 95.0 } else { 20.0 + (i % 7) as f64 };
        writeln!(
            stdin,
            "{{\"t\":{},\"topic\":\"sensors/t-{d:04}/temperature\",\"payload\":{{\"temperature\":{v}}}}}",
            i * 10
        )
        .expect("replay reads its input");
    }
    stdin.flush().expect("flush");
    // Everything is in; the process still runs (stdin open): its peak so far is the run's.
    let peak = peak_rss_kib(child.id()).expect("VmHWM");
    drop(stdin);
    let out = child.wait_with_output().expect("replay ends");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = counter.join().expect("counter");
    assert!(events >= 20, "overheat events came out: {events}");
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB for {LINES} lines");
}

#[test]
fn backtest_starts_both_sides_from_a_state_export() {
    let dir = tempfile::tempdir().expect("temp dir");
    // t-007 was last seen at 5 s by the agent the export came from; its deadline is 15 s.
    let snapshot = serde_json::json!({
        "schema": 1,
        "taken_ms": 1000,
        "state": [["s/offline\u{0}t-007", "{\"kind\":\"heartbeat\",\"last_seen\":5000,\"deadline\":15000,\"timer_at\":15000,\"missing_since\":-9223372036854775808,\"timeout_ms\":10000,\"never_seen\":false,\"flap\":null}"]],
        "outbox": [],
    });
    std::fs::write(dir.path().join("backup.json"), snapshot.to_string()).expect("snapshot");
    std::fs::write(dir.path().join("rec.jsonl"), "{\"t\": 20000}\n").expect("recording");
    let rules = repo().join("rules");
    let rules = rules.to_str().expect("utf-8");
    let offline = |state: bool| {
        let mut args = vec!["--rules", rules, "--baseline", rules, "--events", "rec.jsonl"];
        if state {
            args.extend(["--state", "backup.json"]);
        }
        let (report, out) = backtest_json(dir.path(), &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(report["identical"], true);
        let r = rule_of(&report, "offline");
        (r["baseline"].as_u64(), r["candidate"].as_u64())
    };
    // From the export, t-007's silence is reported on both sides; from nothing, nobody is known.
    assert_eq!(offline(true), (Some(1), Some(1)));
    assert_eq!(offline(false), (Some(0), Some(0)));
}

#[test]
fn check_reports_an_inhibit_that_cannot_work_at_its_rule() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(rules.join("tables")).expect("rules dir");
    let write = |by: &str| {
        let src = format!(
            "rule(\"hub-offline\", #{{ on: \"h/{{device}}/hb\", heartbeat: #{{ timeout: \"1m\" }}, notify: \"pager\" }});\n\
             rule(\"quiet\", #{{ on: \"h/{{device}}/hb\", when: |e| true }});\n\
             rule(\"offline\", #{{\n  on: \"s/{{device}}/t\",\n  heartbeat: #{{ timeout: \"30s\" }},\n  notify: \"pager\",\n  inhibit: #{{ by: \"{by}\", parent: \"devices.hub\" }},\n}});\n"
        );
        std::fs::write(rules.join("hubs.rhai"), src).expect("write");
        edgewatch(&["check", "rules"], dir.path())
    };
    let out = write("hub-offline");
    assert_eq!(out.status.code(), Some(1), "no table yet: {}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("rules/hubs.rhai:3:1") && text(&out.stdout).contains("no lookup table `devices`"),
        "{}",
        text(&out.stdout)
    );
    std::fs::write(rules.join("tables/devices.csv"), "device,hub\ns-1,hub-2\n").expect("table");
    let out = write("hub-offline");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = write("hub-ofline");
    assert!(text(&out.stdout).contains("`inhibit.by` names no rule: `hub-ofline`"), "{}", text(&out.stdout));
    let out = write("quiet");
    assert!(text(&out.stdout).contains("rule `quiet` keeps no alarm"), "{}", text(&out.stdout));
}
