//! MQTT connections: one face over rumqttc's MQTT 3.1.1 and MQTT 5 clients, with
//! reconnection backoff.
//!
//! A [`Connection`] owns the event loop and must be polled by exactly one task; a
//! [`Client`] is a cheap handle for other tasks to subscribe and publish. Never await a
//! `Client` call inside the task that polls its `Connection`: both go through rumqttc's
//! bounded request channel, and that can deadlock.

mod packets;

use crate::config::{BrokerConfig, Protocol};
use crate::tls::TlsConfig;
use bytes::Bytes;
use firmware_sim::backoff::Backoff;
use packets::{hint, map4, map5};
use rumqttc::v5;
use std::time::Duration;

/// What a connection reports, the same for both protocol versions.
#[derive(Debug)]
pub enum Incoming {
    /// (Re)connected; `session_present` says the broker kept our subscriptions.
    Connected { session_present: bool },
    /// A message on a subscribed topic. With manual acks, `ack` must be passed to
    /// [`Client::ack`] once the message's effects are durable (QoS 1 and 2 only).
    Publish { topic: String, payload: Bytes, ack: Option<AckToken> },
    /// A message over the size limit: its payload was discarded as it was read (the
    /// connection stays up); count it, dead-letter it and acknowledge it.
    TooLarge { topic: String, size: usize, ack: Option<AckToken> },
    /// A message that cannot be processed at all; acknowledge it.
    Unroutable { ack: Option<AckToken> },
    /// The broker acknowledged a subscription.
    SubAck,
    /// The broker acknowledged a QoS 1 publish of ours.
    PubAck,
    /// The connection failed; the next poll waits out the backoff, then reconnects.
    Disconnected { error: String, retry_in: Duration },
}

/// What acknowledging a received message needs (the packet, as rumqttc wants it).
#[derive(Debug, Clone)]
pub enum AckToken {
    V311(Box<rumqttc::Publish>),
    V5(Box<v5::mqttbytes::v5::Publish>),
}

/// Why a publish or subscribe request could not be queued.
#[derive(Debug, thiserror::Error)]
#[error("MQTT request not queued: {0}")]
pub struct RequestError(String);

