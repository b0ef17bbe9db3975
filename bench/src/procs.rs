//! The processes under test: Mosquitto (the broker every contender shares), the Edgewatch
//! release binary and Node-RED 4, each started fresh for every step on loopback ports with
//! their own configuration in a temporary directory, and killed by their own handle
//! afterwards (Mosquitto through the workspace's one launcher, `edgewatch_e2e::Mosquitto`). Also
//! their CPU time and peak memory, read from `/proc`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgewatch_e2e::{Log, Mosquitto};
use serde_json::json;

/// Which rule (or flow) a contender runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Every reading above 20 °C is forwarded (all are): one output per reading.
    Threshold,
    /// A sliding window of each device's last 10 readings; its count and average with
    /// every reading: one output per reading.
    Window,
    /// Each device's heartbeats reset a deadline; a missed one is reported.
    Heartbeat,
    /// The threshold rule, and each device's temperature kept in history (`remember`):
    /// what history costs per message (issue 16).
    History,
    /// The threshold rule with a past of an hour by the minute, read at every reading
    /// (`history(...)` in `when`): what an in-rule span costs per message (issue 16).
    Past,
    /// `Past`'s rule without its past: the same closure, with a map of the same five numbers
    /// built in place of `history(...)`'s. `Past` against it is what the span itself costs
    /// (kept, saved, read); against `Threshold` it also pays for a closure the engine cannot
    /// evaluate natively (issue 16).
    Script,
    /// The threshold rule with the input journal on (`[journal] enabled = true`): what the
    /// journal costs per message (issue 18).
    Journal,
    /// The threshold rule with privacy on the sensors' subscription (the device id
    /// pseudonymised, the temperature cut to 1 decimal): what privacy costs per message
    /// (issue 20).
    Privacy,
    /// The threshold rule with all of issue 20 on: a schema and privacy on the sensors'
    /// subscription, and the event log (on by default; the audit trail always is): what
    /// it all costs per message, against `edgewatch-threshold` with the event log off.
    Governed,
    /// The threshold rule with the console on and 10 clients reading its live stream (every
    /// event is a frame to each): what watching costs per message (issue 21).
    Watched,
    /// The same readings as Sparkplug B DDATA by alias (`format = "sparkplug"`, 100 devices
    /// per edge node), every temperature above 20 °C emitted with the reading's number and
    /// send time: what Sparkplug costs per message against JSON (issue 22).
    Sparkplug,
}

/// Live stream clients of `Rule::Watched`.
pub const STREAM_CLIENTS: usize = 10;

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Threshold => "threshold",
            Rule::Window => "window",
            Rule::Heartbeat => "heartbeat",
            Rule::History => "history",
            Rule::Past => "past",
            Rule::Script => "script",
            Rule::Journal => "journal",
            Rule::Privacy => "privacy",
            Rule::Governed => "governed",
            Rule::Watched => "watched",
            Rule::Sparkplug => "sparkplug",
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released; a race is possible but unlikely).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A process we started; killed (by its handle) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// Its configuration, state and log.
    pub dir: tempfile::TempDir,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks it to stop (SIGTERM, to its own pid) and waits up to `grace` for it to exit;
    /// dropping it then kills it if it has not. For profilers that write their data on exit.
    pub fn stop(mut self, grace: Duration) {
        if grace.is_zero() || !self.alive() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let start = Instant::now();
        while self.alive() && start.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("log.txt")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_file(dir: &Path) -> anyhow::Result<Stdio> {
    Ok(Stdio::from(std::fs::File::create(dir.join("log.txt"))?))
}

// ------------------------------------------------------------------------------- Mosquitto

/// The `mosquitto` binary; installs the Debian package (as root, or with sudo) when missing.
pub fn find_or_install_mosquitto() -> anyhow::Result<PathBuf> {
    let find = Mosquitto::binary;
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("bench: mosquitto not found; installing it with apt-get");
    as_root(&["apt-get", "update", "-qq"])?;
    as_root(&[
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "mosquitto",
    ])?;
    find().context("mosquitto still not found after apt-get install")
}

/// Runs a command as root: directly when we are root, else through sudo (like `.ci/run`).
fn as_root(args: &[&str]) -> anyhow::Result<()> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    let mut cmd = if root { Command::new(args[0]) } else { Command::new("sudo") };
    if root {
        cmd.args(&args[1..]);
    } else {
        cmd.args(args);
    }
    let status = cmd.status().with_context(|| format!("cannot run {}", args.join(" ")))?;
    if !status.success() {
        bail!("{} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Mosquitto's configuration for the benchmark: loopback only, no persistence, an in-flight
/// window large enough that acknowledging after a flush does not throttle (the setting the
/// operations guide recommends), and a queue that holds a whole overloaded step, so a slow
/// consumer shows up as latency and drain time rather than as broker drops.
pub fn mosquitto_conf(port: u16) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n\
         log_type warning\nmax_inflight_messages 1000\nmax_queued_messages 2000000\nmax_queued_bytes 0\n\
         set_tcp_nodelay true\n"
    )
}

/// Starts Mosquitto on a free loopback port, with [`mosquitto_conf`], its log kept for
/// [`Mosquitto::log_tail`]; the workspace's one launcher (edgewatch-e2e) does the work.
pub fn start_mosquitto(bin: &Path) -> anyhow::Result<(Mosquitto, SocketAddr)> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let broker = Mosquitto::launch(bin, addr, &mosquitto_conf(port), Log::File)?;
    Ok((broker, addr))
}

