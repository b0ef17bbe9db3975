use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{Error, Packet, Publish};

/// MQTT v4 codec
#[derive(Debug, Clone)]
pub struct Codec {
    /// Maximum packet size allowed by client
    pub max_incoming_size: usize,
    /// Maximum packet size allowed by broker
    pub max_outgoing_size: usize,
    /// Edgewatch patch (oversized publish): bytes of an oversized PUBLISH still to discard.
    pub skipping: usize,
}

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
            Err(Error::PayloadSizeLimitExceeded(size)) => self.read_past(src, size),
            Err(e) => Err(e),
        }
    }
}

impl Codec {
    /// Edgewatch patch (oversized publish): a PUBLISH over `max_incoming_size` is not fatal to
    /// the connection. Its headers (topic, packet id) are parsed, its payload is discarded,
    /// and it is reported as [`Packet::PublishTooLarge`] with its payload size, so that the
    /// application can count it and acknowledge it (a persistent session would otherwise
    /// redeliver it on every reconnect). Any other oversized packet still fails the
    /// connection.
    fn read_past(&mut self, src: &mut BytesMut, size: usize) -> Result<Option<Packet>, Error> {
        let fixed_header = crate::mqttbytes::parse_fixed_header(src.iter())?;
        if fixed_header.packet_type()? != crate::mqttbytes::PacketType::Publish {
            return Err(Error::PayloadSizeLimitExceeded(size));
        }
        let qos = crate::mqttbytes::qos((fixed_header.byte1 & 0b0110) >> 1)?;
        let start = fixed_header.fixed_header_len;
        if src.len() < start + 2 {
            src.reserve(start + 2 - src.len());
            return Ok(None);
        }
        let topic_len = usize::from(u16::from_be_bytes([src[start], src[start + 1]]));
        let pkid_len = if qos == crate::mqttbytes::QoS::AtMostOnce { 0 } else { 2 };
        let header = start + 2 + topic_len + pkid_len;
        if header > fixed_header.frame_length() {
            return Err(Error::MalformedPacket);
        }
        if src.len() < header {
            src.reserve(header - src.len());
            return Ok(None);
        }
        let head = src.split_to(header).freeze();
        let publish = Publish::read(fixed_header, head)?;
        self.skipping = fixed_header.frame_length() - header;
        let n = self.skipping.min(src.len());
        src.advance(n);
        self.skipping -= n;
        let size = fixed_header.frame_length() - header;
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
    use crate::{mqttbytes::Error, Packet, Publish, QoS};

    #[test]
    fn outgoing_max_packet_size_check() {
        let mut buf = BytesMut::new();
        let mut codec = Codec {
            max_incoming_size: 100,
            max_outgoing_size: 200,
            skipping: 0,
        };

        let mut small_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 100]);
        small_publish.pkid = 1;
        codec
            .encode(Packet::Publish(small_publish), &mut buf)
            .unwrap();

        let large_publish = Publish::new("hello/world", QoS::AtLeastOnce, vec![1; 265]);
        match codec.encode(Packet::Publish(large_publish), &mut buf) {
            Err(Error::OutgoingPacketTooLarge {
                pkt_size: 281,
                max: 200,
            }) => {}
            _ => unreachable!(),
        }
    }
}
