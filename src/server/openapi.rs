//! The OpenAPI 3 document (`GET /openapi.json`) and a self-contained docs page (`GET /docs`)
//! rendered from it on the server, so it works without internet access.

use axum::extract::State;
use axum::response::Html;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::routes;
use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "aft-serve",
        description = "Sentence embeddings and topic classification with Attention Free Transformer \
                       models. Every non-2xx response has the body \
                       `{\"error\": {\"message\", \"type\", \"code\", \"param\"}}`. Every response \
                       carries `x-request-id`, `x-queue-time`, `x-inference-time` and \
                       `x-total-time` (milliseconds)."
    ),
    paths(
        routes::embed,
        routes::openai_embeddings,
        routes::classify,
        routes::models,
        routes::info,
        routes::live,
        routes::ready,
        routes::health,
        routes::metrics,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn document() -> OpenApiDoc {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

pub async fn openapi_json(State(state): State<AppState>) -> Json<OpenApiDoc> {
    Json(state.openapi.as_ref().clone())
}

pub async fn docs_page(State(state): State<AppState>) -> Html<String> {
    Html(state.docs_html.as_ref().clone())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A plain HTML page listing every operation with its summary and description; the full schemas
/// are in /openapi.json.
pub fn render_docs(doc: &OpenApiDoc) -> String {
    let mut rows = String::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let summary = op.summary.as_deref().unwrap_or("");
            let description = op.description.as_deref().unwrap_or("");
            let statuses: Vec<&str> = op.responses.responses.keys().map(String::as_str).collect();
            rows.push_str(&format!(
                "<tr><td><code>{method}</code></td><td><code>{}</code></td><td><b>{}</b><br>{}</td><td>{}</td></tr>\n",
                escape(path),
                escape(summary),
                escape(description),
                escape(&statuses.join(", "))
            ));
        }
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} API</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;width:100%}}td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}}</style>
</head><body>
<h1>{title} {version}</h1>
<p>{description}</p>
<p>Machine-readable document: <a href="/openapi.json">/openapi.json</a> (OpenAPI {openapi}).</p>
<table><tr><th>method</th><th>path</th><th>what</th><th>statuses</th></tr>
{rows}</table>
</body></html>
"#,
        title = escape(&doc.info.title),
        version = escape(&doc.info.version),
        description = escape(doc.info.description.as_deref().unwrap_or("")),
        openapi = "3.1",
    )
}
