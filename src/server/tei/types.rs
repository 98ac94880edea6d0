//! The wire types of TEI's routes: requests, responses and `/info`'s TEI fields, with the
//! lenient readers TEI's clients rely on and their OpenAPI schemas (the routes: `super`).

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::openapi::{self, RefOr};
use utoipa::ToSchema;

use crate::bundle::{Manifest, Pooling};
use crate::config::Config;
use crate::server::error::InferenceErrors;
use crate::server::input::{
    optional_via_string, whole_usize_opt, IdLists, OpenAiInput, TextInputs,
};
use crate::server::types::PriorityField;
use crate::service::ServiceError;
use crate::tokenize::TokenPiece;

fn yes() -> bool {
    true
}

/// `prompt_name`'s schema: null (or absent) only, since aft bundles have no prompts.
fn no_prompts() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Null)
        .description(Some(
            "TEI's prompt name. aft bundles have no prompts: any name is refused (422); put the \
             prompt's text in front of the inputs.",
        ))
        .build()
}

/// The error responses of a TEI inference route, with TEI's body: for the OpenAPI document.
pub struct TeiErrors;

impl utoipa::IntoResponses for TeiErrors {
    fn responses() -> std::collections::BTreeMap<String, RefOr<openapi::Response>> {
        InferenceErrors::responses_with("TeiErrorBody")
    }
}

/// TEI's `truncation_direction`. aft-serve truncates at the end only: `Left` is refused (422),
/// so the document lists `Right` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TruncationDirection {
    #[serde(alias = "left")]
    Left,
    #[default]
    #[serde(alias = "right")]
    Right,
}

impl utoipa::PartialSchema for TruncationDirection {
    fn schema() -> RefOr<openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["Right", "right"]))
            .description(Some(
                "Which end of a long input truncation keeps: the start (`Right`, TEI's default). \
                 TEI's `Left` is refused (422).",
            ))
            .into()
    }
}
impl ToSchema for TruncationDirection {}

/// The options TEI's embedding requests share, checked for what aft-serve cannot do: a
/// `prompt_name` (aft bundles have no prompts) and left truncation. `truncate` absent or null is
/// `true`: aft-serve behaves as TEI started with `--auto-truncate` (`auto_truncate` in `/info`).
pub(super) fn truncation(
    truncate: Option<bool>,
    direction: Option<TruncationDirection>,
    prompt_name: Option<&str>,
) -> Result<bool, ServiceError> {
    if let Some(name) = prompt_name {
        return Err(ServiceError::invalid(
            "prompt_name",
            format!("prompt_name {name:?}: this model has no prompts; prepend the prompt's text to the inputs"),
        ));
    }
    if direction == Some(TruncationDirection::Left) {
        return Err(ServiceError::invalid(
            "truncation_direction",
            "truncation_direction Left is not supported: aft-serve keeps the start of an input (Right); models read up to `max_input_length` tokens (see /info)",
        ));
    }
    Ok(truncate.unwrap_or(AUTO_TRUNCATE))
}

/// What `truncate` is when a TEI request leaves it out.
pub(super) const AUTO_TRUNCATE: bool = true;

/// TEI's `POST /embed` request (`POST /` takes it too).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"inputs": ["a cat sat on the mat", "a kitten rested on the rug"], "normalize": true}))]
pub struct TeiEmbedRequest {
    pub inputs: OpenAiInput,
    /// L2-normalise the embeddings (TEI's default: true).
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Truncate inputs longer than `max_input_length`; when false they get 422. Absent or null:
    /// true (`auto_truncate` in `/info`).
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default, deserialize_with = "optional_via_string")]
    #[schema(value_type = Option<TruncationDirection>)]
    pub truncation_direction: Option<TruncationDirection>,
    #[serde(default)]
    #[schema(schema_with = no_prompts)]
    pub prompt_name: Option<String>,
    /// Keep only the first `dimensions` components (then normalise).
    #[serde(default, deserialize_with = "whole_usize_opt")]
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
    /// aft-serve: the model to use (see `GET /v1/models`); the default model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// aft-serve: `normal` (default) or `low` for bulk work; overrides the `x-priority` header.
    #[serde(default, deserialize_with = "optional_via_string")]
    pub priority: Option<PriorityField>,
}

/// One vector per input, in input order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!([[0.0, 1.0, 2.0]]))]
pub struct TeiEmbedResponse(pub Vec<Vec<f32>>);

