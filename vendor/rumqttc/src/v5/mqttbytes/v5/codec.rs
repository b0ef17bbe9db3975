use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Error, Packet, Publish};

/// MQTT v4 codec
#[derive(Debug, Clone)]
pub struct Codec {
    /// Maximum packet size allowed by client
    pub max_incoming_size: Option<u32>,
    /// Maximum packet size allowed by broker
    pub max_outgoing_size: Option<u32>,
    /// Edgewatch patch (oversized publish): bytes of an oversized PUBLISH still to discard.
    pub skipping: usize,
}

/// Edgewatch patch (oversized publish): most bytes of PUBLISH properties read for an
/// oversized publish (they carry its topic alias); more fails the connection as before.
const MAX_OVERSIZED_PROPERTIES: usize = 64 * 1024;

impl Decoder for Codec {
    type Item = Packet;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        // Edgewatch patch (oversized publish): the rest of an oversized PUBLISH is dropped as
        // it arrives, so it never sits in memory.
        if self.skipping > 0 {
            let n = self.skipping.min(src.len());
            src.advance(n);
            self.skipping -= n;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        match Packet::read(src, self.max_incoming_size) {
            Ok(packet) => Ok(Some(packet)),
            Err(Error::InsufficientBytes(b)) => {
                // Get more packets to construct the incomplete packet
                src.reserve(b);
                Ok(None)
            }
            Err(e @ Error::PayloadSizeLimitExceeded { .. }) => self.read_past(src, e),
            Err(e) => Err(e),
        }
    }
}

impl Codec {
    /// Edgewatch patch (oversized publish): a PUBLISH over `max_incoming_size` is not fatal to
    /// the connection. Its headers (topic, packet id, properties) are parsed, its payload is
    /// discarded, and it is reported as [`Packet::PublishTooLarge`] with its payload size, so
    /// that the application can count it and acknowledge it (a persistent session would
    /// otherwise redeliver it on every reconnect). Any other oversized packet still fails
    /// the connection.
    fn read_past(&mut self, src: &mut BytesMut, limit: Error) -> Result<Option<Packet>, Error> {
        let fixed_header = super::parse_fixed_header(src.iter())?;
        if fixed_header.packet_type()? != super::PacketType::Publish {
            return Err(limit);
        }
        let qos_num = (fixed_header.byte1 & 0b0110) >> 1;
        let qos = crate::v5::mqttbytes::qos(qos_num).ok_or(Error::InvalidQoS(qos_num))?;
        let start = fixed_header.fixed_header_len;
        let need = |src: &mut BytesMut, n: usize| {
            if src.len() < n {
                src.reserve(n - src.len());
                true
            } else {
                false
            }
        };
        if need(src, start + 2) {
            return Ok(None);
        }
        let topic_len = usize::from(u16::from_be_bytes([src[start], src[start + 1]]));
        let pkid_len = if qos == crate::v5::mqttbytes::QoS::AtMostOnce { 0 } else { 2 };
        let properties_at = start + 2 + topic_len + pkid_len;
        // The properties' length is a variable byte integer of up to four bytes.
        if need(src, properties_at + 1) {
            return Ok(None);
        }
        let (len_len, properties_len) = match super::length(src[properties_at..].iter()) {
            Ok(l) => l,
            Err(Error::InsufficientBytes(_)) => {
                src.reserve(4);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if properties_len > MAX_OVERSIZED_PROPERTIES {
            return Err(limit);
        }
        let header = properties_at + len_len + properties_len;
        if header > fixed_header.frame_length() {
            return Err(Error::MalformedPacket);
        }
        if need(src, header) {
            return Ok(None);
        }
        let head = src.split_to(header).freeze();
        let publish = Publish::read(fixed_header, head)?;
        let size = fixed_header.frame_length() - header;
        self.skipping = size;
        let n = self.skipping.min(src.len());
        src.advance(n);
        self.skipping -= n;
        Ok(Some(Packet::PublishTooLarge(publish, size)))
    }
}

impl Encoder<Packet> for Codec {
    type Error = Error;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.write(dst, self.max_outgoing_size)?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    use super::Codec;
    use crate::v5::{
        mqttbytes::{Error, QoS},
        Packet, Publish,
    };

    #[test]
    fn outgoing_max_packet_size_check() {
        let mut buf = BytesMut::new();
        let mut codec = Codec {
            max_incoming_size: Some(100),
            max_outgoing_size: Some(200),
            skipping: 0,
        };

        let mut small_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 100], None);
        small_publish.pkid = 1;
        codec
            .encode(Packet::Publish(small_publish), &mut buf)
            .unwrap();

        let large_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 265], None);
        match codec.encode(Packet::Publish(large_publish), &mut buf) {
            Err(Error::OutgoingPacketTooLarge {
                pkt_size: 282,
                max: 200,
            }) => {}
            _ => unreachable!(),
        }
    }
}