/// `mosquitto -h` prints its version on the first line.
pub fn mosquitto_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-h")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
        .map(|l| l.trim_start_matches("mosquitto version ").to_owned())
        .unwrap_or_else(|| "unknown".into())
}

// ------------------------------------------------------------------------------- Edgewatch

/// Where Edgewatch publishes its events; the consumer subscribes here.
pub const EDGEWATCH_EVENTS: &str = "edgewatch/bench/events/#";

/// The rule file for `rule`: each emits `n` and `sent` of the input it answers (the
/// threshold rule by forwarding the payload, which is its default data). Every file also
/// has a `probe` rule the harness uses to know the agent is subscribed.
pub fn edgewatch_rules(rule: Rule, heartbeat_timeout: Duration) -> String {
    let body = match rule {
        Rule::Threshold | Rule::Journal | Rule::Privacy | Rule::Governed | Rule::Watched => {
            "// Every reading above 20 °C; the event's data is the reading itself.\n\
             rule(\"threshold\", #{\n    on: \"sensors/{device}/temperature\",\n    when: |e| e.value > 20.0,\n});\n"
                .to_owned()
        }
        Rule::History => "// Every reading above 20 °C, and each device's temperature kept in history.\n\
             rule(\"history\", #{\n    on: \"sensors/{device}/temperature\",\n    when: |e| e.value > 20.0,\n    remember: \"temperature\",\n});\n"
            .to_owned(),
        Rule::Past => "// Every reading above 20 °C, with the device's last hour by the minute read each time.\n\
             rule(\"past\", #{\n    on: \"sensors/{device}/temperature\",\n    past: #{ temperature: \"1h by 1m\" },\n    \
             when: |e| { let h = history(\"temperature\", \"1h\"); e.value > 20.0 || h.count < 0 },\n});\n"
            .to_owned(),
        Rule::Script => "// Every reading above 20 °C, through `past`'s closure without the past.\n\
             rule(\"script\", #{\n    on: \"sensors/{device}/temperature\",\n    \
             when: |e| { let h = #{ count: 0, avg: 0.0, min: 0.0, max: 0.0, stddev: 0.0 }; e.value > 20.0 || h.count < 0 },\n});\n"
            .to_owned(),
        Rule::Window => "// A sliding window of each device's last 10 readings, reported with every reading.\n\
             rule(\"window\", #{\n    on: \"sensors/{device}/temperature\",\n    window: #{ count: 10 },\n    \
             emit: |e| #{ device: e.device, n: e.payload.n, sent: e.payload.sent, count: e.window.count, avg: e.window.avg },\n});\n"
            .to_owned(),
        Rule::Sparkplug => "// Every Sparkplug DDATA whose temperature is above 20 °C, with the reading's n and sent\n\
             // (the whole payload would name `n` twice: `changed` holds each metric's time).\n\
             rule(\"sparkplug\", #{\n    on: \"spBv1.0/+/DDATA/+/+\",\n    when: |e| e.payload.metrics.temperature > 20.0,\n    \
             emit: |e| #{ n: e.payload.metrics.n, sent: e.payload.metrics.sent },\n});\n"
            .to_owned(),
        Rule::Heartbeat => format!(
            "// A device whose heartbeats stop is reported missing one timeout after the last.\n\
             rule(\"offline\", #{{\n    on: \"sensors/{{device}}/heartbeat\",\n    heartbeat: #{{ timeout: \"{}ms\" }},\n}});\n",
            heartbeat_timeout.as_millis()
        ),
    };
    format!("{body}\nrule(\"probe\", #{{ on: \"bench/probe\", when: |e| true }});\n")
}

