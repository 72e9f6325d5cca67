//! Reranking, scored the way FlagEmbedding reranks with BGE-M3: a document's relevance to the
//! query is `compute_score`'s `colbert+sparse+dense` for that (query, document) pair alone,
//! the query truncated at 512 tokens and the document at 8192, weights `[0.4, 0.2, 0.4]`
//! (`--rerank-weights`) unless the request gives `weights`; results best first.
//!
//! Three shapes of one computation:
//! - `POST /rerank`: text-embeddings-inference's `{query, texts, ...}` -> `[{index, score}]`;
//! - `POST /v1/rerank`: Cohere v1's and Jina's `{model, query, documents, top_n, ...}` ->
//!   `{id, results: [{index, relevance_score, document}], ...}`;
//! - `POST /v2/rerank`: what the `cohere` SDK's `ClientV2.rerank` sends.
//!
//! The scores go through the inference layer like `/score`'s, so reranking shares forward passes with
//! every other request.

use std::fmt;

use actix_web::{web, HttpResponse};
use bge_m3_core::ScoreOptions;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::input::{self, Integer, Texts};
use super::reply::{answered, Usage};
use super::responses::EncodeErrors;
use crate::inference::memory::Reservation;
use crate::inference::{ScoreJob, Timings};
use crate::routes::extract::Json;
use crate::state::AppState;
use crate::{Error, Result};

/// What every rerank shape asks for, validated.
struct Query {
    query: String,
    documents: Vec<String>,
    weights: Option<Vec<f32>>,
    /// Truncation of the documents in tokens (`max_tokens_per_doc`), else 8192.
    max_passage_length: Option<usize>,
}

/// A document's place in the request and its score, best first.
struct Ranked {
    index: usize,
    score: f32,
}

struct Ranking {
    ranked: Vec<Ranked>,
    tokens: usize,
    timings: Timings,
}

/// Scores every document against the query and sorts them, best first (ties in request
/// order).
/// Ranks `query`'s documents within the request's memory reservation.
async fn rank(state: &AppState, query: Query, reservation: Option<Reservation>) -> Result<Ranking> {
    let ready = state.ready()?;
    let limits = state.limits();
    input::check_text_lengths(
        "query",
        std::slice::from_ref(&query.query),
        true,
        limits.max_text_chars,
    )?;
    let longest = ready.info.max_length;
    let defaults = ScoreOptions::default();
    let options = ScoreOptions::default()
        .with_weights(input::weights(query.weights, state.rerank_weights())?)
        .with_max_query_length(defaults.max_query_length.min(longest))
        .with_max_passage_length(input::length(
            "max_tokens_per_doc",
            query.max_passage_length,
            defaults.max_passage_length.min(longest),
            longest,
        )?)
        .with_batch_size(defaults.batch_size);
    let scored = ready
        .inference
        .score_within(
            ScoreJob::rerank(query.query, query.documents, options),
            reservation,
        )
        .await?;
    let mut ranked: Vec<Ranked> = scored
        .scores
        .iter()
        .enumerate()
        .map(|(index, scores)| Ranked {
            index,
            score: scores.colbert_sparse_dense,
        })
        .collect();
    // Stable: equal scores keep the request's order.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(Ranking {
        ranked,
        tokens: scored.tokens,
        timings: scored.timings,
    })
}

/// A required `query` string.
fn required_query(query: Option<String>) -> Result<String> {
    query.ok_or_else(|| Error::missing("query"))
}

