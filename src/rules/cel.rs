//! `when:` requirements: a CEL predicate, compiled once when the config loads
//! and evaluated against the verified claims and the request.
//!
//! Variables: `claims` (the verified claim set), `request` (`method`, `path`
//! without the query, `query` as a map of strings, `host` lower-cased without
//! port, `headers` by lower-case name), `route` (its name) and `now`.
//! Anything else is a config error, as is a syntax error, and so is what the
//! load-time type check ([`super::cel_check`]) finds cannot work: a field
//! `request` does not have, an unknown function, arguments of the wrong type,
//! a result that cannot be a bool. The claims' types are known only per
//! token: a result read from them that is not a bool fails the requirement
//! with [`Failure::NotABool`], which names its type.
//!
//! Evaluation is bounded by what can be written, not by a timer: the claims
//! come from a token of at most 16 KiB, comprehensions (`exists`, `all`, `map`,
//! `filter`) may not nest, `matches` takes only a literal pattern, and an
//! expression is at most 4 KiB, [`MAX_DEPTH`] levels deep and [`MAX_NODES`]
//! nodes large (the evaluator recurses once per level: a deeper tree could
//! overflow a worker's stack). A runtime error (a missing key, a wrong type)
//! fails the requirement: a rule that cannot be evaluated never allows.
//!
//! `request.query` holds one value per name: on a route whose rule reads it, a
//! query that backends could read differently (a repeated name, `;`) is refused
//! before the rule runs ([`super::query`]); here it makes the rule fail.
//!
//! CEL is deterministic, so the outcome of a rule that reads only the claims,
//! the route and `request.method`/`path`/`host` is remembered with the cached
//! token, keyed by a SHA-256 of exactly those request values (a fixed size,
//! which the token's cache weight counts): a cached allow does not pay for the
//! evaluation again. Rules reading headers, the query or `now` are evaluated
//! on every request, and so are outcomes that could not be evaluated.
//!
//! Problems name where in the expression they are (line and column), never
//! what is written there: the text may hold an interpolated `${...}` secret.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program, Value};

use super::{cel_check, query};
use crate::request::HttpRequest;
use crate::token::{RequestDigest, VerifiedToken, digest_fields};

/// Longest expression accepted.
pub const MAX_EXPRESSION_CHARS: usize = 4096;

/// Deepest expression tree accepted (a leaf alone is depth 1: `1 + ... + 1 > 0`
/// with 47 terms is 48). The evaluator recurses through a few stack frames per
/// level: at this depth it needs under 100 KiB of stack (measured, release
/// build), and every shape evaluates on 256 KiB (tested), an eighth of a tokio
/// worker's 2 MiB. Real rules stay under 20 levels; a macro like `exists` adds 3.
pub const MAX_DEPTH: usize = 48;

/// Most nodes (operators, operands, macro parts) accepted: what one evaluation
/// may visit, outside a comprehension's loop.
pub const MAX_NODES: usize = 1024;

/// The stack of the thread each expression is parsed on. The parser recurses
/// over the text before any bound of ours can look at the tree: within 4096
/// characters it needs up to about 1 MiB (measured, release build; 17 MiB
/// unoptimized), as much as half a tokio worker's stack, where a reload
/// compiles. Only the pages it touches are used.
const COMPILE_STACK_BYTES: usize = 32 * 1024 * 1024;

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

/// Which parts of `request` (and whether `now`) an expression reads, as the
/// load-time check ([`cel_check`]) finds them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Reads {
    pub(super) method: bool,
    pub(super) path: bool,
    pub(super) host: bool,
    pub(super) headers: bool,
    pub(super) query: bool,
    pub(super) now: bool,
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

    pub(super) fn everything() -> Self {
        Reads { method: true, path: true, host: true, headers: true, query: true, now: false }
    }
}

impl std::fmt::Debug for Rule {
    /// Never the source: it may hold an interpolated secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("id", &self.id).field("reads", &self.reads).finish_non_exhaustive()
    }
}

/// Why an evaluation did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The expression gave false.
    False,
    /// The expression gave a value that is not a bool: its type, with its
    /// article ("a string"). Only a result read from the claims can: any
    /// other type is known, and refused, when the config loads.
    NotABool(&'static str),
    /// The query string is one backends could read differently (on an
    /// enforcing route the request is refused before the rule runs).
    AmbiguousQuery,
    /// The evaluator failed: a missing key, a claim of the wrong type. The
    /// message is for logs, never for the client (it may quote claim values).
    Error(String),
}

