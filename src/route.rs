//! Which rule applies? Routes are tried in order; the first match wins and no
//! match is a 403, so anything not written down is denied. Each route is
//! compiled once: its matcher, the issuers it accepts with the extractor for
//! their token locations, and its backend. Since the first match wins, a route
//! that an earlier one covers completely would never apply: that is a config
//! error ([`unreachable`]), as are two routes with one name.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::Backend;
use crate::config::{
    Action, BackendConfig, Declared, DefaultsConfig, ErrorStatus, Problem, RouteConfig, RouteMode, TokenFrom,
};
use crate::extract::Extractor;
use crate::identity::Identity;
use crate::issuer::Issuer;
use crate::request::{HttpRequest, canonical_path};
use crate::rules::Requirements;

pub struct Route {
    /// Shared with every decision and metric series that names the route.
    pub name: Arc<str>,
    /// Where it was written: `routes[position]`.
    pub position: usize,
    pub action: Action,
    /// Ids (positions in the policy) of the issuers this route accepts, in route order.
    pub issuers: Vec<usize>,
    /// Where those issuers' tokens are read from.
    pub extractor: Extractor,
    pub backend: Option<RouteBackend>,
    pub error_status: Option<ErrorStatus>,
    /// Requests with `;` path parameters may use this route.
    pub allow_path_parameters: bool,
    /// Who may call the route (`require:`), checked after verification.
    pub requirements: Option<Requirements>,
    /// `mode: dry_run`: an unmet requirement is logged and counted, not enforced.
    pub dry_run: bool,
    /// Identity headers, exported claims, token forwarding.
    pub identity: Identity,
    path: PathMatch,
    hosts: Vec<String>,
    methods: Vec<String>,
}

/// A route's backend and the name it is reported under.
pub struct RouteBackend {
    pub name: Arc<str>,
    pub backend: Arc<Backend>,
}

#[derive(Debug, Clone)]
enum PathMatch {
    Any,
    Prefix(String),
    Exact(String),
}

/// What a route may name: the declared issuers and backends (also those whose
/// own compile failed, so a broken issuer is one problem, not one per route),
/// and the compiled ones.
pub struct Names<'a> {
    pub declared: &'a Declared,
    pub defaults: &'a DefaultsConfig,
    pub issuers: &'a [Arc<Issuer>],
    pub backend_configs: &'a BTreeMap<String, BackendConfig>,
    pub backends: &'a BTreeMap<String, Arc<Backend>>,
}

impl Route {
    /// Compiles `routes[position]`; problems have paths relative to it.
    pub fn compile(config: &RouteConfig, names: &Names<'_>) -> Result<Route, Vec<Problem>> {
        let mut problems = Vec::new();
        let path = path_match(config, &mut problems);
        check_action(config, &mut problems);
        check_references(config, names, &mut problems);
        let requirements = config.require.as_ref().and_then(|require| {
            let compiled = Requirements::compile(require);
            compiled.map_err(|found| problems.extend(found.into_iter().map(|problem| problem.under("require")))).ok()
        });
        let issuers: Vec<&Arc<Issuer>> = match &config.issuers {
            Some(wanted) => {
                wanted.iter().filter_map(|name| names.issuers.iter().find(|issuer| &*issuer.name == name)).collect()
            }
            None => names.issuers.iter().collect(),
        };
        let token_headers: Vec<String> = issuers
            .iter()
            .filter_map(|issuer| match &issuer.token_from {
                TokenFrom::Header { header, .. } => Some(header.clone()),
                TokenFrom::Cookie { .. } => None,
            })
            .collect();
        let backend_config = config.backend.as_ref().and_then(|name| names.backend_configs.get(name));
        let identity = Identity::compile(config, names.defaults, backend_config, &token_headers)
            .map_err(|found| problems.extend(found))
            .ok();
        let (Some(identity), true) = (identity, problems.is_empty()) else {
            return Err(problems);
        };
        let backend = config.backend.as_ref().and_then(|name| {
            let backend = names.backends.get(name)?;
            Some(RouteBackend { name: Arc::from(name.as_str()), backend: Arc::clone(backend) })
        });
        let matcher = &config.matcher;
        Ok(Route {
            name: Arc::from(effective_name(config)),
            position: config.position,
            action: config.action,
            extractor: Extractor::create(issuers.iter().map(|issuer| &issuer.token_from)),
            issuers: issuers.iter().map(|issuer| issuer.id).collect(),
            backend,
            error_status: config.error_status,
            allow_path_parameters: config.allow_path_parameters,
            requirements,
            dry_run: config.mode == RouteMode::DryRun,
            identity,
            path,
            hosts: matcher.hosts.iter().flatten().map(|host| host.to_ascii_lowercase()).collect(),
            methods: matcher.methods.iter().flatten().map(|method| method.to_ascii_uppercase()).collect(),
        })
    }

