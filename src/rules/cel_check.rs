//! The load-time check of a `when:` expression, in one walk over its tree:
//! size and depth bounds, comprehension nesting, literal patterns, which
//! parts of `request` it reads, and a static type inference
//! ([`super::cel_types`]) so that what cannot work is a config error, not a
//! 403 for every request explained with the wrong cause.
//!
//! Refused: an unknown variable or function, a field `request` does not have
//! (`request.hots`), a call or operator whose argument types no overload
//! takes (`size(1)`, `request.path + 1`), a condition that is certainly not a
//! bool, and an expression whose result is certainly not a bool
//! (`request.method`). `claims` and what is read from it are `dyn`, which
//! every signature accepts: a bare claim (`claims.email_verified`) passes,
//! and if it is not a bool when evaluated the rule fails with that reason.
//!
//! Problems say where (line and column) and what kind of problem, naming
//! only types and the standard functions: never text of the expression,
//! which may hold an interpolated `${...}` secret. The walk recurses at most
//! [`MAX_DEPTH`] + 1 levels: below that it stops and reports.

use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SelectExpr, SourceInfo};

use super::cel::{MAX_DEPTH, MAX_NODES, Reads};
use super::cel_types::{self, CallProblem, REQUEST_FIELDS, Type};

const VARIABLES: [&str; 4] = ["claims", "request", "route", "now"];
/// Type names CEL lets an expression mention (`type(x) == string`).
const TYPE_NAMES: [&str; 12] =
    ["int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "timestamp", "duration"];

/// Checks the parsed expression `root`: what it reads of the request, or the
/// first problem found.
pub(super) fn check(root: &IdedExpr, source_info: &SourceInfo) -> Result<Reads, String> {
    let mut check = Check::new(source_info);
    let result = check.walk(root, 1);
    if check.problem.is_none() && !result.may_be_bool() {
        let at = check.position(root);
        check.fail(format!("the expression gives {}, not a bool (at {at})", result.phrase()));
    }
    match check.problem {
        Some(problem) => Err(problem),
        None => Ok(check.reads),
    }
}

struct Check<'a> {
    source_info: &'a SourceInfo,
    /// Comprehension variables in scope, with their types.
    bound: Vec<(&'a str, Type)>,
    nesting: usize,
    nodes: usize,
    reads: Reads,
    problem: Option<String>,
}

impl<'a> Check<'a> {
    fn new(source_info: &'a SourceInfo) -> Self {
        Check { source_info, bound: Vec::new(), nesting: 0, nodes: 0, reads: Reads::default(), problem: None }
    }

    /// Keeps the first problem; the type of what failed is `dyn`, so one
    /// mistake is reported once, not again by every operation around it.
    fn fail(&mut self, problem: String) -> Type {
        self.problem.get_or_insert(problem);
        Type::Dyn
    }

    /// Where `expr` starts in the source, as "line L, column C".
    fn position(&self, expr: &IdedExpr) -> String {
        let Some((start, _)) = self.source_info.offset_for(expr.id) else {
            return "an unknown position".into();
        };
        let before = self.source_info.source.get(..start as usize).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
        format!("line {line}, column {column}")
    }

    fn bound_type(&self, name: &str) -> Option<&Type> {
        self.bound.iter().rev().find(|(bound, _)| *bound == name).map(|(_, kind)| kind)
    }

    /// Walks `expr`, found at `depth` (the root is 1), and gives its type.
    fn walk(&mut self, expr: &'a IdedExpr, depth: usize) -> Type {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return self.fail(format!("more than {MAX_NODES} operators and operands"));
        }
        if depth > MAX_DEPTH {
            let at = self.position(expr);
            return self.fail(format!("nested deeper than {MAX_DEPTH} levels (at {at})"));
        }
        let below = depth + 1;
        match &expr.expr {
            Expr::Ident(name) => self.ident(name, expr),
            Expr::Select(select) => self.select(select, expr, below),
            Expr::Call(call) => self.call(call, expr, below),
            Expr::List(list) => {
                let mut element: Option<Type> = None;
                for (index, item) in list.elements.iter().enumerate() {
                    // `[?x]`: the value inside the optional, if any.
                    let walked = self.walk(item, below);
                    let item = if list.optional_indices.contains(&index) { Type::Dyn } else { walked };
                    element = Some(element.map_or(item.clone(), |joined| joined.join(&item)));
                }
                Type::list(element.unwrap_or(Type::Dyn))
            }
            Expr::Map(map) => {
                let mut entry_types: Option<(Type, Type)> = None;
                for entry in &map.entries {
                    let (key, value) = self.entry(&entry.expr, below);
                    entry_types = Some(match entry_types {
                        None => (key, value),
                        Some((keys, values)) => (keys.join(&key), values.join(&value)),
                    });
                }
                let (key, value) = entry_types.unwrap_or((Type::Dyn, Type::Dyn));
                Type::map(key, value)
            }
            Expr::Struct(object) => {
                object.entries.iter().for_each(|entry| {
                    self.entry(&entry.expr, below);
                });
                let at = self.position(expr);
                self.fail(format!("no message types are declared: an object cannot be built (at {at})"))
            }
            Expr::Comprehension(comprehension) => self.comprehension(comprehension, expr, below),
            Expr::Literal(literal) => literal_type(literal),
            Expr::Unspecified => Type::Dyn,
        }
    }

    /// A map entry's key and value types (a struct field's name has none).
    fn entry(&mut self, entry: &'a EntryExpr, depth: usize) -> (Type, Type) {
        match entry {
            EntryExpr::StructField(field) => (Type::String, self.walk(&field.value, depth)),
            EntryExpr::MapEntry(pair) => {
                let key = self.walk(&pair.key, depth);
                let value = self.walk(&pair.value, depth);
                // `{?k: v}`: the value inside the optional, if any.
                (key, if pair.optional { Type::Dyn } else { value })
            }
        }
    }

    fn ident(&mut self, name: &str, expr: &IdedExpr) -> Type {
        if let Some(kind) = self.bound_type(name) {
            return kind.clone();
        }
        match name {
            "claims" => Type::Dyn,
            // The whole request, not one field: every part is built.
            "request" => {
                self.reads = Reads { now: self.reads.now, ..Reads::everything() };
                Type::Request
            }
            "route" => Type::String,
            "now" => {
                self.reads.now = true;
                Type::Timestamp
            }
            _ if TYPE_NAMES.contains(&name) => Type::Meta,
            // Names the macros bind are all in `bound`; one that is not is the parser's own.
            _ if name.starts_with('@') => Type::Dyn,
            // The name itself is not quoted: it may be an interpolated secret.
            _ => {
                let at = self.position(expr);
                self.fail(format!("unknown variable at {at} (expected claims, request, route or now)"))
            }
        }
    }

    /// `operand.field`, or `has(operand.field)` when `select.test`.
    fn select(&mut self, select: &'a SelectExpr, expr: &IdedExpr, below: usize) -> Type {
        let field = select.field.as_str();
        let operand = match &select.operand.expr {
            // `request.path`: only the field read is built.
            Expr::Ident(name) if name == "request" && self.bound_type("request").is_none() => {
                self.read_request_field(field);
                Type::Request
            }
            _ => self.walk(&select.operand, below),
        };
        let found = self.field_of(&operand, field, expr);
        if select.test { Type::Bool } else { found }
    }

    /// The type of `field` on a value of type `operand`.
    fn field_of(&mut self, operand: &Type, field: &str, expr: &IdedExpr) -> Type {
        match operand {
            Type::Dyn => Type::Dyn,
            // A field of an optional value is optional (`claims.?a.b`).
            Type::Optional => Type::Optional,
            Type::Map(key, value) if key.compatible(&Type::String) => (**value).clone(),
            Type::Request => match Type::request_field(field) {
                Some(found) => found,
                None => {
                    let at = self.position(expr);
                    self.fail(format!("request has no such field (expected {}) at {at}", REQUEST_FIELDS.join(", ")))
                }
            },
            other => {
                let at = self.position(expr);
                self.fail(format!("{} has no fields (at {at})", other.phrase()))
            }
        }
    }

    fn read_request_field(&mut self, field: &str) {
        match field {
            "method" => self.reads.method = true,
            "path" => self.reads.path = true,
            "host" => self.reads.host = true,
            "headers" => self.reads.headers = true,
            "query" => self.reads.query = true,
            // Refused by `field_of`.
            _ => {}
        }
    }

    fn call(&mut self, call: &'a CallExpr, expr: &IdedExpr, below: usize) -> Type {
        if call.func_name == "matches" {
            let pattern = if call.target.is_some() { call.args.first() } else { call.args.get(1) };
            if !pattern.is_some_and(|pattern| matches!(pattern.expr, Expr::Literal(LiteralValue::String(_)))) {
                let at = self.position(expr);
                self.fail(format!("matches() takes a string literal as its pattern (at {at})"));
            }
        }
        if let Some(name) = self.namespaced(call) {
            let args: Vec<Type> = call.args.iter().map(|arg| self.walk(arg, below)).collect();
            return self.apply(&name, false, &args, expr);
        }
        match (call.func_name.as_str(), call.args.as_slice()) {
            ("_&&_" | "_||_", operands) => {
                operands.iter().for_each(|operand| self.condition(operand, below));
                Type::Bool
            }
            ("_?_:_", [condition, then, otherwise]) => {
                self.condition(condition, below);
                let then = self.walk(then, below);
                then.join(&self.walk(otherwise, below))
            }
            ("_?._", [operand, field]) => {
                let operand = self.walk(operand, below);
                if let Expr::Literal(LiteralValue::String(name)) = &field.expr {
                    self.field_of(&operand, name.inner(), expr);
                }
                Type::Optional
            }
            _ => {
                let target = call.target.as_deref().map(|target| self.walk(target, below));
                let mut args: Vec<Type> = target.iter().cloned().collect();
                args.extend(call.args.iter().map(|arg| self.walk(arg, below)));
                self.apply(&call.func_name, call.target.is_some(), &args, expr)
            }
        }
    }

    /// `optional.of(x)`, `strings.quote(s)`: parsed as a call on a variable
    /// named for the namespace, evaluated as the function of that full name.
    fn namespaced(&self, call: &CallExpr) -> Option<String> {
        let Expr::Ident(namespace) = &call.target.as_deref()?.expr else { return None };
        if self.bound_type(namespace).is_some() || VARIABLES.contains(&namespace.as_str()) {
            return None;
        }
        let name = format!("{namespace}.{}", call.func_name);
        cel_types::is_namespaced_function(&name).then_some(name)
    }

    /// An operand of `&&` or `||`, the condition of `?:`, a macro's
    /// predicate: refused when it is certainly not a bool.
    fn condition(&mut self, operand: &'a IdedExpr, below: usize) {
        let kind = self.walk(operand, below);
        if !kind.may_be_bool() {
            let at = self.position(operand);
            self.fail(format!("a condition gives {}, not a bool (at {at})", kind.phrase()));
        }
    }

    /// The type of calling function `name` on `args` (for a member call, the
    /// receiver first).
    fn apply(&mut self, name: &str, member: bool, args: &[Type], expr: &IdedExpr) -> Type {
        // Indexing an optional value gives an optional (`claims.?a[0]`).
        if matches!(name, "_[_]" | "_[?_]") && args.first() == Some(&Type::Optional) {
            return Type::Optional;
        }
        match cel_types::call(name, member, args) {
            Ok(result) => result,
            Err(CallProblem::Unknown) => {
                let at = self.position(expr);
                self.fail(format!("unknown function at {at}"))
            }
            Err(CallProblem::NoOverload) => {
                let at = self.position(expr);
                self.fail(format!("{} is not defined (at {at})", cel_types::describe_call(name, member, args)))
            }
        }
    }

    fn comprehension(&mut self, comprehension: &'a ComprehensionExpr, expr: &IdedExpr, below: usize) -> Type {
        let range = self.walk(&comprehension.iter_range, below);
        let initial = self.walk(&comprehension.accu_init, below);
        if self.nesting > 0 {
            let at = self.position(expr);
            self.fail(format!(
                "comprehensions (exists, all, map, filter) may not nest: their cost would multiply (at {at})"
            ));
        }
        let two_variables = comprehension.iter_var2.is_some();
        let (first, second) = match range {
            Type::List(element) if two_variables => (Type::Int, *element),
            Type::List(element) => (*element, Type::Dyn),
            Type::Map(key, value) => (*key, *value),
            Type::Dyn => (Type::Dyn, Type::Dyn),
            other => {
                let at = self.position(expr);
                self.fail(format!("{} cannot be iterated over (at {at})", other.phrase()));
                (Type::Dyn, Type::Dyn)
            }
        };
        let scope = self.bound.len();
        self.bound.push((&comprehension.iter_var, first));
        if let Some(second_name) = &comprehension.iter_var2 {
            self.bound.push((second_name, second));
        }
        let accumulator = self.bound.len();
        self.bound.push((&comprehension.accu_var, initial.clone()));
        self.nesting += 1;
        self.condition(&comprehension.loop_cond, below);
        let step = self.walk(&comprehension.loop_step, below);
        // `map`'s accumulator starts as `[]` and grows into a list of results.
        self.bound[accumulator].1 = initial.join(&step);
        let result = self.walk(&comprehension.result, below);
        self.nesting -= 1;
        self.bound.truncate(scope);
        result
    }
}

