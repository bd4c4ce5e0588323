//! The control plane (SPEC section 7): `portcullis.admin.v1.Admin` on its own
//! port. Inspect key state, refresh keys now, reload the policy, without a restart.

pub mod auth;
pub mod client;
mod revocations;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::authz::Authorizer;
use crate::issuer::Issuer;
use crate::proto::admin::v1::admin_server::Admin;
use crate::proto::admin::v1::{
    CacheStatus, GetStatusRequest, GetStatusResponse, IssuerStatus, ListRevocationsRequest, ListRevocationsResponse,
    RefreshKeysRequest, RefreshKeysResponse, ReloadPolicyRequest, ReloadPolicyResponse, RevokeResponse,
    RevokeSubjectRequest, RevokeTokenRequest, SkippedKey, UnrevokeRequest, UnrevokeResponse,
};
use crate::reload::{ReloadError, Reloader};

pub struct AdminService {
    authorizer: Arc<Authorizer>,
    reloader: Arc<Reloader>,
}

impl AdminService {
    pub fn new(authorizer: Arc<Authorizer>, reloader: Arc<Reloader>) -> Self {
        AdminService { authorizer, reloader }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_status(&self, _: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        self.authorizer.metrics().record_admin_call("GetStatus", "ok");
        let policy = self.authorizer.policy();
        let stats = policy.cache.stats();
        Ok(Response::new(GetStatusResponse {
            policy_generation: policy.generation,
            issuers: policy.issuers.iter().map(|issuer| issuer_status(issuer)).collect(),
            token_cache: Some(CacheStatus {
                entries: stats.entries,
                hits: stats.hits,
                misses: stats.misses,
                capacity: stats.capacity,
            }),
            ready: policy.is_ready(),
        }))
    }

    async fn refresh_keys(
        &self,
        request: Request<RefreshKeysRequest>,
    ) -> Result<Response<RefreshKeysResponse>, Status> {
        let result = self.refresh(request.into_inner().issuer).await;
        self.count("RefreshKeys", &result);
        result
    }

    async fn reload_policy(&self, _: Request<ReloadPolicyRequest>) -> Result<Response<ReloadPolicyResponse>, Status> {
        let result = self.reload().await;
        self.count("ReloadPolicy", &result);
        result
    }

    async fn revoke_subject(&self, request: Request<RevokeSubjectRequest>) -> Result<Response<RevokeResponse>, Status> {
        let result = revocations::revoke_subject(&self.authorizer.policy(), request.into_inner()).await;
        self.count("RevokeSubject", &result);
        result
    }

    async fn revoke_token(&self, request: Request<RevokeTokenRequest>) -> Result<Response<RevokeResponse>, Status> {
        let result = revocations::revoke_token(&self.authorizer.policy(), request.into_inner()).await;
        self.count("RevokeToken", &result);
        result
    }

    async fn list_revocations(
        &self,
        request: Request<ListRevocationsRequest>,
    ) -> Result<Response<ListRevocationsResponse>, Status> {
        let result = revocations::list(&self.authorizer.policy(), request.into_inner());
        self.count("ListRevocations", &result);
        result
    }

    async fn unrevoke(&self, request: Request<UnrevokeRequest>) -> Result<Response<UnrevokeResponse>, Status> {
        let result = revocations::unrevoke(&self.authorizer.policy(), request.into_inner()).await;
        self.count("Unrevoke", &result);
        result
    }
}

impl AdminService {
    fn count<T>(&self, method: &'static str, result: &Result<T, Status>) {
        let label = result.as_ref().map_or_else(|status| code_label(status.code()), |_| "ok");
        self.authorizer.metrics().record_admin_call(method, label);
    }

    async fn refresh(&self, name: String) -> Result<Response<RefreshKeysResponse>, Status> {
        let policy = self.authorizer.policy();
        let targets: Vec<_> = policy.issuers.iter().filter(|issuer| name.is_empty() || *issuer.name == *name).collect();
        if targets.is_empty() {
            let known: Vec<&str> = policy.issuers.iter().map(|issuer| &*issuer.name).collect();
            return Err(Status::not_found(format!("no issuer named {name:?} (known: {})", known.join(", "))));
        }
        let mut statuses = Vec::new();
        for issuer in targets {
            // Bypasses the unknown-kid rate limit: an operator asked for it.
            let outcome = issuer.keys.refresh().await;
            // Tokens verified by keys that just left the JWKS stop being served from cache.
            if let (Ok(_), Some(keys)) = (&outcome, issuer.keys.current()) {
                policy.cache.purge(issuer.id, |id| keys.contains_id(id));
            }
            statuses.push(issuer_status(issuer));
        }
        tracing::info!(issuer = if name.is_empty() { "(all)" } else { &name }, "keys refreshed by admin");
        Ok(Response::new(RefreshKeysResponse { issuers: statuses }))
    }

    async fn reload(&self) -> Result<Response<ReloadPolicyResponse>, Status> {
        match self.reloader.reload().await {
            Ok(done) => {
                Ok(Response::new(ReloadPolicyResponse { policy_generation: done.generation, warnings: done.warnings }))
            }
            Err(ReloadError::NoConfigFile) => Err(Status::failed_precondition(ReloadError::NoConfigFile.to_string())),
            // Logged by the reloader (one line); the caller gets every problem.
            Err(ReloadError::Invalid(err)) => Err(Status::invalid_argument(err.to_string())),
        }
    }
}

/// The `result` label of an admin call that failed.
fn code_label(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::NotFound => "not_found",
        tonic::Code::InvalidArgument => "invalid_argument",
        tonic::Code::FailedPrecondition => "failed_precondition",
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    }
}

fn issuer_status(issuer: &Issuer) -> IssuerStatus {
    let status = issuer.keys.status();
    IssuerStatus {
        name: issuer.name.to_string(),
        issuer: issuer.issuer.clone().unwrap_or_default(),
        key_ids: status.key_ids,
        last_refresh: status.last_refresh.map(prost_types::Timestamp::from),
        last_error: status.last_error.unwrap_or_default(),
        jwks_uri: status.jwks_uri.unwrap_or_default(),
        has_keys: issuer.keys.current().is_some(),
        fetches: status.fetches,
        skipped_keys: status
            .skipped
            .iter()
            .map(|skipped| SkippedKey {
                kid: skipped.kid.clone().unwrap_or_default(),
                index: u32::try_from(skipped.index).unwrap_or(u32::MAX),
                reason: skipped.reason.to_string(),
            })
            .collect(),
        stale: status.stale,
    }
}
