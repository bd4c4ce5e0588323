//! What the upstream needs on an allowed request, and how it wants to hear a
//! deny. Each backend turns a verified token (or its absence) into header
//! mutations; `hasura` and `supabase` follow their products' own rules.

pub mod hasura;
pub mod supabase;

use std::collections::HashSet;

use crate::config::{ErrorStatus, TokenFrom};
use crate::issuer::Issuer;
use crate::request::HttpRequest;
use crate::token_cache::TokenDigest;
use crate::verify::VerifiedToken;

/// Request-header changes for Envoy: set (overwrite) and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutations {
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
}

impl Mutations {
    /// Removes every client header starting with `prefix`, except those being set
    /// (Envoy applies removals after sets, so removing a set header would undo it).
    pub fn strip_client_headers(&mut self, request: &HttpRequest, prefix: &str) {
        let mut names: Vec<String> = request
            .headers()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(prefix))
            .map(str::to_string)
            .collect();
        names.sort_unstable();
        self.remove(names);
    }

    /// Adds headers to remove. A header that is being set is never removed too:
    /// Envoy applies removals after sets, which would undo the set. Linear in
    /// the number of names: a client can send thousands of headers.
    pub fn remove(&mut self, names: impl IntoIterator<Item = String>) {
        let mut known: HashSet<String> = self.set_headers.iter().map(|(name, _)| name.clone()).collect();
        known.extend(self.remove_headers.iter().cloned());
        for name in names {
            if known.insert(name.clone()) {
                self.remove_headers.push(name);
            }
        }
    }
}

/// RFC 9110 field-name: a token of tchars. Claim-derived header names must be one.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 field-value without control characters (HTAB allowed): no CR, LF
/// or NUL can smuggle a header or a request through a claim or a secret.
pub fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A refusal by a backend's own rules, with the backend's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// How deny bodies are shaped for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorFormat {
    /// `{"error": ..., "error_description": ...}`
    #[default]
    Plain,
    /// Hasura's `{"errors":[{"extensions":{"path":"$","code":C},"message":M}]}`;
    /// `graphql_status` answers HTTP 200 as Hasura does on `/v1/graphql`.
    Hasura { graphql_status: bool },
    /// PostgREST's `{"code","details","hint","message"}`.
    PostgRest,
}

pub enum Backend {
    Hasura(hasura::HasuraBackend),
    Supabase(supabase::SupabaseBackend),
}

/// What a backend knows about an authenticated request.
pub struct Authenticated<'a> {
    pub request: &'a HttpRequest,
    pub token: &'a VerifiedToken,
    /// The token as the client sent it (for pass-through).
    pub raw_token: &'a str,
    pub digest: &'a TokenDigest,
    pub issuer: &'a Issuer,
    pub token_from: &'a TokenFrom,
}

impl Backend {
    /// Mutations for a request with a verified token, or the backend's refusal.
    pub fn authorize(&self, auth: &Authenticated<'_>) -> Result<Mutations, Refusal> {
        match self {
            Backend::Hasura(hasura) => hasura.authorize(auth),
            Backend::Supabase(supabase) => supabase.authorize(auth),
        }
    }

    /// Mutations for a request without a token, when the backend allows those.
    pub fn anonymous(&self, request: &HttpRequest) -> Option<Mutations> {
        match self {
            Backend::Hasura(hasura) => hasura.anonymous(request),
            Backend::Supabase(supabase) => supabase.anonymous(request),
        }
    }

    /// A refusal that applies before any token is looked at (e.g. websocket policy).
    pub fn precheck(&self, request: &HttpRequest) -> Option<Refusal> {
        match self {
            Backend::Hasura(hasura) => hasura.precheck(request),
            Backend::Supabase(_) => None,
        }
    }

    pub fn error_format(&self, route_setting: Option<ErrorStatus>, request: &HttpRequest) -> ErrorFormat {
        match self {
            Backend::Hasura(_) => {
                let graphql_status = match route_setting {
                    Some(ErrorStatus::Graphql) => true,
                    Some(ErrorStatus::Http) => false,
                    None => request.path.ends_with("/graphql"),
                };
                ErrorFormat::Hasura { graphql_status }
            }
            Backend::Supabase(_) => ErrorFormat::PostgRest,
        }
    }
}
