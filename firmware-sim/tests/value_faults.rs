//! The faults that bend a reading's value over time (drift, level shift, relative spike,
//! pattern break, noise burst, battery decline) and the `daily` signal, under virtual time.
//!
//! Each case runs the same scenario with and without the fault (same seed): these faults
//! never touch a device's own random stream, so outside the fault the two runs agree value
//! for value, and inside it the difference is exactly what the fault adds (to the 0.01
//! rounding of readings).

use std::time::Duration;

use firmware_sim::{
    BATTERY_CHANNEL, DeviceRef, FaultKind, FaultSpec, FaultType, Scenario, ScenarioError, SimOptions, Simulation,
    SpikeValue, Truth, truth_line,
};
use serde_json::Value;

/// 2024-11-21T00:00:00Z, a Thursday: virtual hour h is h:00 UTC on the first day.
const MIDNIGHT_MS: u64 = 1_732_147_200_000;
const HOUR: f64 = 3600.0;
/// Readings are rounded to 0.01; a difference of two of them is off by at most this.
const ROUNDING: f32 = 0.011;

/// Two sensors `t-0`, `t-1` reading every minute: `temperature` (daily, 20 ± 4, peak at
/// 15:00, noise ± 0.3) and `battery` (3.9 V ± 0.005), each on its own topic; plus `faults`.
fn fleet(faults: &str) -> String {
    format!(
        r#"
[[groups]]
name = "t"
count = 2
id = "t-{{index}}"
reading_interval = "1m"
[[groups.channels]]
name = "temperature"
signal = {{ model = "daily", base = 20.0, amplitude = 4.0, peak_hour = 15, noise = 0.3 }}
[[groups.channels]]
name = "battery"
signal = {{ model = "constant", value = 3.9, noise = 0.005 }}
{faults}
"#
    )
}

/// One reading of one channel: virtual hours, value, the faults that shaped it.
#[derive(Debug, Clone, PartialEq)]
struct Reading {
    hours: f64,
    value: f32,
    faults: Vec<FaultType>,
}

/// Runs `text` for `hours` from [`MIDNIGHT_MS`] with seed 5; returns every reading of
/// `device`'s `channel`, and the truth.
fn run(text: &str, hours: u64, device: &str, channel: &str) -> (Vec<Reading>, Vec<Truth>) {
    let scenario = Scenario::from_toml(text).unwrap_or_else(|e| panic!("{e}"));
    let opts = SimOptions { seed: 5, start_ms: MIDNIGHT_MS, duration: Some(Duration::from_secs(hours * 3600)) };
    let mut sim = Simulation::new(&scenario, opts).expect("builds");
    let out = sim.run_to_end().expect("has an end");
    let topic = format!("sensors/{device}/{channel}");
    let readings = out
        .iter()
        .filter_map(|e| {
            let p = e.publish().filter(|p| *p.topic == *topic)?;
            let v: Value = serde_json::from_slice(&p.payload).ok()?;
            let value = v[channel].as_f64()? as f32;
            Some(Reading { hours: e.at.as_secs_f64() / HOUR, value, faults: p.faults.iter().collect() })
        })
        .collect();
    (readings, sim.truth())
}

/// The same run with and without `fault`: `(clean, faulted)` readings of `t-0`'s `channel`,
/// and the faulted run's truth.
fn with_and_without(fault: &str, hours: u64, channel: &str) -> (Vec<Reading>, Vec<Reading>, Vec<Truth>) {
    let (clean, none) = run(&fleet(""), hours, "t-0", channel);
    assert!(none.is_empty());
    let (faulted, truth) = run(&fleet(fault), hours, "t-0", channel);
    assert_eq!(clean.len(), faulted.len(), "a value fault withholds nothing");
    (clean, faulted, truth)
}

fn truth_json(truth: &[Truth]) -> Value {
    assert_eq!(truth.len(), 1, "{truth:?}");
    serde_json::from_str(&truth_line(&truth[0])).expect("a JSON line")
}

