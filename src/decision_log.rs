//! One JSON line per decision (`decision_log:`), so "why was this request
//! denied?" has an answer after the fact: route, issuer, subject, reason,
//! status, latency, cache hit, token fingerprint and trace id.
//!
//! The Check only samples and queues an entry: a writer task formats and
//! writes the lines, so a slow disk or a blocked stdout never slows a decision.
//! The queue is bounded in entries and in bytes, and every field a client can
//! fill is cut at [`MAX_FIELD_BYTES`]: a stalled reader (the slow stdout, disk
//! or shipper this is built to tolerate) holds at most [`MAX_QUEUED_BYTES`],
//! however long the paths of the requests it is behind on. When the writer
//! falls behind, lines are dropped and counted
//! (`portcullis_decision_log_dropped_total`), never waited for.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::config::{DecisionLogConfig, DeniesLogged};

/// Entries waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 8192;
/// Bytes the entries waiting for the writer may hold (as [`Entry::weight`]
/// counts them); an entry that would go beyond it is dropped. At a typical
/// 400 bytes an entry, the entry bound above is reached first.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;
/// Longest text kept in a field a client can fill (path, host, method, detail,
/// subject), in bytes; longer text is cut on a character boundary and the
/// field is named in the entry's `truncated` list.
pub const MAX_FIELD_BYTES: usize = 1024;
/// How long [`DecisionLog::flush`] waits for the writer at shutdown.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// The decision log's metrics (shared with the registry).
#[derive(Debug, Clone, Default)]
pub struct LogMetrics {
    /// Lines dropped because the writer fell behind.
    pub dropped: Counter,
    /// Bytes of entries waiting for the writer; also the count the byte bound checks.
    pub queued_bytes: Gauge,
}

/// One decision, as logged. Client-controlled text is JSON-escaped by the
/// encoder and cut at [`MAX_FIELD_BYTES`]; the token appears only as its
/// fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The face the request came through (`ext_authz_grpc`, `forward_auth`, ...).
    pub face: &'static str,
    pub route: Option<String>,
    pub issuer: Option<String>,
    pub sub: Option<String>,
    pub decision: &'static str,
    /// The deny reason's label (`ok` for an allow).
    pub reason: &'static str,
    /// What did not hold, as the client was told (denies and dry-run allows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub status: u16,
    pub latency_us: f64,
    pub cache_hit: Option<bool>,
    pub token_fp: Option<String>,
    pub trace_id: Option<String>,
    /// Envoy's `x-request-id`, when the request has a well-formed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub method: String,
    pub host: String,
    /// The canonical path, without the query string (which may carry a token).
    pub path: String,
    /// The fields cut at [`MAX_FIELD_BYTES`], when any was.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<&'static str>,
}

impl Entry {
    /// This entry with every client-filled field at most [`MAX_FIELD_BYTES`],
    /// the cut ones listed in `truncated`.
    fn bounded(mut self) -> Entry {
        let mut cut = Vec::new();
        for (name, field) in [("method", &mut self.method), ("host", &mut self.host), ("path", &mut self.path)] {
            if cut_to(field, MAX_FIELD_BYTES) {
                cut.push(name);
            }
        }
        for (name, field) in [("sub", &mut self.sub), ("detail", &mut self.detail)] {
            if field.as_mut().is_some_and(|text| cut_to(text, MAX_FIELD_BYTES)) {
                cut.push(name);
            }
        }
        self.truncated.extend(cut);
        self
    }

