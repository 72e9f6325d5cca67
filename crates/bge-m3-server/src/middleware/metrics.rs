//! The request metrics: every request counted by route and status and timed, and the answers
//! that ran the model given an `x-total-time` header.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;

use super::OnDrop;
use crate::inference::Timings;
use crate::metrics::metrics;

/// Middleware: counts every request by route and status, times it, and gives the responses
/// that ran the model an `x-total-time` header beside the handler's timing headers.
///
/// `is_route` tells the route table's paths: a request refused before routing (a 401, a CORS
/// refusal) is labelled with its path when it is one of these, with `other` if not.
pub(crate) async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
    is_route: fn(&str) -> bool,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let path = req.path().to_string();
    let pattern = req.match_pattern();
    // A request whose client hangs up is dropped here, unanswered: count it as 499 (nginx's
    // "client closed request").
    let gone = OnDrop::new(|| {
        let route = route_label(pattern, &path, is_route);
        let metrics = metrics();
        metrics
            .requests
            .with_label_values(&[route.as_str(), "499"])
            .inc();
        metrics
            .request_duration
            .with_label_values(&[route.as_str()])
            .observe(start.elapsed().as_secs_f64());
    });
    let mut result = next.call(req).await;
    gone.disarm();
    let elapsed = start.elapsed();
    let (route, status) = match &mut result {
        Ok(response) => {
            if response.response().extensions().get::<Timings>().is_some() {
                response.headers_mut().insert(
                    HeaderName::from_static("x-total-time"),
                    milliseconds(elapsed.as_secs_f64()),
                );
            }
            let route = response.request().match_pattern();
            (route, response.status())
        }
        Err(error) => (None, error.as_response_error().status_code()),
    };
    let route = route_label(route, &path, is_route);
    let metrics = metrics();
    metrics
        .requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed.as_secs_f64());
    result
}

/// The `route` label: the route's pattern, never a client's arbitrary path.
fn route_label(pattern: Option<String>, path: &str, is_route: fn(&str) -> bool) -> String {
    pattern.unwrap_or_else(|| {
        if is_route(path) {
            path.to_string()
        } else {
            "other".into()
        }
    })
}

/// A duration in seconds as a header value in milliseconds (`12.34`).
pub(crate) fn milliseconds(seconds: f64) -> HeaderValue {
    HeaderValue::from_str(&format!("{:.2}", seconds * 1e3)).expect("digits are a valid header")
}
