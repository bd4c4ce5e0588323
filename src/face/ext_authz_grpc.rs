//! Envoy's gRPC ext_authz face: the `envoy.service.auth.v3.Authorization`
//! service. A `CheckRequest` is read into the neutral request view, decided by
//! the pipeline, and the [`Decision`] encoded as a `CheckResponse`.
//!
//! Envoy sends either the `headers` map (lower-case keys, duplicates joined with
//! ",") or, with `encode_raw_headers`, the `header_map` list of raw bytes; both
//! become the one view. Every path ends in a decision; a bad token is a deny,
//! never a gRPC error, because Envoy treats gRPC errors as failures that
//! `failure_mode_allow` may let through.
//!
//! `status` is always set explicitly (an unset status means allow to Envoy);
//! request headers use OVERWRITE_IF_EXISTS_OR_ADD with `append` unset, the only
//! encoding every Envoy version applies as "set".

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest as EnvoyHttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{CheckResponse, DeniedHttpResponse, OkHttpResponse};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::{Code, Status};

use crate::admission::Admitted;
use crate::authz::Authorizer;
use crate::config::LimitsConfig;
use crate::decision::{Allowed, Decision, Denied};
use crate::face::Face;
use crate::request::{HttpRequest, RequestProblem};

/// The gRPC service Envoy calls.
#[derive(Clone)]
pub struct AuthzService {
    authorizer: Arc<Authorizer>,
}

impl AuthzService {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        AuthzService { authorizer }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        // Counted from here, its message decoded, until answered (see admission.rs).
        let ticket = self.authorizer.gate.enter();
        let response = check(&self.authorizer, request.get_ref(), Admitted(ticket.admitted())).await;
        drop(ticket);
        Ok(tonic::Response::new(response))
    }
}

/// A Check as Envoy sends it, end to end: read, decided (unless it was not
/// `admitted`: over `limits.concurrent_checks`), observed, encoded.
pub async fn check(authorizer: &Authorizer, check: &CheckRequest, admitted: Admitted) -> CheckResponse {
    let policy = authorizer.policy();
    let request = request_view(check, &policy.limits);
    let decision = authorizer.decide_for(Face::ExtAuthzGrpc, admitted, &policy, &request).await;
    check_response(&decision)
}

/// Decides a CheckRequest as Envoy sent it (read within the policy's limits), unobserved.
pub async fn decide_check(authorizer: &Authorizer, check: &CheckRequest) -> Decision {
    let policy = authorizer.policy();
    authorizer.decide(&request_view(check, &policy.limits)).await
}

/// Reads Envoy's CheckRequest; a request beyond `limits` is not read further.
pub fn request_view(check: &CheckRequest, limits: &LimitsConfig) -> HttpRequest {
    let http = check.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref());
    let Some(http) = http else {
        return HttpRequest::default();
    };
    if let Some(problem) = exceeds(http, limits) {
        return HttpRequest::refused(problem);
    }
    let mut request = HttpRequest::default();
    copy_headers(&mut request, http);
    let method = first_non_empty(&http.method, request.header(":method"));
    let path = first_non_empty(&http.path, request.header(":path"));
    let host = first_non_empty(&http.host, request.header(":authority").or(request.header("host")));
    request.set_line(&method, &path, &host);
    request.with_body(envoy_body(http))
}

/// The exact bytes are in `raw_body` when the filter sets
/// `with_request_body { pack_as_bytes: true }`; otherwise Envoy sends `body`,
/// re-encoded as UTF-8 (which breaks a signature over other bytes). Read
/// `raw_body`, fall back to `body`.
fn envoy_body(http: &EnvoyHttpRequest) -> Vec<u8> {
    if http.raw_body.is_empty() { http.body.as_bytes().to_vec() } else { http.raw_body.clone() }
}

fn copy_headers(request: &mut HttpRequest, http: &EnvoyHttpRequest) {
    for (name, value) in &http.headers {
        request.add_header(name, value);
    }
    for header in http.header_map.iter().flat_map(|map| map.headers.iter()) {
        // Raw mode fills raw_value only; value is honoured for hand-written clients.
        let value = if header.raw_value.is_empty() {
            header.value.clone()
        } else {
            String::from_utf8_lossy(&header.raw_value).into_owned()
        };
        request.add_header(&header.key, &value);
    }
}

