//! The OpenAPI 3 document (`GET /openapi.json`, which the Swagger UI page at `GET /docs` reads),
//! built once at start-up; the route serves the copy in the state.

use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi, ToSchema};

use super::docs::DocsAsset;
use super::error::{ErrorBody, ErrorDetail, TeiErrorBody, TeiErrorType};
use super::input::{OpenAiInput, TextInputs};
use super::models::ServedModels;
use super::route_table::RoutePaths;
use super::tei::{InputIds, PredictInput};
use crate::service::Service;

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
    components(schemas(ErrorBody, ErrorDetail, TeiErrorBody, TeiErrorType, DocsAsset)),
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

/// The bounds of valid requests that depend on the served model and the configuration.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// `--max-client-batch-size`: most inputs in one request.
    pub max_inputs: usize,
    /// The model's embedding size: the largest `dimensions`.
    pub dimensions: usize,
    /// Token ids must be below it.
    pub vocab_size: usize,
    /// The names `model` may take (the served models).
    pub models: Vec<String>,
    /// Some served model can do late chunking; without one, `chunking` leaves the document.
    pub late_chunking: bool,
}

/// `/openapi.json` for `models`: one document for all of them, each bound the loosest of any
/// served model (a request within it may still be refused by the model it names, with the
/// documented 422).
pub fn served(models: &ServedModels) -> Result<Value, String> {
    let doc = document();
    let services = || models.iter().map(|m| &m.service);
    let bounds = Bounds {
        max_inputs: models.default_model().info.limits.max_client_batch_size,
        dimensions: services().map(|s| s.embedding_dim()).max().unwrap_or(0),
        vocab_size: services().map(|s| s.vocab_size()).max().unwrap_or(0),
        models: services().map(|s| s.model_name.clone()).collect(),
        late_chunking: services().any(Service::supports_chunking),
    };
    bounded(&doc, &bounds)
}

/// The document: the service's description, and every route of the route table.
pub fn document() -> OpenApiDoc {
    let mut doc = ApiDoc::openapi();
    doc.merge(RoutePaths::openapi());
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as `/openapi.json` serves it: `doc` with the bounds of this service filled in,
/// so that the schemas accept exactly what the service does.
pub fn bounded(doc: &OpenApiDoc, bounds: &Bounds) -> Result<Value, String> {
    let mut v = serde_json::to_value(doc).map_err(|e| e.to_string())?;
    let largest_id = bounds.vocab_size.saturating_sub(1);
    // The input schemas, rebuilt with this service's bounds.
    let schemas = "/components/schemas";
    let bounded_inputs = [
        (
            TextInputs::name(),
            TextInputs::schema_within(Some(bounds.max_inputs)),
        ),
        (
            OpenAiInput::name(),
            OpenAiInput::schema_within(Some(bounds.max_inputs), Some(largest_id)),
        ),
        (
            PredictInput::name(),
            PredictInput::schema_within(Some(bounds.max_inputs)),
        ),
        (
            InputIds::name(),
            InputIds::schema_within(Some(bounds.max_inputs), Some(largest_id)),
        ),
    ];
    for (name, schema) in bounded_inputs {
        let schema = serde_json::to_value(schema).map_err(|e| e.to_string())?;
        v.pointer_mut(schemas)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("OpenAPI document: no object at {schemas}"))?
            .insert(name.into_owned(), schema);
    }
    let patches = [
        (
            "/components/schemas/EmbedRequest/properties/dimensions/maximum".to_owned(),
            json!(bounds.dimensions),
        ),
        (
            "/components/schemas/OpenAiEmbeddingsRequest/properties/dimensions/maximum".into(),
            json!(bounds.dimensions),
        ),
        (
            "/components/schemas/TeiEmbedRequest/properties/dimensions/maximum".into(),
            json!(bounds.dimensions),
        ),
        // Any count is served (at most every label comes back); the limit is the integer type's.
        (
            "/components/schemas/ClassifyRequest/properties/top_k/maximum".into(),
            json!(u64::try_from(usize::MAX).unwrap_or(u64::MAX)),
        ),
    ];
    let mut model_names: Vec<Value> = bounds.models.iter().map(|m| json!(m)).collect();
    model_names.push(Value::Null);
    let model_enums = [
        "EmbedRequest",
        "OpenAiEmbeddingsRequest",
        "ClassifyRequest",
        "TeiEmbedRequest",
        "TeiEmbedAllRequest",
        "TeiPredictRequest",
        "TeiTokenizeRequest",
        "TeiDecodeRequest",
    ]
    .map(|s| {
        (
            format!("/components/schemas/{s}/properties/model/enum"),
            json!(model_names),
        )
    });
    if !bounds.late_chunking {
        // No served model takes it: a request with it is refused (400 chunking_unsupported).
        let properties = "/components/schemas/EmbedRequest/properties";
        v.pointer_mut(properties)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("OpenAPI document: no object at {properties}"))?
            .remove("chunking");
    }
    let patches = patches.into_iter().chain(model_enums);
    for (pointer, value) in patches {
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", &pointer));
        let target = v
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| format!("OpenAPI document: no object at {parent}"))?;
        target.insert(key.to_owned(), value);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_land_in_the_request_schemas() {
        let bounds = Bounds {
            max_inputs: 7,
            dimensions: 32,
            vocab_size: 1000,
            models: vec!["m".into(), "n".into()],
            late_chunking: true,
        };
        let v = bounded(&document(), &bounds).unwrap();
        let chunking = &v["components"]["schemas"]["EmbedRequest"]["properties"]["chunking"];
        assert!(chunking.is_object(), "{chunking}");
        let without = bounded(
            &document(),
            &Bounds {
                late_chunking: false,
                ..bounds.clone()
            },
        )
        .unwrap();
        assert!(
            without["components"]["schemas"]["EmbedRequest"]["properties"]
                .get("chunking")
                .is_none()
        );
        let schemas = &v["components"]["schemas"];
        assert_eq!(schemas["TextInputs"]["oneOf"][0]["minLength"], 1);
        assert_eq!(schemas["TextInputs"]["oneOf"][1]["minItems"], 1);
        assert_eq!(schemas["TextInputs"]["oneOf"][1]["maxItems"], 7);
        assert_eq!(schemas["OpenAiInput"]["oneOf"][2]["items"]["maximum"], 999);
        assert_eq!(
            schemas["OpenAiInput"]["oneOf"][3]["items"]["items"]["maximum"],
            999
        );
        assert_eq!(
            schemas["EmbedRequest"]["properties"]["dimensions"]["maximum"],
            32
        );
        for request in ["EmbedRequest", "OpenAiEmbeddingsRequest", "ClassifyRequest"] {
            assert_eq!(
                schemas[request]["properties"]["model"]["enum"],
                json!(["m", "n", null]),
                "{request}"
            );
        }
        assert_eq!(
            schemas["ClassifyRequest"]["properties"]["top_k"]["maximum"],
            json!(usize::MAX)
        );
    }

    #[test]
    fn inference_routes_document_every_error_status_with_the_error_body() {
        let doc = serde_json::to_value(document()).expect("the document serialises");
        let statuses = [
            "400", "401", "404", "413", "415", "422", "429", "500", "503", "504",
        ];
        for path in ["/v1/embed", "/v1/embeddings", "/v1/classify"] {
            let responses = &doc["paths"][path]["post"]["responses"];
            for status in statuses {
                let response = &responses[status];
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{path} {status}: no description"
                );
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{path} {status}"
                );
            }
        }
    }
}