/// Checks that inside `[from_h, to_h)` `faulted - clean` is `expected(hours)` (to the
/// rounding) and carries `ty`, and that outside it the runs agree; returns the count inside.
fn check_delta(
    clean: &[Reading],
    faulted: &[Reading],
    (from_h, to_h): (f64, f64),
    ty: FaultType,
    expected: impl Fn(f64) -> f32,
) -> usize {
    let mut inside = 0;
    for (c, f) in clean.iter().zip(faulted) {
        assert_eq!(c.hours, f.hours);
        if (from_h..to_h).contains(&c.hours) {
            let want = expected(c.hours);
            assert!(
                (f.value - c.value - want).abs() <= ROUNDING,
                "at {:.3} h: {} -> {}, want +{want}",
                c.hours,
                c.value,
                f.value
            );
            assert_eq!(f.faults, [ty], "at {:.3} h", c.hours);
            inside += 1;
        } else {
            assert_eq!(c, f, "outside the span the runs agree");
        }
    }
    inside
}

#[test]
fn drift_adds_an_offset_growing_at_rate_per_hour() {
    let fault = "[[faults]]\nfault = \"drift\"\ndevice = \"t-0\"\nstart = \"2h\"\nduration = \"6h\"\nrate = 0.5";
    let (clean, faulted, truth) = with_and_without(fault, 10, "temperature");
    let inside = check_delta(&clean, &faulted, (2.0, 8.0), FaultType::Drift, |h| 0.5 * (h - 2.0) as f32);
    assert_eq!(inside, 360);
    let last = faulted.iter().rfind(|r| r.hours < 8.0).expect("a reading");
    let clean_last = clean.iter().find(|r| r.hours == last.hours).expect("same time");
    assert!(last.value - clean_last.value > 2.9, "nearly +3 by the end");
    let t = truth_json(&truth);
    assert_eq!(t["fault"], "drift");
    assert_eq!(t["start_ms"], MIDNIGHT_MS + 2 * 3_600_000);
    assert_eq!(t["end_ms"], MIDNIGHT_MS + 8 * 3_600_000);
    assert_eq!(t["duration_ms"], 6 * 3_600_000);
    assert_eq!(t["rate_per_hour"], 0.5);
    assert_eq!(t["channel"], "temperature");
    assert_eq!(t["messages"], 360);
}

#[test]
fn drift_on_a_named_channel_can_go_down() {
    let fault = "[[faults]]\nfault = \"drift\"\ndevice = \"t-0\"\nstart = \"1h\"\nduration = \"2h\"\nrate = -0.1\nchannel = \"battery\"";
    let (clean, faulted, truth) = with_and_without(fault, 4, "battery");
    check_delta(&clean, &faulted, (1.0, 3.0), FaultType::Drift, |h| -0.1 * (h - 1.0) as f32);
    assert_eq!(truth_json(&truth)["channel"], "battery");
    let (t_clean, t_faulted, _) = with_and_without(fault, 4, "temperature");
    // The fault marks the whole reading (every channel's message), but only one value moves.
    let values = |rs: &[Reading]| rs.iter().map(|r| r.value).collect::<Vec<_>>();
    assert!(values(&t_clean) == values(&t_faulted), "the other channel's values are untouched");
}

#[test]
fn level_shift_adds_by_in_its_span() {
    let fault = "[[faults]]\nfault = \"level_shift\"\ndevice = \"t-0\"\nstart = \"3h\"\nduration = \"2h\"\nby = -4.5";
    let (clean, faulted, truth) = with_and_without(fault, 6, "temperature");
    assert_eq!(check_delta(&clean, &faulted, (3.0, 5.0), FaultType::LevelShift, |_| -4.5), 120);
    let t = truth_json(&truth);
    assert_eq!(
        (t["fault"].as_str(), t["by"].as_f64(), t["duration_ms"].as_u64()),
        (Some("level_shift"), Some(-4.5), Some(7_200_000))
    );
    assert_eq!(t["messages"], 120);
}

