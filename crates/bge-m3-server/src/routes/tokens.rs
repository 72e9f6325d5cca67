//! text-embeddings-inference's tokenizer routes, `POST /tokenize` and `POST /decode`, with the
//! model's own tokenizer. Their work is admitted, reserved and done in chunks like the texts of
//! the embeddings routes (see [`crate::inference`]), and their answers are written as the client
//! reads them. Every difference from text-embeddings-inference is in docs/API.md.

use std::sync::Arc;

use actix_web::web;
use actix_web::HttpResponse;
use bge_m3_core::{BgeM3, TextToken};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Schema};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::answer::{self, array, Pieces};
use super::input::{self, InputField, Texts};
use super::reply::tokenized;
use super::responses::EncodeErrors;
use crate::inference::{DecodeJob, Inputs, TokenizeJob};
use crate::routes::extract::Json;
use crate::state::AppState;
use crate::{Error, Result};

/// The body of `/tokenize`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct TokenizeRequest {
    /// A text or an array of texts.
    #[schema(value_type = Texts, required = true)]
    inputs: Option<Texts>,
    /// Add `<s>` and `</s>`; default true.
    add_special_tokens: Option<bool>,
    /// Must be absent or null: BGE-M3 has no prompts.
    #[schema(schema_with = input::null_schema)]
    prompt_name: Option<String>,
}

/// One token, text-embeddings-inference's `SimpleToken`.
#[derive(Serialize, ToSchema)]
struct SimpleToken {
    id: u32,
    /// The token's part of the text (a special token's own string).
    text: String,
    special: bool,
    /// Byte offset of its start in the text; null for a special token.
    start: Option<usize>,
    /// Byte offset of its end; null for a special token.
    stop: Option<usize>,
}

/// `POST /tokenize`.
#[utoipa::path(
    post,
    path = "/tokenize",
    tag = "text-embeddings-inference",
    summary = "The model's tokens of texts (text-embeddings-inference's shape)",
    description = "Each text's tokens with their byte spans; whole texts, not truncated.",
    request_body = TokenizeRequest,
    responses(
        (status = 200, description = "One list of tokens per text", body = Vec<Vec<SimpleToken>>),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn tokenize(
    state: web::Data<AppState>,
    Json(request, reservation): Json<TokenizeRequest>,
) -> Result<HttpResponse> {
    if let Some(name) = request.prompt_name {
        return Err(Error::invalid(
            "prompt_name",
            format!("BGE-M3 has no prompts, got {name:?}"),
        ));
    }
    let texts = input::texts(request.inputs, "inputs", state.limits())?;
    let job = TokenizeJob {
        texts,
        add_special_tokens: request.add_special_tokens.unwrap_or(true),
    };
    let ready = state.ready()?;
    let tokens = ready.inference.text_tokens(job, reservation).await?;
    let count = tokens.tokens.iter().map(Vec::len).sum();
    let tokenization = tokens.tokenization;
    let pieces = token_pieces(tokens.texts, tokens.tokens, ready.inference.model().clone());
    Ok(tokenized(
        answer::respond(pieces, tokens.reservation),
        count,
        tokenization,
    ))
}

/// `/tokenize`'s answer, `[[SimpleToken, ...], ...]`, written as the client reads it: each
/// token's text is cut from its text when its turn comes, so the answer holds the texts and 16
/// bytes a token, never the JSON (some 64 bytes a token).
fn token_pieces(texts: Arc<Vec<String>>, tokens: Vec<Vec<TextToken>>, model: Arc<BgeM3>) -> Pieces {
    let lists = tokens
        .into_iter()
        .enumerate()
        .map(move |(i, tokens)| TokenList {
            texts: texts.clone(),
            text: i,
            tokens: tokens.into_iter(),
            model: model.clone(),
            state: ListState::Opening,
        });
    Box::new(answer::array_of(lists))
}

/// Tokens of a text written per piece of the answer.
const TOKENS_PER_PIECE: usize = 512;

/// One text's list of tokens in pieces of [`TOKENS_PER_PIECE`] tokens.
struct TokenList {
    texts: Arc<Vec<String>>,
    text: usize,
    tokens: std::vec::IntoIter<TextToken>,
    model: Arc<BgeM3>,
    state: ListState,
}

#[derive(PartialEq)]
enum ListState {
    Opening,
    Going,
    Closed,
}

impl Iterator for TokenList {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut piece = Vec::new();
        match self.state {
            ListState::Closed => return None,
            ListState::Opening => piece.push(b'['),
            ListState::Going => {}
        }
        let text = &self.texts[self.text];
        for token in self.tokens.by_ref().take(TOKENS_PER_PIECE) {
            if self.state == ListState::Going {
                piece.push(b',');
            }
            self.state = ListState::Going;
            let (string, start, stop) = match token.span {
                None => {
                    let string = self.model.tokenizer().token_string(token.id);
                    (string.unwrap_or_default(), None, None)
                }
                Some((start, stop)) => {
                    let (start, stop) = (start as usize, stop as usize);
                    let bytes = text.as_bytes().get(start..stop).unwrap_or_default();
                    let string = String::from_utf8_lossy(bytes).into_owned();
                    (string, Some(start), Some(stop))
                }
            };
            let token = SimpleToken {
                id: token.id,
                text: string,
                special: token.span.is_none(),
                start,
                stop,
            };
            serde_json::to_writer(&mut piece, &token).expect("a token serializes");
        }
        if self.tokens.len() == 0 {
            piece.push(b']');
            self.state = ListState::Closed;
        }
        Some(piece)
    }
}

