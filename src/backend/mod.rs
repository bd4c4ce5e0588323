//! What the upstream needs on an allowed request, and how it wants to hear a
//! deny. A backend is asked only where it matters: before any token
//! ([`Backend::precheck`], [`Backend::anonymous`]), after verification
//! ([`Backend::authorize`]), and when a request is denied
//! ([`Backend::render_deny`]). `hasura` and `supabase` follow their products'
//! own rules; routes without a backend answer in the [`plain`] shape.

pub mod hasura;
pub mod plain;
pub mod supabase;

use std::collections::HashSet;

use crate::config::{BackendConfig, ErrorStatus, Placeholder, Problem, Secret, Section, TokenFrom};
use crate::decision::{DenyReason, Refusal, RenderedDeny};
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::request::HttpRequest;
use crate::token::{Clock, TokenDigest, VerifiedToken};
use crate::token_cache::CacheBudget;

/// Request-header changes for Envoy: set (overwrite) and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mutations {
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    /// Set headers whose value is a secret that was not read (only in a policy
    /// compiled without secrets): the header name and where the value would come from.
    pub unresolved: Vec<(String, Placeholder)>,
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

    /// Adds `other`'s changes (their names never overlap this one's sets).
    pub fn merge(&mut self, other: Mutations) {
        self.set_headers.extend(other.set_headers);
        self.unresolved.extend(other.unresolved);
        self.remove(other.remove_headers);
    }

    /// Sets `name` to `secret` (its stand-in, and a note, when it was not read).
    pub fn set_secret(&mut self, name: &str, secret: &Secret) {
        self.set_headers.push((name.to_string(), secret.rendered()));
        if let Some(placeholder) = secret.unresolved() {
            self.unresolved.push((name.to_string(), placeholder.clone()));
        }
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
    /// The issuer that vouched for the token (it reads the token where it was found).
    pub issuer: &'a Issuer,
}

impl Authenticated<'_> {
    pub fn token_from(&self) -> &TokenFrom {
        &self.issuer.token_from
    }
}

impl Backend {
    /// Compiles `backends.<name>`; problems have paths relative to it. `secrets`
    /// says which of its values were not read (a policy compiled without secrets).
    pub fn compile(
        name: &str,
        config: &BackendConfig,
        cache_budget: CacheBudget,
        clock: &Clock,
        metrics: &Metrics,
        secrets: &Section<'_>,
    ) -> Result<Backend, Vec<Problem>> {
        match config {
            BackendConfig::Hasura(hasura) => hasura::HasuraBackend::compile(hasura, secrets).map(Backend::Hasura),
            BackendConfig::Supabase(supabase) => {
                let counters = metrics.mint_counters(name);
                supabase::SupabaseBackend::compile(supabase, cache_budget, clock, counters, secrets)
                    .map(Backend::Supabase)
            }
        }
    }

    /// A refusal that applies before any token is looked at (e.g. websocket policy).
    pub fn precheck(&self, request: &HttpRequest) -> Option<Refusal> {
        match self {
            Backend::Hasura(hasura) => hasura.precheck(request),
            Backend::Supabase(_) => None,
        }
    }

    /// Mutations for a request without a token, when the backend allows those.
    pub fn anonymous(&self, request: &HttpRequest) -> Option<Mutations> {
        match self {
            Backend::Hasura(hasura) => hasura.anonymous(request),
            Backend::Supabase(supabase) => supabase.anonymous(request),
        }
    }

    /// Mutations for a request with a verified token, or the backend's refusal.
    pub fn authorize(&self, auth: &Authenticated<'_>) -> Result<Mutations, Refusal> {
        match self {
            Backend::Hasura(hasura) => hasura.authorize(auth),
            Backend::Supabase(supabase) => supabase.authorize(auth),
        }
    }

    /// Estimated bytes held by this backend's own cache (Supabase's minted tokens).
    pub fn cache_weighted_bytes(&self) -> u64 {
        match self {
            Backend::Hasura(_) => 0,
            Backend::Supabase(supabase) => supabase.minted.weighted_bytes(),
        }
    }

    /// The deny as this backend's clients expect it (status, challenge, body).
    pub fn render_deny(
        &self,
        reason: &DenyReason,
        request: &HttpRequest,
        error_status: Option<ErrorStatus>,
    ) -> RenderedDeny {
        match self {
            Backend::Hasura(_) => {
                let graphql_status = match error_status {
                    Some(ErrorStatus::Graphql) => true,
                    Some(ErrorStatus::Http) => false,
                    None => request.path.ends_with("/graphql"),
                };
                hasura::deny::render(reason, graphql_status)
            }
            Backend::Supabase(_) => supabase::deny::render(reason),
        }
    }
}
