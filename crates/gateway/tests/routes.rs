//! The router serves exactly what the OpenAPI document describes: the document at
//! `/api/openapi.json` is the one built from the routes, and every documented operation is
//! routed (it never falls through to the "no such resource" fallback nor answers `405`).
//! No service is needed: the upstreams point at a closed port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use flashsale_gateway::GatewayConfig;
use reqwest::Method;
use serde_json::Value;

mod support;

async fn start() -> SocketAddr {
    support::serve_gateway(GatewayConfig::default(), "127.0.0.1:1").await
}

/// Whether an answer is the router's own "there is no such route" (fallback or `405`).
fn unrouted(status: u16, body: &Value) -> bool {
    status == 405 || (status == 404 && body["error"]["message"] == "no such resource")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed_and_the_served_document_is_the_built_one() {
    let addr = start().await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");

    let served: Value = client
        .get(url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        served,
        serde_json::to_value(flashsale_gateway::openapi::document()).unwrap()
    );

    let paths = served["paths"].as_object().unwrap();
    assert!(paths.len() >= 13, "{:?}", paths.keys());
    for (path, item) in paths {
        let concrete = path.replace("{id}", "1");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = client
                .request(method.clone(), url(&concrete))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(
                !unrouted(status, &body),
                "{method} {path} is documented but not routed: {status} {body}"
            );
        }
    }

    // The check above does tell an unrouted path.
    let response = client.get(url("/api/v1/nothing")).send().await.unwrap();
    let status = response.status().as_u16();
    assert!(unrouted(status, &response.json().await.unwrap()));
    let response = client.get(url("/api/v1/users")).send().await.unwrap();
    let status = response.status().as_u16();
    assert!(unrouted(status, &response.json().await.unwrap()));
    // And the routes outside the document are still served.
    let metrics = client.get(url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
}
