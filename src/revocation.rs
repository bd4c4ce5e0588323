//! Revoked tokens, checked on every Check after verification (token-cache hits
//! included, so a remembered allow cannot outlive a revocation). Two kinds of
//! entry: a per-(issuer, subject) cutoff ("tokens issued at or before T are
//! revoked", what a deleted or suspended user needs: their tokens have no common
//! `jti`) and a `jti` denylist (one leaked token). Each entry expires once no
//! token it covers can still be valid, so the set stays as small as the
//! revocations that matter. The set lives in memory in every replica: no shared
//! store is asked on the Check path; `state` keeps it in step across replicas.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::{OnStale, Problem, RevocationConfig};
use crate::jsonpath::JsonPath;
use crate::token::VerifiedToken;

/// One day: a subject's cutoff is kept this long unless configured.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS: u64 = 86_400;

/// A change to the set, as applied locally and as written to the shared state
/// (its JSON form is the Redis stream entry and snapshot value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Tokens of `issuer` for `subject` with `iat` at or before `cutoff` are revoked until `expires`.
    RevokeSubject {
        issuer: String,
        subject: String,
        cutoff: u64,
        expires: u64,
    },
    /// The token of `issuer` with this `jti` is revoked until `expires` (its `exp`).
    RevokeToken {
        issuer: String,
        jti: String,
        expires: u64,
    },
    UnrevokeSubject {
        issuer: String,
        subject: String,
    },
    UnrevokeToken {
        issuer: String,
        jti: String,
    },
}

impl Change {
    /// The entry this change writes or removes: one snapshot field per entry.
    pub fn entry_key(&self) -> String {
        match self {
            Change::RevokeSubject { issuer, subject, .. } | Change::UnrevokeSubject { issuer, subject } => {
                entry_key(Kind::Subject, issuer, subject)
            }
            Change::RevokeToken { issuer, jti, .. } | Change::UnrevokeToken { issuer, jti } => {
                entry_key(Kind::Token, issuer, jti)
            }
        }
    }

    /// Whether it removes an entry.
    pub fn is_removal(&self) -> bool {
        matches!(self, Change::UnrevokeSubject { .. } | Change::UnrevokeToken { .. })
    }

    /// When the entry it writes may be forgotten (`None` for a removal).
    pub fn expires(&self) -> Option<u64> {
        match self {
            Change::RevokeSubject { expires, .. } | Change::RevokeToken { expires, .. } => Some(*expires),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Subject,
    Token,
}

/// Issuer names and subjects may hold any character: lengths keep them apart.
fn entry_key(kind: Kind, issuer: &str, id: &str) -> String {
    let tag = match kind {
        Kind::Subject => 's',
        Kind::Token => 'j',
    };
    format!("{tag}:{}:{issuer}:{id}", issuer.len())
}

/// One entry of the set, as `ListRevocations` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Subject { issuer: String, subject: String, cutoff: u64, expires: u64 },
    Token { issuer: String, jti: String, expires: u64 },
}

/// Why a verified token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Its subject was revoked after it was issued (or it has no `iat`).
    Subject,
    /// Its `jti` is on the denylist.
    Token,
}

/// Whether the set can be trusted as current (see `state.max_stale_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Current,
    /// Not confirmed against the shared state for longer than allowed: `on_stale` decides.
    Stale(OnStale),
}

/// The revocation set of this process, shared by every policy generation.
#[derive(Debug, Default)]
pub struct Revocations {
    entries: RwLock<Entries>,
    /// When the set was last confirmed current (seconds on the runtime clock);
    /// [`ALWAYS_CURRENT`] for a process-local state, 0 before the first read.
    synced_at: AtomicU64,
    /// `state.max_stale_seconds` and `state.on_stale`, set when the state is connected.
    stale_after: AtomicU64,
    on_stale_allow: std::sync::atomic::AtomicBool,
    /// Changes applied while a resynchronisation reads the snapshot: replayed on
    /// top of it, so a revocation applied meanwhile is never dropped by the swap.
    resyncing: std::sync::Mutex<Option<Vec<Change>>>,
}

/// `synced_at` of a set nothing else writes to (`state: memory`).
pub const ALWAYS_CURRENT: u64 = u64::MAX;

/// By issuer, then subject or jti: a Check looks both up by `&str`, allocating nothing.
#[derive(Debug, Default)]
struct Entries {
    /// issuer -> subject -> (cutoff, expires)
    subjects: HashMap<String, HashMap<String, (u64, u64)>>,
    /// issuer -> jti -> expires
    tokens: HashMap<String, HashMap<String, u64>>,
}

