//! Identity-provider webhooks verified once, at the edge, for every app: a
//! delivery is matched by path (POST), its signature checked (one file per
//! kind: [`kinde`], [`standard_webhooks`], [`svix`], [`workos`]), its age
//! checked against the replay window, recorded as first-seen in the shared
//! state together with the revocations it calls for, and answered. A replay
//! of an event already seen is acknowledged (2xx, so the sender stops
//! retrying) and never applied or forwarded again, across replicas.
//!
//! This module knows no wire format: it reads the neutral request (headers,
//! body) and returns a typed [`Receipt`] or [`DeliveryError`], each carrying
//! the HTTP status the sender gets; `authz` renders them.

pub mod hmac;
pub mod kinde;
pub mod standard_webhooks;
pub mod svix;
pub mod workos;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::{Problem, WebhookConfig, WebhookKind, WebhookMode};
use crate::issuer::Issuer;
use crate::request::HttpRequest;
use crate::revocation::RevocationPolicy;
use crate::state::{StateError, Store};
use crate::token::Clock;

/// Envoy's `x-envoy-auth-partial-body: true`: the body was cut at `max_request_bytes`.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";
/// Headers a `forward` webhook sets; client copies are removed on every request.
pub const FORWARD_HEADERS: [&str; 3] =
    ["x-portcullis-webhook-id", "x-portcullis-webhook-type", "x-portcullis-webhook-verified"];
pub const DEFAULT_MAX_BODY_BYTES: usize = 65_536;
/// How far in the future a delivery may be dated (clock skew), at most.
const MAX_FUTURE_SECONDS: u64 = 300;

/// One compiled `webhooks` entry.
pub struct Webhook {
    pub name: Arc<str>,
    pub path: String,
    /// Lower-case hosts (`*.example.com` for subdomains); empty matches every host.
    pub hosts: Vec<String>,
    pub verifier: Verifier,
    pub max_age_seconds: u64,
    pub events: Option<Vec<String>>,
    pub mode: WebhookMode,
    pub max_body_bytes: usize,
}

/// How a kind checks a delivery.
pub enum Verifier {
    Kinde(Arc<Issuer>),
    StandardWebhooks(hmac::Secrets),
    Svix(hmac::Secrets),
    Workos(hmac::Secrets),
}

/// A delivery whose signature and age held.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The signed id replays share (Kinde's `event_id`, the `webhook-id`, WorkOS' `id`).
    pub id: String,
    /// The event type (`user.deleted`), empty when the payload names none.
    pub event_type: String,
    /// The signed payload (the JWT claims, or the JSON body; `Null` if the body is not JSON).
    pub payload: Value,
    /// When the event (or this attempt) was signed, in Unix seconds: the cutoff of
    /// the revocations it calls for.
    pub signed_at: u64,
}

/// Why a delivery is refused; each carries the status the sender gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("the body is larger than this webhook accepts")]
    TooLarge,
    #[error("the body arrived cut short (x-envoy-auth-partial-body); raise max_request_bytes")]
    PartialBody,
    #[error("the delivery has no body")]
    EmptyBody,
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    #[error("no signature matches")]
    BadSignature,
    #[error("the delivery is older than the replay window")]
    Stale,
    #[error("the delivery is dated in the future")]
    Future,
    #[error("the body is not a webhook of this kind: {0}")]
    Malformed(&'static str),
    #[error("an access token is not a webhook delivery")]
    AccessToken,
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
    #[error("{0}")]
    State(StateError),
}

impl DeliveryError {
    /// The HTTP status: 401 for anything a forger could cause, 503 where the sender should retry.
    pub fn http_status(&self) -> u16 {
        match self {
            DeliveryError::TooLarge | DeliveryError::PartialBody => 413,
            DeliveryError::EmptyBody | DeliveryError::MissingHeader(_) | DeliveryError::Malformed(_) => 400,
            DeliveryError::BadSignature | DeliveryError::Stale | DeliveryError::Future | DeliveryError::AccessToken => {
                401
            }
            DeliveryError::KeysUnavailable | DeliveryError::State(_) => 503,
        }
    }

    /// The `result` label of `portcullis_webhooks_total`, and the reason in logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryError::TooLarge | DeliveryError::PartialBody => "too_large",
            DeliveryError::EmptyBody | DeliveryError::MissingHeader(_) | DeliveryError::Malformed(_) => "malformed",
            DeliveryError::BadSignature => "bad_signature",
            DeliveryError::Stale => "stale",
            DeliveryError::Future => "future",
            DeliveryError::AccessToken => "access_token",
            DeliveryError::KeysUnavailable => "keys_unavailable",
            DeliveryError::State(_) => "state_error",
        }
    }
}

