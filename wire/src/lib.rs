//! The Edgewatch sensor wire format, shared by constrained firmware and the agent.
//!
//! One crate owns the format so the two ends cannot drift apart (rumqttc and rumqttd
//! keep two codecs for one protocol, and they did).
//!
//! # Data flow
//!
//! ```text
//! firmware:  Message::reading(..) --encode--> [VERSION, postcard bytes..] --MQTT-->
//! agent:     payload --decode--> Message --Message::json()--> {"device", "seq", "ts", "kind", ..}
//! ```
//!
//! * [`Message`], [`Body`], [`Sample`]: the values, with fixed capacities ([`MAX_DEVICE_ID_LEN`],
//!   [`MAX_CHANNEL_LEN`], [`MAX_SAMPLES`]) so firmware needs no allocator.
//! * [`encode`] / [`decode`]: one version byte ([`VERSION`]), then the message in
//!   [postcard](https://postcard.jamesmunns.com/wire-format). A buffer of [`MAX_FRAME_LEN`]
//!   bytes always fits one frame. `decode` never panics on any input.
//! * [`JsonView`] (from [`Message::json`]): the flat JSON object the agent's rules see, and
//!   the shape the simulator's JSON payloads use, so one set of rules fits both formats. The
//!   agent turns frames into rule values through it too: the one wire -> JSON mapping.
//! * [`check_topic_level`]: whether a name (device id, channel, agent id) can be one MQTT
//!   topic level; the one copy of that rule, for the simulator and the agent alike.
//!
//! The byte layout, with a worked hex example, is in this crate's `README.md`.
//!
//! # no_std
//!
//! The crate is `#![no_std]` and never links `std` or `alloc` outside `#[cfg(test)]`
//! (a unit test checks this source file for it); its dependencies are built without default
//! features. It therefore builds for bare-metal targets such as `thumbv7em-none-eabihf`.
#![no_std]

#[cfg(test)]
extern crate std;

mod json;
mod level;

use core::fmt;

use serde::{Deserialize, Serialize};

/// Re-exported so users can name the capacity types without depending on a matching version.
pub use heapless;
pub use json::JsonView;
pub use level::{LevelError, check_topic_level};

/// Compiles the README's Rust example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// First byte of every frame. Bump it only for a change old decoders cannot read.
pub const VERSION: u8 = 1;

/// Most bytes of a device id (UTF-8 bytes, not characters).
pub const MAX_DEVICE_ID_LEN: usize = 32;
/// Most bytes of a channel name (UTF-8 bytes, not characters).
pub const MAX_CHANNEL_LEN: usize = 16;
/// Most samples in one reading.
pub const MAX_SAMPLES: usize = 8;

/// Bytes a postcard varint needs at most for an unsigned integer of `bits` bits.
const fn varint_max(bits: usize) -> usize {
    bits.div_ceil(7)
}

/// Bytes of the varint length prefix of a string or sequence of at most `max` items.
const fn len_prefix_max(max: usize) -> usize {
    // usize is a varint; count the 7-bit groups `max` needs (at least one byte).
    let mut n = 1;
    let mut v = max >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n
}

/// Longest encoded [`Sample`]: channel (length prefix + bytes) and a 4-byte `f32`.
const MAX_SAMPLE_LEN: usize = len_prefix_max(MAX_CHANNEL_LEN) + MAX_CHANNEL_LEN + 4;

/// Bytes of [`Body`]'s variant index: a varint, and 3 variants (index < 128) need one byte.
const VARIANT_INDEX_LEN: usize = 1;

/// Longest encoded [`Body`]: the variant index, then the largest variant's fields.
const MAX_BODY_LEN: usize = {
    let reading = len_prefix_max(MAX_SAMPLES) + MAX_SAMPLES * MAX_SAMPLE_LEN;
    let heartbeat = varint_max(32);
    let event = varint_max(16);
    let mut max = reading;
    if heartbeat > max {
        max = heartbeat;
    }
    if event > max {
        max = event;
    }
    VARIANT_INDEX_LEN + max
};

/// Upper bound of an encoded frame: a buffer of this many bytes always fits [`encode`]'s output.
///
/// ```text
///   1   version byte
/// + 33  device: length varint (1) + 32 bytes
/// + 5   seq: u32 varint
/// + 10  timestamp_ms: u64 varint
/// + 1   body variant index (varint, 0..=2)
/// + 169 largest body, Reading: vec length varint (1) + 8 × (channel 1 + 16, value 4)
/// = 219
/// ```
pub const MAX_FRAME_LEN: usize =
    1 + len_prefix_max(MAX_DEVICE_ID_LEN) + MAX_DEVICE_ID_LEN + varint_max(32) + varint_max(64) + MAX_BODY_LEN;

