//! Hosting an assembled service: the parts every process needs whatever service it runs.
//!
//! A service crate assembles itself ([`flashsale_inventory::assemble`], …) into a service and
//! its named background workers. This module serves it: a gRPC service on its listener with
//! `grpc.health.v1` (tonic-health), load shedding past `grpc_max_in_flight` requests at once
//! (`RESOURCE_EXHAUSTED` at once instead of queueing: tower `ConcurrencyLimit` + `LoadShed`),
//! every request counted and timed per method, and `GET /metrics` (Prometheus, HTTP/1.1) on the
//! same port; the gateway on its HTTP listener. It also drains them: a gRPC instance first
//! leaves rotation (deregisters, reports `NOT_SERVING`), then stops serving, then its workers
//! stop. Each stage gets [`GRACE`] before it is abandoned.

use std::{net::SocketAddr, time::Duration};

use flashsale_gateway::AppState;
use flashsale_kernel::{Stops, Workers};
use flashsale_registry::Registrar;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{
    service::Routes,
    transport::{server::TcpIncoming, Server},
};
use tonic_health::{server::HealthReporter, ServingStatus};
use tower::{limit::GlobalConcurrencyLimitLayer, load_shed::LoadShedLayer};
use tower_http::trace::TraceLayer;

use crate::startup::StartupError;

/// How long each shutdown stage may take before it is abandoned.
pub const GRACE: Duration = Duration::from_secs(10);

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// An assembled gRPC service, ready to be hosted: its routes, its full name (for health), and
/// its background workers.
pub struct GrpcService {
    name: &'static str,
    routes: Routes,
    workers: Workers,
}

impl std::fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcService")
            .field("name", &self.name)
            .field("workers", &self.workers.names())
            .finish()
    }
}

impl GrpcService {
    /// A tonic server (`FooServer::new(service)`) with the workers it came with.
    pub fn new<S>(server: S, workers: Workers) -> Self
    where
        S: tonic::codegen::Service<
                tonic::codegen::http::Request<tonic::body::Body>,
                Response = tonic::codegen::http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            name: S::NAME,
            routes: Routes::default().add_service(server),
            workers,
        }
    }
}

/// A gRPC service being served.
pub struct HostedGrpc {
    name: &'static str,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    reporter: HealthReporter,
    registrar: Option<Registrar>,
    server_shutdown: CancellationToken,
    workers: Workers,
    workers_shutdown: CancellationToken,
}

impl std::fmt::Debug for HostedGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedGrpc")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Serves `service` on `listener` until [`HostedGrpc::drain`].
pub fn host_grpc(
    listener: TcpListener,
    service: GrpcService,
    max_in_flight: usize,
    metrics: PrometheusHandle,
    stops: Stops,
) -> HostedGrpc {
    let (reporter, health) = tonic_health::server::health_reporter();
    let serving = reporter.clone();
    let name = service.name;
    let routes = service.routes.add_service(health).into_axum_router().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render();
            async move { ([(http::header::CONTENT_TYPE, PROMETHEUS_TEXT)], body) }
        }),
    );
    let Stops {
        server: server_shutdown,
        workers: workers_shutdown,
    } = stops;
    let stop = server_shutdown.clone();
    let server = tokio::spawn(async move {
        serving
            .set_service_status(name, ServingStatus::Serving)
            .await;
        Server::builder()
            .tcp_nodelay(true)
            // Prometheus scrapes /metrics over HTTP/1.1; gRPC clients speak HTTP/2.
            .accept_http1(true)
            .layer(TraceLayer::new_for_grpc().make_span_with(flashsale_telemetry::span::make_span))
            // Outside the shedding, so refused requests are counted too.
            .layer(flashsale_telemetry::grpc_metrics::GrpcMetricsLayer)
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(max_in_flight.max(1)))
            .add_routes(routes.into())
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop.cancelled_owned())
            .await
    });
    HostedGrpc {
        name,
        server,
        reporter,
        registrar: None,
        server_shutdown,
        workers: service.workers,
        workers_shutdown,
    }
}

