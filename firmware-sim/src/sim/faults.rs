//! The fault stages of a message (see the module above, "How faults act"): which fault
//! withholds it, how faults shape its values and timestamp, and how it is delivered
//! (duplicated, held late, reordered); and the one-off jobs at a fault's start (a dropped
//! and restored link, garbage, bursts).

use super::*;

impl Simulation {
    /// The fault that withholds a message of `class` from `device` at `at`, if any.
    pub(super) fn withholder(&self, device: usize, at: Duration, class: Class) -> Option<usize> {
        if let Some(f) = self.links.get(device).and_then(|l| l.dropped_by) {
            return Some(f);
        }
        for &fi in self.faults_of.get(device)? {
            let Some(f) = self.faults.get(fi) else { continue };
            let hit = match f.kind {
                FaultKind::Silence { duration } => f.covers(at, duration),
                FaultKind::HeartbeatLoss { duration } => class == Class::Heartbeat && f.covers(at, duration),
                FaultKind::Flap { period, down, count, via: FlapVia::Silence } => {
                    at.checked_sub(f.start).is_some_and(|rel| {
                        let k = rel.as_nanos() / period.as_nanos().max(1);
                        let into = rel.as_nanos() % period.as_nanos().max(1);
                        k < u128::from(count) && into < down.as_nanos()
                    })
                }
                FaultKind::ForcedDoor { duration } => {
                    matches!(class, Class::Badge | Class::Open) && f.covers(at, duration)
                }
                _ => false,
            };
            if hit {
                return Some(fi);
            }
        }
        None
    }

    /// Counts `n` messages withheld by fault `fi`.
    pub(super) fn withhold(&mut self, fi: usize, n: usize) {
        self.stats.withheld += n as u64;
        if let Some(f) = self.faults.get_mut(fi) {
            f.messages += n as u64;
        }
    }

    /// Applies the faults that change values (stuck, overheat, spike, drift, level shift,
    /// pattern break, noise burst, battery decline) to a reading's values.
    pub(super) fn shape_values(&mut self, device: usize, at: Duration, values: &mut [f32], shaped: &mut FaultSet) {
        let Some(list) = self.faults_of.get(device) else { return };
        let dev = self.devices.get(device);
        for &fi in list {
            let Some(f) = self.faults.get_mut(fi) else { continue };
            let Some(value) = values.get_mut(f.channel) else { continue };
            let hours = at.saturating_sub(f.start).as_secs_f64() / 3600.0;
            match f.kind {
                FaultKind::Stuck { duration, .. } if f.covers(at, duration) => {
                    *value = *f.frozen.get_or_insert(*value);
                    shaped.insert(FaultType::Stuck);
                    f.acted(at);
                }
                FaultKind::Overheat { duration, value: hot, .. } if f.covers(at, duration) => {
                    *value = hot;
                    shaped.insert(FaultType::Overheat);
                    f.acted(at);
                }
                FaultKind::Spike { value: outlier, .. } if at >= f.start && f.remaining > 0 => {
                    *value = match outlier {
                        SpikeValue::Absolute(v) => v,
                        SpikeValue::Relative(by) => round2(*value + by),
                    };
                    f.remaining -= 1;
                    shaped.insert(FaultType::Spike);
                    f.acted(at);
                }
                FaultKind::Drift { duration, rate, .. } if f.covers(at, duration) => {
                    *value = round2((f64::from(*value) + f64::from(rate) * hours) as f32);
                    shaped.insert(FaultType::Drift);
                    f.acted(at);
                }
                FaultKind::LevelShift { duration, by, .. } if f.covers(at, duration) => {
                    *value = round2(*value + by);
                    shaped.insert(FaultType::LevelShift);
                    f.acted(at);
                }
                FaultKind::PatternBreak { duration, .. } if f.covers(at, duration) => {
                    // Validation made sure the channel's signal has a periodic part.
                    let delta = dev.and_then(|d| d.pattern_break(f.channel, at)).unwrap_or(0.0);
                    *value = round2(*value + delta);
                    shaped.insert(FaultType::PatternBreak);
                    f.acted(at);
                }
                FaultKind::NoiseBurst { duration, noise, .. } if f.covers(at, duration) => {
                    let extra = f.rng.as_mut().map_or(0.0, |rng| rng.random_range(-noise..=noise));
                    *value = round2(*value + extra);
                    shaped.insert(FaultType::NoiseBurst);
                    f.acted(at);
                }
                FaultKind::BatteryDecline { duration, rate, .. } if f.covers(at, duration.unwrap_or(Duration::MAX)) => {
                    if f.frozen.is_none() {
                        f.frozen = dev.and_then(|d| d.level(f.channel, at));
                    }
                    let declined = f64::from(*value) - f64::from(rate) * hours;
                    *value = round2(declined.max(0.0) as f32);
                    shaped.insert(FaultType::BatteryDecline);
                    f.acted(at);
                }
                _ => {}
            }
        }
    }

