//! An MQTT broker inside the process (rumqttd), for `edgewatch demo` and the tests, so a
//! machine with nothing but Rust can run the whole path.
//!
//! rumqttd's `Broker::start` blocks forever and has no shutdown, so it runs on its own
//! thread for the rest of the process; it cannot report an ephemeral port, so a free port
//! is picked first and the listener polled until it accepts.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Why the embedded broker did not come up.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no free loopback port: {0}")]
    NoPort(std::io::Error),
    #[error("invalid embedded broker configuration: {0}")]
    Config(String),
    #[error("the embedded broker did not accept connections on {0} within {1:?}")]
    NotListening(SocketAddr, Duration),
}

/// A running embedded broker. It lives until the process exits.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// MQTT 3.1.1 listener.
    pub v4: SocketAddr,
    /// MQTT 5 listener.
    pub v5: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts a broker on two free loopback ports (MQTT 3.1.1 and 5) and waits until both accept.
    pub fn start() -> Result<EmbeddedBroker, BrokerError> {
        EmbeddedBroker::start_on(free_port()?, free_port()?)
    }

    /// Starts a broker on the given addresses and waits until both accept.
    pub fn start_on(v4: SocketAddr, v5: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        let text = format!(
            r#"
id = 0
[router]
max_connections = 10010
max_outgoing_packet_count = 1000
max_segment_size = 10485760
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{v4}"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 1000
dynamic_filters = true

[v5.1]
name = "v5-1"
listen = "{v5}"
next_connection_delay_ms = 0
[v5.1.connections]
connection_timeout_ms = 60000
max_payload_size = 1048576
max_inflight_count = 1000
dynamic_filters = true
"#
        );
        let config: rumqttd::Config = toml::from_str(&text).map_err(|e| BrokerError::Config(e.to_string()))?;
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "Embedded broker stopped.");
                }
            })
            .map_err(BrokerError::NoPort)?;
        let wait = Duration::from_secs(10);
        for addr in [v4, v5] {
            wait_until_listening(addr, wait)?;
        }
        tracing::info!(%v4, %v5, "Embedded MQTT broker is listening.");
        Ok(EmbeddedBroker { v4, v5 })
    }

    /// `mqtt://127.0.0.1:<port>` of the MQTT 3.1.1 listener.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.v4)
    }
}

/// A loopback port nobody listens on right now, and never handed out before by this process:
/// the port is free again once this returns, and two brokers of one test process (tests
/// run in parallel) must not be given the same one, or the second fails to bind while its
/// readiness check connects to the first.
pub fn free_port() -> Result<SocketAddr, BrokerError> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(BrokerError::NoPort)?;
        let addr = listener.local_addr().map_err(BrokerError::NoPort)?;
        let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return Ok(addr);
        }
    }
    Err(BrokerError::NoPort(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no unused loopback port")))
}

/// Polls `addr` until a TCP connection succeeds.
pub fn wait_until_listening(addr: SocketAddr, within: Duration) -> Result<(), BrokerError> {
    let start = Instant::now();
    while start.elapsed() < within {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BrokerError::NotListening(addr, within))
}
