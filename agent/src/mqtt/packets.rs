//! Packets from rumqttc's two clients mapped to one [`Incoming`], and hints for the
//! connection failures people meet when setting up a broker.

use super::{AckToken, Incoming};
use rumqttc::v5;

/// What acknowledging a publish needs: its packet id and QoS. Not a copy of the message
/// (topic and payload), which would cost an allocation per message.
fn ack4(p: &rumqttc::Publish) -> Option<AckToken> {
    (p.qos != rumqttc::QoS::AtMostOnce).then(|| {
        let mut token = rumqttc::Publish::new("", p.qos, Vec::new());
        token.pkid = p.pkid;
        AckToken::V311(Box::new(token))
    })
}

/// [`ack4`] for MQTT 5.
fn ack5(p: &v5::mqttbytes::v5::Publish) -> Option<AckToken> {
    (p.qos != v5::mqttbytes::QoS::AtMostOnce).then(|| {
        let mut token = v5::mqttbytes::v5::Publish::new("", p.qos, bytes::Bytes::new(), None);
        token.pkid = p.pkid;
        AckToken::V5(Box::new(token))
    })
}

/// What to check, for the failures people meet when setting up a broker connection.
pub(super) fn hint(error: &str, tls: bool) -> Option<&'static str> {
    let has = |s: &str| error.contains(s);
    Some(if has("UnknownIssuer") {
        "the broker's certificate is not signed by a CA in `ca_file`"
    } else if has("NotValidForName") {
        "the broker's certificate does not name the host in `url`"
    } else if has("CertificateExpired") || has("Expired") {
        "a certificate has expired: check `client_cert` (or the broker's)"
    } else if has("CertificateRequired") || has("HandshakeFailure") {
        "the broker wants a client certificate: set `client_cert` and `client_key`"
    } else if has("BadUserNamePassword") || has("NotAuthorized") {
        "check `username` and the password"
    } else if tls && (has("reset by peer") || has("InvalidContentType") || has("CorruptMessage")) {
        "is this port a TLS listener?"
    } else if has("Connection refused") && !has("return code") {
        "nothing listens at `url`"
    } else {
        return None;
    })
}

pub(super) fn map4(p: rumqttc::Packet) -> Option<Result<Incoming, String>> {
    use rumqttc::Packet;
    Some(Ok(match p {
        Packet::ConnAck(ack) => {
            if ack.code != rumqttc::ConnectReturnCode::Success {
                return Some(Err(format!("connection refused: {:?}", ack.code)));
            }
            Incoming::Connected { session_present: ack.session_present }
        }
        Packet::Publish(p) => {
            let ack = ack4(&p);
            Incoming::Publish { topic: p.topic, payload: p.payload, ack }
        }
        Packet::PublishTooLarge(p, size) => {
            let ack = ack4(&p);
            Incoming::TooLarge { topic: p.topic, size, ack }
        }
        Packet::SubAck(_) => Incoming::SubAck,
        Packet::PubAck(_) => Incoming::PubAck,
        _ => return None,
    }))
}

pub(super) fn map5(p: v5::mqttbytes::v5::Packet) -> Option<Result<Incoming, String>> {
    use v5::mqttbytes::v5::{ConnectReturnCode, Packet};
    Some(Ok(match p {
        Packet::ConnAck(ack) => {
            if ack.code != ConnectReturnCode::Success {
                return Some(Err(format!("connection refused: {:?}", ack.code)));
            }
            Incoming::Connected { session_present: ack.session_present }
        }
        Packet::Publish(p) => {
            let ack = ack5(&p);
            match String::from_utf8(p.topic.to_vec()) {
                Ok(topic) => Incoming::Publish { topic, payload: p.payload, ack },
                // Not UTF-8: acknowledge and drop; nothing can route it.
                Err(_) => Incoming::Unroutable { ack },
            }
        }
        Packet::PublishTooLarge(p, size) => {
            let ack = ack5(&p);
            match String::from_utf8(p.topic.to_vec()) {
                Ok(topic) => Incoming::TooLarge { topic, size, ack },
                Err(_) => Incoming::Unroutable { ack },
            }
        }
        Packet::SubAck(_) => Incoming::SubAck,
        Packet::PubAck(_) => Incoming::PubAck,
        _ => return None,
    }))
}