/// The agent's configuration: QoS 1 both ways; state durable (the default, in `dir/state`)
/// or, for reference, in memory.
pub fn edgewatch_config(dir: &Path, broker: SocketAddr, durable: bool) -> String {
    let path = |p: PathBuf| format!("{:?}", p.display().to_string());
    format!(
        "[agent]\nid = \"bench\"\nstate_dir = {}\n\n[rules]\ndir = {}\nwatch = false\n\n[source]\nurl = \"mqtt://{broker}\"\n\n\
         [[subscriptions]]\ntopic = \"sensors/#\"\nqos = 1\nformat = \"json\"\n\n\
         [[subscriptions]]\ntopic = \"bench/probe\"\nqos = 1\nformat = \"json\"\n\n\
         [upstream]\nqos = 1\n\n[state]\ndurable = {durable}\n",
        path(dir.join("state")),
        path(dir.join("rules"))
    )
}

/// `config` with privacy on the sensors' subscription, keyed with the secret in `key`.
pub fn with_privacy(config: &str, key: &Path) -> String {
    let protect = "privacy = { pseudonymise = { device = \"never\" }, mask = { temperature = { decimals = 1 } } }\n";
    let sensors = "topic = \"sensors/#\"\nqos = 1\nformat = \"json\"\n";
    format!(
        "[privacy]\nkey_file = {:?}\n\n{}",
        key.display().to_string(),
        config.replacen(sensors, &format!("{sensors}{protect}"), 1)
    )
}

/// `config` with Sparkplug B read from `spBv1.0/#`.
pub fn with_sparkplug(config: &str) -> String {
    let probe = "[[subscriptions]]\ntopic = \"bench/probe\"";
    config.replacen(
        probe,
        &format!("[[subscriptions]]\ntopic = \"spBv1.0/#\"\nqos = 1\nformat = \"sparkplug\"\n\n{probe}"),
        1,
    )
}

/// `config` with a schema on the sensors' subscription that every reading and heartbeat
/// of the simulated fleet meets (six fields checked).
pub fn with_schema(config: &str) -> String {
    let sensors = "topic = \"sensors/#\"\nqos = 1\nformat = \"json\"\n";
    let schema = "\n[schemas.reading.fields]\n\
        device = { type = \"string\", min_length = 1, max_length = 64 }\n\
        seq = { type = \"integer\", min = 0 }\n\
        kind = { type = \"enum\", values = [\"reading\", \"heartbeat\"] }\n\
        temperature = { type = \"number\", min = -100, max = 1000, optional = true }\n\
        n = { type = \"integer\", min = 0, optional = true }\n\
        sent = { type = \"integer\", min = 0, optional = true }\n";
    config.replacen(sensors, &format!("{sensors}schema = \"reading\"\n"), 1) + schema
}

