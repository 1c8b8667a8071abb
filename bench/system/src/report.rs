//! What one step measured and how it is summed up: latency histograms, counts, errors by
//! code, and resource use per call.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to a minute, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
        // Unreachable with these constant bounds; an auto-resizing one is as good.
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// A latency distribution.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(histogram())
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us);
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0..=1) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    /// p50, p99 and max in milliseconds, for the report.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
            max_ms: self.quantile_ms(1.0),
        }
    }
}

/// A latency distribution in a line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        write!(
            f,
            "p50 {} / p99 {} / max {} ms (n={})",
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.max_ms),
            self.count
        )
    }
}

/// Everything the calls started in one step recorded.
#[derive(Debug, Default)]
pub struct StepStats {
    /// Calls the schedule wanted to start.
    pub offered: u64,
    /// Calls not started because no idle users were left (the driver's limit, not the system's).
    pub starved: u64,
    /// Calls whose initiate answered 201.
    pub created: u64,
    /// Calls where the caller saw the first callee join (a call set up).
    pub set_up: u64,
    /// Calls that went through to the end without an error.
    pub completed: u64,
    /// initiate sent → `incoming_call` on each callee's socket.
    pub ring: Latency,
    /// `POST /join` sent → `participant_joined` on the caller's socket.
    pub answer: Latency,
    /// `POST /end` sent → `call_ended` on a callee's socket.
    pub hangup: Latency,
    /// REST round trips by route name.
    pub rest: BTreeMap<&'static str, Latency>,
    /// Socket emits (ack round trips) by event name.
    pub emits: BTreeMap<&'static str, Latency>,
    /// Errors by code (`HTTP 409 CALL_ENDED`, `timeout incoming_call`, …).
    pub errors: BTreeMap<String, u64>,
}

impl StepStats {
    /// Counts one error.
    pub fn error(&mut self, code: impl Into<String>) {
        *self.errors.entry(code.into()).or_default() += 1;
    }
}

/// Resource counters read at a step's start and end.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counters {
    /// CPU seconds by process group (`calls-api`, `signaling`, `postgres (this db)`, …).
    pub cpu_seconds: BTreeMap<String, f64>,
    /// Database counters by name (`xact_commit`, `tup_inserted`, …).
    pub db: BTreeMap<String, f64>,
}

impl Counters {
    /// `self - earlier`, per key present in both.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let diff = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| {
            a.iter()
                .filter_map(|(k, v)| b.get(k).map(|old| (k.clone(), v - old)))
                .collect()
        };
        Counters {
            cpu_seconds: diff(&self.cpu_seconds, &earlier.cpu_seconds),
            db: diff(&self.db, &earlier.db),
        }
    }

    /// Each counter divided by `calls`, after taking away what the idle system spends in the
    /// same time (`idle` measured over `idle_secs`, scaled to `secs`): the cost of one call.
    pub fn per_call(&self, calls: u64, secs: f64, idle: &Counters, idle_secs: f64) -> Counters {
        let scale = if idle_secs > 0.0 {
            secs / idle_secs
        } else {
            0.0
        };
        let per = |a: &BTreeMap<String, f64>, base: &BTreeMap<String, f64>| {
            a.iter()
                .map(|(k, v)| {
                    let net = v - base.get(k).copied().unwrap_or(0.0) * scale;
                    (k.clone(), if calls == 0 { 0.0 } else { net / calls as f64 })
                })
                .collect()
        };
        Counters {
            cpu_seconds: per(&self.cpu_seconds, &idle.cpu_seconds),
            db: per(&self.db, &idle.db),
        }
    }
}

/// One step's summary, as printed and written to the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub target_rate: f64,
    pub seconds: f64,
    pub offered: u64,
    pub starved: u64,
    pub created: u64,
    pub set_up: u64,
    pub completed: u64,
    /// Call setups per second sustained: calls of this step that were answered, per second.
    pub setups_per_second: f64,
    pub ring: LatencySummary,
    pub answer: LatencySummary,
    pub hangup: LatencySummary,
    pub rest: BTreeMap<&'static str, LatencySummary>,
    pub emits: BTreeMap<&'static str, LatencySummary>,
    pub errors: BTreeMap<String, u64>,
    /// What the step used in total, and per call set up net of the idle baseline.
    pub used: Counters,
    pub per_call: Counters,
    /// CPU of the whole machine over the step: busy fraction of all cores (other work included).
    pub machine_busy: f64,
    /// `uptime`'s 1-minute load average at the end of the step.
    pub load_average: f64,
    /// Resident memory per service at the end of the step, MiB.
    pub rss_mib: BTreeMap<String, f64>,
}

