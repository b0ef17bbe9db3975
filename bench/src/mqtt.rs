//! Just enough MQTT 3.1.1 for the harness's own two clients (the load generator and the
//! upstream consumer): CONNECT, SUBSCRIBE, PUBLISH at QoS 0/1, PUBACK, DISCONNECT.
//!
//! Blocking sockets on dedicated threads, no keep-alive (0 disables it), no reconnects: a
//! broken connection ends the step, and the step is then reported as failed. Hand-written
//! rather than rumqttc so the harness's own cost per message is a few hundred nanoseconds and
//! does not depend on an async scheduler: the harness shares two cores with the broker and
//! the contender, and every microsecond it spends is taken from them.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// PUBLISH packet type (high nibble of the first byte).
pub const PUBLISH: u8 = 3;
/// PUBACK packet type.
pub const PUBACK: u8 = 4;
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;

/// Appends the remaining-length varint.
fn put_len(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A CONNECT with a clean session and keep-alive off.
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&0u16.to_be_bytes()); // keep-alive off
    put_str(&mut body, client_id.as_bytes());
    let mut out = vec![CONNECT << 4];
    put_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// A SUBSCRIBE for `filters`, all at `qos`.
pub fn subscribe_packet(packet_id: u16, filters: &[&str], qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for f in filters {
        put_str(&mut body, f.as_bytes());
        body.push(qos);
    }
    let mut out = vec![(SUBSCRIBE << 4) | 0x02];
    put_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Appends a PUBLISH (packet id only at QoS 1) to `out`. `payload` is written by the
/// closure straight into `out`, so stamping a message costs no allocation.
pub fn put_publish(
    out: &mut Vec<u8>,
    topic: &str,
    qos: u8,
    packet_id: u16,
    payload_len: usize,
    payload: impl FnOnce(&mut Vec<u8>),
) {
    let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload_len;
    out.push((PUBLISH << 4) | (qos << 1));
    put_len(out, len);
    put_str(out, topic.as_bytes());
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    let before = out.len();
    payload(out);
    debug_assert_eq!(out.len() - before, payload_len, "payload length announced = written");
}

/// Appends a PUBACK for `packet_id`.
pub fn put_puback(out: &mut Vec<u8>, packet_id: u16) {
    out.push(PUBACK << 4);
    out.push(2);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

/// One complete packet at the front of a buffer: its first byte and where its body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Type and flags.
    pub header: u8,
    /// Body range in the buffer.
    pub body: (usize, usize),
}

impl Frame {
    /// The packet type.
    pub fn kind(&self) -> u8 {
        self.header >> 4
    }
    /// Bytes the whole packet takes.
    pub fn end(&self) -> usize {
        self.body.1
    }
}

/// The packet at the start of `buf`, if it is all there; `Err` on a malformed length.
pub fn frame(buf: &[u8]) -> Result<Option<Frame>, io::Error> {
    let Some(&header) = buf.first() else { return Ok(None) };
    let mut len = 0usize;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else { return Ok(None) };
        len |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "remaining length over 4 bytes"));
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    Ok(Some(Frame { header, body: (i, i + len) }))
}

/// A PUBLISH body split into topic, packet id (QoS 1 and 2) and payload.
pub fn split_publish(header: u8, body: &[u8]) -> Option<(&[u8], Option<u16>, &[u8])> {
    let tlen = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let topic = body.get(2..2 + tlen)?;
    let mut rest = body.get(2 + tlen..)?;
    let qos = (header >> 1) & 3;
    let id = if qos > 0 {
        let id = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
        rest = rest.get(2..)?;
        Some(id)
    } else {
        None
    };
    Some((topic, id, rest))
}

