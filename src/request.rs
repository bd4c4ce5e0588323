//! The neutral request view: the request as portcullis sees it, whichever face
//! it came through (each face in `face/` fills one in from its wire format).
//! Headers are one lower-cased map, repeated names joined with ",", so the
//! stages after this never care how they were encoded.
//!
//! Anything two parsers could read differently is marked as a
//! [`RequestProblem`] here and refused before routing: a path with dot-segments
//! or encoded slashes, an `:authority` that is not `host[:port]`, a header name
//! that is not a token, more headers than the configured limits. Routes then match one canonical form: the path
//! percent-decoded once, without `;` path parameters.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    /// The canonical path routes match on: without query string or fragment,
    /// percent-decoded once (`/%61dmin` is `/admin`), and without `;` path
    /// parameters (`/internal;x/y` is `/internal/y`, as servlet containers read it).
    pub path: String,
    /// Whether the path carried `;` parameters (refused unless the route allows them).
    path_parameters: bool,
    /// The raw query string (after `?`, without a fragment).
    query: String,
    /// `:authority` without the port or a trailing dot, lower-cased.
    pub host: String,
    headers: HashMap<String, String>,
    /// The request body, when Envoy sent one (webhook routes only; see `webhook`).
    body: Vec<u8>,
    problem: Option<RequestProblem>,
}

/// Why a request cannot be decided on as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestProblem {
    /// Dot-segments, repeated slashes, backslashes, encoded `/` `\` or `%`,
    /// broken escapes, control characters or invalid UTF-8 once decoded.
    AmbiguousPath,
    /// `;` path parameters on a route that does not allow them.
    PathParameters,
    /// A query string a route's rule reads that parsers could read differently:
    /// a repeated name, `;`, an empty name, a broken escape (see `rules::query`).
    AmbiguousQuery,
    /// An `:authority` that is not `host[:port]` (`host:abc`, `user@host`, `host:`).
    MalformedAuthority,
    /// A header name that is not an RFC 9110 token (`:` first for a pseudo-header):
    /// no HTTP codec of Envoy's lets one through, and removing it from the
    /// upstream request would need an invalid header mutation.
    InvalidHeaderName,
    /// More headers than `limits.max_headers`.
    TooManyHeaders,
    /// Headers and path larger than `limits.max_header_bytes`.
    HeadersTooLarge,
    /// A forward-auth request from a peer outside `faces.forward_auth.trusted_proxies`:
    /// its `X-Forwarded-*` / `X-Original-*` headers are not believed.
    UntrustedProxy,
    /// A forward-auth request without the headers that describe the original
    /// request (method, URI, host), or with one of them repeated.
    OriginalMissing,
}

