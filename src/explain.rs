//! `portcullis token verify`: what would portcullis decide for this token on
//! this request, and why, without Envoy. Uses the same pipeline as the service.

use std::fmt::Write;

use crate::authenticate::vouch;
use crate::authz::Authorizer;
use crate::cli::{EXIT_INVALID, EXIT_OK, EXIT_RUNTIME, VerifyArgs};
use crate::config::{Action, Secrets, TokenFrom};
use crate::decision::{Decision, DenyReason};
use crate::escape::escape;
use crate::policy::{self, Policy};
use crate::request::HttpRequest;
use crate::rules::{Facts, Outcome, Requirement};
use crate::token::digest;

pub async fn run(args: VerifyArgs) -> u8 {
    let token = match read_token(&args) {
        Ok(token) => token,
        Err(why) => {
            eprintln!("{why}");
            return EXIT_INVALID;
        }
    };
    let loaded = match args.no_secrets {
        true => policy::load_file_without_secrets(&args.config.config, &Secrets::Placeholders),
        false => policy::load_file(&args.config.config),
    };
    let policy = match loaded {
        Ok(policy) => policy,
        Err(err) => {
            eprint!("{err}");
            return EXIT_INVALID;
        }
    };
    // Said first: a decision below that needs one of these names it.
    print!("{}", policy::summary::not_checked(&policy));
    let mut extra = Vec::new();
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            eprintln!("--header {header:?}: expected name:value");
            return EXIT_INVALID;
        };
        extra.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    for problem in policy.fetch_missing_keys(None).await {
        eprintln!("{problem}");
    }
    let request = request_with_token(&policy, &args, &token, &extra);
    let authorizer = Authorizer::new(policy);
    let decision = authorizer.decide(&request).await;
    print!("{}", describe(&decision));
    let shown: Vec<&str> = match &decision {
        Decision::Allow(allowed) => allowed.set_headers.iter().map(|(name, _)| name.as_str()).collect(),
        Decision::Deny(_) => Vec::new(),
    };
    print!("{}", rules(&authorizer.policy(), &request, &shown).await);
    match decision {
        Decision::Allow(_) => EXIT_OK,
        Decision::Deny(denied) if matches!(denied.reason, DenyReason::KeysUnavailable(_)) => EXIT_RUNTIME,
        Decision::Deny(_) => EXIT_INVALID,
    }
}

/// The token from the argument, or from `--token-file` (`-`: standard input), so
/// it need not appear in the shell history or the process list.
fn read_token(args: &VerifyArgs) -> Result<String, String> {
    let text = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|err| format!("--token-file -: cannot read standard input: {err}"))?;
            text
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|err| format!("--token-file {}: cannot read it: {err}", path.display()))?,
        (None, None) => return Err("no token: give it as an argument or with --token-file".into()),
    };
    let token = text.trim();
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    Ok(token.to_string())
}

