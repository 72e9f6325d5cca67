//! CORS (`--cors-allow-origin`), off by default: with origins configured, web pages of those
//! origins may call the API from a browser. Preflights (`OPTIONS` with
//! `Access-Control-Request-Method`) are answered here, before the API key is checked, since
//! browsers send them without the page's headers.

use actix_cors::{Cors, CorsError};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, Uri};
use actix_web::middleware::Next;
use actix_web::HttpResponse;

use super::request_id::X_REQUEST_ID;
use crate::Error;

/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: usize = 3600;

/// The timing headers of the answers of the model's routes (see `routes::answered` and the
/// metrics middleware), which pages may read too.
const TIMING_HEADERS: [&str; 5] = [
    "x-queue-time",
    "x-tokenization-time",
    "x-inference-time",
    "x-total-time",
    "x-compute-tokens",
];

/// The CORS policy for `origins` (`*` among them: any origin, answered with the wildcard). Only
/// the API's methods are allowed; any request header is (`Authorization`, `Content-Type`, and the
/// `X-Stainless-*` headers of OpenAI's JavaScript SDK); no cookies. Pages may read the request
/// id, the timings and the headers of the error answers. (The list is explicit: actix-cors's
/// "expose any" lists the headers present when it runs, which is before the request id is set.)
pub(crate) fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST])
        .allow_any_header()
        .expose_headers(
            [
                X_REQUEST_ID,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                header::ALLOW,
            ]
            .into_iter()
            .chain(TIMING_HEADERS.map(header::HeaderName::from_static)),
        )
        .max_age(PREFLIGHT_MAX_AGE);
    if origins.iter().any(|origin| origin == "*") {
        cors.allow_any_origin().send_wildcard()
    } else {
        origins
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin))
    }
}

/// Middleware around [`cors`]: a refused preflight leaves in OpenAI's error shape, like every
/// other error, instead of actix-cors's plain text.
pub(crate) async fn refusals_as_json<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let response = next.call(req).await?;
    let refusal = response
        .response()
        .error()
        .and_then(|error| error.as_error::<CorsError>())
        .map(ToString::to_string);
    Ok(match refusal {
        None => response.map_into_left_body(),
        Some(reason) => {
            let (req, _) = response.into_parts();
            let answer = HttpResponse::from_error(Error::CorsRefused(reason));
            ServiceResponse::new(req, answer).map_into_right_body()
        }
    })
}

/// An origin as `--cors-allow-origin` takes it: `*`, or `scheme://host[:port]` as browsers send
/// it in `Origin` (no path, not even a trailing slash), lowercased.
pub(crate) fn parse_origin(value: &str) -> Result<String, String> {
    let origin = value.trim();
    if origin == "*" {
        return Ok(origin.to_string());
    }
    let expected = "expected `*` or an origin such as https://app.example.com or \
                    http://localhost:3000 (scheme, host and port only)";
    let uri: Uri = origin
        .parse()
        .map_err(|_| format!("{origin:?} is not an origin: {expected}"))?;
    let bare = uri.scheme().is_some()
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && uri.path_and_query().is_none_or(|p| p.as_str() == "/")
        && !origin.ends_with('/');
    if !bare {
        return Err(format!("{origin:?} is not an origin: {expected}"));
    }
    Ok(origin.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(parse_origin(" * ").unwrap(), "*");
        assert_eq!(
            parse_origin("https://App.Example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        for bad in [
            "",
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/page",
            "https://app.example.com?q=1",
            "https://user@app.example.com",
            "https://",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
    }
}