/// The body of `POST /rerank`, text-embeddings-inference's.
#[derive(Debug, serde::Deserialize, ToSchema)]
pub(crate) struct TeiRerankRequest {
    /// The query.
    #[schema(value_type = String, required = true, example = "What is BGE M3?")]
    query: Option<String>,
    /// The texts to rank against it.
    #[schema(value_type = Texts, required = true)]
    texts: Option<Texts>,
    /// Add each text to its result; default false.
    return_text: Option<bool>,
    /// Accepted; texts are always truncated (the query at 512 tokens, texts at 8192), as
    /// FlagEmbedding's `compute_score` does.
    #[allow(dead_code)]
    truncate: Option<bool>,
    /// `Right` (the default) only: truncation keeps the start of a text.
    #[schema(pattern = "^[Rr][Ii][Gg][Hh][Tt]$")]
    truncation_direction: Option<String>,
    /// Accepted, changes nothing: the score is always the raw fused score (no sigmoid).
    #[allow(dead_code)]
    raw_scores: Option<bool>,
    /// `[dense, sparse, colbert]` weights of the score; default `[0.4, 0.2, 0.4]` (or the
    /// server's `--rerank-weights`).
    #[schema(schema_with = input::weights_schema)]
    weights: Option<Vec<f32>>,
}

/// One ranked text (text-embeddings-inference's `Rank`).
#[derive(Serialize, ToSchema)]
struct TeiRank<'a> {
    /// The text's position in `texts`.
    index: usize,
    /// The text, with `return_text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    /// `colbert+sparse+dense` of the (query, text) pair: not a probability; with the default
    /// weights it is at most about 1, and its sparse part can exceed 1.
    score: f32,
}

/// `POST /rerank`.
#[utoipa::path(
    post,
    path = "/rerank",
    tag = "rerank",
    summary = "Rerank texts against a query (text-embeddings-inference's shape)",
    description = "Each text's score is `colbert+sparse+dense` of FlagEmbedding's \
        `compute_score` for the pair (query, text) alone; best first.",
    request_body = TeiRerankRequest,
    responses(
        (status = 200, description = "The texts, best first", body = Vec<TeiRank>),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn tei(
    state: web::Data<AppState>,
    Json(request, reservation): Json<TeiRerankRequest>,
) -> Result<HttpResponse> {
    input::check_truncation_direction(request.truncation_direction.as_deref())?;
    let query = required_query(request.query)?;
    let texts = input::texts(request.texts, "texts", state.limits())?;
    // A copy only when the answer repeats the texts.
    let returned = request.return_text.unwrap_or(false).then(|| texts.clone());
    let ranking = rank(
        &state,
        Query {
            query,
            documents: texts,
            weights: request.weights,
            max_passage_length: None,
        },
        reservation,
    )
    .await?;
    let body: Vec<TeiRank> = ranking
        .ranked
        .iter()
        .map(|r| TeiRank {
            index: r.index,
            text: returned.as_ref().map(|texts| texts[r.index].as_str()),
            score: r.score,
        })
        .collect();
    Ok(answered(
        HttpResponse::Ok().json(body),
        ranking.tokens,
        ranking.timings,
    ))
}

/// `documents` of Cohere's and Jina's rerank: strings, or objects whose `text` is ranked (other
/// keys are ignored).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Documents(Vec<String>);

impl PartialSchema for Documents {
    fn schema() -> RefOr<Schema> {
        let object = ObjectBuilder::new()
            .property("text", String::schema())
            .required("text")
            .description(Some("A document as an object; its `text` is ranked"));
        ArrayBuilder::new()
            .items(OneOfBuilder::new().item(String::schema()).item(object))
            .min_items(Some(1))
            .description(Some("The documents: strings, or `{\"text\": ...}` objects"))
            .into()
    }
}

impl ToSchema for Documents {}

impl<'de> Deserialize<'de> for Documents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct DocumentsVisitor;
        impl<'de> Visitor<'de> for DocumentsVisitor {
            type Value = Documents;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of strings or of {\"text\": ...} objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Documents, A::Error> {
                let mut documents = Vec::new();
                while let Some(Document(text)) = seq.next_element()? {
                    documents.push(text);
                }
                if documents.is_empty() {
                    return Err(de::Error::custom("must not be an empty array"));
                }
                Ok(Documents(documents))
            }
        }
        deserializer.deserialize_seq(DocumentsVisitor)
    }
}