/// Counts before copying anything, so an oversized request costs a sum, not a map.
fn exceeds(http: &EnvoyHttpRequest, limits: &LimitsConfig) -> Option<RequestProblem> {
    let raw = http.header_map.as_ref().map_or(&[][..], |map| map.headers.as_slice());
    if http.headers.len() + raw.len() > limits.max_headers {
        return Some(RequestProblem::TooManyHeaders);
    }
    let mapped: usize = http.headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    let listed: usize = raw.iter().map(|header| header.key.len() + header.value.len() + header.raw_value.len()).sum();
    (mapped + listed + http.path.len() > limits.max_header_bytes).then_some(RequestProblem::HeadersTooLarge)
}

fn first_non_empty(field: &str, header: Option<&str>) -> String {
    if field.is_empty() { header.unwrap_or_default().to_string() } else { field.to_string() }
}

/// A [`Decision`] as Envoy's `CheckResponse`.
pub fn check_response(decision: &Decision) -> CheckResponse {
    match decision {
        Decision::Allow(allowed) => allow_response(allowed),
        Decision::Deny(denied) => deny_response(denied),
    }
}

fn allow_response(allowed: &Allowed) -> CheckResponse {
    let ok = OkHttpResponse {
        headers: allowed.set_headers.iter().map(|(name, value)| header(name, value)).collect(),
        headers_to_remove: allowed.remove_headers.clone(),
        ..Default::default()
    };
    CheckResponse {
        status: Some(Status { code: Code::Ok as i32, ..Default::default() }),
        http_response: Some(HttpResponse::OkResponse(ok)),
        dynamic_metadata: Some(metadata(allowed)),
    }
}

fn deny_response(denied: &Denied) -> CheckResponse {
    let (reason, rendered) = (&denied.reason, &denied.rendered);
    let mut headers = vec![header("content-type", rendered.content_type)];
    if let Some(challenge) = &rendered.challenge {
        headers.push(header("www-authenticate", challenge));
    }
    let denied_response = DeniedHttpResponse {
        status: Some(HttpStatus { code: status_code(rendered.http_status) as i32 }),
        headers,
        body: rendered.body.clone(),
    };
    CheckResponse {
        // The gRPC code reflects the decision, whatever HTTP status the client sees.
        status: Some(Status {
            code: rpc_code(reason.http_status()) as i32,
            message: reason.description(),
            details: vec![],
        }),
        http_response: Some(HttpResponse::DeniedResponse(denied_response)),
        dynamic_metadata: Some(deny_metadata(denied)),
    }
}

