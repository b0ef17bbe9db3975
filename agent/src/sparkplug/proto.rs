//! The Sparkplug B payload's messages: the `edgewatch-sparkplug` crate's, which firmware-sim
//! encodes with too.

pub use edgewatch_sparkplug::{Metric, MetricValue, Payload, PropertyKind, PropertySet, PropertyValue, datatype};