const _: () = assert!(MAX_FRAME_LEN == 219);

/// JSON keys the envelope uses; a channel may not be named after one of them.
pub const RESERVED_KEYS: [&str; 4] = ["device", "seq", "ts", "kind"];

/// A device's id, at most [`MAX_DEVICE_ID_LEN`] bytes of UTF-8.
pub type DeviceId = heapless::String<MAX_DEVICE_ID_LEN>;
/// A sample's channel name (e.g. `temperature`), at most [`MAX_CHANNEL_LEN`] bytes of UTF-8.
pub type Channel = heapless::String<MAX_CHANNEL_LEN>;

/// The samples of one reading.
pub type Samples = heapless::Vec<Sample, MAX_SAMPLES>;

/// One frame's content. Field order is wire order: do not reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who sent it; non-empty.
    pub device: DeviceId,
    /// The device's own message counter, one more per message; wraps at `u32::MAX`.
    /// Lets the agent spot gaps and duplicates without trusting MQTT packet ids.
    pub seq: u32,
    /// Device clock, milliseconds since the Unix epoch; 0 means the device does not know the time.
    pub timestamp_ms: u64,
    /// What the message says.
    pub body: Body,
}

/// What a [`Message`] says. Variant order is wire order (index 0, 1, 2): append only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "no allocator on firmware, so no Box; a whole Message is ~320 bytes of stack"
)]
pub enum Body {
    /// Measurements taken at the same time, one per channel; channel names are unique.
    Reading(Samples),
    /// "Still alive", with the seconds since the device booted.
    Heartbeat {
        /// Seconds since boot.
        uptime_s: u32,
    },
    /// A device-defined event code (button pressed, door opened, fault raised...).
    Event {
        /// Device-defined code.
        code: u16,
    },
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Which quantity (`temperature`, `humidity`...); becomes the JSON key.
    pub channel: Channel,
    /// The value. Non-finite values are allowed on the wire and become JSON `null`.
    pub value: f32,
}

/// Why a frame could not be encoded, decoded or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `decode` was given no bytes at all.
    Empty,
    /// The first byte is not [`VERSION`].
    UnsupportedVersion(u8),
    /// `encode`'s output buffer is too small; [`MAX_FRAME_LEN`] bytes always suffice.
    BufferTooSmall,
    /// The bytes after the version are not a message: truncated, bad varint, bad UTF-8,
    /// unknown variant, or a string or list longer than its capacity.
    Malformed,
    /// A whole message was decoded but bytes were left over.
    TrailingBytes,
    /// A builder was given a device id, channel name or sample list longer than its capacity.
    CapacityExceeded,
    /// An empty device id, or a channel name that is empty, repeated within one reading,
    /// or one of [`RESERVED_KEYS`] (it would clash with the JSON envelope).
    InvalidName,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => f.write_str("empty frame"),
            Error::UnsupportedVersion(v) => {
                write!(f, "unsupported frame version {v} (expected {VERSION})")
            }
            Error::BufferTooSmall => f.write_str("output buffer too small for the frame"),
            Error::Malformed => f.write_str("malformed frame"),
            Error::TrailingBytes => f.write_str("trailing bytes after the message"),
            Error::CapacityExceeded => f.write_str("field longer than its fixed capacity"),
            Error::InvalidName => f.write_str("empty device id, or empty, duplicate or reserved channel name"),
        }
    }
}

impl core::error::Error for Error {}

/// Builds a [`DeviceId`], failing with [`Error::CapacityExceeded`] if `s` is too long
/// and [`Error::InvalidName`] if it is empty.
pub fn device_id(s: &str) -> Result<DeviceId, Error> {
    if s.is_empty() {
        return Err(Error::InvalidName);
    }
    DeviceId::try_from(s).map_err(|_| Error::CapacityExceeded)
}

/// Builds a [`Channel`], failing with [`Error::CapacityExceeded`] if `s` is too long and
/// [`Error::InvalidName`] if it is empty or one of [`RESERVED_KEYS`].
pub fn channel(s: &str) -> Result<Channel, Error> {
    if s.is_empty() || RESERVED_KEYS.contains(&s) {
        return Err(Error::InvalidName);
    }
    Channel::try_from(s).map_err(|_| Error::CapacityExceeded)
}

impl Sample {
    /// A sample on `channel`; see [`channel`] for the errors.
    pub fn new(channel: &str, value: f32) -> Result<Sample, Error> {
        Ok(Sample { channel: crate::channel(channel)?, value })
    }

