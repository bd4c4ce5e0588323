//! The fixed world every target runs in, so that one input always gives one
//! outcome: a clock stopped at [`NOW`], static keys only (an HS256 secret and
//! PEM public keys written into the config), a key fetcher that never reaches
//! the network, disabled caches, and one current-thread tokio runtime per thread.
//! Also the invariants shared by several targets: what a valid header is
//! (RFC 9110, written here independently of portcullis' own check) and what
//! every CheckResponse must satisfy.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::google::protobuf::value::Kind;
use portcullis::backend::hasura::Session;
use portcullis::config::RefreshConfig;
use portcullis::keys::{FetchError, Fetched, Jitter, KeyFetcher};
use portcullis::policy::{Policy, Runtime, compile_text};
use portcullis::token::Clock;
use prost::Message;
use serde_json::Value;

/// The time every target runs at (seed tokens are issued at it).
pub const NOW: u64 = 1_800_000_000;

/// The HS256 secret of the `hs` issuers (and the key odd token inputs are signed with).
pub const HS_SECRET: &str = "fuzzing-only-hs256-secret-longer-than-32-bytes";
/// The Supabase backends' signing secret (HS256, so minting is deterministic).
pub const SUPABASE_SECRET: &str = "fuzzing-only-supabase-signing-secret-32-bytes-plus";
pub const ADMIN_SECRET: &str = "fuzzing-only-hasura-admin-secret";
pub const APIKEY: &str = "fuzzing-only-publishable-key";

/// Public halves of the fixed keys (the private halves sign the seed tokens).
pub const RSA_PUBLIC_PEM: &str = include_str!("keys/rsa.pub");
pub const EC_PUBLIC_PEM: &str = include_str!("keys/ec.pub");
pub const ED_PUBLIC_PEM: &str = include_str!("keys/ed.pub");
pub const RSA_PRIVATE_PEM: &str = include_str!("keys/rsa.key");
pub const EC_PRIVATE_PEM: &str = include_str!("keys/ec.key");
pub const ED_PRIVATE_PEM: &str = include_str!("keys/ed.key");

/// Headers Hasura trusts, with the admin secret present, to decide who the
/// caller is and what they may do: the admin secret itself (and its legacy
/// name), the role, the role lists, and backend-only permissions. portcullis
/// alone decides these; no claim may produce or override one.
pub const HASURA_PRIVILEGED: [&str; 7] = [
    "x-hasura-admin-secret",
    "x-hasura-access-key",
    "x-hasura-role",
    "x-hasura-allowed-roles",
    "x-hasura-default-role",
    "x-hasura-use-backend-only-permissions",
    "x-hasura-backend-only-permissions",
];

/// Answers every key fetch as an unreachable IdP would: no target may touch the network.
struct Offline;

impl KeyFetcher for Offline {
    fn fetch<'a>(
        &'a self,
        _issuer: &'a str,
        jwks_uri: Option<&'a str>,
        _refresh: &'a RefreshConfig,
    ) -> Pin<Box<dyn Future<Output = Result<Fetched, FetchError>> + Send + 'a>> {
        let url = jwks_uri.unwrap_or("(discovery)").to_string();
        Box::pin(async move { Err(FetchError::Status { url, status: 503 }) })
    }
}

/// A policy runtime on the stopped clock that never fetches, with fixed retry
/// jitter (built field by field: the default runtime would build an HTTPS
/// client nobody uses).
pub fn runtime() -> Runtime {
    Runtime {
        fetcher: Arc::new(Offline),
        changed: tokio::sync::watch::channel(0).0,
        clock: Clock::fixed(NOW),
        jitter: Jitter::fixed(0.5),
        metrics: Arc::default(),
        shared: Arc::default(),
    }
}

static RUNTIME: LazyLock<Runtime> = LazyLock::new(runtime);

/// Compiles a fixture config; a fixture that does not compile is a harness bug.
pub fn policy(config: &Value) -> Policy {
    try_policy(config).unwrap_or_else(|err| panic!("{err}"))
}

/// Compiles a generated config on the shared runtime.
pub fn try_policy(config: &Value) -> Result<Policy, portcullis::config::ConfigError> {
    compile_text(&config.to_string(), "generated", &RUNTIME, None)
}

thread_local! {
    static TOKIO: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime");
}

/// Runs `future` to completion on this thread's runtime (built once).
pub fn block_on<F: Future>(future: F) -> F::Output {
    TOKIO.with(|runtime| runtime.block_on(future))
}

