//! The types of CEL values, and the signatures of every function and operator
//! a `when:` rule can call: what the load-time check ([`super::cel_check`])
//! infers an expression's type with, so that a typo (`request.hots`), a call
//! with the wrong arguments (`size(1)`) or a rule that can never give a bool
//! (`request.method`) is a config error instead of a 403 for every request.
//!
//! The signatures are those the `cel` crate registers in `Env::stdlib()` and
//! its strings extension (see its `common/types/*.rs` and
//! `extensions/strings.rs`), and the operators its interpreter implements
//! (`objects.rs`, with the operand types each `Adder`, `Comparer`, ...
//! accepts). `claims` is JSON of unknown shape: it, and anything read from
//! it, is `dyn`, which fits every signature, so only what is certain is
//! refused.

use std::fmt;

/// Deepest type tracked (`list(list(...))`): deeper parts are `dyn`. Keeps
/// every type at most 2^8 nodes whatever the expression, so joining and
/// matching stay cheap.
const MAX_TYPE_DEPTH: usize = 8;

/// A CEL type, as far as it is known before evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// Unknown until evaluation: the claims and what is read from them.
    Dyn,
    Null,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Timestamp,
    Duration,
    /// A type itself, as a value: `type(x)`, `string`.
    Meta,
    Optional,
    List(Box<Type>),
    Map(Box<Type>, Box<Type>),
    /// The `request` variable: exactly the fields of [`REQUEST_FIELDS`].
    Request,
}

/// The fields of `request`, with their types.
pub const REQUEST_FIELDS: [&str; 5] = ["method", "path", "host", "headers", "query"];

impl Type {
    pub fn list(element: Type) -> Type {
        Type::List(Box::new(element)).bounded()
    }

    pub fn map(key: Type, value: Type) -> Type {
        Type::Map(Box::new(key), Box::new(value)).bounded()
    }

    /// `map(string, string)`: `request.headers` and `request.query`.
    pub fn strings_by_name() -> Type {
        Type::map(Type::String, Type::String)
    }

    /// The type of a field of `request`, if it has that field.
    pub fn request_field(field: &str) -> Option<Type> {
        match field {
            "method" | "path" | "host" => Some(Type::String),
            "headers" | "query" => Some(Type::strings_by_name()),
            _ => None,
        }
    }

    /// Whether a value of this type can be a bool.
    pub fn may_be_bool(&self) -> bool {
        matches!(self, Type::Bool | Type::Dyn)
    }

    /// The type with everything nested deeper than [`MAX_TYPE_DEPTH`] as `dyn`.
    fn bounded(self) -> Type {
        self.truncated(MAX_TYPE_DEPTH)
    }

    fn truncated(self, depth: usize) -> Type {
        match self {
            Type::List(_) | Type::Map(..) if depth == 0 => Type::Dyn,
            Type::List(element) => Type::List(Box::new(element.truncated(depth - 1))),
            Type::Map(key, value) => {
                Type::Map(Box::new(key.truncated(depth - 1)), Box::new(value.truncated(depth - 1)))
            }
            other => other,
        }
    }

    /// Whether a value of one type could be used where the other is expected:
    /// equal, or `dyn` somewhere the other has something definite.
    pub fn compatible(&self, other: &Type) -> bool {
        match (self, other) {
            (Type::Dyn, _) | (_, Type::Dyn) => true,
            (Type::List(a), Type::List(b)) => a.compatible(b),
            (Type::Map(a, b), Type::Map(c, d)) => a.compatible(c) && b.compatible(d),
            (a, b) => a == b,
        }
    }

    /// The most precise type both could be: what a list of both holds, or a
    /// ternary with both branches gives.
    pub fn join(&self, other: &Type) -> Type {
        match (self, other) {
            (a, b) if a == b => a.clone(),
            (Type::List(a), Type::List(b)) => Type::list(a.join(b)),
            (Type::Map(a, b), Type::Map(c, d)) => Type::map(a.join(c), b.join(d)),
            _ => Type::Dyn,
        }
    }

