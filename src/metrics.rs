//! The numbers operators watch on `GET /metrics`, through the prometheus-client
//! crate (Prometheus text 0.0.4, or OpenMetrics when the scraper asks for it).
//!
//! Counters and the latency histogram are process-wide: they live in the
//! runtime every policy hands to the next, so a reload does not reset them.
//! Key state, readiness and the cache size are read from the policy in force
//! when the scrape happens. Label values come from the config (route, issuer
//! and backend names) or from fixed sets, never from a request, so the number
//! of series is bounded by the config.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::decision_log::LogMetrics;

/// The OpenMetrics content type, served when the scraper's `Accept` asks for it.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    route: Arc<str>,
    decision: &'static str,
    reason: &'static str,
    /// The face the request came through (`ext_authz_grpc`, `forward_auth`, ...).
    face: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaceLabel {
    face: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DryRunLabels {
    route: Arc<str>,
    requirement: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerResult {
    issuer: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerOutcome {
    issuer: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MintLabels {
    backend: Arc<str>,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdminLabels {
    method: &'static str,
    result: &'static str,
}

/// Every process-wide metric, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    checks: Family<CheckLabels, Counter>,
    latency: Family<FaceLabel, Histogram>,
    dry_run: Family<DryRunLabels, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_evictions: Counter,
    jwks_fetches: Family<IssuerResult, Counter>,
    unknown_kid: Family<IssuerOutcome, Counter>,
    minted: Family<MintLabels, Counter>,
    reloads: Family<ResultLabel, Counter>,
    admin_calls: Family<AdminLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    revocations_applied: Family<OpLabel, Counter>,
    state_errors: Counter,
    pub spans_dropped: Counter,
    /// The decision log's dropped lines and queued bytes.
    pub decision_log: LogMetrics,
    pub deny_log_suppressed: Counter,
    /// Checks decoded and not yet answered (the admission count).
    pub checks_in_flight: Gauge,
    /// Unfinished requests on the gRPC ports: their bytes, and the streams cut (intake.rs).
    pub intake: crate::intake::IntakeMetrics,
    unfinished_cut: Family<ReasonLabel, Counter>,
    /// What the policy in force says, handed in by each scrape.
    state: Arc<Mutex<Option<State>>>,
    /// One scrape at a time, so each renders its own state.
    scrape: Mutex<()>,
}

/// The state of the policy in force at scrape time.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub ready: bool,
    pub generation: u64,
    pub cache_entries: u64,
    /// The cache's estimate of the bytes its tokens hold (capped by `cache.max_bytes`).
    pub cache_bytes: u64,
    pub issuers: Vec<IssuerState>,
    /// Entries in this replica's revocation set.
    pub revocations: u64,
    /// Seconds since the set was last confirmed against the shared state (0 with `state: memory`).
    pub revocation_staleness: u64,
}

#[derive(Debug, Clone)]
pub struct IssuerState {
    pub name: String,
    pub keys: usize,
    /// When fetched keys were last installed or confirmed; `None` for static keys or before the first fetch.
    pub last_refresh: Option<SystemTime>,
}

/// The outcome of one Check, as metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct CheckOutcome<'a> {
    /// The matched route; `None` when no route matched (or the request was refused before routing).
    pub route: Option<&'a Arc<str>>,
    pub allowed: bool,
    /// The deny reason's label (`ok` for an allow).
    pub reason: &'static str,
    /// The requirement a dry-run route let pass.
    pub dry_run: Option<&'static str>,
    /// The face's label.
    pub face: &'static str,
}

/// 1 µs .. 131 ms in powers of two (and +Inf): a cached allow to a slow refetch.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-6, 2.0, 18))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("portcullis"),
            checks: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            dry_run: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            jwks_fetches: Family::default(),
            unknown_kid: Family::default(),
            minted: Family::default(),
            reloads: Family::default(),
            admin_calls: Family::default(),
            webhooks: Family::default(),
            revocations_applied: Family::default(),
            state_errors: Counter::default(),
            spans_dropped: Counter::default(),
            decision_log: LogMetrics::default(),
            deny_log_suppressed: Counter::default(),
            checks_in_flight: Gauge::default(),
            intake: crate::intake::IntakeMetrics::default(),
            unfinished_cut: Family::default(),
            state: Arc::default(),
            scrape: Mutex::new(()),
        };
        let cut = |reason| metrics.unfinished_cut.get_or_create(&ReasonLabel { reason }).clone();
        metrics.intake.arrival_timeouts = cut(crate::intake::Cut::ArrivalTimeout.label());
        metrics.intake.budget_resets = cut(crate::intake::Cut::ConnectionBudget.label());
        metrics.register();
        metrics
    }

    fn register(&mut self) {
        let registry = &mut self.registry;
        registry.register("checks", "Check decisions by route, decision, deny reason and face", self.checks.clone());
        registry.register_with_unit(
            "check_duration",
            "Time from request to decision, inside portcullis, by face",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "dry_run_denies",
            "Requests a dry-run route allowed although a requirement did not hold",
            self.dry_run.clone(),
        );
        registry.register("token_cache_hits", "Verified-token cache hits", self.cache_hits.clone());
        registry.register("token_cache_misses", "Verified-token cache misses", self.cache_misses.clone());
        registry.register(
            "token_cache_evictions",
            "Verified tokens evicted to stay within cache.tokens and cache.max_bytes",
            self.cache_evictions.clone(),
        );
        registry.register("jwks_fetches", "Discovery and JWKS fetches by issuer and result", self.jwks_fetches.clone());
        registry.register(
            "unknown_kid_refetches",
            "Tokens with an unknown kid: refetches performed, joined, or skipped by the rate limit",
            self.unknown_kid.clone(),
        );
        registry.register(
            "supabase_minted_tokens",
            "Supabase tokens handed upstream: freshly minted or reused",
            self.minted.clone(),
        );
        registry.register("policy_reloads", "Policy reloads by result", self.reloads.clone());
        registry.register("admin_calls", "Admin API calls by method and result", self.admin_calls.clone());
        registry.register(
            "webhooks",
            "Webhook deliveries by webhook and result (verified, duplicate, ignored, bad_signature, stale, future, malformed, state_error, ...)",
            self.webhooks.clone(),
        );
        registry.register(
            "revocations_applied",
            "Revocation changes applied to this replica's set, by operation (from webhooks, the Admin API or other replicas)",
            self.revocations_applied.clone(),
        );
        registry.register(
            "state_errors",
            "Failed reads of the shared state (Redis) by the revocation reader",
            self.state_errors.clone(),
        );
        registry.register(
            "tracing_spans_dropped",
            "Spans dropped because the export queue was full",
            self.spans_dropped.clone(),
        );
        registry.register(
            "decision_log_dropped",
            "Decision log lines dropped because the writer fell behind",
            self.decision_log.dropped.clone(),
        );
        registry.register(
            "decision_log_queued_bytes",
            "Bytes of decision log lines waiting for the writer (beyond 4 MiB they are dropped)",
            self.decision_log.queued_bytes.clone(),
        );
        registry.register(
            "deny_log_lines_suppressed",
            "Deny log lines not written to stay within the log rate",
            self.deny_log_suppressed.clone(),
        );
        registry.register(
            "checks_in_flight",
            "Checks received and not yet answered (over limits.concurrent_checks they get a 503)",
            self.checks_in_flight.clone(),
        );
        registry.register(
            "unfinished_request_bytes",
            "Bytes of gRPC requests received whose message has not fully arrived, all connections",
            self.intake.unfinished_bytes.clone(),
        );
        registry.register(
            "unfinished_requests_cut",
            "gRPC requests ended before their message arrived: too slow, or over the connection's byte budget",
            self.unfinished_cut.clone(),
        );
        registry.register("build", "The running build", Info::new([("version", env!("CARGO_PKG_VERSION"))]));
        registry.register_collector(Box::new(StateCollector { state: Arc::clone(&self.state) }));
    }

    /// One Check: its decision (and a dry run's would-be deny) and its latency.
    pub fn record_check(&self, outcome: CheckOutcome<'_>, elapsed: Duration) {
        let route = outcome.route.map_or_else(|| Arc::clone(&NO_ROUTE), Arc::clone);
        if let Some(requirement) = outcome.dry_run {
            self.dry_run.get_or_create(&DryRunLabels { route: Arc::clone(&route), requirement }).inc();
        }
        let decision = if outcome.allowed { "allow" } else { "deny" };
        let face = outcome.face;
        self.checks.get_or_create(&CheckLabels { route, decision, reason: outcome.reason, face }).inc();
        self.latency.get_or_create(&FaceLabel { face }).observe(elapsed.as_secs_f64());
    }

    /// The hit and miss counters, for the token cache to bump directly.
    pub fn cache_counters(&self) -> CacheCounters {
        CacheCounters {
            hits: self.cache_hits.clone(),
            misses: self.cache_misses.clone(),
            evictions: self.cache_evictions.clone(),
        }
    }

    /// The fresh and reused counters of one Supabase backend, resolved once.
    pub fn mint_counters(&self, backend: &str) -> MintCounters {
        let counter = |kind| self.minted.get_or_create(&MintLabels { backend: Arc::from(backend), kind }).clone();
        MintCounters { fresh: counter("fresh"), reused: counter("reused") }
    }

    pub fn record_fetch(&self, issuer: &Arc<str>, result: &'static str) {
        self.jwks_fetches.get_or_create(&IssuerResult { issuer: Arc::clone(issuer), result }).inc();
    }

    pub fn record_unknown_kid(&self, issuer: &Arc<str>, outcome: &'static str) {
        self.unknown_kid.get_or_create(&IssuerOutcome { issuer: Arc::clone(issuer), outcome }).inc();
    }

    /// `result`: `ok`, `error` (the new config was refused), or `no_config_file`
    /// (nothing to re-read: the instance was started without a file).
    pub fn record_reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn record_admin_call(&self, method: &'static str, result: &'static str) {
        self.admin_calls.get_or_create(&AdminLabels { method, result }).inc();
    }

    /// One webhook delivery's outcome.
    pub fn record_webhook(&self, webhook: &Arc<str>, result: &'static str) {
        self.webhooks.get_or_create(&WebhookLabels { webhook: Arc::clone(webhook), result }).inc();
    }

    /// A revocation change applied to this replica's set.
    pub fn record_revocation_applied(&self, change: &crate::revocation::Change) {
        use crate::revocation::Change;
        let op = match change {
            Change::RevokeSubject { .. } => "revoke_subject",
            Change::RevokeToken { .. } => "revoke_token",
            Change::UnrevokeSubject { .. } => "unrevoke_subject",
            Change::UnrevokeToken { .. } => "unrevoke_token",
        };
        self.revocations_applied.get_or_create(&OpLabel { op }).inc();
    }

    /// The revocation reader could not read the shared state.
    pub fn record_state_error(&self) {
        self.state_errors.inc();
    }

    /// Admin calls refused for a missing or wrong admin token (before any method runs).
    pub fn admin_unauthenticated(&self) -> Counter {
        self.admin_calls.get_or_create(&AdminLabels { method: "any", result: "unauthenticated" }).clone()
    }

    /// The exposition of the counters and `state`: OpenMetrics when `accept`
    /// asks for it, else Prometheus text 0.0.4.
    pub fn render(&self, accept: Option<&str>, state: State) -> (&'static str, String) {
        let _one_scrape = self.scrape.lock().expect("scrape lock poisoned");
        *self.state.lock().expect("metrics state lock poisoned") = Some(state);
        let mut body = String::new();
        if accept.is_some_and(|accept| accept.contains("application/openmetrics-text")) {
            let _ = prometheus_client::encoding::text::encode(&mut body, &self.registry);
            (OPENMETRICS, body)
        } else {
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut body, &self.registry);
            (prometheus_client::encoding::prometheus_text::CONTENT_TYPE, body)
        }
    }
}

