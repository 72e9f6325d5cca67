//! The fields that take several JSON shapes, deserialized straight into their final types, and
//! their schemas.

use std::borrow::Cow;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Schema};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::checks::{check_count, check_text_lengths, check_token_ids, token_ids_refused};
use crate::inference::Inputs;
use crate::state::Limits;
use crate::{Error, Result};

/// `input`: a string, an array of strings, an array of token ids or an array of arrays of
/// token ids (ids of the model's vocabulary, without `<s>`/`</s>`), as OpenAI accepts it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InputField {
    inputs: Inputs,
    /// Sent as one string rather than an array: errors name it `input`, not `input[0]`.
    lone: bool,
}

impl InputField {
    /// Checks the count against `max_inputs`, each text's length against `max_text_chars`, and
    /// token ids: refused unless `allow_token_ids`, then each checked against the vocabulary.
    /// `param` is the field's name (`input`, or text-embeddings-inference's `inputs`).
    pub fn validate(
        self,
        param: &'static str,
        vocab_size: usize,
        limits: Limits,
        allow_token_ids: bool,
    ) -> Result<Inputs> {
        check_count(param, self.inputs.len(), limits.max_inputs)?;
        match &self.inputs {
            Inputs::Texts(texts) => {
                check_text_lengths(param, texts, self.lone, limits.max_text_chars)?
            }
            Inputs::TokenIds(_) if !allow_token_ids => return Err(token_ids_refused(param)),
            Inputs::TokenIds(lists) => check_token_ids(param, lists, vocab_size)?,
        }
        Ok(self.inputs)
    }

    /// The inputs as they were sent, unchecked.
    pub fn into_inputs(self) -> Inputs {
        self.inputs
    }
}

impl PartialSchema for InputField {
    fn schema() -> RefOr<Schema> {
        let ids = || {
            ArrayBuilder::new()
                .items(u32::schema())
                .description(Some("Token ids of one input, without `<s>` and `</s>`"))
        };
        OneOfBuilder::new()
            .item(String::schema())
            .item(
                ArrayBuilder::new()
                    .items(String::schema())
                    .min_items(Some(1)),
            )
            .item(ids().min_items(Some(1)))
            .item(ArrayBuilder::new().items(ids()).min_items(Some(1)))
            .description(Some(
                "A text, an array of texts, an array of token ids (one input) or an array of \
                 arrays of token ids",
            ))
            .into()
    }
}

impl ToSchema for InputField {
    fn name() -> Cow<'static, str> {
        "Input".into()
    }
}

impl<'de> Deserialize<'de> for InputField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = InputField;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a string, an array of strings, an array of token ids or an array of arrays of \
             token ids",
        )
    }

    fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<InputField, E> {
        self.visit_string(text.to_string())
    }

    fn visit_string<E: de::Error>(self, text: String) -> std::result::Result<InputField, E> {
        Ok(InputField {
            inputs: Inputs::Texts(vec![text]),
            lone: true,
        })
    }

    /// The first element decides which array this is; the others must be alike.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<InputField, A::Error> {
        let Some(first) = seq.next_element::<First>()? else {
            return Err(de::Error::custom("must not be an empty array"));
        };
        let inputs = match first {
            First::Text(text) => {
                let mut texts = vec![text];
                while let Some(text) = seq.next_element::<String>()? {
                    texts.push(text);
                }
                Inputs::Texts(texts)
            }
            First::Id(id) => {
                let mut ids = vec![id];
                while let Some(TokenId(id)) = seq.next_element()? {
                    ids.push(id);
                }
                Inputs::TokenIds(vec![ids])
            }
            First::Ids(ids) => {
                let mut lists = vec![ids];
                while let Some(TokenIds(ids)) = seq.next_element()? {
                    lists.push(ids);
                }
                Inputs::TokenIds(lists)
            }
        };
        Ok(InputField {
            inputs,
            lone: false,
        })
    }
}

/// The first element of an `input` array.
enum First {
    Text(String),
    Id(u32),
    Ids(Vec<u32>),
}

