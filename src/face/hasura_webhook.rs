//! Hasura's auth webhook (`HASURA_GRAPHQL_AUTH_HOOK`), for Hasura Cloud and
//! any Hasura without a proxy in front. Hasura asks before each GraphQL
//! request (and once per websocket, at `connection_init`):
//! - GET mode: the client's headers are the webhook request's own headers;
//! - POST mode: `{"headers": {...}, "request": {...}}` (the GraphQL request is ignored).
//!
//! Each `auth_hooks` entry is compiled into a route of its own (its issuers,
//! its `hasura` backend), so the session is derived by the same backend code
//! as on the Envoy routes: claims location, `claims_map`, role selection with
//! the client's `x-hasura-role`, `unauthorized_role`. The answer is 200 with a
//! JSON object of string session variables and `Cache-Control: max-age=N`
//! bounded by the token's `exp`, or 401: Hasura understands only those two
//! (anything else becomes a 500 for the client), so every refusal is a 401,
//! overload and keys unavailable included.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value};

use super::{Face, view_of};
use crate::admission::Admitted;
use crate::authz::Authorizer;
use crate::decision::{Allowed, Decision};
use crate::policy::Policy;
use crate::request::{HttpRequest, RequestProblem};

/// The first path segment of every hook.
pub const SEGMENT: &str = crate::policy::faces::HASURA_SEGMENT;

/// The largest POST body read: the headers are all that is needed, but the
/// GraphQL request travels with them.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Headers that describe the webhook call, not the client's request: a
/// websocket's upgrade headers must not turn the session into a websocket pass.
const HOP_HEADERS: [&str; 4] = ["upgrade", "connection", "content-length", "transfer-encoding"];

/// The admin secret the `hasura` backend sets for Envoy routes; never part of a webhook session.
const ADMIN_SECRET: &str = "x-hasura-admin-secret";

pub fn routes(authorizer: Arc<Authorizer>) -> Router {
    Router::new().route("/hasura/{*rest}", any(answer)).with_state(authorizer)
}

async fn answer(State(authorizer): State<Arc<Authorizer>>, request: Request) -> Response {
    let policy = authorizer.policy();
    let path = request.uri().path().to_string();
    let Some(hook) = policy.auth_hooks.iter().find(|hook| hook.path == path) else {
        return (StatusCode::NOT_FOUND, "portcullis: no auth hook on this path\n").into_response();
    };
    let method = request.method().clone();
    let (parts, body) = request.into_parts();
    let client_headers = if method == Method::GET {
        Ok(parts.headers)
    } else if method == Method::POST {
        match to_bytes(body, MAX_BODY_BYTES).await {
            Ok(bytes) => posted_headers(&bytes),
            Err(_) => Err(RequestProblem::HeadersTooLarge),
        }
    } else {
        return (StatusCode::METHOD_NOT_ALLOWED, [(axum::http::header::ALLOW, "GET, POST")]).into_response();
    };
    let view = match client_headers {
        Ok(headers) => client_view(&path, &headers, &policy),
        Err(problem) => HttpRequest::refused(problem),
    };
    let ticket = authorizer.gate.enter();
    let decision =
        authorizer.decide_on_route(Face::HasuraWebhook, Admitted(ticket.admitted()), &policy, &hook.route, &view).await;
    drop(ticket);
    render(&decision, policy.runtime.clock.now())
}

/// POST mode's `headers` object (string values), as a header map; anything
/// else is an invalid request (a 401 like every refusal).
fn posted_headers(body: &[u8]) -> Result<HeaderMap, RequestProblem> {
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(body) else {
        return Err(RequestProblem::InvalidHeaderName);
    };
    let Some(Value::Object(headers)) = body.remove("headers") else {
        return Err(RequestProblem::InvalidHeaderName);
    };
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let Value::String(value) = value else { return Err(RequestProblem::InvalidHeaderName) };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) else {
            return Err(RequestProblem::InvalidHeaderName);
        };
        // Two spellings of one name in a JSON object are ambiguous: refused, not guessed.
        if map.insert(name, value).is_some() {
            return Err(RequestProblem::InvalidHeaderName);
        }
    }
    Ok(map)
}

/// The client's request as the pipeline sees it: its headers, on the hook's path.
fn client_view(path: &str, headers: &HeaderMap, policy: &Policy) -> HttpRequest {
    let mut kept = headers.clone();
    for name in HOP_HEADERS {
        kept.remove(name);
    }
    view_of("POST", path, "", &kept, &policy.limits)
}

fn render(decision: &Decision, now: u64) -> Response {
    match decision {
        Decision::Allow(allowed) => {
            let cache = cache_control(allowed.expires_at, now);
            let mut session = session_of(allowed);
            if let Some(max_age) = &cache {
                // Hasura reads the expiry from the body (it closes a websocket then).
                session.insert("Cache-Control".into(), Value::String(max_age.clone()));
            }
            let header = cache.unwrap_or_else(|| "no-store".into());
            let headers = [
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (CACHE_CONTROL, HeaderValue::from_str(&header).unwrap_or(HeaderValue::from_static("no-store"))),
            ];
            (StatusCode::OK, headers, Value::Object(session).to_string()).into_response()
        }
        Decision::Deny(denied) => {
            let body = serde_json::json!({"error": denied.reason.error_code(), "message": denied.reason.description()});
            let headers = [
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ];
            (StatusCode::UNAUTHORIZED, headers, body.to_string()).into_response()
        }
    }
}

/// `max-age=N` up to the token's `exp`, no leeway; none for a token already
/// at or past it, or without one (an anonymous session).
fn cache_control(expires_at: Option<u64>, now: u64) -> Option<String> {
    let remaining = expires_at?.checked_sub(now).filter(|seconds| *seconds > 0)?;
    Some(format!("max-age={remaining}"))
}

/// The session variables the backend set, as Hasura spells them (`X-Hasura-User-Id`).
fn session_of(allowed: &Allowed) -> Map<String, Value> {
    let variables: BTreeMap<String, Value> = allowed
        .set_headers
        .iter()
        .filter(|(name, _)| name.starts_with("x-hasura-") && name != ADMIN_SECRET)
        .map(|(name, value)| (title_case(name), Value::String(value.clone())))
        .collect();
    variables.into_iter().collect()
}

/// `x-hasura-user-id` -> `X-Hasura-User-Id` (Hasura reads keys case-insensitively).
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetime_stops_at_exp_and_is_never_negative() {
        assert_eq!(cache_control(Some(1_060), 1_000).as_deref(), Some("max-age=60"));
        assert_eq!(cache_control(Some(1_000), 1_000), None);
        assert_eq!(cache_control(Some(900), 1_000), None);
        assert_eq!(cache_control(None, 1_000), None);
    }

    #[test]
    fn posted_headers_are_strings_once_each() {
        let ok = posted_headers(br#"{"headers": {"Authorization": "Bearer x"}, "request": {"query": "{a}"}}"#);
        assert_eq!(ok.unwrap().get("authorization").unwrap(), "Bearer x");
        for bad in [
            &br#"{"request": {}}"#[..],
            br#"{"headers": {"a": 1}}"#,
            br#"{"headers": {"X-A": "1", "x-a": "2"}}"#,
            br#"{"headers": {"bad name": "1"}}"#,
            b"not json",
        ] {
            assert!(posted_headers(bad).is_err());
        }
    }

    #[test]
    fn session_names_read_as_hasura_writes_them() {
        assert_eq!(title_case("x-hasura-user-id"), "X-Hasura-User-Id");
        assert_eq!(title_case("x-hasura-role"), "X-Hasura-Role");
    }
}
