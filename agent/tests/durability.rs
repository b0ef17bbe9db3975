//! Nothing lost: the agent as a real process, killed and restarted against a real broker,
//! with real sled files on disk.

use edgewatch_e2e::{AgentToml, Broker, Mosquitto, Publisher, Received, Subscriber, WAIT, wait_healthy, wait_metric};
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
/// A snapshot every second.
fn write_config(dir: &Path, source: SocketAddr, upstream: Option<SocketAddr>, rules: &str) -> (PathBuf, SocketAddr) {
    write_config_with(dir, source, upstream, rules, "1s")
}

/// [`write_config`] with a `state.snapshot_interval` of `snapshot_interval`.
fn write_config_with(
    dir: &Path,
    source: SocketAddr,
    upstream: Option<SocketAddr>,
    rules: &str,
    snapshot_interval: &str,
) -> (PathBuf, SocketAddr) {
    write_config_edited(dir, source, upstream, rules, |c| c.set("state.snapshot_interval", snapshot_interval))
}

/// [`write_config`] with `edit` applied to the configuration before it is written.
fn write_config_edited(
    dir: &Path,
    source: SocketAddr,
    upstream: Option<SocketAddr>,
    rules: &str,
    edit: impl FnOnce(AgentToml) -> AgentToml,
) -> (PathBuf, SocketAddr) {
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    std::fs::write(rules_dir.join("rules.rhai"), rules).expect("rules");
    let metrics = edgewatch::broker::free_port().expect("port");
    let mut config = AgentToml::new()
        .id("crash")
        .dirs_in(dir)
        .set("agent.metrics_listen", metrics)
        .source(source)
        .set("source.reconnect_max", Duration::from_millis(500))
        .subscribe_with("sensors/#", &[("qos", 1.into())])
        .set("state.snapshot_interval", "1s");
    if let Some(u) = upstream {
        config = config
            .set("upstream.broker.url", format!("mqtt://{u}"))
            .set("upstream.broker.reconnect_max", Duration::from_millis(500));
    }
    let file = dir.join("edgewatch.toml");
    edit(config).write(&file);
    (file, metrics)
}

/// An agent process on an embedded broker, healthy, with a consumer of everything it
/// publishes and a sensor: what most tests here start from.
struct Rig {
    broker: Broker,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    config: PathBuf,
    metrics: SocketAddr,
    upstream: Subscriber,
    agent: Child,
    sensor: Publisher,
}

async fn rig(rules: &str, snapshot_interval: &str) -> Rig {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, metrics) = write_config_edited(dir.path(), addr, None, rules, |c| {
        c.set("state.snapshot_interval", snapshot_interval).set("history.fine", "1s").set("history.coarse", "2s")
    });
    let upstream = Subscriber::connect(addr, "cloud", "edgewatch/crash/#").await;
    let agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    let sensor = Publisher::connect(addr, "sensors").await;
    Rig { broker, addr, dir, config, metrics, upstream, agent, sensor }
}

fn spawn_agent(config: &Path) -> Child {
    spawn_agent_with(config, &[])
}

