//! Properties of `encode`/`decode` over generated and hand-built frames.

use edgewatch_wire::{
    Body, Error, MAX_CHANNEL_LEN, MAX_DEVICE_ID_LEN, MAX_FRAME_LEN, MAX_SAMPLES, Message, RESERVED_KEYS, Sample,
    VERSION, decode, encode,
};
use proptest::prelude::*;

/// Strings of 1..=max UTF-8 bytes, mixing ASCII and multi-byte characters.
fn name(max: usize) -> impl Strategy<Value = String> {
    "[a-z0-9_\\-é°☃]{1,16}".prop_filter("fits capacity", move |s| s.len() <= max)
}

fn finite_f32() -> impl Strategy<Value = f32> {
    prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO
}

fn body(value: BoxedStrategy<f32>) -> impl Strategy<Value = Body> {
    let samples = prop::collection::btree_map(name(MAX_CHANNEL_LEN), value, 0..=MAX_SAMPLES)
        .prop_filter("no reserved channel", |m| !m.keys().any(|k| RESERVED_KEYS.contains(&k.as_str())))
        .prop_map(|m| {
            let mut v = heapless::Vec::new();
            for (channel, value) in m {
                let s = Sample::new(&channel, value).expect("strategy yields valid names");
                v.push(s).expect("at most MAX_SAMPLES");
            }
            Body::Reading(v)
        });
    prop_oneof![
        samples,
        any::<u32>().prop_map(|uptime_s| Body::Heartbeat { uptime_s }),
        any::<u16>().prop_map(|code| Body::Event { code }),
    ]
}

fn message(value: BoxedStrategy<f32>) -> impl Strategy<Value = Message> {
    (name(MAX_DEVICE_ID_LEN), any::<u32>(), any::<u64>(), body(value)).prop_map(|(device, seq, timestamp_ms, body)| {
        Message {
            device: edgewatch_wire::device_id(&device).expect("strategy yields valid ids"),
            seq,
            timestamp_ms,
            body,
        }
    })
}

fn frame(msg: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    encode(msg, &mut buf).expect("MAX_FRAME_LEN always fits").to_vec()
}

proptest! {
    #[test]
    fn round_trip(msg in message(finite_f32().boxed())) {
        let bytes = frame(&msg);
        prop_assert!(bytes.len() <= MAX_FRAME_LEN);
        prop_assert_eq!(bytes[0], VERSION);
        prop_assert_eq!(decode(&bytes), Ok(msg));
    }

    /// NaN breaks `==`, so compare bytes: any f32 bit pattern survives a round trip.
    #[test]
    fn round_trip_any_float_bits(msg in message(any::<f32>().boxed())) {
        let bytes = frame(&msg);
        let back = decode(&bytes).expect("decodes");
        prop_assert_eq!(frame(&back), bytes);
    }

    #[test]
    fn every_truncation_errors(msg in message(finite_f32().boxed())) {
        let bytes = frame(&msg);
        prop_assert_eq!(decode(&[]), Err(Error::Empty));
        for len in 1..bytes.len() {
            prop_assert_eq!(decode(&bytes[..len]), Err(Error::Malformed), "len {}", len);
        }
    }

    #[test]
    fn trailing_bytes_error(msg in message(finite_f32().boxed()), extra in prop::collection::vec(any::<u8>(), 1..8)) {
        let mut bytes = frame(&msg);
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(decode(&bytes), Err(Error::TrailingBytes));
    }

    #[test]
    fn wrong_version_errors(msg in message(finite_f32().boxed()), version in any::<u8>()) {
        prop_assume!(version != VERSION);
        let mut bytes = frame(&msg);
        bytes[0] = version;
        prop_assert_eq!(decode(&bytes), Err(Error::UnsupportedVersion(version)));
    }

    #[test]
    fn small_buffers_error(msg in message(finite_f32().boxed())) {
        let need = frame(&msg).len();
        let mut buf = vec![0u8; need - 1];
        prop_assert_eq!(encode(&msg, &mut buf), Err(Error::BufferTooSmall));
    }

    /// Whatever arrives, decode answers; when it accepts, the message re-encodes and decodes
    /// to itself (the encoding may differ only where postcard accepted a non-minimal varint).
    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..300), fix_version in any::<bool>()) {
        if fix_version && !bytes.is_empty() {
            bytes[0] = VERSION;
        }
        if let Ok(msg) = decode(&bytes) {
            let again = frame(&msg);
            let back = decode(&again).expect("re-decodes");
            prop_assert_eq!(frame(&back), again);
        }
    }
}