/// Starts `edgewatch run` with `rule`, connected to `broker`, state durable or in memory.
pub fn start_edgewatch(
    bin: &Path,
    broker: SocketAddr,
    rule: Rule,
    heartbeat_timeout: Duration,
    durable: bool,
) -> anyhow::Result<Proc> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("rules"))?;
    std::fs::write(dir.path().join("rules").join("bench.rhai"), edgewatch_rules(rule, heartbeat_timeout))?;
    let conf = dir.path().join("edgewatch.toml");
    let mut config = edgewatch_config(dir.path(), broker, durable);
    if rule == Rule::Journal {
        config.push_str("\n[journal]\nenabled = true\n");
    }
    if rule == Rule::Sparkplug {
        config = with_sparkplug(&config);
    }
    if rule == Rule::Privacy || rule == Rule::Governed {
        let key = dir.path().join("privacy.key");
        std::fs::write(&key, "a bench secret of 32 bytes......")?;
        config = with_privacy(&config, &key);
    }
    if rule == Rule::Governed {
        config = with_schema(&config);
    }
    let console = (rule == Rule::Watched).then(free_port).transpose()?;
    if let Some(port) = console {
        config.push_str(&format!("\n[console]\nlisten = \"127.0.0.1:{port}\"\n"));
    }
    std::fs::write(&conf, config)?;
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&conf)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(dir.path())?)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    if let Some(port) = console {
        watch_stream(SocketAddr::from(([127, 0, 0, 1], port)), STREAM_CLIENTS)?;
    }
    Ok(Proc { child, dir })
}

/// Connects `clients` readers to the console's live stream at `addr` (waiting for it to
/// listen), each on a thread that reads and drops every frame until the agent goes.
fn watch_stream(addr: SocketAddr, clients: usize) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    for _ in 0..clients {
        let mut tcp = loop {
            match std::net::TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if std::time::Instant::now() > deadline => bail!("the console at {addr} does not listen: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        tcp.write_all(format!("GET /api/v1/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
        });
    }
    Ok(())
}

/// `edgewatch --version`.
pub fn edgewatch_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().trim_start_matches("edgewatch ").to_owned())
        .unwrap_or_else(|| "unknown".into())
}

// ------------------------------------------------------------------------------- Node-RED

/// Where Node-RED publishes; the consumer subscribes here.
pub const NODE_RED_EVENTS: &str = "nodered/events/#";

/// `npm install --prefix <cache> node-red@4` unless it is already there; returns `red.js`.
pub fn find_or_install_node_red(cache: &Path) -> anyhow::Result<PathBuf> {
    let red = cache.join("node_modules").join("node-red").join("red.js");
    if red.is_file() && node_red_version(cache).starts_with('4') {
        return Ok(red);
    }
    std::fs::create_dir_all(cache)?;
    eprintln!("bench: installing node-red@4 into {} (npm)", cache.display());
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(cache)
        .arg("node-red@4")
        .status()
        .context("cannot run npm (is Node.js installed?)")?;
    if !status.success() || !red.is_file() {
        bail!("npm install node-red@4 failed: {status}");
    }
    Ok(red)
}

