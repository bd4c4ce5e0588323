//! What may go into an HTTP header. Claim values and configured secrets become
//! request headers next to an admin secret: a CR, LF or NUL in one would
//! smuggle a header or a whole request past Envoy.

/// RFC 9110 field-name: a token of tchars. Claim-derived header names must be one.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 field-value without control characters (HTAB allowed).
pub fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_tokens_and_values_have_no_controls() {
        assert!(is_header_name("x-hasura-user-id"));
        assert!(!is_header_name("x hasura") && !is_header_name("") && !is_header_name("x:y"));
        assert!(is_header_value("a\tb é"));
        assert!(!is_header_value("a\r\nx-hasura-role: admin") && !is_header_value("a\0"));
    }
}
