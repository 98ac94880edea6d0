//! Request and response bodies of the HTTP API, with their OpenAPI schemas. Fields that accept
//! several JSON shapes are read by [`super::input`]; what `/info` reports is in [`super::info`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bundle::ServedPrecision;

use super::input::{optional_via_string, whole_usize, whole_usize_opt, OpenAiInput, TextInputs};

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

/// `priority` of the inference requests. Only lowering is possible: `low` marks bulk work that
/// yields to `normal` work (the input that has waited longest still gets a batch within a fixed
/// number of batches, whatever its class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PriorityField {
    Normal,
    Low,
}

impl From<PriorityField> for crate::core::Priority {
    fn from(p: PriorityField) -> Self {
        match p {
            PriorityField::Normal => Self::Normal,
            PriorityField::Low => Self::Low,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"inputs": ["a cat sat on the mat", "a kitten rested on the rug"]}))]
pub struct EmbedRequest {
    pub inputs: TextInputs,
    /// The model to use (see `GET /v1/models`); the default model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// L2-normalise the embeddings; defaults to the bundle's `normalize` (true for aft-mini).
    #[serde(default)]
    pub normalize: Option<bool>,
    /// Truncate inputs longer than the model's limit; when false they get 422.
    #[serde(default = "yes")]
    pub truncate: bool,
    /// Keep only the first `dimensions` components (then normalise).
    #[serde(default, deserialize_with = "whole_usize_opt")]
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
    /// `normal` (default) or `low` for bulk work; overrides the `x-priority` header.
    #[serde(default, deserialize_with = "optional_via_string")]
    pub priority: Option<PriorityField>,
    /// Late chunking: besides each input's vector, one vector per chunk of it, pooled from the
    /// token states of the one pass over the whole input (so each chunk carries the context of
    /// the whole document), in `chunks`. Needs a bundle that exports `embed_spans` (400
    /// `chunking_unsupported` otherwise; see `late_chunking` in `/info`).
    #[serde(default)]
    pub chunking: Option<ChunkingField>,
}

/// `chunking` of `/v1/embed`: windows of `tokens` text tokens (special tokens excluded), each
/// starting `tokens - overlap` tokens after the one before; the last ends at the input's end.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkingField {
    /// Tokens per chunk.
    #[serde(deserialize_with = "whole_usize")]
    #[schema(minimum = 1)]
    pub tokens: usize,
    /// Tokens each chunk shares with the one before; less than `tokens`.
    #[serde(default, deserialize_with = "whole_usize")]
    #[schema(minimum = 0)]
    pub overlap: usize,
}

impl From<ChunkingField> for crate::service::Chunking {
    fn from(c: ChunkingField) -> Self {
        Self {
            tokens: c.tokens,
            overlap: c.overlap,
        }
    }
}

/// One chunk of an input (late chunking).
#[derive(Debug, Serialize, ToSchema)]
pub struct Chunk {
    /// First character of the chunk in the input text, counted in Unicode code points (Python:
    /// `text[start:end]` is the chunk's text).
    pub start: usize,
    /// One past the chunk's last character (code points).
    pub end: usize,
    /// Tokens in the chunk.
    pub tokens: usize,
    /// The chunk's vector, normalised and cut to `dimensions` as the input's is.
    pub embedding: Vec<f32>,
}

