//! portcullis: an Envoy ext_authz v3 service that verifies JWTs against cached
//! JWKS and tells Envoy which headers the backend should get.
//!
//! Modules follow a Check from wire to wire:
//! [`request`] (what Envoy sent) -> [`route`] (which rule) -> [`extract`] (where
//! is the token) -> [`verify`] with [`issuer`], [`keys`] and [`token_cache`] ->
//! [`backend`] (Hasura / Supabase header mutations) -> [`decision`] ->
//! [`response`] (the CheckResponse). [`authz`] runs that
//! pipeline; [`policy`] is one compiled [`config`]; [`server`], [`health`],
//! [`http`] and [`shutdown`] run it as a service; [`dev`] and [`explain`] are
//! the zero-setup demo and the offline `token verify`.

pub mod admin;
pub mod authz;
pub mod backend;
pub mod cli;
pub mod config;
pub mod decision;
pub mod dev;
pub mod escape;
pub mod explain;
pub mod extract;
pub mod health;
pub mod http;
pub mod issuer;
pub mod jsonpath;
pub mod keys;
pub mod policy;
pub mod reflection;
pub mod reload;
pub mod request;
pub mod response;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
pub mod token_cache;
pub mod verify;

/// Generated code for portcullis' own gRPC API.
pub mod proto {
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("portcullis.admin.v1");
        }
    }
}
