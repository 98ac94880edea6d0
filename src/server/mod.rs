//! The HTTP server: the routes and their layers over finished objects (the [`ServedModels`], the
//! metrics, the API keys), listening, and graceful shutdown. It loads and builds nothing it
//! serves; [`crate::app`] does, and it never sees a backend.

mod auth;
mod conn;
mod docs;
pub mod error;
mod extract;
mod info;
mod input;
mod middleware;
mod models;
mod openapi;
mod route_table;
mod router;
mod routes;
mod scheduling;
mod serve;
mod state;
mod tei;
mod types;

pub use auth::ApiKeys;
pub use conn::ConnLimits;
pub use error::ApiError;
pub use info::ModelInfo;
pub use models::{ModelsError, ServedModel, ServedModels};
pub use route_table::{Route, Verb, ROUTES};
pub use serve::run;
pub use state::HttpConfig;