/// `ids` of `/decode`: one list of token ids, or a non-empty array of them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ids(Vec<Vec<u32>>);

impl PartialSchema for Ids {
    fn schema() -> RefOr<Schema> {
        let ids = || ArrayBuilder::new().items(u32::schema()).min_items(Some(1));
        OneOfBuilder::new()
            .item(ids())
            .item(ArrayBuilder::new().items(ids()).min_items(Some(1)))
            .description(Some("Token ids, or an array of lists of token ids"))
            .into()
    }
}

impl ToSchema for Ids {}

impl<'de> Deserialize<'de> for Ids {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // `input`'s parser already reads one list or a list of lists of ids, naming the element
        // at fault; `/decode` takes no texts.
        match InputField::deserialize(d)?.into_inputs() {
            Inputs::TokenIds(lists) => Ok(Ids(lists)),
            Inputs::Texts(_) => Err(serde::de::Error::custom(
                "expected token ids or an array of lists of token ids, got text",
            )),
        }
    }
}

/// The body of `/decode`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct DecodeRequest {
    /// Token ids of the model's vocabulary, or an array of lists of them.
    #[schema(value_type = Ids, required = true)]
    ids: Option<Ids>,
    /// Leave out `<s>`, `</s>`, `<pad>`, `<unk>` and `<mask>`; default true.
    skip_special_tokens: Option<bool>,
}

/// `POST /decode`.
#[utoipa::path(
    post,
    path = "/decode",
    tag = "text-embeddings-inference",
    summary = "The text of token ids (text-embeddings-inference's shape)",
    request_body = DecodeRequest,
    responses(
        (status = 200, description = "One text per list of ids", body = Vec<String>),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn decode(
    state: web::Data<AppState>,
    Json(request, reservation): Json<DecodeRequest>,
) -> Result<HttpResponse> {
    let Ids(lists) = request.ids.ok_or_else(|| Error::missing("ids"))?;
    let info = &state.ready()?.info;
    input::check_count("ids", lists.len(), state.limits().max_inputs)?;
    if lists.iter().any(Vec::is_empty) {
        return Err(Error::invalid("ids", "a list of ids must not be empty"));
    }
    input::check_token_ids("ids", &lists, info.vocab_size)?;
    let ids = lists.iter().map(Vec::len).sum();
    let job = DecodeJob {
        ids: lists,
        skip_special_tokens: request.skip_special_tokens.unwrap_or(true),
    };
    let decoded = state.ready()?.inference.decode(job, reservation).await?;
    let pieces = Box::new(array(decoded.texts.into_iter()));
    Ok(tokenized(
        answer::respond(pieces, decoded.reservation),
        ids,
        decoded.decoding,
    ))
}