    /// What the entry holds while queued: the boxed struct and its strings'
    /// allocations. The number the byte bound counts, not an exact heap figure.
    pub fn weight(&self) -> usize {
        let optional =
            [&self.route, &self.issuer, &self.sub, &self.detail, &self.token_fp, &self.trace_id, &self.request_id];
        std::mem::size_of::<Entry>()
            + [&self.method, &self.host, &self.path].iter().map(|text| text.capacity()).sum::<usize>()
            + optional.iter().filter_map(|text| text.as_ref()).map(String::capacity).sum::<usize>()
            + self.truncated.capacity() * std::mem::size_of::<&str>()
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, releasing the
/// rest of its allocation; true when something was cut.
fn cut_to(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let end = (0..=max).rev().find(|at| text.is_char_boundary(*at)).unwrap_or(0);
    *text = text[..end].to_string();
    true
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    let time: chrono::DateTime<chrono::Utc> = (*time).into();
    serializer.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

enum Message {
    /// An entry and its [`Entry::weight`], released once written.
    Line(Box<Entry>, usize),
    Flush(oneshot::Sender<()>),
}

/// Where decisions are written, and which.
pub struct DecisionLog {
    queue: mpsc::Sender<Message>,
    /// Where the lines go, for reload warnings.
    pub to: String,
    /// Decisions offered so far, for deterministic sampling.
    offered: AtomicU64,
    metrics: LogMetrics,
}

impl DecisionLog {
    /// Opens `config.to` (appending to a file) and starts the writer; must run
    /// inside a tokio runtime.
    pub async fn open(config: &DecisionLogConfig, metrics: LogMetrics) -> std::io::Result<DecisionLog> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match config.to.as_str() {
            "stdout" | "-" => Box::new(tokio::io::stdout()),
            path => {
                let file = tokio::fs::OpenOptions::new().create(true).append(true).open(PathBuf::from(path)).await?;
                Box::new(file)
            }
        };
        Ok(DecisionLog::writing_to(out, &config.to, metrics))
    }

    /// Starts the writer on `out`; must run inside a tokio runtime.
    fn writing_to(out: Box<dyn AsyncWrite + Send + Unpin>, to: &str, metrics: LogMetrics) -> DecisionLog {
        let (queue, lines) = mpsc::channel(QUEUE);
        tokio::spawn(write_lines(lines, out, metrics.queued_bytes.clone()));
        DecisionLog { queue, to: to.to_string(), offered: AtomicU64::new(0), metrics }
    }

    /// Whether this decision is one to log, by the live settings of the policy in force.
    pub fn wants(&self, settings: &DecisionLogConfig, denied: bool) -> bool {
        if denied && settings.denies == DeniesLogged::All {
            return true;
        }
        // Exactly `sample` of the decisions offered, spread evenly: the n-th is
        // logged when it carries the running total past a whole number.
        let n = self.offered.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * settings.sample).floor() > (n * settings.sample).floor()
    }

    /// Queues `entry` (its client-filled fields cut); drops (and counts) it
    /// when the writer is behind by [`QUEUE`] entries or [`MAX_QUEUED_BYTES`].
    pub fn write(&self, entry: Entry) {
        let entry = entry.bounded();
        let weight = entry.weight();
        if !self.reserve(weight) {
            self.metrics.dropped.inc();
            return;
        }
        if self.queue.try_send(Message::Line(Box::new(entry), weight)).is_err() {
            release(&self.metrics.queued_bytes, weight);
            self.metrics.dropped.inc();
        }
    }

    /// Counts `weight` queued bytes, unless that would pass the bound.
    fn reserve(&self, weight: usize) -> bool {
        let weight = i64::try_from(weight).unwrap_or(i64::MAX);
        let before = self.metrics.queued_bytes.inc_by(weight);
        let fits = before.saturating_add(weight) <= MAX_QUEUED_BYTES as i64;
        if !fits {
            self.metrics.queued_bytes.dec_by(weight);
        }
        fits
    }

    /// Waits until every line queued so far is written (bounded, the wait for
    /// room in the queue included; for shutdown and tests).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        let _ = tokio::time::timeout(FLUSH_WAIT, async {
            if self.queue.send(Message::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        })
        .await;
    }
}

fn release(queued_bytes: &Gauge, weight: usize) {
    queued_bytes.dec_by(i64::try_from(weight).unwrap_or(i64::MAX));
}

/// The writer: formats and writes what is queued, flushing after each batch.
/// A batch's bytes stay counted until it is written, so a stalled reader holds
/// the queue at its bound instead of growing this buffer.
async fn write_lines(
    mut queue: mpsc::Receiver<Message>,
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
    queued_bytes: Gauge,
) {
    let mut batch = Vec::new();
    let mut text = Vec::new();
    while queue.recv_many(&mut batch, 256).await > 0 {
        let mut waiting = Vec::new();
        let mut weights = 0;
        for message in batch.drain(..) {
            match message {
                Message::Line(entry, weight) => {
                    weights += weight;
                    if serde_json::to_writer(&mut text, &entry).is_ok() {
                        text.push(b'\n');
                    }
                }
                Message::Flush(done) => waiting.push(done),
            }
        }
        if let Err(err) = write_all(&mut out, &text).await {
            tracing::warn!(error = %err, "decision log write failed");
        }
        release(&queued_bytes, weights);
        text.clear();
        // One batch of long lines should not keep its buffer for good.
        text.shrink_to(64 * 1024);
        for done in waiting {
            let _ = done.send(());
        }
    }
}

