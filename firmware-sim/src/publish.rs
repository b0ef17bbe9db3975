//! The first firmware-sim publishing API: [`run`] drives a [`Fleet`] in real time over one
//! MQTT connection. It is [`run_simulation`] with a fleet's
//! simulation, real-time speed, no recording, and the fleet-shaped [`PublishStats`].
//!
//! This module also holds what every run shares: the [`SimError`] type and the timeouts.

use std::future::Future;
use std::time::Duration;

use crate::fleet::Fleet;
use crate::runner::{RunOptions, run_simulation};
use crate::scenario::ScenarioError;

pub use crate::link::{Backoff, INITIAL_BACKOFF, MAX_BACKOFF};

/// How long a run waits for its connections' first ConnAck before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a run lets queued messages and the Disconnect go out when it stops.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how long to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Broker host name or IP address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id; two clients with the same id knock each other off the broker.
    pub client_id: String,
    /// QoS of every publish: 0, 1 or 2.
    pub qos: u8,
    /// How long to run the schedule: messages due before this virtual time are published.
    /// Zero means until `shutdown`.
    pub duration: Duration,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            client_id: "firmware-sim".to_owned(),
            qos: 0,
            duration: Duration::ZERO,
        }
    }
}

/// What a [`run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Messages handed to the MQTT client.
    pub published: u64,
    /// Of those, messages a fault shaped (overheated readings, malformed payloads).
    pub faults_injected: u64,
    /// Messages a silence fault held back.
    pub silenced: u64,
    /// Connections established after the first one.
    pub reconnects: u64,
    /// `published`, by device index.
    pub per_device: Vec<u64>,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// `qos` was not 0, 1 or 2.
    #[error("QoS must be 0, 1 or 2, not {0}")]
    InvalidQos(u8),
    /// `speed` was not a positive number.
    #[error("speed must be more than zero, not {0}")]
    InvalidSpeed(f64),
    /// No ConnAck within [`CONNECT_TIMEOUT`].
    #[error("no MQTT connection to {host}:{port} within {timeout:?}")]
    ConnectTimeout {
        /// Broker host.
        host: String,
        /// Broker port.
        port: u16,
        /// How long we waited.
        timeout: Duration,
    },
    /// The client refused a request (its event loop is gone).
    #[error("the MQTT client refused a request")]
    Client(#[from] rumqttc::ClientError),
    /// An event loop task ended on its own.
    #[error("the MQTT event loop stopped")]
    EventLoopStopped,
    /// The scenario could not be built.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The recording could not be written.
    #[error("cannot write the recording")]
    Record(#[source] std::io::Error),
}

/// Publishes `fleet`'s messages in real time until `opts.duration` or `shutdown`, whichever
/// comes first, then disconnects cleanly.
///
/// Waits up to [`CONNECT_TIMEOUT`] for the first ConnAck before the schedule starts (virtual
/// t=0 is the moment of that ConnAck). A `shutdown` before then ends with empty stats.
pub async fn run(
    fleet: Fleet,
    opts: PublishOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<PublishStats, SimError> {
    let mut sim = fleet.into_simulation();
    sim.set_end((!opts.duration.is_zero()).then_some(opts.duration));
    let run = RunOptions { host: opts.host, port: opts.port, client_id: opts.client_id, qos: opts.qos, speed: 1.0 };
    let report = run_simulation(sim, &run, None, shutdown).await?;
    let s = report.stats;
    Ok(PublishStats {
        published: s.published,
        faults_injected: s.shaped,
        silenced: s.withheld,
        reconnects: s.reconnects,
        per_device: s.per_device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetConfig;
    use tokio::time::Instant;

    fn fleet() -> Fleet {
        Fleet::new(FleetConfig { devices: 2, ..FleetConfig::default() }).expect("valid")
    }

    /// A port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        l.local_addr().expect("has address").port()
    }

    fn opts(port: u16) -> PublishOptions {
        PublishOptions { port, duration: Duration::from_secs(5), ..PublishOptions::default() }
    }

    /// Callers spawn `run`, so its future must be `Send` when `shutdown` is.
    #[test]
    fn run_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let fut = run(fleet(), opts(1), std::future::pending::<()>());
        assert_send(&fut);
    }

    #[tokio::test(start_paused = true)]
    async fn no_broker_is_a_connect_timeout() {
        let started = Instant::now();
        let err = run(fleet(), opts(closed_port()), std::future::pending()).await.expect_err("nothing listens");
        assert!(matches!(err, SimError::ConnectTimeout { .. }), "{err:?}");
        // Virtual time (the runtime is paused): the client waited the whole timeout.
        let waited = started.elapsed();
        assert!(waited >= CONNECT_TIMEOUT, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_before_connecting_publishes_nothing() {
        let stats = run(fleet(), opts(closed_port()), async {}).await.expect("clean stop");
        assert_eq!(stats.published, 0);
        assert_eq!(stats.per_device, [0, 0]);
    }

    #[tokio::test]
    async fn bad_qos_is_refused_before_connecting() {
        let o = PublishOptions { qos: 7, ..opts(closed_port()) };
        let err = run(fleet(), o, std::future::pending()).await.expect_err("bad QoS");
        assert!(matches!(err, SimError::InvalidQos(7)));
    }
}
