//! `when:` requirements: a CEL predicate, compiled once when the config loads
//! and evaluated against the verified claims and the request.
//!
//! Variables: `claims` (the verified claim set), `request` (`method`, `path`
//! without the query, `query` as a map of first values, `host` lower-cased
//! without port, `headers` by lower-case name), `route` (its name) and `now`.
//! Anything else is a config error, as is a syntax error.
//!
//! Evaluation is bounded by what can be written, not by a timer: the claims
//! come from a token of at most 16 KiB, comprehensions (`exists`, `all`, `map`,
//! `filter`) may not nest, `matches` takes only a literal pattern, and an
//! expression is at most 4 KiB. A runtime error (a missing key, a wrong type)
//! fails the requirement: a rule that cannot be evaluated never allows.
//!
//! CEL is deterministic, so the outcome of a rule that reads only the claims,
//! the route and `request.method`/`path`/`host` is remembered with the cached
//! token, keyed by exactly those request values: a cached allow does not pay
//! for the evaluation again. Rules reading headers, the query or `now` are
//! evaluated on every request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program, Value};

use crate::request::HttpRequest;
use crate::token::{MemoOutcome, VerifiedToken};

/// Longest expression accepted.
pub const MAX_EXPRESSION_CHARS: usize = 4096;

const VARIABLES: [&str; 4] = ["claims", "request", "route", "now"];
/// Type names CEL lets an expression mention (`type(x) == string`).
const TYPE_NAMES: [&str; 12] =
    ["int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "timestamp", "duration"];

/// The standard library plus CEL's string extension (`split`, `lowerAscii`, ...).
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings).expect("the strings extension registers");
    Arc::new(env)
});

/// Tells compiled rules apart in the per-token memo.
static NEXT_RULE: AtomicU64 = AtomicU64::new(1);

/// A compiled `when:` expression.
pub struct Rule {
    id: u64,
    source: String,
    program: Program,
    /// Which parts of `request` the expression reads; only those are built.
    reads: Reads,
}

#[derive(Debug, Clone, Copy, Default)]
struct Reads {
    method: bool,
    path: bool,
    host: bool,
    headers: bool,
    query: bool,
    now: bool,
}

impl Reads {
    fn request(self) -> bool {
        self.method || self.path || self.host || self.headers || self.query
    }

    /// Whether the outcome depends only on the claims, the route and the
    /// method, path and host (which key the memo).
    fn memoizable(self) -> bool {
        !(self.headers || self.query || self.now)
    }

    fn everything() -> Self {
        Reads { method: true, path: true, host: true, headers: true, query: true, now: false }
    }
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("source", &self.source).finish_non_exhaustive()
    }
}

/// Why an evaluation did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    False,
    /// The expression could not be evaluated; the detail is for logs, never
    /// for the client (it may quote claim values).
    Error(String),
}