impl Failure {
    /// What a deny says: never a claim value.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            Failure::False => Cow::Borrowed("the expression is false"),
            Failure::NotABool(kind) => Cow::Owned(format!("the expression gave {kind}, not a bool")),
            Failure::AmbiguousQuery | Failure::Error(_) => Cow::Borrowed("the expression could not be evaluated"),
        }
    }

    /// Why the expression could not be evaluated, for logs and `token verify`.
    pub fn detail(&self) -> Option<String> {
        match self {
            Failure::False => None,
            Failure::NotABool(_) => Some(self.reason().into_owned()),
            Failure::AmbiguousQuery => Some("the query string is ambiguous".into()),
            Failure::Error(message) => Some(message.clone()),
        }
    }
}

impl Rule {
    /// Compiles `source` on a thread of its own ([`COMPILE_STACK_BYTES`]),
    /// whatever stack the caller has; a problem says where, never what is
    /// written there.
    pub fn compile(source: &str) -> Result<Rule, String> {
        if source.chars().count() > MAX_EXPRESSION_CHARS {
            return Err(format!("longer than {MAX_EXPRESSION_CHARS} characters"));
        }
        std::thread::scope(|scope| {
            let compiler = std::thread::Builder::new()
                .name("cel-compile".into())
                .stack_size(COMPILE_STACK_BYTES)
                .spawn_scoped(scope, || Rule::compile_here(source))
                .map_err(|_| "could not start a thread to compile the expression".to_string())?;
            // A panic in the parser is a refused expression, not a crash.
            compiler.join().unwrap_or_else(|_| Err("the CEL compiler failed on this expression".into()))
        })
    }

