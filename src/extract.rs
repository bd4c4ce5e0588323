//! Where is the token? (SPEC `token_from`: Authorization Bearer, a custom
//! header, a cookie.) Each route compiles its [`Extractor`] once, like Envoy's
//! `Extractor::create`: the distinct places its issuers read, and who reads where.

use crate::config::TokenFrom;
use crate::request::HttpRequest;

/// The token locations of one route, in the order of its issuers.
#[derive(Debug, Clone, Default)]
pub struct Extractor {
    locations: Vec<Location>,
}

#[derive(Debug, Clone)]
struct Location {
    from: TokenFrom,
    /// Positions, in the route's issuer list, of the issuers reading here.
    readers: Vec<usize>,
}

/// The request's token and the issuers (by position in the route's list, in
/// order) that read it where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'r> {
    pub token: &'r str,
    pub readers: Vec<usize>,
}

impl Extractor {
    /// `sources` are the `token_from` of the route's issuers, in route order.
    pub fn create<'a>(sources: impl IntoIterator<Item = &'a TokenFrom>) -> Self {
        let mut locations: Vec<Location> = Vec::new();
        for (position, from) in sources.into_iter().enumerate() {
            match locations.iter_mut().find(|location| &location.from == from) {
                Some(location) => location.readers.push(position),
                None => locations.push(Location { from: from.clone(), readers: vec![position] }),
            }
        }
        Extractor { locations }
    }

    /// The token, read from every location. The same token in two places is
    /// one token; different ones are refused: verifying one and forwarding the
    /// other would let the upstream read a token nobody checked.
    pub fn extract<'r>(&self, request: &'r HttpRequest) -> Result<Option<Found<'r>>, ExtractError> {
        let mut found: Option<Found<'r>> = None;
        for location in &self.locations {
            let Some(token) = extract(request, &location.from)? else { continue };
            match &mut found {
                None => found = Some(Found { token, readers: location.readers.clone() }),
                Some(first) if first.token == token => first.readers.extend(&location.readers),
                Some(_) => return Err(ExtractError::Conflicting),
            }
        }
        if let Some(found) = &mut found {
            found.readers.sort_unstable();
        }
        Ok(found)
    }
}

/// Anything longer is not a token a real IdP issues; refuse before parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("the bearer token is empty")]
    Empty,
    #[error("the token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Two copies of the token's header or cookie: parsers disagree on which one counts.
    #[error("the token's header or cookie is sent more than once")]
    Repeated,
    /// Different tokens in different places (say a header and a cookie).
    #[error("the request carries different tokens in different places; send one")]
    Conflicting,
}

impl ExtractError {
    /// RFC 6750 section 3.1: a request that repeats the token or sends it more
    /// than one way is an `invalid_request` (400), not an invalid token.
    pub fn is_bad_request(&self) -> bool {
        matches!(self, ExtractError::Repeated | ExtractError::Conflicting)
    }
}

/// The token at `from`, `Ok(None)` when there is none.
fn extract<'r>(request: &'r HttpRequest, from: &TokenFrom) -> Result<Option<&'r str>, ExtractError> {
    let raw = match from {
        TokenFrom::Header { header, prefix } => {
            let Some(value) = request.header(header) else {
                return Ok(None);
            };
            header_token(value, header, prefix.as_deref())?
        }
        TokenFrom::Cookie { cookie } => request.cookie(cookie).map_err(|_| ExtractError::Repeated)?,
    };
    let Some(token) = raw.map(str::trim) else {
        return Ok(None);
    };
    if token.is_empty() {
        return Err(ExtractError::Empty);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ExtractError::TooLarge);
    }
    Ok(Some(token))
}

/// The token in a header value. Envoy joins a repeated header with `,`, which
/// no token contains: a joined value is refused when any part of it is a token.
fn header_token<'v>(value: &'v str, header: &str, prefix: Option<&str>) -> Result<Option<&'v str>, ExtractError> {
    let token_in = |part: &'v str| match prefix {
        Some(prefix) => strip_prefix_ignore_case(part, prefix),
        None if header == "authorization" => bearer(part),
        None => Some(part),
    };
    if value.contains(',') && value.split(',').any(|part| token_in(part.trim_start()).is_some()) {
        return Err(ExtractError::Repeated);
    }
    Ok(token_in(value))
}