fn literal_type(literal: &LiteralValue) -> Type {
    match literal {
        LiteralValue::Boolean(_) => Type::Bool,
        LiteralValue::Bytes(_) => Type::Bytes,
        LiteralValue::Double(_) => Type::Double,
        LiteralValue::Int(_) => Type::Int,
        LiteralValue::Null => Type::Null,
        LiteralValue::String(_) => Type::String,
        LiteralValue::UInt(_) => Type::Uint,
    }
}

#[cfg(test)]
mod tests {
    use super::super::cel::Rule;

    fn problem(source: &str) -> String {
        match Rule::compile(source) {
            Ok(_) => panic!("{source}: accepted"),
            Err(problem) => problem,
        }
    }

    fn accepted(sources: &[&str]) {
        for source in sources {
            if let Err(problem) = Rule::compile(source) {
                panic!("{source}: {problem}");
            }
        }
    }

    // Issue 17: `request.hots` passed check-config and every request was a 403
    // explained as "undeclared reference".
    #[test]
    fn a_field_request_does_not_have_is_refused_where_it_is() {
        assert_eq!(
            problem("claims.org == request.hots"),
            "request has no such field (expected method, path, host, headers, query) at line 1, column 22"
        );
        assert!(problem("has(request.hots)").starts_with("request has no such field"));
        assert!(problem("request.?hots.hasValue()").starts_with("request has no such field"));
        assert!(problem("(true ? request : request).hots == 'a'").starts_with("request has no such field"));
        accepted(&[
            "claims.org == request.host",
            "has(request.headers) && request.headers['x-a'] == 'b' && request.query.page == '2'",
            "request.method == 'GET' && request.path.startsWith('/')",
        ]);
    }

