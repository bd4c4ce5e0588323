//! `${NAME}` and `${file:PATH}` substitution in every string of the config.
//!
//! Secrets belong in the environment or in mounted files, not in the YAML; this
//! runs on the parsed document so each failure can name the YAML path it came from.

use serde_json::Value;

use super::Problems;

/// Replaces placeholders in every string of `value`, recording a problem per failure.
pub fn interpolate(value: &mut Value, path: &str, problems: &mut Problems) {
    match value {
        Value::String(text) => match expand(text) {
            Ok(Some(expanded)) => *text = expanded,
            Ok(None) => {}
            Err(message) => problems.push(path, message),
        },
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{index}]"), problems);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                interpolate(item, &super::join_path(path, key), problems);
            }
        }
        _ => {}
    }
}

/// Expands one string; `Ok(None)` when it holds no placeholder.
fn expand(text: &str) -> Result<Option<String>, String> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // The text itself is not quoted back: it may be a secret.
        let end = after.find('}').ok_or("unterminated placeholder: expected '}' after '${'")?;
        out.push_str(&resolve(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

fn resolve(placeholder: &str) -> Result<String, String> {
    if let Some(file) = placeholder.strip_prefix("file:") {
        return std::fs::read_to_string(file)
            .map(|content| content.trim().to_string())
            .map_err(|err| format!("cannot read ${{file:{file}}}: {err}"));
    }
    if placeholder.is_empty() {
        return Err("empty placeholder '${}'".into());
    }
    std::env::var(placeholder)
        .map_err(|_| format!("environment variable {placeholder} is not set (used as ${{{placeholder}}})"))
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
        interpolate(&mut doc, "", &mut problems);
        assert_eq!(doc["a"], "x-abc-y");
        assert_eq!(doc["b"][0], "s3cret");
        assert_eq!(doc["d"], "plain");
        let listed = problems.into_vec();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, "c");
        assert!(listed[0].message.contains("PORTCULLIS_TEST_MISSING"));
    }

    #[test]
    fn unterminated_placeholder_is_an_error() {
        assert!(expand("${OOPS").is_err());
    }
}
