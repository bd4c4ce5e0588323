//! Reads the parsed document into the typed config with errors that say what
//! was expected and what kind of value was found, never the value itself.
//!
//! serde's own messages quote the offending value (``invalid type: integer
//! `12345`, expected a string``); at `admin.token` or `admin_secret` that value
//! is a secret, and config problems reach logs, `check-config` output and the
//! Admin API's reload error. serde's `value` deserializers are generic over the
//! error type, so this only wraps `serde_json::Value` in them with an error
//! type whose constructors drop the value.
//!
//! [`from_value_reporting_all`] reports every unknown key of a section, not
//! only the first: serde stops at the first one (`deny_unknown_fields`), so the
//! key is set aside and the section read again, once per unknown key.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserializer, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;

use super::Problem;

/// A deserialization problem, free of config values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    kind: ErrorKind,
}

/// What kind of problem an [`Error`] is, for the callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A key the section does not have (`deny_unknown_fields`).
    UnknownField,
    Other,
}

impl Error {
    fn other(message: String) -> Self {
        Error { message, kind: ErrorKind::Other }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error::other(message.to_string())
    }

    fn invalid_type(found: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Error::other(format!("expected {expected}, found {}", kind(&found)))
    }

    fn invalid_value(found: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Error::other(format!("invalid value ({}): expected {expected}", kind(&found)))
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Error::other(format!("unknown value, expected one of: {}", expected.join(", ")))
    }

    /// serde's wording; the key is not a value (it is part of the path already).
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let message = match expected {
            [] => format!("unknown field `{field}`, there are no fields"),
            _ => format!("unknown field `{field}`, expected {}", quoted(expected)),
        };
        Error { message, kind: ErrorKind::UnknownField }
    }
}

/// The expected names as serde words them (`a`, `a` or `b`, one of `a`, `b`, `c`).
fn quoted(names: &[&str]) -> String {
    let each: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match each.as_slice() {
        [one] => one.clone(),
        [first, second] => format!("{first} or {second}"),
        _ => format!("one of {}", each.join(", ")),
    }
}

/// What kind of value was found, without the value.
fn kind(found: &Unexpected<'_>) -> &'static str {
    match found {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
        Unexpected::Float(_) => "a number",
        Unexpected::Char(_) | Unexpected::Str(_) => "a string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Unit => "null",
        Unexpected::Seq => "a list",
        Unexpected::Map => "a mapping",
        _ => "another kind of value",
    }
}

/// Deserializes `T` from `value`, with the path of any problem.
pub fn from_value<'a, T: de::Deserialize<'a>>(value: &'a Value) -> Result<T, serde_path_to_error::Error<Error>> {
    serde_path_to_error::deserialize(ValueDeserializer(value))
}

/// Deserializes `T` from `value`; every unknown key is a problem (not only the
/// first), as is the first other problem. Paths are relative to `value`.
pub fn from_value_reporting_all<T: de::DeserializeOwned>(value: &Value) -> Result<T, Vec<Problem>> {
    let mut value = Cow::Borrowed(value);
    let mut problems = Vec::new();
    loop {
        let err = match from_value::<T>(&value) {
            Ok(parsed) if problems.is_empty() => return Ok(parsed),
            Ok(_) => return Err(problems),
            Err(err) => err,
        };
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let unknown = err.inner().kind() == ErrorKind::UnknownField;
        problems.push(Problem::new(path, err.inner().to_string()));
        // Each pass removes one key, so this ends; a key that cannot be found
        // again (behind a conversion) ends it too.
        if !unknown || !remove_at(value.to_mut(), err.path()) {
            return Err(problems);
        }
    }
}

/// Removes the mapping entry `path` leads to; false when there is none.
fn remove_at(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut at = value;
    for segment in parents {
        let next = match segment {
            Segment::Seq { index } => at.get_mut(*index),
            Segment::Map { key } => at.get_mut(key.as_str()),
            Segment::Enum { .. } | Segment::Unknown => None,
        };
        let Some(next) = next else { return false };
        at = next;
    }
    at.as_object_mut().and_then(|map| map.shift_remove(key.as_str())).is_some()
}

/// A borrowed `serde_json::Value` as a deserializer with [`Error`].
#[derive(Clone, Copy)]
pub struct ValueDeserializer<'a>(pub &'a Value);

