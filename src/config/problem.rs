//! One shape for everything wrong with a config: a message located by its YAML
//! path (`routes[2].match.prefix`). Stages report paths relative to their own
//! section; whoever compiles that section puts them under its path.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { path: path.into(), message: message.into() }
    }

    /// This problem, found inside the section at `parent`.
    pub fn under(self, parent: &str) -> Self {
        Problem { path: join_path(parent, &self.path), message: self.message }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "(top level)" } else { &self.path };
        write!(f, "{path}: {}", self.message)
    }
}

/// Every problem found in one config; nothing stops at the first.
#[derive(Debug, Default, Clone)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    /// Adds a section's problems (paths relative to it) under `parent`.
    pub fn extend_under(&mut self, parent: &str, found: impl IntoIterator<Item = Problem>) {
        self.0.extend(found.into_iter().map(|problem| problem.under(parent)));
    }

    /// The value of `result`, or its problems added under `parent`.
    pub fn take<T>(&mut self, parent: &str, result: Result<T, Vec<Problem>>) -> Option<T> {
        result.map_err(|found| self.extend_under(parent, found)).ok()
    }

    /// Keeps only the problems `keep` accepts.
    pub fn retain(&mut self, keep: impl FnMut(&Problem) -> bool) {
        self.0.retain(keep);
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

impl ConfigError {
    /// The same report on one line (`invalid config F: 2 problems: a: x; b: y`), for
    /// a log line that log collectors keep together.
    pub fn one_line(&self) -> String {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        let problems: Vec<String> = self
            .problems
            .iter()
            .map(|problem| problem.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        format!("invalid config {}: {count} {noun}: {}", self.source_name, problems.join("; "))
    }
}

/// `parent.key`, `parent[i]`, or whichever is not empty.
pub fn join_path(parent: &str, key: &str) -> String {
    match (parent.is_empty(), key.is_empty()) {
        (_, true) => parent.to_string(),
        (true, false) => key.to_string(),
        (false, false) if key.starts_with('[') => format!("{parent}{key}"),
        (false, false) => format!("{parent}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest() {
        assert_eq!(join_path("issuers.a", "secret"), "issuers.a.secret");
        assert_eq!(join_path("routes", "[2]"), "routes[2]");
        assert_eq!(join_path("", "listen"), "listen");
        assert_eq!(join_path("backends.h", ""), "backends.h");
        let problem = Problem::new("header.name", "required").under("issuers.h.hasura_jwt_secret");
        assert_eq!(problem.to_string(), "issuers.h.hasura_jwt_secret.header.name: required");
    }
}
