//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api/openapi.json`.

use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use crate::routes::{health, orders, sales, sessions, users};

/// The flashsale HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(title = "flashsale", description = "Flash-sale (seckill) HTTP API. Errors are `{\"error\": {\"code\", \"message\", \"request_id\", \"trace_id\"}}`; every response names its trace in a `traceparent` header."),
    paths(
        users::register,
        sessions::login,
        sessions::logout,
        sales::create,
        sales::list,
        sales::get,
        orders::buy,
        orders::list,
        orders::get,
        orders::pay,
        orders::cancel,
        health::healthz,
        health::readyz,
        health::trace,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}
