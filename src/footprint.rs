//! Estimated heap bytes of what the caches hold, so they can be capped in
//! bytes as well as in entries.
//!
//! A parsed claim set takes several times its JSON size (an 800-byte token's
//! claims take about 4.5 KiB: every value is a 72-byte `serde_json::Value`,
//! every object an index table, every string its own allocation), so a cap on
//! entries alone does not bound memory: a few large tokens weigh as much as
//! many small ones. The estimate follows how serde_json lays a parsed document
//! out and how the allocator rounds each allocation, and is checked against
//! resident memory by `benches/cache_memory.rs`.

use serde_json::{Map, Value};

const VALUE: usize = std::mem::size_of::<Value>();
/// An object entry: the key's hash, the key, the value.
const OBJECT_ENTRY: usize = std::mem::size_of::<usize>() + std::mem::size_of::<String>() + VALUE;

/// What the allocator hands out for `requested` bytes: 8 bytes of header,
/// rounded up to 16, at least 32.
pub const fn allocation(requested: usize) -> usize {
    if requested == 0 {
        return 0;
    }
    let rounded = (requested + 8).next_multiple_of(16);
    if rounded < 32 { 32 } else { rounded }
}

pub fn string(text: &str) -> usize {
    allocation(text.len())
}

/// Heap bytes of a parsed JSON object (not counting the map's own inline struct).
pub fn object(map: &Map<String, Value>) -> usize {
    let len = map.len();
    if len == 0 {
        return 0;
    }
    // An index table of power-of-two buckets at most 7/8 full, one byte of
    // control per bucket plus a group's worth; the entries sized to match.
    let buckets = if len < 4 {
        4
    } else if len < 8 {
        8
    } else {
        (len * 8 / 7).next_power_of_two()
    };
    let table = allocation(buckets * 9 + 16);
    let entries = allocation((buckets * 7 / 8).max(len) * OBJECT_ENTRY);
    table + entries + map.iter().map(|(key, value)| string(key) + self::value(value)).sum::<usize>()
}

/// Heap bytes of a parsed JSON value (not counting the value itself).
pub fn value(value: &Value) -> usize {
    match value {
        Value::String(text) => string(text),
        // Arrays grow 4, 8, 16, ... while parsed.
        Value::Array(items) => {
            allocation(items.len().next_power_of_two().max(4) * VALUE) + items.iter().map(self::value).sum::<usize>()
        }
        Value::Object(map) => object(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object_of(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn allocations_round_like_the_allocator() {
        assert_eq!(allocation(0), 0);
        assert_eq!(allocation(1), 32);
        assert_eq!(allocation(24), 32);
        assert_eq!(allocation(25), 48);
    }

    #[test]
    fn an_empty_claim_set_holds_nothing_and_every_claim_adds() {
        assert_eq!(object(&Map::new()), 0);
        let small = object(&object_of(json!({"sub": "a"})));
        let more = object(&object_of(json!({"sub": "a", "exp": 1})));
        let longer = object(&object_of(json!({"sub": "a".repeat(200), "exp": 1})));
        assert!(small > 0 && more > small && longer >= more + 200 - 32, "{small} {more} {longer}");
    }

    #[test]
    fn nested_values_are_counted() {
        let flat = object(&object_of(json!({"roles": null})));
        let nested = object(&object_of(json!({"roles": ["a", "b", {"c": "d"}]})));
        // The array (4 slots), two strings, the inner object with its key and value.
        assert!(nested >= flat + 4 * VALUE + 2 * 32 + OBJECT_ENTRY + 2 * 32, "{flat} {nested}");
    }

    #[test]
    fn a_realistic_token_weighs_several_times_its_json() {
        let claims = object_of(json!({
            "iss": "https://acme.eu.auth0.com/", "sub": "auth0|65f1c0de0000000000000007",
            "aud": ["https://graphql.acme.com", "https://acme.eu.auth0.com/userinfo"],
            "iat": 1_790_000_000u64, "exp": 4_000_000_000u64, "scope": "openid profile email",
            "permissions": ["read:orders", "write:orders"], "email": "user7@example.com",
        }));
        let json_bytes = serde_json::to_string(&claims).expect("serializes").len();
        let estimate = object(&claims);
        assert!(estimate > 3 * json_bytes && estimate < 10 * json_bytes, "{estimate} for {json_bytes} bytes of JSON");
    }
}
