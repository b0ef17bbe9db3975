// Shared by the `wire` fuzz target and `wire/tests/corpus.rs` (included in both).
//
// Any bytes: `decode` never panics. A frame it accepts re-encodes into a frame that decodes
// to the same message and re-encodes to the same bytes (the encoding is canonical, and no
// longer than the input), fits `MAX_FRAME_LEN`, and has a JSON view that serializes.

use edgewatch_wire::{MAX_FRAME_LEN, decode, encode};

/// Checks one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let Ok(msg) = decode(data) else { return };
    let mut buf = [0u8; MAX_FRAME_LEN];
    let frame = encode(&msg, &mut buf).expect("a decoded message encodes").to_vec();
    assert!(frame.len() <= data.len(), "re-encoding is never longer than the input");
    let again = decode(&frame).expect("a re-encoded frame decodes");
    let mut buf2 = [0u8; MAX_FRAME_LEN];
    let frame2 = encode(&again, &mut buf2).expect("encodes again");
    // Compared as bytes: a NaN sample is not equal to itself as a value.
    assert_eq!(frame, frame2.to_vec(), "decode and encode are inverse on canonical frames");
    if frame.len() == data.len() {
        assert_eq!(frame, data, "a canonical frame re-encodes to itself");
    }
    serde_json::to_vec(&msg.json()).expect("the JSON view serializes");
}
