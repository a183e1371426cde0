//! HTTP handlers, one module per resource, and [`api`]: every route, declared once.
//!
//! A route registered with `routes!` serves its handler *and* puts the handler's
//! `#[utoipa::path]` operation in the OpenAPI document ([`crate::openapi`]), so the router and
//! the document cannot disagree. Adding an endpoint: write the handler with its
//! `#[utoipa::path(...)]` in its resource's module, and add one `.routes(routes!(...))` line
//! here. Routes that are not part of the documented API (`/metrics`, the document itself) are
//! added by [`crate::app::router`] with a plain `.route`.

pub mod health;
pub mod orders;
pub mod sales;
pub mod sessions;
pub mod users;

use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{app::AppState, openapi::ApiDoc};

/// Every documented route of the API, with the OpenAPI document they make.
///
/// Full paths rather than `nest("/api/v1", …)`: a nested router rewrites every request's URI to
/// strip the prefix, which costs more than the rest of the routing.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(users::register))
        .routes(routes!(sessions::login))
        .routes(routes!(sessions::logout))
        .routes(routes!(sales::create))
        .routes(routes!(sales::list))
        .routes(routes!(sales::get))
        .routes(routes!(sales::events))
        .routes(routes!(orders::buy))
        .routes(routes!(orders::list))
        .routes(routes!(orders::get))
        .routes(routes!(orders::pay))
        .routes(routes!(orders::cancel))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::trace))
}
