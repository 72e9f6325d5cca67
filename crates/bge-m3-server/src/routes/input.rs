//! The request fields that take several JSON shapes (`input`, `sentences_*`, `input_type`) and
//! the numeric options shared by the routes. Each error names the field and what was wrong.
//!
//! `input` and `sentences_*` are deserialized straight into their final types rather than
//! through `serde_json::Value`, which would take ~70 bytes per token id of a body of ids.

use std::borrow::Cow;
use std::fmt;

use bge_m3_core::{Outputs, ScoreWeights};
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::batcher::Inputs;
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

/// The 400 for token ids while `--allow-token-ids` is off. Ids of another tokenizer fall inside
/// BGE-M3's 250,002 ids and would be embedded silently as unrelated pieces; LangChain's
/// `OpenAIEmbeddings` sends OpenAI's tiktoken ids by default, so the message says what to set.
pub(crate) fn token_ids_refused(param: &str) -> Error {
    Error::InvalidRequest {
        param: Some(param.to_string()),
        message: format!(
            "`{param}` holds token ids, which this server refuses unless it runs with \
             --allow-token-ids (ALLOW_TOKEN_IDS=true): ids of another tokenizer would be \
             embedded as unrelated BGE-M3 pieces without any error. Send the texts instead; \
             with LangChain, create OpenAIEmbeddings(..., check_embedding_ctx_length=False), \
             which sends texts rather than OpenAI's tiktoken ids. Ids of BGE-M3's own \
             tokenizer (POST /tokenize) are accepted once the server allows them."
        ),
        code: "token_ids_not_allowed",
    }
}

/// The core's vocabulary check of token ids ([`bge_m3_core::check_token_ids`]), its
/// error reported on `param`, the field that held the ids (`input`, `inputs`, `ids`).
pub(crate) fn check_token_ids(param: &str, lists: &[Vec<u32>], vocab_size: usize) -> Result<()> {
    bge_m3_core::check_token_ids(lists, vocab_size).map_err(|e| match e {
        bge_m3_core::Error::InvalidInput { message, .. } => Error::invalid(param, message),
        other => other.into(),
    })
}

/// text-embeddings-inference's `truncation_direction`: only `Right` is what BGE-M3 does.
pub(crate) fn check_truncation_direction(value: Option<&str>) -> Result<()> {
    match value {
        None => Ok(()),
        Some(direction) if direction.eq_ignore_ascii_case("right") => Ok(()),
        Some(other) => Err(Error::invalid(
            "truncation_direction",
            format!("only `Right` is supported (texts keep their start), got {other:?}"),
        )),
    }
}

/// `dimensions`: 1 to the dense width, or absent (all of them).
pub(crate) fn dimensions(value: Option<usize>, dense_dim: usize) -> Result<Option<usize>> {
    match value {
        Some(d) if !(1..=dense_dim).contains(&d) => Err(Error::invalid(
            "dimensions",
            format!("must be between 1 and {dense_dim}, got {d}"),
        )),
        other => Ok(other),
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

/// The largest weight: three of them still have a finite f32 sum.
const MAX_WEIGHT: f32 = 1e38;

/// The smallest weight that counts as positive: smaller ones may round to 0 as f32, and the
/// weights need a positive sum.
const MIN_POSITIVE_WEIGHT: f32 = 1e-37;

/// `weights` (see [`weights`]): three numbers from 0 to 1e38, at least one of them 1e-37 or
/// more ([`weights_contains`], which the document adds), or null for the default.
pub(crate) fn weights_schema() -> Schema {
    let weights = serde_json::json!({
        "type": ["array", "null"],
        "items": {"type": "number", "format": "float", "minimum": 0, "maximum": decimal(MAX_WEIGHT)},
        "minItems": 3,
        "maxItems": 3,
        "example": [0.4, 0.2, 0.4],
        "description": "`[dense, sparse, colbert]`: each from 0 to 1e38, at least one 1e-37 or more",
    });
    serde_json::from_value(weights).expect("the weights schema is a schema")
}

/// What `weights` must contain: one weight of at least 1e-37, so that their sum is positive.
pub(crate) fn weights_contains() -> Value {
    serde_json::json!({"type": "number", "minimum": decimal(MIN_POSITIVE_WEIGHT)})
}

/// `value` as the decimal it was written as (1e38, not the 9.99999968e37 that widening the f32
/// to f64 gives), for the document.
fn decimal(value: f32) -> f64 {
    value
        .to_string()
        .parse()
        .expect("an f32 prints as a decimal number")
}

/// A field that must be absent or null (`prompt_name`: BGE-M3 has no prompts).
pub(crate) fn null_schema() -> Schema {
    ObjectBuilder::new().schema_type(Type::Null).into()
}

/// The schema of `input_type` (see [`parse_outputs`]): an object of flags asking for at least
/// one output, a string, or null.
pub(crate) fn input_type_schema() -> Schema {
    let flag = |description: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Boolean, Type::Null]))
            .description(Some(description))
    };
    let flags = ObjectBuilder::new()
        .property(
            "dense",
            flag("The dense vector (default true; null: the default)"),
        )
        .property(
            "sparse",
            flag("The sparse weights (default true; null: the default)"),
        )
        .property(
            "colbert",
            flag("The ColBERT vectors (default false; null: the default)"),
        );
    // Absent and null mean the default: dense and sparse are on unless false.
    let on = |name: &str, values: &[Value], required: bool| {
        let types = values.iter().map(|v| match v {
            Value::Null => Type::Null,
            _ => Type::Boolean,
        });
        let object = ObjectBuilder::new().property(
            name,
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter(types))
                .enum_values(Some(values.to_vec())),
        );
        if required {
            object.required(name)
        } else {
            object
        }
    };
    let some_output = AnyOfBuilder::new()
        .item(on("dense", &[Value::Bool(true), Value::Null], false))
        .item(on("sparse", &[Value::Bool(true), Value::Null], false))
        .item(on("colbert", &[Value::Bool(true)], true))
        .description(Some(
            "At least one output: all three false is refused with 400 `invalid_value`",
        ));
    OneOfBuilder::new()
        .item(AllOfBuilder::new().item(flags).item(some_output))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "`query`, `passage`, `document`, ...: accepted, changes nothing",
                )),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "Which outputs to compute; absent or null: dense and sparse",
        ))
        .into()
}

