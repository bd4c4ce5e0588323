//! The Check as one span of the request's own trace. Envoy forwards the W3C
//! `traceparent`/`tracestate` of the request in the CheckRequest's headers;
//! the span continues that trace, so the decision sits between Envoy's span and
//! the backend's. Attributes say how the decision was reached (route, decision,
//! deny reason, issuer, cache hit, backend, status) and never carry a token, a
//! secret or a claim value; the `sub` only when `telemetry.subject` asks for it.
//!
//! Spans are created only when tracing is on (see `telemetry`); with it off a
//! Check pays nothing here. The W3C trace id is read for the decision log either way.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::decision::{Audit, Decision};
use crate::policy::faces::Face;
use crate::request::HttpRequest;

/// The target of every span meant for export (the OpenTelemetry layer keeps only these).
pub const TARGET: &str = "portcullis::trace";

/// How Check spans are made, once tracing is on.
#[derive(Debug, Clone, Default)]
pub struct CheckTracing {
    /// Put the token's `sub` on the span as `enduser.id`.
    pub subject: bool,
}

impl CheckTracing {
    /// A span for the Check of `request`, child of the request's `traceparent` when it has one.
    pub fn span(&self, request: &HttpRequest) -> Span {
        let span = tracing::info_span!(
            target: TARGET,
            "ext_authz check",
            otel.kind = "server",
            portcullis.face = Empty,
            portcullis.route = Empty,
            portcullis.decision = Empty,
            portcullis.deny_reason = Empty,
            portcullis.issuer = Empty,
            portcullis.cache_hit = Empty,
            portcullis.backend = Empty,
            http.response.status_code = Empty,
            enduser.id = Empty,
        );
        let parent = TraceContextPropagator::new().extract(&Headers(request));
        // Only fails when no OpenTelemetry layer is installed, and then nothing is exported anyway.
        let _ = span.set_parent(parent);
        span
    }

    /// Records how `decision` was reached on its span.
    pub fn record(&self, span: &Span, face: Face, decision: &Decision, audit: &Audit) {
        span.record("portcullis.face", face.label());
        match decision {
            Decision::Allow(allowed) => {
                span.record("portcullis.route", &*allowed.route);
                span.record("portcullis.decision", "allow");
                if let Some(backend) = &allowed.backend {
                    span.record("portcullis.backend", &**backend);
                }
            }
            Decision::Deny(denied) => {
                if let Some(route) = &denied.route {
                    span.record("portcullis.route", &**route);
                }
                span.record("portcullis.decision", "deny");
                span.record("portcullis.deny_reason", denied.reason.kind());
            }
        }
        span.record("http.response.status_code", i64::from(decision.http_status()));
        if let Some(issuer) = &audit.issuer {
            span.record("portcullis.issuer", &**issuer);
        }
        if let Some(hit) = audit.cache_hit {
            span.record("portcullis.cache_hit", hit);
        }
        if self.subject
            && let Some(subject) = audit.subject()
        {
            span.record("enduser.id", subject);
        }
    }
}

/// The trace id of a span, if it will be exported (a sampled span).
pub fn sampled_trace_id(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    (span_context.is_valid() && span_context.is_sampled()).then(|| span_context.trace_id().to_string())
}

/// The trace id of the request's well-formed W3C `traceparent` (version 00:
/// `00-<32 hex>-<16 hex>-<2 hex>`, neither id all zeros), for the decision log.
pub fn traceparent_trace_id(request: &HttpRequest) -> Option<&str> {
    let value = request.header("traceparent")?;
    let mut parts = value.split('-');
    let (version, trace_id, parent_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |text: &str| text.bytes().any(|byte| byte != b'0');
    let valid = parts.next().is_none()
        && version == "00"
        && hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(parent_id, 16)
        && nonzero(parent_id)
        && hex(flags, 2);
    valid.then_some(trace_id)
}

/// The request's headers, as the W3C propagator reads them (names are lower-case already).
struct Headers<'a>(&'a HttpRequest);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header(&key.to_ascii_lowercase())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers().map(|(name, _)| name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(traceparent: &str) -> HttpRequest {
        HttpRequest::new("GET", "/", "api", [("traceparent", traceparent)])
    }

    #[test]
    fn reads_only_well_formed_traceparents() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(traceparent_trace_id(&request(good)), Some("0af7651916cd43dd8448eb211c80319c"));
        for bad in [
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01,00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "",
        ] {
            assert_eq!(traceparent_trace_id(&request(bad)), None, "{bad}");
        }
        assert_eq!(traceparent_trace_id(&HttpRequest::new("GET", "/", "api", [])), None);
    }
}