    fn compile_here(source: &str) -> Result<Rule, String> {
        let program = ENV.compile(source).map_err(|errors| syntax_problem(errors.errors.first()))?;
        let reads = cel_check::check(program.expression(), program.source_info())?;
        Ok(Rule { id: NEXT_RULE.fetch_add(1, Ordering::Relaxed), source: source.to_string(), reads, program })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the rule reads `request.query` (then an ambiguous query is refused).
    pub fn reads_query(&self) -> bool {
        self.reads.query
    }

    /// Whether outcomes are remembered with the cached token.
    pub fn memoizes(&self) -> bool {
        self.reads.memoizable()
    }

    /// Evaluates the rule for `token` on `request` at `now` (Unix seconds), or
    /// recalls the outcome for the same token and request values.
    pub fn evaluate(&self, token: &VerifiedToken, request: &HttpRequest, route: &str, now: u64) -> Result<(), Failure> {
        if !self.reads.memoizable() {
            return self.run(token, request, route, now);
        }
        let key = self.memo_key(request);
        if let Some(held) = token.recall(self.id, &key) {
            return if held { Ok(()) } else { Err(Failure::False) };
        }
        let result = self.run(token, request, route, now);
        match &result {
            Ok(()) => token.remember(self.id, key, true),
            Err(Failure::False) => token.remember(self.id, key, false),
            // Not remembered: evaluated again, it denies again, with its detail.
            Err(Failure::NotABool(_) | Failure::AmbiguousQuery | Failure::Error(_)) => {}
        }
        result
    }

    /// A digest of exactly the request values the rule reads: 32 bytes
    /// however long the path is.
    fn memo_key(&self, request: &HttpRequest) -> RequestDigest {
        let parts =
            [(self.reads.method, &request.method), (self.reads.path, &request.path), (self.reads.host, &request.host)];
        digest_fields(parts.iter().filter(|(read, _)| *read).map(|(_, value)| value.as_bytes()))
    }

    fn run(&self, token: &VerifiedToken, request: &HttpRequest, route: &str, now: u64) -> Result<(), Failure> {
        let request = match self.reads.request() {
            true => Some(boxed(request_value(request, self.reads)?)),
            false => None,
        };
        let variables = Variables {
            claims: token.rules_view(),
            request,
            route: boxed(Value::String(Arc::new(route.to_string()))),
            now: self.reads.now.then(|| boxed(timestamp(now))),
        };
        let mut context = Context::with_env(Arc::clone(&ENV));
        context.set_variable_resolver(&variables);
        match self.program.execute(&context) {
            Ok(Value::Bool(true)) => Ok(()),
            Ok(Value::Bool(false)) => Err(Failure::False),
            Ok(other) => Err(Failure::NotABool(value_phrase(&other))),
            Err(err) => Err(Failure::Error(err.to_string())),
        }
    }
}

/// A syntax error by position and kind. The parser's own message quotes the
/// text it stumbled on, which may be an interpolated secret: never shown.
fn syntax_problem(error: Option<&cel::ParseError>) -> String {
    let Some(error) = error else { return "CEL syntax error".into() };
    let message = &error.msg;
    let kind = if message.contains("Recursion limit") || message.contains("recursion limit") {
        "nested deeper than the parser allows"
    } else if message.contains("token recognition error") {
        "a character CEL does not know"
    } else if message.contains("reserved identifier") {
        "a reserved word used as a name"
    } else if message.contains("literal") {
        "an invalid literal"
    } else {
        "unexpected or missing token"
    };
    let (line, column) = error.pos;
    format!("CEL syntax error at line {line}, column {column}: {kind}")
}

/// The type of a result that is not a bool, as a deny reason says it.
fn value_phrase(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::UInt(_) => "a uint",
        Value::Float(_) => "a double",
        Value::String(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Null => "null",
        Value::Timestamp(_) => "a timestamp",
        Value::Duration(_) => "a duration",
        Value::Opaque(_) => "an optional",
        Value::Function(..) | Value::Struct(_) => "a value of another type",
    }
}

fn boxed(value: Value) -> Box<dyn Val> {
    Box::<dyn Val>::try_from(value).unwrap_or_else(|_| Box::new(cel::common::types::CelNull))
}

fn timestamp(now: u64) -> Value {
    let at = chrono::DateTime::from_timestamp(i64::try_from(now).unwrap_or(i64::MAX), 0).unwrap_or_default();
    Value::Timestamp(at.fixed_offset())
}

fn request_value(request: &HttpRequest, reads: Reads) -> Result<Value, Failure> {
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
        // Refused before the rule on enforcing routes; a dry run counts it as a failure.
        let parameters = query::parse(request.query()).map_err(|query::AmbiguousQuery| Failure::AmbiguousQuery)?;
        let query: HashMap<String, Value> =
            parameters.into_iter().map(|(name, value)| (name, Value::String(Arc::new(value)))).collect();
        fields.insert("query".into(), query.into());
    }
    Ok(fields.into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: serde_json::Value) -> VerifiedToken {
        VerifiedToken::new(0, "k".into(), 0, claims.as_object().unwrap().clone())
    }

    fn request() -> HttpRequest {
        HttpRequest::new("GET", "/v1/items?page=2&q=a%20b", "acme.example.com", [("x-tenant", "acme")])
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
    }

    // Issue 17: a bare claim is accepted at load (it may be a bool claim), and
    // when it is not a bool the deny says so, not "could not be evaluated"
    // nor the evaluator's "undeclared reference".
    #[test]
    fn a_result_of_another_type_than_bool_says_which() {
        let claims = json!({"org": "acme", "verified": true, "roles": ["a"], "n": -1, "u": 1});
        assert_eq!(eval("claims.verified", claims.clone()), Ok(()));
        for (source, kind) in [
            ("claims.org", "a string"),
            ("claims.roles", "a list"),
            ("claims.n", "an int"),
            ("claims.u", "a uint"),
            ("claims.verified ? claims.org : false", "a string"),
        ] {
            let failure = eval(source, claims.clone()).unwrap_err();
            assert_eq!(failure, Failure::NotABool(kind), "{source}");
            assert_eq!(failure.reason(), format!("the expression gave {kind}, not a bool"));
            assert_eq!(failure.detail().as_deref(), Some(&*failure.reason()));
        }
        let missing = eval("claims.absent", claims).unwrap_err();
        assert_eq!(missing.reason(), "the expression could not be evaluated");
        assert!(!missing.detail().unwrap().to_lowercase().contains("undeclared"), "{missing:?}");
    }

