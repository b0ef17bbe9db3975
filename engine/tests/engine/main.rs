//! Black-box tests of the engine under virtual time: rule files in, events and ticks in,
//! composite events and faults out. One test binary; one module per concern.

mod actions;
mod alarms;
mod anomaly;
mod basics;
mod chaining;
mod corpus;
mod forecast;
mod handler;
mod heartbeat;
mod history;
mod inhibit;
mod keys;
mod lineage;
mod misbehaving;
mod numbers;
mod overview;
mod past;
mod persistence;
mod properties;
mod quality;
mod reload;
mod sequence;
mod support;
mod threshold;
mod window;
