//! Logging and trace export. Logs go to stderr (text or JSON, `RUST_LOG`
//! filters); tokens and secrets are never logged, denies carry a short token
//! fingerprint instead (`token::fingerprint`).
//!
//! Traces are off unless `telemetry.otlp_endpoint` or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector. Then the spans meant for
//! export (target [`trace::TARGET`]: one per Check, JWKS fetches, Supabase
//! mints) go to an OpenTelemetry batch processor that exports over OTLP/gRPC
//! from its own thread. A Check never waits for it: ended spans enter a
//! bounded queue, and when the queue is full they are dropped and counted
//! (`portcullis_tracing_spans_dropped_total`), as are spans whose export failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use crate::config::TelemetryConfig;
use crate::trace::{self, CheckTracing};

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    Json,
    #[default]
    Text,
}

/// Ended spans waiting for export; beyond this they are dropped and counted.
const SPAN_QUEUE: usize = 4096;
/// The longest one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where traces go and which, resolved from the config and the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub endpoint: String,
    /// `None`: the SDK reads `OTEL_SERVICE_NAME`, else `portcullis`.
    pub service_name: Option<String>,
    pub sample_ratio: f64,
    pub subject: bool,
}

impl TraceSettings {
    /// The config section wins over the environment; without an endpoint in
    /// either, tracing is off.
    pub fn resolve(config: Option<&TelemetryConfig>, env: impl Fn(&str) -> Option<String>) -> Option<TraceSettings> {
        let config = config.cloned().unwrap_or_default();
        let nonempty = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let endpoint = config
            .otlp_endpoint
            .or_else(|| nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            .or_else(|| nonempty("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
        let ratio_from_env = nonempty("OTEL_TRACES_SAMPLER_ARG")
            .and_then(|arg| arg.trim().parse::<f64>().ok())
            .filter(|ratio| (0.0..=1.0).contains(ratio));
        Some(TraceSettings {
            endpoint,
            service_name: config.service_name,
            sample_ratio: config.sample_ratio.or(ratio_from_env).unwrap_or(1.0),
            subject: config.subject,
        })
    }
}

/// The installed trace pipeline; [`Telemetry::shutdown`] exports what is queued.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// How Check spans are made, when tracing is on.
    pub tracing: Option<CheckTracing>,
}

impl Telemetry {
    /// Exports the spans still queued (bounded by the export timeout).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the global subscriber: logs, and with `traces` the OpenTelemetry
/// layer. `RUST_LOG` overrides the default `info` for logs. The exporter is
/// built here, so with `traces` this must run inside the tokio runtime.
pub fn init(format: LogFormat, traces: Option<(&TraceSettings, Counter)>) -> Telemetry {
    let (subscriber, telemetry) = subscriber(format, traces);
    let _ = subscriber.try_init();
    telemetry
}

/// The subscriber [`init`] installs, for a caller that installs it itself
/// (scoped, e.g. in a benchmark).
pub fn subscriber(
    format: LogFormat,
    traces: Option<(&TraceSettings, Counter)>,
) -> (impl tracing::Subscriber + Send + Sync + use<>, Telemetry) {
    let mut telemetry = Telemetry::default();
    let otel = traces.map(|(settings, dropped)| {
        let provider = provider(settings, dropped);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("portcullis"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // Only portcullis' own spans: never the transport's (the exporter's own
            // gRPC calls would trace themselves) and never log events, which may name paths.
            .with_filter(Targets::new().with_target(trace::TARGET, LevelFilter::INFO));
        telemetry.provider = Some(provider);
        telemetry.tracing = Some(CheckTracing { subject: settings.subject });
        layer
    });
    (tracing_subscriber::registry().with(log_layer(format)).with(otel), telemetry)
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

fn log_layer(format: LogFormat) -> BoxedLayer {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Export spans are for the collector, not the log.
    let filter = filter.add_directive(format!("{}=off", trace::TARGET).parse().expect("static directive"));
    // Colours only for a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Text => layer.fmt_fields(text_fields()).with_filter(filter).boxed(),
    }
}

/// Text-format fields as `name=value`, every text value quoted and escaped
/// (`reason="the token has expired" token="378e79c023c7"`) however it was
/// recorded, numbers and booleans bare: one rule a reader (or `grep`) can rely on.
fn text_fields() -> impl for<'writer> tracing_subscriber::fmt::FormatFields<'writer> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        match field.name() {
            "message" => write!(writer, "{text}"),
            name => write!(writer, "{name}={}", quoted(&text)),
        }
    })
    .delimited(" ")
}

/// `text` as a field value: already quoted (a recorded `&str`) or a bare number
/// or boolean as it is, anything else (a `%Display` value) quoted and escaped.
fn quoted(text: &str) -> std::borrow::Cow<'_, str> {
    let already = text.len() >= 2 && text.starts_with('"') && text.ends_with('"');
    let scalar = text == "true" || text == "false" || text.parse::<f64>().is_ok();
    match already || scalar {
        true => std::borrow::Cow::Borrowed(text),
        false => std::borrow::Cow::Owned(format!("{text:?}")),
    }
}

