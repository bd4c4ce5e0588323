//! Readiness: SERVING once every issuer a route relies on has keys (SPEC section 8),
//! and NOT_SERVING again while an issuer's keys are stale (`refresh.max_stale_seconds`).
//! One watcher keeps grpc.health.v1 and HTTP /readyz in agreement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::authz::Authorizer;

/// The service names Envoy and Kubernetes probes ask about.
pub const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// Keys go stale by the passing of time, which no event announces: readiness
/// is also recomputed this often.
pub const RECHECK: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Recomputes readiness whenever keys change, and every [`RECHECK`], until the channel closes.
    pub fn spawn_watch(
        &self,
        authorizer: Arc<Authorizer>,
        reporters: Vec<HealthReporter>,
        mut keys_changed: watch::Receiver<u64>,
    ) -> tokio::task::JoinHandle<()> {
        let ready = Arc::clone(&self.ready);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let now_ready = authorizer.policy().is_ready();
                if last != Some(now_ready) {
                    ready.store(now_ready, Ordering::Release);
                    let status = if now_ready { ServingStatus::Serving } else { ServingStatus::NotServing };
                    for reporter in &reporters {
                        reporter.set_service_status("", status).await;
                        reporter.set_service_status(AUTHZ_SERVICE, status).await;
                    }
                    tracing::info!(ready = now_ready, "readiness changed");
                    last = Some(now_ready);
                }
                tokio::select! {
                    changed = keys_changed.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    () = tokio::time::sleep(RECHECK) => {}
                }
            }
        })
    }
}
