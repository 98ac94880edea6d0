//! The service's whole configuration: one struct, every field a flag and an `AFT_*` variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// `--scheduling`: how the batcher orders waiting work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheduling {
    /// Fair between requests (between API keys when keys are configured), by tokens, with the
    /// `priority` classes; the oldest input is passed over for a bounded number of batches only
    /// (docs/API.md, "Scheduling").
    Fair,
    /// Oldest input first, whoever sent it and whatever its priority (for comparison).
    Fifo,
}

/// `--precision`: which of a bundle's model files is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// The bundle's int8 copy (manifest `int8_model`) when it has one and the device is the CPU,
    /// else float.
    Auto,
    /// The float model (`model.pt`), on any device.
    Float,
    /// The bundle's int8 copy; a start-up error for a bundle without one or on a CUDA device.
    Int8,
}

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

    /// Model bundle directory (manifest.json, model.pt, tokenizer.json), or `NAME=DIR` to serve
    /// it under NAME instead of the manifest's name. Repeatable (comma-separated in the
    /// variable): each bundle is served with its own workers and queue; the first is the default
    /// for requests that name no `model`.
    #[arg(
        long = "model-dir",
        env = "AFT_MODEL_DIR",
        value_delimiter = ',',
        default_value = "models/aft-mini",
        required = true
    )]
    pub model_dirs: Vec<ModelDir>,

    /// Name the API reports for the first (default) model; defaults to the manifest's name.
    #[arg(long, env = "AFT_MODEL_NAME")]
    pub model_name: Option<String>,

    /// Device to run on: cpu, cuda, cuda:N, or auto (CUDA when available, else CPU).
    #[arg(long, env = "AFT_DEVICE", default_value = "cpu")]
    pub device: String,

    /// Which model file of each bundle to serve: auto (the bundle's int8 copy, manifest
    /// `int8_model`, when it has one and the device is the CPU, else float), float (model.pt,
    /// any device) or int8 (the int8 copy: CPU only; an error for a bundle without one).
    #[arg(long, env = "AFT_PRECISION", value_enum, default_value_t = Precision::Auto)]
    pub precision: Precision,

    /// Inference threads per model, each owning a replica of that model.
    #[arg(long, env = "AFT_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Threads libtorch uses inside one forward pass (per worker); 0 = number of CPUs / all
    /// short-input workers (workers x models), so that models busy at once do not oversubscribe
    /// the CPUs; on a long-input lane (which runs at background priority) CPUs / all long
    /// workers, or CPUs / every worker for a pass starting within 1 s of a short one. Either
    /// way, a pass too small to gain from threads runs on one (README, "Configuration").
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

    /// Most tokens waiting in one model's queue, all callers together; past it requests get 429,
    /// and a request holding more on its own gets 413. 0 = no limit.
    #[arg(long, env = "AFT_MAX_QUEUED_TOKENS", default_value_t = 1 << 20)]
    pub max_queued_tokens: usize,

    /// Longest input accepted, in tokens; 0 = each model's own limit (manifest max_seq_len).
    /// Longer inputs are truncated to it, or refused (422) with `truncate: false`.
    #[arg(long, env = "AFT_MAX_INPUT_TOKENS", default_value_t = 0)]
    pub max_input_tokens: usize,

    /// Inputs longer than this many tokens run on a lane of their own (`--long-workers`
    /// workers, one input per forward pass), so they never hold up short requests; 0 =
    /// --max-batch-tokens. A model whose inputs cannot be that long gets no long lane.
    #[arg(long, env = "AFT_LONG_INPUT_TOKENS", default_value_t = 0)]
    pub long_input_tokens: usize,

    /// Workers of each model's long-input lane (each a replica of its own); 0 = no long lane
    /// (long inputs then share the workers of short ones).
    #[arg(long, env = "AFT_LONG_WORKERS", default_value_t = 1)]
    pub long_workers: usize,

    /// Most chunk vectors one request may ask for with `chunking` (413 past it).
    #[arg(long, env = "AFT_MAX_CHUNKS", default_value_t = 4096)]
    pub max_chunks: usize,

    /// Most tokens one API key may have waiting in the queue; past it that key's requests get
    /// 429 (a key with nothing waiting is always admitted). 0 = no limit; needs API keys.
    #[arg(long, env = "AFT_MAX_QUEUED_TOKENS_PER_KEY", default_value_t = 0)]
    pub max_queued_tokens_per_key: usize,

    /// How waiting work is ordered into batches: fair (between requests or API keys, with
    /// priorities) or fifo (oldest input first).
    #[arg(long, env = "AFT_SCHEDULING", value_enum, default_value_t = Scheduling::Fair)]
    pub scheduling: Scheduling,

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

    /// How often heap memory that both allocators hold free is given back to the operating
    /// system, so an idle server does not keep the peak of its last burst; 0 turns it off.
    #[arg(long, env = "AFT_MEMORY_RELEASE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub memory_release_interval: Duration,

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

    /// Export OpenTelemetry traces over OTLP/HTTP to this collector URL, e.g.
    /// `http://otel-collector:4318` (`/v1/traces` is added); off when unset. `OTEL_SERVICE_NAME`
    /// and the OTLP exporter's `OTEL_*` variables apply.
    #[arg(long, env = "AFT_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// One `--model-dir` value: a bundle directory, and the name to serve it under when given as