/// A channel to `server` in this process ([`Balanced::local`]) that traces and counts each
/// call as the hosted server does (the same span and the same gRPC metrics), so a buy's trace
/// shows every service it crossed whether or not the hop is a network hop.
pub fn local_channel<S>(server: S) -> flashsale_registry::Balanced
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let traced = tower::ServiceBuilder::new()
        .map_response(|response: http::Response<_>| response.map(tonic::body::Body::new))
        .layer(TraceLayer::new_for_grpc().make_span_with(flashsale_telemetry::span::make_span))
        .layer(flashsale_telemetry::grpc_metrics::GrpcMetricsLayer)
        .service(server);
    flashsale_registry::Balanced::local(traced)
}

impl HostedGrpc {
    /// Keeps this instance registered with the registry while it serves.
    pub fn registered(mut self, registrar: Option<Registrar>) -> Self {
        self.registrar = registrar;
        self
    }

    /// Serves until `shutdown`, then drains; an error if the server stopped on its own.
    pub async fn run_until(mut self, shutdown: &CancellationToken) -> Result<(), StartupError> {
        let stopped_early = tokio::select! {
            () = shutdown.cancelled() => None,
            ended = &mut self.server => Some(ended),
        };
        match stopped_early {
            None => {
                self.drain().await;
                Ok(())
            }
            Some(ended) => {
                // The server ended on its own: leave rotation, stop the workers, say why.
                self.leave().await;
                self.workers_shutdown.cancel();
                self.workers.join(GRACE).await;
                match ended {
                    Ok(result) => result.map_err(StartupError::Transport),
                    Err(e) => Err(StartupError::Task(e)),
                }
            }
        }
    }

    /// Takes the instance out of rotation before it drains: deregisters it from the registry
    /// replicas (clients watching drop it at once), then reports it `NOT_SERVING`.
    pub async fn leave(&mut self) {
        if let Some(registrar) = self.registrar.take() {
            registrar.deregister().await;
        }
        for name in ["", self.name] {
            self.reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }

    /// Leaves rotation, stops serving (in-flight calls finish, up to [`GRACE`]), then stops
    /// the workers (up to [`GRACE`]).
    pub async fn drain(mut self) {
        self.leave().await;
        self.stop_serving().await;
        self.stop_workers().await;
    }

    /// Stops serving; in-flight calls finish, up to [`GRACE`].
    async fn stop_serving(&mut self) {
        self.server_shutdown.cancel();
        match tokio::time::timeout(GRACE, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::error!(service = self.name, error = %e, "gRPC server failed")
            }
            Ok(Err(e)) => {
                tracing::error!(service = self.name, error = %e, "gRPC server task failed")
            }
            Err(_) => {
                tracing::warn!(
                    service = self.name,
                    "gRPC server did not stop within the grace period"
                );
            }
        }
    }

    /// Tells the workers to stop and waits for them, up to [`GRACE`].
    async fn stop_workers(self) {
        self.workers_shutdown.cancel();
        self.workers.join(GRACE).await;
    }

    /// Drains several instances together: all leave rotation, then all stop serving, then all
    /// workers stop (an order consumer must outlive every server that may still queue orders).
    pub async fn drain_all(mut hosted: Vec<HostedGrpc>) {
        for h in &mut hosted {
            h.leave().await;
        }
        futures::future::join_all(hosted.iter_mut().map(HostedGrpc::stop_serving)).await;
        futures::future::join_all(hosted.into_iter().map(HostedGrpc::stop_workers)).await;
    }
}

/// Serves the gateway until `shutdown`, then lets in-flight requests finish for up to [`GRACE`].
pub async fn serve_gateway(
    listener: TcpListener,
    state: AppState,
    shutdown: &CancellationToken,
) -> Result<(), StartupError> {
    let serve = flashsale_gateway::app::serve(listener, state, shutdown.clone().cancelled_owned());
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(GRACE).await;
    };
    tokio::select! {
        result = serve => result.map_err(|source| StartupError::Io { context: "gateway failed".into(), source }),
        () = grace => {
            tracing::warn!("gateway requests still running after the grace period");
            Ok(())
        }
    }
}

/// Binds a TCP listener.
pub async fn bind(addr: &str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Io {
            context: format!("cannot listen on {addr}"),
            source,
        })
}

/// The address a listener is bound to (the real port when bound to port 0).
pub fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartupError> {
    listener.local_addr().map_err(|source| StartupError::Io {
        context: "cannot read the bound address".into(),
        source,
    })
}
