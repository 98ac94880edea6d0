//! text-embeddings-inference (TEI) compatibility: TEI's routes (`/embed`, `/embed_all`,
//! `/predict`, `/tokenize`, `/decode` and the compat `/`) with TEI's request and response shapes,
//! TEI's fields in `/info`, and TEI's error shape on these routes ([`error_shape`]). Everything is
//! served by the same [`crate::service::Service`] as the native routes, so model routing, keys,
//! limits, fair scheduling and metrics apply alike; aft-serve's own additions (`model`,
//! `priority`, `dimensions`) are optional fields TEI clients never send. The routes are here, the
//! wire types (requests, responses, `/info` fields, their lenient readers) in [`types`].

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::{Extension, Json};

use super::error::{ApiError, TeiErrorBody};
use super::extract::ApiJson;
use super::route_table;
use super::scheduling::CallerParts;
use super::state::AppState;
use crate::service::{EmbedOptions, Scores, ServiceError, Timing};

mod types;

pub use types::*;

/// Re-renders an error answered on a TEI route (by the handler, the key check, the timeout, the
/// body limit or a panic: every [`ApiError`] response carries its error) in TEI's shape,
/// `{"error", "error_type"}`, keeping its status and headers. Other routes pass untouched.
pub async fn error_shape(req: Request, next: Next) -> Response {
    let tei = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| route_table::is_tei(p.as_str()));
    let response = next.run(req).await;
    if !tei {
        return response;
    }
    let Some(body) = response
        .extensions()
        .get::<ApiError>()
        .map(ApiError::tei_body)
    else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    let bytes = serde_json::to_vec(&body)
        .unwrap_or_else(|_| br#"{"error":"","error_type":"Backend"}"#.to_vec());
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

#[utoipa::path(
    post, path = "/embed", tag = "tei", operation_id = "tei_embed",
    summary = "TEI: embeddings",
    description = "text-embeddings-inference's `/embed`: a list of vectors, one per input. Inputs are \
                   texts or token-id lists; each runs whole, up to `max_input_length` tokens.",
    request_body = TeiEmbedRequest,
    responses(
        (status = 200, body = TeiEmbedResponse),
        (status = 400, description = "The body is not JSON", body = TeiErrorBody),
        (status = 413, description = "More inputs than `max_client_batch_size`, a body over `max_body_bytes`, or more tokens than `max_queued_tokens`", body = TeiErrorBody),
        (status = 422, description = "JSON of the wrong shape, or a value the model refuses (empty text, `dimensions` out of range, too long with `truncate: false`, `prompt_name`, `truncation_direction: Left`)", body = TeiErrorBody),
        TeiErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn embed(
    State(state): State<AppState>,
    caller: CallerParts,
    ApiJson(req): ApiJson<TeiEmbedRequest>,
) -> Result<(Extension<Timing>, Json<TeiEmbedResponse>), ApiError> {
    embed_with(&state, caller, req).await
}

async fn embed_with(
    state: &AppState,
    caller: CallerParts,
    req: TeiEmbedRequest,
) -> Result<(Extension<Timing>, Json<TeiEmbedResponse>), ApiError> {
    let service = &state.models.get(req.model.as_deref())?.service;
    let options = EmbedOptions {
        truncate: truncation(
            req.truncate,
            req.truncation_direction,
            req.prompt_name.as_deref(),
        )?,
        normalize: Some(req.normalize),
        dimensions: req.dimensions,
        chunking: None,
    };
    let out = service
        .embed(req.inputs.0, options, caller.with_body(req.priority))
        .await?;
    Ok((Extension(out.timing), Json(TeiEmbedResponse(out.vectors))))
}

#[utoipa::path(
    post, path = "/", tag = "tei", operation_id = "tei_compat",
    summary = "TEI: the compat route, answered by the model's kind",
    description = "text-embeddings-inference answers `POST /` as the route of its model's kind. Every \
                   aft bundle is an embedding model in TEI's terms (`model_type` in `/info`; a \
                   classifier head is served by `/predict`), so `/` is `/embed`: same request, same answer.",
    request_body = TeiEmbedRequest,
    responses(
        (status = 200, body = TeiEmbedResponse),
        (status = 400, description = "The body is not JSON", body = TeiErrorBody),
        (status = 413, description = "As `/embed`", body = TeiErrorBody),
        (status = 422, description = "As `/embed`", body = TeiErrorBody),
        TeiErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn compat(
    State(state): State<AppState>,
    caller: CallerParts,
    ApiJson(req): ApiJson<TeiEmbedRequest>,
) -> Result<(Extension<Timing>, Json<TeiEmbedResponse>), ApiError> {
    let model = state.models.get(req.model.as_deref())?;
    match TeiModelType::of(&model.service.bundle.manifest) {
        TeiModelType::Embedding(_) => embed_with(&state, caller, req).await,
    }
}

#[utoipa::path(
    post, path = "/embed_all", tag = "tei", operation_id = "tei_embed_all",
    summary = "TEI: one vector per token",
    description = "text-embeddings-inference's `/embed_all`: per input, the vector of every token \
                   (special tokens included), from one pass over the whole input, through the \
                   model's output projection and not normalised: the primitive for late chunking \
                   on the client side (`/v1/embed` with `chunking` does it on the server). At most \
                   `limits.max_chunks` vectors per request.",
    request_body = TeiEmbedAllRequest,
    responses(
        (status = 200, body = TeiEmbedAllResponse),
        (status = 400, description = "The body is not JSON, or the bundle cannot pool token states (no `embed_spans`)", body = TeiErrorBody),
        (status = 413, description = "More inputs than `max_client_batch_size`, a body over `max_body_bytes`, more tokens than `max_queued_tokens`, or more token vectors than `max_chunks`", body = TeiErrorBody),
        (status = 422, description = "JSON of the wrong shape, or a value the model refuses (empty text, too long with `truncate: false`, `prompt_name`, `truncation_direction: Left`)", body = TeiErrorBody),
        TeiErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn embed_all(
    State(state): State<AppState>,
    caller: CallerParts,
    ApiJson(req): ApiJson<TeiEmbedAllRequest>,
) -> Result<(Extension<Timing>, Json<TeiEmbedAllResponse>), ApiError> {
    let service = &state.models.get(req.model.as_deref())?.service;
    let truncate = truncation(
        req.truncate,
        req.truncation_direction,
        req.prompt_name.as_deref(),
    )?;
    let out = service
        .embed_tokens(req.inputs.0, truncate, caller.with_body(req.priority))
        .await?;
    Ok((
        Extension(out.timing),
        Json(TeiEmbedAllResponse(out.vectors)),
    ))
}

#[utoipa::path(
    post, path = "/predict", tag = "tei", operation_id = "tei_predict",
    summary = "TEI: classification",
    description = "text-embeddings-inference's `/predict` over the model's classifier head: every label \
                   with its softmax probability (or logit, with `raw_scores`), highest first. Sentence \
                   pairs are refused (422): aft models are bi-encoders.",
    request_body = TeiPredictRequest,
    responses(
        (status = 200, body = TeiPredictResponse),
        (status = 400, description = "The body is not JSON, or the model has no classifier head", body = TeiErrorBody),
        (status = 413, description = "More inputs than `max_client_batch_size`, a body over `max_body_bytes`, or more tokens than `max_queued_tokens`", body = TeiErrorBody),
        (status = 422, description = "JSON of the wrong shape, a sentence pair, or a value the model refuses (empty text, too long with `truncate: false`, `truncation_direction: Left`)", body = TeiErrorBody),
        TeiErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn predict(
    State(state): State<AppState>,
    caller: CallerParts,
    ApiJson(req): ApiJson<TeiPredictRequest>,
) -> Result<(Extension<Timing>, Json<TeiPredictResponse>), ApiError> {
    let service = &state.models.get(req.model.as_deref())?.service;
    let truncate = truncation(req.truncate, req.truncation_direction, None)?;
    let (single, sequences) = match req.inputs {
        PredictInput::Single(s) => (true, vec![s]),
        PredictInput::Batch(b) => (false, b),
    };
    let texts = sequences
        .into_iter()
        .enumerate()
        .map(|(i, s)| match s {
            Sequence::Single(text) => Ok(crate::tokenize::Input::Text(text)),
            Sequence::Pair(..) => Err(ServiceError::invalid(
                format!("inputs[{i}]"),
                "sentence pairs are not supported: aft models classify single texts (a cross-encoder would be needed)",
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scores = if req.raw_scores {
        Scores::Raw
    } else {
        Scores::Softmax
    };
    let out = service
        .classify(
            texts,
            usize::MAX,
            scores,
            truncate,
            caller.with_body(req.priority),
        )
        .await?;
    let mut results = out.results.into_iter().map(|labels| {
        labels
            .into_iter()
            .map(|s| Prediction {
                score: s.score,
                label: s.label,
            })
            .collect::<Vec<_>>()
    });
    let answer = match (single, results.next()) {
        (true, Some(one)) => TeiPredictResponse::Single(one),
        (_, first) => TeiPredictResponse::Batch(first.into_iter().chain(results).collect()),
    };
    Ok((Extension(out.timing), Json(answer)))
}

#[utoipa::path(
    post, path = "/tokenize", tag = "tei", operation_id = "tei_tokenize",
    summary = "TEI: how the model's tokenizer cuts texts",
    description = "text-embeddings-inference's `/tokenize`, with the model's own tokenizer and no \
                   truncation. Nothing reaches the model.",
    request_body = TeiTokenizeRequest,
    responses(
        (status = 200, body = TeiTokenizeResponse),
        (status = 400, description = "The body is not JSON", body = TeiErrorBody),
        (status = 413, description = "More inputs than `max_client_batch_size`, or a body over `max_body_bytes`", body = TeiErrorBody),
        (status = 422, description = "JSON of the wrong shape, or `prompt_name`", body = TeiErrorBody),
        TeiErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TeiTokenizeRequest>,
) -> Result<Json<TeiTokenizeResponse>, ApiError> {
    let service = &state.models.get(req.model.as_deref())?.service;
    truncation(None, None, req.prompt_name.as_deref())?;
    let texts = req.inputs.0;
    let pieces = service
        .tokenize(texts.clone(), req.add_special_tokens)
        .await?;
    let tokens = texts
        .iter()
        .zip(pieces)
        .map(|(text, pieces)| {
            pieces
                .into_iter()
                .map(|p| SimpleToken::of(text, p))
                .collect()
        })
        .collect();
    Ok(Json(TeiTokenizeResponse(tokens)))
}

#[utoipa::path(
    post, path = "/decode", tag = "tei", operation_id = "tei_decode",
    summary = "TEI: the text of token ids",
    description = "text-embeddings-inference's `/decode` with the model's own tokenizer. Nothing \
                   reaches the model.",
    request_body = TeiDecodeRequest,
    responses(
        (status = 200, body = TeiDecodeResponse),
        (status = 400, description = "The body is not JSON", body = TeiErrorBody),
        (status = 413, description = "More id lists than `max_client_batch_size`, or a body over `max_body_bytes`", body = TeiErrorBody),
        (status = 422, description = "JSON of the wrong shape, or a token id outside the vocabulary", body = TeiErrorBody),
        TeiErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn decode(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TeiDecodeRequest>,
) -> Result<Json<TeiDecodeResponse>, ApiError> {
    let service = &state.models.get(req.model.as_deref())?.service;
    let texts = service
        .decode(req.ids.0 .0, req.skip_special_tokens)
        .await?;
    Ok(Json(TeiDecodeResponse(texts)))
}