    /// What the load-time check accepts with definite types, the interpreter
    /// evaluates as the signatures say: each of these gives true.
    #[test]
    fn the_checked_signatures_agree_with_the_interpreter() {
        let claims = json!({"a": "x", "roles": ["Admin"], "n": 3});
        for source in [
            "1 == 1.0 && 2u < 3 && 1.5 > 1 && 1u == 1 && 2 >= 1u",
            "[1, 2] + [3] == [1, 2, 3] && [1, 2][1u] == 2 && [1, 2][1.0] == 2",
            "{'a': 1}['a'] == 1 && 'a' in {'a': 1} && 2 in [1, 2]",
            "request.path + '/' == '/v1/items/' && -1 < 0 && -1.5 < 0.0 && 7 % 4 == 3 && 7u / 2u == 3u",
            "now - timestamp('2020-01-01T00:00:00Z') > duration('1h') && now - duration('1h') < now",
            "duration('1h') + now > now && now + duration('1h') > now && duration('2h') - duration('1h') == duration('1h')",
            "now.getHours('Europe/Paris') < 25 && now.getDayOfWeek() >= 0 && now.getFullYear() > 2020",
            "duration('90m').getHours() == 1 && duration('90m').getMinutes() == 90",
            "int(now) > 0 && string(now) != '' && double('1.5') > 1.0 && uint(1) == 1u && int('2') == 2",
            "string(duration('1s')) != '' && bool('true') && timestamp(0) < now && bytes('a') == b'a'",
            "type(claims.a) == string && type(request.path) == string && dyn(1) == 1",
            "request.path.indexOf('/') == 0 && request.path.indexOf('/', 1) == 3 && request.path.lastIndexOf('/') == 3",
            "request.path.substring(1).lowerAscii().trim() == 'v1/items' && request.path.substring(1, 3) == 'v1'",
            "request.path.replace('/', '-').upperAscii().charAt(0) == '-' && 'aaa'.replace('a', 'b', 1) == 'baa'",
            "request.path.split('/').join('-') == '-v1-items' && request.path.split('/', 2).join() == 'v1/items'",
            "'%s'.format([request.path]) == '/v1/items' && 'ab'.reverse() == 'ba'",
            "request.path.matches('^/v1') && matches(request.host, '^acme') && request.host.contains('.')",
            "request.host.endsWith('.com') && size(request.host) == 16 && request.host.size() == 16",
            "strings.quote('a') == '\"a\"' && optional.of(claims.a).hasValue() && !optional.none().hasValue()",
            "claims.?a.orValue('y') == 'x' && optional.none().or(claims.?a).value() == 'x'",
            "claims.?missing.orValue('y') == 'y' && optional.ofNonZeroValue('').orValue('z') == 'z'",
            "request.headers.exists(k, k.startsWith('x-')) && request.query.all(k, k != '')",
            "request.headers.filter(k, k.startsWith('x-')).size() == 1 && request.query.exists_one(k, k == 'page')",
            "size(claims.roles.map(r, r.lowerAscii()).filter(r, r == 'admin')) == 1 && has(request.headers)",
            "[1, 2].map(x, x * 2)[0] == 2 && [[1]].all(l, l[0] == 1) && {'a': 'b'}.exists(k, k == 'a')",
            "size(b'xy') == 2 && b'x' + b'y' == b'xy' && string(b'x') == 'x' && b'a' < b'b' && false < true",
        ] {
            assert_eq!(eval(source, claims.clone()), Ok(()), "{source}");
        }
    }

    #[test]
    fn bad_expressions_are_config_errors() {
        let error = |source: &str| Rule::compile(source).unwrap_err();
        assert!(error("claims.org ==").starts_with("CEL syntax error at line"), "{}", error("claims.org =="));
        assert_eq!(
            error("claims.a == 'x' && claimz.org == 'x'"),
            "unknown variable at line 1, column 20 (expected claims, request, route or now)"
        );
        assert!(error("claims.roles.exists(r, r == foo)").starts_with("unknown variable at line 1, column 29"));
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
        let whole = Rule::compile("size(dyn(request)) > 0").unwrap().reads;
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
        assert_eq!(token.recall(rule.id, &rule.memo_key(&at("acme.example.com"))), Some(true));
        assert_eq!(token.recall(rule.id, &rule.memo_key(&at("globex.example.com"))), Some(false));
        assert_eq!(rule.evaluate(&token, &at("acme.example.com"), "r", 0), Ok(()), "recalled");
        // The memo is bounded: a flood of hosts is evaluated, not remembered.
        for index in 0..100 {
            let _ = rule.evaluate(&token, &at(&format!("h{index}.example.com")), "r", 0);
        }
        assert_eq!(token.recall(rule.id, &rule.memo_key(&at("h99.example.com"))), None);
        assert_eq!(rule.evaluate(&token, &at("h99.example.com"), "r", 0), Err(Failure::False));
        assert_eq!(token.memo_bytes(), crate::token::MEMO_BYTES);
    }