/// `NAME=DIR`. A value is `NAME=DIR` when it has a `=` before any `/` (write `./a=b` for a
/// directory whose name holds a `=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    /// The name the API reports; the manifest's name when `None`.
    pub name: Option<String>,
    pub dir: PathBuf,
}

impl FromStr for ModelDir {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let named = value
            .split_once('=')
            .filter(|(name, _)| !name.contains('/'));
        let (name, dir) = match named {
            Some((name, dir)) => (Some(name.trim()), dir.trim()),
            None => (None, value),
        };
        if name.is_some_and(str::is_empty) {
            return Err(format!("{value:?}: empty model name before `=`"));
        }
        if dir.is_empty() {
            return Err(format!("{value:?}: no bundle directory"));
        }
        Ok(Self {
            name: name.map(str::to_owned),
            dir: PathBuf::from(dir),
        })
    }
}

impl Config {
    /// The bundles to serve, in order (the first is the default), with `--model-name` applied to
    /// the first.
    pub fn models(&self) -> Vec<ModelDir> {
        let mut models = self.model_dirs.clone();
        if let (Some(first), Some(name)) = (models.first_mut(), &self.model_name) {
            first.name = Some(name.clone());
        }
        models
    }

    /// The longest input a model whose own limit is `max_seq_len` accepts.
    pub fn max_input_tokens(&self, max_seq_len: usize) -> usize {
        match self.max_input_tokens {
            0 => max_seq_len,
            n => n.min(max_seq_len),
        }
    }

    /// The long-input lane of a model accepting inputs up to `max_input` tokens: the threshold
    /// above which inputs take it, or `None` when the model gets no long lane.
    pub fn long_lane_threshold(&self, max_input: usize) -> Option<usize> {
        let above = match self.long_input_tokens {
            0 => self.max_batch_tokens,
            n => n,
        };
        (self.long_workers > 0 && max_input > above).then_some(above)
    }

