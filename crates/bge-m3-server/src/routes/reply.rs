//! What every answer of the model carries: its `usage`, and headers saying where its time went.

use std::time::Duration;

use actix_web::http::header::HeaderName;
use actix_web::HttpResponse;
use serde::Serialize;

use crate::inference::Timings;
use crate::middleware::access_log::Tokens;
use crate::middleware::metrics::milliseconds;

/// `usage`: tokens of the inputs after truncation, `<s>` and `</s>` not counted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

impl Usage {
    pub fn new(tokens: usize) -> Self {
        Self {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }
    }
}

/// The 200 `response` of a request the model answered: the request log learns its tokens, the
/// client where its time went (`x-queue-time`, `x-tokenization-time`, `x-inference-time` in
/// milliseconds, `x-compute-tokens`; the metrics middleware adds `x-total-time`).
pub(crate) fn answered(
    mut response: HttpResponse,
    tokens: usize,
    timings: Timings,
) -> HttpResponse {
    let headers = response.headers_mut();
    for (name, duration) in [
        ("x-queue-time", timings.queue),
        ("x-tokenization-time", timings.tokenization),
        ("x-inference-time", timings.inference),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            milliseconds(duration.as_secs_f64()),
        );
    }
    headers.insert(HeaderName::from_static("x-compute-tokens"), tokens.into());
    response.extensions_mut().insert(Tokens(tokens));
    response.extensions_mut().insert(timings);
    response
}

/// The 200 `response` of `/tokenize` or `/decode`, work of the tokenizer alone: the request log
/// learns its `tokens` (tokens found, or texts decoded), the client the time it took
/// (`x-tokenization-time` in milliseconds).
pub(crate) fn tokenized(
    mut response: HttpResponse,
    tokens: usize,
    tokenization: Duration,
) -> HttpResponse {
    response.headers_mut().insert(
        HeaderName::from_static("x-tokenization-time"),
        milliseconds(tokenization.as_secs_f64()),
    );
    response.extensions_mut().insert(Tokens(tokens));
    response
}