    /// The type with its article, as problems and deny reasons say it:
    /// "a string", "an int", "bytes".
    pub fn phrase(&self) -> String {
        match self {
            Type::Int | Type::Optional => format!("an {self}"),
            Type::Null | Type::Bytes => self.to_string(),
            Type::Dyn => "a value of unknown type".into(),
            _ => format!("a {self}"),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Type::Dyn => "dyn",
            Type::Null => "null",
            Type::Bool => "bool",
            Type::Int => "int",
            Type::Uint => "uint",
            Type::Double => "double",
            Type::String => "string",
            Type::Bytes => "bytes",
            Type::Timestamp => "timestamp",
            Type::Duration => "duration",
            Type::Meta => "type",
            Type::Optional => "optional",
            Type::Request => "request",
            Type::List(element) => return write!(f, "list({element})"),
            Type::Map(key, value) => return write!(f, "map({key}, {value})"),
        };
        f.write_str(name)
    }
}

/// A parameter or result in a signature: a type, or a type variable (`A`,
/// `B`) that stands for the same type wherever it appears in one signature.
#[derive(Debug, Clone, Copy)]
enum P {
    Dyn,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Timestamp,
    Duration,
    Meta,
    Optional,
    A,
    B,
    List(&'static P),
    Map(&'static P, &'static P),
}

const LIST_A: P = P::List(&P::A);
const MAP_AB: P = P::Map(&P::A, &P::B);
const LIST_STRING: P = P::List(&P::String);

/// One overload: `size(string) -> int`, or the member `string.startsWith(string) -> bool`.
struct Overload {
    name: &'static str,
    /// Called on a receiver (`x.f(y)`), which is the first parameter.
    member: bool,
    params: &'static [P],
    result: P,
}

const fn global(name: &'static str, params: &'static [P], result: P) -> Overload {
    Overload { name, member: false, params, result }
}

const fn member(name: &'static str, params: &'static [P], result: P) -> Overload {
    Overload { name, member: true, params, result }
}

/// The tables, where the type names read as in CEL (`String` is CEL's).
mod signatures {
    use super::P::{self, Bool, Bytes, Double, Duration, Int, Optional, String, Timestamp, Uint};
    use super::{LIST_A, LIST_STRING, MAP_AB, Overload, global, member};