    /// `ts` of a message sent at `at`, shifted by any clock skew.
    pub(super) fn ts(&mut self, device: usize, at: Duration, shaped: &mut FaultSet) -> u64 {
        let base = self.start_ms.saturating_add(ms(at));
        let Some(list) = self.faults_of.get(device) else { return base };
        let mut ts = base;
        for &fi in list {
            let Some(f) = self.faults.get_mut(fi) else { continue };
            if let FaultKind::ClockSkew { duration, offset_ms } = f.kind {
                if f.covers(at, duration) {
                    ts = ts.saturating_add_signed(offset_ms);
                    shaped.insert(FaultType::ClockSkew);
                    f.acted(at);
                }
            }
        }
        ts
    }

    /// The first one-off fault of `ty` on `device` that still has messages to act on.
    pub(super) fn pick(&self, device: usize, at: Duration, class: Class, ty: FaultType) -> Option<usize> {
        self.faults_of.get(device)?.iter().copied().find(|&fi| {
            self.faults.get(fi).is_some_and(|f| {
                let filter = match f.kind {
                    FaultKind::Duplicate { messages, .. } | FaultKind::Reorder { messages, .. } => messages,
                    _ => return false,
                };
                f.kind.fault_type() == ty && at >= f.start && f.remaining > 0 && class.matches(filter)
            })
        })
    }

    /// Stage 3: duplicate, then route each copy.
    pub(super) fn deliver(
        &mut self,
        device: usize,
        at: Duration,
        publish: Publish,
        class: Class,
        out: &mut Vec<Emission>,
    ) {
        if let Some(fi) = self.pick(device, at, class, FaultType::Duplicate) {
            if let Some(f) = self.faults.get_mut(fi) {
                f.remaining -= 1;
                f.acted(at);
            }
            let mut copy = publish.clone();
            copy.faults.insert(FaultType::Duplicate);
            self.route(device, at, publish, class, out);
            self.route(device, at, copy, class, out);
        } else {
            self.route(device, at, publish, class, out);
        }
    }

    /// Stage 3: late, reorder, or out now.
    pub(super) fn route(
        &mut self,
        device: usize,
        at: Duration,
        mut publish: Publish,
        class: Class,
        out: &mut Vec<Emission>,
    ) {
        let late = self.faults_of.get(device).and_then(|list| {
            list.iter().copied().find_map(|fi| match self.faults.get(fi)?.kind {
                FaultKind::Late { duration, delay } if self.faults.get(fi)?.covers(at, duration) => Some((fi, delay)),
                _ => None,
            })
        });
        if let Some((fi, delay)) = late {
            if let Some(f) = self.faults.get_mut(fi) {
                f.acted(at);
            }
            publish.faults.insert(FaultType::Late);
            self.held.push(Reverse(Held { at: at.saturating_add(delay), order: self.held_order, device, publish }));
            self.held_order += 1;
            return;
        }
        if let Some((fi, held)) = self.links.get_mut(device).and_then(|l| l.held.take()) {
            if let Some(f) = self.faults.get_mut(fi) {
                f.last_at = Some(at);
            }
            self.emit(at, device, Action::Publish(publish), out);
            self.emit(at, device, Action::Publish(held), out);
            return;
        }
        if let Some(fi) = self.pick(device, at, class, FaultType::Reorder) {
            if let Some(f) = self.faults.get_mut(fi) {
                f.remaining -= 1;
                f.acted(at);
            }
            publish.faults.insert(FaultType::Reorder);
            if let Some(link) = self.links.get_mut(device) {
                link.held = Some((fi, publish));
            }
            return;
        }
        self.emit(at, device, Action::Publish(publish), out);
    }

