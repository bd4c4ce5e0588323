//! Live policy reload: re-read the config file, validate it completely
//! (including the first key fetch of new issuers, with a bounded wait), then
//! swap atomically. Checks in flight finish on the policy they started with;
//! a failed reload changes nothing. Used by the admin API, SIGHUP and `--watch`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::authz::Authorizer;
use crate::config::{self, DecisionLogConfig, Listen, Problem, TelemetryConfig};
use crate::intake;
use crate::policy::{self, Policy};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload (this instance was started without one)")]
    NoConfigFile,
    #[error("{0}")]
    Invalid(config::ConfigError),
}

impl ReloadError {
    /// The `result` label of `portcullis_policy_reloads_total`. A reload with no file
    /// to read is not a refused config (`error`, which alerts page on): nothing was tried.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReloadError::NoConfigFile => "no_config_file",
            ReloadError::Invalid(_) => "error",
        }
    }

    /// One line for the log, whatever asked for the reload.
    pub fn one_line(&self) -> String {
        match self {
            ReloadError::NoConfigFile => self.to_string(),
            ReloadError::Invalid(err) => err.one_line(),
        }
    }
}

/// The outcome of a successful reload.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub generation: u64,
    /// Changes that were not applied (listen addresses need a restart), and the
    /// new config's own warnings (`<path>: <message>`).
    pub warnings: Vec<String>,
}

pub struct Reloader {
    path: Option<PathBuf>,
    authorizer: Arc<Authorizer>,
    /// The addresses actually bound (a reload cannot move them).
    listen: Listen,
    /// The CheckRequest size limit the authz listener was built with.
    message_limit: usize,
    admin_token: Arc<RwLock<Option<String>>>,
    /// One reload at a time, so generations are never skipped or reordered.
    serial: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(path: Option<PathBuf>, authorizer: Arc<Authorizer>) -> Self {
        let current = authorizer.policy();
        Reloader {
            path,
            listen: current.listen.clone(),
            message_limit: intake::check_message_limit(&current.limits),
            admin_token: Arc::new(RwLock::new(current.admin_token.clone())),
            authorizer,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// The admin token in force (a reload may change it).
    pub fn admin_token(&self) -> Arc<RwLock<Option<String>>> {
        Arc::clone(&self.admin_token)
    }

    /// Re-reads, compiles and swaps in the config (counted in
    /// `portcullis_policy_reloads_total`). A refusal is logged here, as one WARN
    /// line, so the admin API, SIGHUP and `--watch` report it alike.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let result = self.try_reload().await;
        let label = match &result {
            Ok(_) => "ok",
            Err(err) => {
                tracing::warn!("reload refused, old policy kept: {}", err.one_line());
                err.metric_label()
            }
        };
        self.authorizer.metrics().record_reload(label);
        result
    }

    async fn try_reload(&self) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.serial.lock().await;
        let path = self.path.as_ref().ok_or(ReloadError::NoConfigFile)?;
        let source_name = path.display().to_string();
        let invalid =
            |problems| ReloadError::Invalid(config::ConfigError { source_name: source_name.clone(), problems });
        let current = self.authorizer.policy();
        let next = policy::load_file_with(path, &current.runtime, Some(&current)).map_err(ReloadError::Invalid)?;
        // The file's listen.admin was checked when compiling, but the port
        // actually bound is the one that counts until a restart.
        if next.admin_token.is_none() && !self.listen.admin.ip().is_loopback() {
            return Err(invalid(vec![Problem::new("admin.token", policy::admin_token_required(self.listen.admin))]));
        }
        let problems = next.fetch_missing_keys(Some(&current)).await;
        let current_observability = (current.decision_log.clone(), current.telemetry.clone());
        drop(current);
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let mut warnings = self.listen_warnings(&next.listen);
        warnings.extend(self.message_limit_warning(&next));
        warnings.extend(restart_warnings(&current_observability, &next));
        if next.runtime.shared.connected().is_some_and(|connected| *connected != next.state) {
            warnings.push("state changed: takes effect after a restart".to_string());
        }
        for warning in &next.warnings {
            tracing::warn!("config warning: {warning}");
            warnings.push(warning.to_string());
        }
        let generation = next.generation;
        let admin_token = next.admin_token.clone();
        let keys_changed = next.runtime.changed.clone();
        next.start();
        self.authorizer.swap(next);
        *self.admin_token.write().expect("admin token lock poisoned") = admin_token;
        // Readiness is recomputed for the new policy's issuers.
        keys_changed.send_modify(|count| *count += 1);
        tracing::info!(generation, warnings = warnings.len(), "policy reloaded");
        Ok(Reloaded { generation, warnings })
    }

    fn listen_warnings(&self, new: &Listen) -> Vec<String> {
        [
            ("authz", self.listen.authz, new.authz),
            ("admin", self.listen.admin, new.admin),
            ("http", self.listen.http, new.http),
        ]
        .into_iter()
        .filter(|(_, old, new)| old != new)
        .map(|(name, old, new)| format!("listen.{name} changed from {old} to {new}: takes effect after a restart"))
        .chain((self.listen.http_authz != new.http_authz).then(|| {
            let shown =
                |addr: Option<std::net::SocketAddr>| addr.map_or_else(|| "off".to_string(), |addr| addr.to_string());
            format!(
                "listen.http_authz changed from {} to {}: takes effect after a restart",
                shown(self.listen.http_authz),
                shown(new.http_authz)
            )
        }))
        .collect()
    }

    /// `limits.max_header_bytes` applies at once, but the CheckRequest size it
    /// implies was built into the listener.
    fn message_limit_warning(&self, next: &Policy) -> Option<String> {
        let wanted = intake::check_message_limit(&next.limits);
        (wanted != self.message_limit).then(|| {
            format!(
                "limits.max_header_bytes changed: the CheckRequest size limit stays {} bytes until a restart (then {wanted})",
                self.message_limit
            )
        })
    }

    /// Reloads whenever the file's content changes (polled each second,
    /// debounced), until the process ends. Content, not modification time:
    /// times can have one-second granularity, and a Kubernetes ConfigMap
    /// update swaps a symlink rather than writing the file.
    pub fn watch(self: &Arc<Self>) {
        let Some(path) = self.path.clone() else { return };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let fingerprint = |path: &PathBuf| std::fs::read(path).ok().map(|bytes| crate::token::digest_bytes(&bytes));
            let mut seen = fingerprint(&path);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if fingerprint(&path) == seen {
                    continue;
                }
                // Editors write in steps; wait until the file stops changing.
                tokio::time::sleep(Duration::from_millis(500)).await;
                seen = fingerprint(&path);
                // A refusal is logged by reload() itself.
                if let Ok(done) = this.reload().await {
                    tracing::info!(generation = done.generation, "reloaded after a file change");
                }
            }
        });
    }
}

/// Settings read once at start: where the decision log goes, and tracing.
/// (`decision_log.sample` and `denies` apply live.)
fn restart_warnings(current: &(Option<DecisionLogConfig>, Option<TelemetryConfig>), next: &Policy) -> Vec<String> {
    let (log, telemetry) = current;
    let to = |log: &Option<DecisionLogConfig>| log.as_ref().map(|log| log.to.clone());
    let mut warnings = Vec::new();
    // A log removed stops at once; a new destination needs the file opened at start.
    if next.decision_log.is_some() && to(log) != to(&next.decision_log) {
        warnings.push("decision_log.to changed: takes effect after a restart".to_string());
    }
    if telemetry != &next.telemetry {
        warnings.push("telemetry changed: takes effect after a restart".to_string());
    }
    warnings
}