/// A frame built by hand, as C firmware would, with `len` bytes of device id.
fn hand_frame(device_len: u8) -> Vec<u8> {
    let mut f = vec![VERSION, device_len];
    f.extend(std::iter::repeat_n(b'd', usize::from(device_len)));
    f.extend_from_slice(&[0x00, 0x00]); // seq 0, timestamp 0
    f.extend_from_slice(&[0x01, 0x05]); // Body::Heartbeat { uptime_s: 5 }
    f
}

#[test]
fn over_long_device_id_in_hand_built_frame_errors() {
    let ok = decode(&hand_frame(32)).expect("32 bytes fit");
    assert_eq!(ok.device.len(), 32);
    assert_eq!(ok.body, Body::Heartbeat { uptime_s: 5 });
    assert_eq!(decode(&hand_frame(33)), Err(Error::Malformed));
}

#[test]
fn over_capacity_sample_list_errors() {
    // Reading with a declared length of 9 samples, each valid.
    let mut f = vec![VERSION, 1, b'd', 0, 0, 0x00, 9];
    for i in 0..9u8 {
        f.extend_from_slice(&[2, b'c', b'0' + i]);
        f.extend_from_slice(&1.0f32.to_le_bytes());
    }
    assert_eq!(decode(&f), Err(Error::Malformed));
    // The same with 8 decodes.
    let mut f8 = vec![VERSION, 1, b'd', 0, 0, 0x00, 8];
    for i in 0..8u8 {
        f8.extend_from_slice(&[2, b'c', b'0' + i]);
        f8.extend_from_slice(&1.0f32.to_le_bytes());
    }
    assert!(decode(&f8).is_ok());
}

#[test]
fn over_long_channel_errors() {
    let mut f = vec![VERSION, 1, b'd', 0, 0, 0x00, 1, 17];
    f.extend(std::iter::repeat_n(b'c', 17));
    f.extend_from_slice(&1.0f32.to_le_bytes());
    assert_eq!(decode(&f), Err(Error::Malformed));
}

#[test]
fn semantic_errors_in_frames() {
    // Unknown body variant 3.
    assert_eq!(decode(&[VERSION, 1, b'd', 0, 0, 3]), Err(Error::Malformed));
    // Invalid UTF-8 in the device id.
    assert_eq!(decode(&[VERSION, 1, 0xff, 0, 0, 1, 0]), Err(Error::Malformed));
    // Empty device id.
    assert_eq!(decode(&[VERSION, 0, 0, 0, 1, 0]), Err(Error::InvalidName));
    // Reserved channel name "ts".
    let mut f = vec![VERSION, 1, b'd', 0, 0, 0x00, 1, 2, b't', b's'];
    f.extend_from_slice(&1.0f32.to_le_bytes());
    assert_eq!(decode(&f), Err(Error::InvalidName));
    // Duplicate channel.
    let mut f = vec![VERSION, 1, b'd', 0, 0, 0x00, 2];
    for _ in 0..2 {
        f.extend_from_slice(&[1, b't']);
        f.extend_from_slice(&1.0f32.to_le_bytes());
    }
    assert_eq!(decode(&f), Err(Error::InvalidName));
    // A u32 varint that overflows (6 continuation bytes) for seq.
    assert_eq!(decode(&[VERSION, 1, b'd', 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 1, 0]), Err(Error::Malformed));
}

proptest! {
    /// Inputs far longer than any frame (up to 16 KiB, with or without a valid version byte)
    /// are answered with an error or a message, never a panic, and never read out of bounds.
    #[test]
    fn oversized_arbitrary_input_never_panics(mut bytes in prop::collection::vec(any::<u8>(), MAX_FRAME_LEN..16_384)) {
        bytes[0] = VERSION;
        let _ = decode(&bytes);
    }
}

#[test]
fn oversized_input_errors() {
    // A valid frame followed by 64 KiB: the message decodes, the rest is refused.
    let msg = Message::heartbeat("d", 1, 2, 3).expect("valid");
    let mut bytes = frame(&msg);
    bytes.extend(std::iter::repeat_n(0u8, 65_536));
    assert_eq!(decode(&bytes), Err(Error::TrailingBytes));
    // 64 KiB of 0xff after the version byte: an endless varint.
    let mut junk = vec![0xffu8; 65_536];
    junk[0] = VERSION;
    assert_eq!(decode(&junk), Err(Error::Malformed));
}

#[test]
fn huge_length_prefixes_error() {
    // A device id claiming u64::MAX bytes (a 10-byte varint), then nothing.
    let mut f = vec![VERSION];
    f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(decode(&f), Err(Error::Malformed));
    // A device id claiming 1 MiB with only a few bytes present.
    assert_eq!(decode(&[VERSION, 0x80, 0x80, 0x40, b'd', b'e', b'v']), Err(Error::Malformed));
    // A reading claiming u32::MAX samples.
    assert_eq!(decode(&[VERSION, 1, b'd', 0, 0, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f]), Err(Error::Malformed));
}
