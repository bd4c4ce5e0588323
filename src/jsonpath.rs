//! Claim paths: the JSONPath subset Hasura accepts in `claims_namespace_path` and `claims_map`
//! (also used by the Supabase backend's claim mapping):
//! `$`, `.key`, `key`, `['key']`, `["key"]`, `[n]`. No filters, no recursive descent.
//!
//! One extension, documented as such: `[*]` projects the rest of the path over an
//! array (`$.roles[*].key` turns Kinde's role objects into a list of role keys).
//! A path without `[*]` behaves exactly as in Hasura.

use std::borrow::Cow;

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    Each,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    steps: Vec<Step>,
    source: String,
}

impl JsonPath {
    /// Parses `text`; the error is Hasura's wording without the path itself:
    /// it ends up in config problems, which never quote a value (after `${...}`
    /// substitution it could be a secret referenced by mistake).
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_steps(text).map(|steps| JsonPath { steps, source: text.to_string() }).ok_or_else(|| {
            "invalid JSON path. Accept letters, digits, underscore (_) or hyphen (-) only. \
             Use quotes enclosed in bracket ([\"...\"]) if there is any special character"
                .to_string()
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The value at this path; `None` when any step is missing ("not found").
    pub fn find(&self, root: &Value) -> Option<Value> {
        find_steps(&self.steps, root)
    }

    /// The value at this path inside a claim set, borrowed unless `[*]` builds a list.
    pub fn find_in<'c>(&self, claims: &'c Map<String, Value>) -> Option<Cow<'c, Value>> {
        match self.steps.split_first() {
            None => Some(Cow::Owned(Value::Object(claims.clone()))),
            Some((Step::Key(key), rest)) => find_borrowed(rest, claims.get(key)?),
            Some(_) => None,
        }
    }
}

fn find_borrowed<'v>(steps: &[Step], value: &'v Value) -> Option<Cow<'v, Value>> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(Cow::Borrowed(value));
    };
    match step {
        Step::Key(key) => find_borrowed(rest, value.as_object()?.get(key)?),
        Step::Index(index) => find_borrowed(rest, value.as_array()?.get(*index)?),
        Step::Each => Some(Cow::Owned(Value::Array(
            value.as_array()?.iter().filter_map(|item| find_borrowed(rest, item).map(Cow::into_owned)).collect(),
        ))),
    }
}

/// A claim named in the config: a top-level claim (`sub`,
/// `https://acme.com/roles`) or, when it starts with `$`, a path (`$.org.code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRef {
    Name(String),
    Path(JsonPath),
}

impl ClaimRef {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "" => Err("names no claim".into()),
            path if path.starts_with('$') => JsonPath::parse(path).map(ClaimRef::Path),
            name => Ok(ClaimRef::Name(name.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ClaimRef::Name(name) => name,
            ClaimRef::Path(path) => path.as_str(),
        }
    }

    /// The claim's value, if the token has it.
    pub fn find<'c>(&self, claims: &'c Map<String, Value>) -> Option<Cow<'c, Value>> {
        match self {
            ClaimRef::Name(name) => claims.get(name).map(Cow::Borrowed),
            ClaimRef::Path(path) => path.find_in(claims),
        }
    }
}

fn find_steps(steps: &[Step], value: &Value) -> Option<Value> {
    let Some((step, rest)) = steps.split_first() else {
        return Some(value.clone());
    };
    match step {
        Step::Key(key) => find_steps(rest, value.as_object()?.get(key)?),
        Step::Index(index) => find_steps(rest, value.as_array()?.get(*index)?),
        Step::Each => Some(Value::Array(value.as_array()?.iter().filter_map(|item| find_steps(rest, item)).collect())),
    }
}

fn parse_steps(text: &str) -> Option<Vec<Step>> {
    let mut rest = text.strip_prefix('$').unwrap_or(text);
    let mut steps = Vec::new();
    let rooted = rest.len() != text.len();
    if rest.is_empty() {
        return rooted.then_some(steps);
    }
    let mut first = true;
    while !rest.is_empty() {
        if let Some(after_dot) = rest.strip_prefix('.') {
            rest = after_dot;
            if rest.starts_with('[') {
                continue;
            }
            let (name, after) = identifier(rest)?;
            steps.push(Step::Key(name));
            rest = after;
        } else if rest.starts_with('[') {
            let (step, after) = bracket(rest)?;
            steps.push(step);
            rest = after;
        } else if first && !rooted {
            // A bare leading name: `hasura.claims`.
            let (name, after) = identifier(rest)?;
            steps.push(Step::Key(name));
            rest = after;
        } else {
            return None;
        }
        first = false;
    }
    Some(steps)
}

