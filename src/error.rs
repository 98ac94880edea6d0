//! The one error type the API answers with, and the one JSON shape every non-2xx response has:
//! `{"error": {"message", "type", "code", "param"}}` (OpenAI's error shape, so its clients parse it).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::core::InferError;
use crate::tokenize::TokenizeError;

/// Seconds a client is asked to wait after a 429.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    InvalidInput {
        param: Option<String>,
        message: String,
    },
    #[error("inputs[{index}] has {tokens} tokens, more than the model's limit of {limit}; send truncate=true to truncate it")]
    InputTooLong {
        index: usize,
        tokens: usize,
        limit: usize,
    },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{count} inputs in one request, more than the limit of {limit}")]
    TooManyInputs { count: usize, limit: usize },
    #[error("model {0:?} has no classifier head; /v1/classify is unavailable")]
    NoClassifier(String),
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    #[error("missing or invalid API key; send `Authorization: Bearer <key>`")]
    Unauthorized,
    #[error("the request queue is full; retry later")]
    QueueFull,
    #[error("{0}; retry later")]
    KeyQueueFull(String),
    #[error("the request took longer than the limit of {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Unavailable(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("internal error: {0}")]
    Internal(String),
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

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::NoClassifier(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidInput { .. } | Self::InputTooLong { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::PayloadTooLarge(_) | Self::TooManyInputs { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ModelNotFound(_) | Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::QueueFull | Self::KeyQueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Inference(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::InvalidInput { .. } => "invalid_input",
            Self::InputTooLong { .. } => "input_too_long",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::TooManyInputs { .. } => "too_many_inputs",
            Self::NoClassifier(_) => "no_classifier",
            Self::ModelNotFound(_) => "model_not_found",
            Self::NotFound { .. } => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Unauthorized => "invalid_api_key",
            Self::QueueFull => "queue_full",
            Self::KeyQueueFull(_) => "key_queue_full",
            Self::Timeout(_) => "request_timeout",
            Self::Unavailable(_) => "not_ready",
            Self::Inference(_) => "inference_failed",
            Self::Internal(_) => "internal_error",
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            Self::InvalidInput { param, .. } => param.clone(),
            Self::InputTooLong { index, .. } => Some(format!("inputs[{index}]")),
            Self::TooManyInputs { .. } => Some("inputs".into()),
            Self::ModelNotFound(_) => Some("model".into()),
            _ => None,
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
        if matches!(self, Self::QueueFull | Self::KeyQueueFull(_)) {
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

impl From<TokenizeError> for ApiError {
    fn from(err: TokenizeError) -> Self {
        match err {
            TokenizeError::TooLong { index, tokens, limit } => {
                Self::InputTooLong { index, tokens, limit }
            }
            TokenizeError::Empty { index } => Self::invalid(
                format!("inputs[{index}]"),
                format!("inputs[{index}] is empty"),
            ),
            TokenizeError::TokenIdOutOfRange { index, position, id, vocab_size } => Self::invalid(
                format!("inputs[{index}][{position}]"),
                format!(
                    "inputs[{index}][{position}] = {id} is not a token id (valid ids are 0..{vocab_size})"
                ),
            ),
            TokenizeError::Tokenizer(msg) => Self::Internal(format!("tokenizer: {msg}")),
            TokenizeError::Closed => Self::Unavailable("the service is shutting down".into()),
        }
    }
}

impl From<InferError> for ApiError {
    fn from(err: InferError) -> Self {
        match err {
            InferError::QueueFull => Self::QueueFull,
            err @ InferError::KeyQueueFull { .. } => Self::KeyQueueFull(err.to_string()),
            InferError::ShuttingDown => Self::Unavailable("the service is shutting down".into()),
            InferError::NotReady(reason) => Self::Unavailable(reason),
            InferError::Backend(msg) => Self::Inference(msg),
            InferError::WorkerDied => {
                Self::Inference("the inference worker stopped while running this request".into())
            }
        }
    }
}
