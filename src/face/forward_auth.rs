//! Forward auth: nginx `auth_request`, Traefik `forwardAuth`, Caddy
//! `forward_auth`. The proxy asks portcullis before it forwards a request,
//! describing the original request in headers of its own:
//! - `/forward-auth` (Traefik, Caddy): `X-Forwarded-Method`, `X-Forwarded-Uri`,
//!   `X-Forwarded-Host` (and `X-Forwarded-Proto`);
//! - `/forward-auth/nginx` (nginx): `X-Original-Method`, `X-Original-URI` and the
//!   `Host` the config passes (`proxy_set_header Host $host`).
//!
//! Those headers are believed only from `faces.forward_auth.trusted_proxies`
//! (default: loopback); from any other peer, and when one is missing or
//! repeated, the request is refused (400), never guessed.
//!
//! An allow is a 200 with the identity and backend headers for the proxy to copy
//! upstream (`auth_request_set`, `authResponseHeaders`, `copy_headers`). A proxy
//! cannot be told per answer which client headers to drop: the shipped proxy
//! configs strip them statically. A deny keeps the gRPC face's status, headers
//! and body for Traefik and Caddy, which pass any non-2xx answer to the client.
//! nginx passes only 401 and 403 (anything else becomes its own 500) and never
//! the body, so on the nginx path: 401 stays 401, 503 (keys unavailable,
//! overloaded: retry later) stays 503 (which nginx turns into 500; the shipped
//! config answers it as 503), and every other refusal (400, 431, a 403) is 403;
//! the body also travels in `Portcullis-Deny-Body` for the config to return.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Extension, Router};

use crate::admission::Admitted;
use crate::authz::Authorizer;
use crate::decision::Decision;
use crate::face::{Face, allow_response, deny_response, deny_status, view_of};
use crate::http_authz::Peer;
use crate::policy::Policy;
use crate::request::{HttpRequest, RequestProblem};

/// The first path segment of this face's routes.
pub const SEGMENT: &str = crate::policy::faces::FORWARD_AUTH_SEGMENT;

/// The response header carrying a deny's body on the nginx path (nginx drops the body).
pub const DENY_BODY: &str = "portcullis-deny-body";

/// Which proxy convention describes the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Convention {
    /// Traefik and Caddy: `X-Forwarded-Method`, `-Uri`, `-Host`.
    Forwarded,
    /// nginx: `X-Original-Method`, `X-Original-URI`, `Host`.
    Nginx,
}

pub fn routes(authorizer: Arc<Authorizer>) -> Router {
    Router::new().route("/forward-auth", any(forwarded)).route("/forward-auth/nginx", any(nginx)).with_state(authorizer)
}

async fn forwarded(state: State<Arc<Authorizer>>, peer: Extension<Peer>, request: Request) -> Response {
    answer(Convention::Forwarded, state, peer, request).await
}

async fn nginx(state: State<Arc<Authorizer>>, peer: Extension<Peer>, request: Request) -> Response {
    answer(Convention::Nginx, state, peer, request).await
}

async fn answer(
    convention: Convention,
    State(authorizer): State<Arc<Authorizer>>,
    Extension(Peer(peer)): Extension<Peer>,
    request: Request,
) -> Response {
    let policy = authorizer.policy();
    let headers = request.headers();
    let ticket = authorizer.gate.enter();
    let view = original_request(convention, &policy, peer, headers);
    let decision = authorizer.decide_for(Face::ForwardAuth, Admitted(ticket.admitted()), &policy, &view).await;
    drop(ticket);
    render(convention, &decision)
}

/// The original request as the proxy described it, or a refused view.
fn original_request(convention: Convention, policy: &Policy, peer: SocketAddr, headers: &HeaderMap) -> HttpRequest {
    let peer = peer.ip().to_canonical();
    if !policy.faces.trusted_proxies.iter().any(|network| network.contains(&peer)) {
        return HttpRequest::refused(RequestProblem::UntrustedProxy);
    }
    let names = match convention {
        Convention::Forwarded => ["x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"],
        Convention::Nginx => ["x-original-method", "x-original-uri", "host"],
    };
    let [Some(method), Some(uri), Some(host)] = names.map(|name| single(headers, name)) else {
        return HttpRequest::refused(RequestProblem::OriginalMissing);
    };
    if method.is_empty() || !uri.starts_with('/') {
        return HttpRequest::refused(RequestProblem::OriginalMissing);
    }
    view_of(method, uri, host, headers, &policy.limits)
}

/// The value of a header sent exactly once, as text.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

fn render(convention: Convention, decision: &Decision) -> Response {
    match decision {
        Decision::Allow(allowed) => match allow_response(allowed) {
            Ok(headers) => (StatusCode::OK, headers).into_response(),
            Err(unsendable) => unsendable.into_response(),
        },
        Decision::Deny(denied) => {
            let status = deny_status(denied);
            if convention == Convention::Forwarded {
                return deny_response(denied, status);
            }
            let mut response = deny_response(denied, nginx_status(status));
            if let Ok(body) = HeaderValue::from_str(&denied.rendered.body) {
                response.headers_mut().insert(DENY_BODY, body);
            }
            response
        }
    }
}

/// nginx passes 401 and 403 through and turns anything else into 500 (see the module docs).
fn nginx_status(status: u16) -> u16 {
    match status {
        401 | 503 => status,
        _ => 403,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_sees_401_403_or_503() {
        assert_eq!([401, 403, 400, 431, 503].map(nginx_status), [401, 403, 403, 403, 503]);
    }

    #[test]
    fn a_repeated_or_absent_header_is_not_single() {
        let mut headers = HeaderMap::new();
        assert_eq!(single(&headers, "x-forwarded-uri"), None);
        headers.append("x-forwarded-uri", HeaderValue::from_static("/a"));
        assert_eq!(single(&headers, "x-forwarded-uri"), Some("/a"));
        headers.append("x-forwarded-uri", HeaderValue::from_static("/b"));
        assert_eq!(single(&headers, "x-forwarded-uri"), None);
    }
}