/// One document: a string or an object with a string `text`.
struct Document(String);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct DocumentVisitor;
        impl<'de> Visitor<'de> for DocumentVisitor {
            type Value = Document;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an object with a string `text`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> std::result::Result<Document, E> {
                Ok(Document(text.to_string()))
            }
            fn visit_string<E: de::Error>(self, text: String) -> std::result::Result<Document, E> {
                Ok(Document(text))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Document, A::Error> {
                let mut text = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "text" {
                        text = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                text.map(Document)
                    .ok_or_else(|| de::Error::missing_field("text"))
            }
        }
        deserializer.deserialize_any(DocumentVisitor)
    }
}

/// The body of `POST /v1/rerank` (Cohere v1, Jina) and `POST /v2/rerank` (Cohere v2).
#[derive(Debug, serde::Deserialize, ToSchema)]
pub(crate) struct CohereRerankRequest {
    /// The served model id or an alias; absent means the served model.
    #[schema(example = "bge-m3")]
    model: Option<String>,
    /// The query.
    #[schema(value_type = String, required = true, example = "What is BGE M3?")]
    query: Option<String>,
    /// The documents to rank against it.
    #[schema(value_type = Documents, required = true)]
    documents: Option<Documents>,
    /// Return only the best N (at least 1); default all.
    #[schema(value_type = Option<i32>, minimum = 1)]
    top_n: Option<Integer>,
    /// Add `document: {text}` to each result; default true on `/v1/rerank` (Jina's default),
    /// false on `/v2/rerank` (Cohere v2 returns none).
    return_documents: Option<bool>,
    /// Truncation of each document in tokens, `<s>` and `</s>` counted (1 to 8192); default
    /// 8192. The query is truncated at 512.
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 8192)]
    max_tokens_per_doc: Option<Integer>,
    /// `[dense, sparse, colbert]` weights of the score; default `[0.4, 0.2, 0.4]` (or the
    /// server's `--rerank-weights`).
    #[schema(schema_with = input::weights_schema)]
    weights: Option<Vec<f32>>,
}

/// One ranked document.
#[derive(Serialize, ToSchema)]
struct CohereResult<'a> {
    /// The document's position in `documents`.
    index: usize,
    /// `colbert+sparse+dense` of the (query, document) pair: not a probability; with the
    /// default weights it is at most about 1, and its sparse part can exceed 1.
    relevance_score: f32,
    /// The document's text, with `return_documents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<DocumentText<'a>>,
}

#[derive(Serialize, ToSchema)]
struct DocumentText<'a> {
    text: &'a str,
}

/// Cohere's `meta`.
#[derive(Serialize, ToSchema)]
struct Meta {
    api_version: ApiVersion,
    billed_units: BilledUnits,
}

#[derive(Serialize, ToSchema)]
struct ApiVersion {
    /// `1` or `2`, the route's.
    version: &'static str,
}

#[derive(Serialize, ToSchema)]
struct BilledUnits {
    /// Always 1: one query.
    search_units: u32,
}

/// Cohere's rerank response, with Jina's `model` and `usage`.
#[derive(Serialize, ToSchema)]
struct CohereResponse<'a> {
    /// A new id for this response.
    id: String,
    /// The served model id.
    model: &'a str,
    /// The documents, best first, at most `top_n`.
    results: Vec<CohereResult<'a>>,
    meta: Meta,
    usage: Usage,
}

#[derive(Clone, Copy)]
enum CohereVersion {
    V1,
    V2,
}