impl Revocations {
    /// A set that is always current (`state: memory`).
    pub fn local() -> Self {
        let revocations = Revocations::default();
        revocations.synced_at.store(ALWAYS_CURRENT, Ordering::Relaxed);
        revocations
    }

    /// Sets how long the set may go unconfirmed and what happens after.
    pub fn set_staleness(&self, max_stale_seconds: u64, on_stale: OnStale) {
        self.stale_after.store(max_stale_seconds, Ordering::Relaxed);
        self.on_stale_allow.store(on_stale == OnStale::Allow, Ordering::Relaxed);
    }

    /// The set is not known to be current until a shared state confirms it.
    pub fn mark_unsynced(&self) {
        self.synced_at.store(0, Ordering::Relaxed);
    }

    /// The shared state confirmed the set at `now`.
    pub fn mark_synced(&self, now: u64) {
        self.synced_at.store(now, Ordering::Relaxed);
    }

    /// Whether the set has ever been read from the shared state (readiness).
    pub fn ever_synced(&self) -> bool {
        self.synced_at.load(Ordering::Relaxed) != 0
    }

    /// Seconds since the set was last confirmed current (0 when it always is).
    pub fn staleness(&self, now: u64) -> u64 {
        match self.synced_at.load(Ordering::Relaxed) {
            ALWAYS_CURRENT => 0,
            at => now.saturating_sub(at),
        }
    }

    pub fn freshness(&self, now: u64) -> Freshness {
        let synced_at = self.synced_at.load(Ordering::Relaxed);
        if synced_at == ALWAYS_CURRENT
            || (synced_at != 0 && now.saturating_sub(synced_at) <= self.stale_after.load(Ordering::Relaxed))
        {
            return Freshness::Current;
        }
        let on_stale = if self.on_stale_allow.load(Ordering::Relaxed) { OnStale::Allow } else { OnStale::Deny };
        Freshness::Stale(on_stale)
    }

    pub fn apply(&self, change: &Change) {
        if let Some(pending) = self.resyncing.lock().expect("resync lock poisoned").as_mut() {
            pending.push(change.clone());
        }
        self.apply_entry(change);
    }

    fn apply_entry(&self, change: &Change) {
        let mut entries = self.entries.write().expect("revocations lock poisoned");
        match change {
            Change::RevokeSubject { issuer, subject, cutoff, expires } => {
                // Cutoffs only move forward: a late, older revocation never un-revokes tokens.
                let of_issuer = entries.subjects.entry(issuer.clone()).or_default();
                let entry = of_issuer.entry(subject.clone()).or_insert((0, 0));
                entry.0 = entry.0.max(*cutoff);
                entry.1 = entry.1.max(*expires);
            }
            Change::RevokeToken { issuer, jti, expires } => {
                let entry = entries.tokens.entry(issuer.clone()).or_default().entry(jti.clone()).or_insert(0);
                *entry = (*entry).max(*expires);
            }
            Change::UnrevokeSubject { issuer, subject } => {
                if let Some(of_issuer) = entries.subjects.get_mut(issuer) {
                    of_issuer.remove(subject);
                }
            }
            Change::UnrevokeToken { issuer, jti } => {
                if let Some(of_issuer) = entries.tokens.get_mut(issuer) {
                    of_issuer.remove(jti);
                }
            }
        }
    }

    /// A resynchronisation starts: changes applied from now on survive [`Revocations::replace`].
    pub fn begin_replace(&self) {
        *self.resyncing.lock().expect("resync lock poisoned") = Some(Vec::new());
    }

    /// Replaces the whole set with `changes` (the shared snapshot), then replays
    /// what was applied since [`Revocations::begin_replace`].
    pub fn replace(&self, changes: &[Change]) {
        let fresh = Revocations::default();
        let mut pending = self.resyncing.lock().expect("resync lock poisoned");
        for change in changes.iter().chain(pending.iter().flatten()) {
            fresh.apply_entry(change);
        }
        let taken = std::mem::take(&mut *fresh.entries.write().expect("revocations lock poisoned"));
        *self.entries.write().expect("revocations lock poisoned") = taken;
        *pending = None;
    }

