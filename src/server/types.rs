//! Request and response bodies of the HTTP API, with their OpenAPI schemas.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::tokenize::Input;

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

/// An integer written as any JSON number without a fractional part: `3`, `3.0` and `3e0` alike.
/// JSON has one number type, and the document's `integer` (JSON Schema) admits all three; some
/// clients write every number with a decimal point.
struct Whole(i128);

/// 2^64: every integral `f64` below it (in magnitude) fits an `i128` with room to spare.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Whole;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
                Ok(Whole(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole, E> {
                Whole::from_f64(v)
            }
        }
        d.deserialize_any(V)
    }
}

impl Whole {
    fn from_f64<E: de::Error>(v: f64) -> Result<Self, E> {
        if v.fract() == 0.0 && v.abs() <= TWO_POW_64 {
            // Exact: integral and far inside i128's range.
            Ok(Whole(v as i128))
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &"an integer"))
        }
    }

    fn into_int<T: TryFrom<i128>, E: de::Error>(self, what: &'static str) -> Result<T, E> {
        T::try_from(self.0)
            .map_err(|_| E::invalid_value(de::Unexpected::Other("an integer out of range"), &what))
    }
}

fn whole_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Whole::deserialize(d)?.into_int("a non-negative integer that fits 64 bits")
}

fn whole_usize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Option::<Whole>::deserialize(d)?
        .map(|w| w.into_int("a non-negative integer that fits 64 bits"))
        .transpose()
}

/// `inputs` of `/v1/embed` and `/v1/classify`: one text or a list of texts.
#[derive(Debug, Clone, PartialEq)]
pub struct TextInputs(pub Vec<String>);

impl<'de> Deserialize<'de> for TextInputs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextInputs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TextInputs, E> {
                Ok(TextInputs(vec![s.to_owned()]))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<TextInputs, E> {
                Ok(TextInputs(vec![s]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextInputs, A::Error> {
                let mut texts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(text) = seq.next_element::<String>()? {
                    texts.push(text);
                }
                Ok(TextInputs(texts))
            }
        }
        d.deserialize_any(V)
    }
}

impl TextInputs {
    pub fn into_inputs(self) -> Vec<Input> {
        self.0.into_iter().map(Input::Text).collect()
    }
}

// The schemas below say what the service accepts: no empty text, no empty list. The bounds
// that depend on the served model and the configuration (most inputs per request, the largest
// token id) are filled in when the document is built (`openapi::document`).

fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
}

fn token_ids_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .min_items(Some(1))
}

impl PartialSchema for TextInputs {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(string_schema())
            .item(
                ArrayBuilder::new()
                    .items(string_schema())
                    .min_items(Some(1)),
            )
            .description(Some(
                "A text, or a list of texts (answers keep their order). Texts must not be empty; \
                 a request holds at most `limits.max_client_batch_size` of them (see /info).",
            ))
            .into()
    }
}
impl ToSchema for TextInputs {}

/// `input` of `/v1/embeddings` (OpenAI): a text, texts, one token-id list, or token-id lists.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiInput(pub Vec<Input>);

