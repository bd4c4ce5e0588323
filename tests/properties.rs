//! Properties of the decision path on generated input (proptest), each driven
//! through the real `Authorizer` on a compiled policy:
//!
//! - route matching agrees with a reference model of the documented semantics
//!   (docs/configuration.md "Routes"): generated paths with percent-escapes,
//!   dot-segments, `;` parameters, queries; hosts with ports, IPv6, userinfo;
//!   routes with prefixes, exact paths (written escaped or not), host patterns
//!   and methods; routes refused at load as never applying (an earlier route
//!   shadows them) are left out, and the model, which keeps them, still agrees;
//! - a route reported as shadowing another matches every request, of the
//!   model's and of the real matcher, that the other matches;
//! - a Hasura session reaches Hasura only as `x-hasura-*` headers, none of them
//!   privileged, whatever the token's claims or the `claims_map` say;
//! - every decision's header mutations are valid HTTP header names and values,
//!   for generated requests carrying generated (validly signed) claims.
//!
//! The invariants shared with the fuzz targets live in fuzz/harness.
//!
//! Each property runs 256 cases from a fixed seed, so `cargo test` is
//! deterministic; `PROPTEST_CASES` and `PROPTEST_RNG_SEED` explore further
//! (docs/reliability.md). Failures proptest finds are kept in
//! tests/properties.proptest-regressions and replayed first.

#[allow(dead_code)]
#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::collections::BTreeMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use harness::fixtures::{self, ADMIN_SECRET, Answer, HASURA_PRIVILEGED, HS_SECRET, NOW};
use jsonwebtoken::{EncodingKey, Header};
use portcullis::admission::Admitted;
use portcullis::authz::Authorizer;
use portcullis::decision::{Decision, DenyReason};
use portcullis::face::ext_authz_grpc;
use portcullis::request::RequestProblem;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::RngSeed;
use serde_json::{Value, json};