/// A handle for subscribing and publishing on a connection.
#[derive(Debug, Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> v5::mqttbytes::QoS {
    match q {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl Client {
    /// Subscribes to `filter`.
    pub async fn subscribe(&self, filter: &str, qos: u8) -> Result<(), RequestError> {
        match self {
            Client::V311(c) => c.subscribe(filter, qos4(qos)).await.map_err(|e| RequestError(e.to_string())),
            Client::V5(c) => c.subscribe(filter, qos5(qos)).await.map_err(|e| RequestError(e.to_string())),
        }
    }

    /// Publishes `payload` on `topic`; waits only for room in the request queue.
    pub async fn publish(
        &self,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: impl Into<Bytes>,
    ) -> Result<(), RequestError> {
        let payload: Bytes = payload.into();
        match self {
            Client::V311(c) => {
                c.publish(topic, qos4(qos), retain, payload).await.map_err(|e| RequestError(e.to_string()))
            }
            Client::V5(c) => {
                c.publish(topic, qos5(qos), retain, payload).await.map_err(|e| RequestError(e.to_string()))
            }
        }
    }

    /// Acknowledges a received message (manual acks).
    pub async fn ack(&self, token: &AckToken) -> Result<(), RequestError> {
        match (self, token) {
            (Client::V311(c), AckToken::V311(p)) => c.ack(p).await.map_err(|e| RequestError(e.to_string())),
            (Client::V5(c), AckToken::V5(p)) => c.ack(p).await.map_err(|e| RequestError(e.to_string())),
            _ => Err(RequestError("ack token of the other protocol version".into())),
        }
    }

    /// Queues a publish without waiting: fails when the request queue is full (or the
    /// connection is gone). What a connection's own polling task, and tasks that must never
    /// wait on it, use.
    pub fn try_publish(&self, topic: String, qos: u8, retain: bool, payload: Bytes) -> Result<(), RequestError> {
        match self {
            Client::V311(c) => {
                c.try_publish(topic, qos4(qos), retain, payload).map_err(|e| RequestError(e.to_string()))
            }
            Client::V5(c) => c.try_publish(topic, qos5(qos), retain, payload).map_err(|e| RequestError(e.to_string())),
        }
    }

    /// Queues the acknowledgement of a received message (manual acks) without waiting.
    pub fn try_ack(&self, token: &AckToken) -> Result<(), RequestError> {
        match (self, token) {
            (Client::V311(c), AckToken::V311(p)) => c.try_ack(p).map_err(|e| RequestError(e.to_string())),
            (Client::V5(c), AckToken::V5(p)) => c.try_ack(p).map_err(|e| RequestError(e.to_string())),
            _ => Err(RequestError("ack token of the other protocol version".into())),
        }
    }

    /// Queues a subscription without waiting.
    pub fn try_subscribe(&self, filter: &str, qos: u8) -> Result<(), RequestError> {
        match self {
            Client::V311(c) => c.try_subscribe(filter, qos4(qos)).map_err(|e| RequestError(e.to_string())),
            Client::V5(c) => c.try_subscribe(filter, qos5(qos)).map_err(|e| RequestError(e.to_string())),
        }
    }

    /// Sends DISCONNECT.
    pub async fn disconnect(&self) -> Result<(), RequestError> {
        match self {
            Client::V311(c) => c.disconnect().await.map_err(|e| RequestError(e.to_string())),
            Client::V5(c) => c.disconnect().await.map_err(|e| RequestError(e.to_string())),
        }
    }
}

enum EventLoop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// A connection's event loop, polled by one task.
pub struct Connection {
    inner: EventLoop,
    backoff: Backoff,
    /// Set after an error: the next poll sleeps this long first.
    pending_delay: Option<Duration>,
    /// Names the connection (`source`, `upstream`) in logs.
    name: &'static str,
    /// Received messages carry ack tokens only when acks are manual (rumqttc acknowledges
    /// by itself otherwise, and a second ack would be a protocol error).
    manual_acks: bool,
    /// The TLS settings in use; reread after a failure if their files changed (renewed
    /// certificates apply at the next reconnect).
    tls: Option<TlsConfig>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Options beyond the broker config.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Capacity of the request queue between clients and the event loop.
    pub request_capacity: usize,
    /// Largest packet accepted or sent.
    pub max_packet_size: usize,
    /// Message the broker publishes if this connection dies.
    pub last_will: Option<(String, Bytes, u8, bool)>,
    /// A persistent session (clean session off, MQTT 5 session expiry of a day): the broker
    /// keeps subscriptions and unacknowledged QoS 1 messages across reconnects.
    pub persistent: bool,
    /// Acknowledge received messages only when [`Client::ack`] is called.
    pub manual_acks: bool,
    /// Most QoS 1 publishes in flight on this connection (MQTT 5: at most the broker's
    /// receive maximum).
    pub inflight: u16,
}

/// Sets up a connection; nothing is dialled until the first poll.
pub fn connect(cfg: &BrokerConfig, name: &'static str, opts: &ConnectOptions) -> (Client, Connection) {
    let cap = opts.request_capacity.max(1);
    let (client, inner) = match cfg.protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            o.set_keep_alive(cfg.keep_alive);
            o.set_max_packet_size(opts.max_packet_size, opts.max_packet_size);
            o.set_clean_session(!opts.persistent);
            o.set_manual_acks(opts.manual_acks);
            o.set_inflight(opts.inflight.max(1));
            if let Some((u, p)) = &cfg.credentials {
                o.set_credentials(u, p.expose());
            }
            if let Some((topic, payload, qos, retain)) = &opts.last_will {
                o.set_last_will(rumqttc::LastWill::new(topic, payload.clone(), qos4(*qos), *retain));
            }
            if let Some(tls) = &cfg.tls {
                o.set_transport(transport(tls));
            }
            let (c, e) = rumqttc::AsyncClient::new(o, cap);
            (Client::V311(c), EventLoop::V311(Box::new(e)))
        }
        Protocol::V5 => {
            let mut o = v5::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            o.set_keep_alive(cfg.keep_alive);
            // Not announced in CONNECT: an MQTT 5 broker would then drop larger messages
            // silently (§3.1.2.11.4). They arrive, are read past and reported as `TooLarge`.
            o.set_max_incoming_size(u32::try_from(opts.max_packet_size).unwrap_or(u32::MAX));
            o.set_clean_start(!opts.persistent);
            if opts.persistent {
                o.set_session_expiry_interval(Some(86_400));
            }
            o.set_manual_acks(opts.manual_acks);
            o.set_outgoing_inflight_upper_limit(opts.inflight.max(1));
            if let Some((u, p)) = &cfg.credentials {
                o.set_credentials(u, p.expose());
            }
            if let Some((topic, payload, qos, retain)) = &opts.last_will {
                o.set_last_will(v5::mqttbytes::v5::LastWill::new(topic, payload.clone(), qos5(*qos), *retain, None));
            }
            if let Some(tls) = &cfg.tls {
                o.set_transport(transport(tls));
            }
            let (c, e) = v5::AsyncClient::new(o, cap);
            (Client::V5(c), EventLoop::V5(Box::new(e)))
        }
    };
    let conn = Connection {
        inner,
        backoff: Backoff::new(cfg.reconnect_min, cfg.reconnect_max),
        pending_delay: None,
        name,
        manual_acks: opts.manual_acks,
        tls: cfg.tls.clone(),
    };
    (client, conn)
}

