//! Every route the server answers, written once. The router ([`super::router`]), the OpenAPI
//! document's paths ([`super::openapi`]), which routes log quietly, and the tests that check
//! authentication all read [`ROUTES`]; each handler's `#[utoipa::path]` documents it.

use axum::routing::{on, MethodFilter, MethodRouter};

use super::state::AppState;
use super::{docs, routes, tei};

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
        }
    }
}

/// One route and how the server treats it.
#[derive(Clone, Copy)]
pub struct Route {
    pub method: Verb,
    pub path: &'static str,
    /// Answered without an API key even when keys are configured (probes and scrapes).
    pub open: bool,
    /// Logged at debug rather than info: probes and scrapes arrive every few seconds.
    pub quiet: bool,
    /// Bounded by `--request-timeout` (the inference routes).
    pub timed: bool,
    /// A text-embeddings-inference route: TEI's shapes, errors as `{"error", "error_type"}`.
    pub tei: bool,
    /// The handler, answering `method` only.
    pub(super) handler: fn(MethodFilter) -> MethodRouter<AppState>,
}

impl Route {
    /// The handler as the router mounts it at `path`.
    pub(super) fn method_router(&self) -> MethodRouter<AppState> {
        (self.handler)(self.method.filter())
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method.as_str(), self.path)
    }
}

/// Writes [`ROUTES`] and, from the same rows, the OpenAPI paths ([`RoutePaths`]), so that a
/// route cannot be served without being documented or documented without being served.
macro_rules! route_table {
    ($(
        $verb:ident $path:literal => $($handler:ident)::+ {
            open: $open:literal, quiet: $quiet:literal, timed: $timed:literal,
            tei: $tei:literal $(,)?
        }
    ),* $(,)?) => {
        /// Every route, in the order the document lists them.
        pub static ROUTES: &[Route] = &[$(
            Route {
                method: Verb::$verb,
                path: $path,
                open: $open,
                quiet: $quiet,
                timed: $timed,
                tei: $tei,
                handler: |method| on(method, $($handler)::+),
            }
        ),*];

        /// The OpenAPI paths of [`ROUTES`], from each handler's `#[utoipa::path]`, with the
        /// schemas they refer to.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($($handler)::+),*))]
        pub(super) struct RoutePaths;
    };
}

route_table! {
    Post "/v1/embed" => routes::embed { open: false, quiet: false, timed: true, tei: false },
    Post "/v1/embeddings" => routes::openai_embeddings { open: false, quiet: false, timed: true, tei: false },
    Post "/v1/classify" => routes::classify { open: false, quiet: false, timed: true, tei: false },
    Get "/v1/models" => routes::models { open: false, quiet: false, timed: false, tei: false },
    Post "/embed" => tei::embed { open: false, quiet: false, timed: true, tei: true },
    Post "/embed_all" => tei::embed_all { open: false, quiet: false, timed: true, tei: true },
    Post "/predict" => tei::predict { open: false, quiet: false, timed: true, tei: true },
    Post "/tokenize" => tei::tokenize { open: false, quiet: false, timed: true, tei: true },
    Post "/decode" => tei::decode { open: false, quiet: false, timed: true, tei: true },
    Post "/" => tei::compat { open: false, quiet: false, timed: true, tei: true },
    Get "/info" => routes::info { open: false, quiet: false, timed: false, tei: false },
    Get "/health/live" => routes::live { open: true, quiet: true, timed: false, tei: false },
    Get "/health/ready" => routes::ready { open: true, quiet: true, timed: false, tei: false },
    Get "/health" => routes::health { open: true, quiet: true, timed: false, tei: false },
    Get "/metrics" => routes::metrics { open: true, quiet: true, timed: false, tei: false },
    Get "/openapi.json" => routes::openapi_json { open: false, quiet: false, timed: false, tei: false },
    Get "/docs" => docs::page { open: false, quiet: false, timed: false, tei: false },
    Get "/docs/{asset}" => docs::asset { open: false, quiet: false, timed: false, tei: false },
}

/// Whether the route `path` (as matched) is a TEI route, answering errors in TEI's shape.
pub(super) fn is_tei(path: &str) -> bool {
    ROUTES.iter().any(|r| r.tei && r.path == path)
}

/// Whether requests to the route `path` (as matched) are logged at debug only.
pub(super) fn is_quiet(path: &str) -> bool {
    ROUTES.iter().any(|r| r.quiet && r.path == path)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::server::openapi;

    /// (method, path) of every operation in the OpenAPI document, sorted.
    fn documented(doc: &Value) -> Vec<(String, String)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                ops.push((method.to_uppercase(), path.clone()));
            }
        }
        ops.sort();
        ops
    }

    fn document() -> Value {
        serde_json::to_value(openapi::document()).expect("the document serialises")
    }

    #[test]
    fn the_document_and_the_router_have_the_same_routes() {
        let mut routed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
            .collect();
        routed.sort();
        let before = routed.len();
        routed.dedup();
        assert_eq!(routed.len(), before, "a route is listed twice");
        assert_eq!(documented(&document()), routed);
    }

    #[test]
    fn open_routes_are_the_probes_and_documented_without_a_key() {
        let doc = document();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
            let keyed = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            assert_eq!(
                route.open, !keyed,
                "{route:?}: open in the table, not in its doc"
            );
            // README: with API keys configured, every route except health and metrics needs one.
            let probe = route.path.starts_with("/health") || route.path == "/metrics";
            assert_eq!(route.open, probe, "{route:?}");
            assert_eq!(route.quiet, probe, "{route:?}");
        }
    }
}