    /// Whether `token`, verified by the issuer named `issuer` (whose leeway is
    /// `leeway`), is revoked as of `now`. An entry past its expiry covers nothing.
    pub fn check(&self, issuer: &str, token: &VerifiedToken, leeway: u64, now: u64) -> Option<Revoked> {
        let entries = self.entries.read().expect("revocations lock poisoned");
        if entries.subjects.is_empty() && entries.tokens.is_empty() {
            return None;
        }
        if let Some(jti) = token.claim_str("jti")
            && entries
                .tokens
                .get(issuer)
                .and_then(|of_issuer| of_issuer.get(jti))
                .is_some_and(|expires| *expires >= now)
        {
            return Some(Revoked::Token);
        }
        let subject = token.claim_str("sub")?;
        let (cutoff, expires) = *entries.subjects.get(issuer)?.get(subject)?;
        if expires < now {
            return None;
        }
        // Without `iat` the token cannot show it came after the cutoff.
        let issued_at = token.claims.get("iat").and_then(serde_json::Value::as_f64);
        match issued_at {
            Some(iat) if iat > cutoff.saturating_add(leeway) as f64 => None,
            _ => Some(Revoked::Subject),
        }
    }

    /// Every entry still in force at `now`, subjects first, each sorted.
    pub fn list(&self, now: u64) -> Vec<Entry> {
        let entries = self.entries.read().expect("revocations lock poisoned");
        let mut subjects: Vec<Entry> = entries
            .subjects
            .iter()
            .flat_map(|(issuer, of_issuer)| of_issuer.iter().map(move |(subject, at)| (issuer, subject, *at)))
            .filter(|(_, _, (_, expires))| *expires >= now)
            .map(|(issuer, subject, (cutoff, expires))| Entry::Subject {
                issuer: issuer.clone(),
                subject: subject.clone(),
                cutoff,
                expires,
            })
            .collect();
        let mut tokens: Vec<Entry> = entries
            .tokens
            .iter()
            .flat_map(|(issuer, of_issuer)| of_issuer.iter().map(move |(jti, expires)| (issuer, jti, *expires)))
            .filter(|(_, _, expires)| *expires >= now)
            .map(|(issuer, jti, expires)| Entry::Token { issuer: issuer.clone(), jti: jti.clone(), expires })
            .collect();
        subjects.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        tokens.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        subjects.extend(tokens);
        subjects
    }

    /// The set as changes that rebuild it (written back after the shared state lost it).
    pub fn as_changes(&self, now: u64) -> Vec<Change> {
        self.list(now)
            .into_iter()
            .map(|entry| match entry {
                Entry::Subject { issuer, subject, cutoff, expires } => {
                    Change::RevokeSubject { issuer, subject, cutoff, expires }
                }
                Entry::Token { issuer, jti, expires } => Change::RevokeToken { issuer, jti, expires },
            })
            .collect()
    }

    /// Forgets entries that cover no valid token any more.
    pub fn purge_expired(&self, now: u64) {
        let mut entries = self.entries.write().expect("revocations lock poisoned");
        for of_issuer in entries.subjects.values_mut() {
            of_issuer.retain(|_, (_, expires)| *expires >= now);
        }
        for of_issuer in entries.tokens.values_mut() {
            of_issuer.retain(|_, expires| *expires >= now);
        }
        entries.subjects.retain(|_, of_issuer| !of_issuer.is_empty());
        entries.tokens.retain(|_, of_issuer| !of_issuer.is_empty());
    }

