//! `flashsale`: the one binary. Thin on purpose: parse the command line, load configuration,
//! install telemetry, then hand over to [`flashsale::startup`].

use clap::Parser;

/// mimalloc instead of glibc malloc: the request path allocates small, short-lived buffers on
/// every worker thread, where glibc's arenas cost ~15% of CPU in a rush (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

use flashsale::cli::{Cli, Command, InventoryCommand};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let service = match &cli.command {
        // The bench is a client: no server configuration, logging or metrics of its own.
        Command::Bench(args) => {
            flashsale_bench::run(args.clone()).await?;
            return Ok(ExitCode::SUCCESS);
        }
        // So are operator commands; they read the configuration for the services' addresses.
        Command::Inventory(inventory) => {
            let config = flashsale::config::load(&cli)?;
            return match &inventory.command {
                InventoryCommand::Reconcile(args) => flashsale::ops::reconcile(&config, args).await,
            };
        }
        Command::Dev(_) => None,
        Command::Serve(serve) => Some(serve.service),
    };
    let config = flashsale::config::load(&cli)?;
    flashsale_telemetry::logging::init(&config.log, config.log_format.into())?;
    let metrics = flashsale_telemetry::metrics::install()?;
    let shutdown = flashsale::shutdown::on_signal();
    match service {
        None => {
            let app = flashsale::startup::DevApp::build(config, metrics).await?;
            // Tests and scripts read this line to find the gateway.
            println!(
                "flashsale dev: gateway listening on http://{}",
                app.http_addr()
            );
            app.run_until_stopped(shutdown).await?;
        }
        Some(service) => {
            let app = flashsale::startup::ServiceApp::build(service, config, metrics).await?;
            // Tests and scripts read this line to find the service.
            println!("flashsale serve {service:?}: listening on {}", app.addr());
            app.run_until_stopped(shutdown).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
