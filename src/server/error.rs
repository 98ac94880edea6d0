//! The one error type the API answers with, and the one JSON shape every non-2xx response has:
//! `{"error": {"message", "type", "code", "param"}}` (OpenAI's error shape, so its clients parse it).
//! Transport failures (routing, auth, body, timeout) are cases of their own; everything the service
//! refuses arrives as a [`ServiceError`] and keeps its message. The TEI-compatible routes answer
//! the same errors, with the same statuses, in TEI's shape instead: `{"error", "error_type"}`
//! ([`TeiErrorBody`], applied to those routes' responses by `super::tei::error_shape`).

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::{self, ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::ToSchema;

use crate::service::ServiceError;

/// Seconds a client is asked to wait after a 429.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON (or could not be read).
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is JSON but not the request's shape (a field missing or of the wrong type).
    #[error("{0}")]
    InvalidBody(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    #[error("missing or invalid API key; send `Authorization: Bearer <key>`")]
    Unauthorized,
    #[error("the request took longer than the limit of {0:?}")]
    Timeout(std::time::Duration),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{}", service_message(.0))]
    Service(#[from] ServiceError),
}

/// The service's message, with the route to blame where the service cannot name it.
fn service_message(err: &ServiceError) -> String {
    match err {
        ServiceError::NoClassifier(_) => format!("{err}; /v1/classify is unavailable"),
        _ => err.to_string(),
    }
}

/// The error body, for the OpenAPI document as much as for serialisation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Human-readable explanation.
    pub message: String,
    /// Broad class, as OpenAI names them (e.g. `invalid_request_error`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Machine-readable reason (e.g. `input_too_long`, `queue_full`).
    pub code: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
}

/// TEI's error body, `{"error": "...", "error_type": "Validation"}`, as TEI-compatible routes
/// answer every error (TEI's clients read `error`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TeiErrorBody {
    /// Human-readable explanation.
    pub error: String,
    pub error_type: TeiErrorType,
}

/// TEI's error classes that aft-serve answers, spelled as TEI spells them (TEI's `Tokenizer`
/// and `Empty` are `Validation` here: the status and message tell them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum TeiErrorType {
    /// Not ready, shutting down, or past the request timeout.
    Unhealthy,
    /// Inference failed.
    Backend,
    /// The queue is full; retry after `Retry-After` seconds.
    Overloaded,
    /// The request is refused (shape, values, limits, model, key).
    Validation,
}

/// The error responses every inference route documents alike (the routes add their own 400,
/// 413 and 422, whose causes differ), all with the [`ErrorBody`] shape: for the OpenAPI document.
pub struct InferenceErrors;

