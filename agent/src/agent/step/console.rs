//! The console's questions, answered between two inputs (see `crate::console`).

use super::Step;
use crate::console::{DevicesNow, Query, RulesNow};
use edgewatch_engine::Timestamp;

impl Step {
    /// Answers `query` from the engine and the rules' status. A console that has gone away
    /// meanwhile is not an error.
    pub(super) fn answer(&mut self, query: Query, now: Timestamp) {
        match query {
            Query::Rules(reply) => {
                let _ = reply.send(RulesNow { rules: self.engine.rule_views(), status: self.rules_status.clone() });
            }
            Query::Devices { key, reply } => {
                let key = key.as_deref();
                let devices = self.engine.devices(key);
                let alarms = self.engine.alarms(key);
                let sparkplug = key.and_then(|k| crate::sparkplug::event::view(&self.sparkplug.sessions, k));
                let _ = reply.send(DevicesNow { devices, alarms, now: now.millis(), sparkplug });
            }
            Query::Alarm { request, command, reply } => {
                let _ = reply.send(self.console_alarm_command(&request, command, now));
            }
        }
    }
}
