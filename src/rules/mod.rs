//! Who may call this route? A route's `require:` compiled once: scopes,
//! permissions and roles (all of them, or `any_of`), exact claim values, and a
//! CEL predicate ([`cel`]), checked against a verified token's claims in that
//! order (the CEL rule, the costliest, last). The first requirement that does
//! not hold is the [`Unmet`] a 403 names: its kind and the required item,
//! never a claim value.

pub mod cel;
mod cel_check;
mod cel_types;
pub mod query;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{AnyOfConfig, Problem, RequireConfig};
use crate::jsonpath::ClaimRef;
use crate::request::HttpRequest;
use crate::token::VerifiedToken;
use cel::{Failure, Rule};

/// The kind of requirement, as named in config and in deny reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Scopes,
    Permissions,
    Roles,
    Claims,
    AnyOf,
    When,
    /// A dry-run route saw a request without a token.
    Token,
}

impl Requirement {
    pub fn key(self) -> &'static str {
        match self {
            Requirement::Scopes => "scopes",
            Requirement::Permissions => "permissions",
            Requirement::Roles => "roles",
            Requirement::Claims => "claims",
            Requirement::AnyOf => "any_of",
            Requirement::When => "when",
            Requirement::Token => "token",
        }
    }
}

/// A requirement that did not hold: what a 403 says and a dry run counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub requirement: Requirement,
    /// The required item (`orders:delete`), the claim path, or what happened
    /// to the CEL expression; never a claim value.
    pub item: String,
    /// The scopes the route requires, for the challenge's `scope="..."`, when
    /// the failure is about scopes (RFC 6750 section 3.1).
    pub scopes: Option<String>,
}

impl Unmet {
    pub fn description(&self) -> String {
        format!("{}: {}", self.requirement.key(), self.item)
    }
}

/// One item the token must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Scope(String),
    Permission(String),
    Role(String),
}

/// What a requirement is checked against.
pub struct Facts<'a> {
    pub token: &'a VerifiedToken,
    pub request: &'a HttpRequest,
    pub route: &'a str,
    /// Unix seconds (the policy's clock).
    pub now: u64,
}

/// One requirement's result, for `token verify` and the first-failure check.
pub struct Outcome<'a> {
    pub requirement: Requirement,
    pub item: Cow<'a, str>,
    pub held: bool,
    /// Why a CEL rule could not be evaluated (for logs and `token verify`).
    pub detail: Option<String>,
}

#[derive(Debug)]
pub struct Requirements {
    items: Vec<Item>,
    claims: Vec<(ClaimRef, Vec<Value>)>,
    any_of: Vec<Item>,
    when: Option<Rule>,
    roles_claim: ClaimRef,
    /// Every scope the route names (all-of and any_of), for the challenge.
    scopes: Vec<String>,
}

