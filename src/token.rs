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
    /// Outcomes of deterministic rules for this token: (rule, the request values
    /// it read, outcome). Bounded: past the limit rules are evaluated, not remembered.
    memo: Mutex<Vec<(u64, String, MemoOutcome)>>,
}

/// A remembered rule outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoOutcome {
    Held,
    NotHeld,
    /// The rule could not be evaluated (why, for logs).
    Error(Arc<str>),
}

/// Remembered rule outcomes per token.
const MAX_MEMO_ENTRIES: usize = 16;

impl VerifiedToken {
    pub fn new(issuer: usize, key_id: String, exp: u64, claims: Map<String, Value>) -> Self {
        VerifiedToken { issuer, key_id, exp, claims, rules_view: OnceLock::new(), memo: Mutex::new(Vec::new()) }
    }

    /// Estimated bytes this token holds in the cache: itself, its key id and
    /// its claims (the remembered rule outcomes and the CEL view of the claims
    /// are added after insertion; the cache allows for the CEL view).
    pub fn footprint(&self) -> usize {
        self.footprint_with_claims(1)
    }

    /// The footprint once CEL rules have read the token: the claims converted
    /// for CEL take about as much again as the parsed claims (measured).
    pub fn footprint_with_cel_view(&self) -> usize {
        self.footprint_with_claims(2)
    }

    /// The token's own allocations plus `copies` of its claims (walked once).
    fn footprint_with_claims(&self, copies: usize) -> usize {
        footprint::allocation(std::mem::size_of::<Self>() + 16)
            + footprint::string(&self.key_id)
            + copies * footprint::object(&self.claims)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// The remembered outcome of `rule` for exactly `input`.
    pub fn recall(&self, rule: u64, input: &str) -> Option<MemoOutcome> {
        let memo = self.memo.lock().expect("memo lock poisoned");
        memo.iter().find(|(id, key, _)| *id == rule && key == input).map(|(_, _, outcome)| outcome.clone())
    }

    pub fn remember(&self, rule: u64, input: String, outcome: MemoOutcome) {
        let mut memo = self.memo.lock().expect("memo lock poisoned");
        if memo.len() < MAX_MEMO_ENTRIES {
            memo.push((rule, input, outcome));
        }
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
    fn a_fixed_clock_moves_only_when_told() {
        let clock = Clock::fixed(1_000);
        let shared = clock.clone();
        shared.advance(5);
        assert_eq!(clock.now(), 1_005);
        assert!(Clock::system().now() > 1_700_000_000);
    }
}