#[test]
fn relative_spike_adds_by_to_the_next_readings() {
    let fault = "[[faults]]\nfault = \"spike\"\ndevice = \"t-0\"\nstart = \"90m\"\nby = 8.0\ncount = 3";
    let (clean, faulted, truth) = with_and_without(fault, 3, "temperature");
    // t-0 reads on the minute: 1.5 h, then the two after.
    assert_eq!(check_delta(&clean, &faulted, (1.5, 1.5 + 2.5 / 60.0), FaultType::Spike, |_| 8.0), 3);
    let t = truth_json(&truth);
    assert_eq!(t["by"], 8.0);
    assert!(t.get("value").is_none(), "a relative spike has no absolute value: {t}");
    assert_eq!((t["count"].as_u64(), t["messages"].as_u64()), (Some(3), Some(3)));
    assert_eq!(t["end_ms"], MIDNIGHT_MS + 92 * 60_000, "when it last acted");
}

#[test]
fn absolute_spike_still_reports_value() {
    let fault = "[[faults]]\nfault = \"spike\"\ndevice = \"t-0\"\nstart = \"1h\"\nvalue = 85.0";
    let (_, faulted, truth) = with_and_without(fault, 2, "temperature");
    assert_eq!(faulted.iter().filter(|r| r.value == 85.0).count(), 1);
    let t = truth_json(&truth);
    assert_eq!((t["value"].as_f64(), t.get("by")), (Some(85.0), None));
}

#[test]
fn pattern_break_shows_the_daily_shape_twelve_hours_off() {
    // A day from midnight; the break covers 12:00 to 18:00, around the 15:00 peak.
    let fault = "[[faults]]\nfault = \"pattern_break\"\ndevice = \"t-0\"\nstart = \"12h\"\nduration = \"6h\"";
    let (clean, faulted, truth) = with_and_without(fault, 24, "temperature");
    // What the daily model says the shift adds: amplitude · (cos(h - 12 - 15) - cos(h - 15)).
    let shape = |h: f64| 4.0 * (std::f64::consts::TAU * (h - 15.0) / 24.0).cos();
    let inside =
        check_delta(&clean, &faulted, (12.0, 18.0), FaultType::PatternBreak, |h| (shape(h - 12.0) - shape(h)) as f32);
    assert_eq!(inside, 360);
    // At 15:00 the sensor reads like at 03:00: about 16 instead of 24, still within the
    // day's normal range.
    let at = |rs: &[Reading], h: f64| rs.iter().find(|r| r.hours == h).map(|r| r.value).expect("a reading");
    assert!((at(&clean, 15.0) - 24.0).abs() <= 0.31, "{}", at(&clean, 15.0));
    assert!((at(&faulted, 15.0) - 16.0).abs() <= 0.31, "{}", at(&faulted, 15.0));
    assert!(faulted.iter().all(|r| (15.69..=24.31).contains(&r.value)), "normal in range");
    let t = truth_json(&truth);
    assert_eq!((t["fault"].as_str(), t["duration_ms"].as_u64()), (Some("pattern_break"), Some(6 * 3_600_000)));
    assert_eq!(t["channel"], "temperature");
}

#[test]
fn pattern_break_inverts_a_sine() {
    let sine = fleet("").replace(
        r#"{ model = "daily", base = 20.0, amplitude = 4.0, peak_hour = 15, noise = 0.3 }"#,
        r#"{ model = "sine", base = 20.0, amplitude = 4.0, period = "2h", noise = 0.3 }"#,
    );
    assert!(sine.contains("sine"));
    let fault = "[[faults]]\nfault = \"pattern_break\"\ndevice = \"t-0\"\nstart = \"1h\"\nduration = \"2h\"";
    let (clean, _) = run(&sine, 4, "t-0", "temperature");
    let (faulted, _) = run(&format!("{sine}\n{fault}"), 4, "t-0", "temperature");
    for (c, f) in clean.iter().zip(&faulted) {
        if (1.0..3.0).contains(&c.hours) {
            // clean = base + p + n and faulted = base - p + n: they sum to 2·base + 2·n.
            let sum = c.value + f.value - 40.0;
            assert!(sum.abs() <= 0.6 + ROUNDING, "at {:.3} h: {} and {}", c.hours, c.value, f.value);
        } else {
            assert_eq!(c, f);
        }
    }
}

