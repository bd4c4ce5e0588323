//! The human summary `check-config` prints for a compiled policy: what was
//! understood, not what was written. Secrets are never printed, only what they
//! allow; key URLs are redacted.

use std::fmt::Write;

use super::Policy;
use crate::config::{Action, DeniesLogged, TokenFrom};
use crate::issuer::Issuer;
use crate::keys::{HMAC_ALGORITHMS, KeySource, hmac_algorithms_for, hmac_min_secret_bytes, redact_url};
use crate::route::Route;
use crate::state::StateSettings;
use crate::webhook::Verifier;

pub fn summary(policy: &Policy) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config OK");
    let listen = &policy.listen;
    let _ = write!(out, "listen: authz {}, admin {}, http {}", listen.authz, listen.admin, listen.http);
    match listen.http_authz {
        Some(http_authz) => {
            let prefix = &policy.faces.path_prefix;
            let _ = writeln!(out, ", http_authz {http_authz} (Envoy http_service under {prefix}, forward auth)");
        }
        None => {
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(out, "token cache: {} entries", policy.cache.capacity());
    let _ = writeln!(out, "decision log: {}", decision_log_line(policy));
    let _ = writeln!(out, "issuers ({}):", policy.issuers.len());
    for issuer in &policy.issuers {
        let _ = writeln!(out, "  {}", issuer_line(issuer));
    }
    let names: Vec<&str> = policy.backends.keys().map(String::as_str).collect();
    match names.is_empty() {
        true => out.push_str("backends: none\n"),
        false => {
            let _ = writeln!(out, "backends ({}): {}", names.len(), names.join(", "));
        }
    }
    let routes = policy.router.routes();
    let _ = writeln!(out, "routes ({}, first match wins; no match = 403):", routes.len());
    for route in routes {
        let _ = writeln!(out, "  {}", route_line(policy, route));
        for detail in route_details(route) {
            let _ = writeln!(out, "    {detail}");
        }
    }
    out.push_str(&events(policy));
    if !policy.auth_hooks.is_empty() {
        let _ = writeln!(out, "auth hooks ({}, Hasura's auth webhook on listen.http_authz):", policy.auth_hooks.len());
        for hook in &policy.auth_hooks {
            let line = route_line(policy, &hook.route);
            let _ = writeln!(out, "  {} {}", hook.path, line.split_once(" => ").map_or("", |(_, rest)| rest));
        }
    }
    if !policy.identity_headers.is_empty() {
        let names = policy.identity_headers.join(", ");
        let _ = writeln!(out, "identity headers (client copies removed on every route): {names}");
    }
    out.push_str(&not_checked(policy));
    out
}

/// Webhooks, event actions and a shared state, when configured (nothing otherwise).
fn events(policy: &Policy) -> String {
    let mut out = String::new();
    if !policy.webhooks.is_empty() {
        let _ = writeln!(out, "webhooks ({}, matched before routes):", policy.webhooks.len());
        for webhook in &policy.webhooks {
            let kind = match &webhook.verifier {
                Verifier::Kinde(issuer) => format!("kinde (keys of issuer {})", issuer.name),
                Verifier::StandardWebhooks(_) => "standard_webhooks".to_string(),
                Verifier::Svix(_) => "svix".to_string(),
                Verifier::Workos(_) => "workos".to_string(),
            };
            let events = webhook.events.as_ref().map_or("every type".to_string(), |events| events.join(", "));
            let _ = writeln!(
                out,
                "  {}: POST {} | {kind} | max age {}s | events: {events} | {:?}",
                webhook.name, webhook.path, webhook.max_age_seconds, webhook.mode
            );
        }
    }
    for action in &policy.revocation.on_event {
        let condition = action.if_true.as_ref().map(|path| format!(" if {}", path.as_str())).unwrap_or_default();
        let _ = writeln!(
            out,
            "on {} {}{condition}: revoke subject {} of issuer {}",
            action.webhook,
            action.event_type,
            action.subject.as_str(),
            action.issuer
        );
    }
    if let StateSettings::Redis(redis) = &policy.state {
        let _ = writeln!(
            out,
            "state: redis {} (prefix {}) | stale after {}s: {:?}",
            redact_url(&redis.url),
            redis.key_prefix,
            redis.max_stale_seconds,
            redis.on_stale
        );
    }
    out
}

/// What a policy compiled without secrets did not read, by YAML path: empty
/// for one compiled with them.
pub fn not_checked(policy: &Policy) -> String {
    let mut out = String::new();
    let tls = policy.listen.tls.is_some() && !policy.unresolved.reading;
    if policy.unresolved.values.is_empty() && !tls {
        return out;
    }
    let _ = writeln!(out, "not checked (secret: not read, so neither is what depends on it):");
    for value in &policy.unresolved.values {
        let _ = writeln!(out, "  {}: {}", value.path, value.written());
    }
    if tls {
        let _ = writeln!(out, "  listen.tls: certificate and key files");
    }
    out
}

fn issuer_line(issuer: &Issuer) -> String {
    let keys = match &issuer.source {
        KeySource::Secret(secret) => secret_summary(secret.len()),
        KeySource::Jwks(Some(uri)) => format!("JWKS {}", redact_url(uri)),
        KeySource::Jwks(None) => "JWKS via OIDC discovery".to_string(),
        KeySource::PublicKey { kind, .. } => format!("PEM public key ({kind:?})"),
        KeySource::Unresolved(secret) => format!("shared secret {} (not checked)", secret.written()),
    };
    let audiences = issuer.audiences.as_ref().map_or("any".to_string(), |list| list.join(", "));
    let from = match &issuer.token_from {
        TokenFrom::Header { header, prefix: Some(prefix) } => format!("header {header} (prefix {prefix:?})"),
        TokenFrom::Header { header, prefix: None } => format!("header {header}"),
        TokenFrom::Cookie { cookie } => format!("cookie {cookie}"),
    };
    let iss = issuer.issuer.as_deref().unwrap_or("any (not checked, as Hasura)");
    let hasura = if issuer.imported { " | Hasura claims from hasura_jwt_secret" } else { "" };
    format!("{}: iss {iss} | keys: {keys} | aud: {audiences} | token from {from}{hasura}", issuer.name)
}

/// Which HS algorithms the secret may verify, and what the others would need.
fn secret_summary(len: usize) -> String {
    let fits: Vec<String> = hmac_algorithms_for(len).iter().map(|alg| format!("{alg:?}")).collect();
    let short: Vec<String> = HMAC_ALGORITHMS
        .iter()
        .filter(|alg| len < hmac_min_secret_bytes(**alg))
        .map(|alg| format!("{alg:?} needs {} bytes", hmac_min_secret_bytes(*alg)))
        .collect();
    let mut text = format!("shared secret of {len} bytes: {}", fits.join(" "));
    if !short.is_empty() {
        text.push_str(&format!(" ({})", short.join(", ")));
    }
    text
}

fn route_line(policy: &Policy, route: &Route) -> String {
    let action = match route.action {
        Action::Allow => "allow".to_string(),
        Action::Deny => "deny".to_string(),
        // "any issuer" only where there is a choice: the only issuer is named.
        Action::Authenticate if route.issuers.len() == policy.issuers.len() && policy.issuers.len() > 1 => {
            "authenticate (any issuer)".to_string()
        }
        Action::Authenticate => {
            let names: Vec<&str> = route.issuers.iter().map(|&id| &*policy.issuers[id].name).collect();
            format!("authenticate ({})", names.join(", "))
        }
    };
    let backend = route.backend.as_ref().map(|b| format!(" -> backend {}", b.name)).unwrap_or_default();
    let mode = if route.dry_run { " [mode: dry_run, not enforced]" } else { "" };
    format!("{}: {} => {action}{backend}{mode}", route.name, route.describe_match())
}

/// What a route asks of a token and hands the upstream, one line each.
fn route_details(route: &Route) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(requirements) = &route.requirements {
        lines.push(format!("require: {}", requirements.summary().join("; ")));
    }
    let headers: Vec<String> =
        route.identity.headers().map(|(name, claim)| format!("{name} <- {}", claim.as_str())).collect();
    if !headers.is_empty() {
        lines.push(format!("headers: {}", headers.join(", ")));
    }
    lines
}

fn decision_log_line(policy: &Policy) -> String {
    let Some(log) = &policy.decision_log else { return "off".to_string() };
    let denies = match log.denies {
        DeniesLogged::All => "every deny",
        DeniesLogged::Sampled => "denies sampled too",
    };
    format!("to {} (allows sampled at {}, {denies})", log.to, log.sample)
}