    /// An own-connection device's connection drops, unless it is down already.
    pub(super) fn drop_link(&mut self, fi: usize, d: usize, at: Duration, out: &mut Vec<Emission>) -> bool {
        let Some(will_topic) = self.devices[d].status_topic_arc() else { return false };
        if self.links[d].dropped_by.is_some() {
            return false;
        }
        self.links[d].dropped_by = Some(fi);
        if let Some(f) = self.faults.get_mut(fi) {
            f.last_at = Some(at);
        }
        self.emit(at, d, Action::Drop { will_topic }, out);
        true
    }

    /// The connection fault `fi` dropped comes back.
    pub(super) fn restore_link(&mut self, fi: usize, d: usize, at: Duration, out: &mut Vec<Emission>) {
        if self.links[d].dropped_by == Some(fi) {
            self.links[d].dropped_by = None;
            self.connect(d, at, out);
        }
    }

    pub(super) fn fault_job(&mut self, fi: usize, at: Duration, out: &mut Vec<Emission>) {
        let Some(f) = self.faults.get(fi) else { return };
        let (d, kind, start, phase) = (f.device, f.kind.clone(), f.start, f.phase);
        match kind {
            FaultKind::Malformed { count } => {
                if let Some(by) = self.withholder(d, at, Class::Garbage) {
                    return self.withhold(by, count as usize);
                }
                let topic = self.devices[d].garbage_topic();
                for _ in 0..count {
                    let mut shaped = FaultSet::EMPTY;
                    shaped.insert(FaultType::Malformed);
                    let ts = self.ts(d, at, &mut shaped);
                    match self.devices[d].garbage_at(ts) {
                        Ok(payload) => {
                            if let Some(f) = self.faults.get_mut(fi) {
                                f.acted(at);
                            }
                            let p = Publish {
                                topic: topic.clone(),
                                payload,
                                kind: Kind::Malformed,
                                encoding: Encoding::Binary,
                                faults: shaped,
                            };
                            self.emit(at, d, Action::Publish(p), out);
                        }
                        Err(e) => self.encode_failed(d, &e),
                    }
                }
            }
            FaultKind::Burst { count } => {
                for _ in 0..count {
                    let values = self.devices[d].sample_extra(at);
                    let before = self.stats.withheld;
                    let mut shaped = FaultSet::EMPTY;
                    shaped.insert(FaultType::Burst);
                    self.reading(d, at, values, shaped, out);
                    if self.stats.withheld == before {
                        if let Some(f) = self.faults.get_mut(fi) {
                            f.acted(at);
                        }
                    }
                }
            }
            FaultKind::ForcedDoor { .. } => {
                if let Some(by) = self.withholder(d, at, Class::ForcedOpen) {
                    return self.withhold(by, 1);
                }
                if let Some(f) = self.faults.get_mut(fi) {
                    f.acted(at);
                }
                let mut shaped = FaultSet::EMPTY;
                shaped.insert(FaultType::ForcedDoor);
                self.door_event(d, at, Class::ForcedOpen, shaped, out);
            }
            FaultKind::Disconnect { duration } => {
                if phase == 0 {
                    if self.drop_link(fi, d, at, out) {
                        self.push(start.saturating_add(duration), d, Job::Fault(fi));
                    }
                } else {
                    self.restore_link(fi, d, at, out);
                }
                if let Some(f) = self.faults.get_mut(fi) {
                    f.phase += 1;
                }
            }
            FaultKind::Flap { period, down, count, .. } => {
                // Even phases drop, odd phases reconnect: phase 2k at start + k·period,
                // phase 2k+1 at start + k·period + down.
                let k = phase / 2;
                let cycle_start = start.saturating_add(period.saturating_mul(k));
                if phase % 2 == 0 {
                    // Counted as "withheld" by the messages it stops; the drop itself is one action.
                    self.drop_link(fi, d, at, out);
                    self.push(cycle_start.saturating_add(down), d, Job::Fault(fi));
                } else {
                    self.restore_link(fi, d, at, out);
                    if k + 1 < count {
                        self.push(cycle_start.saturating_add(period), d, Job::Fault(fi));
                    }
                }
                if let Some(f) = self.faults.get_mut(fi) {
                    f.phase += 1;
                }
            }
            _ => {}
        }
    }
}