#[test]
fn noise_burst_adds_bounded_noise_and_leaves_the_device_stream_alone() {
    let fault = "[[faults]]\nfault = \"noise_burst\"\ndevice = \"t-0\"\nstart = \"2h\"\nduration = \"1h\"\nnoise = 3.0";
    let (clean, faulted, truth) = with_and_without(fault, 5, "temperature");
    let mut deltas = Vec::new();
    for (c, f) in clean.iter().zip(&faulted) {
        if (2.0..3.0).contains(&c.hours) {
            deltas.push(f.value - c.value);
            assert_eq!(f.faults, [FaultType::NoiseBurst]);
        } else {
            // After the burst too: the device's own random stream was not touched.
            assert_eq!(c, f);
        }
    }
    assert_eq!(deltas.len(), 60);
    assert!(deltas.iter().all(|d| d.abs() <= 3.0 + ROUNDING), "{deltas:?}");
    assert!(deltas.iter().filter(|d| d.abs() > 1.0).count() > 20, "wide noise: {deltas:?}");
    let mean = deltas.iter().sum::<f32>() / deltas.len() as f32;
    assert!(mean.abs() < 1.0, "centred: {mean}");
    let t = truth_json(&truth);
    assert_eq!((t["noise"].as_f64(), t["messages"].as_u64()), (Some(3.0), Some(60)));
    // Same seed, same burst.
    let (_, again, _) = with_and_without(fault, 5, "temperature");
    assert_eq!(faulted, again);
}

#[test]
fn battery_decline_runs_down_to_the_end_and_the_truth_predicts_the_crossing() {
    let fault = "[[faults]]\nfault = \"battery_decline\"\ndevice = \"t-0\"\nstart = \"4h\"\nrate = 0.05";
    let (clean, faulted, truth) = with_and_without(fault, 24, "battery");
    let inside = check_delta(&clean, &faulted, (4.0, 24.0), FaultType::BatteryDecline, |h| -0.05 * (h - 4.0) as f32);
    assert_eq!(inside, 20 * 60);
    let t = truth_json(&truth);
    assert_eq!(t["fault"], "battery_decline");
    assert_eq!(t["channel"], BATTERY_CHANNEL);
    assert_eq!(t["from"], 3.9);
    assert_eq!(t["rate_per_hour"], 0.05);
    assert!(t.get("duration_ms").is_none(), "to the end of the run: {t}");
    assert_eq!(t["end_ms"], MIDNIGHT_MS + 24 * 3_600_000);
    // When does it fall below 3.3 V? From the truth alone: start + (from - 3.3) / rate hours.
    let (start_ms, from, rate) = (
        t["start_ms"].as_f64().unwrap_or(0.0),
        t["from"].as_f64().unwrap_or(0.0),
        t["rate_per_hour"].as_f64().unwrap_or(1.0),
    );
    let predicted_h = (start_ms + (from - 3.3) / rate * 3_600_000.0 - MIDNIGHT_MS as f64) / 3_600_000.0;
    assert!((predicted_h - 16.0).abs() < 1e-6, "{predicted_h}");
    let first_below = faulted.iter().find(|r| r.value < 3.3).map(|r| r.hours).expect("it crosses");
    // Noise (± 0.005 V) and rounding (± 0.005 V) are 12 minutes at 0.05 V/h; plus a reading.
    assert!((first_below - predicted_h).abs() < 13.0 / 60.0, "{first_below} vs {predicted_h}");
}

#[test]
fn battery_decline_stops_at_zero_and_a_duration_ends_it() {
    let fault =
        "[[faults]]\nfault = \"battery_decline\"\ndevice = \"t-0\"\nstart = \"1h\"\nduration = \"10h\"\nrate = 1.0";
    let (clean, faulted, truth) = with_and_without(fault, 14, "battery");
    for (c, f) in clean.iter().zip(&faulted) {
        if (1.0..11.0).contains(&c.hours) {
            assert!(f.value >= 0.0);
            let want = (c.value - (c.hours - 1.0) as f32).max(0.0);
            assert!((f.value - want).abs() <= ROUNDING, "at {:.3} h: {} (clean {})", c.hours, f.value, c.value);
        } else {
            assert_eq!(c, f, "a new battery after the span");
        }
    }
    assert!(faulted.iter().filter(|r| r.value == 0.0).count() > 60 * 5, "flat at 0 from ~4.9 h to 11 h");
    let t = truth_json(&truth);
    assert_eq!(
        (t["duration_ms"].as_u64(), t["end_ms"].as_u64()),
        (Some(36_000_000), Some(MIDNIGHT_MS + 11 * 3_600_000))
    );
}

