//! The YAML contract (SPEC section 2): what a user writes, checked before anything runs.
//!
//! `schema` holds the typed shape, `load` turns a file into a validated [`Config`]
//! and reports every problem with its YAML path, `interpolate` fills in secrets.

mod interpolate;
mod load;
mod schema;
mod summary;
pub mod value_de;

use std::fmt;

pub use load::{load_file, parse_str};
pub use schema::*;
pub use summary::summary;

/// One thing wrong with a config, located by its YAML path (`routes[2].match.prefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "(top level)" } else { &self.path };
        write!(f, "{path}: {}", self.message)
    }
}

/// Every problem found in one config; loading never stops at the first.
#[derive(Debug, Default, Clone)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), message: message.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// A config that cannot be used, with all of its problems.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        writeln!(f, "invalid config {}: {count} {noun}", self.source_name)?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// `parent.key`, or `key` at the top level.
pub(crate) fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}
