//! The routes of docs/API.md, and the 404 and 405 answers for everything else.

mod answer;
mod docs;
mod embeddings;
pub(crate) mod extract;
mod info;
mod input;
mod models;
mod reply;
mod rerank;
mod responses;
mod score;
mod table;
mod tei;
mod tokens;
mod vectors;

use actix_web::http::Method;
use actix_web::{guard, web, HttpRequest, HttpResponse, Resource, Route};

use self::table::DOCS_ASSETS;
pub(crate) use self::table::{is_public, is_route, ROUTES};
use crate::Error;

/// Registers the routes of [`ROUTES`], the docs page's assets, and what `GET /` and
/// `GET /openapi.json` answer from the table (its list and its document).
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.app_data(web::Data::new(table::listing()));
    config.app_data(web::Data::new(docs::Document(table::openapi())));
    for entry in ROUTES {
        let route = match entry.method {
            Method::GET => get(),
            ref method => web::method(method.clone()),
        };
        config.service(resource(entry.pattern, entry.method.clone()).route((entry.to)(route)));
    }
    let assets = format!("{DOCS_ASSETS}{{file:.*}}");
    config.service(resource(&assets, Method::GET).route(get().to(docs::asset)));
}

/// A GET route, which answers HEAD too (with the headers of GET and no body), as load
/// balancers ask `HEAD /health`.
fn get() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A route that answers any method but `allowed` with 405 in OpenAI's error shape.
fn resource(path: &str, allowed: Method) -> Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| {
        let error = Error::MethodNotAllowed {
            method: req.method().clone(),
            path: req.path().to_string(),
            allowed: allowed.clone(),
        };
        async move { Err::<HttpResponse, _>(error) }
    }))
}

/// The answer for a path that no route has.
pub(crate) async fn not_found(req: HttpRequest) -> Result<HttpResponse, Error> {
    Err(Error::RouteNotFound {
        method: req.method().clone(),
        path: req.path().to_string(),
    })
}