/// TEI's `POST /embed_all` request.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"inputs": "a cat sat on the mat"}))]
pub struct TeiEmbedAllRequest {
    pub inputs: OpenAiInput,
    /// As in `/embed`.
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default, deserialize_with = "optional_via_string")]
    #[schema(value_type = Option<TruncationDirection>)]
    pub truncation_direction: Option<TruncationDirection>,
    #[serde(default)]
    #[schema(schema_with = no_prompts)]
    pub prompt_name: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "optional_via_string")]
    pub priority: Option<PriorityField>,
}

/// Per input, one vector per token (special tokens included), not normalised.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!([[[0.0, 1.0, 2.0]]]))]
pub struct TeiEmbedAllResponse(pub Vec<Vec<Vec<f32>>>);

/// One sequence of TEI's `/predict`: a text, or a pair of texts (for cross-encoders).
#[derive(Debug, Clone, PartialEq)]
pub enum Sequence {
    Single(String),
    Pair(String, String),
}

/// TEI's `inputs` of `/predict`: `"text"` (one input), `["text", "text"]` (one pair), or a batch
/// `[["text"], ["text", "text"], ...]`. The answer is nested as the question was.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictInput {
    Single(Sequence),
    Batch(Vec<Sequence>),
}

impl<'de> Deserialize<'de> for PredictInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// An element of the outer array: a text (so the array is one sequence) or an array of
        /// texts (so the array is a batch).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Element {
            Text(String),
            Texts(Vec<String>),
        }
        fn sequence<E: de::Error>(mut texts: Vec<String>) -> Result<Sequence, E> {
            match (texts.pop(), texts.pop(), texts.is_empty()) {
                (Some(a), None, _) => Ok(Sequence::Single(a)),
                (Some(b), Some(a), true) => Ok(Sequence::Pair(a, b)),
                _ => Err(E::custom(
                    "a sequence of `inputs` is [text] or [text, text]",
                )),
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PredictInput;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a string, a pair of strings, or a batch of [string] and [string, string]",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PredictInput, E> {
                Ok(PredictInput::Single(Sequence::Single(s.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PredictInput, A::Error> {
                match seq.next_element::<Element>()? {
                    None => Ok(PredictInput::Batch(Vec::new())),
                    Some(Element::Text(first)) => {
                        let mut texts = vec![first];
                        while let Some(text) = seq.next_element::<String>()? {
                            texts.push(text);
                        }
                        sequence(texts).map(PredictInput::Single)
                    }
                    Some(Element::Texts(first)) => {
                        let mut batch = vec![sequence(first)?];
                        while let Some(texts) = seq.next_element::<Vec<String>>()? {
                            batch.push(sequence(texts)?);
                        }
                        Ok(PredictInput::Batch(batch))
                    }
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl PredictInput {
    /// The schema of what is served (pairs are refused, so left out), with at most `max_inputs`
    /// inputs in a batch when given (the served bound; see `openapi::bounded`).
    pub fn schema_within(max_inputs: Option<usize>) -> RefOr<openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
        let one_text = || {
            ArrayBuilder::new()
                .items(crate::server::input::string_schema())
                .min_items(Some(1))
                .max_items(Some(1))
        };
        OneOfBuilder::new()
            .item(crate::server::input::string_schema().description(Some("One text")))
            .item(one_text().description(Some("One text, as a list of one")))
            .item(
                ArrayBuilder::new()
                    .items(one_text())
                    .min_items(Some(1))
                    .max_items(max_inputs)
                    .description(Some("A batch: [text] per input")),
            )
            .description(Some(
                "A text, or a batch of one-text lists; answers keep the nesting. TEI's sentence \
                 pairs ([text, text]) are refused (422): aft models are bi-encoders.",
            ))
            .into()
    }
}

impl utoipa::PartialSchema for PredictInput {
    fn schema() -> RefOr<openapi::schema::Schema> {
        Self::schema_within(None)
    }
}
impl ToSchema for PredictInput {}

/// TEI's `POST /predict` request.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"inputs": "the printer is out of toner"}))]
pub struct TeiPredictRequest {
    pub inputs: PredictInput,
    /// As in `/embed`.
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default, deserialize_with = "optional_via_string")]
    #[schema(value_type = Option<TruncationDirection>)]
    pub truncation_direction: Option<TruncationDirection>,
    /// The head's logits instead of softmax probabilities.
    #[serde(default)]
    pub raw_scores: bool,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default, deserialize_with = "optional_via_string")]
    pub priority: Option<PriorityField>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Prediction {
    #[schema(example = 0.5)]
    pub score: f32,
    #[schema(example = "computing")]
    pub label: String,
}

/// Every label, highest score first: one list for a single input, one list per input for a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TeiPredictResponse {
    Single(Vec<Prediction>),
    Batch(Vec<Vec<Prediction>>),
}

/// TEI's `POST /tokenize` request.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"inputs": "a cat sat on the mat"}))]
pub struct TeiTokenizeRequest {
    pub inputs: TextInputs,
    /// Add the special tokens the model's inputs get (`[CLS]`, `[SEP]`).
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    #[serde(default)]
    #[schema(schema_with = no_prompts)]
    pub prompt_name: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

/// One token.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimpleToken {
    #[schema(example = 2482)]
    pub id: u32,
    /// The text it covers (a special token: the token itself).
    #[schema(example = "cat")]
    pub text: String,
    pub special: bool,
    /// First byte (UTF-8) of `text` in the input; null for a special token.
    #[schema(example = 2)]
    pub start: Option<usize>,
    /// One past its last byte; null for a special token.
    #[schema(example = 5)]
    pub stop: Option<usize>,
}

impl SimpleToken {
    pub(super) fn of(text: &str, piece: TokenPiece) -> Self {
        if piece.special {
            return Self {
                id: piece.id,
                text: piece.token,
                special: true,
                start: None,
                stop: None,
            };
        }
        let (start, stop) = piece.bytes;
        Self {
            id: piece.id,
            text: text.get(start..stop).map_or(piece.token, str::to_owned),
            special: false,
            start: Some(start),
            stop: Some(stop),
        }
    }
}

/// Per input, its tokens in order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!([[{"id": 101, "text": "[CLS]", "special": true, "start": null, "stop": null}, {"id": 2482, "text": "cat", "special": false, "start": 0, "stop": 3}]]))]
pub struct TeiTokenizeResponse(pub Vec<Vec<SimpleToken>>);

/// `ids` of `/decode`: one token-id list, or a list of them (read by [`IdLists`]).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct InputIds(pub(super) IdLists);

impl InputIds {
    /// The schema, with at most `max_inputs` lists and no id above `largest_id` when given (the
    /// served bounds; see `openapi::bounded`).
    pub fn schema_within(
        max_inputs: Option<usize>,
        largest_id: Option<usize>,
    ) -> RefOr<openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let ids = || {
            ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(largest_id),
            )
        };
        OneOfBuilder::new()
            .item(ids().description(Some("One token-id list")))
            .item(
                ArrayBuilder::new()
                    .items(ids())
                    .min_items(Some(1))
                    .max_items(max_inputs)
                    .description(Some("Several token-id lists")),
            )
            .description(Some(
                "Token ids below the vocabulary size (see `/tokenize`).",
            ))
            .into()
    }
}

