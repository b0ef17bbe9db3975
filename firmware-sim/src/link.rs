//! One MQTT connection: a rumqttc [`AsyncClient`] plus a spawned task that polls its
//! [`EventLoop`] (the network I/O) and reconnects with [`Backoff`] (the agent's: jittered,
//! reset only after a connection stayed up).
//!
//! The driving task never publishes, so a full request channel cannot deadlock it; callers
//! publish through [`Link::client`] from their own task. Dropping a [`Link`] (or
//! [`Link::abort`]) aborts the task, which drops the TCP stream without an MQTT DISCONNECT:
//! the broker then publishes the last will, if one is set. [`Link::close`] disconnects
//! cleanly instead.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout_at};

use crate::backoff::Backoff;

/// First delay after a failed connection; doubles per failure up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// MQTT keep-alive.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Connection state the event-loop task shares with the publisher.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinkState {
    pub(crate) connected: bool,
    /// ConnAcks seen so far.
    pub(crate) connects: u64,
}

/// Where the messages of a command subscription go: (topic, payload).
pub(crate) type CommandSender = mpsc::Sender<(String, bytes::Bytes)>;

/// Aborts the event-loop task when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One MQTT connection and the task that drives it.
#[derive(Debug)]
pub(crate) struct Link {
    /// Publishes go through here (a bounded channel to the event loop).
    client: AsyncClient,
    /// Updated by the driving task on every ConnAck and failure.
    state: watch::Receiver<LinkState>,
    /// The driving task; aborted on drop.
    driver: AbortOnDrop,
}

/// Options for a connection to `host:port` as `client_id`, clean session, with `will`
/// (`offline`, QoS 1, not retained, on that topic) if given.
pub(crate) fn mqtt_options(host: &str, port: u16, client_id: &str, will: Option<&str>) -> MqttOptions {
    let mut mqtt = MqttOptions::new(client_id, host, port);
    mqtt.set_keep_alive(KEEP_ALIVE).set_clean_session(true);
    if let Some(topic) = will {
        mqtt.set_last_will(LastWill::new(topic, crate::sim::WILL_PAYLOAD, QoS::AtLeastOnce, false));
    }
    mqtt
}

impl Link {
    /// Spawns the driving task; the connection is made in the background. `capacity`
    /// bounds how many requests may wait for the event loop.
    pub(crate) fn open(options: MqttOptions, capacity: usize) -> Link {
        Link::open_with(options, capacity, None)
    }

    /// [`Link::open`], also subscribed (after every connection) to `commands`' filter, each
    /// message on it handed to its sender as (topic, payload); one that does not fit is
    /// dropped, never waited for.
    pub(crate) fn open_with(options: MqttOptions, capacity: usize, commands: Option<(String, CommandSender)>) -> Link {
        let (client, eventloop) = AsyncClient::new(options, capacity);
        let (tx, state) = watch::channel(LinkState::default());
        let subscriber = commands.map(|c| (client.clone(), c));
        let driver = AbortOnDrop(tokio::spawn(drive(eventloop, tx, subscriber)));
        Link { client, state, driver }
    }

    pub(crate) fn client(&self) -> &AsyncClient {
        &self.client
    }

    pub(crate) fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Waits for the connection to be up; `false` if the driving task is gone.
    pub(crate) async fn wait_connected(&mut self) -> bool {
        self.state.wait_for(|s| s.connected).await.is_ok()
    }

    /// Drops the connection abruptly (no DISCONNECT): the broker publishes the last will.
    pub(crate) fn abort(self) {
        drop(self);
    }

    /// Lets queued messages go out, sends DISCONNECT, and waits for the driving task to end,
    /// until `deadline`; `false` if it had to give up.
    pub(crate) async fn close(mut self, deadline: Instant) -> bool {
        if self.client.try_disconnect().is_err() {
            return false;
        }
        timeout_at(deadline, &mut self.driver.0).await.is_ok()
    }
}

/// Polls the event loop until it has sent our Disconnect; reconnects with backoff on error.
/// With `commands`, subscribes at each connection (a clean session forgets it) with a
/// request that never waits, and hands on what arrives.
async fn drive(
    mut eventloop: EventLoop,
    link: watch::Sender<LinkState>,
    commands: Option<(AsyncClient, (String, CommandSender))>,
) {
    let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
    let client_id = eventloop.mqtt_options.client_id();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                backoff.connected(Instant::now().into_std());
                let connects = link.borrow().connects + 1;
                link.send_replace(LinkState { connected: true, connects });
                tracing::debug!(client = %client_id, code = ?ack.code, connects, "Connected to the MQTT broker");
                if let Some((client, (filter, _))) = &commands {
                    if let Err(error) = client.try_subscribe(filter.as_str(), QoS::AtLeastOnce) {
                        tracing::warn!(client = %client_id, %filter, %error, "Command subscription not sent");
                    }
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if let Some((_, (_, tx))) = &commands {
                    if let Err(mpsc::error::TrySendError::Full((topic, _))) = tx.try_send((p.topic, p.payload)) {
                        tracing::warn!(client = %client_id, %topic, "Command not kept: too many waiting");
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                link.send_modify(|l| l.connected = false);
                tracing::debug!(client = %client_id, "Sent Disconnect");
                return;
            }
            Ok(_) => {}
            Err(error) => {
                link.send_modify(|l| l.connected = false);
                let delay = backoff.failed(Instant::now().into_std());
                tracing::warn!(client = %client_id, error = %error, retry_in = ?delay, "MQTT connection failed; retrying");
                sleep(delay).await;
            }
        }
    }
}
