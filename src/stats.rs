//! Counters behind `GET /metrics` (Prometheus text format 0.0.4): decisions
//! by route, result and reason, decision latency, token cache, per-issuer key
//! state. Hand-rolled on purpose: a handful of atomics and one small map.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use crate::decision::{Allowed, Decision};
use crate::policy::Policy;

/// Upper bounds (seconds) of the latency histogram.
const BUCKETS: [f64; 12] = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];

/// (result, reason) -> count, for one route.
type CountsByOutcome = BTreeMap<(&'static str, &'static str), u64>;

/// Process-wide counters; they survive policy reloads.
#[derive(Default)]
pub struct Stats {
    /// route -> (result, reason) -> count. Routes are few, so the map stays
    /// small, and a known route is found by `&str` without allocating.
    decisions: Mutex<BTreeMap<String, CountsByOutcome>>,
    /// (route, requirement) -> would-be denies allowed by `mode: dry_run`.
    dry_run: Mutex<BTreeMap<(String, &'static str), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Stats {
    pub fn record(&self, decision: &Decision, elapsed: Duration) {
        let (route, result, reason) = match decision {
            Decision::Allow(allowed) => (allowed.route.as_str(), "allow", "ok"),
            Decision::Deny(denied) => (denied.route.as_deref().unwrap_or(""), "deny", denied.reason.kind()),
        };
        {
            let mut decisions = self.decisions.lock().expect("stats lock poisoned");
            let per_route = match decisions.get_mut(route) {
                Some(per_route) => per_route,
                None => decisions.entry(route.to_string()).or_default(),
            };
            *per_route.entry((result, reason)).or_insert(0) += 1;
        }
        if let Decision::Allow(Allowed { dry_run: Some(unmet), route, .. }) = decision {
            let mut dry_run = self.dry_run.lock().expect("stats lock poisoned");
            *dry_run.entry((route.clone(), unmet.requirement.key())).or_insert(0) += 1;
        }
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The exposition for the current `policy`.
    pub fn render(&self, policy: &Policy, ready: bool) -> String {
        let mut out = String::new();
        self.render_decisions(&mut out);
        self.render_dry_run(&mut out);
        self.render_latency(&mut out);
        render_policy(&mut out, policy, ready);
        out
    }

    fn render_decisions(&self, out: &mut String) {
        header(out, "portcullis_checks_total", "counter", "Check decisions by route, result and reason.");
        for (route, counts) in self.decisions.lock().expect("stats lock poisoned").iter() {
            for ((result, reason), count) in counts {
                let _ = writeln!(
                    out,
                    "portcullis_checks_total{{route=\"{}\",result=\"{result}\",reason=\"{reason}\"}} {count}",
                    escape(route)
                );
            }
        }
    }

    fn render_dry_run(&self, out: &mut String) {
        let name = "portcullis_dry_run_denies_total";
        header(out, name, "counter", "Requests a dry-run route allowed though a requirement did not hold.");
        for ((route, requirement), count) in self.dry_run.lock().expect("stats lock poisoned").iter() {
            let _ = writeln!(out, "{name}{{route=\"{}\",requirement=\"{requirement}\"}} {count}", escape(route));
        }
    }

    fn render_latency(&self, out: &mut String) {
        let name = "portcullis_check_duration_seconds";
        header(out, name, "histogram", "Time from CheckRequest to decision, inside portcullis.");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

fn render_policy(out: &mut String, policy: &Policy, ready: bool) {
    gauge(out, "portcullis_ready", "1 once every issuer a route uses has keys.", u64::from(ready));
    gauge(out, "portcullis_policy_generation", "Generation of the policy in force (1 at start).", policy.generation);
    let cache = policy.cache.stats();
    gauge(out, "portcullis_token_cache_entries", "Verified tokens cached by the current policy.", cache.entries);
    counter(out, "portcullis_token_cache_hits_total", "Token cache hits (reset on reload).", cache.hits);
    counter(out, "portcullis_token_cache_misses_total", "Token cache misses (reset on reload).", cache.misses);
    let issuers: Vec<_> = policy.issuers.iter().map(|issuer| (escape(&issuer.name), issuer.keys.status())).collect();
    let per_issuer =
        |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&crate::keys::KeyStatus) -> String| {
            header(out, name, kind, help);
            for (issuer, status) in &issuers {
                let _ = writeln!(out, "{name}{{issuer=\"{issuer}\"}} {}", value(status));
            }
        };
    per_issuer(out, "portcullis_issuer_keys", "gauge", "Verification keys loaded per issuer.", &|s| {
        s.key_ids.len().to_string()
    });
    per_issuer(out, "portcullis_issuer_key_fetches_total", "counter", "Discovery/JWKS fetch attempts.", &|s| {
        s.fetches.to_string()
    });
    per_issuer(out, "portcullis_issuer_key_fetch_errors_total", "counter", "Failed fetch attempts.", &|s| {
        s.errors.to_string()
    });
    per_issuer(
        out,
        "portcullis_issuer_last_refresh_timestamp_seconds",
        "gauge",
        "Unix time of the last good fetch.",
        &|s| {
            s.last_refresh
                .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |since| since.as_secs())
                .to_string()
        },
    );
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Label values: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