impl Requirements {
    /// Compiles `require:`; problems have paths relative to it.
    pub fn compile(config: &RequireConfig) -> Result<Requirements, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut items = Vec::new();
        list(&mut items, &mut problems, "scopes", config.scopes.as_ref(), Item::Scope);
        list(&mut items, &mut problems, "permissions", config.permissions.as_ref(), Item::Permission);
        list(&mut items, &mut problems, "roles", config.roles.as_ref(), Item::Role);
        let any_of = config.any_of.as_ref().map(|any| compile_any_of(any, &mut problems)).unwrap_or_default();
        let claims = compile_claims(config.claims.as_ref(), &mut problems);
        let when = config.when.as_deref().and_then(|source| {
            Rule::compile(source).map_err(|message| problems.push(Problem::new("when", message))).ok()
        });
        let uses_roles = config.roles.is_some() || config.any_of.as_ref().is_some_and(|any| any.roles.is_some());
        let roles_claim = match &config.roles_claim {
            Some(_) if !uses_roles => {
                problems.push(Problem::new("roles_claim", "only used with roles (or any_of.roles)"));
                None
            }
            Some(text) => {
                ClaimRef::parse(text).map_err(|message| problems.push(Problem::new("roles_claim", message))).ok()
            }
            None => Some(ClaimRef::Name("roles".into())),
        };
        if items.is_empty() && any_of.is_empty() && claims.is_empty() && when.is_none() && problems.is_empty() {
            problems.push(Problem::new("", "lists no requirement (omit require to accept any valid token)"));
        }
        let (Some(roles_claim), true) = (roles_claim, problems.is_empty()) else {
            return Err(problems);
        };
        let scopes = items.iter().chain(&any_of).filter_map(|item| match item {
            Item::Scope(scope) => Some(scope.clone()),
            _ => None,
        });
        Ok(Requirements { scopes: scopes.collect(), items, claims, any_of, when, roles_claim })
    }

    /// The first requirement that does not hold, if any.
    pub fn check(&self, facts: &Facts<'_>) -> Result<(), Unmet> {
        match self.outcomes(facts).find(|outcome| !outcome.held) {
            None => Ok(()),
            Some(outcome) => Err(self.unmet(&outcome)),
        }
    }

    /// Every requirement with its result, in checking order.
    pub fn outcomes<'a>(&'a self, facts: &'a Facts<'a>) -> impl Iterator<Item = Outcome<'a>> + 'a {
        let claims = &facts.token.claims;
        let items = self.items.iter().map(move |item| {
            let (requirement, text) = item.describe();
            Outcome { requirement, item: Cow::Borrowed(text), held: self.holds(item, claims), detail: None }
        });
        let values = self.claims.iter().map(move |(path, accepted)| Outcome {
            requirement: Requirement::Claims,
            item: Cow::Borrowed(path.as_str()),
            held: path.find(claims).is_some_and(|found| accepted.contains(&found)),
            detail: None,
        });
        let any_of = (!self.any_of.is_empty()).then(move || Outcome {
            requirement: Requirement::AnyOf,
            item: Cow::Owned(format!("none of {}", self.any_of.iter().map(Item::label).collect::<Vec<_>>().join(", "))),
            held: self.any_of.iter().any(|item| self.holds(item, claims)),
            detail: None,
        });
        let when = self.when.as_ref().map(move |rule| {
            let result = rule.evaluate(facts.token, facts.request, facts.route, facts.now);
            let (item, detail) = match &result {
                Ok(()) => (Failure::False.reason(), None),
                Err(failure) => (failure.reason(), failure.detail()),
            };
            Outcome { requirement: Requirement::When, item, held: result.is_ok(), detail }
        });
        items.chain(values).chain(any_of).chain(when)
    }

    fn unmet(&self, outcome: &Outcome<'_>) -> Unmet {
        let about_scopes = match outcome.requirement {
            Requirement::Scopes => true,
            Requirement::AnyOf => self.any_of.iter().any(|item| matches!(item, Item::Scope(_))),
            _ => false,
        };
        Unmet {
            requirement: outcome.requirement,
            item: outcome.item.to_string(),
            scopes: about_scopes.then(|| self.scopes.join(" ")),
        }
    }

    fn holds(&self, item: &Item, claims: &Map<String, Value>) -> bool {
        match item {
            Item::Scope(scope) => has_scope(claims, scope),
            Item::Permission(permission) => {
                claims.get("permissions").and_then(Value::as_array).is_some_and(|list| contains(list, permission))
            }
            Item::Role(role) => match self.roles_claim.find(claims).as_deref() {
                Some(Value::Array(roles)) => contains(roles, role),
                Some(Value::String(one)) => one == role,
                _ => false,
            },
        }
    }

    /// Every requirement in words, in checking order, for `check-config`'s summary:
    /// `permissions orders:delete`, `claims $.org_code in ["acme"]`, `when `...``.
    pub fn summary(&self) -> Vec<String> {
        let items = self.items.iter().map(Item::label);
        let claims = self.claims.iter().map(|(path, accepted)| {
            let values: Vec<String> = accepted.iter().map(Value::to_string).collect();
            format!("claims {} in [{}]", path.as_str(), values.join(", "))
        });
        let any_of = (!self.any_of.is_empty())
            .then(|| format!("any_of ({})", self.any_of.iter().map(Item::label).collect::<Vec<_>>().join(" | ")));
        let roles_at = self.items.iter().chain(&self.any_of).any(|item| matches!(item, Item::Role(_)));
        let roles_claim = (roles_at && self.roles_claim.as_str() != "roles")
            .then(|| format!("roles read at {}", self.roles_claim.as_str()));
        let when = self.when_source().map(|source| format!("when `{source}`"));
        items.chain(claims).chain(any_of).chain(roles_claim).chain(when).collect()
    }

    /// The CEL source, for `token verify`.
    pub fn when_source(&self) -> Option<&str> {
        self.when.as_ref().map(Rule::source)
    }

    /// Whether the CEL rule reads `request.query`: then a query that backends
    /// could read differently is refused ([`query`]).
    pub fn reads_query(&self) -> bool {
        self.when.as_ref().is_some_and(Rule::reads_query)
    }

    /// Whether the CEL rule's outcomes are remembered with cached tokens.
    pub fn memoizes(&self) -> bool {
        self.when.as_ref().is_some_and(Rule::memoizes)
    }
}

