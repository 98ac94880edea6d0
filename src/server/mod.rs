//! The HTTP server: the routes and their layers over finished objects (the [`ServedModels`], the
//! metrics, the API keys), listening, and graceful shutdown. It loads and builds nothing it
//! serves; [`crate::app`] does, and it never sees a backend.

mod auth;
mod conn;
pub mod error;
mod extract;
mod info;
mod input;
mod middleware;
mod models;
mod openapi;
mod route_table;
mod routes;
mod scheduling;
mod serve;
mod types;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::ApiKeys;
pub use conn::ConnLimits;
pub use error::ApiError;
pub use info::ModelInfo;
pub use models::{ModelsError, ServedModels};
pub use route_table::{Route, Verb, ROUTES};
pub use serve::run;

use crate::metrics::Metrics;
use crate::service::Service;

/// One model as the API serves it: the service that answers for it, and its part of `/info`.
pub struct ServedModel {
    pub service: Service,
    pub info: ModelInfo,
}

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
struct AppState {
    models: Arc<ServedModels>,
    metrics: Arc<Metrics>,
    keys: Arc<ApiKeys>,
    /// `/openapi.json`, bounds filled in.
    openapi: Arc<serde_json::Value>,
    docs_html: Arc<String>,
    request_timeout: Duration,
    max_body_bytes: usize,
    /// Set once shutdown starts, so readiness fails while in-flight work drains.
    stopping: Arc<AtomicBool>,
}

impl AppState {
    fn new(
        models: ServedModels,
        metrics: Arc<Metrics>,
        keys: ApiKeys,
        http: &HttpConfig,
    ) -> anyhow::Result<Self> {
        let doc = openapi::document();
        let docs_html = openapi::render_docs(&doc);
        // One document for all models: each bound is the loosest of any served model (a request
        // within it may still be refused by the model it names, with the documented 422).
        let services = || models.iter().map(|m| &m.service);
        let bounds = openapi::Bounds {
            max_inputs: models.default_model().info.limits.max_client_batch_size,
            dimensions: services().map(|s| s.embedding_dim()).max().unwrap_or(0),
            vocab_size: services().map(|s| s.vocab_size()).max().unwrap_or(0),
            models: services().map(|s| s.model_name.clone()).collect(),
            late_chunking: services().any(Service::supports_chunking),
        };
        let openapi = openapi::bounded(&doc, &bounds).map_err(anyhow::Error::msg)?;
        Ok(Self {
            models: Arc::new(models),
            metrics,
            keys: Arc::new(keys),
            openapi: Arc::new(openapi),
            docs_html: Arc::new(docs_html),
            request_timeout: http.request_timeout,
            max_body_bytes: http.max_body_bytes,
            stopping: Arc::new(AtomicBool::new(false)),
        })
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                middleware::REQUEST_ID,
                scheduling::PRIORITY,
            ])
            .expose_headers([
                middleware::REQUEST_ID,
                middleware::QUEUE_TIME,
                middleware::INFERENCE_TIME,
                middleware::TOTAL_TIME,
                HeaderName::from_static("retry-after"),
            ]),
    )
}

/// Every route of [`ROUTES`], with its layers.
fn router(state: AppState, http: &HttpConfig) -> Router {
    let mut app = Router::new();
    for route in ROUTES {
        let mut endpoint = route.method_router();
        // `layer`, not `route_layer`: a wrong method on a guarded path is refused (401) before
        // it is told the method is not allowed, as for any other request without a key.
        if route.timed {
            endpoint = endpoint.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                middleware::timeout,
            ));
        }
        if !route.open {
            endpoint = endpoint.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require_api_key,
            ));
        }
        app = app.route(route.path, endpoint);
    }
    let mut app = app
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::body_limit,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ));
    if let Some(cors) = cors(&http.cors_allow_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}
