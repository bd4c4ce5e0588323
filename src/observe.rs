//! After the decision, before the CheckResponse: everything that makes a
//! decision visible. Metrics count it, the decision log records it (sampled),
//! a deny gets a log line (at most [`DENY_LINES_PER_SECOND`], the rest counted),
//! and the Check's trace span gets its attributes.
//!
//! The hot path stays cheap: counters are atomics, the decision log only
//! queues, the deny line is skipped once the budget is spent, and no span
//! exists unless tracing is on.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::Span;

use crate::decision::{Audit, Decision, Denied};
use crate::decision_log::{DecisionLog, Entry};
use crate::escape::{escape, escape_at_most};
use crate::metrics::{CheckOutcome, Metrics};
use crate::policy::Policy;
use crate::policy::faces::Face;
use crate::request::HttpRequest;
use crate::token::fingerprint;
use crate::trace::{self, CheckTracing};

/// Deny (and dry-run) log lines written per second; the rest are counted in
/// `portcullis_deny_log_lines_suppressed_total` and reported on the next line.
pub const DENY_LINES_PER_SECOND: u32 = 10;

/// Characters of a deny reason kept in the deny line. The reason may quote
/// client text (a claim, a role), so the whole of it is escaped: a raw newline
/// would forge a line of the text log, an escape sequence rewrite a terminal.
const MAX_REASON_CHARS: usize = 1024;

/// The longest `x-request-id` copied into the decision log.
const MAX_REQUEST_ID: usize = 128;

pub struct Observer {
    pub metrics: Arc<Metrics>,
    log: Option<DecisionLog>,
    tracing: Option<CheckTracing>,
    lines: LogBudget,
}

impl Observer {
    pub fn new(metrics: Arc<Metrics>, log: Option<DecisionLog>, tracing: Option<CheckTracing>) -> Self {
        Observer { metrics, log, tracing, lines: LogBudget::new(DENY_LINES_PER_SECOND) }
    }

    /// The decision log, when one is configured.
    pub fn decision_log(&self) -> Option<&DecisionLog> {
        self.log.as_ref()
    }

    /// A span for this Check, when tracing is on.
    pub fn check_span(&self, request: &HttpRequest) -> Option<Span> {
        self.tracing.as_ref().map(|tracing| tracing.span(request))
    }

    /// Makes one decision visible.
    pub fn observe(&self, seen: Seen<'_>, span: Option<&Span>) {
        let Seen { face, policy, request, decision, audit, elapsed } = seen;
        self.metrics.record_check(outcome(face, decision), elapsed);
        self.log_line(policy, request, decision, audit);
        if let (Some(tracing), Some(span)) = (&self.tracing, span) {
            tracing.record(span, face, decision, audit);
        }
        let Some(log) = &self.log else { return };
        let Some(settings) = &policy.decision_log else { return };
        if log.wants(settings, matches!(decision, Decision::Deny(_))) {
            log.write(entry(face, request, decision, audit, elapsed, span));
        }
    }

    /// The deny (or dry-run) line, within the budget.
    fn log_line(&self, policy: &Policy, request: &HttpRequest, decision: &Decision, audit: &Audit) {
        let unmet = match decision {
            Decision::Allow(allowed) => match &allowed.dry_run {
                Some(unmet) => Some(unmet),
                None => return,
            },
            Decision::Deny(_) => None,
        };
        let Some(suppressed) = self.lines.take(policy.runtime.clock.now()) else {
            self.metrics.deny_log_suppressed.inc();
            return;
        };
        let token = audit.digest.as_ref().map(fingerprint);
        let token = token.as_deref().unwrap_or("-");
        match (decision, unmet) {
            (Decision::Deny(denied), _) => deny_line(denied, request, token, suppressed),
            (Decision::Allow(allowed), Some(unmet)) => tracing::info!(
                route = %allowed.route,
                requirement = %escape_at_most(&unmet.description(), MAX_REASON_CHARS),
                token,
                suppressed,
                "would deny (dry run): allowed"
            ),
            (Decision::Allow(_), None) => {}
        }
    }
}

