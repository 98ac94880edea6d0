//! Cross-cutting request handling: request ids, one tracing span per request, timing headers,
//! request metrics, the request timeout, and turning panics into the error shape.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tracing::Instrument;

use super::error::ApiError;
use super::route_table;
use super::state::AppState;
use crate::service::Timing;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const QUEUE_TIME: HeaderName = HeaderName::from_static("x-queue-time");
pub const INFERENCE_TIME: HeaderName = HeaderName::from_static("x-inference-time");
pub const TOTAL_TIME: HeaderName = HeaderName::from_static("x-total-time");

/// Route label for requests that matched no route, so raw paths never become label values.
const UNMATCHED: &str = "unmatched";

/// A client-sent id is echoed if it is short printable ASCII; otherwise a fresh one is made.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn millis(d: Duration) -> HeaderValue {
    let text = format!("{:.3}", d.as_secs_f64() * 1000.0);
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// Decrements the in-flight gauge however the request ends (including a dropped connection).
struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Outermost layer: id, span, headers, metrics.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED.to_owned());
    let id = request_id(&req);
    let span = tracing::info_span!("request", id = %id, method = %req.method(), route = %route);
    crate::telemetry::start_request(&span, req.headers(), req.method().as_str(), &route);
    let metrics = state.metrics.clone();
    metrics.requests_in_flight.inc();
    let _in_flight = InFlight(metrics.requests_in_flight.clone());

    let mut response = next.run(req).instrument(span.clone()).await;

    let elapsed = started.elapsed();
    let timing = response
        .extensions()
        .get::<Timing>()
        .copied()
        .unwrap_or_default();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    headers.insert(QUEUE_TIME, millis(timing.queue));
    headers.insert(INFERENCE_TIME, millis(timing.inference));
    headers.insert(TOTAL_TIME, millis(elapsed));

    let status = response.status();
    crate::telemetry::end_request(&span, status.as_u16());
    metrics
        .requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed.as_secs_f64());
    let total_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        // Probes and scrapes arrive every few seconds; keep them out of the info log.
        if route_table::is_quiet(&route) {
            tracing::debug!(status = status.as_u16(), total_ms, "request done");
        } else {
            tracing::info!(status = status.as_u16(), total_ms, "request done");
        }
    });
    response
}

/// Bodies larger than this are refused without reading them (the connection is then closed).
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Refuses a body whose declared length is over `--max-body-bytes` before any handler runs.
/// The body is read and discarded first (up to [`DRAIN_LIMIT`]), so that clients which write
/// the whole body before reading (hyper/reqwest among them) see the 413 rather than a reset
/// connection. Bodies without a length are bounded by `DefaultBodyLimit` in the extractor.
pub async fn body_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = state.max_body_bytes;
    match declared {
        Some(length) if length > limit as u64 => {
            if length <= DRAIN_LIMIT {
                let mut body = req.into_body();
                while let Some(Ok(_)) = body.frame().await {}
            }
            ApiError::PayloadTooLarge(format!(
                "the request body is {length} bytes, more than the limit of {limit}"
            ))
            .into_response()
        }
        _ => next.run(req).await,
    }
}

/// Bounds inference routes by `--request-timeout`; the dropped future withdraws queued work.
pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// For tower-http's `CatchPanicLayer`: a panic in a handler becomes a 500 with the error shape.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(%detail, "handler panicked");
    ApiError::Internal("the request handler failed unexpectedly".into()).into_response()
}
