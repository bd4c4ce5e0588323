//! `portcullis test FILE...`: tests of a policy itself, run in CI without an
//! IdP and without secrets. Each test file names a config and lists cases (a
//! request, a token's claims, the expected decision and upstream headers).
//! The config is compiled for real, each issuer's key source is replaced by a
//! stand-in key ([`stand_in`]), each case's token is really signed and the
//! request is decided by the service's own pipeline (`Authorizer::decide`).
//!
//! `suite` is the file format, `case` runs and compares one case, `junit`
//! writes the report CI reads. One line per case, a summary, exit 1 on any failure.

mod case;
mod junit;
mod stand_in;
mod suite;

use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::watch;

use crate::admission::Admitted;
use crate::authz::Authorizer;
use crate::cli::{EXIT_INVALID, EXIT_OK, EXIT_RUNTIME};
use crate::config::{self, Secrets};
use crate::face::Face;
use crate::keys::{Jitter, KeyRuntime};
use crate::policy::Policy;
use crate::token::Clock;
use stand_in::StandIns;
use suite::Suite;

/// One case, run.
pub struct CaseResult {
    pub name: String,
    /// Empty when it passed.
    pub differences: Vec<String>,
}

/// One test file: its cases, or why it could not run at all.
pub struct SuiteResult {
    pub file: String,
    pub outcome: Result<Vec<CaseResult>, String>,
}

impl SuiteResult {
    fn tests(&self) -> usize {
        self.outcome.as_ref().map_or(1, Vec::len)
    }
    fn failures(&self) -> usize {
        self.outcome.as_ref().map_or(0, |cases| cases.iter().filter(|case| !case.differences.is_empty()).count())
    }
    fn errors(&self) -> usize {
        usize::from(self.outcome.is_err())
    }
}

/// Runs every file, prints one line per case and a summary; writes JUnit XML
/// to `junit` when asked. Exit 1 when anything failed.
pub async fn run(files: &[std::path::PathBuf], junit: Option<&Path>) -> u8 {
    let mut results = Vec::new();
    for file in files {
        let result = SuiteResult { file: file.display().to_string(), outcome: run_file(file).await };
        print!("{}", lines(&result));
        results.push(result);
    }
    let failed: usize = results.iter().map(|result| result.failures() + result.errors()).sum();
    let total: usize = results.iter().map(SuiteResult::tests).sum();
    println!("{} passed, {failed} failed", total - failed);
    if let Some(path) = junit
        && let Err(err) = std::fs::write(path, junit::render(&results))
    {
        eprintln!("cannot write {}: {err}", path.display());
        return EXIT_RUNTIME;
    }
    if failed == 0 { EXIT_OK } else { EXIT_INVALID }
}

/// `ok   file: name`, or `FAIL file: name` and each difference indented.
fn lines(result: &SuiteResult) -> String {
    let mut out = String::new();
    match &result.outcome {
        Err(error) => out.push_str(&format!("FAIL {}: {error}\n", result.file)),
        Ok(cases) => {
            for case in cases {
                let status = if case.differences.is_empty() { "ok  " } else { "FAIL" };
                out.push_str(&format!("{status} {}: {}\n", result.file, case.name));
                for difference in &case.differences {
                    out.push_str(&format!("       {difference}\n"));
                }
            }
        }
    }
    out
}

async fn run_file(path: &Path) -> Result<Vec<CaseResult>, String> {
    let suite = suite::load(path)?;
    let now = suite.now.unwrap_or_else(|| Clock::system().now());
    let (policy, stand_ins) = compile(&suite, now).await?;
    let authorizer = Authorizer::new(policy);
    let policy = authorizer.policy();
    let mut results = Vec::new();
    for case in &suite.cases {
        let differences = match case::request(case, &policy, &stand_ins, now) {
            Ok(request) => match &case.request.hook {
                None => case::differences(&case.expect, &authorizer.decide(&request).await),
                Some(path) => match policy.auth_hooks.iter().find(|hook| &hook.path == path) {
                    Some(hook) => {
                        let decision = authorizer
                            .decide_on_route(Face::HasuraWebhook, Admitted(true), &policy, &hook.route, &request)
                            .await;
                        case::differences(&case.expect, &decision)
                    }
                    None => vec![format!("request.hook: no auth_hooks entry has the path {path}")],
                },
            },
            Err(problem) => vec![problem],
        };
        results.push(CaseResult { name: case.name.clone(), differences });
    }
    Ok(results)
}

/// The suite's config, compiled with its stand-ins and with keys loaded.
async fn compile(suite: &Suite, now: u64) -> Result<(Policy, StandIns), String> {
    let source_name = suite.config.display().to_string();
    let text = config::read_file(&suite.config, &source_name).map_err(|err| err.to_string())?;
    let invalid = |problems: Vec<config::Problem>| {
        config::ConfigError { source_name: source_name.clone(), problems }.to_string().trim_end().to_string()
    };
    let (config, problems) = config::read_str_with(&text, &Secrets::Given(suite.secrets.clone()));
    let mut config = match config {
        Some(config) if problems.is_empty() => config,
        _ => return Err(invalid(problems)),
    };
    let needed = algorithms_needed(suite, &config)?;
    let stand_ins = StandIns::prepare(&mut config, &needed)?;
    let fetcher = stand_in::fetcher();
    let runtime = KeyRuntime {
        fetcher: fetcher.clone(),
        changed: watch::channel(0).0,
        clock: Clock::fixed(now),
        jitter: Jitter::fixed(1.0),
        metrics: Default::default(),
        shared: Default::default(),
    };
    let policy = Policy::compile(&config, &runtime, None).map_err(invalid)?;
    stand_ins.publish(&policy, &fetcher);
    let problems = policy.fetch_missing_keys(None).await;
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    Ok((policy, stand_ins))
}

/// For each issuer, the algorithms its stand-in keys sign with: its default,
/// and every `alg` a case asks for.
fn algorithms_needed(
    suite: &Suite,
    config: &config::Config,
) -> Result<BTreeMap<String, Vec<jsonwebtoken::Algorithm>>, String> {
    let names: Vec<String> = config.issuers.iter().map(|(name, _)| name.clone()).collect();
    let mut needed: BTreeMap<String, Vec<jsonwebtoken::Algorithm>> =
        config.issuers.iter().map(|(name, issuer)| (name.clone(), vec![stand_in::default_algorithm(issuer)])).collect();
    for case in &suite.cases {
        let Some(token) = &case.token else { continue };
        let Some(alg) = &token.alg else { continue };
        let issuer = case::issuer_name(token, &names).map_err(|err| format!("case {:?}: {err}", case.name))?;
        let alg =
            alg.parse().map_err(|_| format!("case {:?}: token.alg: {alg:?} is not a JWS algorithm", case.name))?;
        let list = needed.entry(issuer.to_string()).or_default();
        if !list.contains(&alg) {
            list.push(alg);
        }
    }
    Ok(needed)
}