    /// The matcher in words: `prefix /api/, hosts a.example.com, methods GET`.
    pub fn describe_match(&self) -> String {
        let mut text = match &self.path {
            PathMatch::Any => "any path".to_string(),
            PathMatch::Prefix(prefix) => format!("prefix {prefix}"),
            PathMatch::Exact(path) => format!("path {path}"),
        };
        if !self.hosts.is_empty() {
            text.push_str(&format!(", hosts {}", self.hosts.join(" ")));
        }
        if !self.methods.is_empty() {
            text.push_str(&format!(", methods {}", self.methods.join(" ")));
        }
        text
    }

    pub fn matches(&self, request: &HttpRequest) -> bool {
        self.path_matches(&request.path) && self.host_matches(&request.host) && self.method_matches(&request.method)
    }

    /// Whether every request `later` matches, this route matches too, so that
    /// `later`, placed after it, never applies. Exact, dimension by dimension
    /// (a request matches when path, host and method all do): this route's
    /// path pattern covers `later`'s, its hosts cover `later`'s, its methods
    /// include `later`'s. A route only partly covered is not shadowed.
    pub fn shadows(&self, later: &Route) -> bool {
        path_covers(&self.path, &later.path)
            && hosts_cover(&self.hosts, &later.hosts)
            && (self.methods.is_empty()
                || (!later.methods.is_empty() && later.methods.iter().all(|method| self.methods.contains(method))))
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            PathMatch::Any => true,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
            PathMatch::Exact(exact) => path == exact,
        }
    }

    fn host_matches(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|pattern| host_matches(pattern, host))
    }

    fn method_matches(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|allowed| allowed == method)
    }
}

/// `routes[i]` unless the route is named.
fn effective_name(config: &RouteConfig) -> String {
    config.name.clone().unwrap_or_else(|| format!("routes[{}]", config.position))
}

/// Exact host, or `*.example.com` for any subdomain (not the apex).
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1 && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.')
        }
        None => pattern == host,
    }
}

/// Every path `inner` matches, `outer` matches. Prefixes are plain string
/// prefixes of the canonical path (no segment boundary: `/api` covers
/// `/apix`), as [`Route::path_matches`] applies them; both patterns are
/// canonical already. A prefix never covers "any path": request paths need not
/// start with `/` (`*`); an exact path never covers a prefix.
fn path_covers(outer: &PathMatch, inner: &PathMatch) -> bool {
    match (outer, inner) {
        (PathMatch::Any, _) => true,
        (PathMatch::Prefix(outer), PathMatch::Prefix(inner) | PathMatch::Exact(inner)) => {
            inner.starts_with(outer.as_str())
        }
        (PathMatch::Exact(outer), PathMatch::Exact(inner)) => outer == inner,
        (PathMatch::Prefix(_) | PathMatch::Exact(_), PathMatch::Any) | (PathMatch::Exact(_), PathMatch::Prefix(_)) => {
            false
        }
    }
}

/// Every host `inner` matches, `outer` matches: no hosts match them all;
/// otherwise each of `inner`'s patterns must be covered by one of `outer`'s
/// (a wildcard matches infinitely many hosts, which no set of exact hosts covers).
fn hosts_cover(outer: &[String], inner: &[String]) -> bool {
    outer.is_empty()
        || (!inner.is_empty()
            && inner.iter().all(|pattern| outer.iter().any(|covering| host_pattern_covers(covering, pattern))))
}

fn host_pattern_covers(outer: &str, inner: &str) -> bool {
    match (outer.strip_prefix("*."), inner.strip_prefix("*.")) {
        // `*.example.com` covers `*.apps.example.com`: a subdomain of a subdomain.
        (Some(outer), Some(inner)) => inner == outer || inner.ends_with(&format!(".{outer}")),
        (None, Some(_)) => false,
        (_, None) => host_matches(outer, inner),
    }
}