/// One element of an `input` array, before the array is checked for consistency.
enum Item {
    Text(String),
    Id(i64),
    Ids(Vec<i64>),
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token id, or an array of token ids")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Item, E> {
                Ok(Item::Text(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Item, E> {
                Ok(Item::Text(s))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Item, E> {
                Ok(Item::Id(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Item, E> {
                i64::try_from(v)
                    .map(Item::Id)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &"a token id"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Item, E> {
                Whole::from_f64(v)?.into_int("a token id").map(Item::Id)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(id) = seq.next_element::<Whole>()? {
                    ids.push(id.into_int("a token id")?);
                }
                Ok(Item::Ids(ids))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for OpenAiInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OpenAiInput;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array of strings, an array of token ids, or an array of arrays of token ids")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OpenAiInput, E> {
                Ok(OpenAiInput(vec![Input::Text(s.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OpenAiInput, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element::<Item>()? {
                    items.push(item);
                }
                let mixed = || {
                    de::Error::custom(
                        "input mixes strings, token ids and token-id arrays; use one kind",
                    )
                };
                match items.first() {
                    None => Ok(OpenAiInput(Vec::new())),
                    Some(Item::Text(_)) => items
                        .into_iter()
                        .map(|i| match i {
                            Item::Text(t) => Ok(Input::Text(t)),
                            _ => Err(mixed()),
                        })
                        .collect::<Result<_, _>>()
                        .map(OpenAiInput),
                    // A flat array of ids is one pre-tokenized input.
                    Some(Item::Id(_)) => items
                        .into_iter()
                        .map(|i| match i {
                            Item::Id(id) => Ok(id),
                            _ => Err(mixed()),
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(|ids| OpenAiInput(vec![Input::Ids(ids)])),
                    Some(Item::Ids(_)) => items
                        .into_iter()
                        .map(|i| match i {
                            Item::Ids(ids) => Ok(Input::Ids(ids)),
                            _ => Err(mixed()),
                        })
                        .collect::<Result<_, _>>()
                        .map(OpenAiInput),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl PartialSchema for OpenAiInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(string_schema())
            .item(
                ArrayBuilder::new()
                    .items(string_schema())
                    .min_items(Some(1)),
            )
            .item(token_ids_schema())
            .item(
                ArrayBuilder::new()
                    .items(token_ids_schema())
                    .min_items(Some(1)),
            )
            .description(Some(
                "A text, a list of texts, a list of token ids, or a list of token-id lists. \
                 Token ids go to the model as given (include any special tokens) and must be \
                 below the vocabulary size; longer lists are truncated to the model's limit.",
            ))
            .into()
    }
}
impl ToSchema for OpenAiInput {}

/// `priority` of the inference requests. Only lowering is possible: `low` marks bulk work that
/// yields to `normal` work (it still gets a batch at least every 8 while it waits longest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PriorityField {
    Normal,
    Low,
}

/// Reads `priority` through a string, so a value of the wrong type is a 422 like any other bad
/// field (serde_json reports a number where an enum is expected as a syntax error, a 400).
fn priority<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PriorityField>, D::Error> {
    use serde::de::IntoDeserializer;
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => PriorityField::deserialize(s.as_str().into_deserializer()).map(Some),
    }
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
    #[serde(default, deserialize_with = "priority")]
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
    pub user: Option<String>,
    /// `normal` (default) or `low` for bulk work; overrides the `x-priority` header.
    #[serde(default, deserialize_with = "priority")]
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
    #[serde(default, deserialize_with = "priority")]
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
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Limits {
    /// The model's limit (manifest `max_seq_len`).
    pub max_seq_len: usize,
    /// Longest input accepted, in tokens: `max_seq_len`, or `--max-input-tokens` when lower.
    pub max_input_tokens: usize,
    /// Most tokens waiting for this model at once (`--max-queued-tokens`); 0 when unbounded.
    pub max_queued_tokens: usize,
    /// Inputs longer than this run on the long-input lane; null when this model has none.
    pub long_input_tokens: Option<usize>,
    /// Most chunk vectors per request (`--max-chunks`).
    pub max_chunks: usize,
    pub max_client_batch_size: usize,
    pub max_body_bytes: usize,
    pub max_batch_tokens: usize,
    pub max_batch_size: usize,
    pub max_queue_size: usize,
    /// 0 when there is no per-key limit.
    pub max_queued_tokens_per_key: usize,
    pub request_timeout_ms: u64,
}

/// One served model: its name, where it runs, and its limits.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelInfo {
    pub model: String,
    pub device: String,
    /// Inference workers of this model.
    pub workers: usize,
    /// `fair` or `fifo` (`--scheduling`).
    pub scheduling: &'static str,
    pub dimensions: usize,
    /// Classifier labels; null for a model without a head.
    pub labels: Option<Vec<String>>,
    /// Whether `/v1/embed` accepts `chunking` for this model (its bundle exports `embed_spans`).
    pub late_chunking: bool,
    pub limits: Limits,
    /// The bundle's manifest.json.
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

/// The service: the default model's fields at the top level (as when one model was served),
/// aft-serve's version, and every served model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Info {
    #[serde(flatten)]
    pub default_model: ModelInfo,
    /// aft-serve's version.
    pub version: &'static str,
    /// Every served model, the default first.
    pub models: Vec<ModelInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (live) or `ready`.
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai(json: &str) -> Result<Vec<Input>, String> {
        serde_json::from_str::<OpenAiInput>(json)
            .map(|i| i.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn openai_input_shapes() {
        assert_eq!(openai(r#""hi""#).unwrap(), vec![Input::Text("hi".into())]);
        assert_eq!(openai(r#"["a","b"]"#).unwrap().len(), 2);
        assert_eq!(openai("[1,2,3]").unwrap(), vec![Input::Ids(vec![1, 2, 3])]);
        assert_eq!(
            openai("[[1,2],[3]]").unwrap(),
            vec![Input::Ids(vec![1, 2]), Input::Ids(vec![3])]
        );
        assert_eq!(openai("[-1]").unwrap(), vec![Input::Ids(vec![-1])]);
        assert!(openai("[]").unwrap().is_empty());
        assert!(openai(r#"["a", 1]"#).unwrap_err().contains("mixes"));
        assert!(openai("[[1], 2]").is_err());
        assert!(openai("[[[1]]]").is_err());
        assert!(openai("[1.5]").is_err());
        // JSON has one number type: integral numbers with a decimal point or exponent are ids.
        assert_eq!(openai("[2.0, 3e0]").unwrap(), vec![Input::Ids(vec![2, 3])]);
        assert_eq!(openai("[[4.0]]").unwrap(), vec![Input::Ids(vec![4])]);
        assert!(openai("[1e300]").is_err());
        assert!(openai("[[0.5]]").is_err());
        assert!(openai("[18446744073709551615]").is_err());
        assert!(openai("null").is_err());
        assert!(openai("{}").is_err());
    }

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

    #[test]
    fn text_input_shapes() {
        let t = |json: &str| serde_json::from_str::<TextInputs>(json).map(|t| t.0);
        assert_eq!(t(r#""x""#).unwrap(), vec!["x".to_string()]);
        assert_eq!(t(r#"["x","y"]"#).unwrap().len(), 2);
        assert!(t("[1]").is_err());
        assert!(t(r#"[["x"]]"#).is_err());
        assert!(t("null").is_err());
        assert!(t("3").is_err());
    }
}