impl utoipa::PartialSchema for InputIds {
    fn schema() -> RefOr<openapi::schema::Schema> {
        Self::schema_within(None, None)
    }
}
impl ToSchema for InputIds {}

/// TEI's `POST /decode` request.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"ids": [101, 1037, 4937, 102]}))]
pub struct TeiDecodeRequest {
    pub ids: InputIds,
    /// Leave out special tokens (`[CLS]`, `[SEP]`, padding).
    #[serde(default = "yes")]
    pub skip_special_tokens: bool,
    #[serde(default)]
    pub model: Option<String>,
}

/// One text per id list (a single list gives a list of one).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!(["a cat"]))]
pub struct TeiDecodeResponse(pub Vec<String>);

/// TEI's `model_type`: `{"embedding": {"pooling": "mean"}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TeiModelType {
    Embedding(EmbeddingModel),
}

impl TeiModelType {
    /// The kind of a bundle with `manifest`. Every aft bundle pools an embedding, so every one is
    /// an embedding model in TEI's terms; a classifier head is an extra that `/predict` serves.
    pub fn of(manifest: &Manifest) -> Self {
        Self::Embedding(EmbeddingModel {
            pooling: match manifest.pooling {
                Pooling::Mean => "mean",
                Pooling::Cls => "cls",
            },
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingModel {
    /// `mean` or `cls`.
    #[schema(example = "mean")]
    pub pooling: &'static str,
}

/// TEI's fields of `/info`, beside aft-serve's own (TEI's `version` is aft-serve's `version`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TeiInfo {
    /// The model's name (what `model` takes).
    pub model_id: String,
    /// The SHA-256 of the bundle's model file served (model.pt, or its int8 copy).
    pub model_sha: Option<String>,
    /// `float32` or `float16`.
    pub model_dtype: String,
    pub model_type: TeiModelType,
    /// Inputs that may wait at once (`--max-queue-size`).
    pub max_concurrent_requests: usize,
    /// Longest input in tokens (`limits.max_input_tokens`).
    pub max_input_length: usize,
    pub max_batch_tokens: usize,
    pub max_batch_requests: Option<usize>,
    pub max_client_batch_size: usize,
    /// Whether TEI routes truncate when `truncate` is left out (always true).
    pub auto_truncate: bool,
    pub tokenization_workers: usize,
    /// TEI's build sha and docker label; null.
    pub sha: Option<&'static str>,
    pub docker_label: Option<&'static str>,
}

impl TeiInfo {
    /// The model `name` served from `model_file` of a bundle with `manifest` under `config`, in
    /// TEI's terms.
    pub fn describe(name: &str, manifest: &Manifest, model_file: &str, config: &Config) -> Self {
        let tokenization_workers = match config.tokenization_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Self {
            model_id: name.to_owned(),
            model_sha: manifest.files.get(model_file).map(|f| f.sha256.clone()),
            model_dtype: serde_json::to_value(manifest.dtype)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            model_type: TeiModelType::of(manifest),
            max_concurrent_requests: config.max_queue_size,
            max_input_length: config.max_input_tokens(manifest.max_seq_len),
            max_batch_tokens: config.max_batch_tokens,
            max_batch_requests: Some(config.max_batch_size),
            max_client_batch_size: config.max_client_batch_size,
            auto_truncate: AUTO_TRUNCATE,
            tokenization_workers,
            sha: None,
            docker_label: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::error::ApiError;

    fn predict_input(json: &str) -> Result<PredictInput, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn predict_inputs_read_as_tei_reads_them() {
        let one = |s: &str| Sequence::Single(s.into());
        assert_eq!(
            predict_input(r#""a""#).unwrap(),
            PredictInput::Single(one("a"))
        );
        // Two texts side by side are one pair, not a batch.
        assert_eq!(
            predict_input(r#"["a", "b"]"#).unwrap(),
            PredictInput::Single(Sequence::Pair("a".into(), "b".into()))
        );
        assert_eq!(
            predict_input(r#"[["a"], ["b", "c"]]"#).unwrap(),
            PredictInput::Batch(vec![one("a"), Sequence::Pair("b".into(), "c".into())])
        );
        assert!(predict_input(r#"["a", "b", "c"]"#).is_err());
        assert!(predict_input(r#"[["a", "b", "c"]]"#).is_err());
        assert!(predict_input(r#"[[]]"#).is_err());
        assert!(predict_input("3").is_err());
    }

    #[test]
    fn truncation_defaults_to_on_and_refuses_left_and_prompts() {
        assert_eq!(truncation(None, None, None), Ok(true));
        assert_eq!(truncation(Some(false), None, None), Ok(false));
        assert_eq!(
            truncation(Some(true), Some(TruncationDirection::Right), None),
            Ok(true)
        );
        assert!(truncation(None, Some(TruncationDirection::Left), None).is_err());
        assert!(truncation(Some(false), Some(TruncationDirection::Left), None).is_err());
        assert!(truncation(None, None, Some("query")).is_err());
    }

    #[test]
    fn truncation_direction_takes_either_case() {
        let d = |s: &str| serde_json::from_str::<TruncationDirection>(s).ok();
        assert_eq!(d(r#""Left""#), Some(TruncationDirection::Left));
        assert_eq!(d(r#""right""#), Some(TruncationDirection::Right));
        assert_eq!(d(r#""up""#), None);
    }

    #[test]
    fn errors_take_teis_shape_and_classes() {
        let body = |e: ApiError| serde_json::to_value(e.tei_body()).unwrap();
        let v = body(ServiceError::QueueFull.into());
        assert_eq!(v["error_type"], "Overloaded");
        assert_eq!(v.as_object().unwrap().len(), 2);
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(body(ApiError::Unauthorized)["error_type"], "Validation");
        assert_eq!(
            body(ServiceError::ShuttingDown.into())["error_type"],
            "Unhealthy"
        );
        assert_eq!(
            body(ServiceError::Inference("x".into()).into())["error_type"],
            "Backend"
        );
    }
}