/// `input_type`: which outputs to compute. An object picks them (`dense` and `sparse`
/// default to true, `colbert` to false); a string (`"query"`, `"passage"`, `"document"`, as
/// some OpenAI-compatible clients send) changes nothing, as BGE-M3 embeds both sides alike.
pub(crate) fn parse_outputs(value: Option<Value>) -> Result<Outputs> {
    let defaults = Outputs::default();
    let outputs = match value {
        None | Some(Value::Null) | Some(Value::String(_)) => return Ok(defaults),
        Some(Value::Object(fields)) => {
            let flag = |name: &str, default: bool| match fields.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(flag)) => Ok(*flag),
                Some(other) => Err(Error::invalid(
                    format!("input_type.{name}"),
                    format!("must be true or false, got {other}"),
                )),
            };
            Outputs {
                dense: flag("dense", defaults.dense)?,
                sparse: flag("sparse", defaults.sparse)?,
                colbert: flag("colbert", defaults.colbert)?,
            }
        }
        Some(other) => {
            return Err(Error::invalid(
                "input_type",
                format!(
                    "must be an object like {{\"dense\": true, \"sparse\": true, \"colbert\": \
                     false}} or a string, got {other}"
                ),
            ))
        }
    };
    if !(outputs.dense || outputs.sparse || outputs.colbert) {
        return Err(Error::invalid(
            "input_type",
            "asks for no output: set at least one of dense, sparse, colbert to true",
        ));
    }
    Ok(outputs)
}

/// A token length (`max_length`, `max_query_length`, ...): `default` when absent, else within
/// 1..=`max` (the model's 8192).
pub(crate) fn length(
    param: &str,
    value: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize> {
    match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(Error::invalid(
            param,
            format!("must be between 1 and {max}, got {n}"),
        )),
    }
}

/// `weights`: three numbers `[dense, sparse, colbert]` (checked by the core: >= 0, with a
/// positive sum), `default` when absent.
pub(crate) fn weights(value: Option<Vec<f32>>, default: ScoreWeights) -> Result<ScoreWeights> {
    match value.as_deref() {
        None => Ok(default),
        Some(&[dense, sparse, colbert]) => {
            let all = [dense, sparse, colbert];
            if all.iter().any(|w| *w > MAX_WEIGHT) {
                return Err(Error::invalid(
                    "weights",
                    format!("each weight must be at most 1e38, got {all:?}"),
                ));
            }
            if all.iter().all(|w| *w >= 0.0 && *w < MIN_POSITIVE_WEIGHT) {
                return Err(Error::invalid(
                    "weights",
                    format!("at least one weight must be 1e-37 or more, got {all:?}"),
                ));
            }
            Ok(ScoreWeights::try_from(all)?)
        }
        Some(other) => Err(Error::invalid(
            "weights",
            format!(
                "must be three numbers [dense, sparse, colbert], got {}",
                other.len()
            ),
        )),
    }
}

