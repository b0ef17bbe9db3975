//! End-to-end tests: real brokers (rumqttd embedded here; Mosquitto when installed), a real
//! agent, real MQTT clients. One test binary; helpers live in `edgewatch_e2e` (tests/src).

mod accuracy;
mod bad_input;
mod demo;
mod heartbeat;
mod misbehaving;
mod observability;
mod overload;
mod pipeline;
mod reconnect;
mod reload;
mod simulated_fleet;
mod tls;
mod topics;

/// The rule most tests run.
pub const OVERHEAT: &str = r#"
rule("overheat", #{
    on: "sensors/{device}/temperature",
    when: |e| e.value > 80.0,
    emit: |e| #{ device: e.device, celsius: e.value },
});
"#;

/// An agent config for a broker at `addr` speaking `protocol`.
pub fn config(addr: std::net::SocketAddr, protocol: &str) -> String {
    format!(
        r#"
[agent]
id = "gw-test"
state_dir = {{state}}
[rules]
dir = {{rules}}
[source]
url = "mqtt://{addr}"
protocol = "{protocol}"
[[subscriptions]]
topic = "sensors/#"
format = "auto"
[[subscriptions]]
topic = "strict/#"
format = "json"
[[subscriptions]]
topic = "other/#"
[[subscriptions]]
topic = "doors/#"
[limits]
max_payload_bytes = 1024
"#
    )
}
