//! The figures of a benchmark run and how they print: throughput, latency percentiles
//! from an HDR histogram, CPU seconds of this process (from `/proc/self/stat`), and the
//! command line to rerun. Pure but for [`cpu_seconds`].

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::output::fields;

/// Latencies are recorded in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("the bounds are valid constants")
}

/// Clock ticks per second of `/proc/*/stat` times: Linux's USER_HZ, 100 on every
/// architecture it supports (fixed by the ABI, unlike the kernel's HZ).
const USER_HZ: f64 = 100.0;

/// utime + stime in clock ticks from the text of `/proc/self/stat`. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so utime (14) is 11, stime (15) is 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds (user + system) this process has used so far; `None` off Linux.
pub fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_proc_stat(&text).map(|ticks| ticks as f64 / USER_HZ)
}

/// The figures of one phase (produce, consume or end-to-end).
#[derive(Clone, Debug)]
pub struct Phase {
    /// `produce`, `consume` or `e2e`.
    pub name: &'static str,
    /// Records done (acknowledged, read, or received end to end).
    pub records: u64,
    /// Bytes of data in those records.
    pub bytes: u64,
    /// Records that failed.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// What the latency measures (`ack`, `GetRecords call`, `produce to consume`).
    pub latency_of: &'static str,
    /// Latencies in microseconds.
    pub latency_us: Histogram<u64>,
}

/// A whole run: its phases, CPU and how to rerun it.
#[derive(Clone, Debug)]
pub struct Report {
    /// The phases.
    pub phases: Vec<Phase>,
    /// CPU seconds of this process over the run, if known.
    pub cpu_seconds: Option<f64>,
    /// Settings, for the header: `(name, value)`.
    pub settings: Vec<(&'static str, String)>,
    /// The command line, shell-quoted.
    pub command: String,
}

impl Phase {
    /// Records per second.
    pub fn records_per_s(&self) -> f64 {
        per_second(self.records as f64, self.elapsed)
    }

    /// Megabytes (10^6 bytes) of data per second.
    pub fn mb_per_s(&self) -> f64 {
        per_second(self.bytes as f64 / 1e6, self.elapsed)
    }

    fn percentile_ms(&self, q: f64) -> Option<f64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(q) as f64 / 1e3)
    }
}

fn per_second(n: f64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { n / s } else { 0.0 }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2} ms"))
}

impl Report {
    /// Total records over the phases that count for CPU (all of them).
    fn records(&self) -> u64 {
        self.phases.iter().map(|p| p.records).sum()
    }

    /// CPU seconds per 1,000 records.
    pub fn cpu_per_1000(&self) -> Option<f64> {
        let r = self.records();
        self.cpu_seconds
            .filter(|_| r > 0)
            .map(|c| c * 1000.0 / r as f64)
    }

    /// The human form.
    pub fn text(&self) -> String {
        let mut out = fields(
            &self
                .settings
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect::<Vec<_>>(),
        );
        for p in &self.phases {
            out.push('\n');
            out.push_str(&fields(&[
                (
                    p.name,
                    format!(
                        "{} records, {} bytes in {:.2} s",
                        p.records,
                        p.bytes,
                        p.elapsed.as_secs_f64()
                    ),
                ),
                (
                    "throughput",
                    format!(
                        "{:.0} records/s, {:.2} MB/s",
                        p.records_per_s(),
                        p.mb_per_s()
                    ),
                ),
                (
                    "latency",
                    format!(
                        "p50 {}, p99 {}, p999 {}, max {} ({})",
                        ms(p.percentile_ms(0.5)),
                        ms(p.percentile_ms(0.99)),
                        ms(p.percentile_ms(0.999)),
                        ms(p.percentile_ms(1.0)),
                        p.latency_of
                    ),
                ),
                (
                    "errors",
                    match &p.first_error {
                        Some(e) => format!("{} (first: {e})", p.errors),
                        None => p.errors.to_string(),
                    },
                ),
            ]));
        }
        out.push('\n');
        out.push_str(&fields(&[
            (
                "cpu",
                self.cpu_per_1000().map_or_else(
                    || "unknown (no /proc/self/stat)".into(),
                    |c| format!("{c:.4} s per 1000 records (this process)"),
                ),
            ),
            ("rerun", self.command.clone()),
        ]));
        out
    }

    /// The JSON form.
    pub fn json(&self) -> Value {
        let settings: serde_json::Map<String, Value> = self
            .settings
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "settings": settings,
            "phases": self.phases.iter().map(|p| json!({
                "name": p.name,
                "records": p.records,
                "bytes": p.bytes,
                "errors": p.errors,
                "first_error": p.first_error,
                "elapsed_s": p.elapsed.as_secs_f64(),
                "records_per_s": p.records_per_s(),
                "mb_per_s": p.mb_per_s(),
                "latency_of": p.latency_of,
                "latency_ms": {
                    "p50": p.percentile_ms(0.5),
                    "p99": p.percentile_ms(0.99),
                    "p999": p.percentile_ms(0.999),
                    "max": p.percentile_ms(1.0),
                },
            })).collect::<Vec<_>>(),
            "cpu_seconds": self.cpu_seconds,
            "cpu_seconds_per_1000_records": self.cpu_per_1000(),
            "command": self.command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_after_the_name() {
        let line = "4242 (tokio (rt) x) R 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 8 0 123 0 0";
        assert_eq!(parse_proc_stat(line), Some(175));
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn cpu_is_readable_here() {
        if cfg!(target_os = "linux") {
            assert!(cpu_seconds().is_some());
        }
    }

    fn phase() -> Phase {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.saturating_record(us * 10);
        }
        Phase {
            name: "produce",
            records: 2_000,
            bytes: 2_000_000,
            errors: 0,
            first_error: None,
            elapsed: Duration::from_secs(2),
            latency_of: "ack",
            latency_us: h,
        }
    }

    #[test]
    fn figures_and_both_forms() {
        let p = phase();
        assert_eq!(p.records_per_s(), 1000.0);
        assert_eq!(p.mb_per_s(), 1.0);
        let r = Report {
            phases: vec![p],
            cpu_seconds: Some(1.0),
            settings: vec![("stream", "bench".into())],
            command: "runnel bench produce".into(),
        };
        assert_eq!(r.cpu_per_1000(), Some(0.5));
        let t = r.text();
        assert!(t.contains("1000 records/s, 1.00 MB/s"), "{t}");
        assert!(t.contains("p50 5.00 ms"), "{t}");
        assert!(t.contains("rerun  runnel bench produce"), "{t}");
        let j = r.json();
        assert_eq!(j["phases"][0]["records"], 2000);
        let p99 = j["phases"][0]["latency_ms"]["p99"].as_f64().expect("p99");
        assert!((9.8..=10.0).contains(&p99), "{p99}");
        assert_eq!(j["cpu_seconds_per_1000_records"], 0.5);
    }
}
