//! The system behind the registry: several instances of every service in one `dev`, and a
//! `serve`d service's lifecycle (health, registration, deregistration on shutdown).

use std::{collections::HashSet, sync::Arc, time::Duration};

use crate::common::{ip, next_set_where, watch_registry, Backend, TestApp};
use flashsale::{
    cli::Service,
    config::{Config, DiscoverySource},
    startup::ServiceApp,
};
use reqwest::StatusCode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

const BUYERS: usize = 300;
const STOCK: i64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rush_over_three_instances_of_every_service_sells_exactly_the_stock() {
    let Some(app) = TestApp::spawn_on_with(Backend::Redis, |c| {
        c.dev.instances = 3;
        // Correctness under contention on a shared debug build, not latency (see concurrency.rs).
        c.gateway.budget_ms = 20_000;
        c.order.max_accept_age_ms = 25_000;
        c.inventory.reservation_grace_ms = 45_000;
        c.inventory.catalog_refresh_ms = 50;
        c.redis.response_timeout_ms = 5_000;
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    let sale = app.open_sale(STOCK, 1).await;
    // Every inventory instance knows the sale once its catalog refreshed: 30 answers in a row
    // from instances picked at random.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 30 {
        assert!(
            Instant::now() < deadline,
            "the sale never reached every instance"
        );
        let r = app
            .client
            .get(app.url(&format!("/api/v1/sales/{sale}")))
            .send()
            .await
            .unwrap();
        in_a_row = if r.status() == StatusCode::OK {
            in_a_row + 1
        } else {
            0
        };
    }
    let tokens = app.customers(BUYERS).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(BUYERS));
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, token)| {
            let (app, barrier) = (Arc::clone(&app), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let r = app.buy(sale, &token, &ip(n), "key").await;
                let status = r.status();
                let body: serde_json::Value = r.json().await.unwrap();
                assert!(!status.is_server_error(), "{status}: {body}");
                (status == StatusCode::ACCEPTED)
                    .then(|| body["order_id"].as_str().unwrap().to_owned())
            })
        })
        .collect();
    let mut accepted = HashSet::new();
    for t in tasks {
        if let Some(order) = t.await.unwrap() {
            assert!(accepted.insert(order), "an order id was answered twice");
        }
    }
    assert_eq!(accepted.len(), STOCK as usize, "exactly the stock is sold");
    let stored = app.stored_orders(sale, STOCK as usize).await;
    let stored_ids: HashSet<String> = stored.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(stored.len(), STOCK as usize, "every 202 stored once");
    assert_eq!(stored_ids, accepted);
    crate::common::page_shows_remaining(&app, sale, 0).await;
    Arc::into_inner(app).unwrap().finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_instance_reports_health_registers_and_deregisters_before_it_drains() {
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::common::test_config(data.path());
    config.registry.addr = "127.0.0.1:0".into();
    config.registry.ttl_ms = 5_000;
    let registry = ServiceApp::build(
        Service::Registry,
        config.clone(),
        flashsale::startup::Telemetry::detached(),
    )
    .await
    .unwrap();
    let registry_addr = registry.addr().to_string();
    let registry_stop = CancellationToken::new();
    let registry_task = tokio::spawn(registry.run_until_stopped(registry_stop.clone()));

    let mut inventory_config: Config = config;
    inventory_config.services.inventory = "127.0.0.1:0".into();
    inventory_config.discovery.source = DiscoverySource::Registry;
    inventory_config.discovery.registries = vec![registry_addr.clone()];
    inventory_config.discovery.weight = 2;
    let inventory = ServiceApp::build(
        Service::Inventory,
        inventory_config,
        flashsale::startup::Telemetry::detached(),
    )
    .await
    .unwrap();
    let inventory_addr = inventory.addr().to_string();
    let inventory_stop = CancellationToken::new();
    let inventory_task = tokio::spawn(inventory.run_until_stopped(inventory_stop.clone()));

    // grpc.health.v1 answers for the service and for the server as a whole.
    let mut health = HealthClient::new(flashsale_registry::lazy_channel(&inventory_addr).unwrap());
    for service in ["", "flashsale.inventory.v1.Inventory"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }

    // It registered itself, with its weight.
    let mut watch = watch_registry(&registry_addr, "inventory").await;
    let set = next_set_where(
        &mut watch,
        Duration::from_secs(10),
        "the instance never registered",
        |set| !set.instances.is_empty(),
    )
    .await;
    assert_eq!(set.instances[0].address, inventory_addr);
    assert_eq!(set.instances[0].weight, 2);

    // A graceful stop deregisters first: gone from the registry long before its 5 s lease.
    let stopping = Instant::now();
    inventory_stop.cancel();
    let set = tokio::time::timeout(Duration::from_secs(4), watch.message())
        .await
        .expect("not deregistered before the lease ran out")
        .unwrap()
        .unwrap();
    assert!(set.instances.is_empty(), "{set:?}");
    assert!(stopping.elapsed() < Duration::from_secs(4));
    inventory_task.await.unwrap().unwrap();
    registry_stop.cancel();
    registry_task.await.unwrap().unwrap();
}
