//! A Sparkplug B edge node nobody here wrote: PyPI's `pysparkplug` (0.6.1; it needs
//! `paho-mqtt<2`), driven line by line over stdin, for the interop test
//! (`tests/e2e/sparkplug/interop.rs`).
//!
//! The node `plant1/gw1` has the device `motor1` with `Motor/Speed` (Double, alias 10) and
//! `Motor/Current` (Float, alias 11). Commands on stdin:
//! - `speed <v>`: a DDATA through pysparkplug's own API (name, alias and datatype);
//! - `current <v>`: an alias-only DDATA, as Sparkplug recommends (built by hand: the API always
//!   sends names);
//! - `unknown`: an alias-only DDATA with alias 99, which no birth declared.
//!
//! It prints `born` once connected (NBIRTH and DBIRTH sent), and `reborn` each time it answers a
//! rebirth request (`Node Control/Rebirth` = true in an NCMD): pysparkplug leaves rebirth to the
//! application, so the script republishes both births with its session's bdSeq. Killed with
//! SIGKILL, its will (an NDEATH with that bdSeq) is what the broker publishes.
//!
//! Tests skip (saying why) when Python or the package is missing, unless
//! `EDGEWATCH_REQUIRE_SPARKPLUG=1`. `EDGEWATCH_SPARKPLUG_PYTHON` names the interpreter (`.ci/run`
//! installs the package in a virtual environment), else `EDGEWATCH_PYTHON`, else `python3`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const EDGE: &str = r#"
import itertools, sys
import pysparkplug as psp

host, port = sys.argv[1], int(sys.argv[2])
GROUP, NODE, DEVICE = "plant1", "gw1", "motor1"
ts = psp.get_current_timestamp

def say(text):
    print(text, flush=True)

def publish(kind, payload, device=None, dtypes=True):
    topic = psp.Topic(message_type=kind, group_id=GROUP, edge_node_id=NODE, device_id=device)
    node._client.publish(psp.Message(topic=topic, payload=payload, qos=psp.QoS.AT_MOST_ONCE, retain=False),
                         include_dtypes=dtypes)

def rebirth():
    # This session's bdSeq: after connecting, pysparkplug already holds the next connection's.
    bd = (node._bd_seq_metric.value - 1) % 256
    node._EdgeNode__seq_cycler = itertools.cycle(range(256))
    bd_metric = psp.Metric(timestamp=ts(), name="bdSeq", datatype=psp.DataType.INT64, value=bd)
    publish(psp.MessageType.NBIRTH, psp.NBirth(timestamp=ts(), seq=node._seq, metrics=(*node.metrics.values(), bd_metric)))
    for d in node.devices.values():
        publish(psp.MessageType.DBIRTH, psp.DBirth(timestamp=ts(), seq=node._seq, metrics=tuple(d.metrics.values())), d.device_id)

def on_command(_node, message):
    for m in message.payload.metrics:
        if m.name == "Node Control/Rebirth" and m.value:
            rebirth()
            say("reborn")

node = psp.EdgeNode(
    group_id=GROUP,
    edge_node_id=NODE,
    metrics=[psp.Metric(timestamp=ts(), name="Node Control/Rebirth", datatype=psp.DataType.BOOLEAN, value=False)],
    client=psp.Client(client_id="pysparkplug-gw1"),
    cmd_callback=on_command,
)
node.register(psp.Device(device_id=DEVICE, metrics=[
    psp.Metric(timestamp=ts(), name="Motor/Speed", datatype=psp.DataType.DOUBLE, value=0.0, alias=10),
    psp.Metric(timestamp=ts(), name="Motor/Current", datatype=psp.DataType.FLOAT, value=0.0, alias=11),
]))
node.connect(host, port=port, blocking=False)
import time
deadline = time.time() + 10
while not node._connected and time.time() < deadline:
    time.sleep(0.02)
time.sleep(0.2)
say("born")

def alias_only(alias, datatype, value):
    metric = psp.Metric(timestamp=ts(), name=None, datatype=datatype, value=value, alias=alias)
    publish(psp.MessageType.DDATA, psp.DData(timestamp=ts(), seq=node._seq, metrics=(metric,)), DEVICE, dtypes=False)

for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "speed":
        node.update_device(DEVICE, [psp.Metric(timestamp=ts(), name="Motor/Speed", datatype=psp.DataType.DOUBLE, value=float(arg[0]), alias=10)])
    elif cmd == "current":
        alias_only(11, psp.DataType.FLOAT, float(arg[0]))
    elif cmd == "unknown":
        alias_only(99, psp.DataType.DOUBLE, 1.0)
    say("sent " + cmd)
"#;

fn python() -> String {
    std::env::var("EDGEWATCH_SPARKPLUG_PYTHON")
        .or_else(|_| std::env::var("EDGEWATCH_PYTHON"))
        .unwrap_or_else(|_| "python3".to_owned())
}

/// Is pysparkplug there? `false` means skip; with `EDGEWATCH_REQUIRE_SPARKPLUG=1` it panics.
pub fn available() -> bool {
    let ok = crate::runs(&python(), &["-c", "import pysparkplug"]);
    let missing = format!("`{} -c 'import pysparkplug'` fails (pip install pysparkplug==0.6.1)", python());
    crate::peer_available((!ok).then_some(missing), "EDGEWATCH_REQUIRE_SPARKPLUG")
}

/// A running pysparkplug edge node; killed (SIGKILL: its will goes out) on drop.
#[derive(Debug)]
pub struct EdgeNode {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl EdgeNode {
    /// Starts the node against the broker at `addr` and waits until it has sent its births.
    pub fn start(addr: SocketAddr) -> EdgeNode {
        let mut child = Command::new(python())
            .args(["-c", EDGE, &addr.ip().to_string(), &addr.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = EdgeNode { child, stdin, lines };
        node.expect("born");
        node
    }

    /// Sends one command (see the module's list) and waits until the node has published it.
    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("the edge node reads commands");
        let verb = command.split_whitespace().next().unwrap_or_default();
        self.expect(&format!("sent {verb}"));
    }

    /// Waits for the line `want` (other lines are skipped), for at most [`crate::WAIT`].
    ///
    /// # Panics
    /// If it does not come: the node died or did not do it.
    pub fn expect(&mut self, want: &str) {
        let deadline = std::time::Instant::now() + crate::WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(e) => panic!("the edge node did not say `{want}`: {e}"),
            }
        }
    }

    /// SIGKILL: no DISCONNECT, so the broker publishes the node's will (its NDEATH).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EdgeNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
