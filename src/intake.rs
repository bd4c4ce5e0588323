//! What a request may hold before its message has fully arrived, on the gRPC ports.
//!
//! Envoy sends a whole CheckRequest at once, but nothing forces a client to:
//! one that opens streams and sends part of each message would keep their
//! bytes buffered (and the streams open) for as long as it answers keepalive
//! pings. So every request body is metered here:
//! - its bytes count against its connection's budget until the request side
//!   of the stream ends (`connection_budget`, a few messages' worth): the
//!   bytes received, or the size its gRPC frame announces if that is larger,
//!   since tonic reserves that much as soon as it reads the 5-byte prefix;
//! - it must end within the arrival bound, counted from its headers
//!   ([`REQUEST_ARRIVAL_TIMEOUT`]); reflection, a conversation, is exempt.
//!
//! A stream over either bound fails with a gRPC status (DEADLINE_EXCEEDED or
//! RESOURCE_EXHAUSTED) and its bytes are released at once; hyper then resets
//! what is left of it. The connection is identified by [`Metered`], which
//! wraps each accepted connection and hands its counter to every request.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::Frame;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tonic::codegen::{Body, Bytes, Service, http};
use tonic::transport::server::Connected;

use crate::config::LimitsConfig;

/// How long a request may take from its headers to the end of its message.
/// Envoy's ext_authz timeout is typically 0.25 s to a few seconds, and Envoy
/// sends the whole CheckRequest at once: a message still incomplete after 5 s
/// belongs to a Check Envoy gave up on long ago, or to no Envoy at all.
pub const REQUEST_ARRIVAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Room in a CheckRequest beyond its headers: the request's other attributes
/// (addresses, TLS session, a client certificate, context extensions,
/// metadata) and protobuf framing. The one place to add an allowance for a
/// buffered request body (`with_request_body`).
pub const CHECK_ENVELOPE_BYTES: usize = 64 * 1024;

/// How many largest messages' worth of unfinished bytes one connection may hold.
pub const BUDGET_MESSAGES: usize = 4;

/// The largest CheckRequest read (256 KiB with the default 96 KiB of headers):
/// the headers twice, since Envoy repeats the pseudo-headers and the path as
/// separate fields, plus [`CHECK_ENVELOPE_BYTES`]. A larger message is refused
/// with RESOURCE_EXHAUSTED, read no further.
pub fn check_message_limit(limits: &LimitsConfig) -> usize {
    limits.max_header_bytes.saturating_mul(2).saturating_add(CHECK_ENVELOPE_BYTES)
}

/// Bytes of unfinished requests one connection may hold (1 MiB by default).
pub fn connection_budget(message_limit: usize) -> usize {
    message_limit.saturating_mul(BUDGET_MESSAGES)
}

/// The bounds one listener applies.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub arrival: Duration,
    pub connection_bytes: usize,
}

/// Why a stream was ended before its request arrived (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    ArrivalTimeout,
    ConnectionBudget,
}

impl Cut {
    pub fn label(self) -> &'static str {
        match self {
            Cut::ArrivalTimeout => "arrival_timeout",
            Cut::ConnectionBudget => "connection_budget",
        }
    }
}

/// The process-wide figures the layer keeps (shared with the registry).
#[derive(Debug, Clone, Default)]
pub struct IntakeMetrics {
    /// Bytes of requests received and not yet complete, every connection.
    pub unfinished_bytes: Gauge,
    pub arrival_timeouts: Counter,
    pub budget_resets: Counter,
}

/// One connection's unfinished bytes; every request on it gets a clone.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    held: Arc<AtomicUsize>,
}

impl Connection {
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// An accepted connection, carrying its [`Connection`] to tonic, which puts
/// it in every request's extensions.
#[derive(Debug)]
pub struct Metered<IO> {
    io: IO,
    connection: Connection,
}

/// Wraps each connection `incoming` yields.
pub fn metered<IO, E>(incoming: impl Stream<Item = Result<IO, E>>) -> impl Stream<Item = Result<Metered<IO>, E>> {
    incoming.map(|accepted| accepted.map(|io| Metered { io, connection: Connection::default() }))
}

impl<IO> Connected for Metered<IO> {
    type ConnectInfo = Connection;