fn transport(tls: &TlsConfig) -> rumqttc::Transport {
    rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.rustls.clone()))
}

impl Connection {
    /// The next thing that happens on this connection. Errors are reported as
    /// [`Incoming::Disconnected`] and retried after a backoff delay on the following call,
    /// so the caller never sees a hot loop.
    pub async fn poll(&mut self) -> Incoming {
        loop {
            if let Some(delay) = self.pending_delay.take() {
                tokio::time::sleep(delay).await;
            }
            let next = match &mut self.inner {
                EventLoop::V311(e) => match e.poll().await {
                    Ok(rumqttc::Event::Incoming(p)) => map4(p),
                    Ok(rumqttc::Event::Outgoing(_)) => None,
                    Err(err) => Some(Err(err.to_string())),
                },
                EventLoop::V5(e) => match e.poll().await {
                    Ok(v5::Event::Incoming(p)) => map5(p),
                    Ok(v5::Event::Outgoing(_)) => None,
                    Err(err) => Some(Err(err.to_string())),
                },
            };
            match next {
                None => continue,
                Some(Ok(mut incoming)) => {
                    match &mut incoming {
                        Incoming::Connected { .. } => self.backoff.connected(std::time::Instant::now()),
                        Incoming::Publish { ack, .. }
                        | Incoming::TooLarge { ack, .. }
                        | Incoming::Unroutable { ack }
                            if !self.manual_acks =>
                        {
                            *ack = None
                        }
                        _ => {}
                    }
                    return incoming;
                }
                Some(Err(mut error)) => {
                    if let Some(hint) = hint(&error, self.tls.is_some()) {
                        error = format!("{error} ({hint})");
                    }
                    self.refresh_tls();
                    let retry_in = self.backoff.failed(std::time::Instant::now());
                    self.pending_delay = Some(retry_in);
                    return Incoming::Disconnected { error, retry_in };
                }
            }
        }
    }

    /// Rereads the TLS files if they changed, for the next connection attempt.
    fn refresh_tls(&mut self) {
        let Some(fresh) = self.tls.as_ref().and_then(TlsConfig::reloaded) else { return };
        match &mut self.inner {
            EventLoop::V311(e) => {
                e.mqtt_options.set_transport(transport(&fresh));
            }
            EventLoop::V5(e) => {
                e.options.set_transport(transport(&fresh));
            }
        }
        self.tls = Some(fresh);
    }

