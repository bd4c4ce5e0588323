//! One JSON line per decision (`decision_log:`), so "why was this request
//! denied?" has an answer after the fact: route, issuer, subject, reason,
//! status, latency, cache hit, token fingerprint and trace id.
//!
//! The Check only samples and queues an entry: a writer task formats and
//! writes the lines, so a slow disk or a blocked stdout never slows a decision.
//! The queue is bounded; when the writer falls behind, lines are dropped and
//! counted (`portcullis_decision_log_dropped_total`), never waited for.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::config::{DecisionLogConfig, DeniesLogged};

/// Entries waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 8192;
/// How long [`DecisionLog::flush`] waits for the writer at shutdown.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// One decision, as logged. Client-controlled text is JSON-escaped by the
/// encoder; the token appears only as its fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
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
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    let time: chrono::DateTime<chrono::Utc> = (*time).into();
    serializer.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

enum Message {
    Line(Box<Entry>),
    Flush(oneshot::Sender<()>),
}

/// Where decisions are written, and which.
pub struct DecisionLog {
    queue: mpsc::Sender<Message>,
    /// Where the lines go, for reload warnings.
    pub to: String,
    /// Decisions offered so far, for deterministic sampling.
    offered: AtomicU64,
    dropped: Counter,
}

impl DecisionLog {
    /// Opens `config.to` (appending to a file) and starts the writer; must run
    /// inside a tokio runtime.
    pub async fn open(config: &DecisionLogConfig, dropped: Counter) -> std::io::Result<DecisionLog> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match config.to.as_str() {
            "stdout" | "-" => Box::new(tokio::io::stdout()),
            path => {
                let file = tokio::fs::OpenOptions::new().create(true).append(true).open(PathBuf::from(path)).await?;
                Box::new(file)
            }
        };
        let (queue, lines) = mpsc::channel(QUEUE);
        tokio::spawn(write_lines(lines, out));
        Ok(DecisionLog { queue, to: config.to.clone(), offered: AtomicU64::new(0), dropped })
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

    /// Queues `entry`; drops (and counts) it when the writer is behind.
    pub fn write(&self, entry: Entry) {
        if self.queue.try_send(Message::Line(Box::new(entry))).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits until every line queued so far is written (bounded; for shutdown and tests).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(FLUSH_WAIT, written).await;
        }
    }
}

/// The writer: formats and writes what is queued, flushing after each batch.
async fn write_lines(mut queue: mpsc::Receiver<Message>, mut out: Box<dyn AsyncWrite + Send + Unpin>) {
    let mut batch = Vec::new();
    let mut text = Vec::new();
    while queue.recv_many(&mut batch, 256).await > 0 {
        let mut waiting = Vec::new();
        for message in batch.drain(..) {
            match message {
                Message::Line(entry) => {
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
        text.clear();
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
        let log = DecisionLog::open(&settings(0.25, DeniesLogged::All), Counter::default()).await.unwrap();
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
        let log = DecisionLog::open(&config, Counter::default()).await.unwrap();
        let entry = Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
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
    }
}
