//! `state: { redis: ... }`: first-seen ids and revocations in Redis (or Valkey),
//! shared by every replica, through redis-rs on tokio.
//!
//! - A delivery is recorded and its revocations written in one Lua script
//!   (`SET seen NX PX`, then `HSET` into the snapshot hash and `XADD` to the
//!   stream), so an event is either first-seen and applied, or neither.
//! - Every replica reads the stream with `XREAD BLOCK` from the last id it
//!   applied, on a connection of its own. Pub/Sub would lose what is published
//!   while a replica is disconnected; a stream is read from where it stopped.
//! - On (re)connecting, and when the `epoch` key shows Redis was restarted
//!   empty, a replica resynchronises: the stream's last id, then the snapshot.
//!   After an empty restart it also writes back the set it knows, so the
//!   revocations survive as long as one replica remembers them.
//! - A Check never calls Redis: it reads this replica's set, which counts as
//!   current while the reader keeps confirming it (`max_stale_seconds`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError};

use super::{BoxFuture, StateError, Store};
use crate::config::{OnStale, Problem, RedisStateConfig};
use crate::metrics::Metrics;
use crate::revocation::{Change, Revocations};
use crate::token::Clock;

/// Braces make every key hash to one Redis Cluster slot, which the script needs.
pub const DEFAULT_KEY_PREFIX: &str = "{portcullis}:";
pub const DEFAULT_COMMAND_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_MAX_STALE_SECONDS: u64 = 30;
/// How long one `XREAD` waits for news; the set is confirmed current at least this often.
const BLOCK_MS: u64 = 1_000;
/// The stream keeps about this many changes (`XADD MAXLEN ~`); a replica
/// further behind resynchronises from the snapshot.
const STREAM_MAX_LEN: u64 = 100_000;
/// Reconnection waits: short, so a replica is reading again within half a
/// second of Redis coming back (a revocation made then reaches it at once).
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Records a first-seen key (unless `KEYS[1]` is empty) and, only then, the
/// changes: `ARGV[1]` the key's ttl in ms, `ARGV[2]` the stream's length, then
/// per change its snapshot field, `1` for a removal, and its JSON.
const RECORD: &str = r"
if KEYS[1] ~= '' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
end
for i = 3, #ARGV, 3 do
  if ARGV[i + 1] == '1' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'change', ARGV[i + 2])
end
return 1
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub key_prefix: String,
    pub command_timeout: Duration,
    pub max_stale_seconds: u64,
    pub on_stale: OnStale,
}

impl RedisSettings {
    /// Problems are relative to `state`; the URL is never quoted (it may hold a password).
    pub fn compile(config: &RedisStateConfig) -> Result<RedisSettings, Vec<Problem>> {
        let mut problems = Vec::new();
        match url::Url::parse(&config.redis) {
            Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.has_host() => {}
            _ => problems.push(Problem::new("redis", "must be a redis://host:port/db or rediss:// URL")),
        }
        if config.key_prefix.as_deref() == Some("") {
            problems.push(Problem::new("key_prefix", "must not be empty"));
        }
        let timeout = config.command_timeout_ms.unwrap_or(DEFAULT_COMMAND_TIMEOUT_MS);
        if !(1..=60_000).contains(&timeout) {
            problems.push(Problem::new("command_timeout_ms", "must be between 1 and 60000"));
        }
        if config.max_stale_seconds == Some(0) {
            problems.push(Problem::new("max_stale_seconds", "must be greater than 0"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(RedisSettings {
            url: config.redis.clone(),
            key_prefix: config.key_prefix.clone().unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string()),
            command_timeout: Duration::from_millis(timeout),
            max_stale_seconds: config.max_stale_seconds.unwrap_or(DEFAULT_MAX_STALE_SECONDS),
            on_stale: config.on_stale,
        })
    }
}

struct Keys {
    prefix: String,
    snapshot: String,
    stream: String,
    epoch: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
            snapshot: format!("{prefix}revocations"),
            stream: format!("{prefix}revocations:stream"),
            epoch: format!("{prefix}epoch"),
        }
    }

    fn seen(&self, key: &str) -> String {
        format!("{}seen:{key}", self.prefix)
    }
}

pub struct RedisStore {
    inner: Arc<Inner>,
    reader: tokio::task::JoinHandle<()>,
}