/// RFC 9110 section 5.1 field-name: one or more tchars.
pub fn is_header_name(name: &str) -> bool {
    const TCHAR_SYMBOLS: &[u8] = b"!#$%&'*+-.^_`|~";
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || TCHAR_SYMBOLS.contains(&b))
}

/// RFC 9110 section 5.5 field-value: visible ASCII, space, HTAB and obs-text; no CR, LF, NUL or DEL.
pub fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
}

/// What an allowed CheckResponse tells Envoy to do to the request headers.
#[derive(Debug, Default)]
pub struct Allowed {
    pub set: BTreeMap<String, String>,
    pub removed: BTreeSet<String>,
    pub metadata: BTreeMap<String, String>,
}

/// The answer as the client sees it.
#[derive(Debug)]
pub enum Answer {
    Allowed(Allowed),
    /// With its HTTP status.
    Denied {
        status: i32,
    },
}

/// Invariants of every CheckResponse (SPEC section 3): `status` always set and
/// consistent with the answer, header mutations Envoy can apply as "set"
/// (valid lower-case names, valid values, each name set once, nothing both
/// set and removed), a deny with a known status and a JSON body, and a
/// message that encodes and decodes to itself.
pub fn check_response(response: &CheckResponse) -> Answer {
    let bytes = response.encode_to_vec();
    assert_eq!(&CheckResponse::decode(bytes.as_slice()).expect("the response decodes"), response);
    let status = response.status.as_ref().expect("status is always set");
    let metadata: BTreeMap<String, String> = response
        .dynamic_metadata
        .as_ref()
        .expect("dynamic metadata is always set")
        .fields
        .iter()
        .filter_map(|(name, value)| match &value.kind {
            Some(Kind::StringValue(text)) => Some((name.clone(), text.clone())),
            _ => None,
        })
        .collect();
    assert!(metadata.contains_key("route"), "the metadata names the route");
    match response.http_response.as_ref().expect("an http response") {
        HttpResponse::OkResponse(ok) => {
            assert_eq!(status.code, 0, "an ok response has status OK");
            let mut allowed = Allowed { metadata, ..Default::default() };
            for option in &ok.headers {
                let header = option.header.as_ref().expect("a header to set");
                assert_valid_name(&header.key);
                assert!(is_header_value(&header.value), "invalid value for {:?}: {:?}", header.key, header.value);
                assert_eq!(option.append_action, HeaderAppendAction::OverwriteIfExistsOrAdd as i32);
                let first = allowed.set.insert(header.key.clone(), header.value.clone());
                assert!(first.is_none(), "{:?} is set twice", header.key);
            }
            for name in &ok.headers_to_remove {
                assert_valid_name(name);
                assert!(!allowed.set.contains_key(name), "{name:?} is both set and removed");
                allowed.removed.insert(name.clone());
            }
            assert!(ok.response_headers_to_add.is_empty() && ok.query_parameters_to_set.is_empty());
            Answer::Allowed(allowed)
        }
        HttpResponse::DeniedResponse(denied) => {
            assert_ne!(status.code, 0, "a deny never has status OK");
            let http = denied.status.as_ref().expect("a deny has an HTTP status").code;
            assert!([200, 400, 401, 403, 431, 503].contains(&http), "unexpected HTTP status {http}");
            for option in &denied.headers {
                let header = option.header.as_ref().expect("a response header");
                assert_valid_name(&header.key);
                assert!(is_header_value(&header.value), "invalid value for {:?}: {:?}", header.key, header.value);
            }
            serde_json::from_str::<Value>(&denied.body).expect("a deny body is JSON");
            Answer::Denied { status: http }
        }
        HttpResponse::ErrorResponse(_) => panic!("portcullis never answers with an error response"),
    }
}

fn assert_valid_name(name: &str) {
    assert!(is_header_name(name) && name == name.to_ascii_lowercase(), "invalid header name {name:?}");
}

/// A Hasura session as headers next to the admin secret: every variable an
/// `x-hasura-*` header with a valid lower-case name and value, none of them
/// privileged, and a role that can be sent.
pub fn check_hasura_session(session: &Session) {
    assert!(!session.role.is_empty() && is_header_value(&session.role), "role {:?}", session.role);
    for (name, value) in &session.variables {
        assert!(name.starts_with("x-hasura-"), "session variable {name:?} is not an x-hasura-* header");
        assert_valid_name(name);
        assert!(!HASURA_PRIVILEGED.contains(&name.as_str()), "privileged session variable {name:?}");
        assert!(is_header_value(value), "invalid value for {name:?}: {value:?}");
    }
}