    /// The value as the `f64` nearest the shortest decimal that reads back as this `f32`
    /// (`22.1f32` gives `22.1`, not `22.100000381469727`).
    ///
    /// The JSON mapping uses this, so a postcard reading turned into JSON and the same
    /// reading sent as JSON text compare equal in the agent.
    pub fn value_f64(&self) -> f64 {
        shortest_f64(self.value)
    }
}

/// See [`Sample::value_f64`].
fn shortest_f64(v: f32) -> f64 {
    use core::fmt::Write;
    if !v.is_finite() {
        return f64::from(v);
    }
    // `{:e}` prints the shortest digits that round-trip, in at most ~15 characters
    // ("-1.1754942e-38"), so 32 bytes always suffice.
    let mut s: heapless::String<32> = heapless::String::new();
    if write!(s, "{v:e}").is_err() {
        return f64::from(v);
    }
    s.parse::<f64>().unwrap_or(f64::from(v))
}

impl Body {
    /// `"reading"`, `"heartbeat"` or `"event"`: the JSON `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Reading(_) => "reading",
            Body::Heartbeat { .. } => "heartbeat",
            Body::Event { .. } => "event",
        }
    }
}

impl Message {
    /// A reading from `device` with one sample per `(channel, value)` pair.
    ///
    /// Fails with [`Error::CapacityExceeded`] on a too-long id or channel or more than
    /// [`MAX_SAMPLES`] samples, and with [`Error::InvalidName`] as [`Message::validate`] says.
    pub fn reading(device: &str, seq: u32, timestamp_ms: u64, samples: &[(&str, f32)]) -> Result<Message, Error> {
        let mut list = heapless::Vec::new();
        for &(name, value) in samples {
            list.push(Sample::new(name, value)?).map_err(|_| Error::CapacityExceeded)?;
        }
        let msg = Message { device: device_id(device)?, seq, timestamp_ms, body: Body::Reading(list) };
        msg.validate()?;
        Ok(msg)
    }

    /// A heartbeat from `device`, `uptime_s` seconds after it booted.
    pub fn heartbeat(device: &str, seq: u32, timestamp_ms: u64, uptime_s: u32) -> Result<Message, Error> {
        Ok(Message { device: device_id(device)?, seq, timestamp_ms, body: Body::Heartbeat { uptime_s } })
    }

    /// An event with a device-defined `code`.
    pub fn event(device: &str, seq: u32, timestamp_ms: u64, code: u16) -> Result<Message, Error> {
        Ok(Message { device: device_id(device)?, seq, timestamp_ms, body: Body::Event { code } })
    }

    /// `"reading"`, `"heartbeat"` or `"event"`: the JSON `kind`.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }

    /// Checks what the types cannot: the device id is non-empty, and every channel name is
    /// non-empty, unique within the reading and not one of [`RESERVED_KEYS`].
    ///
    /// [`encode`] and [`decode`] both call it, so a frame that passes one passes the other
    /// and its JSON view never has two equal keys.
    pub fn validate(&self) -> Result<(), Error> {
        if self.device.is_empty() {
            return Err(Error::InvalidName);
        }
        if let Body::Reading(samples) = &self.body {
            for (i, s) in samples.iter().enumerate() {
                let name = s.channel.as_str();
                if name.is_empty()
                    || RESERVED_KEYS.contains(&name)
                    || samples[..i].iter().any(|t| t.channel == s.channel)
                {
                    return Err(Error::InvalidName);
                }
            }
        }
        Ok(())
    }

    /// This message as the flat JSON object of the mapping (serialize it with any serde
    /// serializer, e.g. `serde_json::to_vec(&msg.json())`).
    ///
    /// Do not serialize `Message` itself to JSON: its derived `Serialize` is the postcard
    /// layout (`timestamp_ms`, nested `body`), not the mapping.
    pub fn json(&self) -> JsonView<'_> {
        JsonView(self)
    }
}

/// Writes `msg` into `buf` as one frame ([`VERSION`], then postcard) and returns the
/// written prefix of `buf`.
///
/// Fails with [`Error::BufferTooSmall`] if `buf` is too short (a `[u8; MAX_FRAME_LEN]`
/// never is) and with [`Error::InvalidName`] if the message fails [`Message::validate`].
pub fn encode<'a>(msg: &Message, buf: &'a mut [u8]) -> Result<&'a mut [u8], Error> {
    msg.validate()?;
    let (first, rest) = buf.split_first_mut().ok_or(Error::BufferTooSmall)?;
    *first = VERSION;
    let body_len = postcard::to_slice(msg, rest)
        .map_err(|e| match e {
            postcard::Error::SerializeBufferFull => Error::BufferTooSmall,
            _ => Error::Malformed,
        })?
        .len();
    buf.get_mut(..=body_len).ok_or(Error::BufferTooSmall)
}

