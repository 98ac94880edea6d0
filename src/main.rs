use std::process::ExitCode;

use clap::Parser;

use aft_serve::config::Config;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(err) = aft_serve::telemetry::init(config.log_format, &config.log_level) {
        eprintln!("aft-serve: {err:#}");
        return ExitCode::FAILURE;
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "aft-serve starting");
    match aft_serve::app::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("aft-serve: {err:#}");
            ExitCode::FAILURE
        }
    }
}
