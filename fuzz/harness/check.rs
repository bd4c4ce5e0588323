//! Target `check`: arbitrary bytes decoded as Envoy's `CheckRequest` (protobuf)
//! and decided end to end by `Authorizer::check`, the gRPC service's own path,
//! against a policy with plain, Hasura and Supabase routes and static keys.
//!
//! Invariants, beyond [`fixtures::check_response`]: a request that carries no
//! token is never allowed on a route that requires one, and a route that
//! requires one only allows a verified caller; on Hasura routes the upstream
//! gets only `x-hasura-*` headers, the admin secret and role always (the admin
//! secret never on a websocket upgrade), and no client `x-hasura-*` header
//! survives unless portcullis overwrote it; on Supabase routes the client's
//! `apikey` and `authorization` are always replaced.

use std::sync::LazyLock;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use portcullis::admission::Admitted;
use portcullis::authz::Authorizer;
use portcullis::face::ext_authz_grpc;
use prost::Message;
use serde_json::{Value, json};

use super::fixtures::{self, ADMIN_SECRET, APIKEY, Allowed, Answer, HASURA_PRIVILEGED, HS_SECRET, SUPABASE_SECRET};
use super::token::{AUDIENCE, HS_ISSUER, RSA_ISSUER};

pub const COOKIE_ISSUER: &str = "https://cookie.fuzz.test";
/// Where the `cookie` issuer reads its token.
pub const TOKEN_COOKIE: &str = "session";

/// Routes that allow only a verified caller.
const REQUIRES_TOKEN: [&str; 4] = ["graphql", "api", "admin", "pass"];
/// Authenticating routes whose backend also lets token-less requests in.
const ANONYMOUS_ALLOWED: [&str; 2] = ["graphql-anon", "rest"];
const HASURA_ROUTES: [&str; 2] = ["graphql", "graphql-anon"];
const SUPABASE_ROUTES: [&str; 2] = ["rest", "pass"];

pub fn config() -> Value {
    json!({
        "cache": { "tokens": 0 },
        "limits": { "max_headers": 64, "max_header_bytes": 16384 },
        "issuers": {
            "hs": { "issuer": HS_ISSUER, "secret": HS_SECRET, "audiences": [AUDIENCE] },
            "cookie": { "issuer": COOKIE_ISSUER, "secret": HS_SECRET, "token_from": { "cookie": TOKEN_COOKIE } },
            "rsa": { "hasura_jwt_secret": {
                "type": "RS256", "key": fixtures::RSA_PUBLIC_PEM, "issuer": RSA_ISSUER, "audience": "hasura",
                "claims_map": {
                    "x-hasura-allowed-roles": { "path": "$.roles[*].key", "default": ["user"] },
                    "x-hasura-default-role": { "path": "$.default_role", "default": "user" },
                    "x-hasura-user-id": { "path": "$.sub" },
                    "x-hasura-org-code": { "path": "$.org_code", "default": "" }
                }
            } }
        },
        "backends": {
            "hasura": { "type": "hasura", "admin_secret": ADMIN_SECRET },
            "hasura-anon": { "type": "hasura", "admin_secret": ADMIN_SECRET, "unauthorized_role": "anonymous", "websocket": "passthrough" },
            "supabase": { "type": "supabase", "signing_key": SUPABASE_SECRET, "apikey": APIKEY, "allow_anonymous": true },
            "supabase-pass": { "type": "supabase", "mode": "passthrough", "apikey": APIKEY }
        },
        "routes": [
            { "name": "health", "match": { "path": "/healthz" }, "action": "allow" },
            { "name": "blocked", "match": { "prefix": "/internal/" }, "action": "deny" },
            { "name": "graphql", "match": { "prefix": "/v1/graphql" }, "issuers": ["hs", "rsa"], "backend": "hasura" },
            { "name": "graphql-anon", "match": { "prefix": "/public/graphql" }, "backend": "hasura-anon", "error_status": "http" },
            { "name": "rest", "match": { "prefix": "/rest/v1/" }, "issuers": ["hs", "cookie"], "backend": "supabase" },
            { "name": "pass", "match": { "prefix": "/pass/v1/" }, "issuers": ["hs"], "backend": "supabase-pass" },
            { "name": "api", "match": { "prefix": "/api/", "hosts": ["api.example.com", "*.apps.example.com"], "methods": ["GET", "POST"] },
              "issuers": ["hs", "cookie"], "headers": { "x-user-id": "sub", "x-org": "$.org.code", "x-groups": "groups" },
              "metadata_claims": ["sub", "org"], "forward_token": false },
            { "name": "admin", "match": { "prefix": "/admin/" }, "issuers": ["hs"],
              "require": { "roles": ["admin"], "any_of": { "scopes": ["admin:write"], "permissions": ["admin:all"] },
                           "when": "claims.sub.startsWith('u') && request.method != 'DELETE'" } },
            { "name": "dry", "match": { "prefix": "/dry/" }, "issuers": ["hs"], "require": { "permissions": ["p"] }, "mode": "dry_run" },
            { "name": "servlet", "match": { "prefix": "/app/" }, "action": "allow", "allow_path_parameters": true }
        ]
    })
}

