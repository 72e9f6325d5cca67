//! `POST /score`: the five scores of `BGEM3FlagModel.compute_score` for each sentence pair.

use actix_web::{web, HttpResponse};
use bge_m3_core::{ScoreOptions, ScoreWeights};
use serde::{Deserialize, Serialize};

use super::input::{self, Integer, Texts};
use super::reply::answered;
use super::responses::EncodeErrors;
use crate::inference::ModelInfo;
use crate::inference::ScoreJob;
use crate::routes::extract::Json;
use crate::state::AppState;
use crate::{Error, Result};

/// The body of `/score`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ScoreRequest {
    /// Queries (strings), scored against `sentences_2` position by position.
    #[schema(value_type = Texts, required = true)]
    sentences_1: Option<Texts>,
    /// Passages, as many as `sentences_1`.
    #[schema(value_type = Texts, required = true)]
    sentences_2: Option<Texts>,
    /// `[dense, sparse, colbert]` weights of the fused scores: three numbers from 0 to 1e38,
    /// at least one of them 1e-37 or more; default `[0.4, 0.2, 0.4]`.
    #[schema(schema_with = input::weights_schema)]
    weights: Option<Vec<f32>>,
    /// Truncation of the queries in tokens (1 to 8192); default 512, or `max_length`.
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 8192)]
    max_query_length: Option<Integer>,
    /// Truncation of the passages in tokens (1 to 8192); default 8192, or `max_length`.
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 8192)]
    max_passage_length: Option<Integer>,
    /// Sets both lengths; `max_query_length` and `max_passage_length` win over it.
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 8192)]
    max_length: Option<Integer>,
    /// Most texts per forward pass (the scores do not depend on it); default 12.
    #[schema(value_type = Option<i32>, minimum = 1)]
    batch_size: Option<Integer>,
    /// The served model id or an alias; absent means the served model.
    model: Option<String>,
}

impl ScoreRequest {
    fn validate(self, state: &AppState, info: &ModelInfo) -> Result<ScoreJob> {
        state.check_model(self.model.as_deref())?;
        let limits = state.limits();
        let queries = input::texts(self.sentences_1, "sentences_1", limits)?;
        let passages = input::texts(self.sentences_2, "sentences_2", limits)?;
        if queries.len() != passages.len() {
            return Err(Error::invalid(
                "sentences_2",
                format!(
                    "has {} sentences but sentences_1 has {}: they are scored in pairs",
                    passages.len(),
                    queries.len()
                ),
            ));
        }
        let weights = input::weights(self.weights, ScoreWeights::default())?;
        let longest = info.max_length;
        let (max_length, max_query_length, max_passage_length) = (
            Integer::get(self.max_length),
            Integer::get(self.max_query_length),
            Integer::get(self.max_passage_length),
        );
        let both = input::length("max_length", max_length, longest, longest)?;
        let max_query_length = input::length(
            "max_query_length",
            max_query_length,
            max_length.map_or(
                ScoreOptions::default().max_query_length.min(longest),
                |_| both,
            ),
            longest,
        )?;
        let max_passage_length =
            input::length("max_passage_length", max_passage_length, both, longest)?;
        Ok(ScoreJob {
            queries,
            passages,
            options: ScoreOptions::default()
                .with_weights(weights)
                .with_max_query_length(max_query_length)
                .with_max_passage_length(max_passage_length)
                .with_batch_size(input::batch_size(Integer::get(self.batch_size))),
        })
    }
}

/// One array per score, one value per pair; a fusion left undefined by zero weights is `null`.
#[derive(Serialize, utoipa::ToSchema)]
struct ScoreResponse {
    /// Dot products of the normalised dense vectors.
    dense: Vec<f32>,
    /// Sums of `w_q * w_p` over the token ids the pair shares.
    sparse: Vec<f32>,
    /// For each query vector the best dot product over the passage's, averaged.
    colbert: Vec<f32>,
    /// `(w0*dense + w1*sparse) / (w0 + w1)`; `null` when `w0 + w1` is 0.
    #[serde(rename = "sparse+dense")]
    #[schema(value_type = Vec<Option<f32>>)]
    sparse_dense: Vec<f32>,
    /// `(w0*dense + w1*sparse + w2*colbert) / (w0 + w1 + w2)`.
    #[serde(rename = "colbert+sparse+dense")]
    colbert_sparse_dense: Vec<f32>,
}

/// `POST /score`.
#[utoipa::path(
    post,
    path = "/score",
    tag = "score",
    summary = "Similarity scores of sentence pairs",
    description = "The five scores of FlagEmbedding's `compute_score` for each pair \
        (`sentences_1[i]`, `sentences_2[i]`); each pair's scores depend on that pair alone.",
    request_body = ScoreRequest,
    responses(
        (status = 200, description = "One score per pair in each array", body = ScoreResponse),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn score(
    state: web::Data<AppState>,
    Json(request, reservation): Json<ScoreRequest>,
) -> Result<HttpResponse> {
    let ready = state.ready()?;
    let job = request.validate(&state, &ready.info)?;
    let scored = ready.inference.score_within(job, reservation).await?;
    let pick = |f: fn(&bge_m3_core::PairScores) -> f32| scored.scores.iter().map(f).collect();
    let response = ScoreResponse {
        dense: pick(|s| s.dense),
        sparse: pick(|s| s.sparse),
        colbert: pick(|s| s.colbert),
        sparse_dense: pick(|s| s.sparse_dense),
        colbert_sparse_dense: pick(|s| s.colbert_sparse_dense),
    };
    Ok(answered(
        HttpResponse::Ok().json(response),
        scored.tokens,
        scored.timings,
    ))
}