    #[test]
    fn the_memo_key_is_a_digest_of_exactly_the_values_read() {
        let host_only = Rule::compile(r#"request.host == "a""#).unwrap();
        let path_and_host = Rule::compile(r#"request.path + request.host == "a""#).unwrap();
        let long = format!("/{}", "x".repeat(45 * 1024));
        let one = HttpRequest::new("GET", &long, "acme.example.com", []);
        let other_path = HttpRequest::new("POST", "/y", "acme.example.com", []);
        assert_eq!(host_only.memo_key(&one), host_only.memo_key(&other_path), "path and method not read");
        assert_ne!(path_and_host.memo_key(&one), path_and_host.memo_key(&other_path));
        // A value moved from the path to the host is another key.
        let split = |path: &str, host: &str| path_and_host.memo_key(&HttpRequest::new("GET", path, host, []));
        assert_ne!(split("/ab", "c.example.com"), split("/a", "bc.example.com"));
    }

    #[test]
    fn errors_are_not_remembered_and_keep_their_detail() {
        let rule = Rule::compile(r#"claims.org == request.host"#).unwrap();
        let token = token(json!({}));
        let request = HttpRequest::new("GET", "/", "acme.example.com", []);
        for _ in 0..2 {
            assert!(
                matches!(rule.evaluate(&token, &request, "r", 0), Err(Failure::Error(detail)) if !detail.is_empty())
            );
        }
        assert_eq!(token.recall(rule.id, &rule.memo_key(&request)), None);
    }

    #[test]
    fn a_query_backends_could_read_differently_fails_the_rule() {
        let rule = Rule::compile(r#"request.query.tenant == claims.org"#).unwrap();
        assert!(rule.reads_query() && !rule.memoizes());
        assert!(Rule::compile("size(dyn(request)) > 0").unwrap().reads_query());
        assert!(!Rule::compile("request.path == '/'").unwrap().reads_query());
        let token = token(json!({"org": "acme"}));
        let at = |path: &str| rule.evaluate(&token, &HttpRequest::new("GET", path, "h", []), "r", 0);
        assert_eq!(at("/?tenant=acme"), Ok(()));
        assert_eq!(at("/?tenant=globex"), Err(Failure::False));
        for ambiguous in ["/?tenant=acme&tenant=globex", "/?ten%61nt=acme&tenant=globex", "/?tenant=acme;tenant=globex"]
        {
            assert_eq!(at(ambiguous), Err(Failure::AmbiguousQuery), "{ambiguous}");
        }
    }

    /// `1 + 1 + ... > 0`: a left-leaning tree `terms` levels deep.
    fn sum(terms: usize) -> String {
        format!("{} > 0", vec!["1"; terms].join(" + "))
    }

    fn nested_lists(depth: usize) -> String {
        format!("size({}1{}) > 0", "[".repeat(depth), "]".repeat(depth))
    }

    fn negations(pairs: usize) -> String {
        format!("{}true{}", "!(".repeat(2 * pairs), ")".repeat(2 * pairs))
    }

    fn ternaries(depth: usize) -> String {
        format!("{}true{}", "true ? (".repeat(depth), ") : false".repeat(depth))
    }

    fn concatenations(terms: usize) -> String {
        format!("{} != ''", vec!["claims.a"; terms].join(" + "))
    }

    fn method_chain(calls: usize) -> String {
        format!("request.path{}.startsWith('/')", ".lowerAscii()".repeat(calls))
    }

    fn nested_maps(depth: usize) -> String {
        format!("size({}1{}) > 0", "{'a': ".repeat(depth), "}".repeat(depth))
    }

    const SHAPES: [fn(usize) -> String; 7] =
        [sum, nested_lists, negations, ternaries, concatenations, method_chain, nested_maps];

    /// The largest `n` for which `shape(n)` compiles.
    fn deepest_accepted(shape: fn(usize) -> String) -> usize {
        (1..=2 * MAX_DEPTH).take_while(|&n| Rule::compile(&shape(n)).is_ok()).last().expect("shape(1) compiles")
    }

    #[test]
    fn depth_and_size_are_bounded_at_compile_time() {
        // The root (`>`) is level 1, the sum's deepest `1` level `terms` + 1.
        assert_eq!(deepest_accepted(sum), MAX_DEPTH - 1);
        let too_deep = Rule::compile(&sum(MAX_DEPTH)).unwrap_err();
        assert!(
            too_deep.starts_with(&format!("nested deeper than {MAX_DEPTH} levels (at line 1, column ")),
            "{too_deep}"
        );
        // What the review sent: 1300 terms in 2600 characters.
        let review = format!("{}>0", vec!["1"; 1300].join("+"));
        assert!(Rule::compile(&review).unwrap_err().contains("nested deeper"));
        for shape in SHAPES {
            let deepest = deepest_accepted(shape);
            assert!(deepest < 2 * MAX_DEPTH, "{}", shape(1));
            assert!(Rule::compile(&shape(deepest + 1)).unwrap_err().contains("nested deeper"), "{}", shape(1));
        }
        let wide = format!("size([{}]) > 0", vec!["1"; MAX_NODES].join(","));
        assert_eq!(Rule::compile(&wide).unwrap_err(), format!("more than {MAX_NODES} operators and operands"));
        assert!(Rule::compile(&format!("size([{}]) > 0", vec!["1"; MAX_NODES - 10].join(","))).is_ok());
    }

    /// Evaluates `source` on a thread with a 256 KiB stack (a tokio worker has
    /// 2 MiB): a stack overflow would abort the test binary.
    fn evaluate_on_a_small_stack(source: String) -> Result<(), Failure> {
        let rule = Rule::compile(&source).expect("accepted");
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || rule.evaluate(&token(json!({"a": "b"})), &request(), "r", 0))
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn the_deepest_accepted_expressions_evaluate_on_a_small_stack() {
        for shape in SHAPES {
            let source = shape(deepest_accepted(shape));
            assert_eq!(evaluate_on_a_small_stack(source), Ok(()), "{}", shape(1));
        }
    }

    #[test]
    fn hostile_4_kib_expressions_are_refused_without_overflowing_the_compiler() {
        // Each shape as deep as 4096 characters allow, compiled from a 256 KiB
        // stack (a reload compiles on a tokio worker, with 2 MiB).
        let shapes = [
            sum(1023),
            format!("{}true", "!-".repeat(2045)),
            negations(680),
            format!("claims{} == 1", ".a".repeat(2040)),
            format!("claims{} == 1", "[0]".repeat(1360)),
            format!("{}true{}", "(".repeat(2046), ")".repeat(2046)),
            format!("{}1{}", "[".repeat(2047), "]".repeat(2047)),
            format!("{}true", "true ? true : ".repeat(290)),
            ternaries(225),
            format!("{}1{}", "f(".repeat(1364), ")".repeat(1364)),
            method_chain(300),
            format!("{}1 == 1", "1 * ".repeat(1020)),
            "claims.a.exists(x, ".repeat(200),
        ];
        for shape in shapes {
            let length = shape.chars().count();
            assert!(length <= MAX_EXPRESSION_CHARS, "{length}: the shape must reach the parser");
            let outcome = std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || Rule::compile(&shape).map(|_| ()))
                .unwrap()
                .join()
                .unwrap();
            assert!(outcome.is_err(), "{length} characters accepted");
        }
    }

    #[test]
    fn problems_never_quote_the_expression() {
        // What an interpolated secret could look like in each position.
        let secret = "sk_live_5ecret";
        for source in [
            format!("claims.key == {secret}"),
            format!("claims.key == '{secret}"),
            format!("claims.key == {secret}!"),
            format!("claims.key == `{secret}`"),
            format!("claims.key.matches({secret})"),
            format!("claims.key == 1{secret}"),
            format!("claims.key == \"{secret}\" ==="),
            format!("claims.{secret}.exists(x, x.exists(y, y == {secret}))"),
            format!("{} + claims.{secret}", sum(MAX_DEPTH)),
        ] {
            let problem = Rule::compile(&source).unwrap_err();
            assert!(!problem.contains("5ecret"), "{problem}");
        }
        let rule = Rule::compile(&format!("claims.key == '{secret}'")).unwrap();
        assert!(!format!("{rule:?}").contains("5ecret"));
    }
}