    #[test]
    fn a_result_that_is_certainly_not_a_bool_is_refused() {
        for (source, gives) in [
            ("request.method", "a string"),
            ("size(request.path)", "an int"),
            ("request.headers", "a map(string, string)"),
            ("request.path.split('/')", "a list(string)"),
            ("now", "a timestamp"),
            ("request", "a request"),
            ("claims.a.?b", "an optional"),
            ("1.5", "a double"),
            ("b'x'", "bytes"),
        ] {
            let problem = problem(source);
            let expected = format!("the expression gives {gives}, not a bool (at line 1, column ");
            assert!(problem.starts_with(&expected), "{source}: {problem}");
        }
        // A claim's type is known only when the token is: accepted, and a
        // non-bool at run time denies with that reason.
        accepted(&["claims.email_verified", "claims.a[0]", "claims.flags.beta", "true ? claims.a : false"]);
    }

    #[test]
    fn an_unknown_function_is_refused_where_it_is_called() {
        assert_eq!(problem("sk_live_x(claims.key)"), "unknown function at line 1, column 10");
        assert!(problem("request.path.frobnicate()").starts_with("unknown function at line 1, column "));
        assert!(problem("max(1, 2) > 1").starts_with("unknown function"), "the context registers none");
        // A known function called the other way is an overload problem.
        assert!(problem("request.path.timestamp() > now").starts_with("string.timestamp() is not defined"));
        assert!(problem("startsWith(request.path, '/')").starts_with("startsWith(string, string) is not defined"));
        let secret = problem("sk_live_5ecret(claims.key) && claims.sk_live_5ecret2.sk_live_5ecret3()");
        assert!(!secret.contains("5ecret"), "{secret}");
    }

