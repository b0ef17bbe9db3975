//! The Sparkplug B wire format, shared by the agent (the host application's side) and
//! firmware-sim (the edge node's side), so the two cannot drift apart: the payload's protobuf
//! messages, the datatypes, and topic names.
//!
//! ```text
//! spBv1.0/<group>/<NBIRTH|NDATA|NDEATH|NCMD>/<edge node>            the node itself
//! spBv1.0/<group>/<DBIRTH|DDATA|DDEATH|DCMD>/<edge node>/<device>   one of its devices
//! spBv1.0/STATE/<host id>                                            a host application (JSON)
//! ```
//!
//! The payload (Eclipse Tahu's `sparkplug_b.proto`, package
//! `org.eclipse.tahu.protobuf`, proto2), as prost messages written by hand: `prost-build` needs
//! `protoc`, which a machine with only the Rust toolchain lacks, and a consumer needs only the
//! parts below. Field numbers and types are the specification's.
//!
//! Left out on purpose (prost skips unknown fields, so payloads that carry them still decode):
//! a metric's `metadata` (8), `dataset_value` (17), `template_value` (18) and
//! `extension_value` (19), the payload's `uuid` (4) and `body` (5), and nested property sets.
//! Metrics of those kinds arrive with their datatype and no value, and are reported as
//! unsupported. A metric's `properties` (9) are read for their scalar values: that is where
//! Sparkplug puts a value's `Quality`.

/// `Payload`: one message of an edge node or device.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// When the message was sent, ms since the Unix epoch.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// 0–255, per edge node; absent in NDEATH.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
}

/// `Payload.Metric`: a name (in births; DATA may carry only the alias), a datatype (births;
/// DATA may leave it out), and one value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// Its properties (a `PropertySet`), such as `Quality` (an Int32: 192 good, 0 bad, as
    /// OPC UA's and Ignition's codes), kept as bytes and read on demand ([`Metric::quality`]):
    /// most metrics have none, and a decoded set made every metric twice as large to decode
    /// (Payload::decode of 20 metrics +29%, docs/benchmarks.md).
    #[prost(bytes = "vec", optional, tag = "9")]
    pub properties: Option<Vec<u8>>,
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

/// `Payload.PropertySet`: keys and their values, by position.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySet {
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

/// `Payload.PropertyValue`, its scalar kinds (nested sets, 9 and 10, are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertyValue {
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    #[prost(oneof = "PropertyKind", tags = "3, 4, 5, 6, 7, 8")]
    pub value: Option<PropertyKind>,
}

/// `Payload.PropertyValue.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PropertyKind {
    #[prost(uint32, tag = "3")]
    IntValue(u32),
    #[prost(uint64, tag = "4")]
    LongValue(u64),
    #[prost(float, tag = "5")]
    FloatValue(f32),
    #[prost(double, tag = "6")]
    DoubleValue(f64),
    #[prost(bool, tag = "7")]
    BooleanValue(bool),
    #[prost(string, tag = "8")]
    StringValue(String),
}

/// The property that says how good a metric's value is.
pub const QUALITY: &str = "Quality";

impl Metric {
    /// Its `Quality` property, if it has one with an integer value (an Int32, two's
    /// complement in `int_value`, or any integer in `long_value`).
    pub fn quality(&self) -> Option<i64> {
        use prost::Message as _;
        let set = PropertySet::decode(self.properties.as_deref()?).ok()?;
        let at = set.keys.iter().position(|k| k == QUALITY)?;
        match set.values.get(at)?.value.as_ref()? {
            PropertyKind::IntValue(v) => Some(i64::from(*v as i32)),
            PropertyKind::LongValue(v) => Some(*v as i64),
            _ => None,
        }
    }
}

/// `Payload.Metric.value`, the kinds a consumer reads.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    /// Int8, Int16, Int32 (two's complement of their width), UInt8, UInt16, UInt32.
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64 (two's complement), UInt64, DateTime.
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    #[prost(float, tag = "12")]
    FloatValue(f32),
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    StringValue(String),
    /// Bytes, File, and the arrays (packed little-endian).
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// The `DataType` enum's values that matter here (the rest are reported by number).
pub mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT8: u32 = 5;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const DATETIME: u32 = 13;
    pub const TEXT: u32 = 14;
    pub const UUID: u32 = 15;
    pub const BYTES: u32 = 17;
    pub const FILE: u32 = 18;
    pub const INT8_ARRAY: u32 = 22;
    pub const DATETIME_ARRAY: u32 = 34;

    /// The specification's name of a datatype, as rules and the API show it.
    pub fn name(t: u32) -> &'static str {
        const NAMES: [&str; 35] = [
            "Unknown",
            "Int8",
            "Int16",
            "Int32",
            "Int64",
            "UInt8",
            "UInt16",
            "UInt32",
            "UInt64",
            "Float",
            "Double",
            "Boolean",
            "String",
            "DateTime",
            "Text",
            "UUID",
            "DataSet",
            "Bytes",
            "File",
            "Template",
            "PropertySet",
            "PropertySetList",
            "Int8Array",
            "Int16Array",
            "Int32Array",
            "Int64Array",
            "UInt8Array",
            "UInt16Array",
            "UInt32Array",
            "UInt64Array",
            "FloatArray",
            "DoubleArray",
            "BooleanArray",
            "StringArray",
            "DateTimeArray",
        ];
        NAMES.get(t as usize).copied().unwrap_or("Unknown")
    }
}

/// The topic namespace of Sparkplug B (3.0 keeps `spBv1.0`).
pub const NAMESPACE: &str = "spBv1.0";

/// The metric of a rebirth request (an NCMD with it `true`; Sparkplug 3.0 §6.4.x).
pub const REBIRTH: &str = "Node Control/Rebirth";

/// The metric of a node's session number, in its NBIRTH and NDEATH.
pub const BD_SEQ: &str = "bdSeq";

/// The topic of message type `kind` (`"NBIRTH"`, `"DDATA"`, …) of `node` in `group`, or of its
/// `device`. The names are not checked: a caller's are valid topic levels.
pub fn topic(group: &str, kind: &str, node: &str, device: Option<&str>) -> String {
    match device {
        Some(d) => format!("{NAMESPACE}/{group}/{kind}/{node}/{d}"),
        None => format!("{NAMESPACE}/{group}/{kind}/{node}"),
    }
}
