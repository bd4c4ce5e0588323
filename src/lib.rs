//! portcullis: an Envoy ext_authz v3 service that verifies JWTs against cached
//! JWKS and tells Envoy which headers the backend should get.
//!
//! Modules follow a Check from wire to wire: [`request`] (what Envoy sent) ->
//! [`route`] (which rule) -> [`extract`] (where is the token) -> [`authenticate`]
//! (which issuer vouches: [`token_cache`] lookup, [`verify`] with [`issuer`] and
//! [`keys`], insert; [`token`] is the token's identity and the clock) ->
//! [`backend`] (Hasura / Supabase header mutations, and how each renders a deny)
//! -> [`decision`] -> [`response`] (the CheckResponse). [`authz`] runs that
//! pipeline over a [`policy`], which is the one compiled form of a [`config`].
//! [`server`], [`health`], [`http`], [`reload`] and [`shutdown`] run it as a
//! service; [`admin`] is the control plane; [`dev`] and [`explain`] are the
//! zero-setup demo and the offline `token verify`; [`policy_test`] runs
//! `portcullis test` (policy tests without an IdP). See docs/architecture.md.

pub mod admin;
pub mod admission;
pub mod authenticate;
pub mod authz;
pub mod backend;
pub mod cli;
pub mod config;
pub mod decision;
pub mod decision_log;
pub mod dev;
pub mod escape;
pub mod explain;
pub mod extract;
pub mod face;
pub mod footprint;
pub mod header;
pub mod health;
pub mod http;
pub mod http_authz;
pub mod identity;
pub mod intake;
pub mod issuer;
pub mod jsonpath;
pub mod keys;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod policy_test;
pub mod probe;
pub mod reflection;
pub mod reload;
pub mod request;
pub mod revocation;
pub mod route;
pub mod rules;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod telemetry;
#[cfg(test)]
pub mod testing;
pub mod tls;
pub mod token;
pub mod token_cache;
pub mod trace;
pub mod verify;
pub mod webhook;

/// Generated code for portcullis' own gRPC API.
pub mod proto {
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("portcullis.admin.v1");
        }
    }
}
