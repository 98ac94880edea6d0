//! The HTTP server: state, router, start-up and graceful shutdown.

mod auth;
mod extract;
mod middleware;
pub mod openapi;
mod routes;
mod scheduling;
pub mod types;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::ApiKeys;

use crate::backend::torch::{device_name, parse_device, TorchFactory};
use crate::bundle::Bundle;
use crate::config::{Config, Scheduling};
use crate::core::{BatchLimits, Infer, InferConfig};
use crate::metrics::Metrics;
use crate::service::Service;
use crate::tokenize::{TextTokenizer, TokenizerPool};
use types::{Info, Limits};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub metrics: Arc<Metrics>,
    pub keys: Arc<ApiKeys>,
    pub info: Arc<Info>,
    pub openapi: Arc<utoipa::openapi::OpenApi>,
    pub docs_html: Arc<String>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Set once shutdown starts, so readiness fails while in-flight work drains.
    pub stopping: Arc<AtomicBool>,
}

impl AppState {
    /// Loads and checks the bundle, the tokenizer and the device, and starts the workers (which
    /// load and warm the model in the background; see [`Infer::wait_ready`]).
    pub fn build(config: &Config) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let bundle = Arc::new(Bundle::load(&config.model_dir).context("invalid model bundle")?);
        let manifest = &bundle.manifest;
        let device = parse_device(&config.device)?;
        let tokenizer = TextTokenizer::from_file(
            &bundle.tokenizer_path(),
            manifest.max_seq_len,
            manifest.vocab_size(),
        )
        .context("cannot load the tokenizer")?;
        let keys = ApiKeys::load(&config.api_keys, config.api_key_file.as_deref())
            .map_err(anyhow::Error::msg)?;
        let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
        let model_name = config
            .model_name
            .clone()
            .unwrap_or_else(|| manifest.name.clone());
        let version = env!("CARGO_PKG_VERSION");
        metrics.set_model_info(
            &model_name,
            manifest.variant(),
            &device_name(device),
            version,
        );

