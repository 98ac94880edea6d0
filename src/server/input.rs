//! Lenient reading of request fields: the shapes JSON allows for one thing (a text or a list of
//! texts; token ids in any integral notation; an enum written as a string), each turned into one
//! Rust value, with the schema that says what is accepted. The request bodies that use them are
//! in [`super::types`].

use std::fmt;

use serde::de::{self, Deserializer, IntoDeserializer, SeqAccess, Visitor};
use serde::Deserialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::tokenize::Input;

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

pub fn whole_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Whole::deserialize(d)?.into_int("a non-negative integer that fits 64 bits")
}

pub fn whole_usize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Option::<Whole>::deserialize(d)?
        .map(|w| w.into_int("a non-negative integer that fits 64 bits"))
        .transpose()
}

/// Reads an optional enum field through a string, so a value of the wrong type is a 422 like any
/// other bad field (serde_json reports a number where an enum is expected as a syntax error, a
/// 400).
pub fn optional_via_string<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => T::deserialize(s.into_deserializer()).map(Some),
    }
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
// that depend on the served models and the configuration (most inputs per request, the largest
// token id) are given when `/openapi.json` is built (`openapi::bounded`).

pub(super) fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
}

fn token_ids_schema(largest_id: Option<usize>) -> ArrayBuilder {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(largest_id),
        )
        .min_items(Some(1))
}

impl TextInputs {
    /// The schema, with at most `max_inputs` texts when given (the served bound; see
    /// `openapi::bounded`).
    pub fn schema_within(max_inputs: Option<usize>) -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(string_schema())
            .item(
                ArrayBuilder::new()
                    .items(string_schema())
                    .min_items(Some(1))
                    .max_items(max_inputs),
            )
            .description(Some(
                "A text, or a list of texts (answers keep their order). Texts must not be empty; \
                 a request holds at most `limits.max_client_batch_size` of them (see /info).",
            ))
            .into()
    }
}

impl PartialSchema for TextInputs {
    fn schema() -> RefOr<Schema> {
        Self::schema_within(None)
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

/// Token-id lists as `/decode` takes them: one list (`[1, 2]`, `[]`) or several (`[[1], [2]]`),
/// ids in any integral notation.
#[derive(Debug, Clone, PartialEq)]
pub struct IdLists(pub Vec<Vec<i64>>);

impl<'de> Deserialize<'de> for IdLists {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdLists;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of token ids, or an array of arrays of token ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdLists, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element::<Item>()? {
                    items.push(item);
                }
                let mixed = || de::Error::custom("ids mixes token ids and token-id arrays");
                match items.first() {
                    None => Ok(IdLists(vec![Vec::new()])),
                    Some(Item::Ids(_)) => items
                        .into_iter()
                        .map(|i| match i {
                            Item::Ids(ids) => Ok(ids),
                            _ => Err(mixed()),
                        })
                        .collect::<Result<_, _>>()
                        .map(IdLists),
                    Some(_) => items
                        .into_iter()
                        .map(|i| match i {
                            Item::Id(id) => Ok(id),
                            _ => Err(mixed()),
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(|ids| IdLists(vec![ids])),
                }
            }
        }
        d.deserialize_seq(V)
    }
}

impl OpenAiInput {
    /// The schema, with at most `max_inputs` inputs and no token id above `largest_id` when
    /// given (the served bounds; see `openapi::bounded`).
    pub fn schema_within(max_inputs: Option<usize>, largest_id: Option<usize>) -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(string_schema())
            .item(
                ArrayBuilder::new()
                    .items(string_schema())
                    .min_items(Some(1))
                    .max_items(max_inputs),
            )
            .item(token_ids_schema(largest_id))
            .item(
                ArrayBuilder::new()
                    .items(token_ids_schema(largest_id))
                    .min_items(Some(1))
                    .max_items(max_inputs),
            )
            .description(Some(
                "A text, a list of texts, a list of token ids, or a list of token-id lists. \
                 Token ids go to the model as given (include any special tokens) and must be \
                 below the vocabulary size; longer lists are truncated to the model's limit.",
            ))
            .into()
    }
}

impl PartialSchema for OpenAiInput {
    fn schema() -> RefOr<Schema> {
        Self::schema_within(None, None)
    }
}
impl ToSchema for OpenAiInput {}

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