    #[test]
    fn arguments_of_the_wrong_type_are_refused() {
        for (source, expected) in [
            ("size(1) > 0", "size(int) is not defined (at line 1, column "),
            ("request.path + 1 == 'a'", "string + int is not defined (at line 1, column 14)"),
            ("request.path.startsWith(1)", "string.startsWith(int) is not defined"),
            ("request.headers[1] == 'a'", "map(string, string)[int] is not defined"),
            ("request.path == 1", "string == int is not defined"),
            ("request.path == null", "string == null is not defined"),
            ("now < 5", "timestamp < int is not defined"),
            ("'path' in request", "string in request is not defined"),
            ("request.path in [1, 2]", "string in list(int) is not defined"),
            ("-request.path == 'a'", "-string is not defined"),
            ("!request.path", "!string is not defined"),
            ("request.path.split('/').join(1) == ''", "list(string).join(int) is not defined"),
            ("timestamp(true) < now", "timestamp(bool) is not defined"),
            ("now - duration('1h') > 1", "timestamp > int is not defined"),
        ] {
            let problem = problem(source);
            assert!(problem.starts_with(expected), "{source}: {problem}");
        }
        accepted(&[
            "1 == 1.0 && 2u < 3 && 1.5 > 1",
            "[1, 2] + [3] == [1, 2, 3]",
            "{'a': 1}['a'] == 1 && 'a' in {'a': 1}",
            "request.path + '/' != ''",
            "now - timestamp('2020-01-01T00:00:00Z') > duration('1h')",
            "now + duration('1h') > now && now.getHours('Europe/Paris') < 25 && now.getDayOfWeek() >= 0",
            "int(now) > 0 && string(now) != '' && double('1.5') > 1.0 && uint(1) == 1u",
            "type(claims.a) == string && type(request.path) == string",
            "request.path.indexOf('/') == 0 && request.path.substring(1).lowerAscii().trim() != ''",
            "request.path.replace('/', '-').upperAscii().charAt(0) == '-'",
            "request.path.split('/').join('-').size() > 0 && request.headers.size() >= 0",
            "'%s'.format([request.path]) != '' && request.path.reverse() != ''",
            "request.path.matches('^/a') || matches(request.host, '^a')",
            "strings.quote(request.path) != '' && optional.of(claims.a).hasValue()",
            "claims.?org.orValue('x') == 'acme' && optional.none().or(claims.?a).hasValue()",
            "claims.a + claims.b == claims.c && size(claims.d) > 0 && claims.e.startsWith('x')",
            "claims.exp - 60 > 0 && claims.list[0] in claims.other && -claims.n < 0",
            "bytes('a') + b'b' == b'ab' && size(b'x') == 1 && string(b'x') == 'x'",
        ]);
    }

