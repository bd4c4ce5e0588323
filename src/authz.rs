//! The decision pipeline, in request order: request view -> route -> extract
//! -> vouch (cache, verify) -> requirements -> backend -> decision. It knows no
//! wire format: each face (`face/`) reads its wire request into the view and
//! renders the decision back. Every path ends in a decision, never an error.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tracing::Instrument;

use crate::admission::{Admitted, Gate};
use crate::authenticate::vouch;
use crate::backend::{Authenticated, Mutations, plain};
use crate::config::Action;
use crate::config::OnStale;
use crate::decision::{Allowed, Audit, Caller, Decision, Denied, DenyReason, RenderedDeny};
use crate::escape::escape;
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::observe::{Observer, Seen};
use crate::policy::Policy;
use crate::policy::faces::Face;
use crate::request::{HttpRequest, RequestProblem};
use crate::revocation::Freshness;
use crate::route::Route;
use crate::rules::{Facts, Requirement, Requirements, Unmet, query};
use crate::token::VerifiedToken;
use crate::token::{digest, fingerprint};
use crate::verify::VerifyFailure;
use crate::webhook::{self, DeliveryError, Receipt, Webhook};

/// Decides requests against the current policy, which can be swapped live.
pub struct Authorizer {
    /// Read lock-free by every Check (no shared reader count to bounce between cores).
    policy: ArcSwap<Policy>,
    /// Metrics, decision log, deny lines and trace spans; they outlive reloads.
    pub observer: Observer,
    /// Checks in progress against `limits.concurrent_checks` (the gRPC layer counts, reloads set the limit).
    pub gate: Arc<Gate>,
}

impl Authorizer {
    /// An authorizer that counts decisions in `policy`'s metrics and neither logs decisions nor traces.
    pub fn new(policy: Policy) -> Self {
        let observer = Observer::new(Arc::clone(&policy.runtime.metrics), None, None);
        Authorizer::with_observer(policy, observer)
    }

    pub fn with_observer(policy: Policy, observer: Observer) -> Self {
        let gate = Arc::new(Gate::new(policy.limits.concurrent_checks, observer.metrics.checks_in_flight.clone()));
        Authorizer { policy: ArcSwap::from_pointee(policy), observer, gate }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.observer.metrics
    }

    /// The policy in force; a Check holds its own `Arc`, so a swap never affects it midway.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Installs a new policy; returns the old one.
    pub fn swap(&self, policy: Policy) -> Arc<Policy> {
        self.gate.set_limit(policy.limits.concurrent_checks);
        self.policy.swap(Arc::new(policy))
    }

    /// One request a `face` read, end to end: decided against `policy` (the
    /// face read the request within its limits) unless it was not `admitted`
    /// (over `limits.concurrent_checks`), and observed under the face's name.
    pub async fn decide_for(&self, face: Face, admitted: Admitted, policy: &Policy, request: &HttpRequest) -> Decision {
        self.decide_observed(face, admitted, policy, None, request).await
    }

    /// [`Authorizer::decide_for`] on a `route` the face chose itself (a Hasura
    /// auth hook is its own route), without routing: the rest of the pipeline
    /// is the same.
    pub async fn decide_on_route(
        &self,
        face: Face,
        admitted: Admitted,
        policy: &Policy,
        route: &Route,
        request: &HttpRequest,
    ) -> Decision {
        self.decide_observed(face, admitted, policy, Some(route), request).await
    }

    async fn decide_observed(
        &self,
        face: Face,
        admitted: Admitted,
        policy: &Policy,
        route: Option<&Route>,
        request: &HttpRequest,
    ) -> Decision {
        let started = Instant::now();
        let mut audit = Audit::default();
        let span = self.observer.check_span(request);
        let decision = match (&span, admitted) {
            (_, Admitted(false)) => deny(DenyReason::Overloaded, request, None),
            (Some(span), _) => decide(policy, route, request, &mut audit).instrument(span.clone()).await,
            (None, _) => decide(policy, route, request, &mut audit).await,
        };
        let seen = Seen { face, policy, request, decision: &decision, audit: &audit, elapsed: started.elapsed() };
        self.observer.observe(seen, span.as_ref());
        decision
    }

    /// Decides `request`, unobserved (`token verify`, tests).
    pub async fn decide(&self, request: &HttpRequest) -> Decision {
        decide(&self.policy(), None, request, &mut Audit::default()).await
    }
}

/// Decides `request` on `fixed` when a face chose the route, else on the route it matches.
async fn decide(policy: &Policy, fixed: Option<&Route>, request: &HttpRequest, audit: &mut Audit) -> Decision {
    if let Some(problem) = request.problem() {
        return deny(DenyReason::InvalidRequest(problem), request, fixed);
    }
    if fixed.is_none()
        && let Some(webhook) = policy.webhooks.iter().find(|webhook| webhook.matches(request))
    {
        return webhook_delivery(policy, webhook, request).await;
    }
    let Some(route) = fixed.or_else(|| policy.router.route(request)) else {
        return deny(DenyReason::NoRoute, request, None);
    };
    if request.has_path_parameters() && !route.allow_path_parameters {
        return deny(DenyReason::InvalidRequest(RequestProblem::PathParameters), request, Some(route));
    }
    if ambiguous_query_for_rules(route, request) {
        return deny(DenyReason::InvalidRequest(RequestProblem::AmbiguousQuery), request, Some(route));
    }
    match route.action {
        Action::Deny => deny(DenyReason::RouteDenies, request, Some(route)),
        Action::Allow => {
            tracing::debug!(route = %route.name, path = ?request.path, "allow (no token required)");
            // Client copies of identity headers are removed all the same.
            Decision::Allow(allowed(policy, route, None, route.identity.mutations(None), None))
        }
        Action::Authenticate => authenticate(policy, route, request, audit).await,
    }
}

