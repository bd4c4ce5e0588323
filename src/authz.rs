//! The Check pipeline: request -> route -> token -> verify -> decision, and
//! the gRPC `envoy.service.auth.v3.Authorization` service around it.
//!
//! Every path ends in a decision; a bad token is a deny, never a gRPC error,
//! because Envoy treats gRPC errors as failures that `failure_mode_allow` may let through.

use std::sync::{Arc, RwLock};

use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};

use crate::config::{Action, TokenFrom};
use crate::decision::{Allowed, Decision, Denied, DenyReason, Identity};
use crate::extract::extract;
use crate::issuer::Issuer;
use crate::policy::Policy;
use crate::request::HttpRequest;
use crate::response::check_response;
use crate::route::Route;
use crate::token_cache::{digest, fingerprint};
use crate::verify::{VerifyFailure, verify};

/// Decides requests against the current policy, which can be swapped live.
pub struct Authorizer {
    policy: RwLock<Arc<Policy>>,
}

impl Authorizer {
    pub fn new(policy: Policy) -> Self {
        Authorizer { policy: RwLock::new(Arc::new(policy)) }
    }

    /// The policy in force; a Check holds its own `Arc`, so a swap never affects it midway.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("policy lock poisoned").clone()
    }

    /// Installs a new policy; returns the old one.
    pub fn swap(&self, policy: Policy) -> Arc<Policy> {
        std::mem::replace(&mut *self.policy.write().expect("policy lock poisoned"), Arc::new(policy))
    }

    pub async fn decide(&self, request: &HttpRequest) -> Decision {
        let policy = self.policy();
        let Some(route) = policy.router.route(request) else {
            return deny(DenyReason::NoRoute, None, None, request);
        };
        match route.action {
            Action::Deny => deny(DenyReason::RouteDenies, Some(route), None, request),
            Action::Allow => {
                tracing::debug!(route = %route.name, path = %request.path, "allow (no token required)");
                Decision::Allow(allowed(route, None))
            }
            Action::Authenticate => authenticate(&policy, route, request).await,
        }
    }
}

async fn authenticate(policy: &Policy, route: &Route, request: &HttpRequest) -> Decision {
    let issuers: Vec<&Arc<Issuer>> = route.issuers.iter().map(|&index| &policy.issuers[index]).collect();
    let (token, source) = match find_token(request, &issuers) {
        Ok(Some(found)) => found,
        Ok(None) => return deny(DenyReason::MissingToken, Some(route), None, request),
        Err(reason) => return deny(reason, Some(route), None, request),
    };
    // Only issuers that read the token from where it was found may verify it.
    let candidates: Vec<&Arc<Issuer>> = issuers.into_iter().filter(|issuer| &issuer.token_from == source).collect();
    let token_digest = digest(token);
    match verify(token, &token_digest, &candidates, &policy.cache).await {
        Ok(verified) => {
            let identity = Identity {
                issuer: verified.claim_str("iss").unwrap_or_default().to_string(),
                subject: verified.claim_str("sub").map(str::to_string),
            };
            let decision = Decision::Allow(allowed(route, Some(identity)));
            tracing::debug!(route = %route.name, token = %fingerprint(&token_digest), issuer = %verified.issuer, "allow");
            decision
        }
        Err(VerifyFailure::Invalid(err)) => {
            deny(DenyReason::InvalidToken(err), Some(route), Some(&token_digest), request)
        }
        Err(VerifyFailure::KeysUnavailable(issuer)) => {
            deny(DenyReason::KeysUnavailable(issuer), Some(route), Some(&token_digest), request)
        }
    }
}

/// The first token found, trying each distinct location the route's issuers read.
fn find_token<'r, 'i>(
    request: &'r HttpRequest,
    issuers: &[&'i Arc<Issuer>],
) -> Result<Option<(&'r str, &'i TokenFrom)>, DenyReason> {
    let mut tried: Vec<&TokenFrom> = Vec::new();
    for issuer in issuers {
        let source = &issuer.token_from;
        if tried.contains(&source) {
            continue;
        }
        tried.push(source);
        if let Some(token) = extract(request, source).map_err(DenyReason::Unreadable)? {
            return Ok(Some((token, source)));
        }
    }
    Ok(None)
}

fn allowed(route: &Route, identity: Option<Identity>) -> Allowed {
    Allowed { route: route.name.clone(), backend: route.backend.clone(), identity, ..Default::default() }
}

fn deny(
    reason: DenyReason,
    route: Option<&Route>,
    token: Option<&crate::token_cache::TokenDigest>,
    request: &HttpRequest,
) -> Decision {
    let route_name = route.map(|route| route.name.clone());
    tracing::info!(
        route = route_name.as_deref().unwrap_or("-"),
        method = %request.method,
        path = %request.path,
        status = reason.http_status(),
        reason = %reason.description(),
        token = %token.map(fingerprint).unwrap_or_else(|| "-".into()),
        "deny"
    );
    Decision::Deny(Denied { reason, route: route_name })
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
        let http = HttpRequest::from_check(request.get_ref());
        let decision = self.authorizer.decide(&http).await;
        Ok(tonic::Response::new(check_response(&decision)))
    }
}
