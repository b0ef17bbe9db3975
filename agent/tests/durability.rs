//! Nothing lost: the agent as a real process, killed and restarted against a real broker,
//! with real sled files on disk.

use edgewatch_e2e::{Broker, Mosquitto, Publisher, Subscriber, WAIT, toml_path, wait_healthy, wait_metric};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COUNT: &str = r#"
// Counts every reading per device, and says so each time.
rule("count", #{
    on: "sensors/{device}/reading",
    state: #{ n: 0 },
    on_event: |e| { this.n += 1; emit(#{ n: this.n, seq: e.payload.seq }); },
});
rule("alive", #{ on: "sensors/{device}/reading", heartbeat: #{ timeout: "1h" } });
"#;

/// Writes the rules and the agent's configuration into `dir`: (config file, `/metrics` and
/// `/healthz` address). Every run of the agent on this configuration serves the same address.
fn write_config(dir: &Path, source: SocketAddr, upstream: Option<SocketAddr>, rules: &str) -> (PathBuf, SocketAddr) {
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    std::fs::write(rules_dir.join("rules.rhai"), rules).expect("rules");
    let upstream = upstream
        .map(|u| format!("[upstream.broker]\nurl = \"mqtt://{u}\"\nreconnect_max = \"500ms\"\n"))
        .unwrap_or_default();
    let metrics = edgewatch::broker::free_port().expect("port");
    let text = format!(
        "[agent]\nid = \"crash\"\nstate_dir = {}\nmetrics_listen = \"{metrics}\"\n[rules]\ndir = {}\n[source]\nurl = \"mqtt://{source}\"\nreconnect_max = \"500ms\"\n\
         [[subscriptions]]\ntopic = \"sensors/#\"\nqos = 1\n[state]\nsnapshot_interval = \"1s\"\n[upstream]\n{upstream}",
        toml_path(&dir.join("state")),
        toml_path(&rules_dir),
    );
    let file = dir.join("edgewatch.toml");
    std::fs::write(&file, text).expect("config");
    (file, metrics)
}

fn spawn_agent(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", std::env::var("AGENT_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent starts")
}

/// (device, n) -> (seq, id) of every counting event received.
type Seen = BTreeMap<(String, i64), BTreeSet<(i64, String)>>;

fn record(seen: &mut Seen, ev: &serde_json::Value) {
    if ev["type"] != "edgewatch.count" {
        return;
    }
    let device = ev["subject"].as_str().unwrap_or("?").to_owned();
    let n = ev["data"]["n"].as_i64().unwrap_or(-1);
    let seq = ev["data"]["seq"].as_i64().unwrap_or(-1);
    seen.entry((device, n)).or_default().insert((seq, ev["id"].as_str().unwrap_or("").to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ten_times_nothing_is_lost_and_nothing_counts_twice() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, metrics) = write_config(dir.path(), addr, None, COUNT);
    let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/crash/events/#").await;

    // The first run creates the persistent session, so the broker queues for it from now on.
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;

    const DEVICES: usize = 4;
    const PER_DEVICE: i64 = 150;
    let publisher = tokio::spawn(async move {
        let mut sensor = Publisher::connect(addr, "sensors").await;
        for seq in 1..=PER_DEVICE {
            for d in 0..DEVICES {
                sensor
                    .publish(&format!("sensors/d{d}/reading"), format!(r#"{{"device":"d{d}","seq":{seq},"value":1}}"#))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    });

    let mut seen = Seen::new();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..10 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(150 + rng % 500);
        let until = Instant::now() + run_for;
        while Instant::now() < until {
            if let Some(m) = upstream.next_within(Duration::from_millis(20)).await {
                record(&mut seen, &m.json());
            }
        }
        agent.kill().expect("SIGKILL");
        agent.wait().expect("reaped");
        agent = spawn_agent(&config);
    }
    publisher.await.expect("publisher finished");

    // The last agent runs until every reading is counted.
    let deadline = Instant::now() + Duration::from_secs(60);
    let complete = |seen: &Seen| (0..DEVICES).all(|d| seen.contains_key(&(format!("d{d}"), PER_DEVICE)));
    while !complete(&seen) && Instant::now() < deadline {
        if let Some(m) = upstream.next_within(Duration::from_millis(200)).await {
            record(&mut seen, &m.json());
        }
    }
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();

    for d in 0..DEVICES {
        let device = format!("d{d}");
        for n in 1..=PER_DEVICE {
            let copies =
                seen.get(&(device.clone(), n)).unwrap_or_else(|| panic!("{device}: count {n} never arrived upstream"));
            let seqs: BTreeSet<i64> = copies.iter().map(|(s, _)| *s).collect();
            let ids: BTreeSet<&String> = copies.iter().map(|(_, id)| id).collect();
            assert_eq!(
                seqs.len(),
                1,
                "{device}: count {n} was reached by different readings {seqs:?}: a reading counted twice"
            );
            assert_eq!(ids.len(), 1, "{device}: duplicates of count {n} must share their id");
        }
        assert!(!seen.contains_key(&(device.clone(), PER_DEVICE + 1)), "{device}: counted past the readings sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_outage_loses_nothing_and_keeps_the_order() {
    let Some(probe) = Mosquitto::start_on(None) else { return };
    let cloud_addr = probe.addr;
    probe.stop();
    let persist = tempfile::tempdir().expect("temp dir");
    let cloud = Mosquitto::start_with(Some(cloud_addr), Some(persist.path())).expect("mosquitto");
    let gateway = Broker::embedded();
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, metrics) = write_config(dir.path(), gateway.addr(), Some(cloud_addr), COUNT);
    // Persistent: the cloud broker keeps our queue while we are away, and across its restart.
    let mut upstream =
        Subscriber::connect_with(cloud_addr, "cloud-consumer", "edgewatch/crash/events/count", true).await;
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    let mut sensor = Publisher::connect(gateway.addr(), "sensors").await;

    let mut got: Vec<i64> = Vec::new();
    let send = |seq: i64| format!(r#"{{"device":"d0","seq":{seq},"value":1}}"#);
    for seq in 1..=10 {
        sensor.publish("sensors/d0/reading", send(seq)).await;
    }
    while got.len() < 10 {
        got.push(upstream.next().await.json()["data"]["n"].as_i64().unwrap_or(-1));
    }
    cloud.stop();
    // The premise of the test: the cloud broker kept our consumer's session on disk.
    assert!(
        persist.path().join("mosquitto.db").is_file(),
        "mosquitto wrote no persistence file into {}",
        persist.path().display()
    );
    // Events produced while the cloud is gone wait in the outbox.
    for seq in 11..=30 {
        sensor.publish("sensors/d0/reading", send(seq)).await;
    }
    // ... all twenty of them, held while the cloud is gone (not produced after its return).
    wait_metric(metrics, "edgewatch_outbox_events", WAIT, |n| n >= 20.0).await;
    let _cloud = Mosquitto::start_with(Some(cloud_addr), Some(persist.path())).expect("mosquitto again");
    for seq in 31..=40 {
        sensor.publish("sensors/d0/reading", send(seq)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.last() != Some(&40) && Instant::now() < deadline {
        if let Some(m) = upstream.next_within(Duration::from_millis(200)).await {
            got.push(m.json()["data"]["n"].as_i64().unwrap_or(-1));
        }
    }
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    // Every event, in order. A resend after the reconnect may repeat events already delivered
    // (their PUBACKs died with the broker; on a new session the agent sends again everything
    // in flight), never skip one: first deliveries are exactly 1..=40, in order.
    let mut seen = BTreeSet::new();
    let firsts: Vec<i64> = got.iter().copied().filter(|n| seen.insert(*n)).collect();
    assert_eq!(firsts, (1..=40).collect::<Vec<_>>(), "received: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrecked_database_is_restored_from_the_snapshot_and_reported() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, metrics) = write_config(dir.path(), addr, None, COUNT);
    let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/crash/#").await;
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    let mut sensor = Publisher::connect(addr, "sensors").await;
    for seq in 1..=5 {
        sensor.publish("sensors/d0/reading", format!(r#"{{"device":"d0","seq":{seq},"value":1}}"#)).await;
    }
    let mut last_n = 0;
    while last_n < 5 {
        let ev = upstream.next().await.json();
        last_n = ev["data"]["n"].as_i64().unwrap_or(last_n);
    }
    // Wait for a snapshot (every second here) that holds the fifth count, stop the agent,
    // wreck its database.
    let snapshot = dir.path().join("state/snapshot.json");
    let written = async {
        while !snapshot_counted(&snapshot, 5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, written)
        .await
        .unwrap_or_else(|_| panic!("no snapshot with n = 5 in {}", snapshot.display()));
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    let mut wrecked = 0;
    let mut stack = vec![dir.path().join("state/db")];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).expect("db dir").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                std::fs::write(e.path(), b"not a database").expect("wreck");
                wrecked += 1;
            }
        }
    }
    assert!(wrecked > 0);

    let mut agent = spawn_agent(&config);
    let mut restored = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while restored.is_none() && Instant::now() < deadline {
        if let Some(m) = upstream.next_within(Duration::from_millis(200)).await {
            let ev = m.json();
            if ev["type"] == "edgewatch.agent.restored" {
                restored = Some(ev);
            }
        }
    }
    let restored = restored.expect("the agent reports the restore");
    assert!(restored["data"]["snapshot_time"].is_string(), "{restored}");
    // It keeps running, and counting from the snapshot's state.
    sensor.publish("sensors/d0/reading", r#"{"device":"d0","seq":6,"value":1}"#).await;
    let mut n = None;
    while n.is_none() && Instant::now() < deadline {
        if let Some(m) = upstream.next_within(Duration::from_millis(200)).await {
            let ev = m.json();
            if ev["type"] == "edgewatch.count" && ev["data"]["seq"] == 6 {
                n = ev["data"]["n"].as_i64();
            }
        }
    }
    assert_eq!(n, Some(6), "the count continued from the restored state");
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
}

/// Whether the snapshot at `path` holds a count rule state with `n` (written atomically, so a
/// file that is there is whole).
fn snapshot_counted(path: &Path, n: i64) -> bool {
    let Ok(text) = std::fs::read(path) else { return false };
    let Ok(snap) = serde_json::from_slice::<serde_json::Value>(&text) else { return false };
    let entries = snap["state"].as_array().map(Vec::as_slice).unwrap_or_default();
    entries.iter().any(|e| {
        e[0].as_str().is_some_and(|k| k.contains("count"))
            && e[1].as_str().is_some_and(|v| v.contains(&format!("\"n\":{n},")) || v.contains(&format!("\"n\":{n}}}")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_stop_longer_than_the_timeout_raises_no_storm() {
    // Long enough that 10 000 heartbeats are in before the first deadline, and that the agent
    // is up and has the speaking half within the grace after its restart, on a slow machine.
    const OFFLINE: &str = r#"rule("offline", #{ on: "sensors/{device}/hb", heartbeat: #{ timeout: "5s" } });"#;
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, metrics) = write_config(dir.path(), addr, None, OFFLINE);
    let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/crash/#").await;
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    let mut sensor = Publisher::connect(addr, "sensors").await;
    const N: usize = 10_000;
    // Everyone reports once; then the agent stops for longer than the timeout.
    for i in 0..N {
        sensor.publish_no_wait(&format!("sensors/d{i:05}/hb"), "1");
    }
    sensor.wait_acks(N).await;
    // Every heartbeat's effect on disk, then killed, and down for longer than the timeout.
    let committed = "edgewatch_commit_latency_seconds_count";
    wait_metric(metrics, committed, Duration::from_secs(30), |n| n >= N as f64).await;
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    // Half the fleet speaks within the grace; the other half really went silent.
    for i in (0..N).step_by(2) {
        sensor.publish_no_wait(&format!("sensors/d{i:05}/hb"), "1");
    }
    sensor.wait_acks(N / 2).await;
    let mut missing = BTreeSet::new();
    let mut restarted = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while (missing.len() < N / 2 || !restarted) && Instant::now() < deadline {
        if let Some(m) = upstream.next_within(Duration::from_millis(300)).await {
            let ev = m.json();
            if ev["type"] == "edgewatch.agent.restarted" {
                restarted = true;
                assert!(ev["data"]["downtime_ms"].as_i64().is_some_and(|d| d >= 6000), "{ev}");
            } else if ev["data"]["status"] == "missing" {
                missing.insert(ev["subject"].as_str().unwrap_or("?").to_owned());
            }
        }
    }
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    assert!(restarted, "the agent reports its own downtime");
    let expected: BTreeSet<String> = (1..N).step_by(2).map(|i| format!("d{i:05}")).collect();
    assert_eq!(missing.len(), expected.len(), "exactly the silent half is reported");
    assert_eq!(missing, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_reported_offline_by_its_last_will() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = write_config(dir.path(), addr, None, COUNT);
    let mut status = Subscriber::connect(addr, "ops", "edgewatch/crash/status").await;
    let mut agent = spawn_agent(&config);
    let online = status.next().await.json();
    assert_eq!(online["status"], "online", "{online}");
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    let will = status.next().await.json();
    assert_eq!(
        (will["status"].as_str(), will["reason"].as_str()),
        (Some("offline"), Some("connection lost")),
        "{will}"
    );
}
