//! The service's whole configuration: one struct, every field a flag and an `AFT_*` variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured when stdout is a terminal.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "aft-serve",
    version,
    about = "HTTP inference service for Attention Free Transformer (AFT) models",
    long_about = "Serves sentence embeddings and text classification from an AFT model bundle \
                  (TorchScript model.pt + tokenizer.json + manifest.json) over HTTP, with dynamic \
                  batching, Prometheus metrics and health probes. Every option can also be set \
                  through the environment variable shown beside it."
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "AFT_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free port; the chosen one is logged).
    #[arg(long, env = "AFT_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Model bundle directory (manifest.json, model.pt, tokenizer.json).
    #[arg(long, env = "AFT_MODEL_DIR", default_value = "models/aft-mini")]
    pub model_dir: PathBuf,

    /// Name the API reports for the model; defaults to the manifest's name.
    #[arg(long, env = "AFT_MODEL_NAME")]
    pub model_name: Option<String>,

    /// Device to run on: cpu, cuda, cuda:N, or auto (CUDA when available, else CPU).
    #[arg(long, env = "AFT_DEVICE", default_value = "cpu")]
    pub device: String,

    /// Inference threads, each owning a model replica.
    #[arg(long, env = "AFT_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Threads libtorch uses inside one forward pass (per worker); 0 = number of CPUs / workers.
    #[arg(long, env = "AFT_INTRA_OP_THREADS", default_value_t = 0)]
    pub intra_op_threads: usize,

    /// Most tokens in one batch, counting padding (batch size x longest sequence).
    #[arg(long, env = "AFT_MAX_BATCH_TOKENS", default_value_t = 2048)]
    pub max_batch_tokens: usize,

    /// Most sequences in one batch.
    #[arg(long, env = "AFT_MAX_BATCH_SIZE", default_value_t = 64)]
    pub max_batch_size: usize,

    /// Optional wait, in microseconds, for more work before running a batch that is not full.
    #[arg(long, env = "AFT_MAX_WAIT_US", default_value_t = 0)]
    pub max_wait_us: u64,

    /// Most inputs waiting in the queue; past it requests get 429.
    #[arg(long, env = "AFT_MAX_QUEUE_SIZE", default_value_t = 4096)]
    pub max_queue_size: usize,

    /// Most inputs in one request (413 past it).
    #[arg(long, env = "AFT_MAX_CLIENT_BATCH_SIZE", default_value_t = 512)]
    pub max_client_batch_size: usize,

    /// Largest request body in bytes (413 past it).
    #[arg(long, env = "AFT_MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Time a request may take end to end before it gets 504 (e.g. 30s, 500ms).
    #[arg(long, env = "AFT_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Time allowed after SIGTERM/SIGINT to finish queued and in-flight work.
    #[arg(long, env = "AFT_SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Time a client has to send a whole request header, from its first byte (for a new
    /// connection, from the connection's opening); the connection is closed past it.
    #[arg(long, env = "AFT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Time a connection may stay open with no request in progress and nothing sent either way;
    /// keep it above the idle timeout of any proxy or load balancer in front.
    #[arg(long, env = "AFT_KEEP_ALIVE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub keep_alive_timeout: Duration,

    /// Most connections open at once; past it new connections are accepted and closed at once.
    #[arg(long, env = "AFT_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Threads that tokenize requests, off the async runtime; 0 = number of CPUs.
    #[arg(long, env = "AFT_TOKENIZATION_WORKERS", default_value_t = 0)]
    pub tokenization_workers: usize,

    /// API key accepted as `Authorization: Bearer <key>` (repeatable; comma-separated in the
    /// variable). No key means no authentication.
    #[arg(
        long = "api-key",
        env = "AFT_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// File with one API key per line (blank lines and `#` comments ignored).
    #[arg(long, env = "AFT_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Origins allowed by CORS (repeatable or comma-separated; `*` for any). None disables CORS.
    #[arg(
        long = "cors-allow-origin",
        env = "AFT_CORS_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,

    /// Log format.
    #[arg(long, env = "AFT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `aft_serve=debug,tower_http=info`.
    #[arg(long, env = "AFT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl Config {
    /// Checks options against each other; the message names the options at fault.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--workers", self.workers),
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-batch-size", self.max_batch_size),
            ("--max-queue-size", self.max_queue_size),
            ("--max-client-batch-size", self.max_client_batch_size),
            ("--max-body-bytes", self.max_body_bytes),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        if self.max_client_batch_size > self.max_queue_size {
            return Err(format!(
                "--max-client-batch-size ({}) must not exceed --max-queue-size ({}): such a request could never be queued",
                self.max_client_batch_size, self.max_queue_size
            ));
        }
        let durations = [
            ("--request-timeout", self.request_timeout),
            ("--header-read-timeout", self.header_read_timeout),
            ("--keep-alive-timeout", self.keep_alive_timeout),
        ];
        for (flag, value) in durations {
            if value.is_zero() {
                return Err(format!("{flag} must be more than 0"));
            }
        }
        Ok(())
    }
}