/// Routes that can never apply because an earlier route matches every request
/// they match (first match wins): one problem per such route at its
/// `routes[i].match`, naming the earlier route by its path.
pub fn unreachable(routes: &[Route]) -> Vec<Problem> {
    routes
        .iter()
        .enumerate()
        .filter_map(|(index, later)| {
            let earlier = routes[..index].iter().find(|earlier| earlier.shadows(later))?;
            let (at, before) = (later.position, earlier.position);
            Some(Problem::new(
                format!("routes[{at}].match"),
                format!(
                    "never applies: routes[{before}] comes first and matches every request this route matches (first match wins); move this route above routes[{before}], or narrow routes[{before}].match"
                ),
            ))
        })
        .collect()
}

/// Route names label decisions, logs, metrics and dynamic metadata, so each
/// is used once (an unnamed route is called `routes[i]`). Reported at the
/// later route's `name`, by path only: a name may hold an interpolated value.
pub fn duplicate_names(routes: &[RouteConfig]) -> Vec<Problem> {
    let names: Vec<String> = routes.iter().map(effective_name).collect();
    routes
        .iter()
        .enumerate()
        .filter_map(|(index, route)| {
            let first = names[..index].iter().position(|name| *name == names[index])?;
            let at = if route.name.is_some() {
                format!("routes[{}].name", route.position)
            } else {
                format!("routes[{}]", route.position)
            };
            Some(Problem::new(
                at,
                format!("the same name as routes[{}]: route names must be unique", routes[first].position),
            ))
        })
        .collect()
}

/// The path pattern, canonicalised like request paths (`/odata/%24batch` is
/// `/odata/$batch`): a pattern that has no canonical form could never match.
fn path_match(config: &RouteConfig, problems: &mut Vec<Problem>) -> PathMatch {
    let matcher = &config.matcher;
    if matcher.prefix.is_some() && matcher.path.is_some() {
        problems.push(Problem::new("match", "use either prefix or path, not both"));
    }
    let mut canonical = |key: &str, pattern: &String| {
        let at = format!("match.{key}");
        if !pattern.starts_with('/') {
            problems.push(Problem::new(&at, "must start with '/'"));
        }
        match canonical_path(pattern) {
            Err(_) => problems.push(Problem::new(
                at,
                "has dot-segments, repeated slashes, encoded slashes or broken escapes: requests like it are refused",
            )),
            Ok(canonical) if canonical.had_parameters => problems
                .push(Problem::new(at, "';' path parameters are removed before matching: write the path without them")),
            Ok(canonical) => return canonical.path,
        }
        pattern.clone()
    };
    match (&matcher.prefix, &matcher.path) {
        (prefix, Some(exact)) => {
            if let Some(prefix) = prefix {
                canonical("prefix", prefix);
            }
            PathMatch::Exact(canonical("path", exact))
        }
        (Some(prefix), None) => PathMatch::Prefix(canonical("prefix", prefix)),
        (None, None) => PathMatch::Any,
    }
}

fn check_action(config: &RouteConfig, problems: &mut Vec<Problem>) {
    for (index, method) in config.matcher.methods.iter().flatten().enumerate() {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            problems.push(Problem::new(format!("match.methods[{index}]"), "not an HTTP method"));
        }
    }
    if config.action != Action::Authenticate && config.issuers.is_some() {
        problems.push(Problem::new("issuers", "only meaningful with action: authenticate"));
    }
    if config.action != Action::Authenticate && config.require.is_some() {
        problems.push(Problem::new("require", "only meaningful with action: authenticate"));
    }
    if config.action != Action::Authenticate && config.mode == RouteMode::DryRun {
        problems.push(Problem::new("mode", "dry_run only applies to a route's require"));
    }
    // An allow route would skip the backend's header hygiene (client x-hasura-*
    // or apikey would pass untouched): use unauthorized_role / allow_anonymous.
    if config.action != Action::Authenticate && config.backend.is_some() {
        problems.push(Problem::new(
            "backend",
            "only used with action: authenticate (for token-less access use the backend's unauthorized_role or allow_anonymous)",
        ));
    }
}