    /// Checks options against each other; the message names the options at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.model_dirs.is_empty() {
            return Err("--model-dir: no model bundle given".into());
        }
        if let (Some(name), Some(first)) = (&self.model_name, self.model_dirs.first()) {
            if first.name.as_ref().is_some_and(|n| n != name) {
                return Err(format!(
                    "--model-name {name:?} and the first --model-dir's name {:?} disagree; give one",
                    first.name.as_deref().unwrap_or_default()
                ));
            }
        }
        let positive = [
            ("--workers", self.workers),
            ("--max-batch-tokens", self.max_batch_tokens),
            ("--max-batch-size", self.max_batch_size),
            ("--max-queue-size", self.max_queue_size),
            ("--max-client-batch-size", self.max_client_batch_size),
            ("--max-body-bytes", self.max_body_bytes),
            ("--max-chunks", self.max_chunks),
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
        if self.max_queued_tokens > 0 && self.max_input_tokens > self.max_queued_tokens {
            return Err(format!(
                "--max-input-tokens ({}) must not exceed --max-queued-tokens ({}): such an input could never be queued",
                self.max_input_tokens, self.max_queued_tokens
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::CommandFactory;

    use super::*;

    /// Flag -> (variable, default) as a source gives them; a `None` default is "none".
    type FlagTable = BTreeMap<String, (Option<String>, Option<String>)>;

    /// The text of the first `code span` in a Markdown table cell.
    fn first_code(cell: &str) -> Option<String> {
        cell.split('`').nth(1).map(str::to_owned)
    }

    /// The README's `| flag | env | default | meaning |` table. A default cell that does not
    /// start with a code span (`none`, "manifest `name`") means no default value.
    fn readme_flags(readme: &str) -> FlagTable {
        let mut rows = FlagTable::new();
        let lines = readme
            .lines()
            .skip_while(|l| !l.starts_with("| flag | env | default |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'));
        for line in lines {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let flag = first_code(cells[0]).unwrap_or_else(|| panic!("no flag in {line}"));
            let default = cells[2]
                .starts_with('`')
                .then(|| first_code(cells[2]))
                .flatten();
            rows.insert(flag, (first_code(cells[1]), default));
        }
        rows
    }

    /// Every flag `--help` lists, with its variable and default.
    fn help_flags() -> FlagTable {
        let command = Config::command();
        command
            .get_arguments()
            .filter_map(|arg| {
                let long = arg
                    .get_long()
                    .filter(|l| !matches!(*l, "help" | "version"))?;
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let defaults: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                let default = (!defaults.is_empty()).then(|| defaults.join(","));
                Some((format!("--{long}"), (env, default)))
            })
            .collect()
    }

    #[test]
    fn the_readme_flag_table_says_what_help_says() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(path).expect("README.md is readable");
        let readme = readme_flags(&readme);
        let help = help_flags();
        for (flag, row) in &help {
            assert_eq!(readme.get(flag), Some(row), "{flag}: README vs --help");
        }
        for flag in readme.keys() {
            assert!(help.contains_key(flag), "{flag}: in README, not in --help");
        }
    }

    #[test]
    fn the_readme_table_parser_reads_flags_variables_and_defaults() {
        let text = "x\n| flag | env | default | meaning |\n|---|---|---|---|\n\
                    | `--a` (repeatable) | `AFT_A` (comma-separated) | `1` (or so) | m |\n\
                    | `--b` | `AFT_B` | none | m |\n\ntext\n| `--c` | | | |\n";
        let rows = readme_flags(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows["--a"], (Some("AFT_A".into()), Some("1".into())));
        assert_eq!(rows["--b"], (Some("AFT_B".into()), None));
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("aft-serve").chain(args.iter().copied()))
    }

    fn dir(name: Option<&str>, dir: &str) -> ModelDir {
        ModelDir {
            name: name.map(str::to_owned),
            dir: PathBuf::from(dir),
        }
    }

    #[test]
    fn model_dirs_are_repeatable_comma_separated_and_may_be_named() {
        let config = parse(&[
            "--model-dir",
            "models/aft-mini,topics=/srv/my bundle",
            "--model-dir",
            "./a=b",
        ])
        .unwrap();
        assert_eq!(
            config.models(),
            vec![
                dir(None, "models/aft-mini"),
                dir(Some("topics"), "/srv/my bundle"),
                dir(None, "./a=b"),
            ]
        );
        assert!(parse(&["--model-dir", "=x"]).is_err());
        assert!(parse(&["--model-dir", "name="]).is_err());
    }

    #[test]
    fn model_name_renames_the_first_model_only() {
        let config = parse(&["--model-dir", "a,b", "--model-name", "first"]).unwrap();
        assert_eq!(
            config.models(),
            vec![dir(Some("first"), "a"), dir(None, "b")]
        );
        config.validate().unwrap();
        let clash = parse(&["--model-dir", "x=a", "--model-name", "y"]).unwrap();
        assert!(clash.validate().unwrap_err().contains("--model-name"));
    }

    #[test]
    fn precision_is_auto_unless_given() {
        let with = |args: &[&str]| parse(&[&["--model-dir", "m"], args].concat());
        assert_eq!(with(&[]).unwrap().precision, Precision::Auto);
        for (value, want) in [
            ("auto", Precision::Auto),
            ("float", Precision::Float),
            ("int8", Precision::Int8),
        ] {
            assert_eq!(with(&["--precision", value]).unwrap().precision, want);
        }
        assert!(with(&["--precision", "fp16"]).is_err());
    }
}
