//! Reads the parsed document into the typed config with errors that say what
//! was expected and what kind of value was found, never the value itself.
//!
//! serde's own messages quote the offending value (``invalid type: integer
//! `12345`, expected a string``); at `admin.token` or `admin_secret` that value
//! is a secret, and config problems reach logs, `check-config` output and the
//! Admin API's reload error. serde's `value` deserializers are generic over the
//! error type, so this only wraps `serde_json::Value` in them with an error
//! type whose constructors drop the value.

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserializer, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;

/// A deserialization problem, free of config values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error(message.to_string())
    }

    fn invalid_type(found: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Error(format!("expected {expected}, found {}", kind(&found)))
    }

    fn invalid_value(found: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Error(format!("invalid value ({}): expected {expected}", kind(&found)))
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Error(format!("unknown value, expected one of: {}", expected.join(", ")))
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

    #[test]
    fn valid_documents_read_as_with_serde_json() {
        let sample: Sample = from_value(&json!({"token": "t", "count": 3, "mode": "revoke", "list": ["a"]})).unwrap();
        assert_eq!(sample.token.as_deref(), Some("t"));
        assert!(matches!(sample.mode, Some(Mode::Revoke)));
        let any: Value = from_value(&json!({"a": [1, -2, 1.5, null, true]})).unwrap();
        assert_eq!(any, json!({"a": [1, -2, 1.5, null, true]}));
    }
}