    /// Sends DISCONNECT after everything already queued on `client` (acknowledgements
    /// included), and polls until it is written or `within` has passed. Dropping a connection
    /// without this leaves what is still queued unsent: the broker would redeliver messages
    /// whose effects are already on disk.
    pub async fn close(&mut self, client: &Client, within: Duration) {
        let queued = match client {
            Client::V311(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        };
        if !queued {
            return;
        }
        let sent = async {
            loop {
                match &mut self.inner {
                    EventLoop::V311(e) => match e.poll().await {
                        Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                        Ok(_) => {}
                    },
                    EventLoop::V5(e) => match e.poll().await {
                        Ok(v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                        Ok(_) => {}
                    },
                }
            }
        };
        if tokio::time::timeout(within, sent).await.is_err() {
            tracing::debug!(connection = self.name, "DISCONNECT not sent in time.");
        }
    }

    /// Which connection this is, for logs.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

#[cfg(test)]
mod tests {
    // The patch in vendor/rumqttc (its own tests need dev-dependencies not vendored).
    /// The vendored rumqttc reads past an oversized publish, fed in small pieces, and decode the
    /// packet after it.
    #[test]
    fn oversized_publish_is_read_past_v311() {
        use bytes::BytesMut;
        use rumqttc::mqttbytes::QoS;
        use rumqttc::mqttbytes::v4::{Codec, Packet, Publish};
        use tokio_util::codec::Decoder;
        let mut wire = BytesMut::new();
        let mut big = Publish::new("sensors/big/t", QoS::AtLeastOnce, vec![7; 5000]);
        big.pkid = 9;
        Packet::Publish(big).write(&mut wire, usize::MAX).expect("encodes");
        let mut small = Publish::new("sensors/a/t", QoS::ExactlyOnce, vec![1; 10]);
        small.pkid = 10;
        Packet::Publish(small.clone()).write(&mut wire, usize::MAX).expect("encodes");
        let mut codec = Codec { max_incoming_size: 100, max_outgoing_size: 200, skipping: 0 };
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        let mut peak = 0;
        for piece in wire.chunks(7) {
            src.extend_from_slice(piece);
            while let Some(p) = codec.decode(&mut src).expect("decodes") {
                out.push(p);
            }
            peak = peak.max(src.len());
        }
        assert!(peak < 100, "the payload was buffered: {peak}");
        match &out[..] {
            [Packet::PublishTooLarge(p, size), Packet::Publish(s)] => {
                assert_eq!((p.topic.as_str(), p.pkid, p.qos, *size), ("sensors/big/t", 9, QoS::AtLeastOnce, 5000));
                assert!(p.payload.is_empty());
                assert_eq!(s, &small);
            }
            other => panic!("{other:?}"),
        }
    }

    /// The vendored rumqttc reads past an oversized publish, fed in small pieces, and decode the
    /// packet after it; the topic alias in its properties is kept.
    #[test]
    fn oversized_publish_is_read_past_v5() {
        use bytes::BytesMut;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::{Codec, Packet, Publish, PublishProperties};
        use tokio_util::codec::Decoder;
        let mut wire = BytesMut::new();
        let props = PublishProperties { topic_alias: Some(3), ..Default::default() };
        let mut big = Publish::new("sensors/big/t", QoS::ExactlyOnce, vec![7; 5000], Some(props));
        big.pkid = 9;
        Packet::Publish(big).write(&mut wire, None).expect("encodes");
        let mut small = Publish::new("sensors/a/t", QoS::AtMostOnce, vec![1; 10], None);
        small.pkid = 0;
        Packet::Publish(small.clone()).write(&mut wire, None).expect("encodes");
        let mut codec = Codec { max_incoming_size: Some(100), max_outgoing_size: None, skipping: 0 };
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        let mut peak = 0;
        for piece in wire.chunks(5) {
            src.extend_from_slice(piece);
            while let Some(p) = codec.decode(&mut src).expect("decodes") {
                out.push(p);
            }
            peak = peak.max(src.len());
        }
        assert!(peak < 100, "the payload was buffered: {peak}");
        match &out[..] {
            [Packet::PublishTooLarge(p, size), Packet::Publish(s)] => {
                assert_eq!((&p.topic[..], p.pkid, p.qos, *size), (&b"sensors/big/t"[..], 9, QoS::ExactlyOnce, 5000));
                assert_eq!(p.properties.as_ref().and_then(|p| p.topic_alias), Some(3));
                assert!(p.payload.is_empty());
                assert_eq!(s, &small);
            }
            other => panic!("{other:?}"),
        }
    }
}
