//! What the gateway's integration tests share: a real gRPC inventory server and a real gateway,
//! each on an ephemeral loopback port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use flashsale_gateway::{upstream::Upstreams, AppState, GatewayConfig};
use flashsale_proto::inventory::inventory_server::{Inventory, InventoryServer};
use flashsale_token::{SigningKey, TokenKeys};
use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Server};

/// Token keys for a test gateway.
pub fn test_keys() -> TokenKeys {
    TokenKeys::new(
        SigningKey {
            kid: "k1".into(),
            secret: vec![7; 32],
        },
        Vec::new(),
        "flashsale",
        "flashsale-api",
        900,
    )
    .unwrap()
}

/// Serves `inventory` over gRPC; its address.
pub async fn serve_inventory<I: Inventory>(inventory: I) -> String {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap().to_string();
    let server = InventoryServer::new(inventory);
    tokio::spawn(async move {
        Server::builder()
            .add_service(server)
            .serve_with_incoming(TcpIncoming::from(grpc))
            .await
    });
    addr
}

/// Serves a gateway whose three upstreams (auth, inventory, order) are all at `upstream`; its
/// address.
pub async fn serve_gateway(config: GatewayConfig, upstream: &str) -> SocketAddr {
    serve_gateway_until(config, upstream, std::future::pending())
        .await
        .0
}

/// Like [`serve_gateway`], until `shutdown` completes; also the serving task, which ends once
/// the gateway drained.
pub async fn serve_gateway_until(
    config: GatewayConfig,
    upstream: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let state = AppState::new(
        config,
        test_keys(),
        Upstreams::connect_lazy(upstream, upstream, upstream).unwrap(),
        flashsale_limits::MemoryLimiter::new().into(),
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        None,
    );
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    let serving = tokio::spawn(flashsale_gateway::app::serve(http, state, shutdown));
    (addr, serving)
}