/// The installed Node-RED's version, from its package.json.
pub fn node_red_version(cache: &Path) -> String {
    std::fs::read(cache.join("node_modules").join("node-red").join("package.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// `node --version`.
pub fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Node-RED's settings: no editor, no admin API, no HTTP nodes, flows from `flows.json`.
pub fn node_red_settings(dir: &Path, port: u16) -> String {
    let d = serde_json::to_string(&dir.display().to_string()).unwrap_or_default();
    let f = serde_json::to_string(&dir.join("flows.json").display().to_string()).unwrap_or_default();
    format!(
        "module.exports = {{\n  uiHost: \"127.0.0.1\",\n  uiPort: {port},\n  httpAdminRoot: false,\n  httpNodeRoot: false,\n  \
         userDir: {d},\n  flowFile: {f},\n  flowFilePretty: false,\n  credentialSecret: false,\n  \
         logging: {{ console: {{ level: \"warn\", metrics: false, audit: false }} }},\n  \
         diagnostics: {{ enabled: false, ui: false }},\n  runtimeState: {{ enabled: false, ui: false }},\n  \
         telemetry: {{ enabled: false }},\n  externalModules: {{ autoInstall: false }},\n  functionExternalModules: false,\n}};\n"
    )
}

/// The flows for `rule`, each the Node-RED way of saying what the Edgewatch rule says:
///
/// - threshold: mqtt in -> json -> switch (`payload.temperature > 20`) -> mqtt out;
/// - window: mqtt in -> json -> switch (`payload.kind == "reading"`) -> function (the last
///   10 readings per topic in node context; count and average) -> mqtt out;
/// - heartbeat: mqtt in -> json -> switch (`payload.kind == "heartbeat"`) -> trigger (per
///   `msg.topic`: send nothing, then the latest message if nothing arrives for the timeout;
///   each message extends the delay) -> mqtt out. One trigger node handling each topic
///   separately is Node-RED's own per-device watchdog; 10 000 trigger nodes would be the
///   literal reading and slower to deploy, not faster to run.
///
/// Plus the probe: mqtt in `bench/probe` -> mqtt out.
pub fn node_red_flows(rule: Rule, broker: SocketAddr, heartbeat_timeout: Duration) -> serde_json::Value {
    let mut nodes = vec![
        json!({"id": "bench-tab", "type": "tab", "label": "bench"}),
        json!({"id": "bench-broker", "type": "mqtt-broker", "name": "mosquitto", "broker": broker.ip().to_string(),
            "port": broker.port().to_string(), "clientid": "nodered-bench", "autoConnect": true, "usetls": false,
            "protocolVersion": "4", "keepalive": "60", "cleansession": true, "autoUnsubscribe": true,
            "birthTopic": "", "closeTopic": "", "willTopic": ""}),
        json!({"id": "bench-in", "type": "mqtt in", "z": "bench-tab", "topic": "sensors/#", "qos": "1", "datatype": "utf8",
            "broker": "bench-broker", "nl": false, "rap": true, "rh": 0, "inputs": 0, "wires": [["bench-json"]]}),
        json!({"id": "bench-json", "type": "json", "z": "bench-tab", "property": "payload", "action": "obj", "pretty": false,
            "wires": [["bench-switch"]]}),
        json!({"id": "bench-out", "type": "mqtt out", "z": "bench-tab", "topic": format!("nodered/events/{}", rule.name()),
            "qos": "1", "retain": "false", "broker": "bench-broker", "wires": []}),
        json!({"id": "bench-probe-in", "type": "mqtt in", "z": "bench-tab", "topic": "bench/probe", "qos": "1", "datatype": "utf8",
            "broker": "bench-broker", "nl": false, "rap": true, "rh": 0, "inputs": 0, "wires": [["bench-probe-out"]]}),
        json!({"id": "bench-probe-out", "type": "mqtt out", "z": "bench-tab", "topic": "nodered/events/probe", "qos": "1",
            "retain": "false", "broker": "bench-broker", "wires": []}),
    ];
    let switch = |property: &str, t: &str, v: &str, vt: &str, next: &str| {
        json!({"id": "bench-switch", "type": "switch", "z": "bench-tab", "property": property, "propertyType": "msg",
            "rules": [{"t": t, "v": v, "vt": vt}], "checkall": "true", "repair": false, "outputs": 1,
            "wires": [[format!("bench-{next}")]]})
    };
    match rule {
        Rule::Threshold
        | Rule::History
        | Rule::Past
        | Rule::Script
        | Rule::Journal
        | Rule::Privacy
        | Rule::Governed
        | Rule::Watched
        // Not offered to Node-RED (no Sparkplug setup of it here); the JSON threshold's flow.
        | Rule::Sparkplug => nodes.push(switch("payload.temperature", "gt", "20", "num", "out")),
        Rule::Window => {
            nodes.push(switch("payload.kind", "eq", "reading", "str", "window"));
            nodes.push(
                json!({"id": "bench-window", "type": "function", "z": "bench-tab", "name": "last 10 per device",
                "func": WINDOW_FUNCTION, "outputs": 1, "timeout": 0, "noerr": 0, "initialize": "", "finalize": "",
                "libs": [], "wires": [["bench-out"]]}),
            );
        }
        Rule::Heartbeat => {
            nodes.push(switch("payload.kind", "eq", "heartbeat", "str", "watchdog"));
            nodes.push(
                json!({"id": "bench-watchdog", "type": "trigger", "z": "bench-tab", "name": "missing heartbeat",
                "op1": "", "op2": "", "op1type": "nul", "op2type": "payl",
                "duration": heartbeat_timeout.as_millis().to_string(), "units": "ms", "extend": true,
                "overrideDelay": false, "reset": "", "bytopic": "topic", "topic": "topic", "outputs": 1,
                "wires": [["bench-out"]]}),
            );
        }
    }
    serde_json::Value::Array(nodes)
}

/// The window, in a function node: per topic, the last 10 temperatures.
const WINDOW_FUNCTION: &str = "let w = context.get('w');\n\
if (!w) { w = new Map(); context.set('w', w); }\n\
const p = msg.payload;\n\
let a = w.get(msg.topic);\n\
if (!a) { a = []; w.set(msg.topic, a); }\n\
a.push(p.temperature);\n\
if (a.length > 10) a.shift();\n\
let sum = 0;\n\
for (const v of a) sum += v;\n\
msg.payload = { device: p.device, n: p.n, sent: p.sent, count: a.length, avg: sum / a.length };\n\
return msg;";

/// Starts Node-RED (`node red.js --settings ...`) with the flows for `rule`.
pub fn start_node_red(
    red_js: &Path,
    broker: SocketAddr,
    rule: Rule,
    heartbeat_timeout: Duration,
) -> anyhow::Result<Proc> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    std::fs::write(dir.path().join("settings.js"), node_red_settings(dir.path(), port))?;
    std::fs::write(
        dir.path().join("flows.json"),
        serde_json::to_vec(&node_red_flows(rule, broker, heartbeat_timeout))?,
    )?;
    let child = Command::new("node")
        .arg(red_js)
        .arg("--settings")
        .arg(dir.path().join("settings.js"))
        .stdin(Stdio::null())
        .stdout(log_file(dir.path())?)
        .stderr(Stdio::from(std::fs::OpenOptions::new().append(true).open(dir.path().join("log.txt"))?))
        .spawn()
        .context("cannot start node")?;
    Ok(Proc { child, dir })
}

// ------------------------------------------------------------------------------- /proc

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ; 100 on Linux).
pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime, in ticks, from a `stat` file's text.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU time of a process (all its threads), in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time of one thread of this process, in ticks.
pub fn thread_cpu_ticks(tid: u64) -> Option<u64> {
    parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?)
}