impl HttpRequest {
    /// Builds a request from parts (used by `token verify` and tests).
    pub fn new<'a>(
        method: &str,
        path: &str,
        host: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut request = HttpRequest::default();
        for (name, value) in headers {
            request.add_header(name, value);
        }
        request.set_line(method, path, host);
        request
    }

    /// A request refused before it was read further (over the limits).
    pub fn refused(problem: RequestProblem) -> Self {
        HttpRequest { problem: Some(problem), ..Default::default() }
    }

    /// Sets the body (the gRPC face from Envoy's CheckRequest; tests).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The body as sent, empty when none was (webhook routes only; see `webhook`).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Adds a header as received; repeated names are joined with ",".
    pub fn add_header(&mut self, name: &str, value: &str) {
        if !crate::header::is_header_name(name.strip_prefix(':').unwrap_or(name)) {
            self.problem = self.problem.or(Some(RequestProblem::InvalidHeaderName));
            return;
        }
        match self.headers.entry(name.to_ascii_lowercase()) {
            // Same joining rule as Envoy's headers map, so both encodings agree.
            Entry::Occupied(mut existing) => {
                let existing = existing.get_mut();
                existing.push(',');
                existing.push_str(value);
            }
            Entry::Vacant(slot) => {
                slot.insert(value.to_string());
            }
        }
    }

    /// Sets the request line (method, path with query, `:authority`) and checks it.
    pub fn set_line(&mut self, method: &str, path: &str, host: &str) {
        self.method = method.to_ascii_uppercase();
        if let Some((_, query)) = path.split_once('?') {
            self.query = query.split('#').next().unwrap_or_default().to_string();
        }
        match canonical_path(path) {
            Ok(canonical) => {
                self.path = canonical.path;
                self.path_parameters = canonical.had_parameters;
            }
            Err(problem) => self.problem = self.problem.or(Some(problem)),
        }
        match authority_host(host) {
            Ok(name) => self.host = name,
            Err(problem) => self.problem = self.problem.or(Some(problem)),
        }
    }

    /// Why this request must be refused before routing, if it must.
    pub fn problem(&self) -> Option<RequestProblem> {
        self.problem
    }

    /// The raw query string (after `?`).
    pub fn query(&self) -> &str {
        &self.query
    }

    /// Whether the path carried `;` parameters (see [`HttpRequest::path`]).
    pub fn has_path_parameters(&self) -> bool {
        self.path_parameters
    }

    /// A header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The value of the cookie `name`, read as RFC 6265 parsers read it: pairs
    /// separated by `;`. Repeated `cookie` headers arrive joined with `,`, which
    /// no cookie value may contain, so `,` separates pairs too. A cookie sent
    /// more than once is [`DuplicateCookie`]: parsers disagree on which copy wins.
    pub fn cookie(&self, name: &str) -> Result<Option<&str>, DuplicateCookie> {
        let Some(header) = self.header("cookie") else {
            return Ok(None);
        };
        let mut found = None;
        for (key, value) in header.split([';', ',']).filter_map(|pair| pair.trim().split_once('=')) {
            if key.trim() == name {
                if found.is_some() {
                    return Err(DuplicateCookie);
                }
                found = Some(value.trim().trim_matches('"'));
            }
        }
        Ok(found)
    }
}

/// The same cookie name appears more than once in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateCookie;

/// A path in the form routes match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    pub path: String,
    pub had_parameters: bool,
}

/// Decodes `raw` (query and fragment dropped) once and removes `;` path
/// parameters. `Err` when the path could mean different things to portcullis
/// and to the backend: dot-segments (`/public/../admin`, `/..;/admin`), repeated
/// slashes, backslashes, encoded `/`, `\` or `%XX` (double encoding), broken
/// escapes, and control characters or invalid UTF-8 once decoded.
pub fn canonical_path(raw: &str) -> Result<CanonicalPath, RequestProblem> {
    const AMBIGUOUS: RequestProblem = RequestProblem::AmbiguousPath;
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let decoded = percent_decode(&raw[..end]).map_err(|()| AMBIGUOUS)?;
    if decoded.contains('\\') || decoded.chars().any(char::is_control) {
        return Err(AMBIGUOUS);
    }
    let mut had_parameters = false;
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        let (name, parameters) = segment.split_once(';').map_or((segment, None), |(name, rest)| (name, Some(rest)));
        had_parameters |= parameters.is_some();
        if name == "." || name == ".." {
            return Err(AMBIGUOUS);
        }
        segments.push(name);
    }
    let path = segments.join("/");
    if path.contains("//") {
        return Err(AMBIGUOUS);
    }
    Ok(CanonicalPath { path, had_parameters })
}

/// One decoding pass over `%XX` escapes. Escaped separators (`%2F`, `%5C`) and
/// an escaped `%` before two hex digits (`%2561` is `%61` to one decoder and
/// `a` to another) are refused, as are broken escapes and invalid UTF-8.
fn percent_decode(raw: &str) -> Result<String, ()> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'%' {
            out.push(bytes[index]);
            index += 1;
            continue;
        }
        let byte = hex_byte(bytes.get(index + 1..index + 3).ok_or(())?).ok_or(())?;
        let double_encoded = byte == b'%' && bytes.get(index + 3..index + 5).and_then(hex_byte).is_some();
        if byte == b'/' || byte == b'\\' || double_encoded {
            return Err(());
        }
        out.push(byte);
        index += 3;
    }
    String::from_utf8(out).map_err(|_| ())
}