#[test]
fn new_faults_parse_as_spelled() {
    let text = fleet(
        r#"
[[faults]]
fault = "drift"
device = "t-0"
start = "1h"
duration = "2h"
rate = 0.25
[[faults]]
fault = "level_shift"
group = "t"
index = 1
start = "1h"
duration = "30m"
by = 3.5
channel = "temperature"
[[faults]]
fault = "spike"
device = "t-1"
start = "2h"
by = -6.0
count = 2
[[faults]]
fault = "pattern_break"
device = "t-0"
start = "3h"
duration = "1d"
[[faults]]
fault = "noise_burst"
device = "t-1"
start = "4h"
duration = "6h"
noise = 2.0
[[faults]]
fault = "battery_decline"
device = "t-0"
start = "5h"
rate = 0.02
"#,
    );
    let scenario = Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    let h = |n: u64| Duration::from_secs(n * 3600);
    let f = |device: &str, start, kind| FaultSpec { device: DeviceRef::Id(device.to_owned()), start, kind };
    let expected = vec![
        f("t-0", h(1), FaultKind::Drift { duration: h(2), rate: 0.25, channel: None }),
        FaultSpec {
            device: DeviceRef::Index { group: "t".to_owned(), index: 1 },
            start: h(1),
            kind: FaultKind::LevelShift {
                duration: Duration::from_secs(1800),
                by: 3.5,
                channel: Some("temperature".to_owned()),
            },
        },
        f("t-1", h(2), FaultKind::Spike { value: SpikeValue::Relative(-6.0), count: 2, channel: None }),
        f("t-0", h(3), FaultKind::PatternBreak { duration: h(24), channel: None }),
        f("t-1", h(4), FaultKind::NoiseBurst { duration: h(6), noise: 2.0, channel: None }),
        f("t-0", h(5), FaultKind::BatteryDecline { duration: None, rate: 0.02, channel: None }),
    ];
    assert_eq!(scenario.faults(), expected.as_slice());
    let opts = SimOptions { seed: 1, start_ms: MIDNIGHT_MS, duration: Some(h(6)) };
    let mut sim = Simulation::new(&scenario, opts).expect("builds");
    sim.run_to_end();
    let channels: Vec<(FaultType, Option<String>)> = sim.truth().into_iter().map(|t| (t.fault(), t.channel)).collect();
    let temp = || Some("temperature".to_owned());
    assert_eq!(
        channels,
        [
            (FaultType::Drift, temp()),
            (FaultType::LevelShift, temp()),
            (FaultType::Spike, temp()),
            (FaultType::PatternBreak, temp()),
            (FaultType::NoiseBurst, temp()),
            (FaultType::BatteryDecline, Some("battery".to_owned())),
        ],
        "the first channel by default; battery_decline's is `battery`"
    );
}

