//! Installs the process-wide `tracing` subscriber.
//!
//! The filter comes from the caller (configuration), e.g. `info,flashsale=debug`; the format is
//! either human-readable lines or one JSON object per line for log shippers, written to stderr
//! (stdout is left to the program's own output). Every line written inside a request carries
//! its request id and trace id (fields of the request span, see [`crate::span`]).
//!
//! Personal data never reaches the logs in clear. Services log user ids, never emails,
//! passwords or tokens, and mask what they must mention ([`crate::pii`]); as a second line of
//! defence every line passes through [`crate::pii::Scrubber`], which replaces anything shaped
//! like an email address or a JWT before it is written.
//!
//! When traces are recorded, the OpenTelemetry layer gets its own filter (`info`), so quiet
//! logs (`warn`) do not silence the spans that make up a trace.

use opentelemetry_sdk::trace::Tracer;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::pii::Scrubber;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Pretty,
    /// One JSON object per event.
    Json,
}

/// Errors installing the subscriber.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter directive could not be parsed.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The directive given.
        filter: String,
        /// Why it was refused.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A subscriber was already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber: logs filtered by `filter`, and spans recorded by `tracer`
/// when traces are on. Call once, from `main` (tests of the trace path call it once per test
/// process).
pub fn init(filter: &str, format: LogFormat, tracer: Option<Tracer>) -> Result<(), LoggingError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let scrubber = Scrubber::stderr();
    let fmt_layer = match format {
        LogFormat::Pretty => fmt::layer()
            .with_target(false)
            .with_writer(scrubber)
            .with_filter(env_filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(scrubber)
            .with_filter(env_filter)
            .boxed(),
    };
    let otel_layer = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Per span: its own fields only. Source location, thread, target and busy/idle
            // timings would add eight attributes (and allocations) to every span of every
            // request.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(EnvFilter::new("info"))
    });
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| LoggingError::AlreadyInstalled)
}