/// Connects, sends CONNECT and waits for a successful CONNACK; then, if `filters` is not
/// empty, subscribes at QoS 1 and waits for the SUBACK.
pub fn open(addr: SocketAddr, client_id: &str, filters: &[&str]) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&connect_packet(client_id))?;
    let ack = read_packet(&mut s)?;
    if ack.first().map(|h| h >> 4) != Some(CONNACK) || ack.get(3) != Some(&0) {
        return Err(io::Error::other(format!("connection refused: {ack:?}")));
    }
    if !filters.is_empty() {
        s.write_all(&subscribe_packet(1, filters, 1))?;
        let ack = read_packet(&mut s)?;
        if ack.first().map(|h| h >> 4) != Some(SUBACK) || ack.iter().skip(4).any(|&c| c == 0x80) {
            return Err(io::Error::other(format!("subscription refused: {ack:?}")));
        }
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// Reads exactly one packet (used only during the handshake, before any PUBLISH flows).
fn read_packet(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 2];
    s.read_exact(&mut buf)?;
    while buf.last().is_some_and(|b| b & 0x80 != 0) {
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        buf.push(b[0]);
    }
    let f = frame(&buf).ok().flatten();
    let need = match f {
        Some(f) => f.end() - buf.len(),
        None => {
            let mut len = 0usize;
            for (k, b) in buf.iter().skip(1).enumerate() {
                len |= usize::from(b & 0x7f) << (7 * k);
            }
            len
        }
    };
    let mut rest = vec![0u8; need];
    s.read_exact(&mut rest)?;
    buf.extend_from_slice(&rest);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_round_trips_across_varint_sizes() {
        for len in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let mut buf = vec![0x30];
            put_len(&mut buf, len);
            let header_len = buf.len();
            buf.resize(header_len + len, 0);
            let f = frame(&buf).expect("valid").expect("complete");
            assert_eq!(f.body, (header_len, header_len + len), "len {len}");
            assert_eq!(frame(&buf[..buf.len() - 1]).expect("valid"), None, "incomplete at len {len}");
        }
    }

    #[test]
    fn publish_encodes_and_splits_back() {
        let mut buf = Vec::new();
        put_publish(&mut buf, "sensors/t-1/temperature", 1, 513, 5, |o| o.extend_from_slice(b"hello"));
        put_puback(&mut buf, 7);
        let f = frame(&buf).expect("valid").expect("complete");
        assert_eq!(f.kind(), PUBLISH);
        let (topic, id, payload) = split_publish(f.header, &buf[f.body.0..f.body.1]).expect("well formed");
        assert_eq!(topic, b"sensors/t-1/temperature");
        assert_eq!(id, Some(513));
        assert_eq!(payload, b"hello");
        let ack = frame(&buf[f.end()..]).expect("valid").expect("complete");
        assert_eq!(ack.kind(), PUBACK);
        assert_eq!(&buf[f.end() + ack.body.0..f.end() + ack.body.1], &7u16.to_be_bytes());
    }

    #[test]
    fn qos0_publish_has_no_packet_id() {
        let mut buf = Vec::new();
        put_publish(&mut buf, "a/b", 0, 99, 2, |o| o.extend_from_slice(b"{}"));
        let f = frame(&buf).expect("valid").expect("complete");
        let (topic, id, payload) = split_publish(f.header, &buf[f.body.0..f.body.1]).expect("well formed");
        assert_eq!((topic, id, payload), (&b"a/b"[..], None, &b"{}"[..]));
    }

    #[test]
    fn overlong_length_is_an_error_not_a_hang() {
        assert!(frame(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }

    #[test]
    fn connect_and_subscribe_are_well_formed() {
        let c = connect_packet("bench");
        assert_eq!(c[0], 0x10);
        assert_eq!(usize::from(c[1]), c.len() - 2);
        assert_eq!(&c[2..8], b"\0\x04MQTT");
        let s = subscribe_packet(1, &["a/#", "b"], 1);
        assert_eq!(s[0], 0x82);
        assert_eq!(usize::from(s[1]), s.len() - 2);
        assert_eq!(&s[4..], b"\0\x03a/#\x01\0\x01b\x01");
    }
}