async fn cohere(
    state: &AppState,
    request: CohereRerankRequest,
    reservation: Option<Reservation>,
    version: CohereVersion,
) -> Result<HttpResponse> {
    state.check_model(request.model.as_deref())?;
    let query = required_query(request.query)?;
    let Documents(documents) = request
        .documents
        .ok_or_else(|| Error::missing("documents"))?;
    let limits = state.limits();
    input::check_count("documents", documents.len(), limits.max_inputs)?;
    input::check_text_lengths("documents", &documents, false, limits.max_text_chars)?;
    let top_n = Integer::get(request.top_n);
    if top_n == Some(0) {
        return Err(Error::invalid("top_n", "must be at least 1, got 0"));
    }
    let (api_version, return_documents) = match version {
        CohereVersion::V1 => ("1", request.return_documents.unwrap_or(true)),
        CohereVersion::V2 => ("2", request.return_documents.unwrap_or(false)),
    };
    // A copy only when the answer repeats the documents.
    let returned = return_documents.then(|| documents.clone());
    let ranking = rank(
        state,
        Query {
            query,
            documents,
            weights: request.weights,
            max_passage_length: Integer::get(request.max_tokens_per_doc),
        },
        reservation,
    )
    .await?;
    let results = ranking
        .ranked
        .iter()
        .take(top_n.unwrap_or(usize::MAX))
        .map(|r| CohereResult {
            index: r.index,
            relevance_score: r.score,
            document: returned.as_ref().map(|documents| DocumentText {
                text: &documents[r.index],
            }),
        })
        .collect();
    let body = CohereResponse {
        id: uuid::Uuid::new_v4().to_string(),
        model: state.model_id(),
        results,
        meta: Meta {
            api_version: ApiVersion {
                version: api_version,
            },
            billed_units: BilledUnits { search_units: 1 },
        },
        usage: Usage::new(ranking.tokens),
    };
    Ok(answered(
        HttpResponse::Ok().json(body),
        ranking.tokens,
        ranking.timings,
    ))
}

/// `POST /v1/rerank`.
#[utoipa::path(
    post,
    path = "/v1/rerank",
    tag = "rerank",
    summary = "Rerank documents against a query (Cohere v1's and Jina's shape)",
    description = "Each document's `relevance_score` is `colbert+sparse+dense` of \
        FlagEmbedding's `compute_score` for the pair (query, document) alone; best first.",
    request_body = CohereRerankRequest,
    responses(
        (status = 200, description = "The documents, best first", body = CohereResponse),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn cohere_v1(
    state: web::Data<AppState>,
    Json(request, reservation): Json<CohereRerankRequest>,
) -> Result<HttpResponse> {
    cohere(&state, request, reservation, CohereVersion::V1).await
}

/// `POST /v2/rerank`.
#[utoipa::path(
    post,
    path = "/v2/rerank",
    tag = "rerank",
    summary = "Rerank documents against a query (Cohere v2's shape, `cohere.ClientV2`)",
    description = "As `/v1/rerank`; `document` only with `return_documents: true`.",
    request_body = CohereRerankRequest,
    responses(
        (status = 200, description = "The documents, best first", body = CohereResponse),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn cohere_v2(
    state: web::Data<AppState>,
    Json(request, reservation): Json<CohereRerankRequest>,
) -> Result<HttpResponse> {
    cohere(&state, request, reservation, CohereVersion::V2).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::extract::parse;

    #[test]
    fn documents_are_strings_or_text_objects() {
        let request: CohereRerankRequest =
            parse(br#"{"documents": ["a", {"text": "b", "title": "t"}]}"#).unwrap();
        assert_eq!(
            request.documents,
            Some(Documents(vec!["a".into(), "b".into()]))
        );
        for (body, message) in [
            (
                &br#"{"documents": []}"#[..],
                "`documents`: must not be an empty array",
            ),
            (
                br#"{"documents": ["a", {"title": "t"}]}"#,
                "`documents[1]`: missing field `text`",
            ),
            (br#"{"documents": ["a", 3]}"#, "`documents[1]`"),
            (br#"{"documents": "a"}"#, "`documents`"),
        ] {
            let error = parse::<CohereRerankRequest>(body).unwrap_err().to_string();
            assert!(error.contains(message), "{error}");
        }
    }
}
