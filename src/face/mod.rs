//! The faces: the wire formats portcullis answers in. Each face turns its wire
//! request into the neutral request view ([`crate::request::HttpRequest`]), asks
//! the pipeline ([`crate::authz::Authorizer::decide_for`]) and renders the
//! [`crate::decision::Decision`] back in its own conventions. The pipeline knows
//! no wire format; a face knows no policy beyond its own settings.
//!
//! One file per face, named after what calls it:
//! - [`ext_authz_grpc`]: Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`).

pub mod ext_authz_grpc;

/// The face a request came through: the `face` label of the checks metrics,
/// the decision log's `face` field and the trace span's `portcullis.face`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Face {
    /// Envoy's gRPC ext_authz (`grpc_service`).
    ExtAuthzGrpc,
    /// Envoy's HTTP ext_authz (`http_service`).
    ExtAuthzHttp,
    /// nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`.
    ForwardAuth,
    /// Hasura's auth webhook (`HASURA_GRAPHQL_AUTH_HOOK`).
    HasuraWebhook,
    /// Token introspection for services.
    Introspect,
}

impl Face {
    /// The name in metrics, logs and traces.
    pub fn label(self) -> &'static str {
        match self {
            Face::ExtAuthzGrpc => "ext_authz_grpc",
            Face::ExtAuthzHttp => "ext_authz_http",
            Face::ForwardAuth => "forward_auth",
            Face::HasuraWebhook => "hasura_webhook",
            Face::Introspect => "introspect",
        }
    }
}