/// A CheckRequest as Envoy sends it; `pseudo` puts the request line in
/// `:method`/`:path`/`:authority` headers instead of the attribute fields.
fn check_request(
    method: &str,
    path: &str,
    authority: &str,
    headers: &[(String, String)],
    pseudo: bool,
) -> CheckRequest {
    let mut http = HttpRequest::default();
    if pseudo {
        for (name, value) in [(":method", method), (":path", path), (":authority", authority)] {
            http.headers.insert(name.into(), value.into());
        }
    } else {
        (http.method, http.path, http.host) = (method.into(), path.into(), authority.into());
    }
    for (name, value) in headers {
        http.headers.insert(name.clone(), value.clone());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

/// The seed `cargo test` runs from unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 0x706f_7274_6375_6c6c;

/// proptest's defaults (256 cases, `PROPTEST_*` variables honoured) with a fixed seed.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config
}

fn sign(claims: &Value) -> String {
    let key = EncodingKey::from_secret(HS_SECRET.as_bytes());
    jsonwebtoken::encode(&Header::default(), claims, &key).expect("signing claims")
}

// ---------------------------------------------------------------------------
// Route matching against a reference model.

/// One piece of a generated path segment, with what it means once decoded.
#[derive(Debug, Clone)]
enum Atom {
    Literal(&'static str),
    /// `%XX` of this byte; `true` writes the hex digits in lower case.
    Escape(u8, bool),
    /// Not a complete escape, whatever follows it.
    Broken(&'static str),
}

#[derive(Debug, Clone)]
struct Segment {
    atoms: Vec<Atom>,
    /// A `;` path parameter written after the segment.
    parameters: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct RawPath {
    segments: Vec<Segment>,
    /// Query and/or fragment, never routed on.
    suffix: &'static str,
}

impl RawPath {
    fn render(&self) -> String {
        let segments: Vec<String> = self
            .segments
            .iter()
            .map(|segment| {
                let mut text: String = segment
                    .atoms
                    .iter()
                    .map(|atom| match atom {
                        Atom::Literal(text) | Atom::Broken(text) => (*text).to_string(),
                        Atom::Escape(byte, false) => format!("%{byte:02X}"),
                        Atom::Escape(byte, true) => format!("%{byte:02x}"),
                    })
                    .collect();
                text.push_str(segment.parameters.unwrap_or_default());
                text
            })
            .collect();
        format!("/{}{}", segments.join("/"), self.suffix)
    }
}

/// What the documentation promises for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Allow(String),
    RouteDenies(String),
    NoRoute,
    AmbiguousPath,
    MalformedAuthority,
    PathParameters(String),
}

/// The canonical path (decoded once, `;` parameters removed) and whether it
/// had parameters; `None` when the path is ambiguous and must be refused.
fn model_path(path: &RawPath) -> Option<(String, bool)> {
    let raw = path.render();
    let before_query = raw.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    // `%25` before two hex digits decodes to a new escape for a second decoder.
    let double_encoded = before_query.match_indices("%25").any(|(at, _)| {
        let next = before_query.as_bytes().get(at + 3..at + 5);
        next.is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit))
    });
    if double_encoded {
        return None;
    }
    let mut names = Vec::new();
    let mut had_parameters = false;
    for segment in &path.segments {
        let mut bytes = Vec::new();
        for atom in &segment.atoms {
            match atom {
                Atom::Literal(text) => bytes.extend_from_slice(text.as_bytes()),
                Atom::Escape(b'/' | b'\\', _) | Atom::Broken(_) => return None,
                Atom::Escape(byte, _) => bytes.push(*byte),
            }
        }
        bytes.extend_from_slice(segment.parameters.unwrap_or_default().as_bytes());
        let decoded = String::from_utf8(bytes).ok()?;
        if decoded.contains('\\') || decoded.chars().any(char::is_control) {
            return None;
        }
        let name = match decoded.split_once(';') {
            Some((name, _)) => {
                had_parameters = true;
                name.to_string()
            }
            None => decoded,
        };
        if name == "." || name == ".." {
            return None;
        }
        names.push(name);
    }
    // An empty name anywhere but at the end is a repeated slash.
    if names.iter().rev().skip(1).any(String::is_empty) {
        return None;
    }
    Some((format!("/{}", names.join("/")), had_parameters))
}

#[derive(Debug, Clone)]
enum HostName {
    Labels(Vec<&'static str>, bool),
    /// A bracketed literal and whether it is an IPv6 address.
    Ipv6(&'static str, bool),
}

#[derive(Debug, Clone)]
struct Authority {
    userinfo: bool,
    host: HostName,
    /// `:port` text and whether it is a numeric port.
    port: Option<(&'static str, bool)>,
}

impl Authority {
    fn render(&self) -> String {
        let host = match &self.host {
            HostName::Labels(labels, trailing_dot) => {
                format!("{}{}", labels.join("."), if *trailing_dot { "." } else { "" })
            }
            HostName::Ipv6(literal, _) => (*literal).to_string(),
        };
        let userinfo = if self.userinfo { "user@" } else { "" };
        format!("{userinfo}{host}{}", self.port.map_or("", |(port, _)| port))
    }

    /// The host routes see, or `None` when the authority is not `host[:port]`.
    fn model_host(&self) -> Option<String> {
        // No authority at all: an empty host, which only host-less routes match.
        if self.render().is_empty() {
            return Some(String::new());
        }
        if self.userinfo || self.port.is_some_and(|(_, numeric)| !numeric) {
            return None;
        }
        match &self.host {
            HostName::Labels(labels, _) => {
                let label_ok = |label: &&str| {
                    !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                };
                (!labels.is_empty() && labels.iter().all(label_ok)).then(|| labels.join(".").to_ascii_lowercase())
            }
            HostName::Ipv6(literal, valid) => valid.then(|| literal.to_ascii_lowercase()),
        }
    }
}

/// Route path patterns as written, and the canonical path each stands for.
const PATTERNS: [(&str, &str); 10] = [
    ("/", "/"),
    ("/api/", "/api/"),
    ("/%61pi/", "/api/"),
    ("/api", "/api"),
    ("/a/b", "/a/b"),
    ("/%24", "/$"),
    ("/caf%C3%A9/", "/café/"),
    ("/v1/graphql", "/v1/graphql"),
    ("/a", "/a"),
    ("/x/", "/x/"),
];

#[derive(Debug, Clone)]
enum PathPattern {
    Any,
    Prefix(usize),
    Exact(usize),
}

#[derive(Debug, Clone)]
struct RouteSpec {
    path: PathPattern,
    hosts: Vec<&'static str>,
    methods: Vec<&'static str>,
    deny: bool,
    allow_path_parameters: bool,
}

impl RouteSpec {
    fn config(&self, index: usize) -> Value {
        let mut matcher = json!({});
        match self.path {
            PathPattern::Any => {}
            PathPattern::Prefix(at) => matcher["prefix"] = json!(PATTERNS[at].0),
            PathPattern::Exact(at) => matcher["path"] = json!(PATTERNS[at].0),
        }
        if !self.hosts.is_empty() {
            matcher["hosts"] = json!(self.hosts);
        }
        if !self.methods.is_empty() {
            matcher["methods"] = json!(self.methods);
        }
        json!({
            "name": format!("r{index}"),
            "match": matcher,
            "action": if self.deny { "deny" } else { "allow" },
            "allow_path_parameters": self.allow_path_parameters,
        })
    }

    fn matches(&self, path: &str, host: &str, method: &str) -> bool {
        let path_ok = match self.path {
            PathPattern::Any => true,
            PathPattern::Prefix(at) => path.starts_with(PATTERNS[at].1),
            PathPattern::Exact(at) => path == PATTERNS[at].1,
        };
        // `*.example.com`: one or more labels, then the suffix; never the apex.
        let host_ok = self.hosts.is_empty()
            || self.hosts.iter().map(|pattern| pattern.to_ascii_lowercase()).any(|pattern| {
                match pattern.strip_prefix("*.") {
                    Some(suffix) => host
                        .strip_suffix(suffix)
                        .and_then(|labels| labels.strip_suffix('.'))
                        .is_some_and(|labels| !labels.is_empty()),
                    None => pattern == host,
                }
            });
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method));
        path_ok && host_ok && method_ok
    }
}

/// The documented outcome: an ambiguous path, then a malformed authority, is
/// refused before routing; the first matching route decides; `;` parameters
/// are refused by a route that does not allow them.
fn model(routes: &[RouteSpec], method: &str, path: &RawPath, authority: &Authority) -> Outcome {
    let Some((canonical, had_parameters)) = model_path(path) else { return Outcome::AmbiguousPath };
    let Some(host) = authority.model_host() else { return Outcome::MalformedAuthority };
    let Some((index, route)) = routes.iter().enumerate().find(|(_, route)| route.matches(&canonical, &host, method))
    else {
        return Outcome::NoRoute;
    };
    let name = format!("r{index}");
    match (had_parameters && !route.allow_path_parameters, route.deny) {
        (true, _) => Outcome::PathParameters(name),
        (false, true) => Outcome::RouteDenies(name),
        (false, false) => Outcome::Allow(name),
    }
}

fn observed(decision: &Decision) -> Outcome {
    match decision {
        Decision::Allow(allowed) => Outcome::Allow(allowed.route.to_string()),
        Decision::Deny(denied) => {
            let route = denied.route.as_deref().unwrap_or_default().to_string();
            match &denied.reason {
                DenyReason::NoRoute => Outcome::NoRoute,
                DenyReason::RouteDenies => Outcome::RouteDenies(route),
                DenyReason::InvalidRequest(RequestProblem::AmbiguousPath) => Outcome::AmbiguousPath,
                DenyReason::InvalidRequest(RequestProblem::MalformedAuthority) => Outcome::MalformedAuthority,
                DenyReason::InvalidRequest(RequestProblem::PathParameters) => Outcome::PathParameters(route),
                other => panic!("a route-only policy denied for {other:?}"),
            }
        }
    }
}

/// Mostly pieces a path may well hold, so that most cases reach routing; now
/// and then one that makes it ambiguous: `..`, a backslash, a control
/// character, an escaped `/`, `\` or `%`, invalid UTF-8, a broken escape.
fn atom() -> impl Strategy<Value = Atom> {
    let literal = select(vec!["a", "b", "api", "v1", "graphql", "x", "-", "_", "~", "$", "é", ".", ":", "@"]);
    let escape = select(vec![b'a', b'p', b'$', b'.', b';', b'?', b'#', b' ', b':', b'2', b'5']);
    let hostile_literal = select(vec!["..", "\\", "\t"]);
    let hostile_escape = select(vec![b'/', b'\\', b'%', 0x00, b'\n', 0x7f, 0xC3, 0xA9, 0xFF]);
    let broken = select(vec!["%zz", "%g1", "%4g", "%"]);
    prop_oneof![
        12 => literal.prop_map(Atom::Literal),
        4 => (escape, any::<bool>()).prop_map(|(byte, lower)| Atom::Escape(byte, lower)),
        1 => hostile_literal.prop_map(Atom::Literal),
        1 => (hostile_escape, any::<bool>()).prop_map(|(byte, lower)| Atom::Escape(byte, lower)),
        1 => broken.prop_map(Atom::Broken),
    ]
}

/// A whole segment the route patterns name, written plainly or escaped.
fn word() -> impl Strategy<Value = Vec<Atom>> {
    use Atom::{Escape, Literal};
    select(vec![
        vec![Literal("api")],
        vec![Escape(b'a', false), Literal("pi")],
        vec![Literal("a")],
        vec![Literal("b")],
        vec![Literal("x")],
        vec![Literal("v1")],
        vec![Literal("graphql")],
        vec![Literal("caf"), Escape(0xC3, false), Escape(0xA9, true)],
        vec![Literal("café")],
        vec![Literal("$")],
        vec![Escape(b'$', false)],
    ])
}

fn raw_path() -> impl Strategy<Value = RawPath> {
    let parameters = prop_oneof![
        8 => Just(None),
        1 => select(vec![";", ";x=1", ";jsessionid=2"]).prop_map(Some),
    ];
    let atoms = prop_oneof![
        8 => word(),
        4 => prop::collection::vec(atom(), 1..4),
        // An empty segment: a trailing slash at the end, a repeated slash elsewhere.
        1 => Just(Vec::new()),
    ];
    let segment = (atoms, parameters).prop_map(|(atoms, parameters)| Segment { atoms, parameters });
    let suffix = select(vec!["", "", "", "?q=1", "?a=../b%2F", "#frag", "?x#y"]);
    (prop::collection::vec(segment, 1..5), suffix).prop_map(|(segments, suffix)| RawPath { segments, suffix })
}

fn authority() -> impl Strategy<Value = Authority> {
    let split = |host: &'static str| host.split('.').collect::<Vec<_>>();
    let known = select(vec![
        "api.example.com",
        "API.Example.COM",
        "example.com",
        "a.apps.example.com",
        "x.y.apps.example.com",
        "apps.example.com",
        "my_host.x-y.example.com",
        "other.test",
        "localhost",
    ])
    .prop_map(split);
    let odd =
        prop::collection::vec(select(vec!["api", "example", "com", "apps", "a", "x..y", "a b", "ex%2e", "é"]), 0..4);
    let labels = prop_oneof![9 => known, 1 => odd];
    let name = (labels, prop::bool::weighted(0.2)).prop_map(|(labels, dot)| HostName::Labels(labels, dot));
    let ipv6 = select(vec![
        ("[::1]", true),
        ("[2001:DB8::1]", true),
        ("[::ffff:1.2.3.4]", true),
        ("[nope]", false),
        ("[::1", false),
    ])
    .prop_map(|(literal, valid)| HostName::Ipv6(literal, valid));
    let port = prop_oneof![
        6 => Just(None),
        3 => select(vec![":443", ":8080", ":1"]).prop_map(|port| Some((port, true))),
        1 => select(vec![":", ":abc", ":443:443", ":-1"]).prop_map(|port| Some((port, false))),
    ];
    (prop::bool::weighted(0.03), prop_oneof![9 => name, 1 => ipv6], port).prop_map(|(userinfo, host, port)| Authority {
        userinfo,
        host,
        port,
    })
}

fn route_spec() -> impl Strategy<Value = RouteSpec> {
    let path = prop_oneof![
        2 => Just(PathPattern::Any),
        4 => (0..PATTERNS.len()).prop_map(PathPattern::Prefix),
        2 => (0..PATTERNS.len()).prop_map(PathPattern::Exact),
    ];
    let hosts = prop::sample::subsequence(
        vec!["api.example.com", "API.example.com", "*.example.com", "*.apps.example.com", "[::1]"],
        0..3,
    );
    let methods = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::sample::subsequence(vec!["GET", "post", "DELETE"], 1..3),
    ];
    (path, prop::bool::weighted(0.4), hosts, methods, any::<bool>(), prop::bool::weighted(0.3)).prop_map(
        |(path, use_hosts, hosts, methods, deny, allow_path_parameters)| RouteSpec {
            path,
            hosts: if use_hosts { hosts } else { Vec::new() },
            methods,
            deny,
            allow_path_parameters,
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn route_matching_agrees_with_the_documented_model(
        routes in prop::collection::vec(route_spec(), 1..6),
        method in select(vec!["GET", "get", "POST", "DELETE", "PUT"]),
        path in raw_path(),
        authority in authority(),
        pseudo in any::<bool>(),
    ) {
        let authorizer = Authorizer::new(compile_reachable(&routes));
        let check = check_request(method, &path.render(), &authority.render(), &[], pseudo);
        let decision = fixtures::block_on(ext_authz_grpc::decide_check(&authorizer, &check));
        prop_assert_eq!(observed(&decision), model(&routes, method, &path, &authority), "path {:?} authority {:?}", path.render(), authority.render());
    }
}

/// The routes as a policy. Routes refused as never applying (an earlier one
/// matches every request they match) are left out and the rest compiled: the
/// model, which keeps them, must still agree, since first match wins.
fn compile_reachable(routes: &[RouteSpec]) -> portcullis::policy::Policy {
    let config = |keep: &dyn Fn(usize) -> bool| {
        let kept = routes.iter().enumerate().filter(|(index, _)| keep(*index));
        json!({ "routes": kept.map(|(index, route)| route.config(index)).collect::<Vec<_>>() })
    };
    let Err(err) = fixtures::try_policy(&config(&|_| true)) else {
        return fixtures::policy(&config(&|_| true));
    };
    let unreachable: Vec<usize> = err
        .problems
        .iter()
        .map(|problem| {
            assert!(problem.message.starts_with("never applies"), "{problem}");
            let index = problem.path.strip_prefix("routes[").and_then(|rest| rest.strip_suffix("].match"));
            index.and_then(|index| index.parse().ok()).unwrap_or_else(|| panic!("{problem}"))
        })
        .collect();
    fixtures::policy(&config(&|index| !unreachable.contains(&index)))
}

/// Canonical paths around the route patterns: each pattern, and more after it.
fn routed_path() -> impl Strategy<Value = String> {
    let base = select(PATTERNS.iter().map(|(_, canonical)| *canonical).collect::<Vec<_>>());
    (base, select(vec!["", "", "x", "/", "/y", "pi/", "/graphql"])).prop_map(|(base, more)| format!("{base}{more}"))
}

fn routed_host() -> impl Strategy<Value = &'static str> {
    select(vec![
        "api.example.com",
        "example.com",
        "a.apps.example.com",
        "x.y.apps.example.com",
        "apps.example.com",
        "other.test",
        "[::1]",
        "",
    ])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_shadowing_route_matches_every_request_the_shadowed_one_does(
        specs in prop::collection::vec(route_spec(), 8),
        requests in prop::collection::vec((select(vec!["GET", "POST", "DELETE", "PUT"]), routed_path(), routed_host()), 32),
    ) {
        let policies: Vec<_> = specs.iter().map(|spec| fixtures::policy(&json!({ "routes": [spec.config(0)] }))).collect();
        let compiled: Vec<_> = policies.iter().map(|policy| &policy.router.routes()[0]).collect();
        for (earlier, first) in specs.iter().zip(&compiled) {
            for (later, second) in specs.iter().zip(&compiled).filter(|(_, second)| first.shadows(second)) {
                for (method, path, host) in &requests {
                    if later.matches(path, host, method) {
                        prop_assert!(earlier.matches(path, host, method), "model: {method} {host}{path}, {earlier:?} shadows {later:?}");
                    }
                    let request = portcullis::request::HttpRequest::new(method, path, host, []);
                    if second.matches(&request) {
                        prop_assert!(first.matches(&request), "matcher: {method} {host}{path}, {earlier:?} shadows {later:?}");
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Hasura sessions reach Hasura only as unprivileged x-hasura-* headers.

/// Claim names a token or a `claims_map` might try: session variables in any
/// case, and the headers Hasura trusts with the admin secret ...
const SESSION_NAMES: [&str; 12] = [
    "x-hasura-user-id",
    "X-Hasura-User-Id",
    "x-hasura-org-id",
    "x-hasura-admin-secret",
    "X-Hasura-Admin-Secret",
    "x-hasura-access-key",
    "x-hasura-role",
    "X-HASURA-ROLE",
    "x-hasura-use-backend-only-permissions",
    "X-Hasura-Backend-Only-Permissions",
    "x-hasura-allowed-roles",
    "x-hasura-default-role",
];

/// ... now and then a header outside `x-hasura-*` or a name that is not a header name at all.
const OTHER_NAMES: [&str; 8] = [
    "authorization",
    "content-length",
    "apikey",
    "host",
    "x-hasura-a b",
    "x-hasura-é",
    "X-Hasura-\u{130}d",
    "x-hasura-",
];

fn claim_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => select(SESSION_NAMES.to_vec()), 1 => select(OTHER_NAMES.to_vec())]
}

/// Mostly roles Hasura accepts, now and then one it refuses.
fn role() -> impl Strategy<Value = &'static str> + Clone {
    prop_oneof![8 => select(vec!["user", "editor", "admin", "Admin"]), 1 => select(vec!["", "a\nb"])]
}

fn claim_value() -> impl Strategy<Value = Value> {
    let text = select(vec!["42", "", "a\tb", "x\r\nx-hasura-role: admin", "é", " padded ", "admin"])
        .prop_map(|text| json!(text));
    prop_oneof![
        12 => text,
        1 => any::<i32>().prop_map(|number| json!(number)),
        1 => any::<bool>().prop_map(|flag| json!(flag)),
        1 => prop::collection::vec(role(), 0..3).prop_map(|items| json!(items)),
        1 => Just(json!({"nested": "x"})),
    ]
}

/// A `claims_map` entry: a path (with or without a default) or a literal.
fn map_entry() -> impl Strategy<Value = Value> {
    let path =
        select(vec!["$.sub", "$.sub", "$.sub", "$.org", "$.roles", "$.role", "$.missing", "$.nested.x", "$.roles[0]"]);
    prop_oneof![
        3 => path.clone().prop_map(|path| json!({"path": path})),
        2 => (path, claim_value()).prop_map(|(path, default)| json!({"path": path, "default": default})),
        1 => claim_value(),
    ]
}

#[derive(Debug, Clone)]
struct HasuraCase {
    /// The token's Hasura namespace (default settings) ...
    namespace: BTreeMap<&'static str, Value>,
    /// ... or a claims_map on the backend.
    claims_map: Option<BTreeMap<&'static str, Value>>,
    /// Top-level claims the claims_map paths read.
    top: Value,
    requested_role: Option<&'static str>,
    client_headers: Vec<(&'static str, &'static str)>,
}

fn hasura_case() -> impl Strategy<Value = HasuraCase> {
    let allowed = prop::collection::vec(role(), 0..4);
    // Mostly a usable role setup, so that most cases reach a session.
    let default = select(vec!["user", "user", "user", "editor", "", "a\nb"]);
    let namespace = (prop::collection::btree_map(claim_name(), claim_value(), 0..4), allowed.clone(), default)
        .prop_map(|(mut namespace, mut allowed, default)| {
            allowed.push("user");
            namespace.entry("x-hasura-allowed-roles").or_insert(json!(allowed));
            namespace.entry("x-hasura-default-role").or_insert(json!(default));
            namespace
        });
    let claims_map = prop::option::weighted(0.5, prop::collection::btree_map(claim_name(), map_entry(), 0..5))
        .prop_map(|map| {
            map.map(|mut map| {
                map.entry("x-hasura-allowed-roles")
                    .or_insert(json!({"path": "$.missing", "default": ["user", "editor", "admin"]}));
                map.entry("x-hasura-default-role").or_insert(json!("user"));
                map
            })
        });
    let top = (allowed, role(), claim_value(), claim_value()).prop_map(
        |(roles, role, org, nested)| json!({"roles": roles, "role": role, "org": org, "nested": {"x": nested}}),
    );
    let client = prop::sample::subsequence(
        vec![
            ("x-hasura-admin-secret", "guess"),
            ("x-hasura-user-id", "1"),
            ("x-hasura-allowed-roles", "admin"),
            ("x-hasura-use-backend-only-permissions", "true"),
        ],
        0..3,
    );
    (namespace, claims_map, top, prop::option::weighted(0.3, role()), client).prop_map(
        |(namespace, claims_map, top, requested_role, client_headers)| HasuraCase {
            namespace,
            claims_map,
            top,
            requested_role,
            client_headers,
        },
    )
}

fn hasura_config(claims_map: Option<&BTreeMap<&'static str, Value>>) -> Value {
    let mut backend = json!({"type": "hasura", "admin_secret": ADMIN_SECRET});
    if let Some(map) = claims_map {
        backend["claims_map"] = json!(map);
    }
    json!({
        "cache": {"tokens": 0},
        "issuers": {"hs": {"issuer": "https://hs.fuzz.test", "secret": HS_SECRET}},
        "backends": {"hasura": backend},
        "routes": [{"name": "graphql", "match": {"prefix": "/v1/graphql"}, "backend": "hasura"}],
    })
}

proptest! {
    #![proptest_config(config())]

    /// "Privileged" ([`HASURA_PRIVILEGED`]): the headers Hasura trusts, once the
    /// admin secret is present, to say who the caller is and what it may do:
    /// `x-hasura-admin-secret` and its legacy name `x-hasura-access-key`,
    /// `x-hasura-role`, the role lists `x-hasura-allowed-roles` and
    /// `x-hasura-default-role`, and backend-only permissions. portcullis alone
    /// sets the admin secret (the configured one) and the role (the requested
    /// role, or the default, within the token's allowed roles); claims and
    /// `claims_map` entries may add session variables, never these. And nothing
    /// outside `x-hasura-*` is set on a Hasura route, so neither a token nor a
    /// `claims_map` key can reach `authorization`, `host` or `content-length`.
    #[test]
    fn hasura_sessions_are_unprivileged_x_hasura_headers(case in hasura_case()) {
        let Ok(policy) = fixtures::try_policy(&hasura_config(case.claims_map.as_ref())) else {
            // A claims_map the compile step refuses never derives a session.
            return Ok(());
        };
        let authorizer = Authorizer::new(policy);
        let mut claims = json!({"iss": "https://hs.fuzz.test", "sub": "user-1", "exp": NOW + 600, "https://hasura.io/jwt/claims": case.namespace});
        for (name, value) in case.top.as_object().expect("top-level claims") {
            claims[name] = value.clone();
        }
        let mut headers: Vec<(String, String)> = vec![("authorization".into(), format!("Bearer {}", sign(&claims)))];
        headers.extend(case.client_headers.iter().map(|(name, value)| (name.to_string(), value.to_string())));
        if let Some(role) = case.requested_role {
            headers.push(("x-hasura-role".into(), role.into()));
        }
        let check = check_request("POST", "/v1/graphql", "api.example.com", &headers, false);
        let response = fixtures::block_on(ext_authz_grpc::check(&authorizer, &check, Admitted(true)));
        let Answer::Allowed(allowed) = fixtures::check_response(&response) else { return Ok(()) };
        for name in allowed.set.keys() {
            prop_assert!(name.starts_with("x-hasura-"), "{name:?} set on a Hasura route");
            prop_assert!(!HASURA_PRIVILEGED.contains(&name.as_str()) || name == "x-hasura-admin-secret" || name == "x-hasura-role", "{name:?} came from claims");
        }
        prop_assert_eq!(allowed.set.get("x-hasura-admin-secret").map(String::as_str), Some(ADMIN_SECRET));
        let role = allowed.set.get("x-hasura-role").expect("a role").as_str();
        if case.claims_map.is_none() {
            let requested = case.requested_role.filter(|role| !role.trim().is_empty()).map(str::trim);
            let expected = requested.or(case.namespace["x-hasura-default-role"].as_str());
            prop_assert_eq!(Some(role), expected);
            let allowed_roles = case.namespace["x-hasura-allowed-roles"].as_array().expect("allowed roles were a list");
            prop_assert!(allowed_roles.iter().any(|allowed| allowed.as_str() == Some(role)), "{role:?} not allowed");
        }
        for (name, _) in &case.client_headers {
            prop_assert!(allowed.set.contains_key(*name) || allowed.removed.contains(*name), "client {name} reaches Hasura");
        }
    }
}

// ---------------------------------------------------------------------------
// Every decision's header mutations are sendable.

/// A token of the check fixture's `hs` or `cookie` issuer with generated claims.
fn token() -> impl Strategy<Value = (bool, String)> {
    let text = select(vec!["u1", "user-1", "", "a\r\nx-admin: 1", "é", "x\u{7f}", " "]);
    let hasura =
        (prop::collection::btree_map(claim_name(), claim_value(), 0..4), prop::collection::vec(role(), 0..3), role())
            .prop_map(|(mut namespace, allowed, default)| {
                namespace.insert("x-hasura-allowed-roles", json!(allowed));
                namespace.insert("x-hasura-default-role", json!(default));
                namespace
            });
    (any::<bool>(), text.clone(), claim_value(), claim_value(), hasura, prop::bool::weighted(0.2)).prop_map(
        move |(cookie, sub, org, groups, hasura, expired)| {
            let iss = if cookie { harness::check::COOKIE_ISSUER } else { harness::token::HS_ISSUER };
            let exp = if expired { NOW - 3600 } else { NOW + 600 };
            let claims = json!({
                "iss": iss, "aud": harness::token::AUDIENCE, "exp": exp, "sub": sub, "org": {"code": org}, "groups": groups,
                "roles": ["admin"], "scope": "admin:write", "https://hasura.io/jwt/claims": hasura,
            });
            (cookie, sign(&claims))
        },
    )
}

fn request_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let names = select(vec![
        "x-hasura-role",
        "x-hasura-admin-secret",
        "X-Hasura-User-Id",
        "apikey",
        "upgrade",
        "x-user-id",
        "x-org",
        "content-type",
        "x-custom_1",
        "x-hasura-user\0id",
        "cookie",
    ]);
    let values = select(vec!["admin", "websocket", "a=1", "", "é", "v\tw", "Bearer x"]);
    let other =
        prop::collection::vec((names, values).prop_map(|(name, value)| (name.to_string(), value.to_string())), 0..4);
    (prop::option::weighted(0.8, token()), other).prop_map(|(token, mut headers)| {
        match token {
            Some((true, token)) => headers.push(("cookie".into(), format!("{}={token}", harness::check::TOKEN_COOKIE))),
            Some((false, token)) => headers.push(("authorization".into(), format!("Bearer {token}"))),
            None => {}
        }
        headers
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decisions_only_send_valid_headers(
        method in select(vec!["GET", "POST", "DELETE"]),
        path in select(vec!["/healthz", "/v1/graphql", "/public/graphql", "/rest/v1/notes", "/pass/v1/x", "/api/orders", "/admin/users", "/dry/x", "/app;x/y", "/internal/x", "/nowhere"]),
        host in select(vec!["api.example.com", "a.apps.example.com:443", "other.test"]),
        headers in request_headers(),
        pseudo in any::<bool>(),
    ) {
        // decide() asserts every invariant of the check fuzz target, valid header names and values first.
        harness::check::decide(&check_request(method, path, host, &headers, pseudo));
    }
}