/// What became of a delivery that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub outcome: Outcome,
    pub id: String,
    pub event_type: String,
    /// Revocations it applied (first deliveries only).
    pub applied: usize,
    pub mode: WebhookMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// First seen: applied, and forwarded in `forward` mode.
    Verified,
    /// Seen before (on any replica): acknowledged, nothing applied or forwarded.
    Duplicate,
    /// A type not in `events`: acknowledged and counted, nothing applied.
    Ignored,
}

impl Receipt {
    /// Whether the delivery goes on to the upstream.
    pub fn forwards(&self) -> bool {
        self.mode == WebhookMode::Forward && self.outcome == Outcome::Verified
    }

    /// The status the sender gets when portcullis answers it.
    pub fn http_status(&self) -> u16 {
        match self.outcome {
            Outcome::Verified => 204,
            Outcome::Duplicate | Outcome::Ignored => 200,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.outcome {
            Outcome::Verified => "verified",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
        }
    }
}

/// What a delivery needs besides itself.
pub struct Context<'a> {
    pub store: &'a dyn Store,
    pub revocation: &'a RevocationPolicy,
    pub clock: &'a Clock,
}

impl Webhook {
    /// Whether `request` is a delivery to this webhook.
    pub fn matches(&self, request: &HttpRequest) -> bool {
        request.method == "POST"
            && request.path == self.path
            && (self.hosts.is_empty() || self.hosts.iter().any(|host| host_matches(host, &request.host)))
    }

    /// Verifies, records and applies one delivery.
    pub async fn deliver(&self, request: &HttpRequest, context: &Context<'_>) -> Result<Receipt, DeliveryError> {
        let verified = self.verify(request, context.clock.now()).await?;
        let receipt = |outcome, applied| Receipt {
            outcome,
            id: verified.id.clone(),
            event_type: verified.event_type.clone(),
            applied,
            mode: self.mode,
        };
        if self.events.as_ref().is_some_and(|events| !events.contains(&verified.event_type)) {
            return Ok(receipt(Outcome::Ignored, 0));
        }
        let changes =
            context.revocation.changes_for(&self.name, &verified.event_type, &verified.payload, verified.signed_at);
        // Remembered as long as a replay could still pass the window (both directions).
        let ttl = Duration::from_secs(self.max_age_seconds + MAX_FUTURE_SECONDS.min(self.max_age_seconds) + 60);
        let key = format!("{}:{}", self.name, verified.id);
        match context.store.record_event(&key, ttl, &changes).await {
            Ok(true) => Ok(receipt(Outcome::Verified, changes.len())),
            Ok(false) => Ok(receipt(Outcome::Duplicate, 0)),
            Err(err) => Err(DeliveryError::State(err)),
        }
    }

    /// Body limits, then the kind's signature and window checks.
    pub async fn verify(&self, request: &HttpRequest, now: u64) -> Result<Verified, DeliveryError> {
        if request.header(PARTIAL_BODY_HEADER).is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return Err(DeliveryError::PartialBody);
        }
        let body = request.body();
        if body.len() > self.max_body_bytes {
            return Err(DeliveryError::TooLarge);
        }
        if body.is_empty() {
            return Err(DeliveryError::EmptyBody);
        }
        let window = Window { max_age: self.max_age_seconds, now };
        match &self.verifier {
            Verifier::Kinde(issuer) => kinde::verify(issuer, body, window).await,
            Verifier::StandardWebhooks(secrets) => {
                standard_webhooks::verify(standard_webhooks::WEBHOOK_HEADERS, secrets, request, window)
            }
            Verifier::Svix(secrets) => svix::verify(secrets, request, window),
            Verifier::Workos(secrets) => workos::verify(secrets, request, window),
        }
    }
}

/// The replay window: how old a delivery may be, as of `now`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub max_age: u64,
    pub now: u64,
}

impl Window {
    /// Whether a delivery signed at `at` (Unix seconds) is within the window;
    /// the future side allows at most [`MAX_FUTURE_SECONDS`] of clock skew.
    pub fn check(self, at: i64) -> Result<u64, DeliveryError> {
        let now = i64::try_from(self.now).unwrap_or(i64::MAX);
        let future = self.max_age.min(MAX_FUTURE_SECONDS) as i64;
        if at > now.saturating_add(future) {
            return Err(DeliveryError::Future);
        }
        if at < now.saturating_sub(self.max_age as i64) {
            return Err(DeliveryError::Stale);
        }
        Ok(u64::try_from(at).unwrap_or(0))
    }
}

/// The `type` of a JSON payload, or "".
fn event_type(payload: &Value, field: &str) -> String {
    payload.get(field).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1 && host.ends_with(domain) && host[..host.len() - domain.len()].ends_with('.')
        }
        None => pattern == host,
    }
}

/// The default replay window of each kind, in seconds.
pub fn default_max_age(kind: WebhookKind) -> u64 {
    match kind {
        // Kinde retries for 36 hours; whether `timestamp` is re-signed per attempt is not documented.
        WebhookKind::Kinde => 172_800,
        WebhookKind::StandardWebhooks | WebhookKind::Svix => 300,
        WebhookKind::Workos => 180,
    }
}