    #[test]
    fn conditions_and_comprehensions_are_typed() {
        for (source, expected) in [
            ("request.path && true", "a condition gives a string, not a bool (at line 1, column 8)"),
            ("request.path ? true : false", "a condition gives a string, not a bool"),
            ("request.headers.exists(k, k)", "a condition gives a string, not a bool (at line 1, column 27)"),
            ("request.headers.all(k, size(k))", "a condition gives an int, not a bool"),
            ("request.path.exists(c, c == 'a')", "a string cannot be iterated over"),
            ("request.exists(f, f == 'a')", "a request cannot be iterated over"),
            ("request.path.x == 'a'", "a string has no fields"),
            ("request.headers.map(k, k + 1).size() > 0", "string + int is not defined"),
        ] {
            let problem = problem(source);
            assert!(problem.starts_with(expected), "{source}: {problem}");
        }
        accepted(&[
            "request.headers.exists(k, k.startsWith('x-')) && request.query.all(k, k != '')",
            "request.headers.filter(k, k.startsWith('x-')).size() < 3",
            "request.headers.map(k, size(k)).exists(n, n > 3)",
            "request.query.exists_one(k, k == 'page')",
            "size(claims.roles.map(r, r.lowerAscii()).filter(r, r == 'admin')) == 1",
            "claims.roles.exists(r, r)",
            "[1, 2].map(x, x * 2)[0] == 2 && [[1]].all(l, l[0] == 1)",
            "{'a': 'b'}.exists(k, k == 'a')",
        ]);
    }

    #[test]
    fn building_an_object_is_refused() {
        assert!(problem("Foo{a: 1} == claims.a").starts_with("no message types are declared"));
    }
}