fn provider(settings: &TraceSettings, dropped: Counter) -> SdkTracerProvider {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT);
    if settings.endpoint.starts_with("https://") {
        exporter = exporter.with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
    }
    let queued = Arc::new(AtomicUsize::new(0));
    let processor = match exporter.build() {
        Ok(exporter) => {
            let exporter = CountingExporter { inner: exporter, queued: Arc::clone(&queued), dropped: dropped.clone() };
            let batches = BatchConfigBuilder::default()
                .with_max_queue_size(SPAN_QUEUE)
                .with_scheduled_delay(Duration::from_millis(500))
                .build();
            Some(BatchSpanProcessor::builder(exporter).with_batch_config(batches).build())
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot build the OTLP exporter: spans are dropped");
            None
        }
    };
    let resource = match &settings.service_name {
        Some(name) => Resource::builder().with_service_name(name.clone()).build(),
        None if std::env::var_os("OTEL_SERVICE_NAME").is_some() => Resource::builder().build(),
        None => Resource::builder().with_service_name("portcullis").build(),
    };
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
    SdkTracerProvider::builder()
        .with_span_processor(Bounded { inner: processor, queued, dropped })
        .with_resource(resource)
        .with_sampler(sampler)
        .build()
}

/// Keeps at most [`SPAN_QUEUE`] spans between end and export, dropping and
/// counting the rest, so the batch processor's own queue never silently overflows.
#[derive(Debug)]
struct Bounded<P> {
    inner: Option<P>,
    queued: Arc<AtomicUsize>,
    dropped: Counter,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        if let Some(inner) = &self.inner {
            inner.on_start(span, cx);
        }
    }

    fn on_end(&self, span: SpanData) {
        let Some(inner) = &self.inner else {
            self.dropped.inc();
            return;
        };
        if self.queued.fetch_add(1, Ordering::Relaxed) >= SPAN_QUEUE {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.dropped.inc();
            return;
        }
        inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.as_ref().map_or(Ok(()), SpanProcessor::force_flush)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.as_ref().map_or(Ok(()), |inner| inner.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = &mut self.inner {
            inner.set_resource(resource);
        }
    }
}

/// Frees queue room as batches leave, and counts the spans of failed exports as dropped.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    dropped: Counter,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(spans, Ordering::Relaxed);
        if result.is_err() {
            self.dropped.inc_by(spans as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_are_quoted_numbers_and_booleans_bare() {
        assert_eq!(quoted("the token has expired"), "\"the token has expired\"");
        assert_eq!(quoted("\"378e79c023c7\""), "\"378e79c023c7\"");
        assert_eq!(quoted("127.0.0.1:50051"), "\"127.0.0.1:50051\"");
        assert_eq!(quoted("a \"b\""), "\"a \\\"b\\\"\"");
        assert_eq!((quoted("42"), quoted("0.5"), quoted("true")), ("42".into(), "0.5".into(), "true".into()));
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
    }

    #[test]
    fn tracing_is_off_without_an_endpoint_and_the_config_wins_over_the_environment() {
        assert_eq!(TraceSettings::resolve(None, env(&[])), None);
        let section = TelemetryConfig { subject: true, ..Default::default() };
        assert_eq!(TraceSettings::resolve(Some(&section), env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), None);

        let from_env = TraceSettings::resolve(
            None,
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")]),
        )
        .unwrap();
        assert_eq!((from_env.endpoint.as_str(), from_env.sample_ratio), ("http://collector:4317", 0.25));

        let section = TelemetryConfig {
            otlp_endpoint: Some("http://mine:4317".into()),
            sample_ratio: Some(0.5),
            service_name: Some("edge-authz".into()),
            subject: true,
        };
        let both = TraceSettings::resolve(
            Some(&section),
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")]),
        )
        .unwrap();
        assert_eq!(both.endpoint, "http://mine:4317");
        assert_eq!(both.sample_ratio, 0.5);
        assert!(both.subject);
        let traces_endpoint = TraceSettings::resolve(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ]),
        )
        .unwrap();
        assert_eq!((traces_endpoint.endpoint.as_str(), traces_endpoint.sample_ratio), ("http://traces:4317", 1.0));
    }
}
