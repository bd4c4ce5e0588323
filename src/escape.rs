//! Text a client or an IdP controls (a token's `alg`, `kid` or `iss`, a JWKS
//! entry) made safe to print: in a text log a raw newline forges a line and an
//! escape sequence rewrites the terminal. Escaped once, where it enters.

/// Longest untrusted text kept; the rest is cut (a log line is not a transcript).
const MAX_CHARS: usize = 128;

/// `text` with everything but printable ASCII written as `\u{..}`, `\` as `\\`,
/// cut to a bounded length.
pub fn escape(text: &str) -> String {
    escape_at_most(text, MAX_CHARS)
}

/// [`escape`] with another bound: `max_chars` characters of `text` are kept,
/// then `...`. For whole messages that quote client text (a deny reason).
pub fn escape_at_most(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    for (count, c) in text.chars().enumerate() {
        if count == max_chars {
            out.push_str("...");
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            other => out.push_str(&format!("\\u{{{:x}}}", u32::from(other))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_non_ascii_are_escaped() {
        assert_eq!(escape("RS256\n2026-01-01 INFO forged"), "RS256\\u{a}2026-01-01 INFO forged");
        assert_eq!(escape("\u{1b}[31mred\\"), "\\u{1b}[31mred\\\\");
        assert_eq!(escape("caf\u{e9}\u{202e}"), "caf\\u{e9}\\u{202e}");
        assert_eq!(escape(&"a".repeat(200)).len(), MAX_CHARS + 3);
        assert_eq!(escape("kid-1"), "kid-1");
        assert_eq!(escape_at_most("ab\ncd", 3), "ab\\u{a}...");
    }
}