/// Names used by a route must exist; a dangling name would otherwise deny or allow by accident.
/// The name itself is not quoted back: it is a value, and after `${...}`
/// substitution it may be a secret someone referenced by mistake. The declared
/// names are YAML keys, never substituted.
fn check_references(config: &RouteConfig, names: &Names<'_>, problems: &mut Vec<Problem>) {
    for (position, name) in config.issuers.iter().flatten().enumerate() {
        if !names.declared.issuers.contains(name) {
            problems.push(Problem::new(
                format!("issuers[{position}]"),
                format!(
                    "no issuer of that name is declared under issuers (declared: {})",
                    names.declared.issuers.join(", ")
                ),
            ));
        }
    }
    if config.issuers.as_ref().is_some_and(Vec::is_empty) {
        problems.push(Problem::new("issuers", "an empty list accepts no token; omit it to accept every issuer"));
    }
    if let Some(backend) = &config.backend
        && !names.declared.backends.contains(backend)
    {
        problems.push(Problem::new("backend", "no backend of that name is declared under backends"));
    }
    let hasura = config.backend.as_ref().and_then(|name| names.backend_configs.get(name));
    if config.error_status.is_some() && !matches!(hasura, Some(BackendConfig::Hasura(_))) {
        problems.push(Problem::new("error_status", "only applies to routes with a hasura backend"));
    }
    if config.action == Action::Authenticate && config.issuers.is_none() && names.declared.issuers.is_empty() {
        problems.push(Problem::new("", "authenticates tokens but no issuer is declared"));
    }
}

