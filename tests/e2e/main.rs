//! End-to-end tests: real brokers (rumqttd embedded here; Mosquitto when installed), a real
//! agent, real MQTT clients. One test binary; helpers live in `edgewatch_e2e` (tests/src).

mod accuracy;
mod actions;
mod anomaly_accuracy;
mod bad_input;
mod console;
mod demo;
mod heartbeat;
mod layout;
mod lineage;
mod misbehaving;
mod observability;
mod overload;
mod pipeline;
mod reconnect;
mod reload;
mod simulated_fleet;
mod sparkplug;
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

/// The agent most tests run, for a broker at `addr` speaking `protocol`: `sensors/#` in any
/// format (`subscriptions[0]`), `strict/#` as JSON only, `other/#` and `doors/#`, payloads up
/// to 1 KiB. Tests that need more set it on the builder.
pub fn agent(addr: std::net::SocketAddr, protocol: &str) -> edgewatch_e2e::AgentToml {
    edgewatch_e2e::AgentToml::new()
        .source(addr)
        .set("source.protocol", protocol)
        .subscribe_with("sensors/#", &[("format", "auto".into())])
        .subscribe_with("strict/#", &[("format", "json".into())])
        .subscribe("other/#")
        .subscribe("doors/#")
        .set("limits.max_payload_bytes", 1024)
}

/// [`agent`] as TOML text.
pub fn config(addr: std::net::SocketAddr, protocol: &str) -> String {
    agent(addr, protocol).to_string()
}
