//! `${NAME}` and `${file:PATH}` substitution in every string of the config.
//!
//! Secrets belong in the environment or in mounted files, not in the YAML; this
//! runs on the parsed document so each failure can name the YAML path it came from.
//! A value that is not read (not set, unreadable, or not asked for: see
//! [`Secrets`]) stays as written and is recorded as a [`Placeholder`], so that
//! problems its absence would cause further on are not reported again.

use serde_json::Value;

use super::Problems;
use super::secrets::{Placeholder, Secrets, Unresolved};

/// Replaces placeholders in every string of `value`, recording a problem per
/// value that should have been read and could not, and every value not read.
pub fn interpolate(value: &mut Value, path: &str, secrets: &Secrets, problems: &mut Problems) -> Unresolved {
    let mut unresolved = Unresolved { reading: *secrets == Secrets::Resolve, values: Vec::new() };
    walk(value, path, secrets, problems, &mut unresolved);
    unresolved
}

fn walk(value: &mut Value, path: &str, secrets: &Secrets, problems: &mut Problems, unresolved: &mut Unresolved) {
    match value {
        Value::String(text) => match expand(text, secrets) {
            Ok(Some(expanded)) => *text = expanded,
            Ok(None) => {}
            Err(Unread::Problem(message)) => problems.push(path, message),
            Err(Unread::Skipped(source)) => unresolved.values.push(Placeholder { path: path.to_string(), source }),
            Err(Unread::Failed { source, message }) => {
                problems.push(path, message);
                unresolved.values.push(Placeholder { path: path.to_string(), source });
            }
        },
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                walk(item, &format!("{path}[{index}]"), secrets, problems, unresolved);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                walk(item, &super::join_path(path, key), secrets, problems, unresolved);
            }
        }
        _ => {}
    }
}

/// Why a string was left as written.
enum Unread {
    /// Not a well-formed placeholder.
    Problem(String),
    /// Not asked for (`--no-secrets`): the placeholder's source.
    Skipped(String),
    /// Asked for and not available.
    Failed { source: String, message: String },
}

/// Expands one string; `Ok(None)` when it holds no placeholder.
fn expand(text: &str, secrets: &Secrets) -> Result<Option<String>, Unread> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut skipped = None;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // The text itself is not quoted back: it may be a secret.
        let end = after
            .find('}')
            .ok_or_else(|| Unread::Problem("unterminated placeholder: expected '}' after '${'".into()))?;
        let placeholder = &after[..end];
        if placeholder.is_empty() {
            return Err(Unread::Problem("empty placeholder '${}'".into()));
        }
        match resolve(placeholder, secrets)? {
            Some(value) => out.push_str(&value),
            None => skipped = skipped.or(Some(placeholder.to_string())),
        }
        rest = &after[end + 1..];
    }
    if let Some(source) = skipped {
        return Err(Unread::Skipped(source));
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// The value of one placeholder; `None` when it is not to be read.
fn resolve(placeholder: &str, secrets: &Secrets) -> Result<Option<String>, Unread> {
    let failed = |message: String| Unread::Failed { source: placeholder.to_string(), message };
    match secrets {
        Secrets::Placeholders => Ok(None),
        Secrets::Given(values) => Ok(values.get(placeholder).cloned()),
        Secrets::Resolve => match placeholder.strip_prefix("file:") {
            Some(file) => std::fs::read_to_string(file)
                .map(|content| Some(content.trim().to_string()))
                .map_err(|err| failed(format!("cannot read ${{file:{file}}}: {err}"))),
            None => std::env::var(placeholder).map(Some).map_err(|_| {
                failed(format!("environment variable {placeholder} is not set (used as ${{{placeholder}}})"))
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_env_and_files_and_reports_missing() {
        // SAFETY: single-threaded test setting a variable nobody else reads.
        unsafe { std::env::set_var("PORTCULLIS_TEST_INTERP", "abc") };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "  s3cret\n").unwrap();
        let mut doc = serde_json::json!({
            "a": "x-${PORTCULLIS_TEST_INTERP}-y",
            "b": [format!("${{file:{}}}", file.display())],
            "c": "${PORTCULLIS_TEST_MISSING}",
            "d": "plain",
        });
        let mut problems = Problems::default();
        let unresolved = interpolate(&mut doc, "", &Secrets::Resolve, &mut problems);
        assert_eq!(doc["a"], "x-abc-y");
        assert_eq!(doc["b"][0], "s3cret");
        assert_eq!(doc["d"], "plain");
        let listed = problems.into_vec();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, "c");
        assert!(listed[0].message.contains("PORTCULLIS_TEST_MISSING"));
        // The missing value is also recorded, so what it would have caused is not reported again.
        assert_eq!(unresolved.values, [Placeholder { path: "c".into(), source: "PORTCULLIS_TEST_MISSING".into() }]);
        assert!(unresolved.reading);
    }

    #[test]
    fn without_secrets_nothing_is_read_and_every_placeholder_is_listed() {
        // SAFETY: single-threaded test setting a variable nobody else reads.
        unsafe { std::env::set_var("PORTCULLIS_TEST_INTERP_SET", "abc") };
        let mut doc = serde_json::json!({
            "a": "${PORTCULLIS_TEST_INTERP_SET}",
            "b": { "c": "x-${file:/etc/hostname}-${OTHER}" },
            "d": "plain",
        });
        let mut problems = Problems::default();
        let unresolved = interpolate(&mut doc, "", &Secrets::Placeholders, &mut problems);
        assert!(problems.is_empty());
        assert!(!unresolved.reading);
        assert_eq!(doc["a"], "${PORTCULLIS_TEST_INTERP_SET}", "left as written, never read");
        assert_eq!(
            unresolved.values,
            [
                Placeholder { path: "a".into(), source: "PORTCULLIS_TEST_INTERP_SET".into() },
                Placeholder { path: "b.c".into(), source: "file:/etc/hostname".into() },
            ]
        );
        let given = Secrets::Given([("OTHER".to_string(), "v".to_string())].into());
        let mut doc = serde_json::json!({ "a": "${OTHER}", "b": "${PORTCULLIS_TEST_INTERP_SET}" });
        let unresolved = interpolate(&mut doc, "", &given, &mut problems);
        assert_eq!(doc["a"], "v");
        assert_eq!(unresolved.values.len(), 1);
        assert_eq!(unresolved.values[0].path, "b");
    }

    #[test]
    fn unterminated_placeholder_is_an_error() {
        assert!(matches!(expand("${OOPS", &Secrets::Resolve), Err(Unread::Problem(_))));
        assert!(matches!(expand("${OOPS", &Secrets::Placeholders), Err(Unread::Problem(_))));
    }
}
