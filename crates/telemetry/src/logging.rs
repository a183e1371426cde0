//! Installs the process-wide `tracing` subscriber.
//!
//! The filter comes from the caller (configuration), e.g. `info,flashsale=debug`; the format is
//! either human-readable lines or one JSON object per line for log shippers, written to stderr
//! (stdout is left to the program's own output). Personal data never
//! reaches the logs: services log user ids, never emails or passwords.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

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

/// Installs the global subscriber. Call once, from `main`.
pub fn init(filter: &str, format: LogFormat) -> Result<(), LoggingError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    let result = match format {
        LogFormat::Pretty => registry
            .with(fmt::layer().with_target(false).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|_| LoggingError::AlreadyInstalled)
}