/// The key path and message of a scenario that should not load.
fn refused(faults: &str, signal_of_temperature: Option<&str>) -> (String, String) {
    let mut text = fleet(faults);
    if let Some(signal) = signal_of_temperature {
        text =
            text.replace(r#"{ model = "daily", base = 20.0, amplitude = 4.0, peak_hour = 15, noise = 0.3 }"#, signal);
    }
    match Scenario::from_toml(&text) {
        Err(ScenarioError::Invalid { path, message, .. }) => (path, message),
        other => panic!("expected an invalid scenario for {faults}: {other:?}"),
    }
}

#[test]
fn bad_new_faults_are_refused_with_the_key_path() {
    let start = "[[faults]]\ndevice = \"t-0\"\nstart = \"1h\"\n";
    let cases: &[(&str, &str, &str)] = &[
        ("fault = \"drift\"\nduration = \"1h\"", "faults[0].rate", "needs `rate`"),
        ("fault = \"drift\"\nrate = 1.0", "faults[0].duration", "needs `duration`"),
        ("fault = \"drift\"\nduration = \"1h\"\nrate = 0.0", "faults[0].rate", "other than zero"),
        ("fault = \"drift\"\nduration = \"1h\"\nrate = 1.0\nby = 2.0", "faults[0].by", "does not take `by`"),
        ("fault = \"level_shift\"\nduration = \"1h\"", "faults[0].by", "needs `by`"),
        ("fault = \"level_shift\"\nduration = \"0s\"\nby = 1.0", "faults[0].duration", "longer than zero"),
        ("fault = \"spike\"\nvalue = 1.0\nby = 2.0", "faults[0].by", "not both"),
        ("fault = \"spike\"", "faults[0].value", "or `by`"),
        ("fault = \"spike\"\nby = nan", "faults[0].by", "finite"),
        ("fault = \"noise_burst\"\nduration = \"1h\"\nnoise = 0.0", "faults[0].noise", "above zero"),
        (
            "fault = \"noise_burst\"\nduration = \"1h\"\nnoise = 1.0\nchannel = \"humidity\"",
            "faults[0].channel",
            "no channel",
        ),
        ("fault = \"battery_decline\"\nrate = -0.1", "faults[0].rate", "above zero"),
        ("fault = \"battery_decline\"\nrate = 0.1\nvalue = 3.0", "faults[0].value", "does not take `value`"),
        ("fault = \"pattern_break\"", "faults[0].duration", "needs `duration`"),
        ("fault = \"pattern_break\"\nduration = \"1h\"\nchannel = \"battery\"", "faults[0].channel", "daily or sine"),
    ];
    for (fault, path, message) in cases {
        let (p, m) = refused(&format!("{start}{fault}"), None);
        assert_eq!(p, *path, "{fault}: {m}");
        assert!(m.contains(message), "{fault}: {m:?} should say {message:?}");
    }
    // The first channel is a constant: pattern_break has nothing to break.
    let (p, m) = refused(
        &format!("{start}fault = \"pattern_break\"\nduration = \"1h\""),
        Some(r#"{ model = "constant", value = 20.0 }"#),
    );
    assert_eq!(p, "faults[0]");
    assert!(m.contains("daily or sine"), "{m}");
    // A battery decline needs a battery channel, or one named.
    let no_battery = "[[groups]]\nname = \"u\"\ncount = 1\nid = \"u-{index}\"\n";
    let text =
        format!("{no_battery}[[faults]]\nfault = \"battery_decline\"\ndevice = \"u-0\"\nstart = \"1s\"\nrate = 0.1");
    match Scenario::from_toml(&text) {
        Err(ScenarioError::Invalid { path, message, .. }) => {
            assert_eq!(path, "faults[0]");
            assert!(message.contains("\"battery\" channel"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let named = format!("{text}\nchannel = \"temperature\"");
    assert!(Scenario::from_toml(&named).is_ok(), "any channel can be named");
}

#[test]
fn bad_daily_and_constant_signals_are_refused_with_the_key_path() {
    for (signal, message) in [
        (r#"{ model = "daily", base = 20.0, amplitude = 4.0, peak_hour = 24 }"#, "peak_hour"),
        (r#"{ model = "daily", base = 20.0, amplitude = -4.0 }"#, "amplitude"),
        (r#"{ model = "daily", base = 20.0, amplitude = 4.0, weekend_factor = -1 }"#, "weekend_factor"),
        (r#"{ model = "daily", base = 20.0, amplitude = 4.0, noise = -0.1 }"#, "noise"),
        (r#"{ model = "constant", value = 3.9, noise = -0.1 }"#, "noise"),
    ] {
        let (p, m) = refused("", Some(signal));
        assert_eq!(p, "groups[0].channels[0].signal", "{signal}");
        assert!(m.contains(message), "{signal}: {m}");
    }
    let (p, m) = refused("", Some(r#"{ model = "daily", base = 20.0, amplitude = 4.0, peak = 15 }"#));
    assert!(p.starts_with("groups[0].channels[0]"), "{p}: {m}");
    assert!(m.contains("unknown field"), "{m}");
}
