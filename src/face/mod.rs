//! The faces: the wire formats portcullis answers in. Each face turns its wire
//! request into the neutral request view ([`crate::request::HttpRequest`]), asks
//! the pipeline ([`crate::authz::Authorizer::decide_for`]) and renders the
//! [`crate::decision::Decision`] back in its own conventions. The pipeline knows
//! no wire format; a face knows no policy beyond its own settings.
//!
//! One file per face, named after what calls it:
//! - [`ext_authz_grpc`]: Envoy's gRPC ext_authz (`envoy.service.auth.v3.Authorization/Check`).

pub mod ext_authz_grpc;
