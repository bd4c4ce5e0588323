//! The verdict, before it is encoded for Envoy: allow with header mutations, or
//! deny with a reason that decides the HTTP status and the message the client sees.

use std::sync::Arc;

use serde_json::Value;

use crate::config::Placeholder;
use crate::extract::ExtractError;
use crate::keys::KeysUnavailable;
use crate::request::RequestProblem;
use crate::revocation::Revoked;
use crate::rules::Unmet;
use crate::token::{TokenDigest, VerifiedToken};
use crate::verify::TokenError;
use crate::webhook::{DeliveryError, Receipt};

#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Allowed),
    Deny(Denied),
}

#[derive(Debug, Clone, Default)]
pub struct Allowed {
    pub route: Arc<str>,
    pub backend: Option<Arc<str>>,
    /// `iss` and `sub` of the verified token, when the route authenticated one.
    pub caller: Option<Caller>,
    /// Request headers to set upstream (lower-case names, overwrite semantics).
    pub set_headers: Vec<(String, String)>,
    /// Request headers the backend must not see.
    pub remove_headers: Vec<String>,
    /// Claims exported in the dynamic metadata (`metadata_claims`).
    pub claims: Vec<(String, Value)>,
    /// A requirement that did not hold on a `mode: dry_run` route: allowed, counted, logged.
    pub dry_run: Option<Unmet>,
    /// Set headers whose value is a secret that was not read (a policy compiled
    /// without secrets; never one that serves): header name, where it comes from.
    pub unresolved: Vec<(String, Placeholder)>,
    /// The verified token's `exp` (seconds since the epoch), when the route authenticated one.
    pub expires_at: Option<u64>,
}

impl Decision {
    /// The status the client gets: the deny's, or 200 for an allow (Envoy's
    /// OK; the request goes on upstream).
    pub fn http_status(&self) -> u16 {
        match self {
            Decision::Allow(_) => 200,
            Decision::Deny(denied) => denied.rendered.http_status,
        }
    }
}

/// How a decision was reached, for the decision log and the trace span:
/// filled in as the Check goes, as far as it got. Never the token itself.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// The digest of the token presented (logged as its fingerprint).
    pub digest: Option<TokenDigest>,
    /// The configured name of the issuer that verified it.
    pub issuer: Option<Arc<str>>,
    /// Whether that verification was remembered by the token cache.
    pub cache_hit: Option<bool>,
    /// The verified token (for its `sub`).
    pub token: Option<Arc<VerifiedToken>>,
}

impl Audit {
    pub fn subject(&self) -> Option<&str> {
        self.token.as_deref().and_then(|token| token.claim_str("sub"))
    }
}

#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified `iss`; `None` when the issuer checks no `iss`.
    pub issuer: Option<String>,
    pub subject: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Denied {
    pub reason: DenyReason,
    pub route: Option<Arc<str>>,
    /// The answer as the route's backend (or the plain shape) renders it.
    pub rendered: RenderedDeny,
}

/// A deny as the client will get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedDeny {
    pub http_status: u16,
    pub content_type: &'static str,
    /// `WWW-Authenticate`, when the answer carries one.
    pub challenge: Option<String>,
    pub body: String,
}

/// A refusal by a backend's own rules, with the backend's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    NoRoute,
    RouteDenies,
    MissingToken,
    Unreadable(ExtractError),
    InvalidToken(TokenError),
    /// No usable keys for the token's issuer (none yet, or stale): 503.
    KeysUnavailable(KeysUnavailable),
    /// A valid token the backend's rules refuse (e.g. a Hasura role not allowed).
    Refused(Refusal),
    /// A request two parsers could read differently, or one larger than the limits.
    InvalidRequest(RequestProblem),
    /// A valid token that does not meet the route's `require:`.
    RequirementUnmet(Unmet),
    /// More Checks in progress than `limits.concurrent_checks`: not decided.
    Overloaded,
    /// A valid token whose subject or `jti` was revoked.
    TokenRevoked(Revoked),
    /// The revocation set could not be confirmed for `state.max_stale_seconds`
    /// and `state.on_stale` is `deny`.
    RevocationsStale,
    /// A webhook delivery portcullis answers itself (consumed, a replay, or an ignored type).
    WebhookAnswered(Receipt),
    /// A webhook delivery refused (bad signature, outside the window, state unavailable, ...).
    WebhookRefused(DeliveryError),
}

