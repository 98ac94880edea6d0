//! Logging and tracing set-up: logs human-readable by default, JSON lines with `--log-format
//! json`; with `--otlp-endpoint`, OpenTelemetry traces exported over OTLP/HTTP (protobuf).
//!
//! A traced request is the `request` span of `server::middleware::observe` (continuing a W3C
//! `traceparent` sent by the caller), with children the service records once it knows their times:
//! `tokenize`, then per batch the input ran in `queue` (admission to the batch's start) and
//! `batch` (size, padded tokens, lane), whose child is `forward`. With traces off no exporter,
//! layer or propagator is installed and [`current`] answers `None` from one load, so the request
//! path does no tracing work.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::LogFormat;

pub use opentelemetry::KeyValue;

/// The tracer, set once when traces are on.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// What must outlive the server: the exporter, flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (blocking; call it off the async runtime's threads).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                eprintln!("aft-serve: flushing traces: {err}");
            }
        }
    }
}

/// Installs the log subscriber, and the trace exporter when `otlp_endpoint` is given (a
/// collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318`; `/v1/traces` is added
/// unless present). The `OTEL_*` variables of the OTLP exporter (headers, timeout, batching)
/// apply; `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the service (`aft-serve` by
/// default).
pub fn init(
    format: LogFormat,
    filter: &str,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid --log-level {filter:?}: {e}"))?;
    // Colour only for a terminal: escape codes would garble files and log collectors.
    let ansi = std::io::stdout().is_terminal();
    let logs = match format {
        LogFormat::Human => fmt::layer()
            .with_target(true)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_target(true)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
    };
    let provider = otlp_endpoint.map(exporter).transpose()?;
    let traces = provider.as_ref().map(|provider| {
        let tracer = provider.tracer("aft-serve");
        // Set once per process; a second init (tests) keeps the first tracer.
        let _ = TRACER.set(tracer.clone());
        // The request spans and their events: aft-serve's own, whatever `--log-level` says.
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target("aft_serve", LevelFilter::INFO))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|e| anyhow::anyhow!("could not install the log subscriber: {e}"))?;
    if let Some(endpoint) = otlp_endpoint {
        tracing::info!(endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

fn exporter(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let endpoint = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint: {e}"))?;
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named {
        resource = resource.with_service_name("aft-serve");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Whether traces are exported.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` (a request's) continue the caller's trace when the request carries a W3C
/// `traceparent`, and marks it as a server span of `method` `route`; nothing with traces off.
pub fn start_request(span: &tracing::Span, headers: &HeaderMap, method: &str, route: &str) {
    if !enabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span.set_attribute("http.request.method", method.to_owned());
    span.set_attribute("http.route", route.to_owned());
}

/// Records the answer's status on a request's span; nothing with traces off.
pub fn end_request(span: &tracing::Span, status: u16) {
    if enabled() {
        span.set_attribute("http.response.status_code", i64::from(status));
    }
}

/// A place in a trace to record finished spans under: the current request's span, or a span
/// recorded under it.
pub struct Trace {
    tracer: &'static SdkTracer,
    cx: Context,
}

/// The current span's trace, to record children under; `None` when traces are off.
pub fn current() -> Option<Trace> {
    let tracer = TRACER.get()?;
    Some(Trace {
        tracer,
        cx: tracing::Span::current().context(),
    })
}

/// `t` on the wall clock (spans carry wall-clock times; the service measures with `Instant`).
fn wall(t: Instant) -> SystemTime {
    let now = Instant::now();
    match now.checked_duration_since(t) {
        Some(ago) => SystemTime::now() - ago,
        None => SystemTime::now() + t.duration_since(now),
    }
}

impl Trace {
    /// Records a finished child span `name` that ran from `start` to `end`, and returns it as a
    /// place for children of its own.
    pub fn child(
        &self,
        name: &'static str,
        start: Instant,
        end: Instant,
        attributes: Vec<KeyValue>,
    ) -> Trace {
        let mut span = self
            .tracer
            .span_builder(name)
            .with_start_time(wall(start))
            .with_attributes(attributes)
            .start_with_context(self.tracer, &self.cx);
        let cx = self
            .cx
            .with_remote_span_context(span.span_context().clone());
        span.end_with_timestamp(wall(end));
        Trace {
            tracer: self.tracer,
            cx,
        }
    }
}
