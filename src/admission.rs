//! Overload protection: at most `limits.concurrent_checks` Checks in progress.
//!
//! A Check is counted from the moment its HTTP/2 stream is accepted (the
//! connection task calls the service synchronously) until its answer is sent,
//! so Checks queued behind a saturated CPU count too, not only those already
//! running. One over the limit is not decided: it gets an immediate deny with
//! HTTP 503 in its CheckResponse, which Envoy enforces whatever
//! `failure_mode_allow` says, instead of waiting in an unbounded queue until
//! Envoy's timeout turns it into an error (or, with `failure_mode_allow: true`,
//! into an unverified allow).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};

use prometheus_client::metrics::gauge::Gauge;
use tonic::codegen::http;

/// The one method admission applies to; health checks and reflection are never shed.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Whether a Check got a slot: set on the request by [`AdmissionLayer`], read by the Check handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted(pub bool);

/// The counter and its limit, shared by every connection; the limit follows reloads.
#[derive(Debug)]
pub struct Gate {
    /// Checks in progress (also `portcullis_checks_in_flight`).
    in_flight: Gauge,
    limit: AtomicI64,
}

impl Gate {
    pub fn new(limit: usize, in_flight: Gauge) -> Self {
        Gate { in_flight, limit: AtomicI64::new(clamp(limit)) }
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(clamp(limit), Ordering::Relaxed);
    }

    /// Counts a Check in; the ticket counts it out when dropped.
    pub fn enter(self: &Arc<Self>) -> Ticket {
        let before = self.in_flight.inc();
        Ticket { gate: Arc::clone(self), admitted: before < self.limit.load(Ordering::Relaxed) }
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }
}

fn clamp(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// One Check's place in the count.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    admitted: bool,
}

impl Ticket {
    pub fn admitted(&self) -> bool {
        self.admitted
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.in_flight.dec();
    }
}

/// The tower layer that counts Checks at accept time (see the module docs).
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    gate: Arc<Gate>,
}

impl AdmissionLayer {
    pub fn new(gate: Arc<Gate>) -> Self {
        AdmissionLayer { gate }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission { inner, gate: Arc::clone(&self.gate) }
    }
}

#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    gate: Arc<Gate>,
}

type Boxed<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Admission<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Boxed<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(self.inner.call(request));
        }
        let ticket = self.gate.enter();
        request.extensions_mut().insert(Admitted(ticket.admitted()));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answered = answer.await;
            drop(ticket);
            answered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;
    use tokio::sync::oneshot;
    use tower::{Layer, Service};

    #[test]
    fn tickets_over_the_limit_are_refused_and_every_ticket_counts_out() {
        let gate = Arc::new(Gate::new(2, Gauge::default()));
        let (first, second, third) = (gate.enter(), gate.enter(), gate.enter());
        assert_eq!((first.admitted(), second.admitted(), third.admitted()), (true, true, false));
        assert_eq!(gate.in_flight(), 3, "a refused Check is in progress too, until it is answered");
        drop(first);
        drop(third);
        assert!(gate.enter().admitted(), "room again");
        gate.set_limit(1);
        assert!(!gate.enter().admitted(), "a reload can lower the limit");
        drop(second);
        assert_eq!(gate.in_flight(), 0);
    }

    /// Answers each request when the test says so, reporting its admission.
    #[derive(Clone)]
    struct Held;

    impl Service<http::Request<oneshot::Receiver<()>>> for Held {
        type Response = Option<Admitted>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Option<Admitted>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<oneshot::Receiver<()>>) -> Self::Future {
            let admitted = request.extensions().get::<Admitted>().copied();
            Box::pin(async move {
                let _ = request.into_body().await;
                Ok(admitted)
            })
        }
    }

    fn request(path: &str) -> (http::Request<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (release, held) = oneshot::channel();
        (http::Request::builder().uri(path).body(held).unwrap(), release)
    }

    #[tokio::test]
    async fn checks_are_counted_from_accept_to_answer_and_other_methods_pass() {
        let gate = Arc::new(Gate::new(1, Gauge::default()));
        let mut service = AdmissionLayer::new(Arc::clone(&gate)).layer(Held);
        let (first, release_first) = request(CHECK_PATH);
        let first = service.call(first);
        assert_eq!(gate.in_flight(), 1, "counted when called, before the answer is polled");
        let (second, release_second) = request(CHECK_PATH);
        let second = service.call(second);
        let (health, release_health) = request("/grpc.health.v1.Health/Check");
        let health = service.call(health);
        release_health.send(()).unwrap();
        assert_eq!(health.await.unwrap(), None, "not a Check: not counted");
        release_second.send(()).unwrap();
        assert_eq!(second.await.unwrap(), Some(Admitted(false)));
        release_first.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Some(Admitted(true)));
        assert_eq!(gate.in_flight(), 0);
    }
}