/// Reads one frame. Never panics, whatever `bytes` holds.
///
/// Fails with [`Error::Empty`], [`Error::UnsupportedVersion`], [`Error::Malformed`]
/// (truncated, bad varint or UTF-8, unknown variant, over-capacity string or list),
/// [`Error::TrailingBytes`], or [`Error::InvalidName`] (see [`Message::validate`]).
pub fn decode(bytes: &[u8]) -> Result<Message, Error> {
    let (&version, body) = bytes.split_first().ok_or(Error::Empty)?;
    if version != VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    let (msg, rest) = postcard::take_from_bytes::<Message>(body).map_err(|_| Error::Malformed)?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes);
    }
    msg.validate()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example in README.md, byte for byte.
    const README_FRAME: [u8; 32] = [
        0x01, // version
        0x05, b't', b'-', b'0', b'0', b'1', // device "t-001"
        0x11, // seq 17
        0x80, 0xcd, 0x82, 0xeb, 0xb4, 0x32, // timestamp_ms 1732170000000
        0x00, // Body::Reading
        0x01, // one sample
        0x0b, b't', b'e', b'm', b'p', b'e', b'r', b'a', b't', b'u', b'r', b'e', // channel
        0x00, 0x00, 0xbc, 0x41, // 23.5f32, little-endian
    ];

    fn readme_message() -> Message {
        Message::reading("t-001", 17, 1_732_170_000_000, &[("temperature", 23.5)]).expect("valid reading")
    }

    #[test]
    fn readme_example_encodes_byte_for_byte() {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let frame = encode(&readme_message(), &mut buf).expect("fits");
        assert_eq!(frame, &README_FRAME[..]);
        assert_eq!(decode(&README_FRAME), Ok(readme_message()));
    }

    fn hex(bytes: &[u8]) -> std::string::String {
        let parts: std::vec::Vec<std::string::String> = bytes.iter().map(|b| std::format!("{b:02x}")).collect();
        parts.join(" ")
    }

    #[test]
    fn readme_hex_lines_match_the_encoder() {
        // The README shows frames as hex lines too; keep them in sync with the encoder.
        let readme = include_str!("../README.md");
        let mut buf = [0u8; MAX_FRAME_LEN];
        let cases = [
            readme_message(),
            Message::heartbeat("t-001", 18, 0, 120).expect("valid"),
            Message::event("t-001", 19, 0, 300).expect("valid"),
        ];
        for msg in cases {
            let line = hex(encode(&msg, &mut buf).expect("fits"));
            assert!(readme.contains(&line), "README.md lacks the hex line {line}");
        }
        assert!(readme.contains(&hex(&README_FRAME)));
    }

    fn worst_case() -> Message {
        let names = [
            "aaaaaaaaaaaaaaa0",
            "aaaaaaaaaaaaaaa1",
            "aaaaaaaaaaaaaaa2",
            "aaaaaaaaaaaaaaa3",
            "aaaaaaaaaaaaaaa4",
            "aaaaaaaaaaaaaaa5",
            "aaaaaaaaaaaaaaa6",
            "aaaaaaaaaaaaaaa7",
        ];
        let samples: std::vec::Vec<(&str, f32)> = names.iter().map(|n| (*n, f32::MAX)).collect();
        Message::reading("dddddddddddddddddddddddddddddddd", u32::MAX, u64::MAX, &samples).expect("valid worst case")
    }

    #[test]
    fn max_frame_len_is_tight() {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let frame = encode(&worst_case(), &mut buf).expect("worst case fits");
        assert_eq!(frame.len(), MAX_FRAME_LEN);
        let mut small = [0u8; MAX_FRAME_LEN - 1];
        assert_eq!(encode(&worst_case(), &mut small), Err(Error::BufferTooSmall));
    }

    #[test]
    fn other_bodies_are_shorter_than_the_bound() {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let dev = "dddddddddddddddddddddddddddddddd";
        for msg in
            [Message::heartbeat(dev, u32::MAX, u64::MAX, u32::MAX), Message::event(dev, u32::MAX, u64::MAX, u16::MAX)]
        {
            let msg = msg.expect("valid");
            let n = encode(&msg, &mut buf).expect("fits").len();
            assert!(n < MAX_FRAME_LEN);
        }
    }

    #[test]
    fn empty_buffer_is_too_small() {
        assert_eq!(encode(&readme_message(), &mut []), Err(Error::BufferTooSmall));
        let mut one = [0u8; 1];
        assert_eq!(encode(&readme_message(), &mut one), Err(Error::BufferTooSmall));
    }

    #[test]
    fn builders_reject_over_capacity_and_bad_names() {
        let long_id = "x".repeat(MAX_DEVICE_ID_LEN + 1);
        assert_eq!(Message::heartbeat(&long_id, 0, 0, 0), Err(Error::CapacityExceeded));
        assert!(Message::heartbeat(&long_id[1..], 0, 0, 0).is_ok());
        assert_eq!(Message::event("", 0, 0, 0), Err(Error::InvalidName));
        let long_ch = "c".repeat(MAX_CHANNEL_LEN + 1);
        assert_eq!(Message::reading("d", 0, 0, &[(&long_ch, 1.0)]), Err(Error::CapacityExceeded));
        let nine: std::vec::Vec<(std::string::String, f32)> =
            (0..=MAX_SAMPLES).map(|i| (std::format!("c{i}"), 0.0)).collect();
        let nine: std::vec::Vec<(&str, f32)> = nine.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(Message::reading("d", 0, 0, &nine), Err(Error::CapacityExceeded));
        assert!(Message::reading("d", 0, 0, &nine[..MAX_SAMPLES]).is_ok());
        for bad in ["", "device", "seq", "ts", "kind"] {
            assert_eq!(Message::reading("d", 0, 0, &[(bad, 1.0)]), Err(Error::InvalidName), "{bad:?}");
        }
        assert_eq!(Message::reading("d", 0, 0, &[("t", 1.0), ("t", 2.0)]), Err(Error::InvalidName));
        // Multi-byte UTF-8 counts bytes: 16 two-byte characters are 32 bytes.
        assert_eq!(Message::reading("d", 0, 0, &[(&"é".repeat(9), 1.0)]), Err(Error::CapacityExceeded));
        assert!(Message::reading("d", 0, 0, &[(&"é".repeat(8), 1.0)]).is_ok());
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let mut msg = readme_message();
        if let Body::Reading(samples) = &mut msg.body {
            samples.push(Sample { channel: Channel::try_from("kind").expect("fits"), value: 1.0 }).expect("room");
        }
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(encode(&msg, &mut buf), Err(Error::InvalidName));
    }

    #[test]
    fn kinds() {
        assert_eq!(readme_message().kind(), "reading");
        assert_eq!(Message::heartbeat("d", 0, 0, 0).map(|m| m.kind()), Ok("heartbeat"));
        assert_eq!(Message::event("d", 0, 0, 0).map(|m| m.kind()), Ok("event"));
    }

    #[test]
    fn value_f64_uses_the_shortest_decimal() {
        let s = |v: f32| Sample::new("t", v).expect("valid").value_f64();
        assert_eq!(s(22.1), 22.1);
        assert_eq!(s(23.5), 23.5);
        assert_eq!(s(-0.3), -0.3);
        assert_eq!(s(f32::MAX), 3.4028235e38);
        assert_eq!(s(f32::MIN_POSITIVE), 1.1754944e-38);
        assert_eq!(s(1e-45), 1e-45);
        assert!(s(f32::NAN).is_nan());
        assert_eq!(s(f32::INFINITY), f64::INFINITY);
        // Round-trips back to the same f32 for every class of value.
        for v in [0.0f32, -0.0, 1.0 / 3.0, 1e-40, 123_456.79, -f32::MAX] {
            assert_eq!((s(v) as f32).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn display_is_lowercase_and_short() {
        assert_eq!(std::format!("{}", Error::UnsupportedVersion(2)), "unsupported frame version 2 (expected 1)");
    }

    /// The no_std promise: the only `extern crate std` sits under `#[cfg(test)]`,
    /// and nothing pulls in `alloc`. (Building for a bare-metal target is the real check,
    /// e.g. `cargo build -p edgewatch-wire --target thumbv7em-none-eabihf`, where that
    /// target is installed.)
    #[test]
    fn crate_is_no_std() {
        let sources = [include_str!("lib.rs"), include_str!("json.rs"), include_str!("level.rs")];
        assert!(sources[0].contains("\n#![no_std]\n"));
        for src in sources {
            let lines: std::vec::Vec<&str> = src.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let t = line.trim_start();
                if t.starts_with("extern crate std") {
                    assert!(i > 0 && lines[i - 1].trim() == "#[cfg(test)]", "line {i}");
                }
                assert!(!t.starts_with(concat!("extern crate ", "alloc")), "line {i}");
            }
        }
    }
}
