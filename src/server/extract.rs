//! A JSON body extractor whose every rejection is an [`ApiError`], so malformed bodies get the
//! same error shape as everything else.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejection_to_error(rejection)),
        }
    }
}

fn rejection_to_error(rejection: JsonRejection) -> ApiError {
    let message = rejection.body_text();
    let too_large = rejection.status() == StatusCode::PAYLOAD_TOO_LARGE;
    match rejection {
        JsonRejection::JsonDataError(_) => ApiError::InvalidBody(message),
        JsonRejection::JsonSyntaxError(_) => ApiError::InvalidJson(message),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "expected a JSON body with `Content-Type: application/json`".into(),
        ),
        // Reading the body failed: too large, or the connection broke.
        JsonRejection::BytesRejection(_) if too_large => ApiError::PayloadTooLarge(message),
        JsonRejection::BytesRejection(_) => ApiError::InvalidJson(message),
        _ => ApiError::InvalidJson(message),
    }
}
