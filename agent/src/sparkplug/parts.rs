//! The sessions in the agent's store, part by part: a node's own part or one device's, each
//! one record, written only when a message changed it ([`Sessions::take_changed`]) and
//! restored at start ([`Sessions::import`]).

use super::session::{Device, Dirty, Node, Part, Sessions};
use super::topic::Kind;
use std::collections::BTreeMap;

/// Why a stored part could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("damaged record: {0}")]
    Damaged(#[from] postcard::Error),
    #[error("a device record without its node's")]
    NoNode,
}

impl Sessions {
    /// Lists the parts a message of `kind` to `group`/`node` (`device`) changed, each once
    /// until taken: the node's own part (its `seq`, at least), and its device's, or all its
    /// devices' for a node's birth (their aliases go) or death (their values are stale).
    pub(super) fn mark(&mut self, group: &str, node_id: &str, kind: Kind, device: Option<&str>) {
        let Some(node) = self.groups.get_mut(group).and_then(|g| g.get_mut(node_id)) else { return };
        let part = |device: Option<&str>| Part {
            group: group.to_owned(),
            node: node_id.to_owned(),
            device: device.map(str::to_owned),
        };
        if !std::mem::replace(&mut node.dirty.0, true) {
            self.changed.push(part(None));
        }
        let mut device_part = |name: &str, d: &mut Device| {
            if !std::mem::replace(&mut d.dirty.0, true) {
                self.changed.push(part(Some(name)));
            }
        };
        match (kind, device) {
            (Kind::NBirth | Kind::NDeath, _) => {
                for (name, d) in &mut node.devices {
                    device_part(name, d);
                }
            }
            (_, Some(name)) => {
                if let Some(d) = node.devices.get_mut(name) {
                    device_part(name, d);
                }
            }
            _ => {}
        }
    }

    /// The parts changed since the last call, a node's own before its devices'.
    pub fn take_changed(&mut self) -> Vec<Part> {
        let mut changed = std::mem::take(&mut self.changed);
        for p in &changed {
            let Some(node) = self.groups.get_mut(&p.group).and_then(|g| g.get_mut(&p.node)) else { continue };
            match &p.device {
                None => node.dirty.0 = false,
                Some(d) => {
                    if let Some(d) = node.devices.get_mut(d) {
                        d.dirty.0 = false;
                    }
                }
            }
        }
        changed.sort_unstable();
        changed
    }

    /// One part of the sessions, serialized for the store (`None`: it is not there), in
    /// postcard: a DDATA writes its device's record, and JSON made it three times the size
    /// (100 B against 319 B for pysparkplug's motor; docs/benchmarks.md, "Sparkplug B").
    pub fn export(&self, part: &Part) -> Option<Vec<u8>> {
        let node = self.groups.get(&part.group)?.get(&part.node)?;
        match &part.device {
            Some(d) => postcard::to_allocvec(node.devices.get(d)?).ok(),
            None => {
                let own = Node {
                    bd_seq: node.bd_seq,
                    last_seq: node.last_seq,
                    alive: node.alive,
                    died: node.died,
                    own: node.own.clone(),
                    devices: BTreeMap::new(),
                    dirty: Dirty::default(),
                };
                postcard::to_allocvec(&own).ok()
            }
        }
    }

    /// Restores one part from [`Sessions::export`]'s bytes: a node's first (its devices keep
    /// theirs), then its devices'.
    pub fn import(&mut self, part: &Part, bytes: &[u8]) -> Result<(), ImportError> {
        match &part.device {
            None => {
                let mut restored: Node = postcard::from_bytes(bytes)?;
                let nodes = self.groups.entry(part.group.clone()).or_default();
                match nodes.get_mut(&part.node) {
                    Some(node) => {
                        restored.devices = std::mem::take(&mut node.devices);
                        *node = restored;
                    }
                    None => {
                        nodes.insert(part.node.clone(), restored);
                        self.nodes += 1;
                    }
                }
            }
            Some(d) => {
                let device: Device = postcard::from_bytes(bytes)?;
                let node = self.node_mut(&part.group, &part.node).ok_or(ImportError::NoNode)?;
                node.devices.insert(d.clone(), device);
            }
        }
        Ok(())
    }
}
