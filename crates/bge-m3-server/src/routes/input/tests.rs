//! The request fields' tests: every shape, limit and error message.

use bge_m3_core::Outputs;

use super::*;
use crate::inference::Inputs;
use crate::routes::extract::parse;
use crate::state::Limits;
use crate::{Error, Result};

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
    assert!(message(input("[1, -2]")).contains("`input[1]`: token ids are not negative, got -2"));
    assert!(message(input("[[1], [2, -1]]")).contains("`input[1][1]`"));
    assert!(message(input("[[1], [2, 100]]")).contains("token id 100 at input[1][1] is outside"));
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
    #[derive(Debug, serde::Deserialize)]
    struct Body {
        input_type: Option<InputType>,
    }
    let outputs = |body: &str| {
        let body: Body = parse(body.as_bytes())?;
        InputType::outputs_of(body.input_type)
    };
    assert_eq!(outputs("{}").unwrap(), Outputs::default());
    assert_eq!(
        outputs(r#"{"input_type": null}"#).unwrap(),
        Outputs::default()
    );
    assert_eq!(
        outputs(r#"{"input_type": "query"}"#).unwrap(),
        Outputs::default()
    );
    assert_eq!(
        outputs(r#"{"input_type": {"colbert": true, "sparse": false, "dense": null}}"#).unwrap(),
        Outputs {
            dense: true,
            sparse: false,
            colbert: true
        }
    );
    let err = outputs(r#"{"input_type": {"dense": "yes"}}"#).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRequest { param: Some(p), .. } if p == "input_type.dense"),
        "{err:?}"
    );
    assert!(message(outputs(
        r#"{"input_type": {"dense": false, "sparse": false}}"#
    ))
    .contains("no output"));
    let err = outputs(r#"{"input_type": 1}"#).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRequest { param: Some(p), .. } if p == "input_type"),
        "{err:?}"
    );
    assert!(err.to_string().contains("or a string"), "{err}");
}

#[test]
fn lengths() {
    assert_eq!(length("max_length", None, 8192, 8192).unwrap(), 8192);
    assert_eq!(length("max_length", Some(1), 8192, 8192).unwrap(), 1);
    assert!(
        message(length("max_length", Some(0), 8192, 8192)).contains("between 1 and 8192, got 0")
    );
    assert!(length("max_length", Some(8193), 8192, 8192).is_err());
    // `batch_size` 0 is refused once, by the inference layer, for every route
    // (`inference::tests::a_batch_size_of_0_is_refused_before_admission`, and the API's
    // `errors::batch_size_and_dimensions_out_of_range`); here it only takes its default.
    assert_eq!(batch_size(Some(3)), 3);
    assert_eq!(batch_size(None), 12);
}