/// One Check, as the observer sees it.
pub struct Seen<'a> {
    /// Which face the request came through.
    pub face: Face,
    pub policy: &'a Policy,
    pub request: &'a HttpRequest,
    pub decision: &'a Decision,
    pub audit: &'a Audit,
    pub elapsed: Duration,
}

fn deny_line(denied: &Denied, request: &HttpRequest, token: &str, suppressed: u64) {
    tracing::info!(
        route = denied.route.as_deref().unwrap_or("-"),
        method = %escape(&request.method),
        path = %escape(&request.path),
        status = denied.rendered.http_status,
        reason = %escape_at_most(&denied.reason.description(), MAX_REASON_CHARS),
        token,
        suppressed,
        "deny"
    );
}

fn outcome(face: Face, decision: &Decision) -> CheckOutcome<'_> {
    match decision {
        Decision::Allow(allowed) => CheckOutcome {
            route: Some(&allowed.route),
            allowed: true,
            reason: "ok",
            dry_run: allowed.dry_run.as_ref().map(|unmet| unmet.requirement.key()),
            face: face.label(),
        },
        Decision::Deny(denied) => CheckOutcome {
            route: denied.route.as_ref(),
            allowed: false,
            reason: denied.reason.kind(),
            dry_run: None,
            face: face.label(),
        },
    }
}

fn entry(
    face: Face,
    request: &HttpRequest,
    decision: &Decision,
    audit: &Audit,
    elapsed: Duration,
    span: Option<&Span>,
) -> Entry {
    let (route, detail) = match decision {
        Decision::Allow(allowed) => (Some(&allowed.route), allowed.dry_run.as_ref().map(|unmet| unmet.description())),
        Decision::Deny(denied) => (denied.route.as_ref(), Some(denied.reason.description())),
    };
    let trace_id =
        trace::traceparent_trace_id(request).map(str::to_string).or_else(|| span.and_then(trace::sampled_trace_id));
    let request_id = request
        .header("x-request-id")
        .filter(|id| id.len() <= MAX_REQUEST_ID && id.bytes().all(|byte| byte.is_ascii_graphic()))
        .map(str::to_string);
    Entry {
        time: SystemTime::now(),
        face: face.label(),
        route: route.map(|route| route.to_string()),
        issuer: audit.issuer.as_deref().map(str::to_string),
        sub: audit.subject().map(str::to_string),
        decision: if matches!(decision, Decision::Allow(_)) { "allow" } else { "deny" },
        reason: match decision {
            Decision::Allow(_) => "ok",
            Decision::Deny(denied) => denied.reason.kind(),
        },
        detail,
        status: decision.http_status(),
        latency_us: (elapsed.as_secs_f64() * 1e7).round() / 10.0,
        cache_hit: audit.cache_hit,
        token_fp: audit.digest.as_ref().map(fingerprint),
        trace_id,
        request_id,
        method: request.method.clone(),
        host: request.host.clone(),
        path: request.path.clone(),
        truncated: Vec::new(),
    }
}

/// At most `per_second` lines in each second of the clock; the others are
/// counted and reported with the next line written.
pub struct LogBudget {
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    second: u64,
    written: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn new(per_second: u32) -> Self {
        LogBudget { per_second, window: Mutex::default() }
    }

    /// `Some(n)`: write this line, noting the `n` suppressed since the last one
    /// written; `None`: suppress it.
    pub fn take(&self, now: u64) -> Option<u64> {
        let mut window = self.window.lock().expect("log budget lock poisoned");
        if window.second != now {
            window.second = now;
            window.written = 0;
        }
        if window.written < self.per_second {
            window.written += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refills_each_second_and_reports_what_it_suppressed() {
        let budget = LogBudget::new(2);
        assert_eq!(budget.take(100), Some(0));
        assert_eq!(budget.take(100), Some(0));
        assert_eq!(budget.take(100), None);
        assert_eq!(budget.take(100), None);
        assert_eq!(budget.take(101), Some(2), "the next line says two were left out");
        assert_eq!(budget.take(101), Some(0));
        assert_eq!(budget.take(101), None);
    }
}
