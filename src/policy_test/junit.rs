//! The results as JUnit XML, the report format CI systems read (GitHub
//! Actions reporters, GitLab, Jenkins): one `testsuite` per test file, one
//! `testcase` per case, a `failure` with the differences, an `error` when the
//! file itself could not run.

use std::fmt::Write;

use super::{CaseResult, SuiteResult};

pub fn render(suites: &[SuiteResult]) -> String {
    let count = |pick: fn(&SuiteResult) -> usize| suites.iter().map(pick).sum::<usize>();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"portcullis\" tests=\"{}\" failures=\"{}\" errors=\"{}\">",
        count(SuiteResult::tests),
        count(SuiteResult::failures),
        count(SuiteResult::errors)
    );
    for suite in suites {
        let name = escape(&suite.file);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\">",
            suite.tests(),
            suite.failures(),
            suite.errors()
        );
        match &suite.outcome {
            Err(error) => {
                let _ = writeln!(out, "    <testcase classname=\"{name}\" name=\"(test file)\">");
                let _ = writeln!(out, "      <error message=\"{}\"/>", escape(error));
                let _ = writeln!(out, "    </testcase>");
            }
            Ok(cases) => {
                for case in cases {
                    case_xml(&mut out, &name, case);
                }
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}

fn case_xml(out: &mut String, classname: &str, case: &CaseResult) {
    let name = escape(&case.name);
    if case.differences.is_empty() {
        let _ = writeln!(out, "    <testcase classname=\"{classname}\" name=\"{name}\"/>");
        return;
    }
    let _ = writeln!(out, "    <testcase classname=\"{classname}\" name=\"{name}\">");
    let message = escape(&case.differences[0]);
    let _ = writeln!(out, "      <failure message=\"{message}\">{}</failure>", escape(&case.differences.join("\n")));
    let _ = writeln!(out, "    </testcase>");
}

/// Text made safe inside an attribute or element; characters XML 1.0 cannot
/// carry at all become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(escape("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;\u{fffd}");
    }
}