fn identifier(text: &str) -> Option<(String, &str)> {
    let mut chars = text.char_indices();
    let (_, head) = chars.next()?;
    if !(head.is_ascii_alphabetic() || head == '_') {
        return None;
    }
    let end = chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        .map_or(text.len(), |(index, _)| index);
    Some((text[..end].to_string(), &text[end..]))
}

fn bracket(text: &str) -> Option<(Step, &str)> {
    let inner = &text[1..];
    if let Some(after) = inner.strip_prefix("*]") {
        return Some((Step::Each, after));
    }
    match inner.chars().next()? {
        quote @ ('\'' | '"') => {
            let body = &inner[1..];
            let close = find_closing_quote(body, quote)?;
            let raw = &body[..close];
            let key = if quote == '"' { serde_json::from_str(&format!("\"{raw}\"")).ok()? } else { raw.to_string() };
            let after = body[close + 1..].strip_prefix(']')?;
            Some((Step::Key(key), after))
        }
        digit if digit.is_ascii_digit() => {
            let close = inner.find(']')?;
            let index = inner[..close].parse().ok()?;
            Some((Step::Index(index), &inner[close + 1..]))
        }
        _ => None,
    }
}

fn find_closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (index, c) in body.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(index),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn find(path: &str, value: &Value) -> Option<Value> {
        JsonPath::parse(path).unwrap().find(value)
    }

    #[test]
    fn hasura_grammar() {
        let doc = json!({"hasura": {"claims": {"x": 1}}, "https://myapp.com/jwt/claims": {"user": {"id": "u1"}},
                          "list": ["a", "b"], "claims%": {"y": 2}});
        assert_eq!(find("$", &doc), Some(doc.clone()));
        assert_eq!(find("$.hasura.claims", &doc), Some(json!({"x": 1})));
        assert_eq!(find("hasura.claims.x", &doc), Some(json!(1)));
        assert_eq!(find("$.['https://myapp.com/jwt/claims'].user.id", &doc), Some(json!("u1")));
        assert_eq!(find("$[\"https://myapp.com/jwt/claims\"].user", &doc), Some(json!({"id": "u1"})));
        assert_eq!(find("$.hasura['claims']", &doc), Some(json!({"x": 1})));
        assert_eq!(find("$['claims%'].y", &doc), Some(json!(2)));
        assert_eq!(find("$.list[1]", &doc), Some(json!("b")));
        assert_eq!(find("$.list[2]", &doc), None);
        assert_eq!(find("$.hasura.missing", &doc), None);
        assert_eq!(find("$.list.key", &doc), None);
    }

    #[test]
    fn claim_refs_are_names_or_paths() {
        let claims =
            json!({"sub": "u", "https://acme.com/roles": ["a"], "org": {"code": "x"}, "roles": [{"key": "r"}]});
        let claims = claims.as_object().unwrap();
        let find = |text: &str| ClaimRef::parse(text).unwrap().find(claims).map(Cow::into_owned);
        assert_eq!(find("sub"), Some(json!("u")));
        assert_eq!(find("https://acme.com/roles"), Some(json!(["a"])));
        assert_eq!(find("$.org.code"), Some(json!("x")));
        assert_eq!(find("$.roles[*].key"), Some(json!(["r"])));
        assert_eq!(find("$['https://acme.com/roles'][0]"), Some(json!("a")));
        assert_eq!(find("missing"), None);
        assert!(ClaimRef::parse("").is_err() && ClaimRef::parse("$..x").is_err());
    }

    #[test]
    fn projection_extension() {
        let doc = json!({"roles": [{"id": "1", "key": "admin"}, {"id": "2", "key": "user"}, {"id": "3"}]});
        assert_eq!(find("$.roles[*].key", &doc), Some(json!(["admin", "user"])));
        assert_eq!(find("$.missing[*].key", &doc), None);
    }

    #[test]
    fn rejects_what_hasura_rejects() {
        for bad in ["$.", "$..a", "$.a b", "$.1abc", "$[abc]", "$['unclosed]", "a.$", "$.a[?(@.b)]", ""] {
            let err = JsonPath::parse(bad).unwrap_err();
            assert!(err.contains("Use quotes enclosed in bracket"), "{bad}: {err}");
            assert!(bad.len() < 2 || !err.contains(bad), "the path is not quoted: {err}");
        }
    }
}
