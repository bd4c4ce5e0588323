//! The identity-event sections of `portcullis.yaml` as plain data: `webhooks`
//! (IdP events verified at the edge), `revocation` (what those events and the
//! Admin API revoke) and `state` (where first-seen event ids and revocations
//! are kept: this process, or Redis shared by every replica). Whether they make
//! sense is decided by `Policy::compile` (see `webhook::compile`,
//! `revocation::compile`, `state::compile`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One webhook endpoint: a path that receives an IdP's signed events.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Shown in metrics (`webhook` label) and logs; unique among webhooks.
    pub name: String,
    /// Which requests are deliveries: an exact `path` (matched like a route's), always POST.
    #[serde(rename = "match")]
    pub matcher: WebhookMatch,
    /// How the sender signs: `kinde` (an RS256 JWT body signed with the issuer's JWKS),
    /// `standard_webhooks` (Clerk, Supabase Auth hooks: `webhook-*` headers),
    /// `svix` (the same with `svix-*` headers) or `workos` (`WorkOS-Signature`).
    pub kind: WebhookKind,
    /// `kind: kinde`: the issuer whose JWKS signs the deliveries (its key cache is shared).
    pub issuer: Option<String>,
    /// HMAC kinds: the signing secrets (`whsec_...`, `v1,whsec_...`, or WorkOS' plain
    /// secret). Several while rotating: a delivery signed with any of them is accepted.
    pub secrets: Option<Vec<String>>,
    /// How old (or how far in the future) a delivery may be, in seconds. Default:
    /// 300 for `standard_webhooks` and `svix`, 180 for `workos`, 172800 (48 h, past
    /// Kinde's 36 h of retries) for `kinde`.
    pub max_age_seconds: Option<u64>,
    /// Event types applied (and, in `forward` mode, forwarded). Others are verified,
    /// acknowledged with a 2xx and counted as `ignored`. Absent: every type.
    pub events: Option<Vec<String>>,
    /// `consume` (the default) answers the sender itself (204); `forward` lets the
    /// delivery through to the upstream with `x-portcullis-webhook-*` headers.
    #[serde(default)]
    pub mode: WebhookMode,
    /// The largest body accepted, in bytes (Envoy's `max_request_bytes` should match). Default 65536.
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookMatch {
    /// The exact path the IdP posts to (without query string).
    pub path: Option<String>,
    /// `:authority` without port, case-insensitive; absent matches every host.
    pub hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    Kinde,
    StandardWebhooks,
    Svix,
    Workos,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookMode {
    #[default]
    Consume,
    Forward,
}

/// Revocations: per-(issuer, subject) cutoffs and a `jti` denylist, fed by
/// webhook events (`on_event`) and the Admin API.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// The longest lifetime (`exp - iat`) of a token of any issuer, in seconds: a
    /// subject's cutoff is kept this long (plus the issuer's leeway), after which
    /// no token it covers can still be valid. Default 86400 (one day).
    pub max_token_lifetime_seconds: Option<u64>,
    /// Which events revoke whom.
    #[serde(default)]
    pub on_event: Vec<OnEventConfig>,
}

/// One event action: when `webhook` delivers an event of `type` (and `if_true`
/// holds), revoke the subject found at `subject` for tokens of `issuer`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnEventConfig {
    /// The `webhooks` entry (by name) whose events this action reads.
    pub webhook: String,
    /// The event type, e.g. `user.deleted`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// A JSON path into the event payload that must be `true`, e.g.
    /// `$.data.user.is_suspended` (Kinde reports a suspension as `user.updated`).
    pub if_true: Option<String>,
    /// A JSON path to the user id, which is the `sub` of that user's tokens,
    /// e.g. `$.data.user.id` (Kinde) or `$.data.id` (Clerk).
    pub revoke_subject: String,
    /// The issuer (by name) whose tokens for that subject are revoked.
    pub issuer: String,
}

/// Where first-seen event ids and revocations live.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StateConfig {
    /// `memory`: this process only (one replica; nothing else to run).
    Named(StateName),
    /// `{ redis: "redis://host:6379/0", ... }`: shared by every replica.
    Redis(RedisStateConfig),
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig::Named(StateName::Memory)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Memory,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisStateConfig {
    /// `redis://[user:password@]host:port/db` or `rediss://` (TLS).
    pub redis: String,
    /// Prefix of every key portcullis writes. Default `portcullis:`.
    pub key_prefix: Option<String>,
    /// How long one Redis command may take before the webhook answers 503, in
    /// milliseconds. Default 1000.
    pub command_timeout_ms: Option<u64>,
    /// How long Checks keep using the last revocation set read from Redis once
    /// it can no longer be read, in seconds. Default 30.
    pub max_stale_seconds: Option<u64>,
    /// What a Check does after that: `deny` (503, the default) or `allow`
    /// (decide without revocations newer than the last read).
    #[serde(default)]
    pub on_stale: OnStale,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStale {
    #[default]
    Deny,
    Allow,
}
