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
///
/// The rows of one path (`GET /` and `POST /`) become one resource with a route per method:
/// actix answers a request from the first resource whose path matches, so a second resource of
/// the same path would never be reached (its method would be a 405 from the first).
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.app_data(web::Data::new(table::listing()));
    config.app_data(web::Data::new(docs::Document(table::openapi())));
    for (i, first) in ROUTES.iter().enumerate() {
        if ROUTES[..i].iter().any(|row| row.pattern == first.pattern) {
            continue;
        }
        let rows: Vec<_> = ROUTES[i..]
            .iter()
            .filter(|row| row.pattern == first.pattern)
            .collect();
        let allowed = rows
            .iter()
            .map(|row| match row.method {
                Method::GET => "GET, HEAD",
                ref method => method.as_str(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let resource = rows
            .iter()
            .fold(resource(first.pattern, allowed), |resource, row| {
                let route = match row.method {
                    Method::GET => get(),
                    ref method => web::method(method.clone()),
                };
                resource.route((row.to)(route))
            });
        config.service(resource);
    }
    let assets = format!("{DOCS_ASSETS}{{file:.*}}");
    config.service(resource(&assets, "GET, HEAD".into()).route(get().to(docs::asset)));
}

/// A GET route, which answers HEAD too (with the headers of GET and no body), as load
/// balancers ask `HEAD /health`.
fn get() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A resource that answers any method its routes do not take with 405 in OpenAI's error shape,
/// `allowed` (`GET, HEAD`, `POST`) in its `Allow` header.
fn resource(path: &str, allowed: String) -> Resource {
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