    pub fn len(&self) -> usize {
        let entries = self.entries.read().expect("revocations lock poisoned");
        entries.subjects.values().map(HashMap::len).sum::<usize>()
            + entries.tokens.values().map(HashMap::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The compiled `revocation` section.
#[derive(Debug, Clone)]
pub struct RevocationPolicy {
    pub max_token_lifetime_seconds: u64,
    pub on_event: Vec<EventAction>,
}

/// One compiled `on_event` entry.
#[derive(Debug, Clone)]
pub struct EventAction {
    pub webhook: String,
    pub event_type: String,
    pub if_true: Option<JsonPath>,
    pub subject: JsonPath,
    pub issuer: String,
    /// That issuer's leeway, added to the cutoff's lifetime.
    pub leeway_seconds: u64,
}

impl RevocationPolicy {
    /// The subject cutoff for `subject` at `cutoff` (a time on the token issuer's clock).
    pub fn revoke_subject(&self, issuer: &str, subject: &str, cutoff: u64, leeway: u64) -> Change {
        Change::RevokeSubject {
            issuer: issuer.to_string(),
            subject: subject.to_string(),
            cutoff,
            expires: cutoff.saturating_add(self.max_token_lifetime_seconds).saturating_add(leeway),
        }
    }

    /// The revocations `payload`, an event of `event_type` from `webhook`, calls for.
    pub fn changes_for(&self, webhook: &str, event_type: &str, payload: &serde_json::Value, at: u64) -> Vec<Change> {
        self.on_event
            .iter()
            .filter(|action| action.webhook == webhook && action.event_type == event_type)
            .filter(|action| action.if_true.as_ref().is_none_or(|path| path.find(payload) == Some(true.into())))
            .filter_map(|action| {
                let subject = action.subject.find(payload)?;
                let subject = subject.as_str().filter(|subject| !subject.is_empty())?;
                Some(self.revoke_subject(&action.issuer, subject, at, action.leeway_seconds))
            })
            .collect()
    }
}

/// Compiles `revocation`: names resolve (`issuer_leeway` gives an issuer's
/// leeway by name, `webhooks` the declared webhook names), paths parse.
pub fn compile(
    config: &RevocationConfig,
    issuer_leeway: impl Fn(&str) -> Option<u64>,
    webhooks: &[&str],
) -> Result<RevocationPolicy, Vec<Problem>> {
    let mut problems = Vec::new();
    let lifetime = config.max_token_lifetime_seconds.unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME_SECONDS);
    if lifetime == 0 {
        problems.push(Problem::new("max_token_lifetime_seconds", "must be greater than 0"));
    }
    let mut on_event = Vec::new();
    for (index, action) in config.on_event.iter().enumerate() {
        let at = |key: &str| format!("on_event[{index}].{key}");
        if !webhooks.contains(&action.webhook.as_str()) {
            problems.push(Problem::new(at("webhook"), "no webhook of that name in `webhooks`"));
        }
        let leeway = issuer_leeway(&action.issuer);
        if leeway.is_none() {
            problems.push(Problem::new(at("issuer"), "no issuer of that name in `issuers`"));
        }
        if action.event_type.is_empty() {
            problems.push(Problem::new(at("type"), "must not be empty"));
        }
        let path = |key: &str, text: &str, problems: &mut Vec<Problem>| {
            JsonPath::parse(text).map_err(|message| problems.push(Problem::new(at(key), message))).ok()
        };
        let subject = path("revoke_subject", &action.revoke_subject, &mut problems);
        let if_true = action.if_true.as_ref().map(|text| path("if_true", text, &mut problems));
        if let (Some(subject), Some(leeway)) = (subject, leeway) {
            on_event.push(EventAction {
                webhook: action.webhook.clone(),
                event_type: action.event_type.clone(),
                if_true: if_true.flatten(),
                subject,
                issuer: action.issuer.clone(),
                leeway_seconds: leeway,
            });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(RevocationPolicy { max_token_lifetime_seconds: lifetime, on_event })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: serde_json::Value) -> VerifiedToken {
        VerifiedToken::new(0, "k".into(), 0, claims.as_object().cloned().unwrap())
    }

    fn subject(cutoff: u64, expires: u64) -> Change {
        Change::RevokeSubject { issuer: "idp".into(), subject: "u1".into(), cutoff, expires }
    }

    #[test]
    fn a_subject_cutoff_revokes_tokens_issued_at_or_before_it_within_the_leeway() {
        let set = Revocations::local();
        set.apply(&subject(1_000, 5_000));
        let at = |iat: u64| set.check("idp", &token(json!({"sub": "u1", "iat": iat})), 5, 2_000);
        assert_eq!(at(990), Some(Revoked::Subject));
        assert_eq!(at(1_005), Some(Revoked::Subject), "within the issuer's leeway of the cutoff");
        assert_eq!(at(1_006), None, "issued after the cutoff");
        assert_eq!(set.check("idp", &token(json!({"sub": "u1"})), 5, 2_000), Some(Revoked::Subject), "no iat");
        assert_eq!(set.check("other", &token(json!({"sub": "u1", "iat": 1})), 5, 2_000), None, "another issuer");
        assert_eq!(set.check("idp", &token(json!({"sub": "u2", "iat": 1})), 5, 2_000), None, "another subject");
        assert_eq!(at(990).and(set.check("idp", &token(json!({"sub": "u1", "iat": 1})), 5, 5_001)), None, "expired");
    }

    #[test]
    fn cutoffs_only_move_forward_and_unrevoke_removes_them() {
        let set = Revocations::local();
        set.apply(&subject(2_000, 9_000));
        set.apply(&subject(1_000, 8_000));
        assert_eq!(
            set.list(0),
            [Entry::Subject { issuer: "idp".into(), subject: "u1".into(), cutoff: 2_000, expires: 9_000 }]
        );
        set.apply(&Change::UnrevokeSubject { issuer: "idp".into(), subject: "u1".into() });
        assert!(set.is_empty());
    }

    #[test]
    fn a_change_applied_during_a_resync_survives_the_swap() {
        let set = Revocations::local();
        set.apply(&subject(1_000, 5_000));
        set.begin_replace();
        let during = Change::RevokeToken { issuer: "idp".into(), jti: "j".into(), expires: 5_000 };
        set.apply(&during);
        set.replace(&[]);
        assert_eq!(set.list(0), [Entry::Token { issuer: "idp".into(), jti: "j".into(), expires: 5_000 }]);
        set.replace(&[subject(1_000, 5_000)]);
        assert_eq!(set.len(), 1, "without a resync in progress the snapshot is the set");
    }

    #[test]
    fn a_jti_is_revoked_until_its_exp() {
        let set = Revocations::local();
        set.apply(&Change::RevokeToken { issuer: "idp".into(), jti: "j1".into(), expires: 3_000 });
        let leaked = token(json!({"sub": "u1", "jti": "j1", "iat": 2_000}));
        assert_eq!(set.check("idp", &leaked, 0, 2_500), Some(Revoked::Token));
        assert_eq!(set.check("idp", &leaked, 0, 3_001), None);
        set.purge_expired(3_001);
        assert!(set.is_empty());
    }

    #[test]
    fn staleness_follows_the_last_confirmation() {
        let set = Revocations::default();
        set.set_staleness(2, OnStale::Deny);
        assert_eq!(set.freshness(100), Freshness::Stale(OnStale::Deny), "never read");
        set.mark_synced(100);
        assert_eq!(set.freshness(102), Freshness::Current);
        assert_eq!(set.freshness(103), Freshness::Stale(OnStale::Deny));
        set.set_staleness(2, OnStale::Allow);
        assert_eq!(set.freshness(103), Freshness::Stale(OnStale::Allow));
        assert_eq!(Revocations::local().freshness(u64::MAX - 1), Freshness::Current);
    }

    #[test]
    fn event_actions_read_the_subject_and_the_condition_from_the_payload() {
        let config: RevocationConfig = serde_json::from_value(json!({
            "on_event": [
                {"webhook": "kinde", "type": "user.deleted", "revoke_subject": "$.data.user.id", "issuer": "kinde"},
                {"webhook": "kinde", "type": "user.updated", "if_true": "$.data.user.is_suspended",
                 "revoke_subject": "$.data.user.id", "issuer": "kinde"}
            ]
        }))
        .unwrap();
        let policy = compile(&config, |name| (name == "kinde").then_some(30), &["kinde"]).unwrap();
        let deleted = json!({"type": "user.deleted", "data": {"user": {"id": "kp_1"}}});
        assert_eq!(
            policy.changes_for("kinde", "user.deleted", &deleted, 1_000),
            [Change::RevokeSubject { issuer: "kinde".into(), subject: "kp_1".into(), cutoff: 1_000, expires: 87_430 }]
        );
        let active = json!({"data": {"user": {"id": "kp_1", "is_suspended": false}}});
        assert!(policy.changes_for("kinde", "user.updated", &active, 1_000).is_empty());
        let suspended = json!({"data": {"user": {"id": "kp_1", "is_suspended": true}}});
        assert_eq!(policy.changes_for("kinde", "user.updated", &suspended, 1_000).len(), 1);
        assert!(policy.changes_for("other", "user.deleted", &deleted, 1_000).is_empty());

        let bad: RevocationConfig = serde_json::from_value(json!({
            "max_token_lifetime_seconds": 0,
            "on_event": [{"webhook": "nope", "type": "user.deleted", "revoke_subject": "$..x", "issuer": "nope"}]
        }))
        .unwrap();
        let problems: Vec<String> =
            compile(&bad, |_| None, &[]).unwrap_err().iter().map(|problem| problem.path.clone()).collect();
        assert_eq!(
            problems,
            ["max_token_lifetime_seconds", "on_event[0].webhook", "on_event[0].issuer", "on_event[0].revoke_subject"]
        );
    }

    #[test]
    fn changes_have_a_stable_wire_form() {
        let change = subject(1, 2);
        let text = serde_json::to_string(&change).unwrap();
        assert_eq!(text, r#"{"op":"revoke_subject","issuer":"idp","subject":"u1","cutoff":1,"expires":2}"#);
        assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), change);
        assert_ne!(entry_key(Kind::Subject, "a:b", "c"), entry_key(Kind::Subject, "a", "b:c"));
    }
}
