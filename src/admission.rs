//! Overload protection: at most `limits.concurrent_checks` Checks in progress.
//!
//! A Check is counted once its message has arrived and been decoded (the
//! Check handler takes the ticket) until its answer is ready. Counting any
//! earlier, when its HTTP/2 stream opens, would let a client that opens
//! streams and never finishes them hold every slot: headers cost it nothing.
//! How long a request may take to arrive, and what it may hold meanwhile, is
//! bounded separately (`intake.rs`). One over the limit is not decided: it gets
//! an immediate deny with HTTP 503 in its CheckResponse, which Envoy enforces
//! whatever `failure_mode_allow` says, instead of waiting in an unbounded queue
//! until Envoy's timeout turns it into an error (or, with
//! `failure_mode_allow: true`, into an unverified allow).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::metrics::gauge::Gauge;

/// Whether a Check got a slot (health checks and reflection never ask for one).
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