/// The ordered routes of one policy.
#[derive(Default)]
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
            position: 0,
            name: None,
            matcher,
            issuers: None,
            backend: None,
            action: Action::Allow,
            error_status: None,
            allow_path_parameters: false,
            require: None,
            mode: RouteMode::Enforce,
            headers: None,
            metadata_claims: None,
            forward_token: None,
        };
        let backends = BTreeMap::new();
        let declared = Declared::default();
        let defaults = DefaultsConfig::default();
        let names = Names {
            declared: &declared,
            defaults: &defaults,
            issuers: &[],
            backend_configs: &BTreeMap::new(),
            backends: &backends,
        };
        Route::compile(&config, &names).unwrap()
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

    #[test]
    fn patterns_are_canonical_and_described() {
        let escaped = route(MatchConfig { path: Some("/odata/%24batch".into()), ..Default::default() });
        assert!(escaped.matches(&request("POST", "/odata/$batch", "h")));
        assert!(escaped.matches(&request("POST", "/odata/%24batch", "h")));
        assert_eq!(escaped.describe_match(), "path /odata/$batch");
        let parameters = route(MatchConfig { prefix: Some("/internal/".into()), ..Default::default() });
        assert!(parameters.matches(&request("GET", "/internal;x/y", "h")), "routed without its parameters");
    }

    fn matcher(prefix: Option<&str>, path: Option<&str>, hosts: &[&str], methods: &[&str]) -> Route {
        let list = |items: &[&str]| (!items.is_empty()).then(|| items.iter().map(|item| item.to_string()).collect());
        route(MatchConfig {
            prefix: prefix.map(str::to_string),
            path: path.map(str::to_string),
            hosts: list(hosts),
            methods: list(methods),
        })
    }

    #[test]
    fn shadowing_is_containment_of_paths_hosts_and_methods() {
        let any = matcher(None, None, &[], &[]);
        let api = matcher(Some("/api/"), None, &[], &[]);
        let orders = matcher(Some("/api/orders/"), None, &[], &[]);
        let exact = matcher(None, Some("/api/orders/1"), &[], &[]);
        assert!(any.shadows(&api) && api.shadows(&orders) && api.shadows(&exact) && orders.shadows(&exact));
        assert!(api.shadows(&api), "the same match twice");
        assert!(!orders.shadows(&api) && !exact.shadows(&orders) && !api.shadows(&any));
        // Plain string prefixes, as matched: /api covers /apix, /api/ does not cover /api.
        assert!(matcher(Some("/api"), None, &[], &[]).shadows(&matcher(Some("/apix"), None, &[], &[])));
        assert!(!api.shadows(&matcher(None, Some("/api"), &[], &[])));
        // A prefix is not "any path": `*` (OPTIONS) matches no prefix.
        assert!(!matcher(Some("/"), None, &[], &[]).shadows(&any));
        // Patterns are compared canonical: /%61pi/ is /api/.
        assert!(matcher(Some("/%61pi/"), None, &[], &[]).shadows(&orders));
    }

    #[test]
    fn shadowing_needs_every_host_and_method_covered() {
        let api = |hosts: &[&str], methods: &[&str]| matcher(Some("/api/"), None, hosts, methods);
        assert!(api(&[], &[]).shadows(&api(&["a.example.com"], &["GET"])));
        assert!(!api(&["a.example.com"], &[]).shadows(&api(&[], &[])), "some hosts do not cover every host");
        assert!(!api(&[], &["GET"]).shadows(&api(&[], &[])), "some methods do not cover every method");
        assert!(api(&["A.example.com", "b.example.com"], &[]).shadows(&api(&["a.example.com"], &[])));
        assert!(!api(&["a.example.com"], &[]).shadows(&api(&["a.example.com", "c.example.com"], &[])));
        assert!(api(&[], &["get", "POST"]).shadows(&api(&[], &["post"])));
        assert!(!api(&[], &["GET"]).shadows(&api(&[], &["GET", "DELETE"])));
        // Wildcards: any subdomain, never the apex, and a subdomain of a subdomain.
        let wild = api(&["*.example.com"], &[]);
        assert!(wild.shadows(&api(&["a.example.com"], &[])));
        assert!(wild.shadows(&api(&["*.apps.example.com"], &[])));
        assert!(wild.shadows(&api(&["*.example.com"], &[])));
        assert!(!wild.shadows(&api(&["example.com"], &[])));
        assert!(!wild.shadows(&api(&["*.badexample.com"], &[])));
        assert!(!wild.shadows(&api(&["a.badexample.com"], &[])));
        assert!(!api(&["a.example.com"], &[]).shadows(&wild), "exact hosts never cover a wildcard");
        assert!(!api(&["*.apps.example.com"], &[]).shadows(&wild));
    }

    #[test]
    fn unreachable_routes_and_repeated_names_are_reported_by_path() {
        let mut routes = vec![
            matcher(Some("/api/"), None, &[], &[]),
            matcher(Some("/public/"), None, &[], &["GET"]),
            matcher(Some("/api/orders/"), None, &[], &[]),
            matcher(Some("/public/x"), None, &[], &["POST"]),
        ];
        for (position, route) in routes.iter_mut().enumerate() {
            route.position = position + 1;
        }
        let problems: Vec<String> = unreachable(&routes).iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "routes[3].match: never applies: routes[1] comes first and matches every request this route matches (first match wins); move this route above routes[1], or narrow routes[1].match"
            ]
        );
        let config = |position: usize, name: Option<&str>| -> RouteConfig {
            let mut text = String::from("{}");
            if let Some(name) = name {
                text = format!("{{ name: '{name}' }}");
            }
            let mut config: RouteConfig =
                crate::config::value_de::from_value(&serde_saphyr::from_str(&text).unwrap()).unwrap();
            config.position = position;
            config
        };
        let configs = [config(0, Some("a")), config(1, Some("a")), config(2, None), config(3, Some("routes[2]"))];
        let problems: Vec<String> = duplicate_names(&configs).iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "routes[1].name: the same name as routes[0]: route names must be unique",
                "routes[3].name: the same name as routes[2]: route names must be unique",
            ]
        );
    }

    #[test]
    fn compile_reports_problems_by_path() {
        let config = RouteConfig {
            position: 3,
            name: None,
            matcher: MatchConfig {
                prefix: Some("api/../x".into()),
                methods: Some(vec!["G3T".into()]),
                ..Default::default()
            },
            issuers: Some(vec!["nobody".into()]),
            backend: Some("missing".into()),
            action: Action::Authenticate,
            error_status: Some(ErrorStatus::Http),
            allow_path_parameters: false,
            require: None,
            mode: RouteMode::Enforce,
            headers: None,
            metadata_claims: None,
            forward_token: None,
        };
        let backends = BTreeMap::new();
        let declared = Declared { issuers: vec!["kinde".into()], backends: vec![] };
        let defaults = DefaultsConfig::default();
        let names = Names {
            declared: &declared,
            defaults: &defaults,
            issuers: &[],
            backend_configs: &BTreeMap::new(),
            backends: &backends,
        };
        let problems: Vec<String> =
            Route::compile(&config, &names).err().unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "match.prefix: must start with '/'",
                "match.prefix: has dot-segments, repeated slashes, encoded slashes or broken escapes: requests like it are refused",
                "match.methods[0]: not an HTTP method",
                "issuers[0]: no issuer of that name is declared under issuers (declared: kinde)",
                "backend: no backend of that name is declared under backends",
                "error_status: only applies to routes with a hasura backend",
            ]
        );
    }
}
