//! A [`ScenarioSpec`] checked into a [`Scenario`]: ids and topics expanded and checked,
//! faults resolved against the devices they name; every error a key path and a message.

use super::*;

type Invalid = (String, String);

fn invalid<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err((path.into(), message.into()))
}

/// A name that becomes one topic level: the wire crate's check, shared with the agent.
fn check_level(path: &str, what: &str, value: &str) -> Result<(), Invalid> {
    edgewatch_wire::check_topic_level(value).or_else(|e| invalid(path, format!("{what} {value:?} {e}")))
}

fn check_topic(path: &str, topic: &str) -> Result<(), Invalid> {
    if topic.is_empty() {
        return invalid(path, "renders to an empty topic");
    }
    if topic.len() > usize::from(u16::MAX) {
        return invalid(path, "renders to a topic longer than 65535 bytes");
    }
    Ok(())
}

fn nonzero(path: String, what: &str, d: Duration) -> Result<(), Invalid> {
    if d.is_zero() { invalid(path, format!("{what} must be longer than zero")) } else { Ok(()) }
}

pub(super) fn validate(spec: ScenarioSpec) -> Result<Scenario, Invalid> {
    if spec.groups.is_empty() {
        return invalid("groups", "a scenario needs at least one group");
    }
    if let Some(d) = spec.duration {
        nonzero("duration".into(), "duration", d)?;
    }
    let mut group_names = HashSet::new();
    let mut ids: Vec<String> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut offsets = Vec::with_capacity(spec.groups.len());
    let mut own = 0usize;
    for (gi, g) in spec.groups.iter().enumerate() {
        let p = |key: &str| format!("groups[{gi}].{key}");
        check_level(&p("name"), "group name", &g.name)?;
        if !group_names.insert(g.name.as_str()) {
            return invalid(p("name"), format!("two groups are named {:?}", g.name));
        }
        if g.count == 0 {
            return invalid(p("count"), "a group needs at least one device");
        }
        if ids.len().saturating_add(g.count) > MAX_DEVICES {
            return invalid(p("count"), format!("a scenario may have at most {MAX_DEVICES} devices"));
        }
        if g.count > 1 && !g.id.has_placeholder() {
            return invalid(p("id"), "with more than one device the id needs {index} or {number}");
        }
        if let Some(hb) = g.heartbeat_interval {
            nonzero(p("heartbeat_interval"), "heartbeat_interval", hb)?;
        }
        if g.own_connection {
            own += g.count;
            if own > MAX_OWN_CONNECTIONS {
                return invalid(
                    p("own_connection"),
                    format!("at most {MAX_OWN_CONNECTIONS} devices may have their own connection ({own} would)"),
                );
            }
        }
        offsets.push(ids.len());
        for position in 0..g.count {
            let id = g.id.render(g.first_index.saturating_add(position));
            check_level(&p("id"), "device id", &id)?;
            if let Err(e) = edgewatch_wire::device_id(&id) {
                return invalid(p("id"), format!("device id {id:?} is not valid on the wire: {e}"));
            }
            if let Some(prev) = seen.insert(id.clone(), ids.len()) {
                let other = ids.get(prev).cloned().unwrap_or_default();
                return invalid(p("id"), format!("device id {id:?} is used twice (also by device {prev}, {other:?})"));
            }
            ids.push(id);
        }
        // Topics of one device must not collide (checked on the first device; the others
        // differ only by id).
        let first = ids.get(offsets[gi]).cloned().unwrap_or_default();
        let mut topics: Vec<(String, String)> = Vec::new();
        if g.heartbeat_interval.is_some() {
            topics.push((p("heartbeat_topic"), g.heartbeat_topic.render(&first, "", &g.name)));
        }
        if g.own_connection {
            topics.push((p("status_topic"), g.status_topic.render(&first, "", &g.name)));
        }
        match &g.kind {
            GroupKind::Sensor(s) => {
                nonzero(p("reading_interval"), "reading_interval", s.reading_interval)?;
                if s.channels.is_empty() || s.channels.len() > MAX_CHANNELS {
                    return invalid(p("channels"), format!("a sensor reads 1 to {MAX_CHANNELS} channels"));
                }
                let mut names = HashSet::new();
                for (ci, c) in s.channels.iter().enumerate() {
                    let cp = |key: &str| format!("groups[{gi}].channels[{ci}].{key}");
                    check_level(&cp("name"), "channel", &c.name)?;
                    if let Err(e) = edgewatch_wire::channel(&c.name) {
                        return invalid(cp("name"), format!("channel {:?} is not valid on the wire: {e}", c.name));
                    }
                    if !names.insert(c.name.as_str()) {
                        return invalid(cp("name"), format!("channel {:?} is read twice", c.name));
                    }
                    c.signal.validate().map_err(|e| (cp("signal"), e.0))?;
                    if s.reading_topic.has_channel() || ci == 0 {
                        topics.push((p("reading_topic"), s.reading_topic.render(&first, &c.name, &g.name)));
                    }
                }
            }
            GroupKind::Door(d) => {
                nonzero(p("cycle"), "cycle", d.cycle)?;
                if d.jitter >= d.cycle {
                    return invalid(p("jitter"), "jitter must be shorter than the cycle");
                }
                if d.open_delay >= d.cycle - d.jitter {
                    return invalid(p("open_delay"), "open_delay must be shorter than cycle - jitter");
                }
                topics.push((p("badge_topic"), d.badge_topic.render(&first, "", &g.name)));
                topics.push((p("open_topic"), d.open_topic.render(&first, "", &g.name)));
            }
        }
        for (i, (path, topic)) in topics.iter().enumerate() {
            check_topic(path, topic)?;
            if let Some((other, _)) = topics[..i].iter().find(|(_, t)| t == topic) {
                return invalid(path.clone(), format!("renders to {topic:?}, as {other} does"));
            }
        }
    }

    let mut targets = Vec::with_capacity(spec.faults.len());
    let mut channels = Vec::with_capacity(spec.faults.len());
    for (fi, f) in spec.faults.iter().enumerate() {
        let p = |key: &str| format!("faults[{fi}].{key}");
        let target = match &f.device {
            DeviceRef::Id(id) => *seen.get(id).ok_or_else(|| (p("device"), format!("no device has the id {id:?}")))?,
            DeviceRef::Index { group, index } => {
                let gi = spec
                    .groups
                    .iter()
                    .position(|g| &g.name == group)
                    .ok_or_else(|| (p("group"), format!("no group is named {group:?}")))?;
                let g = &spec.groups[gi];
                match index.checked_sub(g.first_index).filter(|pos| *pos < g.count) {
                    Some(pos) => offsets[gi] + pos,
                    None => {
                        return invalid(
                            p("index"),
                            format!("group {group:?} has indexes {} to {}", g.first_index, g.first_index + g.count - 1),
                        );
                    }
                }
            }
        };
        let gi = offsets.iter().rposition(|&o| o <= target).unwrap_or(0);
        let g = &spec.groups[gi];
        let name = f.kind.fault_type().name();
        let unsuited = |what: &str| -> Invalid {
            (format!("faults[{fi}]"), format!("a {name} fault needs {what}, and {} is not one", f.device))
        };
        let needs = |ok: bool, what: &str| -> Result<(), Invalid> { if ok { Ok(()) } else { Err(unsuited(what)) } };
        let mut channel = 0;
        match &f.kind {
            FaultKind::Silence { duration }
            | FaultKind::Stuck { duration, .. }
            | FaultKind::ClockSkew { duration, .. }
            | FaultKind::ForcedDoor { duration }
            | FaultKind::Disconnect { duration }
            | FaultKind::HeartbeatLoss { duration }
            | FaultKind::Overheat { duration, .. }
            | FaultKind::Late { duration, .. }
            | FaultKind::Drift { duration, .. }
            | FaultKind::LevelShift { duration, .. }
            | FaultKind::PatternBreak { duration, .. }
            | FaultKind::NoiseBurst { duration, .. } => nonzero(p("duration"), "duration", *duration)?,
            FaultKind::BatteryDecline { duration, .. } => {
                if let Some(d) = duration {
                    nonzero(p("duration"), "duration", *d)?;
                }
            }
            FaultKind::Flap { period, down, count, .. } => {
                nonzero(p("period"), "period", *period)?;
                nonzero(p("down"), "down", *down)?;
                if down >= period {
                    return invalid(p("down"), "down must be shorter than the period");
                }
                if *count == 0 {
                    return invalid(p("count"), "count must be at least 1");
                }
            }
            FaultKind::Spike { count, .. }
            | FaultKind::Duplicate { count, .. }
            | FaultKind::Reorder { count, .. }
            | FaultKind::Malformed { count }
            | FaultKind::Burst { count } => {
                if *count == 0 {
                    return invalid(p("count"), "count must be at least 1");
                }
            }
        }
        match &f.kind {
            FaultKind::Overheat { value, .. } | FaultKind::Spike { value: SpikeValue::Absolute(value), .. }
                if !value.is_finite() =>
            {
                return invalid(p("value"), "value must be a finite number");
            }
            FaultKind::Spike { value: SpikeValue::Relative(by), .. } | FaultKind::LevelShift { by, .. }
                if !by.is_finite() || *by == 0.0 =>
            {
                return invalid(p("by"), "by must be a finite number other than zero");
            }
            FaultKind::Drift { rate, .. } if !rate.is_finite() || *rate == 0.0 => {
                return invalid(p("rate"), "rate must be a finite number other than zero (units per hour)");
            }
            FaultKind::BatteryDecline { rate, .. } if !rate.is_finite() || *rate <= 0.0 => {
                return invalid(p("rate"), "rate must be a finite number above zero (volts per hour)");
            }
            FaultKind::NoiseBurst { noise, .. } if !noise.is_finite() || *noise <= 0.0 => {
                return invalid(p("noise"), "noise must be a finite number above zero");
            }
            FaultKind::Late { delay, .. } => nonzero(p("delay"), "delay", *delay)?,
            FaultKind::HeartbeatLoss { .. } => needs(g.heartbeat_interval.is_some(), "a device that sends heartbeats")?,
            FaultKind::Disconnect { .. } | FaultKind::Flap { via: FlapVia::Disconnect, .. } => {
                needs(g.own_connection, "a device with its own connection (own_connection = true)")?
            }
            FaultKind::ForcedDoor { .. } => needs(matches!(g.kind, GroupKind::Door(_)), "a door")?,
            FaultKind::Burst { .. } => needs(matches!(g.kind, GroupKind::Sensor(_)), "a sensor")?,
            FaultKind::Duplicate { messages, .. } | FaultKind::Reorder { messages, .. } => {
                let fits = match (messages, &g.kind) {
                    (MessageFilter::Any, _) => true,
                    (MessageFilter::Heartbeat, _) => g.heartbeat_interval.is_some(),
                    (MessageFilter::Reading, GroupKind::Sensor(_)) => true,
                    (MessageFilter::Badge | MessageFilter::Open, GroupKind::Door(_)) => true,
                    _ => false,
                };
                if !fits {
                    return invalid(
                        p("messages"),
                        format!("device {} never sends {} messages", f.device, messages.name()),
                    );
                }
            }
            _ => {}
        }
        if f.kind.shapes_values() {
            let GroupKind::Sensor(s) = &g.kind else {
                return Err(unsuited("a sensor"));
            };
            let battery = matches!(f.kind, FaultKind::BatteryDecline { .. });
            match f.kind.channel() {
                Some(name) => {
                    channel = s
                        .channels
                        .iter()
                        .position(|c| c.name == name)
                        .ok_or_else(|| (p("channel"), format!("device {} has no channel {name:?}", f.device)))?;
                }
                None if battery => {
                    channel = s.channels.iter().position(|c| c.name == BATTERY_CHANNEL).ok_or_else(|| {
                        unsuited(&format!("a sensor with a {BATTERY_CHANNEL:?} channel (or name one with `channel`)"))
                    })?;
                }
                None => {}
            }
            if let (FaultKind::PatternBreak { .. }, Some(c)) = (&f.kind, s.channels.get(channel)) {
                if !matches!(c.signal, Signal::Daily { .. } | Signal::Sine { .. }) {
                    let at = if f.kind.channel().is_some() { p("channel") } else { format!("faults[{fi}]") };
                    return invalid(
                        at,
                        format!(
                            "a pattern_break fault needs a daily or sine signal, and channel {:?} of {} has none",
                            c.name, f.device
                        ),
                    );
                }
            }
        }
        targets.push(target);
        channels.push(channel);
    }
    Ok(Scenario { spec, ids, offsets, targets, channels })
}