/// A route whose rule reads `request.query` refuses a query that backends could
/// read differently (a repeated name, `;`): the rule would judge one reading and
/// the backend serve another. A dry run enforces nothing: there the rule fails
/// and the failure is counted.
fn ambiguous_query_for_rules(route: &Route, request: &HttpRequest) -> bool {
    !route.dry_run
        && route.requirements.as_ref().is_some_and(Requirements::reads_query)
        && query::parse(request.query()).is_err()
}

async fn authenticate(policy: &Policy, route: &Route, request: &HttpRequest, audit: &mut Audit) -> Decision {
    let backend = route.backend.as_ref().map(|route_backend| &*route_backend.backend);
    if let Some(refusal) = backend.and_then(|backend| backend.precheck(request)) {
        return deny(DenyReason::Refused(refusal), request, Some(route));
    }
    let found = match route.extractor.extract(request) {
        Ok(Some(found)) => found,
        Ok(None) => return anonymous(policy, route, request),
        Err(err) => return deny(DenyReason::Unreadable(err), request, Some(route)),
    };
    // Only issuers that read the token where it was found may verify it.
    let candidates: Vec<&Arc<Issuer>> =
        found.readers.iter().map(|&position| &policy.issuers[route.issuers[position]]).collect();
    let token_digest = digest(found.token);
    audit.digest = Some(token_digest);
    let vouched = match vouch(&policy.cache, &policy.runtime.clock, found.token, &token_digest, &candidates).await {
        Ok(vouched) => vouched,
        Err(VerifyFailure::Invalid(err)) => return deny(DenyReason::InvalidToken(err), request, Some(route)),
        Err(VerifyFailure::KeysUnavailable(issuer)) => {
            return deny(DenyReason::KeysUnavailable(issuer), request, Some(route));
        }
    };
    let issuer = vouched.issuer;
    audit.issuer = Some(Arc::clone(&issuer.name));
    audit.cache_hit = Some(vouched.cache_hit);
    audit.token = Some(Arc::clone(&vouched.token));
    // After verification, remembered or fresh: a cached allow never outlives a revocation.
    if let Some(revoked) = revocation_check(policy, issuer, &vouched.token) {
        return deny(revoked, request, Some(route));
    }
    let mut dry_run = None;
    if let Some(requirements) = &route.requirements {
        let facts = Facts { token: &vouched.token, request, route: &route.name, now: policy.runtime.clock.now() };
        if let Err(unmet) = requirements.check(&facts) {
            if !route.dry_run {
                return deny(DenyReason::RequirementUnmet(unmet), request, Some(route));
            }
            dry_run = Some(unmet);
        }
    }
    let mut mutations = match backend {
        Some(backend) => {
            let auth =
                Authenticated { request, token: &vouched.token, raw_token: found.token, digest: &token_digest, issuer };
            match backend.authorize(&auth) {
                Ok(mutations) => mutations,
                Err(refusal) => return deny(DenyReason::Refused(refusal), request, Some(route)),
            }
        }
        None => Mutations::default(),
    };
    mutations.merge(route.identity.mutations(Some(&vouched.token.claims)));
    tracing::debug!(route = %route.name, token = %fingerprint(&token_digest), issuer = %issuer.name, "allow");
    let caller = Caller {
        // The configured issuer, which was checked; an issuer that checks no iss
        // (a Hasura import without `issuer`) reports none rather than an unchecked claim.
        issuer: issuer.issuer.clone(),
        subject: vouched.token.claim_str("sub").map(str::to_string),
    };
    let mut decision = allowed(policy, route, Some(caller), mutations, dry_run);
    decision.expires_at = Some(vouched.token.exp);
    decision.claims = route.identity.metadata(&vouched.token.claims);
    Decision::Allow(decision)
}

/// A revoked token, or a revocation set that could not be confirmed current
/// for `state.max_stale_seconds` under `on_stale: deny`. Reads this replica's
/// set only: the Check path never waits for the shared state.
fn revocation_check(policy: &Policy, issuer: &Issuer, token: &VerifiedToken) -> Option<DenyReason> {
    let revocations = &policy.runtime.shared.revocations;
    let now = policy.runtime.clock.now();
    if revocations.freshness(now) == Freshness::Stale(OnStale::Deny) {
        return Some(DenyReason::RevocationsStale);
    }
    revocations.check(&issuer.name, token, issuer.leeway_seconds, now).map(DenyReason::TokenRevoked)
}

