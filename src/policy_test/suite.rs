//! The test-file format (docs/testing-policies.md): which config is tested,
//! values for its `${...}` placeholders, and the cases. Unknown keys are errors,
//! as in the config itself: a misspelt expectation must not pass silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

/// One test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The config under test, relative to the test file.
    pub config: PathBuf,
    /// Values for the config's placeholders, by what they name (`NAME` or
    /// `file:PATH`). Nothing is read from the environment or from files.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// The clock, in seconds since the epoch (default: the time the tests run).
    pub now: Option<u64>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub request: RequestSpec,
    /// The token the client sends; none when absent.
    pub token: Option<TokenSpec>,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_host")]
    pub host: String,
    /// Request headers as the client sends them.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The path of an `auth_hooks` entry: the request is decided by that Hasura
    /// auth hook (its own route) instead of the routes.
    pub hook: Option<String>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            method: default_method(),
            path: default_path(),
            host: default_host(),
            headers: BTreeMap::new(),
            hook: None,
        }
    }
}

fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_host() -> String {
    "localhost".into()
}

/// A token signed by the stand-in key of `issuer`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The config's issuer name (default: the only issuer).
    pub issuer: Option<String>,
    /// Claims over the defaults (`iss`, `aud`, `sub`, `iat`, `exp`); `null` removes one.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// The signing algorithm (default: the issuer's first).
    pub alg: Option<String>,
    /// The header's `kid` (default: the stand-in key's).
    pub kid: Option<String>,
    /// More JOSE header fields, or replacements (`alg: none`, `crit: [...]`).
    #[serde(default)]
    pub header: Map<String, Value>,
    /// `exp` an hour before `now`.
    #[serde(default)]
    pub expired: bool,
    /// Send this text as the token instead (no signing).
    pub raw: Option<String>,
}

/// What the decision must be. Only what is written is compared.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub decision: Verdict,
    /// The HTTP status the client gets (a Hasura GraphQL deny is a 200).
    pub status: Option<u16>,
    /// The deny reason's label, as in metrics and the decision log (`missing_token`, `expired`, ...).
    pub reason: Option<String>,
    /// Words the deny's description contains.
    pub message: Option<String>,
    /// The name of the route that decided.
    pub route: Option<String>,
    #[serde(default)]
    pub headers: HeaderExpect,
    pub hasura: Option<HasuraExpect>,
    pub supabase: Option<SupabaseExpect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderExpect {
    /// Headers set upstream, with their values (others may be set too).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers removed upstream.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Headers that must not be set.
    #[serde(default)]
    pub not_set: Vec<String>,
}

/// The Hasura session: the role and exactly these session variables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HasuraExpect {
    pub role: Option<String>,
    pub variables: Option<BTreeMap<String, String>>,
}

/// Claims of the minted Supabase token (others may be present too).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupabaseExpect {
    pub claims: Map<String, Value>,
}

/// A test file, read; its config path made relative to the working directory.
pub fn load(path: &Path) -> Result<Suite, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read the test file: {err}"))?;
    let value: Value = serde_saphyr::from_str_with_options(&text, serde_saphyr::options! { with_snippet: false })
        .map_err(|err| format!("not valid YAML: {err}"))?;
    let mut suite: Suite = crate::config::value_de::from_value(&value).map_err(|err| {
        let at = err.path().to_string();
        format!("{at}: {}", err.into_inner())
    })?;
    if suite.cases.is_empty() {
        return Err("cases: at least one case is needed".into());
    }
    suite.config = path.parent().unwrap_or(Path::new("")).join(&suite.config);
    Ok(suite)
}
