//! The request fields that take several JSON shapes (`input`, `sentences_*`, `input_type`) and
//! the numeric options shared by the routes. Each error names the field and what was wrong.
//!
//! `input` and `sentences_*` are deserialized straight into their final types rather than
//! through `serde_json::Value`, which would take ~70 bytes per token id of a body of ids.

mod checks;
mod schema;
mod shapes;
#[cfg(test)]
mod tests;

pub(crate) use self::checks::*;
pub(crate) use self::schema::*;
pub(crate) use self::shapes::*;
