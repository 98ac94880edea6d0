//! The router: every route of the route table with its layers (API keys, the request timeout),
//! and the layers every request passes (ids, timing, metrics, body limit, panics, CORS).

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::route_table::ROUTES;
use super::state::{AppState, HttpConfig};
use super::{auth, middleware, routes, scheduling, tei};

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                middleware::REQUEST_ID,
                scheduling::PRIORITY,
            ])
            .expose_headers([
                middleware::REQUEST_ID,
                middleware::QUEUE_TIME,
                middleware::INFERENCE_TIME,
                middleware::TOTAL_TIME,
                HeaderName::from_static("retry-after"),
            ]),
    )
}

/// Every route of [`ROUTES`], with its layers.
pub(super) fn router(state: AppState, http: &HttpConfig) -> Router {
    let mut app = Router::new();
    for route in ROUTES {
        let mut endpoint = route.method_router();
        // `layer`, not `route_layer`: a wrong method on a guarded path is refused (401) before
        // it is told the method is not allowed, as for any other request without a key.
        if route.timed {
            endpoint = endpoint.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                middleware::timeout,
            ));
        }
        if !route.open {
            endpoint = endpoint.layer(axum::middleware::from_fn_with_state(
                state.keys.clone(),
                auth::require_api_key,
            ));
        }
        app = app.route(route.path, endpoint);
    }
    let mut app = app
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::body_limit,
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn(tei::error_shape))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ));
    if let Some(cors) = cors(&http.cors_allow_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}