impl DenyReason {
    pub fn http_status(&self) -> u16 {
        match self {
            DenyReason::NoRoute
            | DenyReason::RouteDenies
            | DenyReason::Refused(_)
            | DenyReason::RequirementUnmet(_) => 403,
            DenyReason::InvalidRequest(RequestProblem::TooManyHeaders | RequestProblem::HeadersTooLarge) => 431,
            DenyReason::InvalidRequest(_) => 400,
            DenyReason::Unreadable(err) if err.is_bad_request() => 400,
            DenyReason::MissingToken
            | DenyReason::Unreadable(_)
            | DenyReason::InvalidToken(_)
            | DenyReason::TokenRevoked(_) => 401,
            DenyReason::KeysUnavailable(_) | DenyReason::Overloaded | DenyReason::RevocationsStale => 503,
            DenyReason::WebhookAnswered(receipt) => receipt.http_status(),
            DenyReason::WebhookRefused(error) => error.http_status(),
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DenyReason::NoRoute => "no_route",
            DenyReason::RouteDenies => "route_denies",
            DenyReason::MissingToken => "missing_token",
            DenyReason::Unreadable(err) if err.is_bad_request() => "duplicate_token",
            DenyReason::Unreadable(_) => "unreadable_token",
            DenyReason::InvalidToken(err) => err.kind(),
            DenyReason::KeysUnavailable(_) => "keys_unavailable",
            DenyReason::Overloaded => "overloaded",
            DenyReason::Refused(_) => "refused_by_backend",
            DenyReason::InvalidRequest(problem) => problem.kind(),
            DenyReason::RequirementUnmet(_) => "requirement_unmet",
            DenyReason::TokenRevoked(_) => "token_revoked",
            DenyReason::RevocationsStale => "revocations_stale",
            DenyReason::WebhookAnswered(_) => "webhook_answered",
            DenyReason::WebhookRefused(_) => "webhook_refused",
        }
    }

    /// The short code in the JSON body (RFC 6750 error codes where they apply).
    pub fn error_code(&self) -> &'static str {
        match self {
            DenyReason::NoRoute | DenyReason::RouteDenies | DenyReason::Refused(_) => "forbidden",
            DenyReason::InvalidRequest(RequestProblem::TooManyHeaders | RequestProblem::HeadersTooLarge) => {
                "request_header_fields_too_large"
            }
            DenyReason::InvalidRequest(_) => "invalid_request",
            DenyReason::Unreadable(err) if err.is_bad_request() => "invalid_request",
            DenyReason::MissingToken => "unauthorized",
            DenyReason::Unreadable(_) | DenyReason::InvalidToken(_) | DenyReason::TokenRevoked(_) => "invalid_token",
            DenyReason::KeysUnavailable(_) | DenyReason::Overloaded | DenyReason::RevocationsStale => {
                "temporarily_unavailable"
            }
            DenyReason::RequirementUnmet(_) => "insufficient_scope",
            DenyReason::WebhookAnswered(receipt) => receipt.kind(),
            DenyReason::WebhookRefused(error) => error.kind(),
        }
    }

    /// A sentence the caller can act on; never contains the token.
    pub fn description(&self) -> String {
        match self {
            DenyReason::NoRoute => "no route matches this request".into(),
            DenyReason::RouteDenies => "this route denies every request".into(),
            DenyReason::MissingToken => "a bearer token is required".into(),
            DenyReason::Unreadable(err) => err.to_string(),
            DenyReason::InvalidToken(err) => err.to_string(),
            DenyReason::KeysUnavailable(unavailable) => unavailable.to_string(),
            DenyReason::Overloaded => "too many requests in progress; retry shortly".into(),
            DenyReason::Refused(refusal) => refusal.message.clone(),
            DenyReason::InvalidRequest(problem) => problem.description().into(),
            DenyReason::RequirementUnmet(unmet) => unmet.description(),
            DenyReason::TokenRevoked(_) => "the token has been revoked".into(),
            DenyReason::RevocationsStale => "the revocation list could not be confirmed current; retry shortly".into(),
            DenyReason::WebhookAnswered(receipt) => format!("webhook delivery {}", receipt.kind()),
            DenyReason::WebhookRefused(error) => error.to_string(),
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 section 3) for 401s.
    pub fn challenge(&self) -> Option<String> {
        match self {
            DenyReason::MissingToken => Some("Bearer realm=\"portcullis\"".into()),
            DenyReason::Unreadable(err) if err.is_bad_request() => Some(format!(
                "Bearer error=\"invalid_request\", error_description=\"{}\"",
                quoted_string_safe(&self.description())
            )),
            // RFC 6750 section 3.1, with the scopes the route requires when scopes were missing.
            DenyReason::RequirementUnmet(unmet) => Some(format!(
                "Bearer error=\"insufficient_scope\", error_description=\"{}\"{}",
                quoted_string_safe(&self.description()),
                unmet
                    .scopes
                    .as_ref()
                    .map(|scopes| format!(", scope=\"{}\"", quoted_string_safe(scopes)))
                    .unwrap_or_default()
            )),
            DenyReason::Unreadable(_) | DenyReason::InvalidToken(_) | DenyReason::TokenRevoked(_) => Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                quoted_string_safe(&self.description())
            )),
            _ => None,
        }
    }
}

