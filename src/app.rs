//! The composition root: from a [`Config`], load and check everything the service needs (device,
//! metrics, API keys, and per model the bundle, tokenizer, backend factory, core and service),
//! then hand the finished objects to [`server::run`]. The one place that knows every layer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tch::Device;

use crate::backend::threads::CpuSharers;
use crate::backend::torch::{batch_warm_up, device_name, parse_device, TorchFactory};
use crate::bundle::Bundle;
use crate::config::{Config, ModelDir, Precision};
use crate::core::{BatchLimits, Infer, InferConfig, LongLane};
use crate::memory;
use crate::metrics::Metrics;
use crate::server::{
    self, ApiKeys, ConnLimits, HttpConfig, ModelInfo, ModelsError, ServedModel, ServedModels,
};
use crate::service::{RequestLimits, Service};
use crate::tokenize::{TextTokenizer, TokenizerPool};

/// aft-serve's version, as `/info` and the `aft_model_info` metric report it.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds everything from `config`, then serves until SIGTERM/SIGINT (see [`server::run`]).
/// Fails before listening if anything is invalid (a bundle, or two models with one name), and
/// after it if a model cannot be loaded.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let device = parse_device(&config.device)?;
    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    let keys = ApiKeys::load(&config.api_keys, config.api_key_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    // The count only: keys never reach the logs.
    let auth = if keys.enabled() { "required" } else { "off" };
    tracing::info!(api_keys = keys.len(), "authentication {auth}");
    if config.max_queued_tokens_per_key > 0 && !keys.enabled() {
        tracing::warn!("--max-queued-tokens-per-key has no effect without API keys");
    }
    let bundles = verify_bundles(&config.models(), config.precision, device)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_sharers = CpuSharers::count(&config, &bundles, cpus);
    let models = bundles
        .into_iter()
        .map(|(name, bundle)| load_model(name, bundle, &config, &cpu_sharers, device, &metrics))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let models = ServedModels::new(models)?;
    memory::spawn(config.memory_release_interval)
        .context("cannot start the memory release thread")?;
    server::run(models, metrics, keys, http_config(&config)).await
}

/// Verifies every bundle, names it (the given name, else the manifest's) and chooses the model
/// file it is served from (`--precision` on `device`: [`Bundle::with_precision`]), before any
/// model starts: a bad bundle, a precision it cannot be served at, or a name given twice is a
/// start-up error.
pub fn verify_bundles(
    models: &[ModelDir],
    precision: Precision,
    device: Device,
) -> anyhow::Result<Vec<(String, Arc<Bundle>)>> {
    let mut out: Vec<(String, Arc<Bundle>)> = Vec::with_capacity(models.len());
    for model in models {
        let bundle = Bundle::load(&model.dir)
            .with_context(|| format!("invalid model bundle {}", model.dir.display()))?
            .with_precision(precision, device)?;
        let name = model
            .name
            .clone()
            .unwrap_or_else(|| bundle.manifest.name.clone());
        if out.iter().any(|(n, _)| *n == name) {
            return Err(ModelsError::DuplicateName(name).into());
        }
        out.push((name, Arc::new(bundle)));
    }
    if out.is_empty() {
        return Err(ModelsError::Empty.into());
    }
    Ok(out)
}

/// Makes one model servable under `name`: loads the bundle's tokenizer, starts the model's own
/// core (queue, batcher, workers, and a long-input lane when its inputs may be long) on `device` (the workers load and warm the model in the
/// background; see [`Service::wait_ready`]), and describes it for `/info` and the
/// `aft_model_info` metric. `config` gives the batching, queue and request limits;
/// `cpu_sharers` says how the CPUs are shared between the workers of all models.
pub fn load_model(
    name: String,
    bundle: Arc<Bundle>,
    config: &Config,
    cpu_sharers: &CpuSharers,
    device: Device,
    metrics: &Metrics,
) -> anyhow::Result<ServedModel> {
    let manifest = &bundle.manifest;
    let max_input = config.max_input_tokens(manifest.max_seq_len);
    let tokenizer = TextTokenizer::from_bundle_limited(&bundle, max_input)
        .with_context(|| format!("model {name:?}: cannot load the tokenizer"))?;
    let device_label = device_name(device);
    metrics.set_model_info(&name, manifest.variant(), &device_label, VERSION);

    let limits = BatchLimits {
        max_batch_tokens: config.max_batch_tokens,
        max_batch_size: config.max_batch_size,
    };
    let long_above = config.long_lane_threshold(max_input);
    // With a long lane, the short lane's inputs are at most its threshold.
    let short_max = long_above.unwrap_or(max_input);
    let (short_threads, long_threads) = cpu_sharers.lane_threads(config.intra_op_threads);
    let factory = TorchFactory::new(
        bundle.clone(),
        device,
        short_threads,
        batch_warm_up(short_max, limits),
    );
    let long_lane = long_above.map(|above| LongLane {
        above_tokens: above,
        workers: config.long_workers,
        // Warmed at twice the threshold (not at the model's limit: a 65,536-token warm-up would
        // cost a start-up pass for little), enough for the executor's first optimising runs.
        factory: Arc::new(TorchFactory::new(
            bundle.clone(),
            device,
            long_threads.clone(),
            (1, above.saturating_mul(2).min(max_input)),
        )),
    });
    let model_metrics = Arc::new(metrics.model(&name));
    tracing::info!(
        model = %name,
        dir = %bundle.dir.display(),
        device = %device_label,
        precision = %bundle.precision(),
        precision_requested = ?config.precision,
        model_file = bundle.model_file(),
        workers = config.workers,
        long_lane_above = ?long_above,
        max_input_tokens = max_input,
        intra_op_threads = factory.threads().threads,
        long_lane_threads = long_threads.threads,
        long_lane_threads_beside_short = long_threads.beside_short,
        scheduling = ?config.scheduling,
        "bundle verified; loading the model"
    );
    let infer = Infer::start_lanes(
        Arc::new(factory),
        InferConfig {
            limits,
            max_wait: Duration::from_micros(config.max_wait_us),
            max_queue_size: config.max_queue_size,
            max_queued_tokens_per_key: config.max_queued_tokens_per_key,
            max_queued_tokens: config.max_queued_tokens,
            policy: config.scheduling.into(),
            workers: config.workers,
        },
        long_lane,
        model_metrics.clone(),
    );
    let info = ModelInfo::describe(&name, &bundle, config, device_label)
        .with_context(|| format!("model {name:?}: cannot describe the manifest"))?;
    let service = Service::new(
        name,
        bundle,
        TokenizerPool::new(tokenizer, config.tokenization_workers),
        Arc::new(infer),
        model_metrics,
        RequestLimits {
            max_client_batch_size: config.max_client_batch_size,
            max_chunks: config.max_chunks,
        },
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
