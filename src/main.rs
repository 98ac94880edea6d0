use std::process::ExitCode;

use clap::Parser;

use aft_serve::config::Config;

// mimalloc returns freed memory to the system; glibc's malloc kept the peak of a connection
// flood resident for good (measured in docs/DEPLOY.md). libtorch keeps its own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