impl<'de> IntoDeserializer<'de, Error> for ValueDeserializer<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for ValueDeserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(flag) => visitor.visit_bool(*flag),
            Value::Number(number) => match (number.as_u64(), number.as_i64()) {
                (Some(unsigned), _) => visitor.visit_u64(unsigned),
                (None, Some(signed)) => visitor.visit_i64(signed),
                (None, None) => visitor.visit_f64(number.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(text) => visitor.visit_borrowed_str(text),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter().map(ValueDeserializer));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(entries) => {
                let mut map =
                    MapDeserializer::new(entries.iter().map(|(key, item)| (key.as_str(), ValueDeserializer(item))));
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // The config only has unit variants, written as strings.
        match self.0 {
            Value::String(text) => visitor.visit_enum(text.as_str().into_deserializer()),
            _ => self.deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        token: Option<String>,
        count: Option<u64>,
        mode: Option<Mode>,
        list: Option<Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Keep,
        Revoke,
    }

    fn problem(value: Value) -> (String, String) {
        let err = from_value::<Sample>(&value).unwrap_err();
        (err.path().to_string(), err.into_inner().to_string())
    }

    #[test]
    fn problems_name_the_expectation_never_the_value() {
        assert_eq!(
            problem(json!({"token": 123456789012345u64})),
            ("token".into(), "expected a string, found an integer".into())
        );
        assert_eq!(problem(json!({"count": "s3cret"})), ("count".into(), "expected u64, found a string".into()));
        assert_eq!(problem(json!({"count": -5})), ("count".into(), "invalid value (an integer): expected u64".into()));
        assert_eq!(
            problem(json!({"mode": "s3cret"})),
            ("mode".into(), "unknown value, expected one of: keep, revoke".into())
        );
        assert_eq!(problem(json!({"list": [1]})), ("list[0]".into(), "expected a string, found an integer".into()));
        let unknown = problem(json!({"tokn": "s3cret"}));
        assert!(unknown.1.starts_with("unknown field `tokn`"), "{unknown:?}");
        assert!(!unknown.1.contains("s3cret"));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Vec<Sample>>,
    }

    #[test]
    fn every_unknown_key_is_reported_at_its_path() {
        let value = json!({"nam": "x", "name": "n", "inner": [{"token": "t"}, {"tokn": "s3cret", "cont": 1}], "zz": 2});
        let problems: Vec<String> =
            from_value_reporting_all::<Outer>(&value).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "nam: unknown field `nam`, expected `name` or `inner`",
                "inner[1].tokn: unknown field `tokn`, expected one of `token`, `count`, `mode`, `list`",
                "inner[1].cont: unknown field `cont`, expected one of `token`, `count`, `mode`, `list`",
                "zz: unknown field `zz`, expected `name` or `inner`",
            ]
        );
        // After the unknown keys, the first other problem is reported too.
        let value = json!({"nam": "x", "name": 5});
        let problems: Vec<String> =
            from_value_reporting_all::<Outer>(&value).unwrap_err().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            ["nam: unknown field `nam`, expected `name` or `inner`", "name: expected a string, found an integer"]
        );
        assert!(from_value_reporting_all::<Outer>(&json!({"name": "n"})).is_ok());
    }

    #[test]
    fn valid_documents_read_as_with_serde_json() {
        let sample: Sample = from_value(&json!({"token": "t", "count": 3, "mode": "revoke", "list": ["a"]})).unwrap();
        assert_eq!(sample.token.as_deref(), Some("t"));
        assert!(matches!(sample.mode, Some(Mode::Revoke)));
        let any: Value = from_value(&json!({"a": [1, -2, 1.5, null, true]})).unwrap();
        assert_eq!(any, json!({"a": [1, -2, 1.5, null, true]}));
    }
}
