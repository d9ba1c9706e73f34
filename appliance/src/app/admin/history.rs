//! The last few minutes of the status model's counters, sampled on the
//! admin shard every [`INTERVAL`] into a ring of [`SAMPLES`] (bounded: a
//! few kilobytes per service), for rates on `/status` and the page's
//! charts.
//!
//! Every number under an object named `counters` is a cumulative count;
//! the ring keeps each by its path, and [`History::annotate`] writes its
//! rate per second over the last interval into the sibling `rates`
//! object, and, for the counter a service names in `chart`, the rate over
//! every interval held into `chart_rates`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};

/// How often the status model is sampled.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Samples held: five minutes.
pub const SAMPLES: usize = 150;

#[derive(Debug)]
struct Sample {
    /// Seconds since the process started.
    at: f64,
    /// Counter paths (`/services/0/counters/accepted`) and values.
    values: HashMap<String, f64>,
}

/// The ring. See the module docs.
#[derive(Debug, Default)]
pub struct History {
    ring: VecDeque<Sample>,
}

impl History {
    /// Records `status`'s counters as of `at` (seconds since start).
    pub fn record(&mut self, at: f64, status: &Value) {
        let mut values = HashMap::new();
        counters(status, &mut String::new(), false, &mut values);
        if self.ring.len() == SAMPLES {
            self.ring.pop_front();
        }
        self.ring.push_back(Sample { at, values });
    }

    /// Adds rates (per second, over the last interval) beside every
    /// `counters` object of `status`, and each service's `chart_rates`.
    pub fn annotate(&self, status: &mut Value) {
        let n = self.ring.len();
        let (Some(last), Some(before)) = (self.ring.back(), n.checked_sub(2).and_then(|i| self.ring.get(i)))
        else {
            return;
        };
        let dt = last.at - before.at;
        if dt > 0.0 {
            rates(status, &mut String::new(), &|path| {
                Some((last.values.get(path)? - before.values.get(path)?).max(0.0) / dt)
            });
        }
        let Some(services) = status.get_mut("services").and_then(Value::as_array_mut) else { return };
        for (i, service) in services.iter_mut().enumerate() {
            let Some(name) = service.get("chart").and_then(Value::as_str) else { continue };
            let path = format!("/services/{i}/counters/{name}");
            let series: Vec<f64> = self
                .ring
                .iter()
                .zip(self.ring.iter().skip(1))
                .map(|(a, b)| match (a.values.get(&path), b.values.get(&path)) {
                    (Some(x), Some(y)) if b.at > a.at => {
                        ((y - x).max(0.0) / (b.at - a.at) * 10.0).round() / 10.0
                    }
                    _ => 0.0,
                })
                .collect();
            service["chart_rates"] = json!(series);
        }
        status["history"] = json!({"interval_seconds": INTERVAL.as_secs(), "samples": n});
    }
}

/// Collects every number under a `counters` object, by path.
fn counters(v: &Value, path: &mut String, inside: bool, out: &mut HashMap<String, f64>) {
    match v {
        Value::Number(n) if inside => {
            if let Some(x) = n.as_f64() {
                out.insert(path.clone(), x);
            }
        }
        Value::Object(map) => {
            for (k, child) in map {
                below(path, k, |path| counters(child, path, inside || k == "counters", out));
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                below(path, &i.to_string(), |path| counters(child, path, inside, out));
            }
        }
        _ => {}
    }
}

/// Writes `rate(path)` of every counter into a `rates` object beside its
/// `counters` object.
fn rates(v: &mut Value, path: &mut String, rate: &dyn Fn(&str) -> Option<f64>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(counters)) = map.get("counters") {
                let base = format!("{path}/counters/");
                let r: serde_json::Map<String, Value> = counters
                    .keys()
                    .filter_map(|k| {
                        Some((k.clone(), json!((rate(&format!("{base}{k}"))? * 10.0).round() / 10.0)))
                    })
                    .collect();
                map.insert("rates".into(), Value::Object(r));
            }
            for (k, child) in
                map.iter_mut().filter(|(k, _)| k.as_str() != "counters" && k.as_str() != "rates")
            {
                below(path, k, |path| rates(child, path, rate));
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                below(path, &i.to_string(), |path| rates(child, path, rate));
            }
        }
        _ => {}
    }
}

/// Runs `f` with `/segment` appended to `path`, then takes it off again.
fn below(path: &mut String, segment: &str, f: impl FnOnce(&mut String)) {
    let len = path.len();
    path.push('/');
    path.push_str(segment);
    f(path);
    path.truncate(len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(accepted: u64, up_bytes: u64, cpu: f64) -> Value {
        json!({
            "shards": [{"shard": 0, "counters": {"cpu_seconds": cpu}}],
            "services": [{
                "name": "web", "chart": "accepted", "active": 3,
                "counters": {"accepted": accepted},
                "upstreams": [{"name": "a", "counters": {"bytes_up": up_bytes}}],
            }],
        })
    }

    #[test]
    fn rates_come_from_the_last_two_samples_and_the_ring_is_bounded() {
        let mut h = History::default();
        let mut s = status(0, 0, 0.0);
        h.annotate(&mut s);
        assert!(s.get("history").is_none(), "no rates from one sample or none");
        h.record(0.0, &status(0, 0, 0.0));
        h.record(2.0, &status(10, 4000, 0.5));
        h.record(4.0, &status(30, 6000, 1.5));
        let mut s = status(30, 6000, 1.5);
        h.annotate(&mut s);
        assert_eq!(s["services"][0]["rates"]["accepted"], 10.0);
        assert_eq!(s["services"][0]["upstreams"][0]["rates"]["bytes_up"], 1000.0);
        assert_eq!(s["shards"][0]["rates"]["cpu_seconds"], 0.5, "a shard's load: CPU seconds per second");
        assert_eq!(s["services"][0]["chart_rates"], json!([5.0, 10.0]));
        assert!(s["services"][0]["rates"].get("active").is_none(), "gauges outside counters have no rate");
        for i in 0..SAMPLES * 2 {
            h.record(i as f64, &status(i as u64, 0, 0.0));
        }
        assert_eq!(h.ring.len(), SAMPLES);
    }

    #[test]
    fn a_counter_that_went_back_gives_zero_not_a_negative_rate() {
        let mut h = History::default();
        h.record(0.0, &status(100, 0, 0.0));
        h.record(2.0, &status(10, 0, 0.0));
        let mut s = status(10, 0, 0.0);
        h.annotate(&mut s);
        assert_eq!(s["services"][0]["rates"]["accepted"], 0.0);
    }
}