impl<'de> Deserialize<'de> for First {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct FirstVisitor;
        impl<'de> Visitor<'de> for FirstVisitor {
            type Value = First;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token id or an array of token ids")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<First, E> {
                Ok(First::Text(text.to_string()))
            }
            fn visit_string<E: de::Error>(self, text: String) -> std::result::Result<First, E> {
                Ok(First::Text(text))
            }
            fn visit_u64<E: de::Error>(self, id: u64) -> std::result::Result<First, E> {
                TokenIdVisitor.visit_u64(id).map(First::Id)
            }
            fn visit_i64<E: de::Error>(self, id: i64) -> std::result::Result<First, E> {
                TokenIdVisitor.visit_i64(id).map(First::Id)
            }
            fn visit_f64<E: de::Error>(self, id: f64) -> std::result::Result<First, E> {
                TokenIdVisitor.visit_f64(id).map(First::Id)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<First, A::Error> {
                TokenIdsVisitor.visit_seq(seq).map(First::Ids)
            }
        }
        deserializer.deserialize_any(FirstVisitor)
    }
}

/// A token id: an integer in 0..=u32::MAX (the vocabulary is checked later).
struct TokenId(u32);

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(TokenIdVisitor).map(TokenId)
    }
}

struct TokenIdVisitor;

impl<'de> Visitor<'de> for TokenIdVisitor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a token id (a non-negative integer)")
    }

    fn visit_u64<E: de::Error>(self, id: u64) -> std::result::Result<u32, E> {
        u32::try_from(id).map_err(|_| E::custom(format!("token id {id} is too large")))
    }

    fn visit_i64<E: de::Error>(self, id: i64) -> std::result::Result<u32, E> {
        match u64::try_from(id) {
            Ok(id) => self.visit_u64(id),
            Err(_) => Err(E::custom(format!("token ids are not negative, got {id}"))),
        }
    }

    /// `5.0` is the integer 5, as JSON Schema counts it; `1.5` is no token id.
    fn visit_f64<E: de::Error>(self, id: f64) -> std::result::Result<u32, E> {
        match integral(id) {
            Some(n) => self.visit_u64(n),
            None if id < 0.0 => Err(E::custom(format!("token ids are not negative, got {id}"))),
            None => Err(E::custom(format!("token ids are integers, got {id}"))),
        }
    }
}

/// A number with no fractional part, in 0..=2^53, as an integer.
fn integral(n: f64) -> Option<u64> {
    (n.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&n)).then_some(n as u64)
}

/// A non-negative integer option (`max_length`, `dimensions`, `batch_size`, ...): a JSON
/// integer, or a number with no fractional part (`512.0`), which JSON Schema counts as an
/// integer and some clients (pydantic's, JavaScript's) send; at most [`Integer::MAX`], the
/// `int32` of the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Integer(pub usize);

impl Integer {
    pub const MAX: u64 = i32::MAX as u64;

    pub fn get(value: Option<Integer>) -> Option<usize> {
        value.map(|n| n.0)
    }
}

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct IntegerVisitor;
        impl Visitor<'_> for IntegerVisitor {
            type Value = Integer;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Integer, E> {
                if n > Integer::MAX {
                    return Err(E::custom(format!(
                        "{n} is too large (at most {})",
                        Integer::MAX
                    )));
                }
                Ok(Integer(n as usize))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Integer, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> std::result::Result<Integer, E> {
                match integral(n) {
                    Some(n) => self.visit_u64(n),
                    None => Err(E::invalid_value(de::Unexpected::Float(n), &self)),
                }
            }
        }
        deserializer.deserialize_any(IntegerVisitor)
    }
}

/// An array of token ids.
struct TokenIds(Vec<u32>);

impl<'de> Deserialize<'de> for TokenIds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_seq(TokenIdsVisitor).map(TokenIds)
    }
}

struct TokenIdsVisitor;

impl<'de> Visitor<'de> for TokenIdsVisitor {
    type Value = Vec<u32>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of token ids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<u32>, A::Error> {
        let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(8192));
        while let Some(TokenId(id)) = seq.next_element()? {
            ids.push(id);
        }
        Ok(ids)
    }
}

