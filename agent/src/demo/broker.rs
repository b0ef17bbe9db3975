//! The demo's MQTT side: the broker it runs on (embedded, or the one given with `--broker`),
//! and the subscriber that reads what the agent publishes upstream.

use super::DemoError;
use std::time::Duration;

/// The broker the demo runs on: embedded (stopped when dropped) or given.
pub(super) struct DemoBroker {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) embedded: bool,
    #[cfg(feature = "embedded-broker")]
    _embedded: Option<crate::broker::EmbeddedBroker>,
}

/// The demo's broker in a build without the embedded one: the gateway's own.
#[cfg(not(feature = "embedded-broker"))]
pub const LOCAL_BROKER: &str = "mqtt://127.0.0.1:1883";

impl DemoBroker {
    pub(super) async fn start(given: Option<&str>) -> Result<DemoBroker, DemoError> {
        let url = match given {
            Some(url) => url,
            #[cfg(feature = "embedded-broker")]
            None => return DemoBroker::embedded().await,
            #[cfg(not(feature = "embedded-broker"))]
            None => LOCAL_BROKER,
        };
        // The agent's own URL rules (default port 1883, IPv6 in brackets), TLS apart.
        let (host, port, tls) = crate::config::parse_url(url).map_err(|_| DemoError::BrokerUrl(url.to_owned()))?;
        if tls {
            return Err(DemoError::BrokerUrl(url.to_owned()));
        }
        let host = host.as_str();
        // Say at once when nothing listens, rather than after the agent's readiness wait.
        let probe = tokio::net::TcpStream::connect((host, port));
        let error = match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 3 s")),
        };
        if let Some(error) = error {
            let hint = if cfg!(feature = "embedded-broker") {
                ""
            } else {
                "; this build has no embedded broker: start Mosquitto (apt install mosquitto) or give --broker"
            };
            return Err(DemoError::NoBroker { url: url.to_owned(), error, hint });
        }
        Ok(DemoBroker {
            host: host.to_owned(),
            port,
            embedded: false,
            #[cfg(feature = "embedded-broker")]
            _embedded: None,
        })
    }

    #[cfg(feature = "embedded-broker")]
    async fn embedded() -> Result<DemoBroker, DemoError> {
        let broker = tokio::task::spawn_blocking(crate::broker::EmbeddedBroker::start)
            .await
            .map_err(|e| DemoError::Setup(e.to_string()))??;
        Ok(DemoBroker {
            host: broker.v4.ip().to_string(),
            port: broker.v4.port(),
            embedded: true,
            _embedded: Some(broker),
        })
    }
}

pub(super) fn upstream_client(host: &str, port: u16, client_id: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut o = rumqttc::MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    rumqttc::AsyncClient::new(o, 16)
}

/// Subscribes to `filters` and forwards every message (parsed as JSON; an empty one as
/// null) until the client disconnects.
pub(super) async fn watch_upstream(
    client: rumqttc::AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    filters: Vec<String>,
    tx: tokio::sync::mpsc::Sender<(String, serde_json::Value)>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let mut subscribed = Some(subscribed);
    let mut backoff = firmware_sim::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                backoff.reset();
                // All filters in one SUBSCRIBE: its one SubAck says all of them hold.
                let all = filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce));
                let _ = client.try_subscribe_many(all);
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                if let Some(s) = subscribed.take() {
                    let _ = s.send(());
                }
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let value = serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                // Once the demo stops reading, keep polling: its last publishes go through here.
                let _ = tx.send((p.topic, value)).await;
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}
