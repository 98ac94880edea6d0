//! Serving: listen, watch the model come up, and shut down gracefully on SIGTERM/SIGINT.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::auth::ApiKeys;
use super::models::ServedModels;
use super::router::router;
use super::state::{AppState, HttpConfig};
use super::{conn, openapi};
use crate::metrics::Metrics;

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

/// Waits until every model is ready. They load side by side, and the first one that fails
/// ends the wait with its error, naming the model.
async fn wait_all_ready(models: Arc<ServedModels>) -> Result<(), String> {
    let mut waits = tokio::task::JoinSet::new();
    for index in 0..models.iter().count() {
        let models = models.clone();
        waits.spawn(async move {
            let Some(model) = models.iter().nth(index) else {
                return Ok(());
            };
            model
                .service
                .wait_ready()
                .await
                .map_err(|err| format!("model {:?}: {err}", model.service.model_name))
        });
    }
    while let Some(done) = waits.join_next().await {
        done.map_err(|err| format!("readiness task: {err}"))??;
    }
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Serves `models` until SIGTERM/SIGINT, then stops accepting, finishes queued and in-flight
/// requests within `http.shutdown_timeout`, and returns. Fails if a model cannot be loaded.
pub async fn run(
    models: ServedModels,
    metrics: Arc<Metrics>,
    keys: ApiKeys,
    http: HttpConfig,
) -> anyhow::Result<()> {
    let openapi_json = openapi::served(&models).map_err(anyhow::Error::msg)?;
    let state = AppState::new(models, metrics, keys, &http, openapi_json);
    let app = router(state.clone(), &http);
    let listener = TcpListener::bind(http.addr)
        .await
        .with_context(|| format!("cannot listen on {}", http.addr))?;
    let addr = listener.local_addr().context("listener address")?;
    // Tests and scripts parse this line for the port (with --port 0).
    tracing::info!("listening on {addr}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let startup_error: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let models = state.models.clone();
        let stop_tx = stop_tx.clone();
        let startup_error = startup_error.clone();
        tokio::spawn(async move {
            match wait_all_ready(models.clone()).await {
                Ok(()) => tracing::info!(models = models.iter().count(), "ready"),
                Err(err) => {
                    tracing::error!(error = %err, "a model could not be loaded");
                    if let Ok(mut slot) = startup_error.lock() {
                        *slot = Some(err);
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

    let server = conn::serve(listener, app, http.connections, stop_rx.clone());
    let mut server = tokio::spawn(server);
    tokio::select! {
        // A stop request wins over the server finishing (which a stop makes it do).
        biased;
        _ = stopped(stop_rx) => {}
        result = &mut server => {
            result.context("server task")?;
            anyhow::bail!("the server stopped without being asked to");
        }
    }

    state.stopping.store(true, Ordering::Release);
    tracing::info!(timeout = ?http.shutdown_timeout, "shutting down: no new connections; finishing accepted requests");
    let models = state.models.clone();
    let drain = async move {
        let served = server.await;
        // The server has answered every request; now stop each model's workers.
        for model in models.iter() {
            model.service.shutdown().await;
        }
        served
    };
    match tokio::time::timeout(http.shutdown_timeout, drain).await {
        Ok(Ok(())) => tracing::info!("shut down cleanly"),
        Ok(Err(err)) => tracing::error!(error = %err, "server task failed while shutting down"),
        Err(_) => tracing::warn!("shutdown timeout reached; abandoning the requests still running"),
    }
    let startup_error = startup_error.lock().ok().and_then(|mut e| e.take());
    match startup_error {
        Some(err) => Err(anyhow::anyhow!("a model could not be loaded: {err}")),
        None => Ok(()),
    }
}