        let limits = BatchLimits {
            max_batch_tokens: config.max_batch_tokens,
            max_batch_size: config.max_batch_size,
        };
        let factory = TorchFactory::new(
            bundle.clone(),
            device,
            config.workers,
            config.intra_op_threads,
            limits,
        );
        tracing::info!(
            model = %model_name,
            dir = %bundle.dir.display(),
            device = %device_name(device),
            workers = config.workers,
            intra_op_threads = factory.intra_op_threads(),
            api_keys = keys.len(),
            scheduling = ?config.scheduling,
            "bundle verified; loading the model"
        );
        if config.max_queued_tokens_per_key > 0 && !keys.enabled() {
            tracing::warn!("--max-queued-tokens-per-key has no effect without API keys");
        }
        let infer = Arc::new(Infer::start(
            Arc::new(factory),
            InferConfig {
                limits,
                max_wait: Duration::from_micros(config.max_wait_us),
                max_queue_size: config.max_queue_size,
                max_queued_tokens_per_key: config.max_queued_tokens_per_key,
                policy: config.scheduling.into(),
                workers: config.workers,
            },
            metrics.clone(),
        ));
        let info = Info {
            model: model_name.clone(),
            version,
            device: device_name(device),
            workers: config.workers,
            scheduling: match config.scheduling {
                Scheduling::Fair => "fair",
                Scheduling::Fifo => "fifo",
            },
            dimensions: manifest.embedding_dim,
            labels: manifest.labels.clone(),
            limits: Limits {
                max_seq_len: manifest.max_seq_len,
                max_client_batch_size: config.max_client_batch_size,
                max_body_bytes: config.max_body_bytes,
                max_batch_tokens: config.max_batch_tokens,
                max_batch_size: config.max_batch_size,
                max_queue_size: config.max_queue_size,
                max_queued_tokens_per_key: config.max_queued_tokens_per_key,
                request_timeout_ms: u64::try_from(config.request_timeout.as_millis())
                    .unwrap_or(u64::MAX),
            },
            manifest: serde_json::to_value(manifest).context("manifest")?,
        };
        let tokenizers = TokenizerPool::new(tokenizer, config.tokenization_workers);
        let service = Service::new(
            model_name,
            bundle.clone(),
            tokenizers,
            infer,
            metrics.clone(),
            config.max_client_batch_size,
        );
        let openapi = openapi::document();
        let docs_html = openapi::render_docs(&openapi);
        Ok(Self {
            service: Arc::new(service),
            metrics,
            keys: Arc::new(keys),
            info: Arc::new(info),
            openapi: Arc::new(openapi),
            docs_html: Arc::new(docs_html),
            request_timeout: config.request_timeout,
            max_body_bytes: config.max_body_bytes,
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

/// Every route, with its layers.
pub fn router(state: AppState, config: &Config) -> Router {
    let inference = Router::new()
        .route("/v1/embed", post(routes::embed))
        .route("/v1/embeddings", post(routes::openai_embeddings))
        .route("/v1/classify", post(routes::classify))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::timeout,
        ));
    let protected = inference
        .route("/v1/models", get(routes::models))
        .route("/info", get(routes::info))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs_page))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let open = Router::new()
        .route("/health", get(routes::health))
        .route("/health/live", get(routes::live))
        .route("/health/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics));
    let mut app = protected
        .merge(open)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::body_limit,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ));
    if let Some(cors) = cors(&config.cors_allow_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Serves until SIGTERM/SIGINT, then stops accepting, finishes queued and in-flight requests
/// within `--shutdown-timeout`, and returns. Fails if the model cannot be loaded.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let state = AppState::build(&config)?;
    let app = router(state.clone(), &config);
    let listener = TcpListener::bind((config.host, config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    let addr = listener.local_addr().context("listener address")?;
    // Tests and scripts parse this line for the port (with --port 0).
    tracing::info!("listening on {addr}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let startup_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    {
        let infer = state.service.infer().clone();
        let stop_tx = stop_tx.clone();
        let startup_error = startup_error.clone();
        tokio::spawn(async move {
            match infer.wait_ready().await {
                Ok(()) => tracing::info!("ready"),
                Err(err) => {
                    tracing::error!(error = %err, "the model could not be loaded");
                    if let Ok(mut slot) = startup_error.lock() {
                        *slot = Some(err.to_string());
                    }
                    let _ = stop_tx.send(true);
                }
            }
        });
    }
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            termination_signal().await;
            let _ = stop_tx.send(true);
        });
    }

    let server = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
    let mut server = tokio::spawn(async move { server.await });
    tokio::select! {
        // A stop request wins over the server finishing (which graceful shutdown makes it do).
        biased;
        _ = stopped(stop_rx) => {}
        result = &mut server => {
            result.context("server task")?.context("server")?;
            anyhow::bail!("the server stopped without being asked to");
        }
    }

    state.stopping.store(true, Ordering::Release);
    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: no new connections; finishing accepted requests");
    let infer = state.service.infer().clone();
    let drain = async move {
        let served = server.await;
        infer.shutdown().await;
        served
    };
    match tokio::time::timeout(config.shutdown_timeout, drain).await {
        Ok(Ok(Ok(()))) => tracing::info!("shut down cleanly"),
        Ok(Ok(Err(err))) => tracing::error!(error = %err, "server error while shutting down"),
        Ok(Err(err)) => tracing::error!(error = %err, "server task failed while shutting down"),
        Err(_) => tracing::warn!("shutdown timeout reached; abandoning the requests still running"),
    }
    let startup_error = startup_error.lock().ok().and_then(|mut e| e.take());
    match startup_error {
        Some(err) => Err(anyhow::anyhow!("the model could not be loaded: {err}")),
        None => Ok(()),
    }
}
