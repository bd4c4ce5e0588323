//! The query string as CEL rules read it (`request.query`): one value per
//! name, or refused.
//!
//! Backends disagree on everything a query string leaves open. Django, PHP and
//! Rails read the last copy of a repeated parameter, Express reads all of them,
//! a first-value map reads the first: `?tenant=acme&tenant=globex` would pass a
//! rule comparing `request.query.tenant` with the caller's organisation while
//! the backend serves globex. So on routes whose rule reads the query, a query
//! that two parsers could read differently is refused (400) rather than
//! guessed: a name given twice (compared after form decoding, and as PHP and
//! Rails fold names: `tenant`, `tenant[]` and `tenant[x]` are one parameter to
//! them, ` tenant`, `ten.ant` and `ten_ant` are one to PHP), a raw `;` (Rack 2
//! and some servers split on it as on `&`), an empty name, a broken or double
//! `%` escape, invalid UTF-8 once decoded, or more than
//! [`MAX_QUERY_PARAMETERS`] parameters (PHP's `max_input_vars` and Express's
//! `parameterLimit` silently drop parameters past 1000).

use std::collections::{HashMap, HashSet};

use crate::request::hex_byte;

/// The most parameters a query read by a rule may have: well under the 1000
/// after which PHP and Express silently ignore the rest.
pub const MAX_QUERY_PARAMETERS: usize = 256;

/// The query could mean different things to portcullis and to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousQuery;

/// The parameters of `raw` (the query string, without `?`) by decoded name,
/// `+` read as a space as form decoding does.
pub fn parse(raw: &str) -> Result<HashMap<String, String>, AmbiguousQuery> {
    if raw.contains(';') {
        return Err(AmbiguousQuery);
    }
    let mut parameters = HashMap::new();
    let mut folded = Vec::new();
    // Every parser skips empty pieces (`a=1&&b=2`).
    for pair in raw.split('&').filter(|pair| !pair.is_empty()) {
        if parameters.len() == MAX_QUERY_PARAMETERS {
            return Err(AmbiguousQuery);
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        let name_as_php_reads_it = fold(&name);
        if name_as_php_reads_it.is_empty() || parameters.insert(name, decode(value)?).is_some() {
            return Err(AmbiguousQuery);
        }
        folded.push(name_as_php_reads_it);
    }
    if fold_together(&folded) {
        return Err(AmbiguousQuery);
    }
    Ok(parameters)
}

/// Whether two of the `folded` names are one parameter to PHP or Rails: equal,
/// or one of them the other with `[...]` after it (an array or a nested map of
/// the same name).
fn fold_together(folded: &[String]) -> bool {
    let mut seen = HashSet::with_capacity(folded.len());
    if !folded.iter().all(|name| seen.insert(name.as_str())) {
        return true;
    }
    folded.iter().any(|name| name.match_indices('[').any(|(at, _)| at > 0 && seen.contains(&name[..at])))
}

/// A name as PHP registers it: leading spaces dropped, spaces and dots made
/// underscores, and a `[` without a `]` after it too. Folding more than one
/// backend does only refuses more, never less.
fn fold(name: &str) -> String {
    let mut folded: String =
        name.trim_start_matches(' ').chars().map(|c| if c == ' ' || c == '.' { '_' } else { c }).collect();
    if let Some(open) = folded.find('[')
        && !folded[open..].contains(']')
    {
        folded.replace_range(open..=open, "_");
    }
    folded
}

/// One form-decoding pass: `+` is a space, `%XX` a byte. A `%` not followed by
/// two hex digits, an escaped `%` before two hex digits (`%2561` is `%61` to
/// one decoder and `a` to one that decodes twice), or invalid UTF-8 is refused:
/// lenient decoders keep such text as it is, strict ones reject it.
fn decode(raw: &str) -> Result<String, AmbiguousQuery> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let byte = bytes.get(index + 1..index + 3).and_then(hex_byte).ok_or(AmbiguousQuery)?;
                if byte == b'%' && bytes.get(index + 3..index + 5).and_then(hex_byte).is_some() {
                    return Err(AmbiguousQuery);
                }
                out.push(byte);
                index += 2;
            }
            other => out.push(other),
        }
        index += 1;
    }
    String::from_utf8(out).map_err(|_| AmbiguousQuery)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> bool {
        parse(raw) == Err(AmbiguousQuery)
    }

    #[test]
    fn one_value_per_name_decoded_once() {
        let query = parse("tenant=acme&q=a+b%20c&flag&empty=&&page=2&x=%E2%82%AC&eq=a=b").unwrap();
        assert_eq!(query["tenant"], "acme");
        assert_eq!(query["q"], "a b c");
        assert_eq!(query["flag"], "");
        assert_eq!(query["empty"], "");
        assert_eq!(query["x"], "€");
        assert_eq!(query["eq"], "a=b");
        assert_eq!(query.len(), 7);
        assert!(parse("").unwrap().is_empty());
        // Distinct names under one array or map are distinct parameters to everyone.
        assert_eq!(parse("filter[status]=open&filter[type]=bug").unwrap().len(), 2);
    }

    #[test]
    fn a_repeated_name_is_refused_however_it_is_spelled() {
        for raw in [
            "tenant=acme&tenant=globex",
            "tenant=acme&tenant=acme",
            "ten%61nt=acme&tenant=globex",
            "tenant=acme&%74enant=globex",
            "a+b=1&a%20b=2",
            "flag&flag=1",
            // PHP and Rails: the same parameter as a string, an array, a map.
            "tenant=acme&tenant[]=globex",
            "tenant[]=globex&tenant=acme",
            "tenant=acme&tenant[x]=globex",
            "ids[]=1&ids[]=2",
            "a[b]=1&a[b][]=2",
            // PHP: leading spaces dropped, spaces and dots become underscores.
            "tenant=acme&+tenant=globex",
            "ten_ant=acme&ten.ant=globex",
            "ten_ant=acme&ten+ant=globex",
            "tenant_=acme&tenant[=globex",
        ] {
            assert!(refused(raw), "{raw}");
        }
    }

    #[test]
    fn what_parsers_read_differently_is_refused() {
        for raw in [
            "tenant=acme;tenant=globex",
            "a=1;b=2",
            "=acme",
            "%20=x",
            "+=x",
            "tenant=%zz",
            "tenant=%4",
            "ten%g1nt=a",
            "tenant=%2561cme",
            "tenant=%FF",
            "tenant=%C3",
        ] {
            assert!(refused(raw), "{raw}");
        }
        // An escaped `%` not before two hex digits is no double encoding.
        assert_eq!(parse("discount=100%25").unwrap()["discount"], "100%");
    }

    #[test]
    fn parameters_are_bounded() {
        let many = |count: usize| (0..count).map(|i| format!("p{i}=1")).collect::<Vec<_>>().join("&");
        assert_eq!(parse(&many(MAX_QUERY_PARAMETERS)).unwrap().len(), MAX_QUERY_PARAMETERS);
        assert!(refused(&many(MAX_QUERY_PARAMETERS + 1)));
    }
}
