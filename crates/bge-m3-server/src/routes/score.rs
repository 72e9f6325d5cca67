//! `POST /score`: the five scores of `BGEM3FlagModel.compute_score` for each sentence pair.

use actix_web::{web, HttpResponse};
use bge_m3_core::{ScoreOptions, ScoreWeights};
use serde::{Deserialize, Serialize};

use super::input::{self, Texts};
use super::ok_with_tokens;
use crate::batcher::ScoreJob;
use crate::extract::Json;
use crate::state::{AppState, ModelInfo};
use crate::{Error, Result};

#[derive(Debug, Deserialize)]
pub(crate) struct ScoreRequest {
    /// Queries (strings), scored against `sentences_2` position by position.
    sentences_1: Option<Texts>,
    /// Passages, as many as `sentences_1`.
    sentences_2: Option<Texts>,
    /// `[dense, sparse, colbert]` weights of the fused scores.
    weights: Option<Vec<f32>>,
    max_query_length: Option<usize>,
    max_passage_length: Option<usize>,
    /// Sets both lengths; `max_query_length` and `max_passage_length` win over it.
    max_length: Option<usize>,
    batch_size: Option<usize>,
    model: Option<String>,
}

impl ScoreRequest {
    fn validate(self, state: &AppState, info: &ModelInfo) -> Result<ScoreJob> {
        state.check_model(self.model.as_deref())?;
        let max_inputs = state.limits().max_inputs;
        let queries = input::texts(self.sentences_1, "sentences_1", max_inputs)?;
        let passages = input::texts(self.sentences_2, "sentences_2", max_inputs)?;
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
        let weights = match self.weights.as_deref() {
            None => ScoreWeights::default(),
            Some(&[dense, sparse, colbert]) => ScoreWeights::try_from([dense, sparse, colbert])?,
            Some(other) => {
                return Err(Error::invalid(
                    "weights",
                    format!(
                        "must be three numbers [dense, sparse, colbert], got {}",
                        other.len()
                    ),
                ))
            }
        };
        let longest = info.max_length;
        let both = input::length("max_length", self.max_length, longest, longest)?;
        let max_query_length = input::length(
            "max_query_length",
            self.max_query_length,
            self.max_length.map_or(
                ScoreOptions::default().max_query_length.min(longest),
                |_| both,
            ),
            longest,
        )?;
        let max_passage_length =
            input::length("max_passage_length", self.max_passage_length, both, longest)?;
        Ok(ScoreJob {
            pairs: queries.into_iter().zip(passages).collect(),
            options: ScoreOptions {
                weights,
                max_query_length,
                max_passage_length,
                batch_size: input::batch_size(self.batch_size)?,
            },
        })
    }
}

/// One array per score, one value per pair; a fusion left undefined by zero weights is `null`.
#[derive(Serialize)]
struct ScoreResponse {
    dense: Vec<f32>,
    sparse: Vec<f32>,
    colbert: Vec<f32>,
    #[serde(rename = "sparse+dense")]
    sparse_dense: Vec<f32>,
    #[serde(rename = "colbert+sparse+dense")]
    colbert_sparse_dense: Vec<f32>,
}

/// `POST /score`.
pub(crate) async fn score(
    state: web::Data<AppState>,
    Json(request): Json<ScoreRequest>,
) -> Result<HttpResponse> {
    let ready = state.ready()?;
    let job = request.validate(&state, &ready.info)?;
    let scored = ready.batcher.score(job).await?;
    let pick = |f: fn(&bge_m3_core::PairScores) -> f32| scored.scores.iter().map(f).collect();
    let response = ScoreResponse {
        dense: pick(|s| s.dense),
        sparse: pick(|s| s.sparse),
        colbert: pick(|s| s.colbert),
        sparse_dense: pick(|s| s.sparse_dense),
        colbert_sparse_dense: pick(|s| s.colbert_sparse_dense),
    };
    Ok(ok_with_tokens(&response, scored.tokens))
}