async fn write_all(out: &mut (dyn AsyncWrite + Send + Unpin), text: &[u8]) -> std::io::Result<()> {
    out.write_all(text).await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sample: f64, denies: DeniesLogged) -> DecisionLogConfig {
        DecisionLogConfig { to: "stdout".into(), sample, denies }
    }

    #[tokio::test]
    async fn samples_exactly_the_configured_fraction_and_every_deny() {
        let log = DecisionLog::open(&settings(0.25, DeniesLogged::All), LogMetrics::default()).await.unwrap();
        let tenth = settings(0.25, DeniesLogged::All);
        let allows = (0..100).filter(|_| log.wants(&tenth, false)).count();
        assert_eq!(allows, 25);
        assert!((0..50).all(|_| log.wants(&tenth, true)), "denies: all ignores sampling");
        let sampled = settings(0.5, DeniesLogged::Sampled);
        assert_eq!((0..100).filter(|_| log.wants(&sampled, true)).count(), 50);
        assert_eq!((0..10).filter(|_| log.wants(&settings(0.0, DeniesLogged::Sampled), false)).count(), 0);
        assert_eq!((0..10).filter(|_| log.wants(&settings(1.0, DeniesLogged::Sampled), false)).count(), 10);
    }

    #[tokio::test]
    async fn writes_one_json_line_per_entry_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let config = DecisionLogConfig { to: path.display().to_string(), ..settings(1.0, DeniesLogged::All) };
        let log = DecisionLog::open(&config, LogMetrics::default()).await.unwrap();
        let entry = Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
            face: "ext_authz_grpc",
            route: Some("api".into()),
            issuer: None,
            sub: Some("user\"1\n".into()),
            decision: "deny",
            reason: "expired",
            detail: Some("token expired".into()),
            status: 401,
            latency_us: 12.5,
            cache_hit: Some(false),
            token_fp: Some("0a1b2c3d4e5f".into()),
            trace_id: None,
            request_id: None,
            method: "GET".into(),
            host: "api.example.com".into(),
            path: "/v1/items".into(),
            truncated: Vec::new(),
        };
        log.write(entry.clone());
        log.write(entry);
        log.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["time"], "1970-01-01T00:00:01.500000Z");
        assert_eq!(lines[0]["sub"], "user\"1\n", "escaped by the encoder, one line each");
        assert_eq!(lines[0]["status"], 401);
        assert!(lines[0].get("request_id").is_none());
        assert!(lines[0].get("truncated").is_none(), "only when something was cut");
    }

    fn entry_with(path: String, detail: String) -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH,
            face: "ext_authz_grpc",
            route: None,
            issuer: None,
            sub: None,
            decision: "deny",
            reason: "no_route",
            detail: Some(detail),
            status: 403,
            latency_us: 1.0,
            cache_hit: None,
            token_fp: None,
            trace_id: None,
            request_id: None,
            method: "GET".into(),
            host: "h".into(),
            path,
            truncated: Vec::new(),
        }
    }

    #[test]
    fn long_fields_are_cut_on_a_character_boundary_and_named() {
        // 'é' is two bytes: byte 1024 falls inside one.
        let path = format!("/{}", "é".repeat(2000));
        let entry = entry_with(path, "d".repeat(5000)).bounded();
        assert_eq!(entry.path.len(), 1023);
        assert!(entry.path.ends_with('é'));
        assert_eq!(entry.detail.as_deref().map(str::len), Some(MAX_FIELD_BYTES));
        assert_eq!(entry.truncated, ["path", "detail"]);
        assert!(entry.path.capacity() < 2 * MAX_FIELD_BYTES, "the rest of the allocation is released");
        let short = entry_with("/x".into(), "d".into()).bounded();
        assert!(short.truncated.is_empty());
        let line: serde_json::Value = serde_json::to_value(&entry).unwrap();
        assert_eq!(line["truncated"], serde_json::json!(["path", "detail"]));
    }

    #[tokio::test]
    async fn a_stalled_writer_holds_at_most_the_byte_bound() {
        // A pipe nobody reads: the writer blocks after its first few bytes.
        let (stalled, _reader) = tokio::io::duplex(64);
        let metrics = LogMetrics::default();
        let log = DecisionLog::writing_to(Box::new(stalled), "test", metrics.clone());
        let entry = entry_with(format!("/{}", "a".repeat(45 * 1024)), "no route".into());
        let weight = entry.clone().bounded().weight();
        let fits = MAX_QUEUED_BYTES / weight;
        for _ in 0..fits + 500 {
            log.write(entry.clone());
        }
        let queued = metrics.queued_bytes.get();
        assert!(queued <= MAX_QUEUED_BYTES as i64, "{queued}");
        assert!(queued > (MAX_QUEUED_BYTES - weight) as i64, "full up to the bound: {queued}");
        assert!(metrics.dropped.get() >= 500, "{}", metrics.dropped.get());
        assert!(fits + 500 < QUEUE, "the byte bound, not the entry bound, dropped them");
    }
}
