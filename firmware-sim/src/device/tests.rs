use super::*;

use crate::scenario::{ChannelSpec, SensorSpec};
use crate::template::{IdTemplate, TopicTemplate};

/// Four sensors (`t-000` ..) reading `temperature` every second, heartbeats every 5 s.
fn cfg(signal: Signal) -> Group {
    Group {
        name: "fleet".to_owned(),
        count: 4,
        id: IdTemplate::with_prefix("t-"),
        first_index: 0,
        format: PayloadFormat::Json,
        heartbeat_interval: Some(Duration::from_secs(5)),
        heartbeat_topic: TopicTemplate::legacy("sensors", Some("heartbeat")),
        own_connection: false,
        status_topic: TopicTemplate::legacy("sensors", Some("status")),
        kind: GroupKind::Sensor(SensorSpec {
            reading_interval: Duration::from_secs(1),
            reading_topic: TopicTemplate::legacy("sensors", None),
            channels: vec![ChannelSpec { name: "temperature".to_owned(), signal }],
        }),
    }
}

impl Device {
    /// Device `index` of the one group `g`, seed 42.
    fn new(index: usize, g: &Group) -> Result<Device, DeviceError> {
        Device::build(index, 0, index, g, &g.id.render(index), 42, 1_732_170_000_000)
    }
}

fn values(dev: &mut Device, n: usize) -> Vec<f32> {
    (0..n).map(|_| dev.take_reading().1[0]).collect()
}

#[test]
fn staggers_first_messages_across_the_interval() {
    let c = cfg(Signal::Constant { value: 1.0, noise: 0.0 });
    let firsts: Vec<Duration> = (0..4).map(|i| Device::new(i, &c).expect("valid").next_reading()).collect();
    assert_eq!(firsts, [0, 250, 500, 750].map(Duration::from_millis).to_vec());
    let hb = Device::new(2, &c).expect("valid").next_heartbeat().expect("heartbeats on by default");
    assert_eq!(hb, Duration::from_millis(2500));
}

#[test]
fn seq_counts_every_sent_message_but_not_skipped_ones() {
    let mut d = Device::new(0, &cfg(Signal::Constant { value: 1.0, noise: 0.0 })).expect("valid");
    assert_eq!(d.seq(), 0);
    d.reading(None).expect("encodes");
    d.heartbeat().expect("on").expect("encodes");
    assert_eq!(d.seq(), 2);
    d.skip_reading();
    d.skip_heartbeat();
    assert_eq!(d.seq(), 2);
    d.garbage(Duration::ZERO).expect("encodes");
    assert_eq!(d.seq(), 2);
    assert_eq!(d.next_reading(), Duration::from_secs(2));
    assert_eq!(d.next_heartbeat(), Some(Duration::from_secs(10)));
}

#[test]
fn seq_wraps() {
    let mut d = Device::new(0, &cfg(Signal::Constant { value: 1.0, noise: 0.0 })).expect("valid");
    d.seq = u32::MAX;
    d.reading(None).expect("encodes");
    assert_eq!(d.seq(), 0);
}

#[test]
fn random_walk_stays_in_bounds_and_moves() {
    let mut d =
        Device::new(1, &cfg(Signal::RandomWalk { start: 20.0, step: 0.5, min: 19.0, max: 21.0 })).expect("valid");
    let v = values(&mut d, 500);
    assert!(v.iter().all(|x| (19.0..=21.0).contains(x)));
    assert!(v.windows(2).any(|w| w[0] != w[1]));
}

#[test]
fn sine_stays_within_amplitude_plus_noise() {
    let mut d = Device::new(3, &cfg(Signal::default())).expect("valid");
    let v = values(&mut d, 2000);
    assert!(v.iter().all(|x| (18.79..=25.21).contains(x)), "{v:?}");
    // Rounded to 0.01.
    assert!(v.iter().all(|x| ((x * 100.0).round() - x * 100.0).abs() < 1e-3));
}

#[test]
fn devices_have_their_own_phase() {
    let c = cfg(Signal::Sine { base: 0.0, amplitude: 10.0, period: Duration::from_secs(60), noise: 0.0 });
    let a = values(&mut Device::new(0, &c).expect("valid"), 1);
    let mut b = Device::new(1, &c).expect("valid");
    // Device 1's first reading is staggered; sample it at t=0 as device 0 was.
    if let Role::Sensor(s) = &mut b.role {
        s.timer.next = Duration::ZERO;
    }
    assert_ne!(a, values(&mut b, 1));
}

#[test]
fn garbage_is_invalid_in_both_formats() {
    for format in [PayloadFormat::Json, PayloadFormat::Postcard] {
        let c = Group { format, ..cfg(Signal::default()) };
        let mut d = Device::new(0, &c).expect("valid");
        let g = d.garbage(Duration::from_secs(5)).expect("encodes");
        assert!(!g.is_empty());
        assert!(edgewatch_wire::decode(&g).is_err());
        assert!(serde_json::from_slice::<serde_json::Value>(&g).is_err());
    }
}