impl InferenceErrors {
    const RESPONSES: [(u16, &'static str); 7] = [
        (401, "Missing or invalid API key (when keys are configured)"),
        (404, "No served model has this `model` name"),
        (415, "No `Content-Type: application/json`"),
        (
            429,
            "Queue full (inputs or tokens waiting); retry after `Retry-After` seconds",
        ),
        (500, "Inference failed"),
        (503, "Not ready yet, or shutting down"),
        (504, "Past `--request-timeout`"),
    ];
}

impl InferenceErrors {
    /// The responses, with the body schema `schema`.
    pub(super) fn responses_with(schema: &str) -> BTreeMap<String, RefOr<openapi::Response>> {
        Self::RESPONSES
            .iter()
            .map(|&(status, description)| {
                let body = ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build();
                let response = ResponseBuilder::new()
                    .description(description)
                    .content("application/json", body)
                    .build();
                (status.to_string(), response.into())
            })
            .collect()
    }
}

impl utoipa::IntoResponses for InferenceErrors {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        Self::responses_with("ErrorBody")
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Service(err) => match err {
                ServiceError::NoClassifier(_)
                | ServiceError::ChunkingUnsupported(_)
                | ServiceError::TokenVectorsUnsupported(_) => StatusCode::BAD_REQUEST,
                ServiceError::InvalidInput { .. } | ServiceError::InputTooLong { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                ServiceError::TooManyInputs { .. }
                | ServiceError::TooManyTokens { .. }
                | ServiceError::TooManyChunks { .. }
                | ServiceError::TooManyTokenVectors { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ServiceError::ModelNotFound(_) => StatusCode::NOT_FOUND,
                ServiceError::QueueFull | ServiceError::KeyQueueFull(_) => {
                    StatusCode::TOO_MANY_REQUESTS
                }
                ServiceError::ShuttingDown | ServiceError::NotReady(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                ServiceError::Inference(_) | ServiceError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    fn kind(&self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::GATEWAY_TIMEOUT => "timeout_error",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::InvalidBody(_) => "invalid_input",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Unauthorized => "invalid_api_key",
            Self::Timeout(_) => "request_timeout",
            Self::Internal(_) => "internal_error",
            Self::Service(err) => match err {
                ServiceError::InvalidInput { .. } => "invalid_input",
                ServiceError::InputTooLong { .. } => "input_too_long",
                ServiceError::TooManyInputs { .. } => "too_many_inputs",
                ServiceError::TooManyTokens { .. } => "too_many_tokens",
                ServiceError::TooManyChunks { .. } => "too_many_chunks",
                ServiceError::ChunkingUnsupported(_) => "chunking_unsupported",
                ServiceError::TooManyTokenVectors { .. } => "too_many_token_vectors",
                ServiceError::TokenVectorsUnsupported(_) => "token_vectors_unsupported",
                ServiceError::NoClassifier(_) => "no_classifier",
                ServiceError::ModelNotFound(_) => "model_not_found",
                ServiceError::QueueFull => "queue_full",
                ServiceError::KeyQueueFull(_) => "key_queue_full",
                ServiceError::ShuttingDown | ServiceError::NotReady(_) => "not_ready",
                ServiceError::Inference(_) => "inference_failed",
                ServiceError::Internal(_) => "internal_error",
            },
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            Self::Service(ServiceError::InvalidInput { param, .. }) => Some(param.clone()),
            Self::Service(ServiceError::InputTooLong { index, .. }) => {
                Some(format!("inputs[{index}]"))
            }
            Self::Service(
                ServiceError::TooManyInputs { .. }
                | ServiceError::TooManyTokens { .. }
                | ServiceError::TooManyTokenVectors { .. },
            ) => Some("inputs".into()),
            Self::Service(
                ServiceError::TooManyChunks { .. } | ServiceError::ChunkingUnsupported(_),
            ) => Some("chunking".into()),
            Self::Service(ServiceError::ModelNotFound(_)) => Some("model".into()),
            _ => None,
        }
    }

    /// TEI's `error_type` for this error, by its status: `Overloaded` (429), `Unhealthy` (503,
    /// 504), `Backend` (other 5xx), else `Validation` (TEI's word for a request it refuses).
    pub fn tei_type(&self) -> TeiErrorType {
        match self.status() {
            StatusCode::TOO_MANY_REQUESTS => TeiErrorType::Overloaded,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                TeiErrorType::Unhealthy
            }
            s if s.is_server_error() => TeiErrorType::Backend,
            _ => TeiErrorType::Validation,
        }
    }

    /// The error in TEI's shape (TEI-compatible routes only).
    pub fn tei_body(&self) -> TeiErrorBody {
        TeiErrorBody {
            error: self.to_string(),
            error_type: self.tei_type(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: self.kind(),
                code: self.code(),
                param: self.param(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        } else if status.is_server_error() {
            // Not ready, shutting down, timed out: the service is fine, the request is not.
            tracing::warn!(status = status.as_u16(), error = %self, "request not served");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if matches!(
            self,
            Self::Service(ServiceError::QueueFull | ServiceError::KeyQueueFull(_))
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if matches!(self, Self::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // Handlers and middleware further out may want to know what failed (metrics, logs).
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (status, type, code, param) of an error as the API reports it.
    fn reported(err: impl Into<ApiError>) -> (u16, &'static str, &'static str, Option<String>) {
        let err = err.into();
        let body = err.body();
        (
            err.status().as_u16(),
            body.error.kind,
            body.error.code,
            body.error.param,
        )
    }

    #[test]
    fn service_errors_keep_their_statuses_codes_and_params() {
        let too_long = ServiceError::InputTooLong {
            index: 2,
            tokens: 300,
            limit: 128,
        };
        assert_eq!(
            reported(too_long),
            (
                422,
                "invalid_request_error",
                "input_too_long",
                Some("inputs[2]".into())
            )
        );
        assert_eq!(
            reported(ServiceError::QueueFull),
            (429, "rate_limit_error", "queue_full", None)
        );
        assert_eq!(
            reported(ServiceError::ShuttingDown),
            (503, "service_unavailable_error", "not_ready", None)
        );
        assert_eq!(
            reported(ServiceError::ModelNotFound("m".into())),
            (
                404,
                "invalid_request_error",
                "model_not_found",
                Some("model".into())
            )
        );
        assert_eq!(
            reported(ServiceError::Inference("x".into())),
            (500, "server_error", "inference_failed", None)
        );
        assert_eq!(
            reported(ApiError::InvalidBody("missing field".into())),
            (422, "invalid_request_error", "invalid_input", None)
        );
    }

    #[test]
    fn the_http_layer_names_the_route_a_missing_head_disables() {
        let err = ApiError::from(ServiceError::NoClassifier("tiny".into()));
        assert_eq!(
            err.to_string(),
            r#"model "tiny" has no classifier head; /v1/classify is unavailable"#
        );
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
}
