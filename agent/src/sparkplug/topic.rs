//! Sparkplug topics: `spBv1.0/<group>/<message type>/<edge node>[/<device>]`, and the host
//! application's `spBv1.0/STATE/<host id>` (Sparkplug 3.0, chapter 4).

pub use edgewatch_sparkplug::NAMESPACE;

/// The message types, by the topic's third level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NBirth,
    NDeath,
    NData,
    NCmd,
    DBirth,
    DDeath,
    DData,
    DCmd,
}

impl Kind {
    /// The name on the topic.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NBirth => "NBIRTH",
            Kind::NDeath => "NDEATH",
            Kind::NData => "NDATA",
            Kind::NCmd => "NCMD",
            Kind::DBirth => "DBIRTH",
            Kind::DDeath => "DDEATH",
            Kind::DData => "DDATA",
            Kind::DCmd => "DCMD",
        }
    }

    /// Whether it is about a device (its topic has a fifth level).
    pub fn of_device(self) -> bool {
        matches!(self, Kind::DBirth | Kind::DDeath | Kind::DData | Kind::DCmd)
    }
}

/// A parsed Sparkplug topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// A message of an edge node (`device: None`) or of one of its devices.
    Edge { group: &'a str, kind: Kind, node: &'a str, device: Option<&'a str> },
    /// A host application's STATE (3.0: `spBv1.0/STATE/<host id>`).
    State { host: &'a str },
}

/// Why a topic is not a Sparkplug B one (reason `sparkplug_topic`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{topic}` is not a Sparkplug B topic: {why}")]
pub struct TopicError {
    pub topic: String,
    pub why: &'static str,
}

impl<'a> Topic<'a> {
    /// Parses `topic`. Every level must be non-empty; the device level is there exactly for
    /// the device message types.
    pub fn parse(topic: &'a str) -> Result<Topic<'a>, TopicError> {
        let fail = |why| TopicError { topic: topic.chars().take(200).collect(), why };
        let mut levels = topic.split('/');
        if levels.next() != Some(NAMESPACE) {
            return Err(fail("it does not start with spBv1.0/"));
        }
        let levels: Vec<&str> = levels.collect();
        if levels.iter().any(|l| l.is_empty()) {
            return Err(fail("a level is empty"));
        }
        match levels.as_slice() {
            ["STATE", host] => Ok(Topic::State { host }),
            [group, kind, node, rest @ ..] if rest.len() <= 1 => {
                let kind = match *kind {
                    "NBIRTH" => Kind::NBirth,
                    "NDEATH" => Kind::NDeath,
                    "NDATA" => Kind::NData,
                    "NCMD" => Kind::NCmd,
                    "DBIRTH" => Kind::DBirth,
                    "DDEATH" => Kind::DDeath,
                    "DDATA" => Kind::DData,
                    "DCMD" => Kind::DCmd,
                    _ => return Err(fail("unknown message type")),
                };
                let device = rest.first().copied();
                if kind.of_device() != device.is_some() {
                    return Err(fail(if device.is_some() {
                        "a node message has a device level"
                    } else {
                        "a device message has no device level"
                    }));
                }
                Ok(Topic::Edge { group, kind, node, device })
            }
            _ => Err(fail("wrong number of levels")),
        }
    }
}

/// The topic of a command to an edge node (NCMD), for a rebirth request.
pub fn node_command(group: &str, node: &str) -> String {
    edgewatch_sparkplug::topic(group, "NCMD", node, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse_by_level() {
        assert_eq!(
            Topic::parse("spBv1.0/plant1/DDATA/gw1/motor1"),
            Ok(Topic::Edge { group: "plant1", kind: Kind::DData, node: "gw1", device: Some("motor1") })
        );
        assert_eq!(
            Topic::parse("spBv1.0/plant1/NBIRTH/gw1"),
            Ok(Topic::Edge { group: "plant1", kind: Kind::NBirth, node: "gw1", device: None })
        );
        assert_eq!(Topic::parse("spBv1.0/STATE/scada"), Ok(Topic::State { host: "scada" }));
        for bad in [
            "spAv1.0/plant1/NDATA/gw1",
            "spBv1.0/plant1/NDATA",
            "spBv1.0/plant1/NDATA/gw1/dev",
            "spBv1.0/plant1/DDATA/gw1",
            "spBv1.0/plant1/XDATA/gw1",
            "spBv1.0//NDATA/gw1",
            "spBv1.0/plant1/DDATA/gw1/motor1/extra",
            "sensors/t1",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(node_command("plant1", "gw1"), "spBv1.0/plant1/NCMD/gw1");
    }
}
