//! Which rule applies? Routes are tried in order; the first match wins and no
//! match is a 403, so anything not written down is denied.

use crate::config::{Action, ErrorStatus, RouteConfig};
use crate::request::{HttpRequest, canonical_path};

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub action: Action,
    /// Indices into the policy's issuers this route accepts.
    pub issuers: Vec<usize>,
    pub backend: Option<String>,
    pub error_status: Option<ErrorStatus>,
    /// Requests with `;` path parameters may use this route.
    pub allow_path_parameters: bool,
    path: PathMatch,
    hosts: Vec<String>,
    methods: Vec<String>,
}

#[derive(Debug, Clone)]
enum PathMatch {
    Any,
    Prefix(String),
    Exact(String),
}

impl Route {
    /// Compiles a validated route; `issuer_index` resolves names (validated to exist).
    pub fn compile(index: usize, config: &RouteConfig, issuer_names: &[String]) -> Route {
        let matcher = &config.matcher;
        // Patterns are canonicalised like request paths (`/odata/%24batch` is `/odata/$batch`).
        let canonical = |pattern: &String| canonical_path(pattern).map_or_else(|_| pattern.clone(), |c| c.path);
        let path = match (&matcher.prefix, &matcher.path) {
            (_, Some(exact)) => PathMatch::Exact(canonical(exact)),
            (Some(prefix), None) => PathMatch::Prefix(canonical(prefix)),
            (None, None) => PathMatch::Any,
        };
        let issuers = match &config.issuers {
            Some(names) => {
                names.iter().filter_map(|name| issuer_names.iter().position(|known| known == name)).collect()
            }
            None => (0..issuer_names.len()).collect(),
        };
        Route {
            name: config.name.clone().unwrap_or_else(|| format!("routes[{index}]")),
            action: config.action,
            issuers,
            backend: config.backend.clone(),
            error_status: config.error_status,
            allow_path_parameters: config.allow_path_parameters,
            path,
            hosts: matcher.hosts.iter().flatten().map(|host| host.to_ascii_lowercase()).collect(),
            methods: matcher.methods.iter().flatten().map(|method| method.to_ascii_uppercase()).collect(),
        }
    }

    pub fn matches(&self, request: &HttpRequest) -> bool {
        self.path_matches(&request.path) && self.host_matches(&request.host) && self.method_matches(&request.method)
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            PathMatch::Any => true,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatch::Exact(exact) => path == exact,
        }
    }

    /// Exact host, or `*.example.com` for any subdomain (not the apex).
    fn host_matches(&self, host: &str) -> bool {
        self.hosts.is_empty()
            || self.hosts.iter().any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    host.len() > suffix.len() + 1
                        && host.ends_with(suffix)
                        && host[..host.len() - suffix.len()].ends_with('.')
                }
                None => pattern == host,
            })
    }

    fn method_matches(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|allowed| allowed == method)
    }
}

/// The ordered routes of one policy.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Self {
        Router { routes }
    }

    pub fn route(&self, request: &HttpRequest) -> Option<&Route> {
        self.routes.iter().find(|route| route.matches(request))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MatchConfig;

    fn route(matcher: MatchConfig) -> Route {
        let config = RouteConfig {
            name: None,
            matcher,
            issuers: None,
            backend: None,
            action: Action::Authenticate,
            error_status: None,
            allow_path_parameters: false,
        };
        Route::compile(0, &config, &[])
    }

    fn request(method: &str, path: &str, host: &str) -> HttpRequest {
        HttpRequest::new(method, path, host, [])
    }

    #[test]
    fn prefix_exact_hosts_methods() {
        let prefix = route(MatchConfig { prefix: Some("/api/".into()), ..Default::default() });
        assert!(prefix.matches(&request("GET", "/api/x?q=1", "h")));
        assert!(!prefix.matches(&request("GET", "/apix", "h")));

        let exact = route(MatchConfig { path: Some("/healthz".into()), ..Default::default() });
        assert!(exact.matches(&request("GET", "/healthz?full=1", "h")));
        assert!(!exact.matches(&request("GET", "/healthz/x", "h")));

        let hosts = route(MatchConfig {
            hosts: Some(vec!["API.example.com".into(), "*.apps.example.com".into()]),
            ..Default::default()
        });
        assert!(hosts.matches(&request("GET", "/", "api.example.com:443")));
        assert!(hosts.matches(&request("GET", "/", "a.apps.example.com")));
        assert!(!hosts.matches(&request("GET", "/", "apps.example.com")));
        assert!(!hosts.matches(&request("GET", "/", "evilapps.example.com")));

        let methods = route(MatchConfig { methods: Some(vec!["post".into()]), ..Default::default() });
        assert!(methods.matches(&request("POST", "/", "h")));
        assert!(!methods.matches(&request("GET", "/", "h")));
    }
}
