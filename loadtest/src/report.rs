//! Results: one JSON document per scenario run and an SVG page with its plots (deliveries over
//! time, latency histogram).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::sink::{SinkStats, TICK, Tally};

#[derive(Debug, Clone, Serialize)]
pub struct Quantiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
}

/// One measured phase: the hub, or the baseline client, against the sink.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub label: String,
    /// "checking sink" (every delivery checked and counted by the load test's sink) or "hub
    /// metrics" (the hub delivered to the lean sink; its own delivered counter was read).
    pub counted_by: &'static str,
    pub deliveries: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Absent when not measured (lean sink).
    pub latency_us: Option<Quantiles>,
    /// Absent when not measured (lean sink).
    pub tally: Option<Tally>,
    /// Absent when not measured (lean sink).
    pub bad_signatures: Option<u64>,
    /// Deliveries per 100 ms from the first delivery.
    pub timeline: Vec<u64>,
    /// (lower bound µs, count).
    pub latency_buckets: Vec<(u64, u64)>,
    /// Once a second: the hub's backlog (stream scenario).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backlog: Vec<BacklogSample>,
}

/// The hub's backlog at one moment of a phase.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BacklogSample {
    /// Seconds since publishing began.
    pub second: f64,
    /// The hub's `hubcast_queued_jobs` gauge: delivery jobs (event, destination) waiting or
    /// running. Absent when /metrics did not answer.
    pub queued_jobs: Option<u64>,
    /// Deliveries due for the pings accepted so far.
    pub due: u64,
    /// Of those, not yet received (nor superseded by a later event) at the sink.
    pub undelivered: u64,
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

impl Phase {
    pub fn from_sink(label: &str, stats: &SinkStats, deliveries: u64, seconds: f64) -> Phase {
        let q = |x| stats.latency.quantile(x);
        Phase {
            label: label.to_owned(),
            counted_by: "checking sink",
            deliveries,
            seconds,
            per_second: rate(deliveries, seconds),
            latency_us: match (q(0.5), q(0.99), q(0.999)) {
                (Some(p50), Some(p99), Some(p999)) => Some(Quantiles { p50, p99, p999 }),
                _ => None,
            },
            tally: None,
            bad_signatures: Some(
                stats
                    .bad_signatures
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            timeline: stats.timeline(),
            latency_buckets: stats.latency.buckets(),
            backlog: Vec::new(),
        }
    }

    /// `n` things (events, deliveries) counted from hub metrics over `seconds`: a rate only.
    pub fn counted(label: String, n: u64, seconds: f64) -> Phase {
        Phase {
            label,
            counted_by: "hub metrics",
            deliveries: n,
            seconds,
            per_second: rate(n, seconds),
            latency_us: None,
            tally: None,
            bad_signatures: None,
            timeline: Vec::new(),
            latency_buckets: Vec::new(),
            backlog: Vec::new(),
        }
    }

    /// Deliveries the hub counted itself (to the lean sink): no latency, loss or signatures.
    pub fn from_hub_count(label: &str, count: &crate::driver::HubCount) -> Phase {
        Phase {
            label: label.to_owned(),
            counted_by: "hub metrics",
            deliveries: count.deliveries,
            seconds: count.seconds,
            per_second: rate(count.deliveries, count.seconds),
            latency_us: None,
            tally: None,
            bad_signatures: None,
            timeline: count.timeline.clone(),
            latency_buckets: Vec::new(),
            backlog: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub started: String,
    pub machine: BTreeMap<String, String>,
    pub parameters: serde_json::Value,
    /// How figures were made, by name: `ceiling_client` ("wrk" or "hyper"), `ceiling_sink`
    /// ("nginx" or "hyper"), `ceiling_command`, `hub_sink` ("checking", or "lean (nginx)" …).
    pub labels: BTreeMap<String, String>,
    /// One entry per repetition.
    pub runs: Vec<Vec<Phase>>,
    /// Figures of each repetition, by name (e.g. "hub_per_second").
    pub figures: BTreeMap<String, Vec<f64>>,
    /// Medians of `figures`.
    pub medians: BTreeMap<String, f64>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, parameters: serde_json::Value) -> Report {
        Report {
            scenario: scenario.to_owned(),
            started: httpdate_now(),
            machine: machine(),
            parameters,
            labels: BTreeMap::new(),
            runs: Vec::new(),
            figures: BTreeMap::new(),
            medians: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    pub fn figure(&mut self, name: &str, value: f64) {
        self.figures.entry(name.to_owned()).or_default().push(value);
    }

    /// Sets a label; a different value in a later repetition is kept too (" | ").
    pub fn label(&mut self, name: &str, value: &str) {
        let entry = self.labels.entry(name.to_owned()).or_default();
        if entry.is_empty() {
            value.clone_into(entry);
        } else if !entry.split(" | ").any(|v| v == value) {
            entry.push_str(" | ");
            entry.push_str(value);
        }
    }

    pub fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    pub fn finish(&mut self) {
        self.medians = self
            .figures
            .iter()
            .map(|(k, v)| (k.clone(), median(v)))
            .collect();
    }

    /// Writes `<scenario>.json` and `<scenario>.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{}.json", self.scenario)),
            serde_json::to_vec_pretty(self)?,
        )?;
        std::fs::write(dir.join(format!("{}.svg", self.scenario)), self.svg())?;
        Ok(())
    }

    /// A printable summary: the medians, one per line.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "scenario {} ({} run{})\n",
            self.scenario,
            self.runs.len(),
            if self.runs.len() == 1 { "" } else { "s" }
        );
        for (k, v) in &self.labels {
            let _ = writeln!(s, "  {k:<34} {v}");
        }
        for (k, v) in &self.medians {
            let all: Vec<String> = self.figures[k].iter().map(|x| fmt_num(*x)).collect();
            let _ = writeln!(
                s,
                "  {k:<34} {:>12}   runs: {}",
                fmt_num(*v),
                all.join(", ")
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }

    fn svg(&self) -> String {
        let phases: Vec<&Phase> = self
            .runs
            .first()
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        let mut out = String::new();
        let (w, h) = (880.0, 300.0);
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="12">"#,
            2.0 * h + 40.0
        );
        let _ = write!(
            out,
            r#"<text x="10" y="20" font-size="15">hubcast load test: {} ({})</text>"#,
            self.scenario, self.started
        );
        timeline_chart(&mut out, &phases, 30.0, w, h);
        latency_chart(&mut out, &phases, 40.0 + h, w, h);
        out.push_str("</svg>\n");
        out
    }
}

const COLOURS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];

