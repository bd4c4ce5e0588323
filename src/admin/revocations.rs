//! The Admin API's revocation calls: validate, publish through the shared
//! state (so every replica applies them), answer. A call is refused when the
//! state cannot record it (UNAVAILABLE): an operator must never believe a
//! revocation is in force when it is not.

use std::time::{Duration, UNIX_EPOCH};

use tonic::{Response, Status};

use crate::policy::Policy;
use crate::proto::admin::v1::{
    ListRevocationsRequest, ListRevocationsResponse, Revocation, RevokeResponse, RevokeSubjectRequest,
    RevokeTokenRequest, UnrevokeRequest, UnrevokeResponse,
};
use crate::revocation::{Change, Entry, Freshness};

pub async fn revoke_subject(
    policy: &Policy,
    request: RevokeSubjectRequest,
) -> Result<Response<RevokeResponse>, Status> {
    let leeway = issuer_leeway(policy, &request.issuer)?;
    let subject = required(&request.subject, "subject")?;
    let now = policy.runtime.clock.now();
    let cutoff = request.issued_before.map_or(Ok(now), seconds)?;
    let change = policy.revocation.revoke_subject(&request.issuer, subject, cutoff, leeway);
    publish(policy, &change).await?;
    tracing::info!(issuer = %request.issuer, subject = %crate::escape::escape(subject), cutoff, "subject revoked by admin");
    Ok(Response::new(RevokeResponse { revocation: Some(revocation(&change)) }))
}

pub async fn revoke_token(policy: &Policy, request: RevokeTokenRequest) -> Result<Response<RevokeResponse>, Status> {
    let leeway = issuer_leeway(policy, &request.issuer)?;
    let jti = required(&request.jti, "jti")?;
    let now = policy.runtime.clock.now();
    let default_expiry = now.saturating_add(policy.revocation.max_token_lifetime_seconds);
    let expires = request.expires.map_or(Ok(default_expiry), seconds)?.saturating_add(leeway);
    let change = Change::RevokeToken { issuer: request.issuer.clone(), jti: jti.to_string(), expires };
    publish(policy, &change).await?;
    tracing::info!(issuer = %request.issuer, jti = %crate::escape::escape(jti), "token revoked by admin");
    Ok(Response::new(RevokeResponse { revocation: Some(revocation(&change)) }))
}

pub fn list(policy: &Policy, request: ListRevocationsRequest) -> Result<Response<ListRevocationsResponse>, Status> {
    if !request.issuer.is_empty() {
        issuer_leeway(policy, &request.issuer)?;
    }
    let shared = &policy.runtime.shared;
    let now = policy.runtime.clock.now();
    let revocations = shared
        .revocations
        .list(now)
        .into_iter()
        .map(|entry| match entry {
            Entry::Subject { issuer, subject, cutoff, expires } => {
                revocation(&Change::RevokeSubject { issuer, subject, cutoff, expires })
            }
            Entry::Token { issuer, jti, expires } => revocation(&Change::RevokeToken { issuer, jti, expires }),
        })
        .filter(|entry| request.issuer.is_empty() || entry.issuer == request.issuer)
        .collect();
    Ok(Response::new(ListRevocationsResponse {
        revocations,
        state: shared.store(&policy.runtime.clock, &policy.runtime.metrics).kind().to_string(),
        current: shared.revocations.freshness(now) == Freshness::Current,
        staleness_seconds: shared.revocations.staleness(now),
    }))
}

pub async fn unrevoke(policy: &Policy, request: UnrevokeRequest) -> Result<Response<UnrevokeResponse>, Status> {
    issuer_leeway(policy, &request.issuer)?;
    let issuer = request.issuer.clone();
    let change = match (request.subject.is_empty(), request.jti.is_empty()) {
        (false, true) => Change::UnrevokeSubject { issuer, subject: request.subject.clone() },
        (true, false) => Change::UnrevokeToken { issuer, jti: request.jti.clone() },
        _ => return Err(Status::invalid_argument("give exactly one of subject and jti")),
    };
    publish(policy, &change).await?;
    tracing::info!(issuer = %request.issuer, "revocation removed by admin");
    Ok(Response::new(UnrevokeResponse {}))
}

async fn publish(policy: &Policy, change: &Change) -> Result<(), Status> {
    let store = policy.runtime.shared.store(&policy.runtime.clock, &policy.runtime.metrics);
    store.publish(change).await.map_err(|err| Status::unavailable(err.to_string()))
}

/// The leeway of the issuer named `name`, or NOT_FOUND naming the known ones.
fn issuer_leeway(policy: &Policy, name: &str) -> Result<u64, Status> {
    match policy.issuer(name) {
        Some(issuer) => Ok(issuer.leeway_seconds),
        None => {
            let known: Vec<&str> = policy.issuers.iter().map(|issuer| &*issuer.name).collect();
            Err(Status::not_found(format!("no issuer named {name:?} (known: {})", known.join(", "))))
        }
    }
}

fn required<'a>(value: &'a str, name: &str) -> Result<&'a str, Status> {
    if value.is_empty() { Err(Status::invalid_argument(format!("{name} is required"))) } else { Ok(value) }
}

fn seconds(at: prost_types::Timestamp) -> Result<u64, Status> {
    u64::try_from(at.seconds).map_err(|_| Status::invalid_argument("a time before 1970"))
}

fn timestamp(seconds: u64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(UNIX_EPOCH + Duration::from_secs(seconds))
}

fn revocation(change: &Change) -> Revocation {
    match change {
        Change::RevokeSubject { issuer, subject, cutoff, expires } => Revocation {
            issuer: issuer.clone(),
            subject: subject.clone(),
            issued_before: Some(timestamp(*cutoff)),
            expires: Some(timestamp(*expires)),
            ..Default::default()
        },
        Change::RevokeToken { issuer, jti, expires } => Revocation {
            issuer: issuer.clone(),
            jti: jti.clone(),
            expires: Some(timestamp(*expires)),
            ..Default::default()
        },
        Change::UnrevokeSubject { issuer, subject } => {
            Revocation { issuer: issuer.clone(), subject: subject.clone(), ..Default::default() }
        }
        Change::UnrevokeToken { issuer, jti } => {
            Revocation { issuer: issuer.clone(), jti: jti.clone(), ..Default::default() }
        }
    }
}