/// [`spawn_agent`] with more environment variables (the crash failpoint).
fn spawn_agent_with(config: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
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

/// [`COUNT`], and each device's `seq` kept in history, in periods of a second and two.
const COUNT_REMEMBERED: &str = r#"
rule("count", #{
    on: "sensors/{device}/reading",
    state: #{ n: 0 },
    on_event: |e| { this.n += 1; emit(#{ n: this.n, seq: e.payload.seq }); },
});
rule("alive", #{ on: "sensors/{device}/reading", heartbeat: #{ timeout: "1h" }, remember: "seq" });
"#;

/// The history of `field` of `device`, whole, at `res`: (periods, readings, sum).
fn history_totals(state: &Path, device: &str, field: &str, res: edgewatch::history::Resolution) -> (usize, u64, f64) {
    let dir = edgewatch::history::dir_in(state);
    let periods = edgewatch::history::read(&dir, device, field, res, i64::MIN, i64::MAX).expect("history reads");
    (periods.len(), periods.iter().map(|p| p.1.count).sum(), periods.iter().map(|p| p.1.sum).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ten_times_nothing_is_lost_and_nothing_counts_twice() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, metrics) = write_config_edited(dir.path(), addr, None, COUNT_REMEMBERED, |c| {
        c.set("state.snapshot_interval", "1s").set("history.fine", "1s").set("history.coarse", "2s")
    });
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
    // History too: every reading in exactly one closed period, once the last periods close
    // (read from the files while the agent runs, as `edgewatch history` does).
    use edgewatch::history::Resolution::{Coarse, Fine};
    let state = dir.path().join("state");
    let all_closed = || {
        (0..DEVICES).all(|d| {
            let device = format!("d{d}");
            [Fine, Coarse].iter().all(|r| history_totals(&state, &device, "seq", *r).1 >= PER_DEVICE as u64)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !all_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Where an operator looks: history's bytes on disk (this last run may have closed no
    // period itself, so its count of roll-ups written may be 0).
    wait_metric(metrics, "edgewatch_history_bytes", WAIT, |v| v > 0.0).await;
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    for d in 0..DEVICES {
        let device = format!("d{d}");
        for res in [Fine, Coarse] {
            let (periods, count, sum) = history_totals(&state, &device, "seq", res);
            assert_eq!(count, PER_DEVICE as u64, "{device} {res:?}: every reading kept once in history");
            assert_eq!(sum, (PER_DEVICE * (PER_DEVICE + 1) / 2) as f64, "{device} {res:?}: the readings themselves");
            assert!(periods > 1, "{device} {res:?}: several periods closed");
        }
    }

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
    let mut audit = Subscriber::connect_with(cloud_addr, "cloud-auditor", "edgewatch/crash/audit", true).await;
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
    // Audit entries too (issue 20): two reloads asked for by SIGHUP while the cloud is away.
    for _ in 0..2 {
        let status = Command::new("kill").arg("-HUP").arg(agent.id().to_string()).status().expect("kill runs");
        assert!(status.success(), "kill -HUP failed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // ... all of them, held while the cloud is gone (not produced after its return).
    wait_metric(metrics, "edgewatch_outbox_events", WAIT, |n| n >= 22.0).await;
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
    // The audit trail's copy: the start and both reloads, by seq, none missing.
    let mut seqs = BTreeSet::new();
    while seqs.len() < 3 && Instant::now() < deadline {
        if let Some(m) = audit.next_within(Duration::from_millis(200)).await {
            let entry = m.json();
            seqs.insert(entry["seq"].as_u64().unwrap_or(0));
        }
    }
    assert_eq!(seqs, BTreeSet::from([1, 2, 3]), "audit entries upstream");
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
    wrecked_and_restored("1s").await;
}

/// Issue 14 B: the first snapshot came only after `snapshot_interval` (10 minutes by default),
/// so a database wrecked before then lost everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_wrecked_before_the_first_periodic_snapshot_is_restored() {
    wrecked_and_restored("1h").await;
}

/// Counts five readings, waits for a snapshot that holds them, kills the agent, wrecks its
/// database and checks that the restarted agent reports the restore and counts on.
async fn wrecked_and_restored(snapshot_interval: &str) {
    let Rig { broker: _broker, addr: _addr, dir, config, metrics, mut upstream, mut agent, mut sensor } =
        rig(COUNT_REMEMBERED, snapshot_interval).await;
    for seq in 1..=5 {
        sensor.publish("sensors/d0/reading", format!(r#"{{"device":"d0","seq":{seq},"value":1}}"#)).await;
    }
    let mut last_n = 0;
    while last_n < 5 {
        let ev = upstream.next().await.json();
        last_n = ev["data"]["n"].as_i64().unwrap_or(last_n);
    }
    // Wait for a snapshot that holds the fifth count, stop the agent, wreck its database.
    let snapshot = dir.path().join("state/snapshot.json");
    let written = async {
        while !snapshot_counted(&snapshot, 5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), written)
        .await
        .unwrap_or_else(|_| panic!("no snapshot with n = 5 in {}", snapshot.display()));
    // And for the five readings in closed history periods.
    let state = dir.path().join("state");
    let fine = || history_totals(&state, "d0", "seq", edgewatch::history::Resolution::Fine);
    let deadline = Instant::now() + Duration::from_secs(60);
    while fine().1 < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if fine().1 != 5 {
        // Seen once under a heavily loaded machine (2 of 5 after 20 s): say what there was.
        let files: Vec<_> = std::fs::read_dir(edgewatch::history::dir_in(&state))
            .map(|d| d.flatten().map(|e| (e.file_name(), e.metadata().map(|m| m.len()).ok())).collect())
            .unwrap_or_default();
        let page = edgewatch_e2e::try_http_get(metrics, "/metrics").await.map(|(_, p)| p).unwrap_or_default();
        let lines: Vec<&str> = page.lines().filter(|l| l.starts_with("edgewatch_history")).collect();
        panic!("the five readings in history: {:?}\nfiles: {files:?}\nmetrics: {lines:#?}", fine());
    }
    wait_metric(metrics, "edgewatch_history_rollups_written_total", WAIT, |v| v >= 2.0).await;
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    wreck_database(dir.path());
    // History's files are apart from the database; a write cut short tears one's tail.
    let segment = std::fs::read_dir(edgewatch::history::dir_in(&state))
        .expect("history dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("fine-")))
        .expect("a fine segment");
    let mut bytes = std::fs::read(&segment).expect("segment");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&segment, bytes).expect("torn tail");

    let mut agent = spawn_agent(&config);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut restored, mut repaired) = (None, None);
    while (restored.is_none() || repaired.is_none()) && Instant::now() < deadline {
        if let Some(m) = upstream.next_within(Duration::from_millis(200)).await {
            let ev = m.json();
            match ev["type"].as_str() {
                Some("edgewatch.agent.restored") => restored = Some(ev),
                Some("edgewatch.agent.history_recovered") => repaired = Some(ev),
                _ => {}
            }
        }
    }
    let restored = restored.expect("the agent reports the restore");
    assert!(restored["data"]["snapshot_time"].is_string(), "{restored}");
    let repaired = repaired.expect("the agent reports the history's repair, apart");
    assert_eq!(repaired["data"]["truncated_bytes"], 7, "{repaired}");
    assert_eq!(fine().1, 5, "history kept through both");
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

/// Overwrites every file of the database in `dir`/state/db with garbage.
fn wreck_database(dir: &Path) {
    let mut wrecked = 0;
    let mut stack = vec![dir.join("state/db")];
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
}

/// Stops the agent as systemd would (SIGTERM) and waits for it to exit.
fn stop_cleanly(agent: &mut Child) {
    let status = Command::new("kill").arg("-TERM").arg(agent.id().to_string()).status().expect("kill runs");
    assert!(status.success(), "kill -TERM failed");
    let exit = agent.wait().expect("reaped");
    assert!(exit.success(), "the agent did not stop cleanly: {exit}");
}

/// The next event of CloudEvent type `kind` received before `deadline`.
async fn next_of_type(upstream: &mut Subscriber, kind: &str, deadline: Instant) -> Option<serde_json::Value> {
    while Instant::now() < deadline {
        if let Some(m) = upstream.next_within(Duration::from_millis(200)).await {
            let ev = m.json();
            if ev["type"] == kind {
                return Some(ev);
            }
        }
    }
    None
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
    let Rig { broker: _broker, addr: _addr, dir: _dir, config, metrics, mut upstream, mut agent, mut sensor } =
        rig(OFFLINE, "1s").await;
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

const OFFLINE: &str = r#"rule("offline", #{ on: "sensors/{device}/hb", heartbeat: #{ timeout: "5s" } });"#;

/// Issue 14 A: after a restore from the snapshot every device was reported missing at once
/// (deadlines from the old last_seen + timeout), and no `restarted` event was sent. A restore
/// is a restart: every device gets a full timeout from it, and only the silent ones are
/// reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_is_a_restart_every_device_gets_a_full_timeout() {
    const N: usize = 10;
    let Rig { broker: _broker, addr: _addr, dir, config, metrics, mut upstream, mut agent, mut sensor } =
        rig(OFFLINE, "1s").await;
    for i in 0..N {
        sensor.publish(&format!("sensors/d{i}/hb"), "1").await;
    }
    wait_metric(metrics, "edgewatch_commit_latency_seconds_count", WAIT, |n| n >= N as f64).await;
    stop_cleanly(&mut agent);
    // The premise: the snapshot written at the stop holds every device.
    let snapshot = dir.path().join("state/snapshot.json");
    let text = std::fs::read(&snapshot).expect("a snapshot at the stop");
    let snap: serde_json::Value = serde_json::from_slice(&text).expect("snapshot JSON");
    let devices = snap["state"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|e| e[0].as_str().is_some_and(|k| k.starts_with("s/offline"))).count());
    assert_eq!(devices, N, "{snap}");
    // Down for longer than the timeout, and the database damaged meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    wreck_database(dir.path());

    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    // Half the fleet speaks within the grace; the other half really went silent.
    for i in (0..N).step_by(2) {
        sensor.publish(&format!("sensors/d{i}/hb"), "1").await;
    }
    let (mut restored, mut restarted) = (None, None);
    let mut missing = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (missing.len() < N / 2 || restarted.is_none() || restored.is_none()) && Instant::now() < deadline {
        if let Some(m) = upstream.next_within(Duration::from_millis(200)).await {
            let ev = m.json();
            if ev["type"] == "edgewatch.agent.restored" {
                restored = Some(ev);
            } else if ev["type"] == "edgewatch.agent.restarted" {
                restarted = Some(ev);
            } else if ev["data"]["status"] == "missing" {
                missing.insert(ev["subject"].as_str().unwrap_or("?").to_owned());
            }
        }
    }
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    let expected: BTreeSet<String> = (1..N).step_by(2).map(|i| format!("d{i}")).collect();
    assert_eq!(missing, expected, "exactly the silent half is reported missing");
    let restored = restored.expect("the agent reports the restore");
    let restarted = restarted.expect("a restore is a restart: the agent reports it");
    assert_eq!(restarted["data"]["restored_from"], "snapshot", "{restarted}");
    assert_eq!(restarted["data"]["snapshot_time"], restored["data"]["snapshot_time"], "{restarted}\n{restored}");
    assert_eq!(restarted["data"]["restored_keys"], N, "{restarted}");
    assert!(restarted["data"]["downtime_ms"].as_i64().is_some_and(|d| d >= 6000), "{restarted}");
}

/// Issue 14 B: with no snapshot to restore, the `restored` event still said "lost": "changes
/// since the snapshot", and its reason was sled's debug text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_with_no_snapshot_says_nothing_was_restored() {
    let Rig { broker: _broker, addr: _addr, dir, config, metrics, mut upstream, mut agent, mut sensor } =
        rig(COUNT, "1h").await;
    sensor.publish("sensors/d0/reading", r#"{"device":"d0","seq":1,"value":1}"#).await;
    wait_metric(metrics, "edgewatch_commit_latency_seconds_count", WAIT, |n| n >= 1.0).await;
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    let _ = std::fs::remove_file(dir.path().join("state/snapshot.json"));
    wreck_database(dir.path());

    let mut agent = spawn_agent(&config);
    let deadline = Instant::now() + Duration::from_secs(20);
    let restored = next_of_type(&mut upstream, "edgewatch.agent.restored", deadline).await;
    let restarted = next_of_type(&mut upstream, "edgewatch.agent.restarted", deadline).await;
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    let restored = restored.expect("the agent reports the restore");
    let data = &restored["data"];
    assert_eq!(data["restored"], false, "{restored}");
    assert!(data["snapshot_time"].is_null(), "{restored}");
    assert!(data["lost"].as_str().is_some_and(|l| l.starts_with("all state")), "{restored}");
    // A sentence for people, not a Rust error's debug text.
    let reason = data["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("damaged") && reason.ends_with('.'), "{restored}");
    assert!(!reason.contains("backtrace") && !reason.contains("None"), "{restored}");
    let restarted = restarted.expect("a restore is a restart: the agent reports it");
    assert_eq!(restarted["data"]["restored_from"], "nothing", "{restarted}");
}

/// Issue 14 C: `downtime_ms` counted from the last 5 s "alive" mark, not from the last time
/// the agent wrote anything: a crash right after a commit looked up to 5 s longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_counts_from_the_last_commit_not_the_last_alive_mark() {
    let Rig { broker: _broker, addr: _addr, dir: _dir, config, metrics, mut upstream, mut agent, mut sensor } =
        rig(COUNT, "1s").await;
    let since_epoch =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).expect("after 1970");
    let sent = since_epoch(std::time::SystemTime::now());
    sensor.publish("sensors/d0/reading", r#"{"device":"d0","seq":1,"value":1}"#).await;
    // Its effects on disk, then killed.
    wait_metric(metrics, "edgewatch_commit_latency_seconds_count", WAIT, |n| n >= 1.0).await;
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();

    let mut agent = spawn_agent(&config);
    let deadline = Instant::now() + Duration::from_secs(20);
    let restarted = next_of_type(&mut upstream, "edgewatch.agent.restarted", deadline).await;
    agent.kill().expect("SIGKILL");
    let _ = agent.wait();
    let restarted = restarted.expect("the agent reports its restart");
    let down_since = restarted["data"]["down_since"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
    let down_since = down_since.map(since_epoch).unwrap_or_else(|| panic!("no down_since: {restarted}"));
    assert!(
        down_since >= sent,
        "down since {down_since} ms, but the agent committed a reading sent at {sent} ms: {restarted}"
    );
    assert_eq!(restarted["data"]["restored_from"], "database", "{restarted}");
}

/// Issue 14: a message the agent crashes on (a bug, memory, anything) was redelivered after
/// each restart and crashed it again, for ever. After `limits.max_deliveries` (3) deliveries
/// it is quarantined: dead-lettered with reason `poison`, acknowledged unprocessed, and the
/// readings behind it are processed. The crash is a real abort of the agent's process (the
/// `failpoints` feature of the test build), on both brokers: rumqttd redelivers with new
/// packet ids, Mosquitto with the same ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_crashes_the_agent_is_quarantined_after_three_deliveries() {
    for broker in Broker::all() {
        let label = broker.name();
        let addr = broker.addr();
        let dir = tempfile::tempdir().expect("temp dir");
        let (config, metrics) = write_config(dir.path(), addr, None, COUNT);
        let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/crash/events/#").await;
        let mut dead = Subscriber::connect(addr, "dead-letters", "edgewatch/crash/deadletter").await;
        let crash_on = [("EDGEWATCH_FAILPOINT_CRASH_ON", "crash-me")];
        let mut agent = spawn_agent_with(&config, &crash_on);
        wait_healthy(metrics).await;

        let mut sensor = Publisher::connect(addr, "sensor").await;
        sensor.publish("sensors/d1/reading", r#"{"device":"d1","seq":1,"value":1}"#).await;
        sensor.publish("sensors/d1/reading", r#"{"device":"d1","seq":2,"value":1,"note":"crash-me"}"#).await;
        sensor.publish("sensors/d1/reading", r#"{"device":"d1","seq":3,"value":1}"#).await;

        // Each run that crashes is followed by another, until one gets past the message.
        let mut crashes = 0;
        let letter = loop {
            // Either this run crashes, or the dead letter comes.
            let outcome = tokio::time::timeout(WAIT, async {
                loop {
                    if let Some(status) = agent.try_wait().expect("agent status") {
                        return Err(status);
                    }
                    if let Some(m) = dead.next_within(Duration::from_millis(50)).await {
                        return Ok(m.json());
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{label}: neither a crash nor a dead letter after {crashes} crashes"));
            match outcome {
                Ok(letter) => break letter,
                Err(status) => {
                    assert!(!status.success(), "{label}: the agent stopped by itself without crashing");
                    crashes += 1;
                    assert!(crashes <= 3, "{label}: the agent crashed {crashes} times on one message");
                    agent = spawn_agent_with(&config, &crash_on);
                }
            }
        };
        assert_eq!(crashes, 3, "{label}: quarantined after three deliveries, each of which crashed the agent");
        assert_eq!(letter["reason"], "poison", "{label}: {letter}");
        assert_eq!(letter["topic"], "sensors/d1/reading", "{label}");
        assert!(letter["payload_prefix"].as_str().is_some_and(|p| p.contains("crash-me")), "{label}: {letter}");

        // The readings on each side of it count once each; the poison one never.
        let mut seen = Seen::new();
        let deadline = Instant::now() + WAIT;
        while !seen.contains_key(&("d1".to_owned(), 2)) && Instant::now() < deadline {
            if let Some(m) = upstream.next_within(Duration::from_millis(100)).await {
                record(&mut seen, &m.json());
            }
        }
        let seqs = |n: i64| seen.get(&("d1".to_owned(), n)).map(|c| c.iter().map(|(s, _)| *s).collect::<Vec<_>>());
        assert_eq!((seqs(1), seqs(2)), (Some(vec![1]), Some(vec![3])), "{label}: {seen:?}");
        let quarantined = wait_metric(metrics, "edgewatch_messages_quarantined_total", WAIT, |v| v >= 1.0).await;
        assert_eq!(quarantined, 1.0, "{label}");
        assert!(agent.try_wait().expect("agent status").is_none(), "{label}: the agent keeps running");
        stop_cleanly(&mut agent);
    }
}

/// Issue 15: SIGHUP reloads the rules. The binary installs the handler and passes requests
/// to the agent as values; the library installs none (a test or an embedding program would
/// have its SIGHUP taken). File watching is off here, so only the signal can reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_the_binary_reloads_the_rules() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, metrics) = write_config_edited(dir.path(), addr, None, COUNT, |c| c.set("rules.watch", false));
    let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/crash/events/#").await;
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    let hot = r#"rule("hot", #{ on: "sensors/{device}/temperature", when: |e| e.value > 80.0 });"#;
    std::fs::write(dir.path().join("rules").join("hot.rhai"), hot).expect("new rule");
    let status = Command::new("kill").arg("-HUP").arg(agent.id().to_string()).status().expect("kill runs");
    assert!(status.success(), "kill -HUP failed");
    wait_metric(metrics, "edgewatch_reloads_total", WAIT, |n| n >= 1.0).await;
    let mut sensor = Publisher::connect(addr, "sensor").await;
    sensor.publish("sensors/t-1/temperature", "90").await;
    let ev = upstream.next().await.json();
    assert_eq!(ev["type"], "edgewatch.hot", "{ev}");
    stop_cleanly(&mut agent);
}

/// The `seq` of every journaled reading of `device`, in the order journaled, and the read's
/// report.
fn journaled(state: &Path, device: &str) -> (Vec<i64>, edgewatch::journal::ReadReport) {
    let dir = edgewatch::journal::dir_in(state);
    let topic = format!("sensors/{device}/reading");
    let mut seqs = Vec::new();
    let report = edgewatch::journal::read(&dir, (i64::MIN, i64::MAX), |e| {
        if let edgewatch::journal::Entry::Message { topic: t, payload, .. } = e {
            if t == topic {
                let v: serde_json::Value = serde_json::from_slice(payload).expect("JSON payload");
                seqs.push(v["seq"].as_i64().expect("seq"));
            }
        }
    })
    .expect("journal reads");
    (seqs, report)
}

/// Waits until the journal holds every seq of `want`.
async fn wait_journaled(state: &Path, device: &str, want: &BTreeSet<i64>) -> Vec<i64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (seqs, _) = journaled(state, device);
        let got: BTreeSet<i64> = seqs.iter().copied().collect();
        if want.is_subset(&got) || Instant::now() > deadline {
            return seqs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_survives_sigkill_with_only_the_torn_tail_lost() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, metrics) =
        write_config_edited(dir.path(), addr, None, COUNT, |c| c.set("journal.enabled", true).set("journal.max_mb", 4));
    let state = dir.path().join("state");
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    let mut sensor = Publisher::connect(addr, "sensors").await;
    let reading = |seq: i64| format!(r#"{{"device":"d0","seq":{seq},"value":1}}"#);
    for seq in 1..=100 {
        sensor.publish("sensors/d0/reading", reading(seq)).await;
    }
    let first: BTreeSet<i64> = (1..=100).collect();
    let seqs = wait_journaled(&state, "d0", &first).await;
    assert!(first.iter().all(|s| seqs.contains(s)), "journaled before the kill: {seqs:?}");

    agent.kill().expect("SIGKILL");
    agent.wait().expect("reaped");
    // As if the kill had come in the middle of a write: half a record at the end.
    let segments = std::fs::read_dir(edgewatch::journal::dir_in(&state)).expect("journal dir");
    let newest = segments.filter_map(Result::ok).map(|e| e.path()).max().expect("a segment");
    let mut bytes = std::fs::read(&newest).expect("segment");
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 0, 0x80]);
    std::fs::write(&newest, bytes).expect("torn tail");

    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    for seq in 101..=200 {
        sensor.publish("sensors/d0/reading", reading(seq)).await;
    }
    let all: BTreeSet<i64> = (1..=200).collect();
    let seqs = wait_journaled(&state, "d0", &all).await;
    let (_, report) = journaled(&state, "d0");
    assert_eq!(report.damaged, Vec::<String>::new(), "the torn tail is cut, not reported as damage");
    let got: BTreeSet<i64> = seqs.iter().copied().collect();
    assert_eq!(got, all, "every reading journaled");
    // A reading may be journaled twice: processed, then redelivered after the kill before
    // its acknowledgement went out. Never more, and never out of order within a run.
    let mut counts = BTreeMap::new();
    for s in &seqs {
        *counts.entry(*s).or_insert(0) += 1;
    }
    assert!(counts.values().all(|n| *n <= 2), "{counts:?}");
    let after_restart = seqs.iter().position(|s| *s > 100).expect("second run journaled");
    assert!(seqs[after_restart..].windows(2).all(|w| w[0] < w[1] || w[1] <= 100), "{seqs:?}");

    // The journal as a user reads it, with the agent running: exported as a recording, and a
    // backtest of the running rules against themselves over it finds no difference.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .output()
            .expect("edgewatch runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let exported = run(&["journal", "export", "--since", "1h"]);
    let recording = edgewatch::replay::parse(&exported, "export").expect("a recording");
    let messages = recording.iter().filter(|r| r.message.is_some()).count();
    assert_eq!(messages, seqs.len(), "{exported}");
    let rules = dir.path().join("rules");
    let report = run(&["backtest", "--rules", rules.to_str().expect("utf-8"), "--format", "json", "--exit-code"]);
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["inputs"].as_u64(), Some(seqs.len() as u64));
    let count = report["rules"].as_array().and_then(|r| r.iter().find(|r| r["rule"] == "count")).expect("count rule");
    // Redeliveries are recognised as duplicates (device + seq) in the backtest as in the agent.
    assert_eq!(count["baseline"].as_u64(), Some(all.len() as u64), "{count}");
    // All of it while the agent runs, which is none the worse for it.
    assert!(agent.try_wait().expect("status").is_none(), "the agent still runs");
    stop_cleanly(&mut agent);
}

const PAGED: &str = r#"
rule("hot", #{
    on: "sensors/{device}/reading",
    when: |e| e.payload.v > 80,
    clear: |e| e.payload.v < 75,
    notify: "pager",
});
"#;

/// Actions through SIGKILLs, a receiver that fails, then goes away, then comes back: it gets
/// every action, accepts each key once, in the order the events happened, with backoff
/// between attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_actions_survive_sigkill_and_a_receiver_that_fails_then_goes_away() {
    use edgewatch_e2e::{Reply, TomlValue, Webhook};
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let hook = Webhook::start().await;
    hook.script(std::iter::repeat_n(Reply::status(503), 4));
    let (config, metrics) = write_config_edited(dir.path(), addr, None, PAGED, |c| {
        c.sink(
            "pager",
            "http",
            &[
                ("url", hook.url("/page").into()),
                ("retry", TomlValue::raw(r#"{ min_wait = "100ms", max_wait = "400ms" }"#)),
            ],
        )
    });
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    let mut sensor = Publisher::connect(addr, "sensors").await;
    let hot = |d: usize| (format!("sensors/d{d:02}/reading"), r#"{"v": 90}"#.to_owned());
    for d in 0..10 {
        let (t, p) = hot(d);
        sensor.publish(&t, p).await;
    }
    // Killed while the receiver still fails.
    hook.wait_for("failed attempts", WAIT, |r| r.len() >= 3).await;
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reaped");
    // The receiver goes away; more events arrive while the agent is down (the broker keeps
    // them for its session) and after it is back.
    let gone = hook.stop().await;
    for d in 10..15 {
        let (t, p) = hot(d);
        sensor.publish(&t, p).await;
    }
    agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    for d in 15..20 {
        let (t, p) = hot(d);
        sensor.publish(&t, p).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    agent.kill().expect("SIGKILL");
    agent.wait().expect("reaped");
    let hook = gone.restart().await;
    agent = spawn_agent(&config);
    let accepted = |r: &[edgewatch_e2e::webhook::Request]| {
        r.iter().filter(|r| r.answered == 200).filter_map(|r| r.key.clone()).collect::<BTreeSet<_>>().len()
    };
    let seen = hook.wait_for("20 actions accepted", Duration::from_secs(60), |r| accepted(r) == 20).await;
    stop_cleanly(&mut agent);

    // Each key is one event's action: the receiver, deduplicating by key, has all 20 once.
    let mut first_ok: Vec<(String, String)> = Vec::new();
    for r in seen.iter().filter(|r| r.answered == 200) {
        let key = r.key.clone().expect("Idempotency-Key");
        if !first_ok.iter().any(|(k, _)| *k == key) {
            first_ok.push((key, r.body["subject"].as_str().unwrap_or("?").to_owned()));
        }
    }
    let subjects: Vec<&str> = first_ok.iter().map(|(_, s)| s.as_str()).collect();
    let expected: Vec<String> = (0..20).map(|d| format!("d{d:02}")).collect();
    assert_eq!(subjects, expected, "every event's action, in order");
    // A key is always the same event: its body says so.
    for r in &seen {
        let subject = first_ok.iter().find(|(k, _)| Some(k) == r.key.as_ref()).map(|(_, s)| s.as_str());
        assert_eq!(subject, r.body["subject"].as_str(), "one key, one event");
    }
    // Backoff: attempts at one action are never back to back.
    let mut last: BTreeMap<String, Instant> = BTreeMap::new();
    for r in seen.iter() {
        let key = r.key.clone().unwrap_or_default();
        if let Some(prev) = last.insert(key, r.at) {
            assert!(r.at.duration_since(prev) >= Duration::from_millis(45), "retried without backoff");
        }
    }
}

/// Issue 20, privacy: a marker planted in protected fields (pseudonymised, dropped, masked)
/// never appears in any event, dead letter (undecodable, refused by the schema, quarantined
/// after crashes), log line at `debug`, journal segment, history key or any byte of the state
/// directory; and what rules see is the protected form (the same pseudonym for the same
/// person, a masked badge, a cut coordinate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_field_never_reaches_an_event_a_dead_letter_a_log_the_journal_or_the_state() {
    const MARKER: &str = "7f3a9c0d";
    const RULES: &str = r#"
rule("swipe", #{ on: "badges/{device}/swipe", when: |e| true, emit: |e| e.payload });
rule("alive", #{ on: "badges/{device}/swipe", heartbeat: #{ timeout: "1h" }, remember: "temp" });
rule("per-holder", #{ on: "badges/+/swipe", key: |e| e.payload.holder, window: #{ size: "1h", value: |e| e.payload.temp },
                      when: |e| e.window.count >= 2, clear: |e| false });
"#;
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("privacy.key");
    std::fs::write(&key, "a test secret, 32 bytes or so...\n").expect("key");
    let privacy = r#"{ drop = ["phone"], mask = { badge = { keep_last = 2 }, "gps.lat" = { decimals = 2 } },
                       pseudonymise = { owner = "1d", holder = "never" } }"#;
    let (config, metrics) = write_config_edited(dir.path(), addr, None, RULES, |c| {
        let mut c = c
            .subscribe_with(
                "badges/#",
                &[("schema", "swipe".into()), ("privacy", edgewatch_e2e::TomlValue::raw(privacy.replace('\n', " ")))],
            )
            .set("privacy.key_file", key.as_path())
            .set("schemas.swipe.fields.temp", edgewatch_e2e::TomlValue::raw(r#"{ type = "number" }"#))
            .set("schemas.swipe.fields.owner", edgewatch_e2e::TomlValue::raw(r#"{ type = "string", max_length = 40 }"#))
            .set("journal.enabled", true)
            .set("history.fine", "1s")
            .set("history.coarse", "2s");
        c = c.set("state.snapshot_interval", "1s");
        c
    });
    let logs = tempfile::NamedTempFile::new().expect("log file");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_edgewatch"))
            .args(["run", "--config"])
            .arg(&config)
            .env("EDGEWATCH_FAILPOINT_CRASH_ON", "crash-me")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logs.reopen().map(Stdio::from).expect("log file"))
            .spawn()
            .expect("agent starts")
    };
    let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/crash/#").await;
    let mut agent = spawn();
    wait_healthy(metrics).await;
    let mut sensor = Publisher::connect(addr, "badges").await;
    let swipe = |device: &str, person: &str, temp: f64| {
        format!(
            r#"{{"device":"{device}","temp":{temp},"owner":"owner-{person}-{MARKER}","holder":"holder-{person}-{MARKER}",
                "phone":"+41 79 {MARKER}","badge":"B-{MARKER}","gps":{{"lat":46.2043{MARKER_DIGITS},"lon":6.14}}}}"#
        )
        .replace('\n', " ")
    };
    const MARKER_DIGITS: &str = "7309";
    for (device, person, temp) in
        [("d1", "alice", 20.5), ("d1", "alice", 21.0), ("d2", "bob", 19.0), ("d2", "alice", 22.0)]
    {
        sensor.publish(&format!("badges/{device}/swipe"), swipe(device, person, temp)).await;
    }
    // Undecodable, and refused by the schema (an owner too long), each with the marker.
    sensor.publish("badges/d1/swipe", format!(r#"{{"device":"d1","owner":"owner-{MARKER}"#)).await;
    let long =
        format!(r#"{{"device":"d1","temp":1,"owner":"owner-alice-{MARKER}-and-much-more-than-forty-characters"}}"#);
    sensor.publish("badges/d1/swipe", long).await;

    let mut seen: Vec<Received> = Vec::new();
    let mut swipes = Vec::new();
    let mut letters = Vec::new();
    let deadline = Instant::now() + WAIT;
    while (swipes.len() < 4 || letters.len() < 2) && Instant::now() < deadline {
        if let Some(m) = upstream.next_within(Duration::from_millis(100)).await {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            if v["type"] == "edgewatch.swipe" {
                swipes.push(v["data"].clone());
            } else if m.topic.ends_with("/deadletter") {
                letters.push(v);
            }
            seen.push(m);
        }
    }
    assert_eq!(swipes.len(), 4, "{swipes:?}");
    assert_eq!(letters.len(), 2, "{letters:?}");
    for letter in &letters {
        assert!(letter["payload_prefix"].is_null(), "no byte of a protected payload: {letter}");
    }
    assert!(
        letters.iter().any(|l| l["reason"] == "schema" && l["error"].as_str().is_some_and(|e| e.contains("owner")))
    );

    // A message the agent crashes on, three times: quarantined, still without its bytes.
    sensor.publish("badges/d2/swipe", format!(r#"{{"device":"d2","temp":1,"phone":"crash-me {MARKER}"}}"#)).await;
    let mut crashes = 0;
    let poison = loop {
        let outcome = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(status) = agent.try_wait().expect("agent status") {
                    return Err(status);
                }
                if let Some(m) = upstream.next_within(Duration::from_millis(50)).await {
                    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                    let is_poison = v["reason"] == "poison";
                    seen.push(m);
                    if is_poison {
                        return Ok(v);
                    }
                }
            }
        })
        .await
        .expect("a crash or the dead letter");
        match outcome {
            Ok(letter) => break letter,
            Err(_) => {
                crashes += 1;
                assert!(crashes <= 3, "crashed {crashes} times");
                agent = spawn();
            }
        }
    };
    assert!(poison["payload_prefix"].is_null(), "{poison}");

    // What rules saw: the same pseudonym for the same person and day, another for another
    // person; no phone; the badge's last two characters; the latitude cut to 2 decimals.
    let owners: Vec<&str> = swipes.iter().map(|s| s["owner"].as_str().expect("owner is a string")).collect();
    assert!(owners.iter().all(|o| o.len() == 16 && o.chars().all(|c| c.is_ascii_hexdigit())), "{owners:?}");
    assert_eq!((owners[0], owners[0]), (owners[1], owners[3]), "alice is one pseudonym: {owners:?}");
    assert_ne!(owners[0], owners[2], "bob is another: {owners:?}");
    assert!(swipes.iter().all(|s| s.get("phone").is_none()), "{swipes:?}");
    assert_eq!(swipes[0]["badge"], format!("{}{}", "*".repeat(MARKER.len()), &MARKER[MARKER.len() - 2..]));
    assert_eq!(swipes[0]["gps"]["lat"], 46.2);
    // The window keyed on the holder's fixed pseudonym: alice's second swipe fired it.
    let is_per_holder = |m: &Received| {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        (v["type"] == "edgewatch.per-holder").then_some(v)
    };
    let per_holder = match seen.iter().find_map(is_per_holder) {
        Some(v) => v,
        None => loop {
            let m = upstream.next_within(WAIT).await.expect("the per-holder event");
            let found = is_per_holder(&m);
            seen.push(m);
            if let Some(v) = found {
                break v;
            }
        },
    };
    let subject = per_holder["subject"].as_str().expect("subject");
    assert_eq!(subject, swipes[0]["holder"].as_str().expect("holder"), "{per_holder}");
    // The agent restarted after its crashes: one more swipe, counted by the new process.
    sensor.publish("badges/d2/swipe", swipe("d2", "bob", 18.0)).await;
    let protected = wait_metric(metrics, "edgewatch_privacy_fields_protected_total", WAIT, |v| v >= 5.0).await;
    assert_eq!(protected, 5.0, "owner, holder, phone, badge and gps.lat of one swipe");
    // Into history too: a swipe in a later period closes the first one's roll-up.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    sensor.publish("badges/d2/swipe", swipe("d2", "bob", 17.0)).await;
    wait_metric(metrics, "edgewatch_privacy_fields_protected_total", WAIT, |v| v >= 10.0).await;

    stop_cleanly(&mut agent);
    // The journal holds the protected payloads.
    let journaled: Vec<serde_json::Value> = {
        let mut out = Vec::new();
        edgewatch::journal::read(&edgewatch::journal::dir_in(&dir.path().join("state")), (i64::MIN, i64::MAX), |e| {
            if let edgewatch::journal::Entry::Message { payload, .. } = e {
                out.push(serde_json::from_slice(payload).expect("JSON"));
            }
        })
        .expect("journal reads");
        out
    };
    // (What the crashed runs had not written yet is lost with them, as any journal tail.)
    assert!(!journaled.is_empty());
    assert!(journaled.iter().all(|j| j["owner"].as_str().is_none_or(|o| o.len() == 16)), "{journaled:?}");

    // Not one byte of the marker anywhere.
    let mut files = vec![logs.path().to_owned()];
    let mut dirs = vec![dir.path().to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("dir").filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    assert!(files.len() > 5, "state, journal, history, snapshot, log: {files:?}");
    let log = std::fs::read_to_string(logs.path()).expect("log");
    assert!(log.contains("DEBUG") || log.contains("INFO"), "the log was written at debug");
    for file in &files {
        let bytes = std::fs::read(file).expect("readable");
        assert!(!contains(&bytes, MARKER.as_bytes()), "the marker is in {}", file.display());
    }
    for m in &seen {
        assert!(!contains(&m.payload, MARKER.as_bytes()), "the marker went upstream on {}", m.topic);
    }
    assert!(history_totals(&dir.path().join("state"), "d2", "temp", edgewatch::history::Resolution::Fine).1 >= 1);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Issue 20, audit: a reload through each trigger (SIGHUP, the control topic with its caller,
/// the file watch) is recorded with the files' old and new hashes, between the starts; every
/// entry also goes upstream on `<prefix>/audit`, in order. `edgewatch audit verify` passes,
/// then fails after a byte of an old entry is changed, and after an entry is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_through_each_trigger_are_audited_and_verify_finds_a_changed_or_removed_entry() {
    let broker = Broker::embedded();
    let addr = broker.addr();
    let dir = tempfile::tempdir().expect("temp dir");
    let edit = |watch: bool| move |c: AgentToml| c.set("rules.watch", watch).set("rules.control_topic", true);
    let (config, metrics) = write_config_edited(dir.path(), addr, None, COUNT, edit(false));
    let mut cloud = Subscriber::connect(addr, "cloud", "edgewatch/crash/audit").await;
    let hot = |limit: u32| {
        format!(r#"rule("hot", #{{ on: "sensors/{{device}}/temperature", when: |e| e.value > {limit}.0 }});"#)
    };
    let hot_file = dir.path().join("rules").join("hot.rhai");
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    let reloads = |n: f64| wait_metric(metrics, "edgewatch_reloads_total", WAIT, move |v| v >= n);

    std::fs::write(&hot_file, hot(80)).expect("new rule");
    let status = Command::new("kill").arg("-HUP").arg(agent.id().to_string()).status().expect("kill runs");
    assert!(status.success(), "kill -HUP failed");
    reloads(1.0).await;
    std::fs::write(&hot_file, hot(90)).expect("changed rule");
    let mut operator = Publisher::connect(addr, "operator").await;
    operator.publish("edgewatch/crash/control/reload", r#"{"by": "alice"}"#).await;
    reloads(2.0).await;
    stop_cleanly(&mut agent);

    // Again with the file watch on.
    let (config, metrics) = write_config_edited(dir.path(), addr, None, COUNT, edit(true));
    let mut agent = spawn_agent(&config);
    wait_healthy(metrics).await;
    std::fs::write(&hot_file, hot(70)).expect("changed again");
    wait_metric(metrics, "edgewatch_reloads_total", WAIT, |v| v >= 1.0).await;
    stop_cleanly(&mut agent);

    let audit = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgewatch"))
            .arg("audit")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("edgewatch audit runs")
    };
    let out = audit(&["--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an entry per line"))
        .collect();
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds, ["start", "reload", "reload", "start", "reload"], "{entries:#?}");
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap_or(0)).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let hot_name = hot_file.display().to_string();
    let change = |e: &serde_json::Value| {
        e["data"]["changes"].as_array().and_then(|c| c.iter().find(|c| c["file"] == hot_name.as_str())).cloned()
    };
    let (signal, control, file) = (&entries[1]["data"], &entries[2]["data"], &entries[4]["data"]);
    assert_eq!(
        (signal["trigger"].as_str(), control["trigger"].as_str(), file["trigger"].as_str()),
        (Some("signal"), Some("control"), Some("file"))
    );
    assert_eq!(control["by"], "alice");
    let added = change(&entries[1]).expect("the new file");
    assert!(added["old"].is_null() && added["new"].is_string() && added["loaded"] == true, "{added}");
    let edited = change(&entries[2]).expect("the edit");
    assert_eq!(edited["old"], added["new"], "the old hash is the version that ran");
    assert_ne!(edited["new"], edited["old"]);
    let watched = change(&entries[4]).expect("the watched edit");
    assert_eq!(watched["old"], edited["new"], "across a restart too");
    // The second start names the file's running version.
    assert_eq!(entries[3]["data"]["rules"]["files"][hot_name.as_str()], edited["new"], "{}", entries[3]);
    assert!(entries[0]["data"]["config_sha256"].as_str().is_some_and(|h| h.len() == 64));

    // Upstream: every entry, in order, exactly as stored.
    let mut sent = Vec::new();
    while sent.len() < 5 {
        let m = cloud.next_within(WAIT).await.expect("an audit entry upstream");
        sent.push(m.json());
    }
    assert_eq!(sent, entries);

    let out = audit(&["verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 entries (entries 1 to 5), chain intact"));

    // A changed byte in entry 2, then entry 3 removed.
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path().join("state").join("audit"))
        .expect("audit dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let original = std::fs::read_to_string(&files[0]).expect("log");
    let changed = original.replacen("\"signal\"", "\"Signal\"", 1);
    assert_ne!(changed, original);
    std::fs::write(&files[0], &changed).expect("tamper");
    let out = audit(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("entry 2 was changed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let removed: String =
        original.lines().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(&files[0], removed).expect("remove");
    let out = audit(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("entry 4 follows entry 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
