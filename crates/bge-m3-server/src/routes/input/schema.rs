//! The schemas of the fields whose rules JSON Schema states by hand: `weights`, `input_type`
//! and the fields that must be null.

use bge_m3_core::ScoreWeights;
use serde_json::Value;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};

/// `weights` (see [`weights`]): the core's rule ([`ScoreWeights::validate`]) in JSON Schema,
/// three numbers from 0 to 1e38, at least one of them 1e-37 or more ([`weights_contains`],
/// which the document adds), or null for the default.
pub(crate) fn weights_schema() -> Schema {
    let weights = serde_json::json!({
        "type": ["array", "null"],
        "items": {"type": "number", "format": "float", "minimum": 0, "maximum": decimal(ScoreWeights::MAX)},
        "minItems": 3,
        "maxItems": 3,
        "example": [0.4, 0.2, 0.4],
        "description": "`[dense, sparse, colbert]`: each from 0 to 1e38, at least one 1e-37 or more",
    });
    serde_json::from_value(weights).expect("the weights schema is a schema")
}

/// What `weights` must contain: one weight of at least 1e-37, so that their sum is positive.
pub(crate) fn weights_contains() -> Value {
    serde_json::json!({"type": "number", "minimum": decimal(ScoreWeights::MIN_POSITIVE)})
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

/// The schema of `input_type` (see [`InputType`](super::InputType)): an object of flags asking for at least
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
