//! Route handlers: decode the request, call the service, shape the answer.

use axum::extract::State;
use axum::http::{header, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;

use super::error::{ApiError, ErrorBody, InferenceErrors};
use super::extract::ApiJson;
use super::info::Info;
use super::scheduling::CallerParts;
use super::state::AppState;
use super::types::*;
use crate::service::{EmbedOptions, Scores, ServiceError, Timing};

#[utoipa::path(
    post, path = "/v1/embed", tag = "inference",
    summary = "Sentence and document embeddings, with optional late chunking",
    description = "Each input runs whole, in one forward pass, up to the model's `max_input_tokens` \
                   (see `/info`; 65,536 for a long-context AFT-decay bundle). Inputs over \
                   `long_input_tokens` run on a lane of their own, so short requests are not held \
                   up behind them. With `chunking`, each input also gets one vector per chunk, \
                   pooled from the whole-document pass, with its character span.",
    request_body = EmbedRequest,
    responses(
        (status = 200, description = "One embedding per input, in input order; with `chunking`, also each input's chunks", body = EmbedResponse),
        (status = 400, description = "The body is not JSON, or `chunking` for a model whose bundle cannot pool chunks (`chunking_unsupported`)", body = ErrorBody),
        (status = 413, description = "More inputs than `max_client_batch_size`, a body over `max_body_bytes`, more tokens than `max_queued_tokens` (`too_many_tokens`), or more chunk vectors than `max_chunks` (`too_many_chunks`)", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape, or a value the schema or the model refuses (empty text, `dimensions` out of range, `chunking.tokens` < 1 or `chunking.overlap` >= `chunking.tokens`, an input over `max_input_tokens` with `truncate: false`)", body = ErrorBody),
        InferenceErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn embed(
    State(state): State<AppState>,
    caller: CallerParts,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<(Extension<Timing>, Json<EmbedResponse>), ApiError> {
    let service = &state.models.get(req.model.as_deref())?.service;
    let options = EmbedOptions {
        truncate: req.truncate,
        normalize: req.normalize,
        dimensions: req.dimensions,
        chunking: req.chunking.map(Into::into),
    };
    let caller = caller.with_body(req.priority);
    let out = service
        .embed(req.inputs.into_inputs(), options, caller)
        .await?;
    Ok((
        Extension(out.timing),
        Json(EmbedResponse {
            model: service.model_name.clone(),
            embeddings: out.vectors,
            chunks: out.chunks.map(|per_input| {
                per_input
                    .into_iter()
                    .map(|chunks| chunks.into_iter().map(Chunk::from).collect())
                    .collect()
            }),
            dimensions: out.dimensions,
            usage: out.usage.into(),
        }),
    ))
}

#[utoipa::path(
    post, path = "/v1/embeddings", tag = "openai",
    summary = "OpenAI-compatible embeddings",
    description = "Accepts OpenAI's request (`input` as text, texts, token ids or token-id lists) and \
                   answers in OpenAI's shape. Embeddings are normalised as the bundle's manifest says.",
    request_body = OpenAiEmbeddingsRequest,
    responses(
        (status = 200, body = OpenAiEmbeddingsResponse),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 413, description = "More inputs than `max_client_batch_size`, a body over `max_body_bytes`, or more tokens than `max_queued_tokens` (`too_many_tokens`)", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape, or a value the schema or the model refuses (empty text, token id outside the vocabulary, `dimensions` out of range, too long with `truncate: false`)", body = ErrorBody),
        InferenceErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn openai_embeddings(
    State(state): State<AppState>,
    caller: CallerParts,
    ApiJson(req): ApiJson<OpenAiEmbeddingsRequest>,
) -> Result<(Extension<Timing>, Json<OpenAiEmbeddingsResponse>), ApiError> {
    let service = &state.models.get(req.model.as_deref())?.service;
    let options = EmbedOptions {
        truncate: true,
        normalize: None,
        dimensions: req.dimensions,
        chunking: None,
    };
    let caller = caller.with_body(req.priority);
    let out = service.embed(req.input.0, options, caller).await?;
    let data = out
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| OpenAiEmbedding {
            object: "embedding",
            index,
            embedding: match req.encoding_format {
                EncodingFormat::Float => EmbeddingValue::Float(v),
                EncodingFormat::Base64 => EmbeddingValue::Base64(base64_f32(&v)),
            },
        })
        .collect();
    Ok((
        Extension(out.timing),
        Json(OpenAiEmbeddingsResponse {
            object: "list",
            data,
            model: service.model_name.clone(),
            usage: out.usage.into(),
        }),
    ))
}

/// OpenAI's base64 format: the float32 values' little-endian bytes.
fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[utoipa::path(
    post, path = "/v1/classify", tag = "inference",
    summary = "Topic classification",
    request_body = ClassifyRequest,
    responses(
        (status = 200, description = "Top-k labels per input with softmax scores, highest first", body = ClassifyResponse),
        (status = 400, description = "The body is not JSON, or the model has no classifier head", body = ErrorBody),
        (status = 413, description = "More inputs than `max_client_batch_size`, a body over `max_body_bytes`, or more tokens than `max_queued_tokens` (`too_many_tokens`)", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape, or a value the schema or the model refuses (empty text, token id outside the vocabulary, `dimensions` out of range, too long with `truncate: false`)", body = ErrorBody),
        InferenceErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn classify(
    State(state): State<AppState>,
    caller: CallerParts,
    ApiJson(req): ApiJson<ClassifyRequest>,
) -> Result<(Extension<Timing>, Json<ClassifyResponse>), ApiError> {
    let service = &state.models.get(req.model.as_deref())?.service;
    let caller = caller.with_body(req.priority);
    let out = service
        .classify(
            req.inputs.into_inputs(),
            req.top_k,
            Scores::Softmax,
            req.truncate,
            caller,
        )
        .await?;
    let results = out
        .results
        .into_iter()
        .map(|scores| {
            scores
                .into_iter()
                .map(|s| LabelScore {
                    label: s.label,
                    score: s.score,
                })
                .collect()
        })
        .collect();
    Ok((
        Extension(out.timing),
        Json(ClassifyResponse {
            model: service.model_name.clone(),
            results,
            usage: out.usage.into(),
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/models", tag = "openai",
    summary = "The served models, the default first (OpenAI list shape)",
    responses(
        (status = 200, body = ModelList),
        (status = 401, description = "Missing or invalid API key (when keys are configured)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn models(State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .models
        .iter()
        .map(|model| {
            let service = &model.service;
            let created = humantime::parse_rfc3339_weak(&service.bundle.manifest.created_at)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            ModelCard {
                id: service.model_name.clone(),
                object: "model",
                created,
                owned_by: "aft-serve",
                precision: service.bundle.precision(),
            }
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

#[utoipa::path(
    get, path = "/info", tag = "service",
    summary = "Models, limits, device and version",
    description = "The default model's fields at the top level, and every model in `models`.",
    responses(
        (status = 200, body = Info),
        (status = 401, description = "Missing or invalid API key (when keys are configured)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn info(State(state): State<AppState>) -> Json<Info> {
    Json(Info {
        default_model: state.models.default_model().info.clone(),
        version: env!("CARGO_PKG_VERSION"),
        models: state.models.infos(),
    })
}

#[utoipa::path(
    get, path = "/health/live", tag = "health", summary = "The process is up",
    responses((status = 200, body = Health))
)]
pub async fn live() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(
    get, path = "/health/ready", tag = "health",
    summary = "Ready to serve: every model loaded and warm, every worker alive",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "Not ready; the message says why", body = ErrorBody),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.stopping.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ServiceError::ShuttingDown.into());
    }
    state.models.readiness()?;
    Ok(Json(Health { status: "ready" }))
}

#[utoipa::path(
    get, path = "/health", tag = "health", summary = "Same as /health/ready",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody))
)]
pub async fn health(state: State<AppState>) -> Result<Json<Health>, ApiError> {
    ready(state).await
}

#[utoipa::path(
    get, path = "/metrics", tag = "service", summary = "Prometheus metrics (text format)",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 500, description = "The metrics could not be rendered", body = ErrorBody),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "service", summary = "This document",
    responses(
        (status = 200, description = "OpenAPI 3.1 document", body = serde_json::Value),
        (status = 401, description = "Missing or invalid API key (when keys are configured)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn openapi_json(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.openapi.as_ref().clone())
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

pub async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