/// A `kB` field of a `status` file's text (`VmHWM`, `VmRSS`).
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size of a process, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    parse_status_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmHWM:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_odd_names() {
        let stat = "1234 (node (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 11 0 1000 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_process_has_cpu_and_memory_readings() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(peak_rss_kib(pid).is_some_and(|k| k > 0));
        let status = "Name:\tx\nVmHWM:\t   51234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(51_234));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn node_red_flows_wire_to_nodes_that_exist() {
        let broker = SocketAddr::from(([127, 0, 0, 1], 1883));
        for rule in [Rule::Threshold, Rule::Window, Rule::Heartbeat] {
            let flows = node_red_flows(rule, broker, Duration::from_secs(5));
            let nodes = flows.as_array().expect("an array of nodes");
            let ids: Vec<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), ids.len(), "{rule:?}: duplicate ids");
            for n in nodes {
                for wire in n["wires"].as_array().into_iter().flatten().flat_map(|w| w.as_array().into_iter().flatten())
                {
                    let to = wire.as_str().expect("wire is an id");
                    assert!(ids.contains(&to), "{rule:?}: {} wired to missing {to}", n["id"]);
                }
                // Node-RED takes any other property whose value is a node id for a config-node
                // reference, so a node typed `json` with the id `json` "depends on itself".
                for (key, value) in n.as_object().expect("a node is an object") {
                    let names_a_node = value.as_str().is_some_and(|v| ids.contains(&v));
                    if names_a_node && key != "id" {
                        assert!(["z", "broker"].contains(&key.as_str()), "{rule:?}: {}.{key} = {value}", n["id"]);
                    }
                }
                if n["type"] != "mqtt-broker" && n.get("broker").is_some() {
                    assert_eq!(n["broker"], "bench-broker", "{rule:?}: {} uses another broker node", n["id"]);
                }
            }
            let out = nodes.iter().find(|n| n["id"] == "bench-out").expect("an mqtt out");
            assert_eq!(out["topic"], format!("nodered/events/{}", rule.name()));
        }
    }

    #[test]
    fn edgewatch_accepts_the_rules_and_the_configuration() {
        let sandbox = edgewatch_engine::Sandbox::default();
        for rule in [
            Rule::Threshold,
            Rule::Window,
            Rule::Heartbeat,
            Rule::History,
            Rule::Past,
            Rule::Script,
            Rule::Journal,
            Rule::Privacy,
            Rule::Governed,
            Rule::Watched,
            Rule::Sparkplug,
        ] {
            let text = edgewatch_rules(rule, Duration::from_millis(2500));
            let (set, errors) = edgewatch_engine::RuleSet::compile(&sandbox, [("bench.rhai", text.as_str())]);
            assert!(errors.is_empty(), "{rule:?}: {errors:?}\n{text}");
            assert_eq!(set.len(), 2, "{rule:?}: the rule and the probe");
            let name = match rule {
                Rule::Heartbeat => "offline",
                Rule::Journal | Rule::Privacy | Rule::Governed | Rule::Watched => "threshold",
                _ => rule.name(),
            };
            let topic = if rule == Rule::Sparkplug {
                "spBv1.0/bench/DDATA/gw-000/t-00001"
            } else {
                "sensors/t-00001/temperature"
            };
            assert!(set.get(name).is_some_and(|r| r.listens_to(topic) != (rule == Rule::Heartbeat)));
            assert!(set.get("probe").is_some_and(|r| r.listens_to("bench/probe")));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        for durable in [true, false] {
            let text = edgewatch_config(dir.path(), SocketAddr::from(([127, 0, 0, 1], 18830)), durable);
            let config = edgewatch::Config::from_toml(&text, "bench.toml", std::iter::empty());
            assert!(config.as_ref().is_ok_and(|c| c.state.durable == durable), "{config:?}\n{text}");
            let key = dir.path().join("privacy.key");
            std::fs::write(&key, "a bench secret of 32 bytes......").expect("key");
            let private = with_privacy(&text, &key);
            let config = edgewatch::Config::from_toml(&private, "bench.toml", std::iter::empty());
            assert!(
                config.as_ref().is_ok_and(|c| c.subscriptions[0].privacy.as_ref().is_some_and(|p| p.fields.len() == 2)),
                "{config:?}\n{private}"
            );
            let governed = with_schema(&private);
            let config = edgewatch::Config::from_toml(&governed, "bench.toml", std::iter::empty());
            assert!(
                config.as_ref().is_ok_and(|c| c.subscriptions[0].schema.is_some() && c.event_log.is_some()),
                "{config:?}\n{governed}"
            );
        }
        let text = edgewatch_config(dir.path(), SocketAddr::from(([127, 0, 0, 1], 18830)), true)
            + "\n[journal]\nenabled = true\n";
        let config = edgewatch::Config::from_toml(&text, "bench.toml", std::iter::empty());
        assert!(config.as_ref().is_ok_and(|c| c.journal.is_some()), "{config:?}\n{text}");
        let text = with_sparkplug(&edgewatch_config(dir.path(), SocketAddr::from(([127, 0, 0, 1], 18830)), true));
        let config = edgewatch::Config::from_toml(&text, "bench.toml", std::iter::empty());
        let sparkplug = edgewatch::decode::Format::Sparkplug;
        assert!(config.as_ref().is_ok_and(|c| c.subscriptions[1].format == sparkplug), "{config:?}\n{text}");
    }

    #[test]
    fn settings_and_mosquitto_conf_say_what_matters() {
        let s = node_red_settings(Path::new("/tmp/x"), 1880);
        assert!(
            s.contains("httpAdminRoot: false") && s.contains("\"/tmp/x/flows.json\"") && s.contains("uiPort: 1880")
        );
        let m = mosquitto_conf(18830);
        assert!(m.starts_with("listener 18830 127.0.0.1\n"));
        assert!(m.contains("max_inflight_messages 1000") && m.contains("max_queued_messages 2000000"));
    }
}
