//! The Check pipeline: request -> route -> token -> verify -> decision, and
//! the gRPC `envoy.service.auth.v3.Authorization` service around it.
//!
//! Every path ends in a decision; a bad token is a deny, never a gRPC error,
//! because Envoy treats gRPC errors as failures that `failure_mode_allow` may let through.

use std::sync::{Arc, RwLock};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};

use crate::backend::{Authenticated, Backend, ErrorFormat, Mutations};
use crate::config::{Action, TokenFrom};
use crate::decision::{Allowed, Decision, Denied, DenyReason, Identity};
use crate::extract::{ExtractError, extract};
use crate::issuer::Issuer;
use crate::policy::Policy;
use crate::request::{HttpRequest, RequestProblem};
use crate::response::check_response;
use crate::route::Route;
use crate::stats::Stats;
use crate::token_cache::{TokenDigest, digest, fingerprint};
use crate::verify::{VerifyFailure, verify};

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
        return deny(DenyReason::InvalidRequest(problem), &Context::without_route(request), None);
    }
    let Some(route) = policy.router.route(request) else {
        return deny(DenyReason::NoRoute, &Context::without_route(request), None);
    };
    let backend = policy.backend_of(route);
    let context = Context {
        request,
        route: Some(route),
        format: backend.map(|backend| backend.error_format(route.error_status, request)).unwrap_or_default(),
    };
    if request.has_path_parameters() && !route.allow_path_parameters {
        return deny(DenyReason::InvalidRequest(RequestProblem::PathParameters), &context, None);
    }
    match route.action {
        Action::Deny => deny(DenyReason::RouteDenies, &context, None),
        Action::Allow => {
            tracing::debug!(route = %route.name, path = ?request.path, "allow (no token required)");
            Decision::Allow(allowed(route, None, Mutations::default()))
        }
        Action::Authenticate => authenticate(policy, backend, &context).await,
    }
}

/// What a deny needs to know about the request it answers.
struct Context<'a> {
    request: &'a HttpRequest,
    route: Option<&'a Route>,
    format: ErrorFormat,
}

impl<'a> Context<'a> {
    fn without_route(request: &'a HttpRequest) -> Self {
        Context { request, route: None, format: ErrorFormat::default() }
    }
}

async fn authenticate(policy: &Policy, backend: Option<&Backend>, context: &Context<'_>) -> Decision {
    let (request, route) = (context.request, context.route.expect("authenticate runs on a matched route"));
    if let Some(refusal) = backend.and_then(|backend| backend.precheck(request)) {
        return deny(DenyReason::Refused(refusal), context, None);
    }
    let issuers: Vec<&Arc<Issuer>> = route.issuers.iter().map(|&index| &policy.issuers[index]).collect();
    let (token, sources) = match find_token(request, &issuers) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return match backend.and_then(|backend| backend.anonymous(request)) {
                Some(mutations) => Decision::Allow(allowed(route, None, mutations)),
                None => deny(DenyReason::MissingToken, context, None),
            };
        }
        Err(reason) => return deny(reason, context, None),
    };
    // Only issuers that read the token from where it was found may verify it.
    let candidates: Vec<&Arc<Issuer>> =
        issuers.into_iter().filter(|issuer| sources.contains(&&issuer.token_from)).collect();
    let token_digest = digest(token);
    let verified = match verify(token, &token_digest, &candidates, &policy.cache).await {
        Ok(verified) => verified,
        Err(VerifyFailure::Invalid(err)) => return deny(DenyReason::InvalidToken(err), context, Some(&token_digest)),
        Err(VerifyFailure::KeysUnavailable(issuer)) => {
            return deny(DenyReason::KeysUnavailable(issuer), context, Some(&token_digest));
        }
    };
    let issuer = policy.issuer(&verified.issuer).expect("the verifying issuer belongs to this policy");
    let mutations = match backend {
        Some(backend) => {
            let auth = Authenticated {
                request,
                token: &verified,
                raw_token: token,
                digest: &token_digest,
                issuer,
                token_from: &issuer.token_from,
            };
            match backend.authorize(&auth) {
                Ok(mutations) => mutations,
                Err(refusal) => return deny(DenyReason::Refused(refusal), context, Some(&token_digest)),
            }
        }
        None => Mutations::default(),
    };
    tracing::debug!(route = %route.name, token = %fingerprint(&token_digest), issuer = %verified.issuer, "allow");
    let identity = Identity {
        // The configured issuer, which was checked; an issuer that checks no iss
        // (a Hasura import without `issuer`) reports none rather than an unchecked claim.
        issuer: issuer.issuer.clone(),
        subject: verified.claim_str("sub").map(str::to_string),
    };
    Decision::Allow(allowed(route, Some(identity), mutations))
}

/// The token, read from every distinct location the route's issuers use, with
/// the locations it was found in. The same token in two places is one token;
/// different ones are refused: verifying one and forwarding the other would
/// let the upstream read a token nobody checked.
fn find_token<'r, 'i>(
    request: &'r HttpRequest,
    issuers: &[&'i Arc<Issuer>],
) -> Result<Option<(&'r str, Vec<&'i TokenFrom>)>, DenyReason> {
    let mut tried: Vec<&TokenFrom> = Vec::new();
    let mut found: Option<(&'r str, Vec<&'i TokenFrom>)> = None;
    for issuer in issuers {
        let source = &issuer.token_from;
        if tried.contains(&source) {
            continue;
        }
        tried.push(source);
        let Some(token) = extract(request, source).map_err(DenyReason::Unreadable)? else { continue };
        match &mut found {
            None => found = Some((token, vec![source])),
            Some((first, sources)) if *first == token => sources.push(source),
            Some(_) => return Err(DenyReason::Unreadable(ExtractError::Conflicting)),
        }
    }
    Ok(found)
}

fn allowed(route: &Route, identity: Option<Identity>, mutations: Mutations) -> Allowed {
    Allowed {
        route: route.name.clone(),
        backend: route.backend.clone(),
        identity,
        set_headers: mutations.set_headers,
        remove_headers: mutations.remove_headers,
    }
}

fn deny(reason: DenyReason, context: &Context<'_>, token: Option<&TokenDigest>) -> Decision {
    let route_name = context.route.map(|route| route.name.clone());
    tracing::info!(
        route = route_name.as_deref().unwrap_or("-"),
        method = ?context.request.method,
        path = ?context.request.path,
        status = reason.http_status(),
        reason = %reason.description(),
        token = %token.map(fingerprint).unwrap_or_else(|| "-".into()),
        "deny"
    );
    Decision::Deny(Denied { reason, route: route_name, format: context.format })
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
