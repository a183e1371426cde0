//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api/openapi.json`.
//!
//! [`ApiDoc`] holds what is not a route (title, description, the bearer scheme); the paths are
//! added by the routes themselves ([`crate::routes::api`]), so each is declared once.
//! [`document`] is the whole document. Every error code is in it as the `ErrorCode` schema.

use std::sync::LazyLock;

use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use crate::error_code::ErrorCode;

/// The flashsale HTTP API, without its paths (see [`document`]).
#[derive(OpenApi)]
#[openapi(
    info(title = "flashsale", description = "Flash-sale (seckill) HTTP API. Errors are `{\"error\": {\"code\", \"message\", \"request_id\", \"trace_id\"}}`; every response names its trace in a `traceparent` header."),
    components(schemas(ErrorCode)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The whole OpenAPI document: [`ApiDoc`] with the paths of [`crate::routes::api`], built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> =
        LazyLock::new(|| crate::routes::api().into_openapi());
    &DOCUMENT
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation the document had before the routes declared themselves.
    const OPERATIONS: [(&str, &str); 15] = [
        ("/api/v1/users", "post"),
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions/current", "delete"),
        ("/api/v1/admin/sales", "post"),
        ("/api/v1/sales", "get"),
        ("/api/v1/sales/{id}", "get"),
        ("/api/v1/sales/{id}/events", "get"),
        ("/api/v1/sales/{id}/orders", "post"),
        ("/api/v1/orders", "get"),
        ("/api/v1/orders/{id}", "get"),
        ("/api/v1/orders/{id}/pay", "post"),
        ("/api/v1/orders/{id}/cancel", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/debug/traces/{id}", "get"),
    ];

    fn json() -> serde_json::Value {
        serde_json::to_value(document()).unwrap()
    }

    #[test]
    fn every_operation_is_documented_once_with_its_tag() {
        let doc = json();
        let paths = doc["paths"].as_object().unwrap();
        let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(documented, OPERATIONS.len(), "{:?}", paths.keys());
        for (path, method) in OPERATIONS {
            let operation = &paths[path][method];
            assert!(operation.is_object(), "{method} {path} missing");
            assert_eq!(
                operation["tags"].as_array().unwrap().len(),
                1,
                "{method} {path}"
            );
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert_eq!(doc["info"]["title"], "flashsale");
    }

    #[test]
    fn every_error_code_is_in_the_document() {
        let doc = json();
        let schemas = &doc["components"]["schemas"];
        let listed: Vec<&str> = schemas["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, all);
        assert_eq!(
            schemas["ErrorDetail"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
    }
}