/// The route label of a Check that matched no route.
static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));

/// The token cache's counters (shared with the registry).
#[derive(Debug, Clone, Default)]
pub struct CacheCounters {
    pub hits: Counter,
    pub misses: Counter,
    pub evictions: Counter,
}

/// One Supabase backend's minted-token counters (shared with the registry).
#[derive(Debug, Clone, Default)]
pub struct MintCounters {
    pub fresh: Counter,
    pub reused: Counter,
}

/// Renders the [`State`] handed to the scrape in progress.
#[derive(Debug)]
struct StateCollector {
    state: Arc<Mutex<Option<State>>>,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(state) = self.state.lock().expect("metrics state lock poisoned").clone() else { return Ok(()) };
        gauge(
            &mut encoder,
            "ready",
            "1 once every issuer a route uses has keys (and not draining)",
            None,
            state.ready.into(),
        )?;
        gauge(
            &mut encoder,
            "policy_generation",
            "Generation of the policy in force (1 at start)",
            None,
            clamp(state.generation),
        )?;
        let entries = clamp(state.cache_entries);
        gauge(&mut encoder, "token_cache_entries", "Verified tokens cached by the policy in force", None, entries)?;
        let bytes = clamp(state.cache_bytes);
        let help = "Estimated bytes the cached tokens hold, capped by cache.max_bytes";
        gauge(&mut encoder, "token_cache_bytes", help, None, bytes)?;
        let help = "Entries (revoked subjects and tokens) in this replica's revocation set";
        gauge(&mut encoder, "revocation_entries", help, None, clamp(state.revocations))?;
        let help = "Seconds since this replica's revocation set was confirmed against the shared state";
        gauge(&mut encoder, "revocation_staleness", help, Some(&Unit::Seconds), clamp(state.revocation_staleness))?;
        let issuers = &state.issuers;
        per_issuer(&mut encoder, issuers, "issuer_keys", "Verification keys loaded per issuer", None, |issuer| {
            Some(clamp(issuer.keys as u64))
        })?;
        let unix = |at: SystemTime| at.duration_since(UNIX_EPOCH).ok().map(|since| clamp(since.as_secs()));
        per_issuer(
            &mut encoder,
            issuers,
            "issuer_last_refresh_timestamp",
            "When the issuer's keys were last fetched successfully (Unix time)",
            Some(&Unit::Seconds),
            |issuer| issuer.last_refresh.and_then(unix),
        )?;
        let now = SystemTime::now();
        per_issuer(
            &mut encoder,
            issuers,
            "issuer_key_age",
            "Seconds since the issuer's key set last changed or was confirmed by a fetch",
            Some(&Unit::Seconds),
            |issuer| issuer.last_refresh.map(|at| clamp(now.duration_since(at).unwrap_or_default().as_secs())),
        )
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, value: i64) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// One gauge with a series per issuer that has a value.
fn per_issuer(
    encoder: &mut DescriptorEncoder,
    issuers: &[IssuerState],
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl Fn(&IssuerState) -> Option<i64>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for issuer in issuers {
        if let Some(value) = value(issuer) {
            ConstGauge::new(value).encode(metric.encode_family(&[("issuer", issuer.name.as_str())])?)?;
        }
    }
    Ok(())
}
