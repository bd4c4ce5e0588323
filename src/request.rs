//! The request as portcullis sees it, whichever way Envoy encoded it.
//!
//! Envoy sends either the `headers` map (lower-case keys, duplicates joined with
//! ",") or, with `encode_raw_headers`, the `header_map` list of raw bytes. Both
//! become one lower-cased map here so the stages after this never care.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest as EnvoyHttpRequest;

#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    /// The path without query string or fragment, with percent-encoded
    /// unreserved characters decoded (`/%61dmin` is `/admin`): routes match on this.
    pub path: String,
    /// See [`HttpRequest::path_is_ambiguous`].
    ambiguous: bool,
    /// `:authority` without the port, lower-cased.
    pub host: String,
    headers: HashMap<String, String>,
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

    pub fn from_check(check: &CheckRequest) -> Self {
        let http = check.attributes.as_ref().and_then(|a| a.request.as_ref()).and_then(|r| r.http.as_ref());
        let Some(http) = http else {
            return HttpRequest::default();
        };
        let mut request = HttpRequest::default();
        request.copy_headers(http);
        let method = first_non_empty(&http.method, request.header(":method"));
        let path = first_non_empty(&http.path, request.header(":path"));
        let host = first_non_empty(&http.host, request.header(":authority").or(request.header("host")));
        request.set_line(&method, &path, &host);
        request
    }

    fn copy_headers(&mut self, http: &EnvoyHttpRequest) {
        for (name, value) in &http.headers {
            self.add_header(name, value);
        }
        for header in http.header_map.iter().flat_map(|map| map.headers.iter()) {
            // Raw mode fills raw_value only; value is honoured for hand-written clients.
            let value = if header.raw_value.is_empty() {
                header.value.clone()
            } else {
                String::from_utf8_lossy(&header.raw_value).into_owned()
            };
            self.add_header(&header.key, &value);
        }
    }

    fn add_header(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match self.headers.get_mut(&name) {
            // Same joining rule as Envoy's headers map, so both encodings agree.
            Some(existing) => {
                existing.push(',');
                existing.push_str(value);
            }
            None => {
                self.headers.insert(name, value.to_string());
            }
        }
    }

    fn set_line(&mut self, method: &str, path: &str, host: &str) {
        self.method = method.to_ascii_uppercase();
        let end = path.find(['?', '#']).unwrap_or(path.len());
        let raw = &path[..end];
        let decoded = decode_unreserved(raw);
        self.ambiguous = is_ambiguous(raw, decoded.as_deref());
        self.path = decoded.unwrap_or_default();
        // `admin.example.com.` is the same host as `admin.example.com`.
        self.host = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
    }

    /// True when the path could mean different things to portcullis and to the
    /// backend: dot-segments (`/public/../admin`, `/..;/admin`), repeated slashes,
    /// backslashes, encoded `/` or `\`, broken escapes. Refused, never guessed.
    pub fn path_is_ambiguous(&self) -> bool {
        self.ambiguous
    }

    /// A header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// The value of one cookie. Envoy joins repeated `cookie` headers with ","
    /// rather than "; ", so both separate pairs (neither may occur in a JWT).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?
            .split([';', ','])
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim_matches('"'))
    }
}

fn first_non_empty(field: &str, header: Option<&str>) -> String {
    if field.is_empty() { header.unwrap_or_default().to_string() } else { field.to_string() }
}

/// Decodes `%XX` escapes of unreserved characters (RFC 3986 section 2.3), which
/// every backend treats as the characters themselves; other escapes stay.
/// `None` for a broken escape.
fn decode_unreserved(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'%' {
            let ch = raw[index..].chars().next()?;
            out.push(ch);
            index += ch.len_utf8();
            continue;
        }
        let hex = raw.get(index + 1..index + 3)?;
        let byte = u8::from_str_radix(hex, 16).ok()?;
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push_str(hex);
        }
        index += 3;
    }
    Some(out)
}

fn is_ambiguous(raw: &str, decoded: Option<&str>) -> bool {
    let Some(path) = decoded else { return true };
    let encoded_separator = raw.as_bytes().windows(3).any(|window| {
        window[0] == b'%' && (window[1..].eq_ignore_ascii_case(b"2f") || window[1..].eq_ignore_ascii_case(b"5c"))
    });
    // `..;x` is `..` to servlet containers (path parameters).
    let dot_segment = path.split('/').any(|segment| matches!(segment.split(';').next(), Some(".") | Some("..")));
    encoded_separator || dot_segment || path.contains("//") || path.contains('\\')
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};

    fn check_with(http: EnvoyHttpRequest) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request { http: Some(http), ..Default::default() }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn reads_the_headers_map() {
        let mut http = EnvoyHttpRequest { method: "get".into(), path: "/a/b?x=1".into(), ..Default::default() };
        http.headers.insert(":authority".into(), "API.example.com:8443".into());
        http.headers.insert("Authorization".into(), "Bearer t".into());
        let request = HttpRequest::from_check(&check_with(http));
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/a/b");
        assert_eq!(request.host, "api.example.com");
        assert_eq!(request.header("authorization"), Some("Bearer t"));
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
        let request = HttpRequest::from_check(&check_with(http));
        assert_eq!(request.path, "/p");
        assert_eq!(request.method, "POST");
        assert_eq!(request.cookie("tok"), Some("xyz"));
        assert_eq!(request.cookie("a"), Some("1"));
        assert_eq!(request.cookie("missing"), None);
    }

    #[test]
    fn ambiguous_paths_are_recognised() {
        let ambiguous = |path: &str| HttpRequest::new("GET", path, "h", []).path_is_ambiguous();
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
        ] {
            assert!(ambiguous(path), "{path}");
        }
        for path in ["/api/items", "/v1/graphql", "/a/b.c/d", "/..hidden/x", "/", "/a?x=../y", "/a%2e%2e/b", "/a;b=c"] {
            assert!(!ambiguous(path), "{path}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_for_matching() {
        let request = HttpRequest::new("GET", "/%61dmin/%7Euser/caf%C3%A9?q=%61", "Admin.Example.com.:443", []);
        assert_eq!(request.path, "/admin/~user/caf%C3%A9");
        assert_eq!(request.host, "admin.example.com");
    }

    #[test]
    fn empty_check_request_is_an_empty_request() {
        let request = HttpRequest::from_check(&CheckRequest::default());
        assert_eq!(request.path, "");
    }
}