impl Rule {
    pub fn compile(source: &str) -> Result<Rule, String> {
        if source.chars().count() > MAX_EXPRESSION_CHARS {
            return Err(format!("longer than {MAX_EXPRESSION_CHARS} characters"));
        }
        let program = ENV.compile(source).map_err(|errors| {
            let first = errors.errors.first();
            let (line, column) = first.map_or((0, 0), |error| error.pos);
            let message = first.map_or_else(|| "syntax error".to_string(), |error| error.msg.clone());
            format!("CEL syntax error at line {line}, column {column}: {message}")
        })?;
        let mut check = Check { bound: Vec::new(), nesting: 0, reads: Reads::default(), problem: None };
        check.walk(program.expression());
        if let Some(problem) = check.problem {
            return Err(problem);
        }
        Ok(Rule {
            id: NEXT_RULE.fetch_add(1, Ordering::Relaxed),
            source: source.to_string(),
            reads: check.reads,
            program,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the rule for `token` on `request` at `now` (Unix seconds), or
    /// recalls the outcome for the same token and request values.
    pub fn evaluate(&self, token: &VerifiedToken, request: &HttpRequest, route: &str, now: u64) -> Result<(), Failure> {
        if !self.reads.memoizable() {
            return self.run(token, request, route, now);
        }
        let key = self.memo_key(request);
        if let Some(outcome) = token.recall(self.id, &key) {
            return outcome_result(outcome);
        }
        let result = self.run(token, request, route, now);
        token.remember(self.id, key, memo_outcome(&result));
        result
    }

    /// The request values the rule reads, joined with NUL (which no method,
    /// path or host contains).
    fn memo_key(&self, request: &HttpRequest) -> String {
        let parts =
            [(self.reads.method, &request.method), (self.reads.path, &request.path), (self.reads.host, &request.host)];
        parts.iter().filter(|(read, _)| *read).map(|(_, value)| value.as_str()).collect::<Vec<_>>().join("\0")
    }

    fn run(&self, token: &VerifiedToken, request: &HttpRequest, route: &str, now: u64) -> Result<(), Failure> {
        let variables = Variables {
            claims: token.rules_view(),
            request: self.reads.request().then(|| boxed(request_value(request, self.reads))),
            route: boxed(Value::String(Arc::new(route.to_string()))),
            now: self.reads.now.then(|| boxed(timestamp(now))),
        };
        let mut context = Context::with_env(Arc::clone(&ENV));
        context.set_variable_resolver(&variables);
        match self.program.execute(&context) {
            Ok(Value::Bool(true)) => Ok(()),
            Ok(Value::Bool(false)) => Err(Failure::False),
            Ok(_) => Err(Failure::Error("the expression does not give a bool".into())),
            Err(err) => Err(Failure::Error(err.to_string())),
        }
    }
}

fn memo_outcome(result: &Result<(), Failure>) -> MemoOutcome {
    match result {
        Ok(()) => MemoOutcome::Held,
        Err(Failure::False) => MemoOutcome::NotHeld,
        Err(Failure::Error(why)) => MemoOutcome::Error(Arc::from(why.as_str())),
    }
}

fn outcome_result(outcome: MemoOutcome) -> Result<(), Failure> {
    match outcome {
        MemoOutcome::Held => Ok(()),
        MemoOutcome::NotHeld => Err(Failure::False),
        MemoOutcome::Error(why) => Err(Failure::Error(why.to_string())),
    }
}

fn boxed(value: Value) -> Box<dyn Val> {
    Box::<dyn Val>::try_from(value).unwrap_or_else(|_| Box::new(cel::common::types::CelNull))
}

fn timestamp(now: u64) -> Value {
    let at = chrono::DateTime::from_timestamp(i64::try_from(now).unwrap_or(i64::MAX), 0).unwrap_or_default();
    Value::Timestamp(at.fixed_offset())
}

fn request_value(request: &HttpRequest, reads: Reads) -> Value {
    let text = |value: &str| Value::String(Arc::new(value.to_string()));
    let mut fields: HashMap<String, Value> = HashMap::with_capacity(5);
    for (read, name, value) in [
        (reads.method, "method", &request.method),
        (reads.path, "path", &request.path),
        (reads.host, "host", &request.host),
    ] {
        if read {
            fields.insert(name.into(), text(value));
        }
    }
    if reads.headers {
        let headers: HashMap<String, Value> =
            request.headers().map(|(name, value)| (name.to_string(), text(value))).collect();
        fields.insert("headers".into(), headers.into());
    }
    if reads.query {
        let mut query: HashMap<String, Value> = HashMap::new();
        for (key, value) in url::form_urlencoded::parse(request.query().as_bytes()) {
            query.entry(key.into_owned()).or_insert_with(|| text(&value));
        }
        fields.insert("query".into(), query.into());
    }
    fields.into()
}

/// The four variables, borrowed by the evaluation.
struct Variables<'t> {
    claims: &'t dyn Val,
    request: Option<Box<dyn Val>>,
    route: Box<dyn Val>,
    now: Option<Box<dyn Val>>,
}

impl VariableResolver for Variables<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let value: &dyn Val = match variable {
            "claims" => self.claims,
            "request" => self.request.as_deref()?,
            "route" => &*self.route,
            "now" => self.now.as_deref()?,
            _ => return None,
        };
        Some(CowVal::Borrowed(value))
    }
}

