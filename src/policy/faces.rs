//! What the policy compiles for the faces: the name of each front door (for
//! metrics, logs and traces), the `faces:` settings and the `auth_hooks:`
//! routes. It lives with the policy, not with the faces, because the pipeline
//! and its observers read it while every face reads the pipeline: kept here,
//! the pipeline never imports a face.

use ipnet::IpNet;

use crate::config::{
    Action, AuthHookConfig, BackendConfig, ErrorStatus, FacesConfig, MatchConfig, Problem, Problems, RouteConfig,
    RouteMode,
};
use crate::route::{Names, Route};

/// The first path segment of the forward-auth face.
pub const FORWARD_AUTH_SEGMENT: &str = "forward-auth";
/// The first path segment of every Hasura auth hook.
pub const HASURA_SEGMENT: &str = "hasura";

/// `segment[/segment...]` of unreserved characters (letters, digits, `-._~`):
/// no empty segment (so no trailing `/`), no dot-segments.
fn plain_segments(path: &str) -> bool {
    path.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
    })
}

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

/// First path segments the fixed-path faces use (a `path_prefix` may not start with one).
pub const RESERVED_SEGMENTS: [&str; 3] = [FORWARD_AUTH_SEGMENT, HASURA_SEGMENT, "introspect"];

/// The faces' settings, compiled from `faces:`; they apply on reload.
#[derive(Debug, Clone)]
pub struct FaceSettings {
    /// Envoy's `http_service.path_prefix`.
    pub path_prefix: String,
    /// Peers whose forwarded headers are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl FaceSettings {
    pub fn compile(config: &FacesConfig, problems: &mut Problems) -> FaceSettings {
        let prefix = &config.ext_authz_http.path_prefix;
        if let Err(message) = check_path_prefix(prefix) {
            problems.push("faces.ext_authz_http.path_prefix", message);
        }
        let trusted_proxies = config
            .forward_auth
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(index, text)| match parse_network(text) {
                Some(network) => Some(network),
                None => {
                    let path = format!("faces.forward_auth.trusted_proxies[{index}]");
                    problems.push(path, "expected an address or a CIDR block (10.0.0.0/8, ::1/128)");
                    None
                }
            })
            .collect();
        FaceSettings { path_prefix: prefix.clone(), trusted_proxies }
    }
}

impl Default for FaceSettings {
    fn default() -> Self {
        FaceSettings::compile(&FacesConfig::default(), &mut Problems::default())
    }
}

/// An address is its own /32 (or /128).
fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// `/segment[/segment...]` of unreserved characters, no dot-segments, no
/// trailing `/`, and not a path another face answers on.
fn check_path_prefix(prefix: &str) -> Result<(), String> {
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err("must start with `/` (e.g. /envoy)".into());
    };
    if !plain_segments(rest) {
        return Err("must be `/` followed by plain path segments (letters, digits, `-._~`), no trailing `/`".into());
    }
    let first = rest.split('/').next().unwrap_or_default();
    if RESERVED_SEGMENTS.contains(&first) {
        return Err(format!("/{first} is where another face answers; choose another prefix"));
    }
    Ok(())
}

/// One compiled `auth_hooks` entry.
pub struct AuthHook {
    pub path: String,
    pub route: Route,
}

/// Compiles `auth_hooks`; problems are relative to `auth_hooks[i]`.
pub fn compile_auth_hooks(configs: &[AuthHookConfig], names: &Names<'_>) -> Result<Vec<AuthHook>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut hooks = Vec::new();
    for (index, config) in configs.iter().enumerate() {
        let at = format!("auth_hooks[{index}]");
        let mut found = Vec::new();
        if let Err(message) = check_path(&config.path) {
            found.push(Problem::new("path", message));
        }
        if configs[..index].iter().any(|earlier| earlier.path == config.path) {
            found.push(Problem::new("path", "another hook already answers on this path"));
        }
        match names.backend_configs.get(&config.backend) {
            Some(BackendConfig::Hasura(_)) => {}
            Some(_) => found.push(Problem::new("backend", "must name a backend of type hasura")),
            None => found.push(Problem::new("backend", "no backend of that name is declared under backends")),
        }
        let route = Route::compile(&route_config(index, config), names).map_err(|more| found.extend(more));
        match route {
            Ok(route) if found.is_empty() => hooks.push(AuthHook { path: config.path.clone(), route }),
            _ => problems.extend(found.into_iter().map(|problem| problem.under(&at))),
        }
    }
    if problems.is_empty() { Ok(hooks) } else { Err(problems) }
}

/// The route a hook decides on: authenticate with its issuers and backend.
fn route_config(index: usize, config: &AuthHookConfig) -> RouteConfig {
    RouteConfig {
        position: index,
        name: Some(format!("auth_hooks[{index}]")),
        matcher: MatchConfig::default(),
        issuers: config.issuers.clone(),
        backend: Some(config.backend.clone()),
        action: Action::Authenticate,
        error_status: Some(ErrorStatus::Http),
        allow_path_parameters: false,
        require: None,
        mode: RouteMode::Enforce,
        headers: None,
        metadata_claims: None,
        forward_token: None,
    }
}

/// `/hasura/` followed by plain segments (letters, digits, `-._~`), no trailing `/`.
fn check_path(path: &str) -> Result<(), String> {
    let rest = path.strip_prefix("/hasura/").ok_or("must start with /hasura/ (e.g. /hasura/webhook)")?;
    if plain_segments(rest) {
        Ok(())
    } else {
        Err("must be /hasura/ followed by plain path segments (letters, digits, `-._~`), no trailing `/`".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefixes_are_plain_paths_away_from_other_faces() {
        for good in ["/envoy", "/authz/envoy", "/a-b_c.d~"] {
            assert_eq!(check_path_prefix(good), Ok(()), "{good}");
        }
        for bad in ["", "envoy", "/", "/envoy/", "/a//b", "/a/../b", "/a b", "/forward-auth", "/hasura/x", "/%65"] {
            assert!(check_path_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_are_cidr_blocks_or_addresses() {
        assert_eq!(parse_network("10.0.0.0/8"), Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_network("192.0.2.7"), Some("192.0.2.7/32".parse().unwrap()));
        assert_eq!(parse_network("::1"), Some("::1/128".parse().unwrap()));
        assert_eq!(parse_network("10.0.0.0/33"), None);
        assert_eq!(parse_network("localhost"), None);
    }
    #[test]
    fn hook_paths_live_under_hasura() {
        for good in ["/hasura/webhook", "/hasura/a/b-c"] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        for bad in ["/webhook", "/hasura", "/hasura/", "/hasura/a/", "/hasura/../x", "/hasura/a b"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