    /// Every overload a rule can reach: the `cel` crate's standard library, its
    /// strings extension and the operators of its interpreter.
    pub(super) static OVERLOADS: &[Overload] = &[
        // Operators.
        global("!_", &[Bool], Bool),
        global("@not_strictly_false", &[Bool], Bool),
        global("-_", &[Int], Int),
        global("-_", &[Double], Double),
        global("_+_", &[Int, Int], Int),
        global("_+_", &[Uint, Uint], Uint),
        global("_+_", &[Double, Double], Double),
        global("_+_", &[String, String], String),
        global("_+_", &[Bytes, Bytes], Bytes),
        global("_+_", &[LIST_A, LIST_A], LIST_A),
        global("_+_", &[Duration, Duration], Duration),
        global("_+_", &[Timestamp, Duration], Timestamp),
        global("_+_", &[Duration, Timestamp], Timestamp),
        global("_-_", &[Int, Int], Int),
        global("_-_", &[Uint, Uint], Uint),
        global("_-_", &[Double, Double], Double),
        global("_-_", &[Duration, Duration], Duration),
        global("_-_", &[Timestamp, Duration], Timestamp),
        global("_-_", &[Timestamp, Timestamp], Duration),
        global("_*_", &[Int, Int], Int),
        global("_*_", &[Uint, Uint], Uint),
        global("_*_", &[Double, Double], Double),
        global("_/_", &[Int, Int], Int),
        global("_/_", &[Uint, Uint], Uint),
        global("_/_", &[Double, Double], Double),
        global("_%_", &[Int, Int], Int),
        global("_%_", &[Uint, Uint], Uint),
        global("_[_]", &[LIST_A, Int], P::A),
        global("_[_]", &[LIST_A, Uint], P::A),
        global("_[_]", &[LIST_A, Double], P::A),
        global("_[_]", &[MAP_AB, P::A], P::B),
        global("_[?_]", &[LIST_A, Int], Optional),
        global("_[?_]", &[MAP_AB, P::A], Optional),
        global("@in", &[P::A, LIST_A], Bool),
        global("@in", &[P::A, MAP_AB], Bool),
        // Conversions and type functions.
        global("bool", &[Bool], Bool),
        global("bool", &[String], Bool),
        global("bytes", &[String], Bytes),
        global("bytes", &[Bytes], Bytes),
        global("double", &[Double], Double),
        global("double", &[Int], Double),
        global("double", &[Uint], Double),
        global("double", &[String], Double),
        global("int", &[Int], Int),
        global("int", &[Uint], Int),
        global("int", &[Double], Int),
        global("int", &[String], Int),
        global("int", &[Timestamp], Int),
        global("uint", &[Uint], Uint),
        global("uint", &[Int], Uint),
        global("uint", &[Double], Uint),
        global("uint", &[String], Uint),
        global("string", &[String], String),
        global("string", &[Bool], String),
        global("string", &[Int], String),
        global("string", &[Uint], String),
        global("string", &[Double], String),
        global("string", &[Bytes], String),
        global("string", &[Timestamp], String),
        global("string", &[Duration], String),
        global("timestamp", &[String], Timestamp),
        global("timestamp", &[Timestamp], Timestamp),
        global("timestamp", &[Int], Timestamp),
        global("duration", &[String], Duration),
        global("duration", &[Duration], Duration),
        global("dyn", &[P::Dyn], P::Dyn),
        global("type", &[P::Dyn], P::Meta),
        // Sizes.
        global("size", &[String], Int),
        global("size", &[Bytes], Int),
        global("size", &[LIST_A], Int),
        global("size", &[MAP_AB], Int),
        member("size", &[String], Int),
        member("size", &[Bytes], Int),
        member("size", &[LIST_A], Int),
        member("size", &[MAP_AB], Int),
        // Strings (standard).
        global("matches", &[String, String], Bool),
        member("matches", &[String, String], Bool),
        member("contains", &[String, String], Bool),
        member("startsWith", &[String, String], Bool),
        member("endsWith", &[String, String], Bool),
        // Strings (the extension).
        member("charAt", &[String, Int], String),
        member("indexOf", &[String, String], Int),
        member("indexOf", &[String, String, Int], Int),
        member("lastIndexOf", &[String, String], Int),
        member("lastIndexOf", &[String, String, Int], Int),
        member("join", &[LIST_STRING], String),
        member("join", &[LIST_STRING, String], String),
        member("lowerAscii", &[String], String),
        member("upperAscii", &[String], String),
        member("trim", &[String], String),
        member("replace", &[String, String, String], String),
        member("replace", &[String, String, String, Int], String),
        member("split", &[String, String], LIST_STRING),
        member("split", &[String, String, Int], LIST_STRING),
        member("substring", &[String, Int], String),
        member("substring", &[String, Int, Int], String),
        member("format", &[String, LIST_A], String),
        member("reverse", &[String], String),
        global("strings.quote", &[String], String),
        // Timestamps and durations.
        member("getFullYear", &[Timestamp], Int),
        member("getFullYear", &[Timestamp, String], Int),
        member("getMonth", &[Timestamp], Int),
        member("getMonth", &[Timestamp, String], Int),
        member("getDayOfYear", &[Timestamp], Int),
        member("getDayOfYear", &[Timestamp, String], Int),
        member("getDayOfMonth", &[Timestamp], Int),
        member("getDayOfMonth", &[Timestamp, String], Int),
        member("getDate", &[Timestamp], Int),
        member("getDate", &[Timestamp, String], Int),
        member("getDayOfWeek", &[Timestamp], Int),
        member("getDayOfWeek", &[Timestamp, String], Int),
        member("getHours", &[Timestamp], Int),
        member("getHours", &[Timestamp, String], Int),
        member("getHours", &[Duration], Int),
        member("getMinutes", &[Timestamp], Int),
        member("getMinutes", &[Timestamp, String], Int),
        member("getMinutes", &[Duration], Int),
        member("getSeconds", &[Timestamp], Int),
        member("getSeconds", &[Timestamp, String], Int),
        member("getSeconds", &[Duration], Int),
        member("getMilliseconds", &[Timestamp], Int),
        member("getMilliseconds", &[Timestamp, String], Int),
        member("getMilliseconds", &[Duration], Int),
        // Optional values.
        global("optional.none", &[], Optional),
        global("optional.of", &[P::Dyn], Optional),
        global("optional.ofNonZeroValue", &[P::Dyn], Optional),
        member("value", &[Optional], P::Dyn),
        member("hasValue", &[Optional], Bool),
        member("or", &[Optional, Optional], Optional),
        member("orValue", &[Optional, P::Dyn], P::Dyn),
    ];