    fn connect_info(&self) -> Connection {
        self.connection.clone()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Metered<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Metered<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The tower layer that meters every request body (see the module docs).
#[derive(Debug, Clone)]
pub struct IntakeLayer {
    bounds: Bounds,
    metrics: IntakeMetrics,
}

impl IntakeLayer {
    pub fn new(bounds: Bounds, metrics: IntakeMetrics) -> Self {
        IntakeLayer { bounds, metrics }
    }
}

impl<S> tower::Layer<S> for IntakeLayer {
    type Service = Intake<S>;

    fn layer(&self, inner: S) -> Intake<S> {
        Intake { inner, layer: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Intake<S> {
    inner: S,
    layer: IntakeLayer,
}

impl<S> Service<http::Request<tonic::body::Body>> for Intake<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // A connection that did not come through `metered` still bounds each request on its own.
        let connection = request.extensions().get::<Connection>().cloned().unwrap_or_default();
        let deadline =
            (!is_conversation(request.uri().path())).then(|| Box::pin(tokio::time::sleep(self.layer.bounds.arrival)));
        let layer = self.layer.clone();
        self.inner.call(request.map(|body| {
            tonic::body::Body::new(MeteredBody {
                inner: body,
                connection,
                layer,
                held: 0,
                received: 0,
                prefix: Prefix::default(),
                deadline,
                done: false,
            })
        }))
    }
}

/// Reflection is a bidirectional stream: its request side stays open for
/// the whole conversation, so it has no arrival bound (its bytes still count).
fn is_conversation(path: &str) -> bool {
    path.starts_with("/grpc.reflection.")
}

/// A request body counted against its connection until it ends.
struct MeteredBody {
    inner: tonic::body::Body,
    connection: Connection,
    layer: IntakeLayer,
    /// This stream's bytes in the connection's count.
    held: usize,
    /// Bytes received so far.
    received: usize,
    /// The first message's gRPC prefix, as it arrives.
    prefix: Prefix,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl MeteredBody {
    /// Counts a data frame in: what this stream holds grows to the bytes
    /// received or the announced message, whichever is larger.
    fn received(&mut self, data: &Bytes) -> Result<(), Status> {
        self.received += data.len();
        self.prefix.read(data);
        let holds = self.received.max(self.prefix.announced());
        match holds.checked_sub(self.held) {
            Some(more) if more > 0 => self.take(more),
            _ => Ok(()),
        }
    }

    /// Counts `bytes` in if the connection's budget has room; else the stream is cut.
    fn take(&mut self, bytes: usize) -> Result<(), Status> {
        let budget = self.layer.bounds.connection_bytes;
        let room = |held: usize| held.checked_add(bytes).filter(|&after| after <= budget);
        if self.connection.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, room).is_err() {
            return Err(self.cut(Cut::ConnectionBudget));
        }
        self.held += bytes;
        self.layer.metrics.unfinished_bytes.inc_by(gauge_value(bytes));
        Ok(())
    }

    /// Ends the stream: its body (and what h2 buffered for it) is dropped now.
    fn cut(&mut self, why: Cut) -> Status {
        self.finish();
        self.inner = tonic::body::Body::empty();
        match why {
            Cut::ArrivalTimeout => {
                self.layer.metrics.arrival_timeouts.inc();
                let bound = self.layer.bounds.arrival;
                Status::deadline_exceeded(format!("the request did not arrive within {bound:?}"))
            }
            Cut::ConnectionBudget => {
                self.layer.metrics.budget_resets.inc();
                let budget = self.layer.bounds.connection_bytes;
                Status::resource_exhausted(format!("this connection holds over {budget} bytes of unfinished requests"))
            }
        }
    }

    /// The request side ended (or failed): its bytes no longer count, no deadline applies.
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.connection.held.fetch_sub(self.held, Ordering::Relaxed);
        self.layer.metrics.unfinished_bytes.dec_by(gauge_value(self.held));
        self.held = 0;
        self.deadline = None;
    }
}

/// A gRPC message prefix: a compression flag, then the length (4 bytes, big-endian).
#[derive(Default)]
struct Prefix {
    bytes: [u8; 5],
    read: usize,
}

impl Prefix {
    fn read(&mut self, data: &[u8]) {
        let wanted = self.bytes.len() - self.read;
        let taken = wanted.min(data.len());
        self.bytes[self.read..self.read + taken].copy_from_slice(&data[..taken]);
        self.read += taken;
    }

    /// The prefix and the message it announces, once the prefix is complete.
    fn announced(&self) -> usize {
        if self.read < self.bytes.len() {
            return 0;
        }
        let [_, length @ ..] = self.bytes;
        usize::try_from(u32::from_be_bytes(length)).map_or(usize::MAX, |length| length.saturating_add(5))
    }
}

fn gauge_value(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !this.done
                    && let Err(status) = this.received(data)
                {
                    return Poll::Ready(Some(Err(status)));
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => {
                this.finish();
                Poll::Ready(other)
            }
            Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Some(Err(this.cut(Cut::ArrivalTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish();
    }
}