/// `batch_size`: at least 1, default 12 (the core's default, the original service's).
pub(crate) fn batch_size(value: Option<usize>) -> Result<usize> {
    match value {
        None => Ok(bge_m3_core::EncodeOptions::default().batch_size),
        Some(0) => Err(Error::invalid("batch_size", "must be at least 1, got 0")),
        Some(n) => Ok(n),
    }
}

/// Refuses a text of more than `limit` characters, naming it `param[i]` (`param` for a lone
/// string). It is refused rather than truncated: the model truncates to `max_length` tokens
/// anyway, and this limit is there to bound the tokenizer's work on what it would throw away.
pub(crate) fn check_text_lengths(
    param: &'static str,
    texts: &[String],
    lone: bool,
    limit: usize,
) -> Result<()> {
    for (i, text) in texts.iter().enumerate() {
        // A text of at most `limit` bytes has at most `limit` characters: most texts are never
        // counted.
        if text.len() <= limit {
            continue;
        }
        let chars = text.chars().count();
        if chars > limit {
            return Err(Error::TextTooLong {
                param,
                path: if lone {
                    param.to_string()
                } else {
                    format!("{param}[{i}]")
                },
                chars,
                limit,
            });
        }
    }
    Ok(())
}

pub(crate) fn check_count(param: &'static str, count: usize, limit: usize) -> Result<()> {
    if count > limit {
        return Err(Error::TooManyInputs {
            param,
            count,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse;

    #[derive(Debug, serde::Deserialize)]
    struct Request {
        input: Option<InputField>,
    }

    /// At most `max_inputs` inputs of at most 5 characters.
    fn limits(max_inputs: usize) -> Limits {
        Limits {
            max_inputs,
            max_text_chars: 5,
            ..Limits::default()
        }
    }

    fn input(json: &str) -> Result<Inputs> {
        let request: Request = parse(format!(r#"{{"input": {json}}}"#).as_bytes())?;
        request
            .input
            .ok_or(Error::missing("input"))?
            .validate("input", 100, limits(3), true)
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn every_input_shape() {
        assert_eq!(input(r#""a""#).unwrap(), Inputs::Texts(vec!["a".into()]));
        assert_eq!(
            input(r#"["a", ""]"#).unwrap(),
            Inputs::Texts(vec!["a".into(), "".into()])
        );
        assert_eq!(input("[5, 6]").unwrap(), Inputs::TokenIds(vec![vec![5, 6]]));
        assert_eq!(
            input("[[5], []]").unwrap(),
            Inputs::TokenIds(vec![vec![5], vec![]])
        );
    }

    #[test]
    fn bad_inputs_say_where() {
        assert!(message(input("[]")).contains("`input`: must not be an empty array"));
        assert!(message(input(r#"["a", 1]"#)).contains("`input[1]`"));
        assert!(
            message(input("[1, -2]")).contains("`input[1]`: token ids are not negative, got -2")
        );
        assert!(message(input("[[1], [2, -1]]")).contains("`input[1][1]`"));
        assert!(
            message(input("[[1], [2, 100]]")).contains("token id 100 at input[1][1] is outside")
        );
        assert!(message(input("[1.5]")).contains("integers"));
        assert!(message(input("[4294967296]")).contains("too large"));
        assert!(message(input("[[1], 2]")).contains("`input[1]`"));
        assert!(message(input(r#"{"text": "a"}"#)).contains("`input`"));
        assert!(message(input("5")).contains("`input`"));
        assert!(matches!(
            input("null"),
            Err(Error::InvalidRequest {
                code: "missing_field",
                ..
            })
        ));
        assert!(matches!(
            input(r#"["a", "b", "c", "d"]"#),
            Err(Error::TooManyInputs {
                count: 4,
                limit: 3,
                ..
            })
        ));
        // A single array of ids is one input, however long.
        assert!(input("[1, 2, 3, 4, 5]").is_ok());
    }

    #[test]
    fn token_ids_are_refused_unless_allowed() {
        let request: Request = parse(br#"{"input": [[5, 6], [7]]}"#).unwrap();
        let error = request
            .input
            .unwrap()
            .validate("input", 100, limits(3), false)
            .unwrap_err();
        assert!(matches!(
            &error,
            Error::InvalidRequest { param: Some(p), code: "token_ids_not_allowed", .. } if p == "input"
        ));
        let message = error.to_string();
        assert!(
            message.contains("check_embedding_ctx_length=False"),
            "{message}"
        );
        assert!(message.contains("--allow-token-ids"), "{message}");
        // Texts are unaffected.
        let request: Request = parse(br#"{"input": ["a"]}"#).unwrap();
        assert!(request
            .input
            .unwrap()
            .validate("input", 100, limits(3), false)
            .is_ok());
    }

    #[test]
    fn only_right_truncation() {
        assert!(check_truncation_direction(None).is_ok());
        assert!(check_truncation_direction(Some("Right")).is_ok());
        assert!(check_truncation_direction(Some("right")).is_ok());
        let error = check_truncation_direction(Some("Left")).unwrap_err();
        assert!(
            matches!(&error, Error::InvalidRequest { param: Some(p), .. } if p == "truncation_direction")
        );
    }

    #[test]
    fn sentences() {
        #[derive(Debug, serde::Deserialize)]
        struct Pairs {
            sentences_1: Option<Texts>,
        }
        let parse_texts = |json: &str| {
            let pairs: Pairs = parse(format!(r#"{{"sentences_1": {json}}}"#).as_bytes())?;
            texts(pairs.sentences_1, "sentences_1", limits(2))
        };
        assert_eq!(parse_texts(r#""a""#).unwrap(), ["a"]);
        assert_eq!(parse_texts(r#"["a", "b"]"#).unwrap(), ["a", "b"]);
        assert!(message(parse_texts("[]")).contains("empty"));
        assert!(message(parse_texts(r#"["a", 1]"#)).contains("`sentences_1[1]`"));
        assert!(matches!(
            parse_texts(r#"["a", "b", "c"]"#),
            Err(Error::TooManyInputs { .. })
        ));
        assert!(matches!(
            parse_texts("null"),
            Err(Error::InvalidRequest {
                code: "missing_field",
                ..
            })
        ));
    }

    #[test]
    fn long_texts_are_refused_by_name() {
        let too_long = |result: Result<Inputs>| match result {
            Err(Error::TextTooLong {
                param,
                path,
                chars,
                limit,
            }) => (param, path, chars, limit),
            other => panic!("expected TextTooLong, got {other:?}"),
        };
        assert_eq!(
            too_long(input(r#""abcdef""#)),
            ("input", "input".to_string(), 6, 5)
        );
        assert_eq!(
            too_long(input(r#"["abcde", "abcdefg"]"#)),
            ("input", "input[1]".to_string(), 7, 5)
        );
        assert_eq!(
            message(input(r#"["a", "abcdef"]"#)),
            "`input[1]` has 6 characters, more than the limit of 5 per text"
        );
        // Characters, not bytes: five two-byte characters pass, six do not.
        assert!(input(r#""ééééé""#).is_ok());
        assert_eq!(
            too_long(input(r#""éééééé""#)),
            ("input", "input".to_string(), 6, 5)
        );
        // Token ids are not texts.
        assert!(input("[1, 2, 3, 4, 5, 6, 7]").is_ok());

        #[derive(Debug, serde::Deserialize)]
        struct Pairs {
            sentences_2: Option<Texts>,
        }
        let passages = |json: &str| {
            let pairs: Pairs = parse(format!(r#"{{"sentences_2": {json}}}"#).as_bytes())?;
            texts(pairs.sentences_2, "sentences_2", limits(2))
        };
        assert!(passages(r#"["abcde"]"#).is_ok());
        assert!(matches!(
            passages(r#"["abcdef", "a"]"#),
            Err(Error::TextTooLong { param: "sentences_2", path, .. }) if path == "sentences_2[0]"
        ));
        assert!(matches!(
            passages(r#""abcdef""#),
            Err(Error::TextTooLong { path, .. }) if path == "sentences_2"
        ));
    }

    #[test]
    fn outputs() {
        use serde_json::json;
        assert_eq!(parse_outputs(None).unwrap(), Outputs::default());
        assert_eq!(
            parse_outputs(Some(json!("query"))).unwrap(),
            Outputs::default()
        );
        assert_eq!(
            parse_outputs(Some(json!({"colbert": true, "sparse": false}))).unwrap(),
            Outputs {
                dense: true,
                sparse: false,
                colbert: true
            }
        );
        assert!(message(parse_outputs(Some(json!({"dense": "yes"})))).contains("input_type.dense"));
        assert!(message(parse_outputs(Some(
            json!({"dense": false, "sparse": false})
        )))
        .contains("no output"));
        assert!(parse_outputs(Some(json!(1))).is_err());
    }

    #[test]
    fn lengths() {
        assert_eq!(length("max_length", None, 8192, 8192).unwrap(), 8192);
        assert_eq!(length("max_length", Some(1), 8192, 8192).unwrap(), 1);
        assert!(message(length("max_length", Some(0), 8192, 8192))
            .contains("between 1 and 8192, got 0"));
        assert!(length("max_length", Some(8193), 8192, 8192).is_err());
        assert!(batch_size(Some(0)).is_err());
        assert_eq!(batch_size(None).unwrap(), 12);
    }
}
