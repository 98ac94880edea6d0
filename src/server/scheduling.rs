//! Who is asking and how urgently: the caller's API key (set by the auth layer) and its priority,
//! from the body's `priority` field or the `x-priority` header (the body wins when both are set).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderName;

use super::error::ApiError;
use super::types::PriorityField;
use crate::core::{Caller, ClientId, Priority};
use crate::service::ServiceError;

pub const PRIORITY: HeaderName = HeaderName::from_static("x-priority");

/// The parts of a [`Caller`] known before the body is read.
pub struct CallerParts {
    header_priority: Option<Priority>,
    client: Option<ClientId>,
}

impl CallerParts {
    /// The caller, with the body's `priority` when it has one.
    pub fn with_body(self, body: Option<PriorityField>) -> Caller {
        Caller {
            priority: body
                .map(Priority::from)
                .or(self.header_priority)
                .unwrap_or_default(),
            client: self.client,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallerParts {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header_priority = match parts.headers.get(&PRIORITY) {
            None => None,
            Some(value) => Some(parse_priority(value.to_str().unwrap_or(""))?),
        };
        Ok(Self {
            header_priority,
            client: parts.extensions.get::<ClientId>().copied(),
        })
    }
}

fn parse_priority(value: &str) -> Result<Priority, ApiError> {
    Priority::ALL
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(value.trim()))
        .ok_or_else(|| {
            ServiceError::invalid(
                "x-priority",
                format!("x-priority must be `normal` or `low`, got {value:?}"),
            )
            .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        assert_eq!(parse_priority("low").unwrap(), Priority::Low);
        assert_eq!(parse_priority(" Normal ").unwrap(), Priority::Normal);
        assert!(parse_priority("high").is_err());
        assert!(parse_priority("").is_err());
    }

    #[test]
    fn the_body_wins_over_the_header() {
        let parts = || CallerParts {
            header_priority: Some(Priority::Low),
            client: Some(ClientId(7)),
        };
        let caller = parts().with_body(Some(PriorityField::Normal));
        assert_eq!(caller.priority, Priority::Normal);
        assert_eq!(caller.client, Some(ClientId(7)));
        assert_eq!(parts().with_body(None).priority, Priority::Low);
        let none = CallerParts {
            header_priority: None,
            client: None,
        };
        assert_eq!(none.with_body(None), Caller::default());
    }
}
