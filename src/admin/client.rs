//! `portcullis admin status|refresh [ISSUER]|reload|revoke-subject|revoke-token|
//! revocations|unrevoke`: the Admin API from the command line, so operators need no grpcurl.

use std::time::{Duration, SystemTime};

use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use crate::cli::{AdminArgs, AdminCommand, EXIT_INVALID, EXIT_OK, EXIT_RUNTIME, OutputFormat};
use crate::proto::admin::v1::admin_client::AdminClient;
use crate::proto::admin::v1::{
    GetStatusRequest, GetStatusResponse, IssuerStatus, ListRevocationsRequest, RefreshKeysRequest, ReloadPolicyRequest,
    Revocation, RevokeSubjectRequest, RevokeTokenRequest, UnrevokeRequest,
};

pub async fn run(args: AdminArgs) -> u8 {
    match call(&args).await {
        Ok(output) => {
            print!("{output}");
            EXIT_OK
        }
        Err(status) => {
            eprintln!("admin {}: {} ({:?})", args.command.name(), status.message(), status.code());
            match status.code() {
                tonic::Code::InvalidArgument
                | tonic::Code::NotFound
                | tonic::Code::FailedPrecondition
                | tonic::Code::Unauthenticated => EXIT_INVALID,
                _ => EXIT_RUNTIME,
            }
        }
    }
}

async fn call(args: &AdminArgs) -> Result<String, tonic::Status> {
    let url = if args.addr.contains("://") { args.addr.clone() } else { format!("http://{}", args.addr) };
    let channel = Endpoint::from_shared(url)
        .map_err(|err| tonic::Status::invalid_argument(format!("--addr: {err}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|err| tonic::Status::unavailable(format!("cannot reach {}: {err}", args.addr)))?;
    let bearer = match &args.token {
        Some(token) => Some(
            MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| tonic::Status::invalid_argument("--token has characters a header cannot carry"))?,
        ),
        None => None,
    };
    let mut client = AdminClient::with_interceptor(channel, move |mut request: Request<()>| {
        if let Some(value) = &bearer {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    });
    match &args.command {
        AdminCommand::Status { output } => {
            let status = client.get_status(GetStatusRequest {}).await?.into_inner();
            Ok(match output {
                OutputFormat::Text => status_text(&status),
                OutputFormat::Json => format!("{}\n", status_json(&status)),
            })
        }
        AdminCommand::Refresh { issuer } => {
            let request = RefreshKeysRequest { issuer: issuer.clone().unwrap_or_default() };
            let refreshed = client.refresh_keys(request).await?.into_inner();
            let out = issuers(&refreshed.issuers);
            // A failed fetch keeps the old keys and is not an RPC error; a script
            // that refreshes (after a key rotation, say) must still learn of it.
            let failed: Vec<&str> = refreshed
                .issuers
                .iter()
                .filter(|issuer| !issuer.last_error.is_empty())
                .map(|issuer| &*issuer.name)
                .collect();
            if failed.is_empty() {
                Ok(out)
            } else {
                let names = failed.join(", ");
                Err(tonic::Status::unavailable(format!(
                    "fetching the keys of {names} failed; the old keys stay\n{out}"
                )))
            }
        }
        AdminCommand::Reload => {
            let reloaded = client.reload_policy(ReloadPolicyRequest {}).await?.into_inner();
            let mut out = format!("reloaded: policy generation {}\n", reloaded.policy_generation);
            for warning in reloaded.warnings {
                out.push_str(&format!("warning: {warning}\n"));
            }
            Ok(out)
        }
        AdminCommand::RevokeSubject { issuer, subject, issued_before } => {
            let issued_before = issued_before.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 });
            let request = RevokeSubjectRequest { issuer: issuer.clone(), subject: subject.clone(), issued_before };
            let revoked = client.revoke_subject(request).await?.into_inner();
            Ok(format!("revoked: {}\n", revoked.revocation.as_ref().map(revocation_line).unwrap_or_default()))
        }
        AdminCommand::RevokeToken { issuer, jti, expires } => {
            let expires = expires.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 });
            let request = RevokeTokenRequest { issuer: issuer.clone(), jti: jti.clone(), expires };
            let revoked = client.revoke_token(request).await?.into_inner();
            Ok(format!("revoked: {}\n", revoked.revocation.as_ref().map(revocation_line).unwrap_or_default()))
        }
        AdminCommand::Revocations { issuer } => {
            let request = ListRevocationsRequest { issuer: issuer.clone().unwrap_or_default() };
            let list = client.list_revocations(request).await?.into_inner();
            let mut out = format!(
                "state {}  current {}  staleness {}s  entries {}\n",
                list.state,
                list.current,
                list.staleness_seconds,
                list.revocations.len()
            );
            for entry in &list.revocations {
                out.push_str(&revocation_line(entry));
                out.push('\n');
            }
            Ok(out)
        }
        AdminCommand::Unrevoke { issuer, subject, jti } => {
            let request = UnrevokeRequest {
                issuer: issuer.clone(),
                subject: subject.clone().unwrap_or_default(),
                jti: jti.clone().unwrap_or_default(),
            };
            client.unrevoke(request).await?;
            Ok("unrevoked\n".to_string())
        }
    }
}