impl StepReport {
    /// Sums up a step.
    pub fn new(step: usize, target_rate: f64, seconds: f64, stats: &StepStats) -> StepReport {
        StepReport {
            step,
            target_rate,
            seconds,
            offered: stats.offered,
            starved: stats.starved,
            created: stats.created,
            set_up: stats.set_up,
            completed: stats.completed,
            setups_per_second: rate(stats.set_up, seconds),
            ring: stats.ring.summary(),
            answer: stats.answer.summary(),
            hangup: stats.hangup.summary(),
            rest: stats.rest.iter().map(|(k, v)| (*k, v.summary())).collect(),
            emits: stats.emits.iter().map(|(k, v)| (*k, v.summary())).collect(),
            errors: stats.errors.clone(),
            used: Counters::default(),
            per_call: Counters::default(),
            machine_busy: 0.0,
            load_average: 0.0,
            rss_mib: BTreeMap::new(),
        }
    }
}

/// `n` per second over `seconds` (0 for an empty window).
pub fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// The schedule: `"20,40,80"` → `[20.0, 40.0, 80.0]` calls per second.
pub fn parse_rates(s: &str) -> Result<Vec<f64>, String> {
    let rates = s
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| match r.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
            _ => Err(format!(
                "{r:?} is not a positive number of calls per second"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if rates.is_empty() {
        return Err("no rates given".into());
    }
    Ok(rates)
}

/// `"100-600"` → (100, 600) milliseconds.
pub fn parse_range_ms(s: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u64 = lo
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a range of milliseconds like 100-600"))?;
    let hi: u64 = hi
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a range of milliseconds like 100-600"))?;
    if hi < lo {
        return Err(format!("{s:?}: the upper bound is below the lower"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut l = Latency::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        let p50 = s.p50_ms.unwrap_or_default();
        let p99 = s.p99_ms.unwrap_or_default();
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        assert!((98.9..=99.1).contains(&p99), "{p99}");
        assert_eq!(Latency::default().summary().p99_ms, None);
    }

    #[test]
    fn per_call_cost_takes_away_the_idle_baseline_scaled_to_the_step() {
        let mut used = Counters::default();
        used.cpu_seconds.insert("calls-api".into(), 12.0);
        used.db.insert("xact_commit".into(), 1_100.0);
        let mut idle = Counters::default();
        // 10 s idle: 1 CPU second, 50 transactions; a 20 s step spends twice that idle.
        idle.cpu_seconds.insert("calls-api".into(), 1.0);
        idle.db.insert("xact_commit".into(), 50.0);
        let per = used.per_call(100, 20.0, &idle, 10.0);
        assert!((per.cpu_seconds["calls-api"] - 0.1).abs() < 1e-9);
        assert!((per.db["xact_commit"] - 10.0).abs() < 1e-9);
        assert_eq!(used.per_call(0, 20.0, &idle, 10.0).db["xact_commit"], 0.0);
    }

    #[test]
    fn counters_subtract_key_by_key() {
        let mut a = Counters::default();
        a.db.insert("x".into(), 10.0);
        a.db.insert("only-late".into(), 1.0);
        let mut b = Counters::default();
        b.db.insert("x".into(), 4.0);
        let d = a.since(&b);
        assert_eq!(d.db.get("x"), Some(&6.0));
        assert_eq!(d.db.get("only-late"), None);
    }

    #[test]
    fn the_schedule_and_ranges_are_read_from_text() {
        assert_eq!(parse_rates("20, 40,80"), Ok(vec![20.0, 40.0, 80.0]));
        assert!(parse_rates("20,x").is_err());
        assert!(parse_rates("0").is_err());
        assert!(parse_rates("").is_err());
        assert_eq!(parse_range_ms("100-600"), Ok((100, 600)));
        assert_eq!(parse_range_ms("250"), Ok((250, 250)));
        assert!(parse_range_ms("600-100").is_err());
        assert!((rate(150, 30.0) - 5.0).abs() < 1e-9);
        assert_eq!(rate(1, 0.0), 0.0);
    }
}