/// Two hex digits as a byte (the query decoder in `rules::query` shares it).
pub(crate) fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |byte: u8| char::from(byte).to_digit(16);
    match pair {
        [high, low] => Some((digit(*high)? * 16 + digit(*low)?) as u8),
        _ => None,
    }
}

/// The host of an `:authority` (RFC 3986 `host [":" port]`, no userinfo), lower-cased,
/// port and trailing dot removed. Anything else is refused: a backend may read
/// `admin.example.com:abc` or `user@admin.example.com` as `admin.example.com`.
pub fn authority_host(authority: &str) -> Result<String, RequestProblem> {
    const MALFORMED: RequestProblem = RequestProblem::MalformedAuthority;
    if authority.is_empty() {
        return Ok(String::new());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (literal, after) = rest.split_once(']').ok_or(MALFORMED)?;
            literal.parse::<std::net::Ipv6Addr>().map_err(|_| MALFORMED)?;
            let port = if after.is_empty() { None } else { Some(after.strip_prefix(':').ok_or(MALFORMED)?) };
            (&authority[..literal.len() + 2], port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if port.is_some_and(|port| !(1..=5).contains(&port.len()) || !port.bytes().all(|b| b.is_ascii_digit())) {
        return Err(MALFORMED);
    }
    if host.starts_with('[') {
        return Ok(host.to_ascii_lowercase());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok =
        |label: &str| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if name.split('.').all(label_ok) { Ok(name.to_ascii_lowercase()) } else { Err(MALFORMED) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitsConfig;
    use crate::face::ext_authz_grpc::request_view;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest as EnvoyHttpRequest;
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, attribute_context};

    fn check_with(http: EnvoyHttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request { http: Some(http), ..Default::default() }),
                ..Default::default()
            }),
        }
    }

    fn from_check(http: EnvoyHttpRequest) -> HttpRequest {
        request_view(&check_with(http), &LimitsConfig::default())
    }

    #[test]
    fn reads_the_headers_map() {
        let mut http = EnvoyHttpRequest { method: "get".into(), path: "/a/b?x=1".into(), ..Default::default() };
        http.headers.insert(":authority".into(), "API.example.com:8443".into());
        http.headers.insert("Authorization".into(), "Bearer t".into());
        let request = from_check(http);
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/a/b");
        assert_eq!(request.host, "api.example.com");
        assert_eq!(request.header("authorization"), Some("Bearer t"));
        assert_eq!(request.problem(), None);
    }

    #[test]
    fn header_names_must_be_tokens() {
        // Found by the check fuzz target: a client x-hasura-* header with a NUL
        // in its name came back as an invalid headers_to_remove entry.
        for name in ["x-hasura-usa\0d", "x hasura", "", "x:y", "é", ":", "a\r\nb"] {
            let request = HttpRequest::new("GET", "/", "h", [(name, "v")]);
            assert_eq!(request.problem(), Some(RequestProblem::InvalidHeaderName), "{name:?}");
            assert_eq!(request.headers().count(), 0, "{name:?} is not kept");
        }
        for name in ["X-Hasura-Role", ":authority", "x.y_z~!", "a#b"] {
            assert_eq!(HttpRequest::new("GET", "/", "h", [(name, "v")]).problem(), None, "{name:?}");
        }
    }

    #[test]
    fn reads_raw_header_map_and_joins_duplicates() {
        let raw = |key: &str, value: &str| HeaderValue {
            key: key.into(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        };
        let http = EnvoyHttpRequest {
            header_map: Some(HeaderMap {
                headers: vec![
                    raw(":path", "/p"),
                    raw(":method", "POST"),
                    raw("cookie", "a=1"),
                    raw("cookie", "tok=xyz"),
                ],
            }),
            ..Default::default()
        };
        let request = from_check(http);
        assert_eq!(request.path, "/p");
        assert_eq!(request.method, "POST");
        assert_eq!(request.cookie("tok"), Ok(Some("xyz")));
        assert_eq!(request.cookie("a"), Ok(Some("1")));
        assert_eq!(request.cookie("missing"), Ok(None));
    }

    #[test]
    fn a_cookie_sent_twice_is_refused_whatever_the_separator() {
        for header in ["session=a; session=b", "other=x,session=a; session=b", "session=a,session=b"] {
            let request = HttpRequest::new("GET", "/", "h", [("cookie", header)]);
            assert_eq!(request.cookie("session"), Err(DuplicateCookie), "{header}");
        }
        let request = HttpRequest::new("GET", "/", "h", [("cookie", "sessionx=a; xsession=b; session=\"c\"")]);
        assert_eq!(request.cookie("session"), Ok(Some("c")));
    }

    #[test]
    fn ambiguous_paths_are_recognised() {
        let problem = |path: &str| HttpRequest::new("GET", path, "h", []).problem();
        for path in [
            "/public/../api",
            "/public/..",
            "/a/./b",
            "/a//b",
            "/a%2Fb",
            "/%2e%2e/b",
            "/public/..;/admin",
            "/public/%2E%2E;jsessionid=1/admin",
            "/a\\b",
            "/x/%5C",
            "/bad%zz",
            "/cut%4",
            "/a%2561dmin",
            "/a%0Ab",
            "/a%00.png",
            "/caf%FF",
            "/;x/admin",
        ] {
            assert_eq!(problem(path), Some(RequestProblem::AmbiguousPath), "{path}");
        }
        for path in ["/api/items", "/v1/graphql", "/a/b.c/d", "/..hidden/x", "/", "/a?x=../y", "/a%2e%2e/b", "/a;b=c"] {
            assert_eq!(problem(path), None, "{path}");
        }
    }

    #[test]
    fn paths_are_decoded_once_and_lose_their_parameters() {
        let request = HttpRequest::new("GET", "/%61dmin/%7Euser/caf%C3%A9?q=%61", "Admin.Example.com.:443", []);
        assert_eq!(request.path, "/admin/~user/café");
        assert_eq!(request.host, "admin.example.com");
        let reserved = HttpRequest::new("GET", "/odata/%24batch/v1/items%3Apurge%25", "h", []);
        assert_eq!(reserved.path, "/odata/$batch/v1/items:purge%");
        let parameters = HttpRequest::new("GET", "/internal;x/y;jsessionid=1", "h", []);
        assert_eq!(parameters.path, "/internal/y");
        assert!(parameters.has_path_parameters());
        assert!(!HttpRequest::new("GET", "/internal/y", "h", []).has_path_parameters());
    }

    #[test]
    fn authority_is_host_and_optional_numeric_port() {
        for (authority, host) in [
            ("api.example.com", "api.example.com"),
            ("API.example.com:8443", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]:8080", "[::1]"),
            ("[2001:db8::1]", "[2001:db8::1]"),
            ("my_host", "my_host"),
            ("", ""),
        ] {
            assert_eq!(authority_host(authority), Ok(host.to_string()), "{authority}");
        }
        for authority in [
            "admin.example.com:abc",
            "admin.example.com:443:443",
            "user@admin.example.com",
            "admin.example.com:",
            ":443",
            "admin..example.com",
            "[::1]x",
            "[nope]:80",
            "a b",
            "admin.example.com:1234567",
            "admin%2eexample.com",
        ] {
            assert_eq!(authority_host(authority), Err(RequestProblem::MalformedAuthority), "{authority}");
        }
    }

    #[test]
    fn limits_stop_reading_oversized_requests() {
        let limits = LimitsConfig { max_headers: 3, max_header_bytes: 64, ..LimitsConfig::default() };
        let mut http = EnvoyHttpRequest { path: "/".into(), ..Default::default() };
        for index in 0..4 {
            http.headers.insert(format!("x-{index}"), "v".into());
        }
        let request = request_view(&check_with(http.clone()), &limits);
        assert_eq!(request.problem(), Some(RequestProblem::TooManyHeaders));
        http.headers.clear();
        http.headers.insert("x-big".into(), "v".repeat(64));
        let request = request_view(&check_with(http), &limits);
        assert_eq!(request.problem(), Some(RequestProblem::HeadersTooLarge));
    }

    #[test]
    fn empty_check_request_is_an_empty_request() {
        let request = request_view(&CheckRequest::default(), &LimitsConfig::default());
        assert_eq!(request.path, "");
    }
}
