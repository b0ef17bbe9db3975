//! The console's backtest, as the `edgewatch` program runs it: `POST /api/v1/backtest` runs
//! `edgewatch backtest` in a child process, beside the running agent, on its input journal.

use edgewatch_e2e::{AgentToml, Broker, Publisher, http};
use std::process::{Command, Stdio};
use std::time::Duration;

const WRITE: &str = "write-token-0123456789abcdef";
/// Generous: the test waits for a state and asserts it, not how long it took.
const WAIT: Duration = Duration::from_secs(30);

/// Kills the agent when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_from_the_console_runs_a_candidate_over_the_journal_in_a_child_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Broker::embedded();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).expect("rules");
    std::fs::write(rules.join("hot.rhai"), r#"rule("hot", #{ on: "sensors/{device}/t", when: |e| e.value > 80.0 });"#)
        .expect("writes");
    let token = dir.path().join("write.token");
    std::fs::write(&token, WRITE).expect("writes");
    let addr = edgewatch::broker::free_port().expect("port");
    let config = dir.path().join("edgewatch.toml");
    AgentToml::new()
        .id("gw")
        .dirs_in(dir.path())
        .source(broker.addr())
        .subscribe("sensors/#")
        .set("journal.enabled", true)
        .set("console.listen", addr)
        .set("console.write_token_file", &token)
        .write(&config);
    let _agent = Running(
        Command::new(env!("CARGO_BIN_EXE_edgewatch"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    );
    let bearer = format!("Bearer {WRITE}");
    let auth = [("Authorization", bearer.as_str())];
    let post = |body: serde_json::Value| {
        let body = body.to_string();
        async move { http(addr, "POST", "/api/v1/backtest", &auth, body.as_bytes()).await }
    };
    // Ready: the console answers.
    let up = async {
        while !matches!(edgewatch_e2e::try_http_get(addr, "/api/v1/rules").await, Ok((200, _))) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, up).await.expect("the agent's console comes up");
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    // Readings trickle until the journal holds them: a new subscription may not be in place
    // for the first ones.
    let candidate = r#"rule("hot", #{ on: "sensors/{device}/t", when: |e| e.value > 72.0 });"#;
    let journaled = async {
        loop {
            for v in [70, 75, 85, 90] {
                sensor.publish("sensors/t-1/t", v.to_string()).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (status, body) = post(serde_json::json!({ "rules": candidate, "since": "1h" })).await;
            assert_eq!(status, 200, "{body}");
            let report: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            if report["report"]["inputs"].as_u64() >= Some(4) {
                return report["report"].clone();
            }
        }
    };
    let report = tokio::time::timeout(WAIT, journaled).await.expect("the journal holds the inputs");
    let hot = report["rules"].as_array().and_then(|r| r.iter().find(|r| r["rule"] == "hot")).expect("hot");
    assert_eq!(hot["status"], "differs", "{report}");
    assert!(
        hot["only_candidate"].as_u64() >= Some(1) && hot["only_baseline"] == 0,
        "the 75s fire only at 72: {report}"
    );
    // A candidate that does not compile: where, in the file as the person wrote it.
    let (status, body) = post(serde_json::json!({ "rules": "rule(\"hot\", #{ on: " })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("candidate.rhai:1:"), "{body}");
    assert!(!body.contains(&*dir.path().to_string_lossy()), "no temporary path: {body}");
    let (status, body) = post(serde_json::json!({ "rules": candidate, "since": "yesterday" })).await;
    assert!(status == 400 && body.contains("since"), "{body}");
    let (status, _) = http(addr, "POST", "/api/v1/backtest", &[], b"{}").await;
    assert_eq!(status, 401);
}
