//! Span recording and export: `tracing` spans become OpenTelemetry spans.
//!
//! Every hop already opens a `tracing` span (the gateway's request span, each gRPC server's
//! span, the order consumer's batch span). When traces are on, [`Tracing::start`] builds an
//! OpenTelemetry tracer provider and `tracing-opentelemetry` turns those spans into OTel spans:
//!
//! * exported over OTLP/gRPC to a collector when `traces.otlp_endpoint` is set (batched, on a
//!   background thread, so a slow collector never blocks a request), and/or
//! * kept in the in-process [`SpanBuffer`] (`flashsale dev` keeps the last 10,000 spans by
//!   default), served at `/debug/traces/{id}`.
//!
//! Sampling is parent-based: a request whose caller sent a sampled `traceparent` is recorded,
//! a new trace is recorded with probability `traces.sample_ratio`, at most
//! `traces.max_new_per_second` of them each second ([`crate::sampler`]). With neither an endpoint nor a
//! buffer, no OpenTelemetry layer is installed at all: spans stay plain `tracing` spans and the
//! W3C context is still carried ([`crate::trace_context`]), which costs nothing measurable.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    trace::{SdkTracerProvider, SpanLimits, Tracer},
    Resource,
};
use serde::Deserialize;

use crate::{sampler::CappedRatio, span_buffer::SpanBuffer};

/// Spans `flashsale dev` keeps in memory when `traces.buffer_spans` is not set.
pub const DEV_BUFFER_SPANS: usize = 10_000;

/// Trace settings (`traces.*`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct TracesConfig {
    /// OTLP/gRPC endpoint of a collector (e.g. `http://127.0.0.1:4317`); unset: no export.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0.0–1.0 (a caller's sampling decision is followed).
    pub sample_ratio: f64,
    /// At most this many new traces recorded per second, whatever the ratio (a token bucket;
    /// see [`crate::sampler`]): a rush does not pay for recording every buy. Default 100.
    pub max_new_per_second: u32,
    /// Finished spans kept in memory for `/debug/traces/{id}`; unset: 10,000 in `dev`, none in
    /// `serve`. 0 turns the buffer off.
    pub buffer_spans: Option<usize>,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            max_new_per_second: crate::sampler::DEFAULT_MAX_NEW_PER_SECOND,
            buffer_spans: None,
        }
    }
}

/// Errors building the trace pipeline.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The sample ratio is outside 0.0–1.0.
    #[error("traces.sample_ratio must be between 0 and 1, not {0}")]
    SampleRatio(f64),
    /// The OTLP exporter could not be built (bad endpoint).
    #[error("OTLP exporter for {endpoint:?}: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why it failed.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// A running trace pipeline: the provider (flushed on [`Tracing::shutdown`]) and the span
/// buffer, when configured.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    buffer: Option<SpanBuffer>,
}

impl Tracing {
    /// Builds the pipeline for `service` (the OTel `service.name`); `None` when traces are off
    /// (no endpoint and no buffer). `default_buffer` is the buffer size used when
    /// `buffer_spans` is unset. Call inside the Tokio runtime (the OTLP client lives on it).
    pub fn start(
        config: &TracesConfig,
        service: &str,
        default_buffer: usize,
    ) -> Result<Option<Self>, TracesError> {
        if !(0.0..=1.0).contains(&config.sample_ratio) {
            return Err(TracesError::SampleRatio(config.sample_ratio));
        }
        let buffer_spans = config.buffer_spans.unwrap_or(default_buffer);
        if config.otlp_endpoint.is_none() && buffer_spans == 0 {
            return Ok(None);
        }
        let limits = SpanLimits {
            // The order consumer links its batch span to every request of the batch.
            max_links_per_span: 4096,
            ..SpanLimits::default()
        };
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(CappedRatio::parent_based(
                config.sample_ratio,
                config.max_new_per_second,
            ))
            .with_span_limits(limits)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_owned())
                    .build(),
            );
        let buffer = (buffer_spans > 0).then(|| SpanBuffer::new(buffer_spans));
        if let Some(buffer) = &buffer {
            builder = builder.with_span_processor(buffer.clone());
        }
        if let Some(endpoint) = &config.otlp_endpoint {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|source| TracesError::Exporter {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            builder = builder.with_batch_exporter(exporter);
        }
        Ok(Some(Self {
            provider: builder.build(),
            buffer,
        }))
    }

    /// The tracer the `tracing-opentelemetry` layer records with.
    pub fn tracer(&self) -> Tracer {
        self.provider.tracer("flashsale")
    }

    /// The in-process span buffer, when configured.
    pub fn buffer(&self) -> Option<&SpanBuffer> {
        self.buffer.as_ref()
    }

    /// Exports what is still batched and stops the pipeline. Blocks until the exporter is done:
    /// call it from a blocking context (`spawn_blocking`), not on a runtime worker.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "trace pipeline did not shut down cleanly");
        }
    }
}
