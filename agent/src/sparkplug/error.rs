//! Why a Sparkplug message is refused: each reason is a dead-letter reason of its own.

use super::topic::TopicError;
use super::value::TypeError;

/// Why a message was refused. Nothing of it was applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SparkplugError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error("not a Sparkplug B payload: {0}")]
    Protobuf(String),
    /// Data from a node or device whose birth this application has not seen.
    #[error("{what} has sent no birth certificate since this application started following it")]
    Unborn { what: String, group: String, node: String },
    #[error("{why}")]
    Alias { why: String, group: String, node: String },
    #[error("metric `{metric}`: {error}")]
    Type { metric: String, error: TypeError },
    #[error("{0}")]
    Limit(String),
}

impl SparkplugError {
    /// The dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            SparkplugError::Topic(_) => "sparkplug_topic",
            SparkplugError::Protobuf(_) => "sparkplug_protobuf",
            SparkplugError::Unborn { .. } => "sparkplug_birth",
            SparkplugError::Alias { .. } => "sparkplug_alias",
            SparkplugError::Type { .. } => "sparkplug_type",
            SparkplugError::Limit(_) => "sparkplug_limit",
        }
    }

    /// Every reason, for counters registered up front.
    pub const REASONS: [&'static str; 6] = [
        "sparkplug_topic",
        "sparkplug_protobuf",
        "sparkplug_birth",
        "sparkplug_alias",
        "sparkplug_type",
        "sparkplug_limit",
    ];

    /// The edge node a rebirth request would repair this for (`group`, `node`).
    pub fn rebirth(&self) -> Option<(&str, &str)> {
        match self {
            SparkplugError::Unborn { group, node, .. } | SparkplugError::Alias { group, node, .. } => {
                Some((group, node))
            }
            _ => None,
        }
    }
}

pub(super) fn alias_error(group: &str, node: &str, why: String) -> SparkplugError {
    SparkplugError::Alias { why, group: group.to_owned(), node: node.to_owned() }
}
