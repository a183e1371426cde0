//! The gateway's shared state, its router, and serving it.

use std::{net::SocketAddr, ops::Deref, sync::Arc, time::Duration};

use axum::{
    error_handling::HandleErrorLayer,
    extract::DefaultBodyLimit,
    middleware::{from_fn, from_fn_with_state},
    routing::get,
    Router,
};
use flashsale_token::TokenKeys;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tower::{limit::GlobalConcurrencyLimitLayer, ServiceBuilder};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    auth::SessionCache,
    buy::{accepted_orders, AcceptedOrders},
    config::GatewayConfig,
    error::ApiError,
    fast_path::FastPath,
    limits::Limits,
    live_sales::LiveSales,
    middleware::{
        budget, ensure_trace, panic_response, record_metrics, render_errors, RandomRequestId,
    },
    routes::health,
    sales_cache::SaleCache,
    upstream::{BuyCalls, Upstreams},
};

/// Everything a handler needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// Configuration.
    pub config: GatewayConfig,
    /// Token verification keys.
    pub keys: TokenKeys,
    /// Clients of the services.
    pub upstreams: Upstreams,
    /// The buy path's reserve and submit, batched under load.
    pub buy_calls: BuyCalls,
    /// Recently looked-up sessions.
    pub sessions: SessionCache,
    /// Anti-brush limiters.
    pub limits: Limits,
    /// Sale metadata and sold-out flags.
    pub sales: SaleCache,
    /// The sale pages, pushed by the inventory's sales feed.
    pub live: LiveSales,
    /// Order ids this gateway accepted recently, so a retry of an accepted buy is answered with
    /// its order even after the sale sold out.
    pub accepted: AcceptedOrders,
    /// Prometheus rendering.
    pub metrics: PrometheusHandle,
    /// Recent spans of this process, served at `/debug/traces/{id}` (`flashsale dev`).
    pub traces: Option<flashsale_telemetry::span_buffer::SpanBuffer>,
    /// Permits of the requests in flight (`max_in_flight`), shared by every route.
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state (on a tokio runtime: it starts the buy path's batching tasks). While
    /// serving, the gateway follows the inventory's sales feed ([`crate::live_sales`]) and, with
    /// `follow_stock_events` configured, its stock events ([`crate::stock_events`]); with
    /// `traces`, it serves the spans kept there at `/debug/traces/{id}`.
    pub fn new(
        config: GatewayConfig,
        keys: TokenKeys,
        upstreams: Upstreams,
        limiter: flashsale_limits::Limiter,
        metrics: PrometheusHandle,
        traces: Option<flashsale_telemetry::span_buffer::SpanBuffer>,
    ) -> Self {
        Self(Arc::new(Inner {
            sessions: SessionCache::new(Duration::from_millis(config.revocation_max_staleness_ms)),
            limits: Limits::new(limiter, config.limits.clone()),
            sales: SaleCache::new(
                Duration::from_millis(config.missing_sale_cache_ms),
                Duration::from_millis(config.sold_out_cache_ms),
                Duration::from_millis(config.pushed_sold_out_ms),
            ),
            live: LiveSales::new(),
            accepted: accepted_orders(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
            buy_calls: BuyCalls::spawn(&upstreams, config.batch),
            config,
            keys,
            upstreams,
            metrics,
            traces,
        }))
    }
}

/// The gateway's routes with the middleware that needs the matched route (metrics) or runs per
/// handler (panic guard, budget, body limit). [`app`] wraps it in the per-connection layers.
pub fn router(state: AppState) -> Router {
    // The documented routes are declared once, in `routes::api`, with their OpenAPI
    // operations; the two below are not part of the documented API.
    Router::from(crate::routes::api())
        .route("/api/openapi.json", get(health::openapi))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::not_found("no such resource") })
        .layer(
            ServiceBuilder::new()
                // Outside the budget and the panic guard, so 504s and 500s are counted too.
                .layer(from_fn(record_metrics))
                // Load shedding: past `max_in_flight` requests, answer 503 at once.
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::overloaded()
                }))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::clone(
                    &state.in_flight,
                )))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(from_fn_with_state(state.clone(), budget))
                .layer(DefaultBodyLimit::max(state.config.body_limit_bytes)),
        )
        .with_state(state)
}

/// The whole gateway: [`router`] inside request id, trace context, request span and JSON error
/// rendering. These wrap the router once per connection rather than once per route, so a
/// request does not clone them. In front of it all, [`FastPath`] answers the sale pages.
pub fn app(
    state: AppState,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    let stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
        .layer(from_fn(ensure_trace))
        .layer(TraceLayer::new_for_http().make_span_with(flashsale_telemetry::span::make_span))
        .map_response(axum::response::IntoResponse::into_response)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(from_fn(render_errors))
        .service(router(state.clone()));
    FastPath::new(state, stack)
}

/// Serves the gateway on `listener` until `shutdown` completes, then finishes in-flight
/// requests. While serving it also polls the auth service for revoked sessions and prunes idle
/// rate-limit keys every minute.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let poller = tokio::spawn(state.sessions.clone().run_poller(
        state.upstreams.clone(),
        Duration::from_millis(state.config.revocation_poll_ms.max(10)),
    ));
    let pruner = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                state.limits.prune();
            }
        })
    };
    let events = state.config.follow_stock_events.then(|| {
        tokio::spawn(crate::stock_events::follow(
            state.upstreams.inventory.clone(),
            state.sales.clone(),
        ))
    });
    let live = state.live.clone();
    let feed = tokio::spawn(crate::live_sales::follow(
        state.upstreams.inventory.clone(),
        state.live.clone(),
        state.sales.clone(),
    ));
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
        SocketAddr,
    >(app(state));
    // Live streams never end on their own: end them when the shutdown begins, so the drain
    // waits only for requests.
    let shutdown = async move {
        shutdown.await;
        live.close_streams();
    };
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    pruner.abort();
    poller.abort();
    feed.abort();
    if let Some(events) = events {
        events.abort();
    }
    result
}
