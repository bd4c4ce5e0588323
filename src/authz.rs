//! The Check pipeline, in request order: CheckRequest -> request -> route ->
//! extract -> vouch (cache, verify) -> backend -> decision -> CheckResponse,
//! and the gRPC `envoy.service.auth.v3.Authorization` service around it.
//!
//! Every path ends in a decision; a bad token is a deny, never a gRPC error,
//! because Envoy treats gRPC errors as failures that `failure_mode_allow` may let through.

use std::sync::{Arc, RwLock};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};

use crate::authenticate::vouch;
use crate::backend::{Authenticated, Mutations, plain};
use crate::config::Action;
use crate::decision::{Allowed, Caller, Decision, Denied, DenyReason};
use crate::escape::escape;
use crate::issuer::Issuer;
use crate::policy::Policy;
use crate::request::{HttpRequest, RequestProblem};
use crate::response::check_response;
use crate::route::Route;
use crate::rules::{Facts, Requirement, Unmet};
use crate::stats::Stats;
use crate::token::{TokenDigest, digest, fingerprint};
use crate::verify::VerifyFailure;

/// Decides requests against the current policy, which can be swapped live.
pub struct Authorizer {
    policy: RwLock<Arc<Policy>>,
    /// Process-wide counters for /metrics; they survive reloads.
    pub stats: Stats,
}

impl Authorizer {
    pub fn new(policy: Policy) -> Self {
        Authorizer { policy: RwLock::new(Arc::new(policy)), stats: Stats::default() }
    }

    /// The policy in force; a Check holds its own `Arc`, so a swap never affects it midway.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock poisoned").clone()
    }

    /// Installs a new policy; returns the old one.
    pub fn swap(&self, policy: Policy) -> Arc<Policy> {
        std::mem::replace(&mut *self.policy.write().expect("policy lock poisoned"), Arc::new(policy))
    }

    /// Decides a CheckRequest as Envoy sent it (read within the policy's limits).
    pub async fn decide_check(&self, check: &CheckRequest) -> Decision {
        let policy = self.policy();
        let request = HttpRequest::from_check(check, &policy.limits);
        decide(&policy, &request).await
    }

    pub async fn decide(&self, request: &HttpRequest) -> Decision {
        decide(&self.policy(), request).await
    }
}

async fn decide(policy: &Policy, request: &HttpRequest) -> Decision {
    if let Some(problem) = request.problem() {
        return deny(DenyReason::InvalidRequest(problem), request, None, None);
    }
    let Some(route) = policy.router.route(request) else {
        return deny(DenyReason::NoRoute, request, None, None);
    };
    if request.has_path_parameters() && !route.allow_path_parameters {
        return deny(DenyReason::InvalidRequest(RequestProblem::PathParameters), request, Some(route), None);
    }
    match route.action {
        Action::Deny => deny(DenyReason::RouteDenies, request, Some(route), None),
        Action::Allow => {
            tracing::debug!(route = %route.name, path = ?request.path, "allow (no token required)");
            // Client copies of the route's identity headers are removed all the same.
            Decision::Allow(allowed(route, None, route.identity.mutations(None), None))
        }
        Action::Authenticate => authenticate(policy, route, request).await,
    }
}

