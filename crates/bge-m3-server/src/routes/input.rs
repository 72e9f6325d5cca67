//! The request fields that take several JSON shapes (`input`, `sentences_*`, `input_type`) and
//! the numeric options shared by the routes. Each error names the field and what was wrong.
//!
//! `input` and `sentences_*` are deserialized straight into their final types rather than
//! through `serde_json::Value`, which would take ~70 bytes per token id of a body of ids.

use std::fmt;

use bge_m3_core::Outputs;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

use crate::batcher::Inputs;
use crate::{Error, Result};

/// `input`: a string, an array of strings, an array of token ids or an array of arrays of
/// token ids (ids of the model's vocabulary, without `<s>`/`</s>`), as OpenAI accepts it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InputField(pub Inputs);

impl InputField {
    /// Checks the count against `max_inputs` and every token id against the vocabulary.
    pub fn validate(self, vocab_size: usize, max_inputs: usize) -> Result<Inputs> {
        check_count("input", self.0.len(), max_inputs)?;
        if let Inputs::TokenIds(lists) = &self.0 {
            bge_m3_core::tokenize::check_token_ids(lists, vocab_size)?;
        }
        Ok(self.0)
    }
}

impl<'de> Deserialize<'de> for InputField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(InputVisitor).map(InputField)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = Inputs;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a string, an array of strings, an array of token ids or an array of arrays of \
             token ids",
        )
    }

    fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Inputs, E> {
        Ok(Inputs::Texts(vec![text.to_string()]))
    }

    fn visit_string<E: de::Error>(self, text: String) -> std::result::Result<Inputs, E> {
        Ok(Inputs::Texts(vec![text]))
    }

    /// The first element decides which array this is; the others must be alike.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Inputs, A::Error> {
        let Some(first) = seq.next_element::<First>()? else {
            return Err(de::Error::custom("must not be an empty array"));
        };
        Ok(match first {
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

    fn visit_f64<E: de::Error>(self, id: f64) -> std::result::Result<u32, E> {
        Err(E::custom(format!("token ids are integers, got {id}")))
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
pub(crate) struct Texts(pub Vec<String>);

impl<'de> Deserialize<'de> for Texts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct TextsVisitor;
        impl<'de> Visitor<'de> for TextsVisitor {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Self::Value, E> {
                Ok(vec![text.to_string()])
            }
            fn visit_string<E: de::Error>(
                self,
                text: String,
            ) -> std::result::Result<Self::Value, E> {
                Ok(vec![text])
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
                Ok(texts)
            }
        }
        deserializer.deserialize_any(TextsVisitor).map(Texts)
    }
}

/// A required list of texts: `param` missing (or `null`) is a 400, so is more than `max_inputs`.
pub(crate) fn texts(
    value: Option<Texts>,
    param: &'static str,
    max_inputs: usize,
) -> Result<Vec<String>> {
    let Texts(texts) = value.ok_or_else(|| Error::missing(param))?;
    check_count(param, texts.len(), max_inputs)?;
    Ok(texts)
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

/// `batch_size`: at least 1, default 12 (the core's default, the original service's).
pub(crate) fn batch_size(value: Option<usize>) -> Result<usize> {
    match value {
        None => Ok(bge_m3_core::EncodeOptions::default().batch_size),
        Some(0) => Err(Error::invalid("batch_size", "must be at least 1, got 0")),
        Some(n) => Ok(n),
    }
}

fn check_count(param: &'static str, count: usize, limit: usize) -> Result<()> {
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

    fn input(json: &str) -> Result<Inputs> {
        let request: Request = parse(format!(r#"{{"input": {json}}}"#).as_bytes())?;
        request
            .input
            .ok_or(Error::missing("input"))?
            .validate(100, 3)
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
    fn sentences() {
        #[derive(Debug, serde::Deserialize)]
        struct Pairs {
            sentences_1: Option<Texts>,
        }
        let parse_texts = |json: &str| {
            let pairs: Pairs = parse(format!(r#"{{"sentences_1": {json}}}"#).as_bytes())?;
            texts(pairs.sentences_1, "sentences_1", 2)
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