    /// Equality holds between values of one type, and across the numeric types
    /// (`1 == 1.0`): CEL's heterogeneous equality, as the interpreter compares.
    pub(super) static EQUALITY: &[(P, P)] =
        &[(P::A, P::A), (Int, Uint), (Uint, Int), (Int, Double), (Double, Int), (Uint, Double), (Double, Uint)];

    /// What can be ordered with `<`, `<=`, `>`, `>=`: the numbers across their
    /// types, and strings, bytes, bools, timestamps and durations among themselves.
    pub(super) static ORDERING: &[(P, P)] = &[
        (Int, Int),
        (Uint, Uint),
        (Double, Double),
        (Int, Uint),
        (Uint, Int),
        (Int, Double),
        (Double, Int),
        (Uint, Double),
        (Double, Uint),
        (String, String),
        (Bytes, Bytes),
        (Bool, Bool),
        (Timestamp, Timestamp),
        (Duration, Duration),
    ];
}

use signatures::{EQUALITY, ORDERING, OVERLOADS};

/// Why a call has no type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallProblem {
    /// No function of that name (called that way) exists.
    Unknown,
    /// The function exists, but takes none of these argument types.
    NoOverload,
}

/// Whether `name` is a function called with a namespace (`optional.of`,
/// `strings.quote`), which the parser reads as a call on a variable.
pub fn is_namespaced_function(name: &str) -> bool {
    OVERLOADS.iter().any(|overload| !overload.member && overload.name == name)
}

/// The result type of calling `name` on `args` (for a member call the
/// receiver first): the one result every matching overload agrees on, or
/// `dyn` when they differ (an argument is `dyn`).
pub fn call(name: &str, member: bool, args: &[Type]) -> Result<Type, CallProblem> {
    let comparisons = match name {
        "_==_" | "_!=_" => Some(EQUALITY),
        "_<_" | "_<=_" | "_>_" | "_>=_" => Some(ORDERING),
        _ => None,
    };
    if let Some(pairs) = comparisons {
        let fits = !member && pairs.iter().any(|(left, right)| fit(&[*left, *right], args).is_some());
        return if fits { Ok(Type::Bool) } else { Err(CallProblem::NoOverload) };
    }
    let named: Vec<&Overload> = OVERLOADS.iter().filter(|overload| overload.name == name).collect();
    if named.is_empty() {
        return Err(CallProblem::Unknown);
    }
    let mut results = named
        .iter()
        .filter(|overload| overload.member == member)
        .filter_map(|overload| fit(overload.params, args).map(|bindings| bindings.substitute(overload.result)));
    let first = results.next().ok_or(CallProblem::NoOverload)?;
    Ok(results.fold(first, |agreed, next| if agreed == next { agreed } else { Type::Dyn }))
}

/// What the type variables of one signature stand for.
#[derive(Default)]
struct Bindings {
    a: Option<Type>,
    b: Option<Type>,
}

impl Bindings {
    fn slot(&mut self, variable: P) -> &mut Option<Type> {
        match variable {
            P::A => &mut self.a,
            _ => &mut self.b,
        }
    }

    /// Binds a variable to `actual`, or joins it with what it is bound to if
    /// they are compatible.
    fn bind(&mut self, variable: P, actual: &Type) -> bool {
        let slot = self.slot(variable);
        match slot {
            None => {
                *slot = Some(actual.clone());
                true
            }
            Some(bound) if bound.compatible(actual) => {
                *slot = Some(bound.join(actual));
                true
            }
            Some(_) => false,
        }
    }

    /// An argument of unknown type matched `pattern`: its variables may be anything.
    fn unknown(&mut self, pattern: P) {
        match pattern {
            P::A | P::B => {
                self.bind(pattern, &Type::Dyn);
            }
            P::List(element) => self.unknown(*element),
            P::Map(key, value) => {
                self.unknown(*key);
                self.unknown(*value);
            }
            _ => {}
        }
    }