/// A webhook delivery: verified, recorded and applied by `webhook`, then
/// answered to the sender (`consume`, replays, ignored types, refusals) or
/// forwarded upstream with the headers that vouch for it (`forward`).
async fn webhook_delivery(policy: &Policy, webhook: &Webhook, request: &HttpRequest) -> Decision {
    let store = policy.runtime.shared.store(&policy.runtime.clock, &policy.runtime.metrics);
    let context = webhook::Context { store: &*store, revocation: &policy.revocation, clock: &policy.runtime.clock };
    let delivered = webhook.deliver(request, &context).await;
    let result = delivered.as_ref().map_or_else(DeliveryError::kind, Receipt::kind);
    policy.runtime.metrics.record_webhook(&webhook.name, result);
    let (reason, body) = match delivered {
        Ok(receipt) if receipt.forwards() => return Decision::Allow(forwarded(policy, webhook, &receipt)),
        Ok(receipt) => {
            tracing::info!(webhook = %webhook.name, id = %escape(&receipt.id), event = %escape(&receipt.event_type), result, applied = receipt.applied, "webhook");
            let body = match receipt.http_status() {
                204 => String::new(),
                _ => serde_json::json!({ "status": result }).to_string(),
            };
            (DenyReason::WebhookAnswered(receipt), body)
        }
        Err(error) => {
            tracing::info!(webhook = %webhook.name, result, "webhook refused: {error}");
            let body = serde_json::json!({ "error": result, "error_description": error.to_string() }).to_string();
            (DenyReason::WebhookRefused(error), body)
        }
    };
    let rendered =
        RenderedDeny { http_status: reason.http_status(), content_type: "application/json", challenge: None, body };
    Decision::Deny(Denied { reason, route: Some(Arc::clone(&webhook.name)), rendered })
}

/// A first-seen delivery on its way upstream, with the headers that vouch for
/// it; client copies of every identity header (these included) are removed.
fn forwarded(policy: &Policy, webhook: &Webhook, receipt: &Receipt) -> Allowed {
    tracing::info!(webhook = %webhook.name, id = %escape(&receipt.id), event = %escape(&receipt.event_type), applied = receipt.applied, "webhook forwarded");
    let [id, event_type, verified] = webhook::FORWARD_HEADERS;
    let mut mutations = Mutations::default();
    for (name, value) in [(id, receipt.id.as_str()), (event_type, receipt.event_type.as_str()), (verified, "true")] {
        // A value that cannot be a header (a control character in a signed id) is left out, never forwarded raw.
        if crate::header::is_header_value(value) {
            mutations.set_headers.push((name.to_string(), value.to_string()));
        }
    }
    mutations.remove(policy.identity_headers.iter().cloned());
    Allowed {
        route: Arc::clone(&webhook.name),
        set_headers: mutations.set_headers,
        remove_headers: mutations.remove_headers,
        ..Default::default()
    }
}

/// No token: the backend's anonymous access, if it has one. A route with
/// requirements needs a token to meet them (a dry run only counts it).
fn anonymous(policy: &Policy, route: &Route, request: &HttpRequest) -> Decision {
    let backend = route.backend.as_ref().map(|route_backend| &*route_backend.backend);
    let needs_token = route.requirements.is_some();
    let access = backend.and_then(|backend| backend.anonymous(request)).filter(|_| !needs_token || route.dry_run);
    let Some(mut mutations) = access else {
        return deny(DenyReason::MissingToken, request, Some(route));
    };
    mutations.merge(route.identity.mutations(None));
    let dry_run = needs_token.then(|| Unmet { requirement: Requirement::Token, item: "no token".into(), scopes: None });
    Decision::Allow(allowed(policy, route, None, mutations, dry_run))
}

/// Every request that goes upstream loses the client's copies of every identity
/// header of the policy, not only the matched route's: an upstream trusting
/// `x-email` from one route must not get a spoofed one through another. Added
/// last, so that a header the route sets is not removed (Envoy applies
/// removals after sets).
fn allowed(
    policy: &Policy,
    route: &Route,
    caller: Option<Caller>,
    mut mutations: Mutations,
    dry_run: Option<Unmet>,
) -> Allowed {
    mutations.remove(policy.identity_headers.iter().cloned());
    Allowed {
        route: route.name.clone(),
        backend: route.backend.as_ref().map(|backend| backend.name.clone()),
        caller,
        set_headers: mutations.set_headers,
        remove_headers: mutations.remove_headers,
        claims: Vec::new(),
        dry_run,
        unresolved: mutations.unresolved,
        expires_at: None,
    }
}

/// A deny, rendered the way the route's backend (or the plain shape) answers.
/// (Its log line is written by the observer, within the log budget.)
fn deny(reason: DenyReason, request: &HttpRequest, route: Option<&Route>) -> Decision {
    let rendered = match route.and_then(|route| route.backend.as_ref().map(|backend| (route, backend))) {
        Some((route, backend)) => backend.backend.render_deny(&reason, request, route.error_status),
        None => plain::render(&reason),
    };
    Decision::Deny(Denied { reason, route: route.map(|route| route.name.clone()), rendered })
}