impl Item {
    fn describe(&self) -> (Requirement, &str) {
        match self {
            Item::Scope(scope) => (Requirement::Scopes, scope),
            Item::Permission(permission) => (Requirement::Permissions, permission),
            Item::Role(role) => (Requirement::Roles, role),
        }
    }

    fn label(&self) -> String {
        let (requirement, item) = self.describe();
        format!("{} {item}", requirement.key())
    }
}

/// Whole items of `scope` (space-separated, RFC 8693/9068) or `scp` (a list, or
/// a space-separated string as Azure AD writes it): `orders:delete-all` is not `orders:delete`.
fn has_scope(claims: &Map<String, Value>, wanted: &str) -> bool {
    let in_text = |name: &str| {
        claims.get(name).and_then(Value::as_str).is_some_and(|text| text.split_ascii_whitespace().any(|s| s == wanted))
    };
    let in_list = claims.get("scp").and_then(Value::as_array).is_some_and(|list| contains(list, wanted));
    in_text("scope") || in_text("scp") || in_list
}

fn contains(list: &[Value], wanted: &str) -> bool {
    list.iter().any(|value| value.as_str() == Some(wanted))
}

fn list(
    items: &mut Vec<Item>,
    problems: &mut Vec<Problem>,
    key: &str,
    values: Option<&Vec<String>>,
    make: fn(String) -> Item,
) {
    let Some(values) = values else { return };
    if values.is_empty() {
        problems.push(Problem::new(key, "must list at least one item (omit it to require none)"));
    }
    for (index, value) in values.iter().enumerate() {
        if value.is_empty() || value.chars().any(char::is_whitespace) {
            problems.push(Problem::new(format!("{key}[{index}]"), "must be a non-empty item without spaces"));
        }
        items.push(make(value.clone()));
    }
}

fn compile_any_of(config: &AnyOfConfig, problems: &mut Vec<Problem>) -> Vec<Item> {
    let mut items = Vec::new();
    let mut nested = Vec::new();
    list(&mut items, &mut nested, "scopes", config.scopes.as_ref(), Item::Scope);
    list(&mut items, &mut nested, "permissions", config.permissions.as_ref(), Item::Permission);
    list(&mut items, &mut nested, "roles", config.roles.as_ref(), Item::Role);
    problems.extend(nested.into_iter().map(|problem| problem.under("any_of")));
    if items.is_empty() && config.scopes.is_none() && config.permissions.is_none() && config.roles.is_none() {
        problems.push(Problem::new("any_of", "lists no item"));
    }
    items
}