    fn matches(&mut self, pattern: P, actual: &Type) -> bool {
        match (pattern, actual) {
            (P::Dyn, _) => true,
            (_, Type::Dyn) => {
                self.unknown(pattern);
                true
            }
            (P::A | P::B, _) => self.bind(pattern, actual),
            (P::List(element), Type::List(actual)) => self.matches(*element, actual),
            (P::Map(key, value), Type::Map(actual_key, actual_value)) => {
                self.matches(*key, actual_key) && self.matches(*value, actual_value)
            }
            (leaf, actual) => leaf_type(leaf).as_ref() == Some(actual),
        }
    }

    fn substitute(&self, pattern: P) -> Type {
        match pattern {
            P::A => self.a.clone().unwrap_or(Type::Dyn),
            P::B => self.b.clone().unwrap_or(Type::Dyn),
            P::List(element) => Type::list(self.substitute(*element)),
            P::Map(key, value) => Type::map(self.substitute(*key), self.substitute(*value)),
            leaf => leaf_type(leaf).unwrap_or(Type::Dyn),
        }
    }
}

/// The bindings under which `args` fit `params`, if they do.
fn fit(params: &[P], args: &[Type]) -> Option<Bindings> {
    if params.len() != args.len() {
        return None;
    }
    let mut bindings = Bindings::default();
    params.iter().zip(args).all(|(param, arg)| bindings.matches(*param, arg)).then_some(bindings)
}

fn leaf_type(pattern: P) -> Option<Type> {
    Some(match pattern {
        P::Dyn => Type::Dyn,
        P::Bool => Type::Bool,
        P::Int => Type::Int,
        P::Uint => Type::Uint,
        P::Double => Type::Double,
        P::String => Type::String,
        P::Bytes => Type::Bytes,
        P::Timestamp => Type::Timestamp,
        P::Duration => Type::Duration,
        P::Meta => Type::Meta,
        P::Optional => Type::Optional,
        P::A | P::B | P::List(_) | P::Map(..) => return None,
    })
}

