//! The composition root: from a [`Config`], load and check everything the service needs (device,
//! metrics, API keys, and per model the bundle, tokenizer, backend factory, core and service),
//! then hand the finished objects to [`server::run`]. The one place that knows every layer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tch::Device;

use crate::backend::torch::{device_name, parse_device, TorchFactory};
use crate::bundle::Bundle;
use crate::config::Config;
use crate::core::{BatchLimits, Infer, InferConfig};
use crate::metrics::Metrics;
use crate::server::types::{Info, Limits};
use crate::server::{self, ApiKeys, ConnLimits, HttpConfig, ServedModel};
use crate::service::Service;
use crate::tokenize::{TextTokenizer, TokenizerPool};

/// aft-serve's version, as `/info` and the `aft_model_info` metric report it.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds everything from `config`, then serves until SIGTERM/SIGINT (see [`server::run`]).
/// Fails before listening if anything is invalid, and after it if the model cannot be loaded.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let device = parse_device(&config.device)?;
    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    let keys = ApiKeys::load(&config.api_keys, config.api_key_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    // The count only: keys never reach the logs.
    tracing::info!(
        api_keys = keys.len(),
        "API keys loaded (none: no authentication)"
    );
    let model = load_model(&ModelSpec::from(&config), &config, device, &metrics)?;
    server::run(model, metrics, keys, http_config(&config)).await
}

/// Which bundle to serve, and under which name.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub dir: PathBuf,
    /// The name the API reports; the manifest's name when `None`.
    pub name: Option<String>,
}

impl From<&Config> for ModelSpec {
    fn from(config: &Config) -> Self {
        Self {
            dir: config.model_dir.clone(),
            name: config.model_name.clone(),
        }
    }
}

/// Makes one model servable: verifies the bundle, loads its tokenizer, starts the core's workers
/// on `device` (they load and warm the model in the background; see [`Service::wait_ready`]), and
/// describes it for `/info` and the `aft_model_info` metric. `config` gives the batching, queue
/// and request limits.
pub fn load_model(
    spec: &ModelSpec,
    config: &Config,
    device: Device,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<ServedModel> {
    let bundle = Arc::new(Bundle::load(&spec.dir).context("invalid model bundle")?);
    let manifest = &bundle.manifest;
    let tokenizer = TextTokenizer::from_file(
        &bundle.tokenizer_path(),
        manifest.max_seq_len,
        manifest.vocab_size(),
    )
    .context("cannot load the tokenizer")?;
    let name = spec.name.clone().unwrap_or_else(|| manifest.name.clone());
    let device_label = device_name(device);
    metrics.set_model_info(&name, manifest.variant(), &device_label, VERSION);

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
        model = %name,
        dir = %bundle.dir.display(),
        device = %device_label,
        workers = config.workers,
        intra_op_threads = factory.intra_op_threads(),
        "bundle verified; loading the model"
    );
    let infer = Infer::start(
        Arc::new(factory),
        InferConfig {
            limits,
            max_wait: Duration::from_micros(config.max_wait_us),
            max_queue_size: config.max_queue_size,
            workers: config.workers,
        },
        metrics.clone(),
    );
    let info = Info {
        model: name.clone(),
        version: VERSION,
        device: device_label,
        workers: config.workers,
        dimensions: manifest.embedding_dim,
        labels: manifest.labels.clone(),
        limits: Limits {
            max_seq_len: manifest.max_seq_len,
            max_client_batch_size: config.max_client_batch_size,
            max_body_bytes: config.max_body_bytes,
            max_batch_tokens: config.max_batch_tokens,
            max_batch_size: config.max_batch_size,
            max_queue_size: config.max_queue_size,
            request_timeout_ms: u64::try_from(config.request_timeout.as_millis())
                .unwrap_or(u64::MAX),
        },
        manifest: serde_json::to_value(manifest).context("manifest")?,
    };
    let service = Service::new(
        name,
        bundle,
        TokenizerPool::new(tokenizer, config.tokenization_workers),
        Arc::new(infer),
        metrics.clone(),
        config.max_client_batch_size,
    );
    Ok(ServedModel { service, info })
}

fn http_config(config: &Config) -> HttpConfig {
    HttpConfig {
        addr: SocketAddr::new(config.host, config.port),
        request_timeout: config.request_timeout,
        max_body_bytes: config.max_body_bytes,
        shutdown_timeout: config.shutdown_timeout,
        cors_allow_origins: config.cors_allow_origins.clone(),
        connections: ConnLimits {
            header_read_timeout: config.header_read_timeout,
            keep_alive_timeout: config.keep_alive_timeout,
            max_connections: config.max_connections,
        },
    }
}
