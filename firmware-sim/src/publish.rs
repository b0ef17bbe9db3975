//! Drives a [`Fleet`] in real time over one MQTT connection.
//!
//! Two tasks, as rumqttc wants: this one sleeps until [`Fleet::next_due`], polls the fleet
//! and hands each message to the [`AsyncClient`]; a spawned one polls the [`EventLoop`]
//! (which does the network I/O), reconnecting with exponential backoff. Publishing is never
//! awaited in the task that polls the event loop, so a full request channel cannot deadlock.
//!
//! Time is `tokio::time`, so tests can pause and advance it.
//!
//! Delivery is best effort, like a real device's: the session is clean, so messages queued
//! while the connection is down, or QoS 1 messages in flight when it drops, are lost.

use std::future::Future;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::fleet::{Fleet, SimMessage};

/// How long [`run`] waits for the first ConnAck before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First delay after a failed connection; doubles per failure up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long [`run`] lets queued messages and the Disconnect go out when it stops.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// MQTT keep-alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Bound of the client's request channel: how many messages may wait for the event loop.
const REQUEST_CAPACITY: usize = 1024;

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

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// `qos` was not 0, 1 or 2.
    #[error("QoS must be 0, 1 or 2, not {0}")]
    InvalidQos(u8),
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
    /// The event loop task ended on its own.
    #[error("the MQTT event loop stopped")]
    EventLoopStopped,
}

fn qos(level: u8) -> Result<QoS, SimError> {
    match level {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        other => Err(SimError::InvalidQos(other)),
    }
}

/// Exponential backoff between connection attempts: `initial`, doubling, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The delay the next failure will wait.
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and never waiting longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, next: initial.min(max) }
    }

    /// The delay to wait now; doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to `initial`, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

/// Connection state the event-loop task shares with [`run`].
#[derive(Debug, Clone, Copy, Default)]
struct Link {
    connected: bool,
    /// ConnAcks seen so far.
    connects: u64,
}

/// Aborts the event-loop task if [`run`] is dropped or returns early.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Publishes `fleet`'s messages in real time until `opts.duration` or `shutdown`, whichever
/// comes first, then disconnects cleanly.
///
/// Waits up to [`CONNECT_TIMEOUT`] for the first ConnAck before the schedule starts (virtual
/// t=0 is the moment of that ConnAck). A `shutdown` before then ends with empty stats.
pub async fn run(
    mut fleet: Fleet,
    opts: PublishOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<PublishStats, SimError> {
    let qos = qos(opts.qos)?;
    let mut mqtt = MqttOptions::new(opts.client_id.clone(), opts.host.clone(), opts.port);
    mqtt.set_keep_alive(KEEP_ALIVE).set_clean_session(true);
    let (client, eventloop) = AsyncClient::new(mqtt, REQUEST_CAPACITY);
    let (link_tx, mut link_rx) = watch::channel(Link::default());
    let mut driver = AbortOnDrop(tokio::spawn(drive(eventloop, link_tx)));
    tokio::pin!(shutdown);

    let mut stats = PublishStats { per_device: vec![0; fleet.len()], ..PublishStats::default() };

    tokio::select! {
        biased;
        () = &mut shutdown => {
            tracing::info!("Shutdown before the broker answered; nothing published");
            return Ok(stats);
        }
        waited = timeout(CONNECT_TIMEOUT, link_rx.wait_for(|l| l.connected)) => match waited {
            Err(_) => {
                return Err(SimError::ConnectTimeout {
                    host: opts.host,
                    port: opts.port,
                    timeout: CONNECT_TIMEOUT,
                });
            }
            Ok(Err(_)) => return Err(SimError::EventLoopStopped),
            Ok(Ok(_)) => {}
        }
    }

    let start = Instant::now();
    let limit = (!opts.duration.is_zero()).then_some(opts.duration);
    tracing::info!(
        devices = fleet.len(),
        format = %fleet.config().format,
        duration = ?limit,
        "Publishing the fleet's schedule"
    );
    let mut batch: Vec<SimMessage> = Vec::new();
    'schedule: loop {
        // Sleep until the next message or the end of the run, whichever is first.
        let next = fleet.next_due();
        let wake = match (next, limit) {
            (Some(n), Some(l)) if n >= l => None,
            (Some(n), _) => Some(n),
            (None, _) => None,
        };
        let Some(wake) = wake else {
            // Nothing more to send in this run: wait for its end.
            match limit {
                Some(l) => tokio::select! {
                    biased;
                    () = &mut shutdown => {}
                    () = sleep_until(start + l) => {}
                },
                None => shutdown.as_mut().await,
            }
            break;
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = sleep_until(start + wake) => {}
        }
        // Catch up on everything due by now, but never past the end of the run.
        let mut now = start.elapsed();
        if let Some(l) = limit {
            now = now.min(l.saturating_sub(Duration::from_nanos(1)));
        }
        fleet.poll(now, &mut batch);
        for msg in batch.drain(..) {
            let device = msg.device;
            let fault = msg.is_fault();
            tracing::trace!(topic = %msg.topic, bytes = msg.payload.len(), "Publishing");
            tokio::select! {
                biased;
                () = &mut shutdown => break 'schedule,
                sent = client.publish(msg.topic, qos, false, msg.payload) => sent?,
            }
            stats.published += 1;
            stats.faults_injected += u64::from(fault);
            if let Some(n) = stats.per_device.get_mut(device) {
                *n += 1;
            }
        }
    }

    stats.silenced = fleet.stats().silenced;
    stats.reconnects = link_rx.borrow().connects.saturating_sub(1);

    // Let what is queued go out, then say goodbye; give up after DRAIN_TIMEOUT.
    if client.try_disconnect().is_ok() && timeout(DRAIN_TIMEOUT, &mut driver.0).await.is_err() {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "Broker did not take the last messages in time");
    }
    tracing::info!(
        published = stats.published,
        faults = stats.faults_injected,
        silenced = stats.silenced,
        reconnects = stats.reconnects,
        "Finished publishing"
    );
    Ok(stats)
}

/// Polls the event loop until it has sent our Disconnect; reconnects with backoff on error.
async fn drive(mut eventloop: EventLoop, link: watch::Sender<Link>) {
    let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                backoff.reset();
                let connects = link.borrow().connects + 1;
                link.send_replace(Link { connected: true, connects });
                tracing::info!(
                    code = ?ack.code,
                    connects,
                    "Connected to the MQTT broker"
                );
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                link.send_modify(|l| l.connected = false);
                tracing::debug!("Sent Disconnect");
                return;
            }
            Ok(_) => {}
            Err(error) => {
                link.send_modify(|l| l.connected = false);
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = %error,
                    retry_in = ?delay,
                    "MQTT connection failed; retrying"
                );
                sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetConfig;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let ms = |n| Duration::from_millis(n);
        let seen: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(seen, [ms(100), ms(200), ms(400), ms(700), ms(700)]);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
    }

    #[test]
    fn qos_levels() {
        assert_eq!(qos(0).ok(), Some(QoS::AtMostOnce));
        assert_eq!(qos(1).ok(), Some(QoS::AtLeastOnce));
        assert_eq!(qos(2).ok(), Some(QoS::ExactlyOnce));
        assert!(matches!(qos(3), Err(SimError::InvalidQos(3))));
    }

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
        assert!(started.elapsed() >= CONNECT_TIMEOUT);
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