/// A list of texts (`sentences_1`, `sentences_2`): a non-empty array of strings, or one
/// string standing for a list of one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Texts {
    texts: Vec<String>,
    /// Sent as one string: errors name it `sentences_1`, not `sentences_1[0]`.
    lone: bool,
}

impl PartialSchema for Texts {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ArrayBuilder::new()
                    .items(String::schema())
                    .min_items(Some(1)),
            )
            .item(String::schema())
            .description(Some(
                "An array of texts, or one text standing for an array of one",
            ))
            .into()
    }
}

impl ToSchema for Texts {}

impl<'de> Deserialize<'de> for Texts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct TextsVisitor;
        impl<'de> Visitor<'de> for TextsVisitor {
            type Value = Texts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Self::Value, E> {
                self.visit_string(text.to_string())
            }
            fn visit_string<E: de::Error>(
                self,
                text: String,
            ) -> std::result::Result<Self::Value, E> {
                Ok(Texts {
                    texts: vec![text],
                    lone: true,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut texts = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    texts.push(text);
                }
                if texts.is_empty() {
                    return Err(de::Error::custom("must not be an empty array"));
                }
                Ok(Texts { texts, lone: false })
            }
        }
        deserializer.deserialize_any(TextsVisitor)
    }
}

/// A required list of texts: `param` missing (or `null`) is a 400; more than `max_inputs` texts
/// or a text of more than `max_text_chars` is a 413.
pub(crate) fn texts(
    value: Option<Texts>,
    param: &'static str,
    limits: Limits,
) -> Result<Vec<String>> {
    let Texts { texts, lone } = value.ok_or_else(|| Error::missing(param))?;
    check_count(param, texts.len(), limits.max_inputs)?;
    check_text_lengths(param, &texts, lone, limits.max_text_chars)?;
    Ok(texts)
}

/// `input_type`: which outputs to compute. An object picks them, each flag absent or null
/// for its default; a string (`"query"`, `"passage"`, `"document"`, as some OpenAI-compatible
/// clients send) picks none, as BGE-M3 embeds both sides alike. A flag that is not a boolean
/// is named by its path (`input_type.dense`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct InputType(Flags);

/// The flags of `input_type`, each absent or null for its default.
#[derive(Debug, Default, PartialEq, Eq, serde::Deserialize)]
struct Flags {
    dense: Option<bool>,
    sparse: Option<bool>,
    colbert: Option<bool>,
}

impl InputType {
    /// The outputs asked for: `dense` and `sparse` default to true, `colbert` to false; at
    /// least one must be on.
    pub fn outputs(self) -> Result<bge_m3_core::Outputs> {
        let defaults = bge_m3_core::Outputs::default();
        let Flags {
            dense,
            sparse,
            colbert,
        } = self.0;
        let outputs = bge_m3_core::Outputs {
            dense: dense.unwrap_or(defaults.dense),
            sparse: sparse.unwrap_or(defaults.sparse),
            colbert: colbert.unwrap_or(defaults.colbert),
        };
        if !(outputs.dense || outputs.sparse || outputs.colbert) {
            return Err(Error::invalid(
                "input_type",
                "asks for no output: set at least one of dense, sparse, colbert to true",
            ));
        }
        Ok(outputs)
    }

    /// The field as a request has it: absent or null for the defaults.
    pub fn outputs_of(field: Option<Self>) -> Result<bge_m3_core::Outputs> {
        field.unwrap_or_default().outputs()
    }
}

/// An object of flags or a string label, told apart by what the body holds.
struct InputTypeVisitor;

impl<'de> Visitor<'de> for InputTypeVisitor {
    type Value = InputType;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "an object like {\"dense\": true, \"sparse\": true, \"colbert\": false} or a string",
        )
    }

    fn visit_str<E: de::Error>(self, _label: &str) -> std::result::Result<InputType, E> {
        Ok(InputType::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<InputType, A::Error> {
        Flags::deserialize(MapAccessDeserializer::new(map)).map(InputType)
    }
}

impl<'de> Deserialize<'de> for InputType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(InputTypeVisitor)
    }
}