fn header(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: name.to_string(), value: value.to_string(), ..Default::default() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// Envoy's enum names every status portcullis answers with (a webhook's 204
/// and 413 included); anything else would be a bug, answered 403.
fn status_code(http_status: u16) -> StatusCode {
    StatusCode::try_from(i32::from(http_status)).unwrap_or(StatusCode::Forbidden)
}

fn rpc_code(http_status: u16) -> Code {
    match http_status {
        401 => Code::Unauthenticated,
        503 => Code::Unavailable,
        _ => Code::PermissionDenied,
    }
}

/// route and reason of a deny, for Envoy's access logs.
fn deny_metadata(denied: &Denied) -> Struct {
    let mut fields = HashMap::with_capacity(3);
    fields.insert("route".to_string(), text(denied.route.as_deref().unwrap_or_default()));
    fields.insert("reason".to_string(), text(&denied.reason.description()));
    fields
        .insert("status".to_string(), Value { kind: Some(Kind::NumberValue(f64::from(denied.reason.http_status()))) });
    Struct { fields }
}

/// iss, sub, route, backend and the route's `metadata_claims`, for Envoy's
/// access logs and later filters (RBAC, Lua).
fn metadata(allowed: &Allowed) -> Struct {
    let mut fields = HashMap::with_capacity(4 + allowed.claims.len());
    for (name, value) in &allowed.claims {
        fields.insert(name.clone(), json_value(value));
    }
    fields.insert("route".to_string(), text(&allowed.route));
    if let Some(backend) = &allowed.backend {
        fields.insert("backend".to_string(), text(backend));
    }
    if let Some(caller) = &allowed.caller {
        if let Some(issuer) = &caller.issuer {
            fields.insert("iss".to_string(), text(issuer));
        }
        if let Some(subject) = &caller.subject {
            fields.insert("sub".to_string(), text(subject));
        }
    }
    Struct { fields }
}

/// A claim as a protobuf `Value` (what `google.protobuf.Struct` holds).
fn json_value(value: &serde_json::Value) -> Value {
    use envoy_types::pb::google::protobuf::ListValue;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(flag) => Kind::BoolValue(*flag),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        serde_json::Value::String(text) => Kind::StringValue(text.clone()),
        serde_json::Value::Array(items) => {
            Kind::ListValue(ListValue { values: items.iter().map(json_value).collect() })
        }
        serde_json::Value::Object(map) => Kind::StructValue(Struct {
            fields: map.iter().map(|(key, item)| (key.clone(), json_value(item))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

fn text(value: &str) -> Value {
    Value { kind: Some(Kind::StringValue(value.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::plain;
    use crate::decision::DenyReason;

    #[test]
    fn an_allow_sets_overwrites_removes_and_reports_identity() {
        let allowed = Allowed {
            route: "api".into(),
            backend: Some("hasura".into()),
            caller: Some(crate::decision::Caller {
                issuer: Some("https://idp.test".into()),
                subject: Some("u1".into()),
            }),
            set_headers: vec![("x-hasura-role".into(), "user".into())],
            remove_headers: vec!["x-hasura-admin-secret".into()],
            claims: vec![("org".into(), serde_json::json!({"code": "acme", "ids": [1, true]}))],
            dry_run: None,
            unresolved: Vec::new(),
            expires_at: None,
        };
        let response = check_response(&Decision::Allow(allowed));
        assert_eq!(response.status.unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else { panic!("an ok response") };
        let set = ok.headers[0].clone();
        assert_eq!(set.append_action, HeaderAppendAction::OverwriteIfExistsOrAdd as i32);
        #[allow(deprecated)] // `append` must stay unset: old Envoys read it before append_action.
        let append = set.append;
        assert_eq!(append, None);
        assert_eq!(set.header.unwrap().key, "x-hasura-role");
        assert_eq!(ok.headers_to_remove, vec!["x-hasura-admin-secret".to_string()]);
        let fields = response.dynamic_metadata.unwrap().fields;
        let text = |name: &str| match &fields[name].kind {
            Some(Kind::StringValue(value)) => value.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (text("route"), text("backend"), text("iss"), text("sub")),
            ("api".into(), "hasura".into(), "https://idp.test".into(), "u1".into())
        );
        let Some(Kind::StructValue(org)) = &fields["org"].kind else { panic!("a struct") };
        assert_eq!(org.fields["code"].kind, Some(Kind::StringValue("acme".into())));
    }

    #[test]
    fn a_deny_carries_its_rendering_and_a_matching_grpc_code() {
        for (reason, http, rpc) in [
            (DenyReason::MissingToken, 401, Code::Unauthenticated),
            (DenyReason::NoRoute, 403, Code::PermissionDenied),
            (
                DenyReason::KeysUnavailable(crate::keys::KeysUnavailable::NotLoaded("idp".into())),
                503,
                Code::Unavailable,
            ),
            (DenyReason::InvalidRequest(crate::request::RequestProblem::TooManyHeaders), 431, Code::PermissionDenied),
        ] {
            let rendered = plain::render(&reason);
            let response = check_response(&Decision::Deny(Denied { reason, route: Some("r".into()), rendered }));
            assert_eq!(response.status.unwrap().code, rpc as i32);
            let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
                panic!("a denied response")
            };
            assert_eq!(denied.status.unwrap().code, http);
            assert_eq!(denied.headers[0].header.as_ref().unwrap().value, "application/json");
        }
    }
}