static AUTHORIZER: LazyLock<Authorizer> = LazyLock::new(|| Authorizer::new(fixtures::policy(&config())));

pub fn run(data: &[u8]) {
    if let Ok(check) = CheckRequest::decode(data) {
        decide(&check);
    }
}

/// Decides `check` against the fixture policy and asserts every invariant; the answer, for more.
pub fn decide(check: &CheckRequest) -> Answer {
    let response = fixtures::block_on(ext_authz_grpc::check(&AUTHORIZER, check, Admitted(true)));
    let answer = fixtures::check_response(&response);
    if let Answer::Allowed(allowed) = &answer {
        check_allowed(&Sent::of(check), allowed);
    }
    answer
}

/// The request headers as sent, both encodings, names lower-cased.
struct Sent {
    headers: Vec<(String, String)>,
}

impl Sent {
    fn of(check: &CheckRequest) -> Sent {
        let http = check.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref());
        let mut headers = Vec::new();
        if let Some(http) = http {
            headers.extend(http.headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())));
            for header in http.header_map.iter().flat_map(|map| &map.headers) {
                let raw = String::from_utf8_lossy(&header.raw_value);
                let value = if header.raw_value.is_empty() { header.value.clone() } else { raw.into_owned() };
                headers.push((header.key.to_ascii_lowercase(), value));
            }
        }
        Sent { headers }
    }

    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers.iter().filter(move |(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Whether any place a configured issuer reads could hold a token.
    fn may_carry_token(&self) -> bool {
        self.values("authorization").any(|value| !value.trim().is_empty())
            || self.values("cookie").any(|value| value.contains(TOKEN_COOKIE))
    }

    fn is_websocket_upgrade(&self) -> bool {
        self.values("upgrade")
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
    }
}

fn check_allowed(sent: &Sent, allowed: &Allowed) {
    let route = allowed.metadata["route"].as_str();
    let verified = allowed.metadata.contains_key("iss");
    if verified {
        assert!(sent.may_carry_token(), "route {route}: a verified caller without a token");
    }
    if REQUIRES_TOKEN.contains(&route) {
        assert!(verified, "route {route} allowed a request without a verified token");
    }
    if ANONYMOUS_ALLOWED.contains(&route) && !sent.may_carry_token() {
        assert!(!verified, "route {route}: a token-less request with a caller");
    }
    if HASURA_ROUTES.contains(&route) {
        check_hasura(sent, allowed, route);
    }
    if SUPABASE_ROUTES.contains(&route) {
        for name in ["apikey", "authorization"] {
            assert!(allowed.set.contains_key(name), "route {route}: {name} is not replaced");
        }
        assert_eq!(allowed.set["apikey"], APIKEY);
    }
}

fn check_hasura(sent: &Sent, allowed: &Allowed, route: &str) {
    for name in allowed.set.keys() {
        assert!(name.starts_with("x-hasura-"), "route {route} sets {name:?}");
    }
    let upgrade = sent.is_websocket_upgrade();
    if upgrade {
        assert!(allowed.set.is_empty(), "route {route}: a websocket upgrade gets {:?}", allowed.set.keys());
    } else {
        assert_eq!(allowed.set.get("x-hasura-admin-secret").map(String::as_str), Some(ADMIN_SECRET));
        assert!(allowed.set.contains_key("x-hasura-role"), "route {route}: no role");
        let claimed = allowed.set.keys().filter(|name| HASURA_PRIVILEGED.contains(&name.as_str()));
        let claimed: Vec<_> =
            claimed.filter(|name| !["x-hasura-admin-secret", "x-hasura-role"].contains(&name.as_str())).collect();
        assert!(claimed.is_empty(), "route {route}: privileged headers {claimed:?}");
    }
    for (name, _) in &sent.headers {
        if name.starts_with("x-hasura-") {
            assert!(
                allowed.set.contains_key(name) || allowed.removed.contains(name),
                "route {route}: the client's {name:?} reaches Hasura"
            );
        }
    }
}