impl From<crate::service::ChunkVector> for Chunk {
    fn from(c: crate::service::ChunkVector) -> Self {
        Self {
            start: c.start,
            end: c.end,
            tokens: c.tokens,
            embedding: c.embedding,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

impl From<crate::service::Usage> for Usage {
    fn from(u: crate::service::Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedResponse {
    pub model: String,
    /// One vector per input, in input order (with `chunking`, the whole document's vector).
    pub embeddings: Vec<Vec<f32>>,
    /// Only with `chunking`: per input, its chunks in text order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<Vec<Chunk>>>,
    pub dimensions: usize,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian float32 bytes, base64-encoded.
    Base64,
}

/// OpenAI's embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"input": ["a cat sat on the mat"], "encoding_format": "float"}))]
pub struct OpenAiEmbeddingsRequest {
    pub input: OpenAiInput,
    /// The model to use (see `GET /v1/models`); the default model when absent.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    #[serde(default, deserialize_with = "whole_usize_opt")]
    #[schema(minimum = 1)]
    pub dimensions: Option<usize>,
    /// Accepted for compatibility; not used.
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "OpenAI clients send it; the service has no use for it"
    )]
    pub user: Option<String>,
    /// `normal` (default) or `low` for bulk work; overrides the `x-priority` header.
    #[serde(default, deserialize_with = "optional_via_string")]
    pub priority: Option<PriorityField>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiEmbedding {
    /// Always `embedding`.
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiEmbeddingsResponse {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<OpenAiEmbedding>,
    pub model: String,
    pub usage: Usage,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"inputs": "the printer is out of toner", "top_k": 3}))]
pub struct ClassifyRequest {
    pub inputs: TextInputs,
    /// The model to use (see `GET /v1/models`); the default model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// How many labels to return per input, most likely first.
    #[serde(default = "one", deserialize_with = "whole_usize")]
    #[schema(minimum = 1)]
    pub top_k: usize,
    #[serde(default = "yes")]
    pub truncate: bool,
    /// `normal` (default) or `low` for bulk work; overrides the `x-priority` header.
    #[serde(default, deserialize_with = "optional_via_string")]
    pub priority: Option<PriorityField>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelScore {
    pub label: String,
    /// Softmax probability.
    pub score: f32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyResponse {
    pub model: String,
    /// Per input, the `top_k` labels, highest score first.
    pub results: Vec<Vec<LabelScore>>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCard {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix time the bundle was exported.
    pub created: u64,
    pub owned_by: &'static str,
    /// `float` or `int8`: the bundle's model file served (`--precision`); an aft-serve field.
    pub precision: ServedPrecision,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (live) or `ready`.
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_values() {
        let p = |json: &str| {
            serde_json::from_str::<EmbedRequest>(&format!(r#"{{"inputs": "x"{json}}}"#))
                .map(|r| r.priority)
                .map_err(|e| (e.classify(), e.to_string()))
        };
        assert_eq!(p("").unwrap(), None);
        assert_eq!(p(r#", "priority": null"#).unwrap(), None);
        assert_eq!(
            p(r#", "priority": "low""#).unwrap(),
            Some(PriorityField::Low)
        );
        assert_eq!(
            p(r#", "priority": "normal""#).unwrap(),
            Some(PriorityField::Normal)
        );
        for bad in [r#", "priority": "high""#, r#", "priority": 3"#] {
            let (class, msg) = p(bad).unwrap_err();
            assert_eq!(class, serde_json::error::Category::Data, "{msg}");
        }
    }

    #[test]
    fn integer_fields_take_integral_numbers_in_any_notation() {
        let top_k = |json: &str| {
            serde_json::from_str::<ClassifyRequest>(&format!(
                r#"{{"inputs": "x", "top_k": {json}}}"#
            ))
            .map(|r| r.top_k)
        };
        assert_eq!(top_k("3").unwrap(), 3);
        assert_eq!(top_k("3.0").unwrap(), 3);
        assert_eq!(top_k("18446744073709551615").unwrap(), usize::MAX);
        assert!(top_k("2.5").is_err());
        assert!(top_k("-1").is_err());
        assert!(top_k("18446744073709551616").is_err());
        assert!(top_k("null").is_err());
        let dims = |json: &str| {
            serde_json::from_str::<EmbedRequest>(&format!(
                r#"{{"inputs": "x", "dimensions": {json}}}"#
            ))
            .map(|r| r.dimensions)
        };
        assert_eq!(dims("8.0").unwrap(), Some(8));
        assert_eq!(dims("null").unwrap(), None);
        assert_eq!(
            serde_json::from_str::<EmbedRequest>(r#"{"inputs": "x"}"#)
                .unwrap()
                .dimensions,
            None
        );
        assert!(dims("8.5").is_err());
    }
}