struct Inner {
    client: Client,
    writer: ConnectionManager,
    keys: Keys,
    settings: RedisSettings,
    revocations: Arc<Revocations>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// The `epoch` value of the Redis this replica last read; a different or
    /// missing one means Redis lost its data.
    epoch: Mutex<Option<String>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl RedisStore {
    /// Starts the reader task. Never fails: an unreachable Redis leaves the
    /// replica not ready (its set never read) and webhooks answering 503.
    pub fn start(settings: RedisSettings, revocations: Arc<Revocations>, clock: Clock, metrics: Arc<Metrics>) -> Self {
        let client = Client::open(settings.url.as_str()).expect("the URL was checked when the policy compiled");
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.command_timeout))
            .set_connection_timeout(Some(settings.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(RETRY_MAX);
        let writer = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .expect("a lazy connection manager without push sender");
        let inner = Arc::new(Inner {
            client,
            writer,
            keys: Keys::new(&settings.key_prefix),
            settings,
            revocations,
            clock,
            metrics,
            epoch: Mutex::new(None),
        });
        let reader = tokio::spawn(Arc::clone(&inner).read_forever());
        RedisStore { inner, reader }
    }
}

impl Store for RedisStore {
    fn record_event<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
        changes: &'a [Change],
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let first = self.inner.record(Some(&self.inner.keys.seen(key)), ttl, changes).await?;
            if first {
                self.inner.apply_locally(changes);
            }
            Ok(first)
        })
    }

    fn publish<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            self.inner.record(None, Duration::ZERO, std::slice::from_ref(change)).await?;
            self.inner.apply_locally(std::slice::from_ref(change));
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

impl Inner {
    /// Runs the record script within the command timeout.
    async fn record(&self, seen: Option<&str>, ttl: Duration, changes: &[Change]) -> Result<bool, StateError> {
        let mut command = redis::cmd("EVAL");
        command.arg(RECORD).arg(3).arg(seen.unwrap_or("")).arg(&self.keys.snapshot).arg(&self.keys.stream);
        command.arg(ttl.as_millis().max(1) as u64).arg(STREAM_MAX_LEN);
        for change in changes {
            let json = serde_json::to_string(change).expect("a change is plain JSON");
            command.arg(change.entry_key()).arg(if change.is_removal() { "1" } else { "0" }).arg(json);
        }
        let mut writer = self.writer.clone();
        let timeout = self.settings.command_timeout;
        let attempts = async {
            match command.query_async::<i64>(&mut writer).await {
                // The manager reconnects after a dropped connection but fails the call
                // that found it dropped: one more try. Safe: the script is idempotent
                // (a second run of a delivery that did run finds its id seen).
                Err(err) if err.is_connection_dropped() || err.is_io_error() => {
                    command.query_async::<i64>(&mut writer).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, attempts).await {
            Ok(Ok(recorded)) => Ok(recorded == 1),
            Ok(Err(err)) => Err(StateError::Unavailable(describe(&err))),
            Err(_) => Err(StateError::Timeout(timeout.as_millis() as u64)),
        }
    }

    /// At once on the replica that wrote them (the reader counts them when they come round the stream).
    fn apply_locally(&self, changes: &[Change]) {
        for change in changes {
            self.revocations.apply(change);
        }
    }

    /// Reads the stream for as long as the process runs: connect, resynchronise,
    /// follow; on any error wait (doubling up to 2 s) and start over.
    async fn read_forever(self: Arc<Self>) {
        let mut wait = RETRY_FIRST;
        let mut failing = false;
        loop {
            match self.follow().await {
                Ok(()) => wait = RETRY_FIRST,
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %describe(&err), "cannot read revocations from Redis; retrying");
                    }
                    failing = true;
                    self.metrics.record_state_error();
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                    continue;
                }
            }
            if failing {
                tracing::info!("reading revocations from Redis again");
                failing = false;
            }
        }
    }

    /// One connection's life: resynchronise, then apply the stream until an
    /// error, or until the epoch shows Redis lost its data (`Ok`: resync at once).
    async fn follow(&self) -> Result<(), RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.command_timeout))
            .set_response_timeout(Some(Duration::from_millis(BLOCK_MS) + self.settings.command_timeout));
        let mut connection = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let mut last_id = self.resync(&mut connection).await?;
        let options = StreamReadOptions::default().block(BLOCK_MS as usize).count(1_000);
        loop {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg(&options)
                .arg("STREAMS")
                .arg(&self.keys.stream)
                .arg(&last_id)
                .query_async(&mut connection)
                .await?;
            for entry in reply.into_iter().flat_map(|reply| reply.keys).flat_map(|key| key.ids) {
                if let Some(change) = entry.get::<String>("change").and_then(|json| serde_json::from_str(&json).ok()) {
                    self.revocations.apply(&change);
                    self.metrics.record_revocation_applied(&change);
                }
                last_id = entry.id;
            }
            let epoch: Option<String> = redis::cmd("GET").arg(&self.keys.epoch).query_async(&mut connection).await?;
            if epoch.is_none() || epoch != *self.epoch.lock().expect("epoch lock poisoned") {
                tracing::warn!("Redis lost its data (restarted empty?): resynchronising revocations");
                return Ok(());
            }
            let now = self.clock.now();
            self.revocations.purge_expired(now);
            self.revocations.mark_synced(now);
        }
    }

    /// Reads the stream's last id, then the snapshot, and installs it. When
    /// Redis has lost its data since the last read, writes back what this
    /// replica knows first. Returns the id to follow the stream from.
    async fn resync(&self, connection: &mut MultiplexedConnection) -> Result<String, RedisError> {
        self.revocations.begin_replace();
        let known = self.epoch.lock().expect("epoch lock poisoned").clone();
        let mut epoch: Option<String> = redis::cmd("GET").arg(&self.keys.epoch).query_async(connection).await?;
        let lost = known.is_some() && epoch != known;
        if epoch.is_none() {
            let fresh = format!("{:016x}", rand::random::<u64>());
            let _: Option<String> =
                redis::cmd("SET").arg(&self.keys.epoch).arg(&fresh).arg("NX").query_async(connection).await?;
            epoch = redis::cmd("GET").arg(&self.keys.epoch).query_async(connection).await?;
        }
        let now = self.clock.now();
        if lost {
            let mine = self.revocations.as_changes(now);
            tracing::warn!(entries = mine.len(), "writing back the revocations this replica knows");
            if !mine.is_empty() {
                self.record(None, Duration::ZERO, &mine)
                    .await
                    .map_err(|err| RedisError::from(std::io::Error::other(err.to_string())))?;
            }
        }
        let newest: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.keys.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(connection)
            .await?;
        let last_id = newest.ids.first().map_or_else(|| "0-0".to_string(), |entry| entry.id.clone());
        let snapshot: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(&self.keys.snapshot).query_async(connection).await?;
        let (current, expired): (Vec<Field>, Vec<Field>) = snapshot
            .into_iter()
            .filter_map(|(field, json)| Some((field, serde_json::from_str::<Change>(&json).ok()?)))
            .partition(|(_, change)| change.expires().is_some_and(|expires| expires >= now));
        if !expired.is_empty() {
            let fields: Vec<&String> = expired.iter().map(|(field, _)| field).collect();
            let _: i64 = redis::cmd("HDEL").arg(&self.keys.snapshot).arg(fields).query_async(connection).await?;
        }
        let changes: Vec<Change> = current.into_iter().map(|(_, change)| change).collect();
        self.revocations.replace(&changes);
        *self.epoch.lock().expect("epoch lock poisoned") = epoch;
        self.revocations.mark_synced(now);
        tracing::info!(entries = changes.len(), "revocations read from Redis");
        Ok(last_id)
    }
}