fn timeline_chart(out: &mut String, phases: &[&Phase], top: f64, w: f64, h: f64) {
    let (left, bottom) = (70.0, top + h - 30.0);
    let ticks_per_s = 1000.0 / TICK.as_millis() as f64;
    let max_len = phases
        .iter()
        .map(|p| p.timeline.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let max_v = phases
        .iter()
        .flat_map(|p| p.timeline.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * ticks_per_s;
    let _ = write!(
        out,
        r#"<text x="{left}" y="{}">deliveries per second, seconds from the first delivery</text>"#,
        top + 14.0
    );
    axis(
        out,
        left,
        top + 20.0,
        w - 20.0,
        bottom,
        &fmt_num(max_v),
        &format!("{:.1}", max_len as f64 / ticks_per_s),
    );
    for (i, p) in phases.iter().enumerate() {
        let mut pts = String::new();
        for (x, v) in p.timeline.iter().enumerate() {
            let px = left + (w - 20.0 - left) * x as f64 / max_len as f64;
            let py = bottom - (bottom - top - 20.0) * (*v as f64 * ticks_per_s) / max_v;
            let _ = write!(pts, "{px:.1},{py:.1} ");
        }
        let c = COLOURS[i % COLOURS.len()];
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts}"/><text x="{}" y="{}" fill="{c}">{}</text>"#,
            w - 220.0,
            top + 36.0 + 14.0 * i as f64,
            p.label
        );
    }
}

fn latency_chart(out: &mut String, phases: &[&Phase], top: f64, w: f64, h: f64) {
    let (left, bottom) = (70.0, top + h - 30.0);
    let _ = write!(
        out,
        r#"<text x="{left}" y="{}">publish→delivery latency histogram (log scale, µs)</text>"#,
        top + 14.0
    );
    let all: Vec<(u64, u64)> = phases
        .iter()
        .flat_map(|p| p.latency_buckets.iter().copied())
        .collect();
    if all.is_empty() {
        return;
    }
    let lo = all.iter().map(|b| b.0.max(1)).min().unwrap_or(1) as f64;
    let hi = all.iter().map(|b| b.0.max(1)).max().unwrap_or(2) as f64 * 1.1;
    let max_c = all.iter().map(|b| b.1).max().unwrap_or(1) as f64;
    axis(
        out,
        left,
        top + 20.0,
        w - 20.0,
        bottom,
        &fmt_num(max_c),
        &fmt_num(hi),
    );
    let _ = write!(
        out,
        r#"<text x="{left}" y="{}">{}</text>"#,
        bottom + 14.0,
        fmt_num(lo)
    );
    let span = (hi.ln() - lo.ln()).max(1e-9);
    for (i, p) in phases.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        for (b, n) in &p.latency_buckets {
            let x = left + (w - 20.0 - left) * (((*b).max(1) as f64).ln() - lo.ln()) / span;
            let y = bottom - (bottom - top - 20.0) * *n as f64 / max_c;
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="3" height="{:.1}" fill="{c}" fill-opacity="0.6"/>"#,
                bottom - y
            );
        }
        if let Some(q) = &p.latency_us {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" fill="{c}">{}: p50 {} µs, p99 {} µs, p99.9 {} µs</text>"#,
                w - 420.0,
                top + 36.0 + 14.0 * i as f64,
                p.label,
                q.p50,
                q.p99,
                q.p999
            );
        }
    }
}

fn axis(out: &mut String, left: f64, top: f64, right: f64, bottom: f64, ymax: &str, xmax: &str) {
    let _ = write!(
        out,
        r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/><line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/><text x="{}" y="{}" text-anchor="end">{ymax}</text><text x="{}" y="{}" text-anchor="end">0</text><text x="{right}" y="{}" text-anchor="end">{xmax}</text>"#,
        left - 4.0,
        top + 10.0,
        left - 4.0,
        bottom,
        bottom + 14.0
    );
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x.abs() >= 100.0 || x == x.trunc() {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

fn httpdate_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since the epoch (proleptic Gregorian).
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "cpus".into(),
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_default(),
    );
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo")
        && let Some(model) = info
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split(':').nth(1))
    {
        m.insert("cpu".into(), model.trim().to_owned());
    }
    if let Ok(mem) = std::fs::read_to_string("/proc/meminfo")
        && let Some(total) = mem.lines().find_map(|l| l.strip_prefix("MemTotal:"))
    {
        m.insert("memory".into(), total.trim().to_owned());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_dates() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let d = httpdate_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.starts_with("20"));
    }
}
