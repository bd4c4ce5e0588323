//! Envoy's HTTP ext_authz face (`http_service`). Envoy asks
//! `<path_prefix><original path>` with the original method and the headers its
//! `allowed_headers` let through (plus Host, Method, Path, Content-Length and
//! Authorization, always); the answer is the decision:
//! - allow: 200, the headers to set upstream as response headers (Envoy copies
//!   those its `allowed_upstream_headers` match), and the client headers the
//!   backend must not see named in `x-envoy-auth-headers-to-remove`;
//! - deny: the status, content type, `WWW-Authenticate` and body the gRPC face
//!   sends (Envoy passes them to the client), never a 200.
//!
//! A path outside `faces.ext_authz_http.path_prefix` is 404: not a question.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admission::Admitted;
use crate::authz::Authorizer;
use crate::decision::Decision;
use crate::face::{Face, Unsendable, allow_response, deny_response, deny_status, view_of};

/// The response header that tells Envoy which request headers to remove upstream.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Everything under the path prefix (read from the policy per request).
pub fn routes(authorizer: Arc<Authorizer>) -> Router {
    Router::new().fallback(check).with_state(authorizer)
}

async fn check(State(authorizer): State<Arc<Authorizer>>, request: Request) -> Response {
    let policy = authorizer.policy();
    let (parts, _body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |target| target.as_str());
    let Some(original) = original_target(target, &policy.faces.path_prefix) else {
        return (StatusCode::NOT_FOUND, "not an authorization path\n").into_response();
    };
    // HTTP/1.1 Host, or the HTTP/2 :authority (which hyper keeps in the URI).
    let authority = match parts.headers.get(header::HOST) {
        Some(host) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
        None => parts.uri.authority().map(|authority| authority.to_string()).unwrap_or_default(),
    };
    let ticket = authorizer.gate.enter();
    let view = view_of(parts.method.as_str(), original, &authority, &parts.headers, &policy.limits);
    let decision = authorizer.decide_for(Face::ExtAuthzHttp, Admitted(ticket.admitted()), &policy, &view).await;
    drop(ticket);
    render(&decision)
}

/// The original path and query: what follows `prefix` (Envoy prepends it to a path that starts with `/`).
fn original_target<'a>(target: &'a str, prefix: &str) -> Option<&'a str> {
    target.strip_prefix(prefix).filter(|rest| rest.starts_with('/'))
}

fn render(decision: &Decision) -> Response {
    match decision {
        Decision::Allow(allowed) => match allow_response(allowed) {
            Ok(mut headers) => {
                if !allowed.remove_headers.is_empty() {
                    // Names are RFC 9110 tokens (the view refuses others); were one not, fail closed.
                    let Ok(names) = HeaderValue::from_str(&allowed.remove_headers.join(",")) else {
                        return Unsendable.into_response();
                    };
                    headers.insert(HEADERS_TO_REMOVE, names);
                }
                (StatusCode::OK, headers).into_response()
            }
            Err(unsendable) => unsendable.into_response(),
        },
        Decision::Deny(denied) => deny_response(denied, deny_status(denied)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_original_target_follows_the_prefix() {
        assert_eq!(original_target("/envoy/api/items?x=1", "/envoy"), Some("/api/items?x=1"));
        assert_eq!(original_target("/envoy/", "/envoy"), Some("/"));
        assert_eq!(original_target("/envoyx/api", "/envoy"), None, "a prefix ends at a segment");
        assert_eq!(original_target("/envoy", "/envoy"), None);
        assert_eq!(original_target("/other/api", "/envoy"), None);
    }
}
