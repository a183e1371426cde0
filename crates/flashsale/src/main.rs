//! `flashsale`: the one binary. Thin on purpose: parse the command line, load configuration,
//! install telemetry, then hand over to [`flashsale::startup`].

use clap::Parser;

/// mimalloc instead of glibc malloc: the request path allocates small, short-lived buffers on
/// every worker thread, where glibc's arenas cost ~15% of CPU in a rush (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

use flashsale::cli::{Cli, Command, InventoryCommand, Service};
use flashsale_telemetry::traces::{Tracing, DEV_BUFFER_SPANS};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let service = match &cli.command {
        // The bench is a client: no server configuration, logging or metrics of its own.
        Command::Bench(args) => {
            flashsale_bench::run((**args).clone()).await?;
            return Ok(ExitCode::SUCCESS);
        }
        // So are operator commands; they read the configuration for the services' addresses.
        Command::Inventory(inventory) => {
            let config = flashsale::config::load(&cli)?;
            return match &inventory.command {
                InventoryCommand::Reconcile(args) => flashsale::ops::reconcile(&config, args).await,
            };
        }
        Command::Trace(args) => {
            let config = flashsale::config::load(&cli)?;
            return flashsale::traces::show(&config, args).await;
        }
        Command::Dev(_) => None,
        Command::Serve(serve) => Some(serve.service),
    };
    let config = flashsale::config::load(&cli)?;
    // `dev` keeps recent spans in memory for `/debug/traces/{id}`; `serve` only when configured.
    let (service_name, default_buffer) = match service {
        None => ("flashsale".to_owned(), DEV_BUFFER_SPANS),
        Some(s) => (format!("flashsale-{}", format!("{s:?}").to_lowercase()), 0),
    };
    let tracing = Tracing::start(&config.traces, &service_name, default_buffer)?;
    flashsale_telemetry::logging::init(
        &config.log,
        config.log_format.into(),
        tracing.as_ref().map(Tracing::tracer),
    )?;
    let telemetry = flashsale::startup::Telemetry {
        metrics: flashsale_telemetry::metrics::install()?,
        traces: tracing.as_ref().and_then(|t| t.buffer().cloned()),
    };
    let shutdown = flashsale::shutdown::on_signal();
    let result = run(service, config, telemetry, shutdown).await;
    if let Some(tracing) = tracing {
        // Exports what is still batched; blocking, so off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    }
    result
}

async fn run(
    service: Option<Service>,
    config: flashsale::config::Config,
    telemetry: flashsale::startup::Telemetry,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<ExitCode> {
    match service {
        None => {
            let app = flashsale::startup::DevApp::build(config, telemetry).await?;
            // Tests and scripts read this line to find the gateway.
            println!(
                "flashsale dev: gateway listening on http://{}",
                app.http_addr()
            );
            app.run_until_stopped(shutdown).await?;
        }
        Some(service) => {
            let app = flashsale::startup::ServiceApp::build(service, config, telemetry).await?;
            // Tests and scripts read this line to find the service.
            println!("flashsale serve {service:?}: listening on {}", app.addr());
            app.run_until_stopped(shutdown).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
