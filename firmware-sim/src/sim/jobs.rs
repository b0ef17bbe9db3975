//! Running one scheduled job: a device's reading, heartbeat or door event made and sent
//! through the fault stages (`faults`), a connection, a fault's one-off job.

use super::*;

impl Simulation {
    /// Delivers the next late message, unless its device's connection is down by then.
    pub(super) fn release_held(&mut self, out: &mut Vec<Emission>) {
        let Some(Reverse(h)) = self.held.pop() else { return };
        match self.links.get(h.device).and_then(|l| l.dropped_by) {
            Some(fi) => self.withhold(fi, 1),
            None => self.emit(h.at, h.device, Action::Publish(h.publish), out),
        }
    }

    pub(super) fn emit(&mut self, at: Duration, device: usize, action: Action, out: &mut Vec<Emission>) {
        match &action {
            Action::Publish(p) => {
                self.stats.published += 1;
                if !p.faults.is_empty() {
                    self.stats.shaped += 1;
                }
            }
            Action::Connect => self.stats.connects += 1,
            Action::Drop { .. } => self.stats.drops += 1,
        }
        out.push(Emission { at, time_ms: self.start_ms.saturating_add(ms(at)), device, action });
    }

    pub(super) fn push(&mut self, at: Duration, device: usize, job: Job) {
        self.schedule.push(Reverse(Slot { at, device, job }));
    }

    pub(super) fn encode_failed(&mut self, device: usize, error: &EncodeError) {
        self.stats.encode_errors += 1;
        let id = self.devices.get(device).map(Device::id).unwrap_or_default();
        tracing::error!(device = id, error = %error, "Could not encode a message; dropped it");
    }

    pub(super) fn run(&mut self, slot: Slot, out: &mut Vec<Emission>) {
        let d = slot.device;
        if d >= self.devices.len() {
            return;
        }
        match slot.job {
            Job::Connect => self.connect(d, slot.at, out),
            Job::Reading => {
                let (at, values) = self.devices[d].take_reading();
                let next = self.devices[d].next_reading();
                self.push(next, d, Job::Reading);
                self.reading(d, at, values, FaultSet::EMPTY, out);
            }
            Job::Heartbeat => {
                let Some(at) = self.devices[d].take_heartbeat() else { return };
                if let Some(next) = self.devices[d].next_heartbeat() {
                    self.push(next, d, Job::Heartbeat);
                }
                if let Some(fi) = self.withholder(d, at, Class::Heartbeat) {
                    return self.withhold(fi, 1);
                }
                let mut shaped = FaultSet::EMPTY;
                let ts = self.ts(d, at, &mut shaped);
                let topic = self.devices[d].heartbeat_topic_arc();
                match self.devices[d].encode_heartbeat(at, ts) {
                    Ok(payload) => {
                        let encoding = encoding(self.format(d));
                        let p = Publish { topic, payload, kind: Kind::Heartbeat, encoding, faults: shaped };
                        self.deliver(d, at, p, Class::Heartbeat, out);
                    }
                    Err(e) => self.encode_failed(d, &e),
                }
            }
            Job::Badge => {
                let Some((at, next)) = self.devices[d].take_badge() else { return };
                self.push(next, d, Job::Badge);
                if let Some(fi) = self.withholder(d, at, Class::Badge) {
                    return self.withhold(fi, 1);
                }
                self.door_event(d, at, Class::Badge, FaultSet::EMPTY, out);
                // Every opening must be answered by a badge read within the next cycle, so
                // the badge read before a forced opening, and the last one of the run, are
                // not followed by an opening.
                let forced = self.faults_of[d].iter().copied().find(|&fi| {
                    self.faults.get(fi).is_some_and(|f| {
                        matches!(f.kind, FaultKind::ForcedDoor { .. }) && at < f.start && f.start <= next
                    })
                });
                if let Some(fi) = forced {
                    self.withhold(fi, 1);
                } else if self.end.is_none_or(|end| next < end) {
                    let open_at = at.saturating_add(self.devices[d].open_delay());
                    self.push(open_at, d, Job::Open);
                }
            }
            Job::Open => {
                if let Some(fi) = self.withholder(d, slot.at, Class::Open) {
                    return self.withhold(fi, 1);
                }
                self.door_event(d, slot.at, Class::Open, FaultSet::EMPTY, out);
            }
            Job::Fault(fi) => self.fault_job(fi, slot.at, out),
        }
    }

    pub(super) fn format(&self, d: usize) -> PayloadFormat {
        self.devices.get(d).map_or(PayloadFormat::Json, Device::format)
    }

    /// Stages 1 to 3 for one reading of `values` taken at `at`.
    pub(super) fn reading(
        &mut self,
        d: usize,
        at: Duration,
        mut values: crate::device::Values,
        mut shaped: FaultSet,
        out: &mut Vec<Emission>,
    ) {
        if let Some(fi) = self.withholder(d, at, Class::Reading) {
            let n = self.devices[d].messages_per_reading();
            return self.withhold(fi, n);
        }
        self.shape_values(d, at, &mut values, &mut shaped);
        let ts = self.ts(d, at, &mut shaped);
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Err(e) = self.devices[d].encode_reading(ts, &values, &mut scratch) {
            self.encode_failed(d, &e);
        }
        let encoding = encoding(self.format(d));
        for (topic, payload) in scratch.drain(..) {
            let p = Publish { topic, payload, kind: Kind::Reading, encoding, faults: shaped };
            self.deliver(d, at, p, Class::Reading, out);
        }
        self.scratch = scratch;
    }

    /// A badge read or door opening (normal or forced) at `at`.
    pub(super) fn door_event(
        &mut self,
        d: usize,
        at: Duration,
        class: Class,
        mut shaped: FaultSet,
        out: &mut Vec<Emission>,
    ) {
        let (topic, code, kind) = match class {
            Class::Badge => (self.devices[d].badge_topic(), BADGE_CODE, Kind::Badge),
            _ => (self.devices[d].open_topic(), OPEN_CODE, Kind::Open),
        };
        let Some(topic) = topic else { return };
        let ts = self.ts(d, at, &mut shaped);
        match self.devices[d].encode_event(ts, code) {
            Ok(payload) => {
                let encoding = encoding(self.format(d));
                let p = Publish { topic, payload, kind, encoding, faults: shaped };
                self.deliver(d, at, p, class, out);
            }
            Err(e) => self.encode_failed(d, &e),
        }
    }

    /// An own-connection device connects and says `online`.
    pub(super) fn connect(&mut self, d: usize, at: Duration, out: &mut Vec<Emission>) {
        let Some(topic) = self.devices[d].status_topic_arc() else { return };
        self.emit(at, d, Action::Connect, out);
        if let Some(fi) = self.withholder(d, at, Class::Status) {
            return self.withhold(fi, 1);
        }
        let p = Publish {
            topic,
            payload: ONLINE_PAYLOAD.as_bytes().to_vec(),
            kind: Kind::Status,
            encoding: Encoding::Text,
            faults: FaultSet::EMPTY,
        };
        self.emit(at, d, Action::Publish(p), out);
    }
}