/// The compile-time checks over the expression tree.
struct Check<'a> {
    /// Comprehension variables in scope.
    bound: Vec<&'a str>,
    nesting: usize,
    reads: Reads,
    problem: Option<String>,
}

impl<'a> Check<'a> {
    fn fail(&mut self, problem: String) {
        self.problem.get_or_insert(problem);
    }

    fn walk(&mut self, expr: &'a IdedExpr) {
        match &expr.expr {
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => {
                if let Expr::Ident(name) = &select.operand.expr
                    && name == "request"
                    && !self.bound.contains(&"request")
                {
                    match select.field.as_str() {
                        "method" => self.reads.method = true,
                        "path" => self.reads.path = true,
                        "host" => self.reads.host = true,
                        "headers" => self.reads.headers = true,
                        "query" => self.reads.query = true,
                        // `has(request.x)` of another field: false either way.
                        _ => {}
                    }
                    return;
                }
                self.walk(&select.operand);
            }
            Expr::Call(call) => {
                if call.func_name == "matches" {
                    let pattern = if call.target.is_some() { call.args.first() } else { call.args.get(1) };
                    if !pattern.is_some_and(|pattern| matches!(pattern.expr, Expr::Literal(LiteralValue::String(_)))) {
                        self.fail("matches() takes a string literal as its pattern".into());
                    }
                }
                if let Some(target) = &call.target {
                    self.walk(target);
                }
                call.args.iter().for_each(|arg| self.walk(arg));
            }
            Expr::List(list) => list.elements.iter().for_each(|element| self.walk(element)),
            Expr::Map(map) => map.entries.iter().for_each(|entry| self.entry(&entry.expr)),
            Expr::Struct(object) => object.entries.iter().for_each(|entry| self.entry(&entry.expr)),
            Expr::Comprehension(comprehension) => {
                self.walk(&comprehension.iter_range);
                self.walk(&comprehension.accu_init);
                if self.nesting > 0 {
                    self.fail(
                        "comprehensions (exists, all, map, filter) may not nest: their cost would multiply".into(),
                    );
                }
                let scope = self.bound.len();
                self.bound.push(&comprehension.iter_var);
                if let Some(second) = &comprehension.iter_var2 {
                    self.bound.push(second);
                }
                self.bound.push(&comprehension.accu_var);
                self.nesting += 1;
                for part in [&comprehension.loop_cond, &comprehension.loop_step, &comprehension.result] {
                    self.walk(part);
                }
                self.nesting -= 1;
                self.bound.truncate(scope);
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn entry(&mut self, entry: &'a EntryExpr) {
        match entry {
            EntryExpr::StructField(field) => self.walk(&field.value),
            EntryExpr::MapEntry(pair) => {
                self.walk(&pair.key);
                self.walk(&pair.value);
            }
        }
    }

    fn ident(&mut self, name: &str) {
        if name.starts_with('@') || self.bound.contains(&name) || TYPE_NAMES.contains(&name) {
            return;
        }
        match name {
            "request" => self.reads = Reads { now: self.reads.now, ..Reads::everything() },
            "now" => self.reads.now = true,
            _ if VARIABLES.contains(&name) => {}
            _ => self.fail(format!("unknown variable `{name}` (expected claims, request, route or now)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: serde_json::Value) -> VerifiedToken {
        VerifiedToken::new(0, "k".into(), 0, claims.as_object().unwrap().clone())
    }

    fn request() -> HttpRequest {
        HttpRequest::new("GET", "/v1/items?page=2&page=3&q=a%20b", "acme.example.com", [("x-tenant", "acme")])
    }

    fn eval(source: &str, claims: serde_json::Value) -> Result<(), Failure> {
        Rule::compile(source).unwrap().evaluate(&token(claims), &request(), "items", 1_800_000_000)
    }

    #[test]
    fn variables_read_what_the_issue_promises() {
        let claims = json!({"org_code": "acme", "roles": ["admin"], "exp": 1_900_000_000u64});
        for source in [
            r#"claims.org_code == request.host.split(".")[0]"#,
            r#"request.method == "GET" && request.path == "/v1/items""#,
            r#"request.query.page == "2" && request.query.q == "a b""#,
            r#"request.headers["x-tenant"] == claims.org_code"#,
            r#"route == "items" && "admin" in claims.roles"#,
            r#"now < timestamp(int(claims.exp)) && now > timestamp("2020-01-01T00:00:00Z")"#,
            r#"claims.roles.exists(r, r.startsWith("ad"))"#,
            r#"request.path.matches("^/v1/[a-z]+$")"#,
        ] {
            assert_eq!(eval(source, claims.clone()), Ok(()), "{source}");
        }
        assert_eq!(eval(r#"claims.org_code == "other""#, claims.clone()), Err(Failure::False));
        assert!(matches!(eval(r#"claims.missing == "x""#, claims.clone()), Err(Failure::Error(_))));
        assert!(matches!(eval(r#"claims.org_code"#, claims), Err(Failure::Error(_))), "not a bool");
    }

    #[test]
    fn bad_expressions_are_config_errors() {
        let error = |source: &str| Rule::compile(source).unwrap_err();
        assert!(error("claims.org ==").starts_with("CEL syntax error at line"), "{}", error("claims.org =="));
        assert_eq!(error("claimz.org == 'x'"), "unknown variable `claimz` (expected claims, request, route or now)");
        assert!(error("claims.roles.exists(r, r == foo)").contains("unknown variable `foo`"));
        assert!(error("claims.a.exists(x, claims.b.exists(y, x == y))").contains("may not nest"));
        assert!(error("request.path.matches(claims.pattern)").contains("string literal"));
        assert!(error(&"true && ".repeat(700)).contains("longer than"));
        assert!(Rule::compile("claims.roles.exists(r, r == 'a') && claims.groups.all(g, size(g) < 9)").is_ok());
    }

    #[test]
    fn only_the_parts_of_the_request_read_are_built() {
        assert!(!Rule::compile("claims.a == 'b'").unwrap().reads.request());
        let host = Rule::compile("request.host == 'h'").unwrap().reads;
        assert!(host.host && !host.path && !host.headers && host.memoizable());
        let whole = Rule::compile("size(request) > 0").unwrap().reads;
        assert!(whole.headers && whole.query && !whole.memoizable());
        assert!(!Rule::compile("now > timestamp(0)").unwrap().reads.memoizable());
    }

    #[test]
    fn outcomes_are_remembered_per_token_and_exact_request_values() {
        let rule = Rule::compile(r#"claims.org == request.host.split(".")[0]"#).unwrap();
        let token = token(json!({"org": "acme"}));
        let at = |host: &str| HttpRequest::new("GET", "/", host, []);
        assert_eq!(rule.evaluate(&token, &at("acme.example.com"), "r", 0), Ok(()));
        assert_eq!(rule.evaluate(&token, &at("globex.example.com"), "r", 0), Err(Failure::False));
        assert_eq!(token.recall(rule.id, "acme.example.com"), Some(MemoOutcome::Held));
        assert_eq!(token.recall(rule.id, "globex.example.com"), Some(MemoOutcome::NotHeld));
        assert_eq!(rule.evaluate(&token, &at("acme.example.com"), "r", 0), Ok(()), "recalled");
        // The memo is bounded: a flood of hosts is evaluated, not remembered.
        for index in 0..100 {
            let _ = rule.evaluate(&token, &at(&format!("h{index}.example.com")), "r", 0);
        }
        assert_eq!(token.recall(rule.id, "h99.example.com"), None);
        assert_eq!(rule.evaluate(&token, &at("h99.example.com"), "r", 0), Err(Failure::False));
    }
}
