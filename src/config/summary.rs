//! The human summary `check-config` prints for a valid config. Secrets are
//! never printed, only whether they are set.

use std::fmt::Write;

use super::{Action, Config, TokenFrom};
use crate::keys::{HMAC_ALGORITHMS, hmac_algorithms_for, hmac_min_secret_bytes, redact_url};

pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config OK");
    let _ = writeln!(
        out,
        "listen: authz {}, admin {}, http {}",
        config.listen.authz, config.listen.admin, config.listen.http
    );
    let _ = writeln!(out, "token cache: {} entries", config.cache.tokens);
    let _ = writeln!(out, "issuers ({}):", config.issuers.len());
    for (name, issuer) in &config.issuers {
        let keys = match (&issuer.secret, &issuer.jwks_uri, &issuer.public_key) {
            (Some(secret), _, _) => secret_summary(secret.len()),
            (None, Some(uri), _) => format!("JWKS {}", redact_url(uri)),
            (None, None, Some((kind, _))) => format!("PEM public key ({kind:?})"),
            (None, None, None) => "JWKS via OIDC discovery".to_string(),
        };
        let audiences = issuer.audiences.as_ref().map_or("any".to_string(), |list| list.join(", "));
        let from = match &issuer.token_source() {
            TokenFrom::Header { header, prefix: Some(prefix) } => format!("header {header} (prefix {prefix:?})"),
            TokenFrom::Header { header, prefix: None } => format!("header {header}"),
            TokenFrom::Cookie { cookie } => format!("cookie {cookie}"),
        };
        let iss = issuer.issuer.as_deref().unwrap_or("any (not checked, as Hasura)");
        let hasura = if issuer.hasura_jwt_secret.is_some() { " | Hasura claims from hasura_jwt_secret" } else { "" };
        let _ = writeln!(out, "  {name}: iss {iss} | keys: {keys} | aud: {audiences} | token from {from}{hasura}");
    }
    let _ = writeln!(
        out,
        "backends ({}): {}",
        config.backends.len(),
        config.backends.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(out, "routes ({}, first match wins; no match = 403):", config.routes.len());
    for (index, route) in config.routes.iter().enumerate() {
        let matcher = &route.matcher;
        let path = match (&matcher.prefix, &matcher.path) {
            (_, Some(path)) => format!("path {path}"),
            (Some(prefix), None) => format!("prefix {prefix}"),
            (None, None) => "any path".to_string(),
        };
        let action = match route.action {
            Action::Allow => "allow".to_string(),
            Action::Deny => "deny".to_string(),
            Action::Authenticate => {
                let issuers = route.issuers.as_ref().map_or("any issuer".to_string(), |list| list.join(", "));
                format!("authenticate ({issuers})")
            }
        };
        let name = route.name.clone().unwrap_or_else(|| format!("routes[{index}]"));
        let backend = route.backend.as_deref().map(|b| format!(" -> backend {b}")).unwrap_or_default();
        let _ = writeln!(out, "  {name}: {path}{} => {action}{backend}", hosts_methods(route));
    }
    out
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

fn hosts_methods(route: &super::RouteConfig) -> String {
    let mut text = String::new();
    if let Some(hosts) = &route.matcher.hosts {
        let _ = write!(text, ", hosts {}", hosts.join(" "));
    }
    if let Some(methods) = &route.matcher.methods {
        let _ = write!(text, ", methods {}", methods.join(" "));
    }
    text
}
