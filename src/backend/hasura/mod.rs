//! The `hasura` backend: Hasura's own JWT semantics enforced at the edge and
//! delivered as trusted headers with the admin secret (SPEC section 5).
//!
//! Hasura runs with an admin secret only; with that secret present it trusts
//! every `x-hasura-*` header and checks no role, so every check Hasura's JWT
//! mode would do happens here, and every client `x-hasura-*` header is removed.

pub mod claims;
pub mod deny;
pub mod secret;

pub use claims::{ClaimsSettings, Session};

use super::{Authenticated, Mutations};
use crate::config::{HasuraBackendConfig, Problem, Secret, Section, TokenFrom, WebsocketMode};
use crate::decision::Refusal;
use crate::header::is_header_value;
use crate::request::HttpRequest;

const ADMIN_SECRET: &str = "x-hasura-admin-secret";

pub struct HasuraBackend {
    admin_secret: Secret,
    unauthorized_role: Option<String>,
    /// For tokens of issuers that carry no Hasura settings of their own.
    claims: ClaimsSettings,
    forward_token: bool,
    websocket: WebsocketMode,
}

impl HasuraBackend {
    /// Compiles `backends.<name>` with `type: hasura`; problems are relative to it.
    pub fn compile(config: &HasuraBackendConfig, secrets: &Section<'_>) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let admin_secret = secrets.secret("admin_secret", &config.admin_secret);
        if config.admin_secret.is_empty() {
            problems.push(Problem::new("admin_secret", "must not be empty"));
        }
        if !is_header_value(&config.admin_secret) {
            problems.push(Problem::new("admin_secret", "contains control characters (a stray newline?)"));
        }
        match config.unauthorized_role.as_deref() {
            Some("") => problems
                .push(Problem::new("unauthorized_role", "must not be empty (omit it to deny token-less requests)")),
            Some(role) if !is_header_value(role) => {
                problems.push(Problem::new("unauthorized_role", "contains control characters"))
            }
            _ => {}
        }
        let claims = ClaimsSettings::from_parts(
            config.claims_namespace.as_deref(),
            config.claims_namespace_path.as_deref(),
            config.claims_format,
            config.claims_map.as_ref(),
        )
        .map_err(|found| problems.extend(found))
        .ok();
        match claims {
            Some(claims) if problems.is_empty() => Ok(HasuraBackend {
                admin_secret,
                unauthorized_role: config.unauthorized_role.clone(),
                claims,
                forward_token: config.forward_token,
                websocket: config.websocket,
            }),
            _ => Err(problems),
        }
    }

    pub fn precheck(&self, request: &HttpRequest) -> Option<Refusal> {
        (is_websocket_upgrade(request) && self.websocket == WebsocketMode::Deny).then(|| Refusal {
            code: "access-denied",
            message: "websocket connections are not accepted on this route".into(),
        })
    }

    pub fn authorize(&self, auth: &Authenticated<'_>) -> Result<Mutations, Refusal> {
        if is_websocket_upgrade(auth.request) {
            return Ok(websocket_mutations(auth.request));
        }
        let settings = auth.issuer.hasura_claims.as_ref().unwrap_or(&self.claims);
        let requested = requested_role(auth.request);
        let session = settings
            .session(&auth.token.claims, requested)
            .map_err(|err| Refusal { code: err.code, message: err.message })?;
        let mut mutations = self.session_mutations(&session.role, session.variables.into_iter());
        mutations.strip_client_headers(auth.request, "x-hasura-");
        if !self.forward_token
            && let TokenFrom::Header { header, .. } = auth.token_from()
        {
            mutations.remove([header.clone()]);
        }
        Ok(mutations)
    }

    /// No token: the unauthorized role alone, with no other session variable
    /// (stricter than Hasura, which would pass the client's own headers).
    pub fn anonymous(&self, request: &HttpRequest) -> Option<Mutations> {
        if is_websocket_upgrade(request) {
            let open = self.websocket == WebsocketMode::Passthrough || self.unauthorized_role.is_some();
            return open.then(|| websocket_mutations(request));
        }
        let role = self.unauthorized_role.as_ref()?;
        let mut mutations = self.session_mutations(role, std::iter::empty());
        mutations.strip_client_headers(request, "x-hasura-");
        Some(mutations)
    }

    fn session_mutations(&self, role: &str, variables: impl Iterator<Item = (String, String)>) -> Mutations {
        let mut mutations = Mutations::default();
        mutations.set_secret(ADMIN_SECRET, &self.admin_secret);
        mutations.set_headers.push(("x-hasura-role".into(), role.into()));
        mutations.set_headers.extend(variables);
        mutations
    }
}

fn websocket_mutations(request: &HttpRequest) -> Mutations {
    let mut mutations = Mutations::default();
    mutations.strip_client_headers(request, "x-hasura-");
    mutations
}

/// `Upgrade: websocket` (token list, case-insensitive).
pub fn is_websocket_upgrade(request: &HttpRequest) -> bool {
    request
        .header("upgrade")
        .is_some_and(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("websocket")))
}

/// The client's `x-hasura-role`: the first value if repeated, empty = none.
fn requested_role(request: &HttpRequest) -> Option<&str> {
    request
        .header("x-hasura-role")
        .map(|value| value.split(',').next().unwrap_or_default().trim())
        .filter(|role| !role.is_empty())
}