/// `issuer subject <sub> issued-before <t> expires <t>` or `issuer jti <jti> expires <t>` (Unix seconds).
fn revocation_line(entry: &Revocation) -> String {
    let at = |time: &Option<prost_types::Timestamp>| time.as_ref().map_or(0, |time| time.seconds);
    if entry.jti.is_empty() {
        format!(
            "{} subject {} issued-before {} expires {}",
            entry.issuer,
            entry.subject,
            at(&entry.issued_before),
            at(&entry.expires)
        )
    } else {
        format!("{} jti {} expires {}", entry.issuer, entry.jti, at(&entry.expires))
    }
}

fn status_text(status: &GetStatusResponse) -> String {
    let mut out = format!("policy generation {}  ready {}\n", status.policy_generation, status.ready);
    if let Some(cache) = &status.token_cache {
        out.push_str(&format!(
            "token cache: {} entries (capacity {}), {} hits, {} misses\n",
            cache.entries, cache.capacity, cache.hits, cache.misses
        ));
    }
    out.push_str(&issuers(&status.issuers));
    out
}

/// GetStatus as one JSON object with the proto's field names (proto3 JSON
/// mapping: timestamps as RFC 3339, 64-bit counters as numbers here, since
/// they stay far below 2^53), for scripts and monitoring probes.
fn status_json(status: &GetStatusResponse) -> serde_json::Value {
    let issuers: Vec<serde_json::Value> = status
        .issuers
        .iter()
        .map(|issuer| {
            let last_refresh = issuer
                .last_refresh
                .as_ref()
                .and_then(|at| chrono::DateTime::from_timestamp(at.seconds, at.nanos.max(0) as u32))
                .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            serde_json::json!({
                "name": issuer.name,
                "issuer": issuer.issuer,
                "key_ids": issuer.key_ids,
                "has_keys": issuer.has_keys,
                "stale": issuer.stale,
                "last_refresh": last_refresh,
                "last_error": issuer.last_error,
                "jwks_uri": issuer.jwks_uri,
                "fetches": issuer.fetches,
                "skipped_keys": issuer.skipped_keys.iter().map(|skipped| serde_json::json!({
                    "kid": skipped.kid, "index": skipped.index, "reason": skipped.reason
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "policy_generation": status.policy_generation,
        "ready": status.ready,
        "token_cache": status.token_cache.as_ref().map(|cache| serde_json::json!({
            "entries": cache.entries, "capacity": cache.capacity, "hits": cache.hits, "misses": cache.misses
        })),
        "issuers": issuers,
    })
}

fn issuers(list: &[IssuerStatus]) -> String {
    let mut out = String::new();
    for issuer in list {
        let age = issuer
            .last_refresh
            .as_ref()
            .and_then(|at| SystemTime::try_from(*at).ok())
            .and_then(|at| at.elapsed().ok())
            .map_or("never".to_string(), |age| format!("{}s ago", age.as_secs()));
        out.push_str(&format!(
            "issuer {} ({})\n",
            issuer.name,
            if issuer.issuer.is_empty() { "any iss" } else { &issuer.issuer }
        ));
        out.push_str(&format!(
            "  keys: {}\n",
            if issuer.key_ids.is_empty() { "(none)".into() } else { issuer.key_ids.join(", ") }
        ));
        out.push_str(&format!("  last refresh: {age}; fetches: {}\n", issuer.fetches));
        if issuer.stale {
            out.push_str("  stale: yes (past refresh.max_stale_seconds; tokens get 503 until a fetch succeeds)\n");
        }
        for skipped in &issuer.skipped_keys {
            let key = if skipped.kid.is_empty() { format!("#{}", skipped.index) } else { skipped.kid.clone() };
            out.push_str(&format!("  skipped key {key}: {}\n", skipped.reason));
        }
        if !issuer.jwks_uri.is_empty() {
            out.push_str(&format!("  jwks: {}\n", issuer.jwks_uri));
        }
        if !issuer.last_error.is_empty() {
            out.push_str(&format!("  last error: {}\n", issuer.last_error));
        }
    }
    out
}
