//! What `GET /info` says of each served model: where it runs, its limits, its manifest, derived
//! from the bundle and the configuration it is served with.

use serde::Serialize;
use utoipa::ToSchema;

use super::tei::TeiInfo;
use crate::bundle::{Bundle, ServedPrecision, EMBED_SPANS};
use crate::config::{Config, Scheduling};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Limits {
    /// The model's limit (manifest `max_seq_len`).
    pub max_seq_len: usize,
    /// Longest input accepted, in tokens: `max_seq_len`, or `--max-input-tokens` when lower.
    pub max_input_tokens: usize,
    /// Most tokens waiting for this model at once (`--max-queued-tokens`); 0 when unbounded.
    pub max_queued_tokens: usize,
    /// Inputs longer than this run on the long-input lane; null when this model has none.
    pub long_input_tokens: Option<usize>,
    /// Most chunk vectors per request (`--max-chunks`).
    pub max_chunks: usize,
    pub max_client_batch_size: usize,
    pub max_body_bytes: usize,
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
    pub max_queue_size: usize,
    /// 0 when there is no per-key limit.
    pub max_queued_tokens_per_key: usize,
    pub request_timeout_ms: u64,
}

/// One served model: its name, where it runs, and its limits.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelInfo {
    pub model: String,
    pub device: String,
    /// `float` (`model.pt`) or `int8` (the bundle's int8 copy), as `--precision` chose.
    pub precision: ServedPrecision,
    /// Inference workers of this model.
    pub workers: usize,
    /// `fair` or `fifo` (`--scheduling`).
    pub scheduling: &'static str,
    pub dimensions: usize,
    /// Classifier labels; null for a model without a head.
    pub labels: Option<Vec<String>>,
    /// Whether `/v1/embed` accepts `chunking` for this model (its bundle exports `embed_spans`).
    pub late_chunking: bool,
    pub limits: Limits,
    /// The bundle's manifest.json.
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
    /// text-embeddings-inference's fields for the model, so TEI clients read `/info` too.
    #[serde(flatten)]
    pub tei: TeiInfo,
}

/// The service: the default model's fields at the top level (as when one model was served),
/// aft-serve's version, and every served model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Info {
    #[serde(flatten)]
    pub default_model: ModelInfo,
    /// aft-serve's version.
    pub version: &'static str,
    /// Every served model, the default first.
    pub models: Vec<ModelInfo>,
}

impl ModelInfo {
    /// `/info`'s account of the model `name`, served from `bundle` (at its precision) under
    /// `config` on `device`.
    pub fn describe(
        name: &str,
        bundle: &Bundle,
        config: &Config,
        device: String,
    ) -> Result<Self, serde_json::Error> {
        let manifest = &bundle.manifest;
        let max_input_tokens = config.max_input_tokens(manifest.max_seq_len);
        Ok(Self {
            model: name.to_owned(),
            device,
            precision: bundle.precision(),
            workers: config.workers,
            scheduling: match config.scheduling {
                Scheduling::Fair => "fair",
                Scheduling::Fifo => "fifo",
            },
            dimensions: manifest.embedding_dim,
            labels: manifest.labels.clone(),
            late_chunking: manifest.has_method(EMBED_SPANS),
            limits: Limits {
                max_seq_len: manifest.max_seq_len,
                max_input_tokens,
                max_queued_tokens: config.max_queued_tokens,
                long_input_tokens: config.long_lane_threshold(max_input_tokens),
                max_chunks: config.max_chunks,
                max_client_batch_size: config.max_client_batch_size,
                max_body_bytes: config.max_body_bytes,
                max_batch_tokens: config.max_batch_tokens,
                max_batch_size: config.max_batch_size,
                max_queue_size: config.max_queue_size,
                max_queued_tokens_per_key: config.max_queued_tokens_per_key,
                request_timeout_ms: u64::try_from(config.request_timeout.as_millis())
                    .unwrap_or(u64::MAX),
            },
            manifest: serde_json::to_value(manifest)?,
            tei: TeiInfo::describe(name, manifest, bundle.model_file(), config),
        })
    }
}
