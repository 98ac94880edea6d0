//! What the server holds while it runs: how it listens ([`HttpConfig`]) and what every handler
//! and layer can reach ([`AppState`]), built once from finished objects.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::auth::ApiKeys;
use super::conn::ConnLimits;
use super::models::ServedModels;
use crate::metrics::Metrics;

/// How the server listens and bounds each request.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// End-to-end limit of an inference request (504 past it).
    pub request_timeout: Duration,
    /// Largest request body (413 past it).
    pub max_body_bytes: usize,
    /// Time allowed after SIGTERM/SIGINT to finish accepted work.
    pub shutdown_timeout: Duration,
    /// Origins allowed by CORS; none disables CORS.
    pub cors_allow_origins: Vec<String>,
    /// Header-read and keep-alive timeouts, and the connection cap.
    pub connections: ConnLimits,
}

/// What every handler can reach.
#[derive(Clone)]
pub(super) struct AppState {
    pub(super) models: Arc<ServedModels>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) keys: Arc<ApiKeys>,
    /// `/openapi.json`, bounds filled in.
    pub(super) openapi: Arc<serde_json::Value>,
    pub(super) request_timeout: Duration,
    pub(super) max_body_bytes: usize,
    /// Set once shutdown starts, so readiness fails while in-flight work drains.
    pub(super) stopping: Arc<AtomicBool>,
}

impl AppState {
    /// The state over finished objects; `openapi` is the document served at `/openapi.json`
    /// ([`super::openapi::served`]).
    pub(super) fn new(
        models: ServedModels,
        metrics: Arc<Metrics>,
        keys: ApiKeys,
        http: &HttpConfig,
        openapi: serde_json::Value,
    ) -> Self {
        Self {
            models: Arc::new(models),
            metrics,
            keys: Arc::new(keys),
            openapi: Arc::new(openapi),
            request_timeout: http.request_timeout,
            max_body_bytes: http.max_body_bytes,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }
}
