//! A bearer token's identity, apart from who verifies it: its digest (the cache
//! key), the fingerprint logs show instead of it, what verification
//! established about it, and the clock every time check reads. The verifier
//! and the cache both depend on this module, never on each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cel::common::value::Val;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::footprint;

/// SHA-256 of the token: a collision would need a SHA-256 break, unlike a fast
/// hash an attacker could aim at.
pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    digest_bytes(token.as_bytes())
}

/// SHA-256 of any bytes (a file's content, to notice that it changed).
pub fn digest_bytes(bytes: &[u8]) -> TokenDigest {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    hash.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// SHA-256 of the request values a CEL rule read: what its remembered outcome
/// is keyed by, a fixed 32 bytes however long the values are.
pub type RequestDigest = [u8; 32];

/// SHA-256 of `fields`, each prefixed by its length, so no two different
/// lists of fields give the same input.
pub fn digest_fields<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> RequestDigest {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for field in fields {
        context.update(&(field.len() as u64).to_le_bytes());
        context.update(field);
    }
    context.finish().as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// A short, non-reversible label for logs: never log the token itself.
pub fn fingerprint(digest: &TokenDigest) -> String {
    digest[..6].iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Claims of a token that passed every check of one issuer.
#[derive(Debug)]
pub struct VerifiedToken {
    /// The verifying issuer's position in its policy.
    pub issuer: usize,
    /// Identity of the key that verified it; the token stops being valid when
    /// that key leaves the key set.
    pub key_id: String,
    pub exp: u64,
    pub claims: Map<String, Value>,
    /// The claims as CEL rules read them, converted on first use and kept with
    /// the cached token, so a cached allow does not convert them again.
    rules_view: OnceLock<Box<dyn Val>>,
    /// Outcomes of deterministic rules for this token. At most
    /// [`MAX_MEMO_ENTRIES`] of a fixed size, so its weight is known at insertion;
    /// past the limit rules are evaluated, not remembered.
    memo: Mutex<Vec<Remembered>>,
}

/// One remembered rule outcome: the rule, a digest of the request values it
/// read, and whether it held.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    rule: u64,
    input: RequestDigest,
    held: bool,
}

/// Remembered rule outcomes per token.
pub const MAX_MEMO_ENTRIES: usize = 16;

/// The most a token's memo holds: [`MAX_MEMO_ENTRIES`] entries in one
/// allocation (the list grows 4, 8, 16 and stops there).
pub const MEMO_BYTES: usize = footprint::allocation(MAX_MEMO_ENTRIES * std::mem::size_of::<Remembered>());

/// What CEL rules may add to a cached token after it is inserted, which its
/// cache weight must allow for from the start (the cache weighs once, at insertion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleAdditions {
    /// The policy has no CEL rule.
    #[default]
    None,
    /// The claims converted for CEL: about as large again as the parsed claims (measured).
    CelView,
    /// The CEL view and up to [`MAX_MEMO_ENTRIES`] remembered outcomes ([`MEMO_BYTES`]).
    CelViewAndMemo,
}

impl VerifiedToken {
    pub fn new(issuer: usize, key_id: String, exp: u64, claims: Map<String, Value>) -> Self {
        VerifiedToken { issuer, key_id, exp, claims, rules_view: OnceLock::new(), memo: Mutex::new(Vec::new()) }
    }

    /// Estimated bytes this token holds in the cache: itself, its key id, its
    /// claims (walked once), and what CEL rules may add to it.
    pub fn footprint(&self, additions: RuleAdditions) -> usize {
        let (claim_copies, memo) = match additions {
            RuleAdditions::None => (1, 0),
            RuleAdditions::CelView => (2, 0),
            RuleAdditions::CelViewAndMemo => (2, MEMO_BYTES),
        };
        footprint::allocation(std::mem::size_of::<Self>() + 16)
            + footprint::string(&self.key_id)
            + claim_copies * footprint::object(&self.claims)
            + memo
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// The remembered outcome of `rule` for exactly `input`: whether it held.
    pub fn recall(&self, rule: u64, input: &RequestDigest) -> Option<bool> {
        let memo = self.memo.lock().expect("memo lock poisoned");
        memo.iter().find(|entry| entry.rule == rule && entry.input == *input).map(|entry| entry.held)
    }

    pub fn remember(&self, rule: u64, input: RequestDigest, held: bool) {
        let mut memo = self.memo.lock().expect("memo lock poisoned");
        if memo.len() < MAX_MEMO_ENTRIES {
            memo.push(Remembered { rule, input, held });
        }
    }

    /// Heap bytes the memo holds now: at most [`MEMO_BYTES`].
    pub fn memo_bytes(&self) -> usize {
        let memo = self.memo.lock().expect("memo lock poisoned");
        footprint::allocation(memo.capacity() * std::mem::size_of::<Remembered>())
    }

    pub fn rules_view(&self) -> &dyn Val {
        self.rules_view
            .get_or_init(|| {
                let value = cel::to_value(&self.claims).unwrap_or(cel::Value::Null);
                Box::<dyn Val>::try_from(value).unwrap_or_else(|_| Box::new(cel::common::types::CelNull))
            })
            .as_ref()
    }
}

/// Seconds since the Unix epoch: the system clock, or a fixed one that tests
/// set and advance. Cheap to clone; every stage that checks a time reads this.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    fixed: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Self {
        Clock::default()
    }

    /// A clock that reads `now` until set or advanced.
    pub fn fixed(now: u64) -> Self {
        Clock { fixed: Some(Arc::new(AtomicU64::new(now))) }
    }

    pub fn now(&self) -> u64 {
        match &self.fixed {
            Some(now) => now.load(Ordering::Relaxed),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs()),
        }
    }

    /// Moves a fixed clock forward; a system clock cannot be moved.
    pub fn advance(&self, seconds: u64) {
        if let Some(now) = &self.fixed {
            now.fetch_add(seconds, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_fingerprints_are_stable() {
        let digest = digest("abc");
        assert_eq!(fingerprint(&digest), "ba7816bf8f01");
    }

    #[test]
    fn request_digests_keep_fields_apart() {
        let digest = |fields: &[&str]| digest_fields(fields.iter().map(|field| field.as_bytes()));
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_ne!(digest(&["a", ""]), digest(&["a"]));
        assert_eq!(digest(&["GET", "/x"]), digest(&["GET", "/x"]));
    }

    #[test]
    fn the_memo_has_a_fixed_size_however_long_the_request() {
        let token = VerifiedToken::new(0, "k".into(), 0, Map::new());
        assert_eq!(token.memo_bytes(), 0);
        for index in 0..100u64 {
            let long_path = format!("/{}", "x".repeat(45 * 1024 + index as usize));
            token.remember(index % 3, digest_fields([long_path.as_bytes()]), index % 2 == 0);
        }
        assert_eq!(token.memo_bytes(), MEMO_BYTES, "16 entries of 32-byte digests, never the paths");
        assert_eq!(MEMO_BYTES, 784, "the figure docs/security.md and docs/configuration.md give");
        let first = digest_fields([format!("/{}", "x".repeat(45 * 1024)).as_bytes()]);
        assert_eq!(token.recall(0, &first), Some(true));
        let bare = token.footprint(RuleAdditions::CelView);
        assert_eq!(token.footprint(RuleAdditions::CelViewAndMemo), bare + MEMO_BYTES);
    }

    #[test]
    fn a_fixed_clock_moves_only_when_told() {
        let clock = Clock::fixed(1_000);
        let shared = clock.clone();
        shared.advance(5);
        assert_eq!(clock.now(), 1_005);
        assert!(Clock::system().now() > 1_700_000_000);
    }
}
