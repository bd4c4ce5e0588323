//! Values the config takes from the environment or from files (`${NAME}`,
//! `${file:PATH}`), and what happens when they are not read.
//!
//! `check-config --no-secrets`, `token verify --no-secrets` and `portcullis test`
//! validate a production config on a machine that has none of its secrets. Such
//! a value is not replaced by an invented one (which could make a length check
//! pass or fail by accident): it stays a [`Placeholder`], problems found at its
//! YAML path (or under it) are not reported, and the stages that need its
//! content hold a [`Secret::Unresolved`] and say so where a decision needs it.
//! The same suppression gives the missing-variable rule: an unset `${VAR}` is
//! one problem, not also the `not a valid URL` its empty value would cause.

use std::collections::BTreeMap;
use std::fmt;

/// Where `${...}` values come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Secrets {
    /// The environment and the files named; one that cannot be read is a problem.
    #[default]
    Resolve,
    /// Nothing is read: every value with a placeholder is listed as not checked.
    Placeholders,
    /// Only these values, by what the placeholder names (`NAME` or `file:PATH`);
    /// the others stay placeholders. Neither the environment nor files are read.
    Given(BTreeMap<String, String>),
}

/// A config value that names a secret which was not read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placeholder {
    /// The YAML path of the value (`backends.hasura.admin_secret`).
    pub path: String,
    /// What its (first) placeholder names: `NAME` or `file:PATH`.
    pub source: String,
}

impl Placeholder {
    /// The placeholder as written in the config: `${NAME}`.
    pub fn written(&self) -> String {
        format!("${{{}}}", self.source)
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path, self.written())
    }
}

/// Every value of one config that holds an unread placeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unresolved {
    /// Whether the secrets were meant to be read (`false` for `--no-secrets`).
    pub reading: bool,
    pub values: Vec<Placeholder>,
}

impl Unresolved {
    /// The placeholder whose value is exactly at `path`.
    pub fn at(&self, path: &str) -> Option<&Placeholder> {
        self.values.iter().find(|value| value.path == path)
    }

    /// Whether a problem at `path` concerns an unread value: at its path, or
    /// inside it (a `hasura_jwt_secret` mapping written as one placeholder).
    pub fn covers(&self, path: &str) -> bool {
        self.values.iter().any(|value| {
            path == value.path
                || path
                    .strip_prefix(value.path.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    /// The view of one section (`backends.hasura`), for the stage compiling it.
    pub fn section<'a>(&'a self, path: &str) -> Section<'a> {
        Section { unresolved: Some(self), path: path.to_string() }
    }
}

/// What a stage knows about the unread values of its own section.
#[derive(Debug, Clone, Default)]
pub struct Section<'a> {
    unresolved: Option<&'a Unresolved>,
    path: String,
}

impl Section<'_> {
    /// The placeholder at `key` (relative to the section), if its value was not read.
    pub fn at(&self, key: &str) -> Option<&Placeholder> {
        self.unresolved?.at(&super::join_path(&self.path, key))
    }

    /// The secret written at `key`: its value, or the placeholder it was not read from.
    pub fn secret(&self, key: &str, value: &str) -> Secret {
        match self.at(key) {
            Some(placeholder) => Secret::Unresolved(placeholder.clone()),
            None => Secret::Given(value.to_string()),
        }
    }
}

/// A secret as a compiled stage holds it. `Unresolved` only exists in a policy
/// compiled without secrets, which never serves (`server::start` refuses it).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Given(String),
    Unresolved(Placeholder),
}

impl Secret {
    /// What goes into a header: the secret, or for an unread one the
    /// placeholder as written (`${HASURA_GRAPHQL_ADMIN_SECRET}`), a stand-in
    /// that names where the value would come from.
    pub fn rendered(&self) -> String {
        match self {
            Secret::Given(value) => value.clone(),
            Secret::Unresolved(placeholder) => placeholder.written(),
        }
    }

    pub fn unresolved(&self) -> Option<&Placeholder> {
        match self {
            Secret::Given(_) => None,
            Secret::Unresolved(placeholder) => Some(placeholder),
        }
    }
}

/// Never the value.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Given(value) => write!(f, "Secret(<{} bytes>)", value.len()),
            Secret::Unresolved(placeholder) => write!(f, "Secret({placeholder})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_covers_its_path_and_what_is_inside_it() {
        let unresolved = Unresolved {
            reading: false,
            values: vec![Placeholder { path: "issuers.a.hasura_jwt_secret".into(), source: "JWT".into() }],
        };
        assert!(unresolved.covers("issuers.a.hasura_jwt_secret"));
        assert!(unresolved.covers("issuers.a.hasura_jwt_secret.key"));
        assert!(unresolved.covers("issuers.a.hasura_jwt_secret[0]"));
        assert!(!unresolved.covers("issuers.a.hasura_jwt_secret_x"));
        assert!(!unresolved.covers("issuers.a"));
        let section = unresolved.section("issuers.a");
        assert_eq!(section.secret("hasura_jwt_secret", "${JWT}").rendered(), "${JWT}");
        assert_eq!(section.secret("secret", "s3cret"), Secret::Given("s3cret".into()));
        assert_eq!(format!("{:?}", Secret::Given("s3cret".into())), "Secret(<6 bytes>)");
    }
}