/// `claims: { PATH: value | [values] }`: exact values, compared as JSON.
fn compile_claims(
    config: Option<&BTreeMap<String, Value>>,
    problems: &mut Vec<Problem>,
) -> Vec<(ClaimRef, Vec<Value>)> {
    let mut compiled = Vec::new();
    for (path, value) in config.into_iter().flatten() {
        let at = format!("claims.{path}");
        let accepted = match value {
            Value::Array(values) => values.clone(),
            other => vec![other.clone()],
        };
        if accepted.is_empty() || accepted.iter().any(|value| value.is_object() || value.is_array() || value.is_null())
        {
            problems.push(Problem::new(&at, "expected a value (string, number or boolean) or a list of them"));
            continue;
        }
        match ClaimRef::parse(path) {
            Ok(claim) => compiled.push((claim, accepted)),
            Err(message) => problems.push(Problem::new(at, message)),
        }
    }
    compiled
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn requirements(yaml: &str) -> Result<Requirements, Vec<Problem>> {
        let value: Value = serde_saphyr::from_str(yaml).unwrap();
        Requirements::compile(&crate::config::value_de::from_value(&value).unwrap())
    }

    fn check(yaml: &str, claims: Value) -> Result<(), Unmet> {
        let token = VerifiedToken::new(0, "k".into(), 0, claims.as_object().unwrap().clone());
        let request = HttpRequest::new("DELETE", "/api/orders/1", "acme.example.com", []);
        requirements(yaml).unwrap().check(&Facts { token: &token, request: &request, route: "orders", now: 0 })
    }

    fn unmet(requirement: Requirement, item: &str, scopes: Option<&str>) -> Result<(), Unmet> {
        Err(Unmet { requirement, item: item.into(), scopes: scopes.map(str::to_string) })
    }

    #[test]
    fn scopes_are_whole_items_of_scope_or_scp() {
        let yaml = "{ scopes: [orders:read, orders:delete] }";
        assert_eq!(check(yaml, json!({"scope": "orders:read orders:delete"})), Ok(()));
        assert_eq!(check(yaml, json!({"scp": ["orders:delete", "orders:read"]})), Ok(()));
        assert_eq!(check(yaml, json!({"scp": "orders:read orders:delete"})), Ok(()));
        assert_eq!(
            check(yaml, json!({"scope": "orders:read orders:delete-all"})),
            unmet(Requirement::Scopes, "orders:delete", Some("orders:read orders:delete"))
        );
    }

    #[test]
    fn permissions_roles_and_claims_are_all_of() {
        let yaml = "{ permissions: [orders:delete], roles: [admin], roles_claim: '$.roles[*].key', claims: { '$.org_code': [org_1, org_2], tier: 3 } }";
        let good =
            json!({"permissions": ["orders:delete"], "roles": [{"key": "admin"}], "org_code": "org_2", "tier": 3});
        assert_eq!(check(yaml, good.clone()), Ok(()));
        let mut no_permission = good.clone();
        no_permission["permissions"] = json!(["orders:read"]);
        assert_eq!(check(yaml, no_permission), unmet(Requirement::Permissions, "orders:delete", None));
        let mut no_role = good.clone();
        no_role["roles"] = json!([{"key": "user"}]);
        assert_eq!(check(yaml, no_role), unmet(Requirement::Roles, "admin", None));
        let mut other_org = good.clone();
        other_org["org_code"] = json!("ORG_1");
        assert_eq!(check(yaml, other_org), unmet(Requirement::Claims, "$.org_code", None));
        let mut no_tier = good;
        no_tier.as_object_mut().unwrap().remove("tier");
        assert_eq!(check(yaml, no_tier), unmet(Requirement::Claims, "tier", None));
        // WorkOS: a single role string.
        assert_eq!(check("{ roles: [admin], roles_claim: role }", json!({"role": "admin"})), Ok(()));
    }

    #[test]
    fn any_of_holds_with_one_item_of_any_kind() {
        let yaml = "{ any_of: { permissions: [orders:admin], scopes: [orders:write], roles: [owner] } }";
        assert_eq!(check(yaml, json!({"roles": ["owner"]})), Ok(()));
        assert_eq!(check(yaml, json!({"scope": "orders:write"})), Ok(()));
        let none = check(yaml, json!({"roles": ["user"]})).unwrap_err();
        assert_eq!(none.description(), "any_of: none of scopes orders:write, permissions orders:admin, roles owner");
        assert_eq!(none.scopes.as_deref(), Some("orders:write"));
    }

    #[test]
    fn when_runs_last_and_fails_closed() {
        let yaml = r#"{ permissions: [p], when: 'claims.org == request.host.split(".")[0]' }"#;
        assert_eq!(check(yaml, json!({"permissions": ["p"], "org": "acme"})), Ok(()));
        assert_eq!(check(yaml, json!({"org": "acme"})), unmet(Requirement::Permissions, "p", None));
        assert_eq!(
            check(yaml, json!({"permissions": ["p"], "org": "evil"})),
            unmet(Requirement::When, "the expression is false", None)
        );
        assert_eq!(
            check(yaml, json!({"permissions": ["p"]})),
            unmet(Requirement::When, "the expression could not be evaluated", None)
        );
        let bare = "{ when: 'claims.org' }";
        assert_eq!(check(bare, json!({"org": true})), Ok(()));
        assert_eq!(
            check(bare, json!({"org": "acme"})),
            unmet(Requirement::When, "the expression gave a string, not a bool", None)
        );
    }

    #[test]
    fn config_problems_have_paths() {
        let problems =
            |yaml: &str| -> Vec<String> { requirements(yaml).unwrap_err().iter().map(ToString::to_string).collect() };
        assert_eq!(problems("{ scopes: [] }"), ["scopes: must list at least one item (omit it to require none)"]);
        assert_eq!(problems("{ roles_claim: role }"), ["roles_claim: only used with roles (or any_of.roles)"]);
        assert_eq!(problems("{ claims: { '$..x': a } }")[0].split(':').next(), Some("claims.$..x"));
        assert_eq!(
            problems("{ claims: { org: {a: 1} } }"),
            ["claims.org: expected a value (string, number or boolean) or a list of them"]
        );
        assert_eq!(
            problems("{ when: 'nope.x' }"),
            ["when: unknown variable at line 1, column 1 (expected claims, request, route or now)"]
        );
        assert_eq!(
            problems("{ any_of: { scopes: [a b] } }"),
            ["any_of.scopes[0]: must be a non-empty item without spaces"]
        );
        assert_eq!(problems("{}"), ["(top level): lists no requirement (omit require to accept any valid token)"]);
    }
}
