//! Resident memory per distinct cached token: RSS growth while N distinct,
//! realistic tokens (about 800 bytes, Auth0/Kinde-shaped claims with a Hasura
//! namespace) are decided and cached, on a plain route, a route with a CEL
//! rule (which keeps a CEL view of the claims with the token), a Hasura route
//! and a Supabase route (whose minted tokens are cached too). Beside each, the
//! cache's own estimate per token, which `cache.max_bytes` caps.
//!
//! `cargo bench --bench cache_memory` prints bytes per token per route kind;
//! under `cargo test --all-targets` it runs a small N as a smoke test.
//! Each route kind runs in its own process (this binary re-executes itself),
//! so one kind's freed memory does not hide the next kind's growth.

use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::authz::Authorizer;
use portcullis::decision::Decision;
use portcullis::request::HttpRequest;
use serde_json::json;

const SECRET: &str = "memory-bench-secret-with-at-least-32-bytes";
const ISSUER: &str = "https://acme.eu.auth0.com/";

/// The policy; the CEL route only when measuring it, since a policy with CEL
/// rules weighs every cached token for its CEL view too.
fn config(with_rules: bool) -> String {
    let rules = if with_rules {
        "  - { name: rules, match: { prefix: /rules }, require: { when: 'claims.email_verified && \"read:orders\" in claims.permissions' } }\n"
    } else {
        ""
    };
    format!(
        "cache: {{ tokens: 100000000, max_bytes: 4294967296 }}\n\
         issuers:\n  auth0: {{ issuer: \"{ISSUER}\", audiences: [https://graphql.acme.com], secret: {SECRET} }}\n\
         backends:\n  hasura: {{ type: hasura, admin_secret: hasura-admin-secret-0123456789 }}\n\
         \x20 supabase: {{ type: supabase, apikey: anon-key, mode: remint, signing_key: supabase-jwt-secret-with-32-bytes-or-more }}\n\
         routes:\n  - {{ name: plain, match: {{ prefix: /plain }} }}\n{rules}\
         \x20 - {{ name: hasura, match: {{ prefix: /v1/graphql }}, backend: hasura }}\n\
         \x20 - {{ name: supabase, match: {{ prefix: /rest/v1 }}, backend: supabase }}\n"
    )
}

/// An Auth0-shaped access token of about 800 bytes for user `n`.
fn token(n: usize) -> String {
    let claims = json!({
        "iss": ISSUER,
        "sub": format!("auth0|65f1c0de{n:016x}"),
        "aud": ["https://graphql.acme.com", "https://acme.eu.auth0.com/userinfo"],
        "iat": 1_790_000_000u64,
        "exp": 4_000_000_000u64,
        "azp": "Xk3vN9qLmP2rT8wYz5cB1dF4gH7jK0aS",
        "scope": "openid profile email read:orders write:orders",
        "permissions": ["read:orders", "write:orders", "read:invoices"],
        "org_id": "org_9fK2mQ7xLp3R",
        "email": format!("user{n}@example.com"),
        "email_verified": true,
        "name": "Dana Example",
        "https://hasura.io/jwt/claims": {
            "x-hasura-allowed-roles": ["user", "editor"],
            "x-hasura-default-role": "user",
            "x-hasura-user-id": format!("65f1c0de{n:016x}"),
            "x-hasura-org-id": "org_9fK2mQ7xLp3R"
        }
    });
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("HS256 signs")
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|field| field.parse().ok()).expect("resident pages");
    pages * 4096
}

/// Decides `count` distinct tokens on `path`; returns (RSS growth per token,
/// the caches' estimate per token, token length).
fn measure(path: &str, count: usize) -> (f64, f64, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let policy =
        portcullis::policy::parse_str(&config(path == "/rules"), "memory bench").unwrap_or_else(|err| panic!("{err}"));
    let authorizer = Authorizer::new(policy);
    let tokens: Vec<String> = (0..count).map(token).collect();
    let requests: Vec<HttpRequest> = tokens
        .iter()
        .map(|token| HttpRequest::new("GET", path, "api.example.com", [("authorization", &*format!("Bearer {token}"))]))
        .collect();
    // Warm up allocator arenas and lazily built state on a few extra tokens.
    runtime.block_on(async {
        for n in 0..64 {
            let warm = HttpRequest::new(
                "GET",
                path,
                "api.example.com",
                [("authorization", &*format!("Bearer {}", token(count + n)))],
            );
            authorizer.decide(&warm).await;
        }
    });
    let before = resident_bytes();
    runtime.block_on(async {
        for request in &requests {
            let decision = authorizer.decide(request).await;
            assert!(matches!(decision, Decision::Allow(_)), "{decision:?}");
        }
    });
    let policy = authorizer.policy();
    let cached = policy.cache.entry_count();
    assert!(cached >= count as u64, "every token cached: {cached}");
    let after = resident_bytes();
    let estimated = policy.cache.weighted_bytes()
        + policy.backends.values().map(|backend| backend.cache_weighted_bytes()).sum::<u64>();
    // The measured growth includes the cache; the tokens and requests were allocated before.
    let per_token = |bytes: u64| bytes as f64 / count as f64;
    (per_token(after.saturating_sub(before)), per_token(estimated), tokens[0].len())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|arg| arg == "--measure") {
        let path = &args[position + 1];
        let count: usize = args[position + 2].parse().expect("count");
        let (per_token, estimated, token_len) = measure(path, count);
        println!("{per_token:.0} {estimated:.0} {token_len}");
        return;
    }
    let bench_mode = args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--test");
    let count = if bench_mode { 100_000 } else { 2_000 };
    let exe = std::env::current_exe().expect("own path");
    println!("resident memory per distinct cached token ({count} tokens per route kind)");
    println!("| route | token bytes | RSS per cached token | estimated (weighed against cache.max_bytes) |");
    println!("|---|---:|---:|---:|");
    let kinds =
        [("plain", "/plain"), ("CEL rule", "/rules"), ("hasura", "/v1/graphql"), ("supabase", "/rest/v1/items")];
    for (name, path) in kinds {
        let output = Command::new(&exe).args(["--measure", path, &count.to_string()]).output().expect("measure run");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout);
        let mut fields = text.split_whitespace();
        let mut next = || fields.next().unwrap_or("?");
        let (per_token, estimated, token_len) = (next(), next(), next());
        println!("| {name} | {token_len} | {per_token} B | {estimated} B |");
    }
}
