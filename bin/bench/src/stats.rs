//! What one measurement produced: an HDR histogram of latencies, the
//! outcomes by status, and the report made from them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, from 1 µs to a minute, to three
/// significant digits (HdrHistogram's usual precision: 0.1 % error).
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// The result of one request: `Err` carries the label it is counted under,
/// e.g. `http 503`, `grpc Unavailable`, `timeout`.
pub type Outcome = Result<(), String>;

/// Latencies and outcomes of a measurement (or of one worker of it).
#[derive(Clone, Debug)]
pub struct Recorder {
    histogram: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
                .context("creating a latency histogram")?,
            ok: 0,
            errors: BTreeMap::new(),
        })
    }

    /// One completed request (successful or not) and how long it took.
    pub fn record(&mut self, latency: Duration, outcome: &Outcome) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(LOWEST_US));
        match outcome {
            Ok(()) => self.ok += 1,
            Err(label) => self.count_error(label),
        }
    }

    /// A request that never completed (dropped, or still running at the end):
    /// counted as an error, with no latency.
    pub fn count_error(&mut self, label: &str) {
        *self.errors.entry(label.to_owned()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Recorder) -> anyhow::Result<()> {
        self.histogram
            .add(&other.histogram)
            .context("merging latency histograms")?;
        self.ok += other.ok;
        for (label, count) in &other.errors {
            *self.errors.entry(label.clone()).or_default() += count;
        }
        Ok(())
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report of a measurement that ran `elapsed`.
    pub fn report(&self, name: &str, mode: &str, elapsed: Duration) -> Report {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let seconds = elapsed.as_secs_f64();
        let empty = self.histogram.is_empty();
        let quantile = |q: f64| {
            if empty {
                0.0
            } else {
                ms(self.histogram.value_at_quantile(q))
            }
        };
        Report {
            name: name.to_owned(),
            mode: mode.to_owned(),
            elapsed_s: seconds,
            requests: self.ok + self.error_count(),
            ok: self.ok,
            errors: self.errors.clone(),
            throughput: if seconds > 0.0 {
                self.ok as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Latencies {
                p50: quantile(0.50),
                p90: quantile(0.90),
                p99: quantile(0.99),
                p999: quantile(0.999),
                max: if empty { 0.0 } else { ms(self.histogram.max()) },
                mean: if empty {
                    0.0
                } else {
                    self.histogram.mean() / 1000.0
                },
            },
            server_cpu_us_per_req: None,
            client_cpu_us_per_req: None,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// One measurement: what ran, how fast, how often it failed and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    /// `closed c=32` (fixed concurrency) or `open 800/s` (fixed rate).
    pub mode: String,
    pub elapsed_s: f64,
    /// Completed plus failed requests.
    pub requests: u64,
    pub ok: u64,
    /// Failures by label (`http 503`, `grpc Unavailable`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Successful requests per second.
    pub throughput: f64,
    pub latency_ms: Latencies,
    /// CPU time the server processes spent per successful request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_req: Option<f64>,
    /// CPU time this load generator spent per successful request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_us_per_req: Option<f64>,
}

impl Report {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The failures as `label×count, ...`, or `-`.
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "-".to_owned();
        }
        self.errors
            .iter()
            .map(|(label, count)| format!("{label}×{count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether this open-loop run at `rate` kept p99 within `slo_ms`, with
    /// no error, and kept up with the rate (a server that falls behind the
    /// schedule does not meet it however its p99 looks).
    pub fn meets(&self, rate: f64, slo_ms: f64) -> bool {
        self.error_count() == 0
            && self.ok > 0
            && self.latency_ms.p99 <= slo_ms
            && self.throughput >= 0.95 * rate
    }

    /// A multi-line summary for a person.
    pub fn summary(&self) -> String {
        let l = &self.latency_ms;
        let mut text = format!(
            "{} [{}]: {} ok in {:.1}s = {:.0}/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; errors {}",
            self.name,
            self.mode,
            self.ok,
            self.elapsed_s,
            self.throughput,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            self.errors_text()
        );
        if let Some(cpu) = self.server_cpu_us_per_req {
            text.push_str(&format!("; server CPU {cpu:.0} µs/req"));
        }
        if let Some(cpu) = self.client_cpu_us_per_req {
            text.push_str(&format!("; client CPU {cpu:.0} µs/req"));
        }
        text
    }
}

/// `numerator / denominator`, or None when the denominator is zero (or
/// either is not a number).
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    let value = numerator / denominator;
    (denominator != 0.0 && value.is_finite()).then_some(value)
}

/// The middle of `values` (the lower of the middle two for an even
/// count), or None for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

/// A ratio as `1.23×`, or `n/a`.
pub fn ratio_text(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}×"))
}

/// The search for the highest fixed rate in `[low, high]` at which a probe
/// meets its goal, by bisection: the floor is probed first (so a path that
/// misses the goal even there is told apart from one that was not tried),
/// then each passing rate raises the floor and each failing one lowers the
/// ceiling, for at most `steps` probes.
#[derive(Clone, Debug)]
pub struct Bisection {
    floor: f64,
    ceiling: f64,
    probed: usize,
    steps: usize,
    best: Option<f64>,
}

impl Bisection {
    pub fn new(low: f64, high: f64, steps: usize) -> Self {
        Self {
            floor: low,
            ceiling: high,
            probed: 0,
            steps,
            best: None,
        }
    }

    /// The rate to probe next, or None when the search is over.
    pub fn next(&self) -> Option<f64> {
        if self.probed >= self.steps || (self.probed > 0 && self.best.is_none()) {
            return None;
        }
        Some(if self.probed == 0 {
            self.floor
        } else {
            (self.floor + self.ceiling) / 2.0
        })
    }

    /// What the probe at `rate` found.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.probed += 1;
        if passed {
            self.floor = rate;
            self.best = Some(rate);
        } else if self.probed > 1 {
            self.ceiling = rate;
        }
    }

    /// The highest rate that passed so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder_of_millis(values: impl IntoIterator<Item = u64>) -> Recorder {
        let mut recorder = Recorder::new().unwrap();
        for ms in values {
            recorder.record(Duration::from_millis(ms), &Ok(()));
        }
        recorder
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 0.002
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=1000 ms once each: the q-quantile is q × 1000 ms.
        let report =
            recorder_of_millis(1..=1000).report("t", "closed c=1", Duration::from_secs(10));
        let l = &report.latency_ms;
        assert!(close(l.p50, 500.0), "{l:?}");
        assert!(close(l.p90, 900.0), "{l:?}");
        assert!(close(l.p99, 990.0), "{l:?}");
        assert!(close(l.p999, 999.0), "{l:?}");
        assert!(close(l.max, 1000.0), "{l:?}");
        assert!(close(l.mean, 500.5), "{l:?}");
        assert_eq!(report.ok, 1000);
        assert_eq!(report.requests, 1000);
        assert!(close(report.throughput, 100.0));
    }

    #[test]
    fn errors_count_by_label_and_not_as_throughput() {
        let mut recorder = recorder_of_millis([1, 2, 3]);
        recorder.record(Duration::from_millis(5), &Err("http 503".into()));
        recorder.record(Duration::from_millis(5), &Err("http 503".into()));
        recorder.count_error("timeout");
        let report = recorder.report("t", "open 10/s", Duration::from_secs(1));
        assert_eq!(report.ok, 3);
        assert_eq!(report.requests, 6);
        assert_eq!(report.error_count(), 3);
        assert_eq!(report.errors_text(), "http 503×2, timeout×1");
        assert!(close(report.throughput, 3.0));
        // Failed requests still count in the latency distribution.
        assert!(close(report.latency_ms.max, 5.0));
    }

    #[test]
    fn merging_workers_equals_recording_in_one() {
        let mut merged = recorder_of_millis(1..=500);
        let mut second = recorder_of_millis(501..=1000);
        second.count_error("grpc Unavailable");
        merged.merge(&second).unwrap();
        let whole = recorder_of_millis(1..=1000);
        let elapsed = Duration::from_secs(1);
        let (a, b) = (
            merged.report("t", "m", elapsed),
            whole.report("t", "m", elapsed),
        );
        assert_eq!(a.latency_ms, b.latency_ms);
        assert_eq!(a.ok, b.ok);
        assert_eq!(a.errors["grpc Unavailable"], 1);
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        let report = Recorder::new().unwrap().report("t", "m", Duration::ZERO);
        assert_eq!(report.throughput, 0.0);
        assert_eq!(report.latency_ms, Latencies::default());
    }

    #[test]
    fn medians_take_the_middle_or_the_lower_of_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[0.9, 0.6, 1.0]), Some(0.9));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio_text(Some(1.234)), "1.23×");
        assert_eq!(ratio_text(None), "n/a");
    }

    #[test]
    fn meeting_a_goal_needs_p99_no_errors_and_the_rate() {
        let mut report =
            recorder_of_millis([1; 100]).report("t", "open 100/s", Duration::from_secs(1));
        assert!(report.meets(100.0, 2.0));
        assert!(!report.meets(100.0, 0.5), "p99 above the goal");
        assert!(!report.meets(200.0, 2.0), "fell behind the rate");
        report.errors.insert("http 500".into(), 1);
        assert!(!report.meets(100.0, 2.0), "an error");
    }

    fn search(capacity: f64, steps: usize) -> (Option<f64>, Vec<f64>) {
        let mut bisection = Bisection::new(100.0, 1000.0, steps);
        let mut probes = Vec::new();
        while let Some(rate) = bisection.next() {
            probes.push(rate);
            bisection.record(rate, rate <= capacity);
        }
        (bisection.best(), probes)
    }

    #[test]
    fn bisection_converges_on_the_capacity() {
        let (best, probes) = search(640.0, 8);
        let best = best.unwrap();
        assert_eq!(probes.len(), 8);
        assert_eq!(probes[0], 100.0, "the floor is probed first");
        assert!(best <= 640.0 && best > 640.0 - 900.0 / 64.0, "{best}");
    }

    #[test]
    fn bisection_stops_when_even_the_floor_fails() {
        let (best, probes) = search(50.0, 8);
        assert!(best.is_none());
        assert_eq!(probes, vec![100.0]);
    }

    #[test]
    fn bisection_above_the_range_ends_near_the_top() {
        let (best, _) = search(5000.0, 6);
        assert!(best.unwrap() > 1000.0 - 900.0 / 16.0);
    }
}