/// `Bearer <token>` with the scheme matched case-insensitively (RFC 7235 section 2.1).
/// Another scheme (Basic, ...) is not a bearer token at all.
fn bearer(value: &str) -> Option<&str> {
    let value = value.trim_start();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Some(rest),
        None if value.eq_ignore_ascii_case("bearer") => Some(""),
        _ => None,
    }
}

fn strip_prefix_ignore_case<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest::new("GET", "/", "h", headers.iter().copied())
    }

    fn bearer_from() -> TokenFrom {
        TokenFrom::default()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "Bearer   abc "] {
            assert_eq!(extract(&request(&[("authorization", value)]), &bearer_from()), Ok(Some("abc")), "{value}");
        }
    }

    #[test]
    fn other_schemes_and_absence_mean_no_token() {
        assert_eq!(extract(&request(&[("authorization", "Basic Zm9v")]), &bearer_from()), Ok(None));
        assert_eq!(extract(&request(&[]), &bearer_from()), Ok(None));
        assert_eq!(extract(&request(&[("authorization", "Bearer")]), &bearer_from()), Err(ExtractError::Empty));
        assert_eq!(extract(&request(&[("authorization", "Bearer ")]), &bearer_from()), Err(ExtractError::Empty));
    }

    #[test]
    fn a_repeated_token_header_is_refused_but_other_lists_are_not_tokens() {
        for value in ["Bearer a,Bearer b", "Basic x,Bearer forged", "Bearer a, Basic x"] {
            assert_eq!(extract(&request(&[("authorization", value)]), &bearer_from()), Err(ExtractError::Repeated));
        }
        assert_eq!(extract(&request(&[("authorization", "Digest a=b, c=d")]), &bearer_from()), Ok(None));
        let custom = TokenFrom::Header { header: "x-token".into(), prefix: None };
        assert_eq!(extract(&request(&[("x-token", "a,b")]), &custom), Err(ExtractError::Repeated));
    }

    #[test]
    fn an_extractor_reads_each_place_once_and_refuses_two_different_tokens() {
        let cookie = TokenFrom::Cookie { cookie: "session".into() };
        let extractor = Extractor::create([&bearer_from(), &cookie, &bearer_from()]);
        let both = request(&[("authorization", "Bearer t"), ("cookie", "session=t")]);
        assert_eq!(extractor.extract(&both), Ok(Some(Found { token: "t", readers: vec![0, 1, 2] })));
        let cookie_only = request(&[("cookie", "session=t")]);
        assert_eq!(extractor.extract(&cookie_only), Ok(Some(Found { token: "t", readers: vec![1] })));
        let different = request(&[("authorization", "Bearer t"), ("cookie", "session=u")]);
        assert_eq!(extractor.extract(&different), Err(ExtractError::Conflicting));
        assert_eq!(extractor.extract(&request(&[])), Ok(None));
    }

    #[test]
    fn custom_header_cookie_and_size_limit() {
        let custom = TokenFrom::Header { header: "x-token".into(), prefix: None };
        assert_eq!(extract(&request(&[("x-token", "abc")]), &custom), Ok(Some("abc")));
        let prefixed = TokenFrom::Header { header: "x-token".into(), prefix: Some("JWT ".into()) };
        assert_eq!(extract(&request(&[("x-token", "jwt abc")]), &prefixed), Ok(Some("abc")));
        assert_eq!(extract(&request(&[("x-token", "abc")]), &prefixed), Ok(None));
        let cookie = TokenFrom::Cookie { cookie: "session".into() };
        assert_eq!(extract(&request(&[("cookie", "a=b; session=abc")]), &cookie), Ok(Some("abc")));
        assert_eq!(
            extract(&request(&[("cookie", "session=abc; session=forged")]), &cookie),
            Err(ExtractError::Repeated)
        );
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(extract(&request(&[("authorization", &huge)]), &bearer_from()), Err(ExtractError::TooLarge));
    }
}
