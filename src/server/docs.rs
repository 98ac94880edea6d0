//! `GET /docs`: Swagger UI over `/openapi.json`, from files vendored from npm's `swagger-ui-dist`
//! (`src/server/swagger-ui/SOURCE.md`) and compiled into the binary, so the page works offline.
//! A content security policy keeps every request the page makes on this server.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorBody};

/// Where the page may fetch from: this server only (Swagger UI styles elements inline, and its
/// icons are data URIs).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = include_str!("swagger-ui/index.html");

/// The files under `/docs/`, by name: (content type, bytes).
const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("swagger-ui/swagger-ui.css"),
    ),
    (
        "init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("swagger-ui/init.js"),
    ),
];

/// The names under `/docs/`, for the document.
pub struct DocsAsset;

impl utoipa::PartialSchema for DocsAsset {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ASSETS.iter().map(|(name, ..)| *name)))
            .into()
    }
}
impl utoipa::ToSchema for DocsAsset {}

fn with_headers(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

#[utoipa::path(
    get, path = "/docs", tag = "service", operation_id = "docs_page",
    summary = "Interactive API documentation (Swagger UI)",
    description = "Every operation with its schemas and an example, and *Try it out* to send a \
                   request from the page. Served from files in the binary; the page fetches nothing \
                   outside this server.",
    responses(
        (status = 200, description = "HTML", body = String, content_type = "text/html"),
        (status = 401, description = "Missing or invalid API key (when keys are configured)", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn page() -> Response {
    with_headers("text/html; charset=utf-8", PAGE.as_bytes())
}

#[utoipa::path(
    get, path = "/docs/{asset}", tag = "service", operation_id = "docs_asset",
    summary = "The files of the documentation page",
    params(("asset" = DocsAsset, Path, description = "A file of the page")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 401, description = "Missing or invalid API key (when keys are configured)", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, ..)| *n == name) {
        Some(&(_, content_type, body)) => with_headers(content_type, body),
        None => ApiError::NotFound {
            method: "GET".into(),
            path: format!("/docs/{name}"),
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    /// The vendored files are swagger-ui-dist's, unchanged (hashes in swagger-ui/SOURCE.md).
    #[test]
    fn the_vendored_swagger_ui_files_are_the_npm_packages_own() {
        let expected = [
            (
                "swagger-ui-bundle.js",
                "b164c5a22535e40dae08c00271674a67e437ec195098c55fcedf8ffac7ac3c88",
            ),
            (
                "swagger-ui.css",
                "7eb9f5a125e4bc9b3f0b71869b66d1a3d7c501f972f53d44ef91c2ae6c5bda5e",
            ),
        ];
        for (name, sha) in expected {
            let (_, _, bytes) = ASSETS.iter().find(|(n, ..)| *n == name).expect("served");
            assert_eq!(hex::encode(Sha256::digest(bytes)), sha, "{name}");
            assert!(
                include_str!("swagger-ui/SOURCE.md").contains(sha),
                "{name}: SOURCE.md names another hash"
            );
        }
    }

    #[test]
    fn the_page_loads_only_files_the_server_has() {
        for src in [
            "/docs/swagger-ui.css",
            "/docs/swagger-ui-bundle.js",
            "/docs/init.js",
        ] {
            assert!(PAGE.contains(src), "{src}");
            let name = src.trim_start_matches("/docs/");
            assert!(ASSETS.iter().any(|(n, ..)| *n == name), "{name}");
        }
        assert!(!PAGE.contains("http"), "no outside URL in the page");
    }
}