/// A snapshot field and the change it holds.
type Field = (String, Change);

/// A Redis error without the URL (which may carry a password).
fn describe(err: &RedisError) -> String {
    let kind = format!("{:?}", err.kind());
    match err.detail() {
        Some(detail) => format!("{kind}: {detail}"),
        None if err.is_timeout() => "timed out".into(),
        None if err.is_connection_refusal() => "connection refused".into(),
        None if err.is_io_error() || err.is_connection_dropped() => "connection lost".into(),
        None => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: serde_json::Value) -> Result<RedisSettings, Vec<String>> {
        let config: RedisStateConfig = serde_json::from_value(yaml).unwrap();
        RedisSettings::compile(&config).map_err(|problems| problems.into_iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn settings_have_defaults_and_refuse_what_cannot_work() {
        let settings = compile(serde_json::json!({"redis": "redis://127.0.0.1:6379/0"})).unwrap();
        assert_eq!(settings.key_prefix, "{portcullis}:");
        assert_eq!(settings.command_timeout, Duration::from_secs(1));
        assert_eq!((settings.max_stale_seconds, settings.on_stale), (30, OnStale::Deny));
        assert!(compile(serde_json::json!({"redis": "rediss://:pw@cache.internal:6380"})).is_ok());
        let problems = compile(serde_json::json!({
            "redis": "http://user:s3cret@host", "key_prefix": "", "command_timeout_ms": 0, "max_stale_seconds": 0
        }))
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "redis: must be a redis://host:port/db or rediss:// URL",
                "key_prefix: must not be empty",
                "command_timeout_ms: must be between 1 and 60000",
                "max_stale_seconds: must be greater than 0"
            ]
        );
        assert!(!problems.concat().contains("s3cret"));
    }
}