impl RequestProblem {
    /// A short label for metrics and logs.
    pub fn kind(self) -> &'static str {
        match self {
            RequestProblem::AmbiguousPath => "ambiguous_path",
            RequestProblem::PathParameters => "path_parameters",
            RequestProblem::AmbiguousQuery => "ambiguous_query",
            RequestProblem::MalformedAuthority => "malformed_authority",
            RequestProblem::InvalidHeaderName => "invalid_header_name",
            RequestProblem::TooManyHeaders | RequestProblem::HeadersTooLarge => "request_too_large",
            RequestProblem::UntrustedProxy => "untrusted_proxy",
            RequestProblem::OriginalMissing => "original_missing",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            RequestProblem::AmbiguousPath => {
                "the path has dot-segments, repeated or encoded slashes, or undecodable escapes; refused rather than guessed"
            }
            RequestProblem::PathParameters => "this route does not accept ';' path parameters",
            RequestProblem::AmbiguousQuery => {
                "the query string repeats a parameter, or has ';', an empty name or a broken escape; refused rather than guessed"
            }
            RequestProblem::MalformedAuthority => {
                "the :authority (Host) is not host[:port]; refused rather than guessed"
            }
            RequestProblem::InvalidHeaderName => "a header name is not an RFC 9110 token; refused rather than guessed",
            RequestProblem::TooManyHeaders => "the request has more headers than limits.max_headers",
            RequestProblem::HeadersTooLarge => "the request headers are larger than limits.max_header_bytes",
            RequestProblem::UntrustedProxy => {
                "forwarded headers from a peer outside faces.forward_auth.trusted_proxies are not believed"
            }
            RequestProblem::OriginalMissing => {
                "the proxy did not describe the original request once (method, URI and host); refused rather than guessed"
            }
        }
    }
}

/// RFC 6750 restricts error_description to printable ASCII without `"` and `\`.
fn quoted_string_safe(text: &str) -> String {
    text.chars().map(|c| if (' '..='~').contains(&c) && c != '"' && c != '\\' { c } else { '\'' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(DenyReason::MissingToken.challenge().unwrap(), "Bearer realm=\"portcullis\"");
        let invalid = DenyReason::InvalidToken(TokenError::UnknownKid("a\"b".into()));
        assert_eq!(
            invalid.challenge().unwrap(),
            "Bearer error=\"invalid_token\", error_description=\"no key with kid 'a''b' in the issuer's JWKS\""
        );
        assert_eq!(DenyReason::NoRoute.challenge(), None);
    }
}
