use std::process::ExitCode;

use clap::Parser;

use aft_serve::config::Config;

// The Rust side's allocator; libtorch's tensors keep glibc's malloc. Neither returns a burst's
// freed memory by itself once idle: `aft_serve::memory` asks both periodically. Compared with
// glibc's malloc (docs/DEPLOY.md, "Connections and memory") it peaked higher, not lower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let telemetry = match aft_serve::telemetry::init(
        config.log_format,
        &config.log_level,
        config.otlp_endpoint.as_deref(),
    ) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("aft-serve: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "aft-serve starting");
    let code = match aft_serve::app::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("aft-serve: {err:#}");
            ExitCode::FAILURE
        }
    };
    // The exporter blocks while it flushes the last spans.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}