/// Compiles `webhooks`; problems are relative to `webhooks`.
pub fn compile(configs: &[WebhookConfig], issuers: &[Arc<Issuer>]) -> Result<Vec<Webhook>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut webhooks = Vec::new();
    for (index, config) in configs.iter().enumerate() {
        let at = |key: &str| if key.is_empty() { format!("[{index}]") } else { format!("[{index}].{key}") };
        let before = problems.len();
        if config.name.is_empty() {
            problems.push(Problem::new(at("name"), "must not be empty"));
        }
        if configs[..index].iter().any(|earlier| earlier.name == config.name) {
            problems.push(Problem::new(at("name"), "another webhook has this name"));
        }
        let path = match config.matcher.path.as_deref() {
            Some(path) if path.starts_with('/') && !path.contains('?') => path.to_string(),
            Some(_) => {
                problems.push(Problem::new(at("match.path"), "must start with '/' and have no query string"));
                String::new()
            }
            None => {
                problems.push(Problem::new(at("match.path"), "required: the exact path the IdP posts to"));
                String::new()
            }
        };
        let max_age = config.max_age_seconds.unwrap_or_else(|| default_max_age(config.kind));
        if max_age == 0 {
            problems.push(Problem::new(at("max_age_seconds"), "must be greater than 0"));
        }
        let max_body_bytes = config.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            problems.push(Problem::new(at("max_body_bytes"), "must be greater than 0"));
        }
        let verifier = verifier(config, issuers, &mut |key, message| problems.push(Problem::new(at(key), message)));
        if problems.len() > before {
            continue;
        }
        let Some(verifier) = verifier else { continue };
        webhooks.push(Webhook {
            name: Arc::from(config.name.as_str()),
            path,
            hosts: config.matcher.hosts.iter().flatten().map(|host| host.to_ascii_lowercase()).collect(),
            verifier,
            max_age_seconds: max_age,
            events: config.events.clone(),
            mode: config.mode,
            max_body_bytes,
        });
    }
    if problems.is_empty() { Ok(webhooks) } else { Err(problems) }
}

/// The key a kind needs: an issuer for Kinde, secrets for the HMAC kinds (never both).
fn verifier(config: &WebhookConfig, issuers: &[Arc<Issuer>], problem: &mut dyn FnMut(&str, &str)) -> Option<Verifier> {
    if config.kind == WebhookKind::Kinde {
        if config.secrets.is_some() {
            problem("secrets", "a kinde webhook is verified with its issuer's keys, not secrets");
        }
        let Some(name) = &config.issuer else {
            problem("issuer", "required for kind: kinde (the issuer whose JWKS signs the deliveries)");
            return None;
        };
        let Some(issuer) = issuers.iter().find(|issuer| *issuer.name == **name) else {
            problem("issuer", "no issuer of that name in `issuers`");
            return None;
        };
        return Some(Verifier::Kinde(Arc::clone(issuer)));
    }
    if config.issuer.is_some() {
        problem("issuer", "only kind: kinde is verified with an issuer's keys");
    }
    let Some(written) = config.secrets.as_ref().filter(|secrets| !secrets.is_empty()) else {
        problem("secrets", "required: the signing secret(s) from the IdP's webhook settings");
        return None;
    };
    let form = if config.kind == WebhookKind::Workos { hmac::SecretForm::Plain } else { hmac::SecretForm::Whsec };
    let secrets = match hmac::Secrets::parse(written, form) {
        Ok(secrets) => secrets,
        Err((index, message)) => {
            problem(&format!("secrets[{index}]"), message);
            return None;
        }
    };
    Some(match config.kind {
        WebhookKind::StandardWebhooks => Verifier::StandardWebhooks(secrets),
        WebhookKind::Svix => Verifier::Svix(secrets),
        WebhookKind::Workos => Verifier::Workos(secrets),
        WebhookKind::Kinde => unreachable!("handled above"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_refuses_old_and_future_deliveries_at_its_edges() {
        let window = Window { max_age: 300, now: 10_000 };
        assert_eq!(window.check(9_700), Ok(9_700));
        assert_eq!(window.check(9_699), Err(DeliveryError::Stale));
        assert_eq!(window.check(10_300), Ok(10_300));
        assert_eq!(window.check(10_301), Err(DeliveryError::Future));
        let kinde = Window { max_age: 172_800, now: 1_000_000 };
        assert_eq!(kinde.check(1_000_301), Err(DeliveryError::Future), "skew is bounded however long the window");
    }

    #[test]
    fn hosts_match_exactly_or_as_subdomains() {
        assert!(host_matches("hooks.example.com", "hooks.example.com"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "aexample.com"));
    }
}