/// How a call is written in a problem, with the argument types:
/// `size(int)`, `int.startsWith(string)`, `string + int`, `string[int]`.
pub fn describe_call(name: &str, member: bool, args: &[Type]) -> std::string::String {
    let list = |types: &[Type]| types.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let infix = |symbol: &str| match args {
        [left, right] => format!("{left} {symbol} {right}"),
        _ => format!("{symbol}({})", list(args)),
    };
    match name {
        "_+_" => infix("+"),
        "_-_" => infix("-"),
        "_*_" => infix("*"),
        "_/_" => infix("/"),
        "_%_" => infix("%"),
        "_==_" => infix("=="),
        "_!=_" => infix("!="),
        "_<_" => infix("<"),
        "_<=_" => infix("<="),
        "_>_" => infix(">"),
        "_>=_" => infix(">="),
        "@in" => infix("in"),
        "!_" => format!("!{}", list(args)),
        "-_" => format!("-{}", list(args)),
        "@not_strictly_false" => format!("a comprehension's condition on {}", list(args)),
        "_[_]" | "_[?_]" => match args {
            [container, index] => format!("{container}[{index}]"),
            _ => format!("[{}]", list(args)),
        },
        _ if member => match args.split_first() {
            Some((receiver, rest)) => format!("{receiver}.{name}({})", list(rest)),
            None => format!("{name}()"),
        },
        _ => format!("{name}({})", list(args)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(element: Type) -> Type {
        Type::list(element)
    }

    #[test]
    fn calls_take_the_result_every_matching_overload_agrees_on() {
        assert_eq!(call("size", false, &[Type::String]), Ok(Type::Int));
        assert_eq!(call("size", false, &[Type::Dyn]), Ok(Type::Int), "every size gives an int");
        assert_eq!(call("size", false, &[Type::Int]), Err(CallProblem::NoOverload));
        assert_eq!(call("size", true, &[list(Type::Int)]), Ok(Type::Int));
        assert_eq!(call("_+_", false, &[Type::String, Type::Int]), Err(CallProblem::NoOverload));
        assert_eq!(call("_+_", false, &[Type::Dyn, Type::Int]), Ok(Type::Int));
        assert_eq!(call("_+_", false, &[Type::Dyn, Type::Dyn]), Ok(Type::Dyn));
        assert_eq!(call("_+_", false, &[Type::Timestamp, Type::Duration]), Ok(Type::Timestamp));
        assert_eq!(call("_-_", false, &[Type::Timestamp, Type::Timestamp]), Ok(Type::Duration));
        assert_eq!(call("sk_live_x", false, &[Type::Dyn]), Err(CallProblem::Unknown));
        assert_eq!(call("timestamp", true, &[Type::String]), Err(CallProblem::NoOverload), "not a method");
        assert_eq!(call("split", true, &[Type::String, Type::String]), Ok(list(Type::String)));
        assert_eq!(call("join", true, &[list(Type::Dyn)]), Ok(Type::String));
        assert_eq!(call("join", true, &[list(Type::Int)]), Err(CallProblem::NoOverload));
    }

    #[test]
    fn type_variables_join_and_dyn_keeps_them_unknown() {
        let headers = Type::strings_by_name();
        assert_eq!(call("_[_]", false, &[headers.clone(), Type::String]), Ok(Type::String));
        assert_eq!(call("_[_]", false, &[headers.clone(), Type::Int]), Err(CallProblem::NoOverload));
        assert_eq!(call("_[_]", false, &[list(Type::Bool), Type::Int]), Ok(Type::Bool));
        assert_eq!(call("_[_]", false, &[Type::Dyn, Type::Int]), Ok(Type::Dyn));
        assert_eq!(call("_+_", false, &[list(Type::Dyn), list(Type::Int)]), Ok(list(Type::Dyn)));
        assert_eq!(call("_+_", false, &[list(Type::Int), list(Type::Int)]), Ok(list(Type::Int)));
        assert_eq!(call("_+_", false, &[list(Type::Int), list(Type::String)]), Err(CallProblem::NoOverload));
        assert_eq!(call("@in", false, &[Type::String, headers]), Ok(Type::Bool));
        assert_eq!(call("@in", false, &[Type::Int, list(Type::String)]), Err(CallProblem::NoOverload));
        assert_eq!(call("@in", false, &[Type::String, Type::String]), Err(CallProblem::NoOverload));
    }

    #[test]
    fn equality_needs_one_type_or_two_numbers() {
        assert_eq!(call("_==_", false, &[Type::String, Type::String]), Ok(Type::Bool));
        assert_eq!(call("_==_", false, &[Type::Int, Type::Double]), Ok(Type::Bool));
        assert_eq!(call("_!=_", false, &[Type::Dyn, Type::Timestamp]), Ok(Type::Bool));
        assert_eq!(call("_==_", false, &[list(Type::Dyn), list(Type::Int)]), Ok(Type::Bool));
        assert_eq!(call("_==_", false, &[Type::String, Type::Int]), Err(CallProblem::NoOverload));
        assert_eq!(call("_==_", false, &[Type::String, Type::Null]), Err(CallProblem::NoOverload));
        assert_eq!(call("_<_", false, &[Type::Timestamp, Type::Int]), Err(CallProblem::NoOverload));
        assert_eq!(call("_<_", false, &[Type::Uint, Type::Double]), Ok(Type::Bool));
    }

    #[test]
    fn types_are_bounded_and_named_for_people() {
        let mut deep = Type::Int;
        for _ in 0..20 {
            deep = Type::list(deep);
        }
        assert_eq!(deep.to_string().matches("list(").count(), MAX_TYPE_DEPTH);
        assert!(deep.to_string().contains("list(dyn)"));
        assert_eq!(Type::strings_by_name().to_string(), "map(string, string)");
        assert_eq!(Type::Int.phrase(), "an int");
        assert_eq!(Type::String.phrase(), "a string");
        assert_eq!(Type::Bytes.phrase(), "bytes");
        assert_eq!(describe_call("_+_", false, &[Type::String, Type::Int]), "string + int");
        assert_eq!(describe_call("startsWith", true, &[Type::Int, Type::String]), "int.startsWith(string)");
        assert_eq!(describe_call("_[_]", false, &[Type::Request, Type::String]), "request[string]");
        assert_eq!(describe_call("size", false, &[Type::Int]), "size(int)");
    }
}