/// Puts the token where the matched route's first issuer looks for it.
fn request_with_token(policy: &Policy, args: &VerifyArgs, token: &str, extra: &[(String, String)]) -> HttpRequest {
    let headers = |token: Option<(String, String)>| {
        let mut all: Vec<(String, String)> = extra.to_vec();
        all.extend(token);
        all
    };
    let probe_headers = headers(None);
    let probe = HttpRequest::new(
        &args.method,
        &args.path,
        &args.host,
        probe_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let source = policy
        .router
        .route(&probe)
        .filter(|route| route.action == Action::Authenticate)
        .and_then(|route| route.issuers.first())
        .map(|&id| policy.issuers[id].token_from.clone())
        .unwrap_or_default();
    let placed = match source {
        TokenFrom::Header { header, prefix: Some(prefix) } => (header, format!("{prefix}{token}")),
        TokenFrom::Header { header, prefix: None } if header == "authorization" => (header, format!("Bearer {token}")),
        TokenFrom::Header { header, prefix: None } => (header, token.to_string()),
        TokenFrom::Cookie { cookie } => ("cookie".into(), format!("{cookie}={token}")),
    };
    let all = headers(Some(placed));
    HttpRequest::new(&args.method, &args.path, &args.host, all.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Each of the matched route's requirements, held or not and why, and the
/// identity headers the token would give the upstream that `shown` (the
/// headers the decision already listed) does not: no line twice.
async fn rules(policy: &Policy, request: &HttpRequest, shown: &[&str]) -> String {
    let mut out = String::new();
    let Some(route) = policy.router.route(request) else { return out };
    let has_headers = route.identity.headers().next().is_some();
    if route.requirements.is_none() && !has_headers {
        return out;
    }
    let Ok(Some(found)) = route.extractor.extract(request) else { return out };
    let candidates: Vec<_> = found.readers.iter().map(|&position| &policy.issuers[route.issuers[position]]).collect();
    let Ok(vouched) = vouch(&policy.cache, &policy.runtime.clock, found.token, &digest(found.token), &candidates).await
    else {
        return out;
    };
    if let Some(requirements) = &route.requirements {
        let mode = if route.dry_run { "dry_run: unmet requirements are logged, not enforced" } else { "enforce" };
        let _ = writeln!(out, "requirements ({mode}):");
        let facts = Facts { token: &vouched.token, request, route: &route.name, now: policy.runtime.clock.now() };
        for outcome in requirements.outcomes(&facts) {
            let _ = writeln!(out, "  {}", explain_outcome(&outcome, requirements.when_source()));
        }
    }
    let set = route.identity.mutations(Some(&vouched.token.claims)).set_headers;
    let lines: Vec<String> = route
        .identity
        .headers()
        .filter(|(name, _)| !shown.contains(name))
        .map(|(name, claim)| match set.iter().find(|(set, _)| set == name) {
            Some((_, value)) => format!("  {name}: {value}"),
            None => format!("  {name}: (no usable claim {}; the client's copy is removed)", claim.as_str()),
        })
        .collect();
    if !lines.is_empty() {
        let heading = if shown.is_empty() { "identity headers (if allowed):" } else { "identity headers not set:" };
        let _ = writeln!(out, "{heading}");
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// One requirement in words: `scopes: missing orders:delete`.
fn explain_outcome(outcome: &Outcome<'_>, when: Option<&str>) -> String {
    let (key, item, held) = (outcome.requirement.key(), &outcome.item, outcome.held);
    match outcome.requirement {
        Requirement::Claims if held => format!("{key}: {item} matches"),
        Requirement::Claims => format!("{key}: {item} does not match"),
        Requirement::AnyOf if held => format!("{key}: one of {} is present", item.trim_start_matches("none of ")),
        Requirement::AnyOf => format!("{key}: {item} is present"),
        Requirement::When => {
            let verdict = match (&outcome.detail, held) {
                (_, true) => "true".to_string(),
                (Some(why), false) => format!("could not be evaluated ({})", escape(why)),
                (None, false) => "false".to_string(),
            };
            format!("{key} `{}`: {verdict}", when.unwrap_or_default())
        }
        _ if held => format!("{key}: has {item}"),
        _ => format!("{key}: missing {item}"),
    }
}

pub fn describe(decision: &Decision) -> String {
    let mut out = String::new();
    match decision {
        Decision::Allow(allowed) => {
            out.push_str("decision: ALLOW\n");
            out.push_str(&format!("route:    {}\n", allowed.route));
            if let Some(caller) = &allowed.caller {
                out.push_str(&format!(
                    "issuer:   {}\nsubject:  {}\n",
                    caller.issuer.as_deref().unwrap_or("(not checked)"),
                    caller.subject.as_deref().unwrap_or("-")
                ));
            }
            // A heading only over lines: an allow that changes nothing says so once.
            if !allowed.set_headers.is_empty() {
                out.push_str("upstream headers set:\n");
            }
            for (name, value) in &allowed.set_headers {
                match allowed.unresolved.iter().find(|(unread, _)| unread == name) {
                    Some((_, secret)) => out.push_str(&format!("  {name}: (needs {secret}, not read)\n")),
                    None => out.push_str(&format!("  {name}: {}\n", redact(name, value))),
                }
            }
            if !allowed.remove_headers.is_empty() {
                out.push_str("upstream headers removed:\n");
            }
            for name in &allowed.remove_headers {
                out.push_str(&format!("  {name}\n"));
            }
            if allowed.set_headers.is_empty() && allowed.remove_headers.is_empty() {
                out.push_str("upstream headers: unchanged\n");
            }
        }
        Decision::Deny(denied) => {
            let reason = &denied.reason;
            out.push_str(&format!("decision: DENY (HTTP {})\n", reason.http_status()));
            out.push_str(&format!("route:    {}\n", denied.route.as_deref().unwrap_or("(no route matches)")));
            out.push_str(&format!("reason:   {}\n", reason.description()));
            if let Some(challenge) = reason.challenge() {
                out.push_str(&format!("www-authenticate: {challenge}\n"));
            }
        }
    }
    out
}

/// Secrets Envoy would set are shown as set, never printed.
fn redact(name: &str, value: &str) -> String {
    if name.contains("secret") || name == "apikey" || name == "authorization" {
        format!("<{} bytes, redacted>", value.len())
    } else {
        value.to_string()
    }
}