async fn authenticate(policy: &Policy, route: &Route, request: &HttpRequest) -> Decision {
    let backend = route.backend.as_ref().map(|route_backend| &*route_backend.backend);
    if let Some(refusal) = backend.and_then(|backend| backend.precheck(request)) {
        return deny(DenyReason::Refused(refusal), request, Some(route), None);
    }
    let found = match route.extractor.extract(request) {
        Ok(Some(found)) => found,
        Ok(None) => return anonymous(route, request),
        Err(err) => return deny(DenyReason::Unreadable(err), request, Some(route), None),
    };
    // Only issuers that read the token where it was found may verify it.
    let candidates: Vec<&Arc<Issuer>> =
        found.readers.iter().map(|&position| &policy.issuers[route.issuers[position]]).collect();
    let token_digest = digest(found.token);
    let vouched = match vouch(&policy.cache, &policy.runtime.clock, found.token, &token_digest, &candidates).await {
        Ok(vouched) => vouched,
        Err(VerifyFailure::Invalid(err)) => {
            return deny(DenyReason::InvalidToken(err), request, Some(route), Some(&token_digest));
        }
        Err(VerifyFailure::KeysUnavailable(issuer)) => {
            return deny(DenyReason::KeysUnavailable(issuer), request, Some(route), Some(&token_digest));
        }
    };
    let issuer = vouched.issuer;
    let mut dry_run = None;
    if let Some(requirements) = &route.requirements {
        let facts = Facts { token: &vouched.token, request, route: &route.name, now: policy.runtime.clock.now() };
        if let Err(unmet) = requirements.check(&facts) {
            if !route.dry_run {
                return deny(DenyReason::RequirementUnmet(unmet), request, Some(route), Some(&token_digest));
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
                Err(refusal) => return deny(DenyReason::Refused(refusal), request, Some(route), Some(&token_digest)),
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
    let mut decision = allowed(route, Some(caller), mutations, dry_run);
    decision.claims = route.identity.metadata(&vouched.token.claims);
    Decision::Allow(decision)
}

/// No token: the backend's anonymous access, if it has one. A route with
/// requirements needs a token to meet them (a dry run only counts it).
fn anonymous(route: &Route, request: &HttpRequest) -> Decision {
    let backend = route.backend.as_ref().map(|route_backend| &*route_backend.backend);
    let needs_token = route.requirements.is_some();
    let access = backend.and_then(|backend| backend.anonymous(request)).filter(|_| !needs_token || route.dry_run);
    let Some(mut mutations) = access else {
        return deny(DenyReason::MissingToken, request, Some(route), None);
    };
    mutations.merge(route.identity.mutations(None));
    let dry_run = needs_token.then(|| Unmet { requirement: Requirement::Token, item: "no token".into(), scopes: None });
    Decision::Allow(allowed(route, None, mutations, dry_run))
}

fn allowed(route: &Route, caller: Option<Caller>, mutations: Mutations, dry_run: Option<Unmet>) -> Allowed {
    if let Some(unmet) = &dry_run {
        tracing::info!(route = %route.name, requirement = %unmet.description(), "would deny (dry run): allowed");
    }
    Allowed {
        route: route.name.clone(),
        backend: route.backend.as_ref().map(|backend| backend.name.clone()),
        caller,
        set_headers: mutations.set_headers,
        remove_headers: mutations.remove_headers,
        claims: Vec::new(),
        dry_run,
    }
}

/// A deny, rendered the way the route's backend (or the plain shape) answers.
fn deny(reason: DenyReason, request: &HttpRequest, route: Option<&Route>, token: Option<&TokenDigest>) -> Decision {
    tracing::info!(
        route = route.map_or("-", |route| route.name.as_str()),
        method = %escape(&request.method),
        path = %escape(&request.path),
        status = reason.http_status(),
        reason = %reason.description(),
        token = %token.map(fingerprint).unwrap_or_else(|| "-".into()),
        "deny"
    );
    let rendered = match route.and_then(|route| route.backend.as_ref().map(|backend| (route, backend))) {
        Some((route, backend)) => backend.backend.render_deny(&reason, request, route.error_status),
        None => plain::render(&reason),
    };
    Decision::Deny(Denied { reason, route: route.map(|route| route.name.clone()), rendered })
}

/// The gRPC face of the [`Authorizer`].
#[derive(Clone)]
pub struct AuthzService {
    authorizer: Arc<Authorizer>,
}

impl AuthzService {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        AuthzService { authorizer }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let started = std::time::Instant::now();
        let decision = self.authorizer.decide_check(request.get_ref()).await;
        self.authorizer.stats.record(&decision, started.elapsed());
        Ok(tonic::Response::new(check_response(&decision)))
    }
}
