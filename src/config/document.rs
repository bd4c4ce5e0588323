//! The YAML text as one JSON value, with every repeated key reported at its
//! YAML path. YAML requires unique keys, yet parsers differ on a repeat (the
//! first wins, the last wins, or an error), so a file with two `audiences:`
//! under one issuer could read one way to its reviewer and another way to
//! portcullis: it is refused. The parser forwards every entry
//! (`DuplicateKeyPolicy::PassThrough`) into a tree that keeps them all, and the
//! repeats are reported by path, never with their values.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{Problem, join_path};

/// The document (the last of repeated keys kept) and a problem per repeated key;
/// `Err` with the parser's message when the text is not YAML.
pub fn parse(text: &str) -> Result<(Value, Vec<Problem>), String> {
    // Without the source snippet: the offending line may hold a secret.
    let options = serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    let node: Node = serde_saphyr::from_str_with_options(text, options).map_err(|err| err.to_string())?;
    let mut problems = Vec::new();
    let value = node.into_value("", &mut problems);
    Ok((value, problems))
}

/// A YAML node with every mapping entry, repeats included, in written order.
enum Node {
    Scalar(Value),
    List(Vec<Node>),
    Mapping(Vec<(String, Node)>),
}

impl Node {
    fn into_value(self, path: &str, problems: &mut Vec<Problem>) -> Value {
        match self {
            Node::Scalar(value) => value,
            Node::List(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(index, item)| item.into_value(&join_path(path, &format!("[{index}]")), problems))
                    .collect(),
            ),
            Node::Mapping(entries) => {
                let mut map = Map::new();
                for (key, node) in entries {
                    let at = join_path(path, &key);
                    let value = node.into_value(&at, problems);
                    if map.insert(key, value).is_some() {
                        problems.push(Problem::new(at, "duplicate key: each key may appear once in a mapping"));
                    }
                }
                Value::Object(map)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Reads what `serde_json::Value` reads, keeping repeated keys.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Bool(flag)))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(number)))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::from(number)))
    }

    fn visit_i128<E: de::Error>(self, number: i128) -> Result<Node, E> {
        match (i64::try_from(number), u64::try_from(number)) {
            (Ok(small), _) => self.visit_i64(small),
            (_, Ok(unsigned)) => self.visit_u64(unsigned),
            _ => Err(E::custom("an integer out of range")),
        }
    }

    fn visit_u128<E: de::Error>(self, number: u128) -> Result<Node, E> {
        u64::try_from(number).map_err(|_| E::custom("an integer out of range")).and_then(|n| self.visit_u64(n))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Node, E> {
        Ok(Node::Scalar(Number::from_f64(number).map_or(Value::Null, Value::Number)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(text.to_string())))
    }

    fn visit_string<E>(self, text: String) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(text)))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Node>()? {
            entries.push(entry);
        }
        Ok(Node::Mapping(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(text: &str) -> Vec<String> {
        parse(text).unwrap().1.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn repeated_keys_are_reported_by_path_without_values() {
        let text = "issuers:\n  a:\n    audiences: [x]\n    audiences: [s3cret]\n  a: {}\nroutes:\n  - match: { prefix: /a/, prefix: /b/ }\n";
        assert_eq!(
            problems(text),
            [
                "issuers.a.audiences: duplicate key: each key may appear once in a mapping",
                "issuers.a: duplicate key: each key may appear once in a mapping",
                "routes[0].match.prefix: duplicate key: each key may appear once in a mapping",
            ]
        );
        assert!(!problems(text).concat().contains("s3cret"));
    }

    #[test]
    fn documents_read_as_json_values() {
        let (value, found) = parse("a: [1, -2, 1.5, ~, true, 'x']\nb: { c: d }\n").unwrap();
        assert!(found.is_empty());
        assert_eq!(value, json!({"a": [1, -2, 1.5, null, true, "x"], "b": {"c": "d"}}));
        assert!(parse("a: [unclosed\n").is_err());
    }
}
