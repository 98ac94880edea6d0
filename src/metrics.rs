//! Prometheus metrics, in a registry of their own (no globals, so tests can make many). The names
//! are a fixed contract with the deployment dashboards and the autoscaler.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub queue_duration: Histogram,
    pub tokenization_duration: Histogram,
    pub inference_duration: Histogram,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub queue_depth: IntGauge,
    pub requests_in_flight: IntGauge,
    pub prompt_tokens: IntCounter,
    pub inputs: IntCounter,
    pub model_info: IntGaugeVec,
    pub workers_alive: IntGauge,
    pub worker_restarts: IntCounter,
    // Fair scheduling: who is waiting (see core::schedule).
    pub queued_inputs: IntGaugeVec,
    pub queued_tokens: IntGaugeVec,
    pub key_queued_tokens: IntGaugeVec,
    pub key_limit_rejections: IntCounterVec,
    pub oldest_turns: IntCounter,
}

/// Seconds, 0.5 ms to about 33 s.
fn duration_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 17).unwrap_or_default()
}

fn powers_of_two(max_exp: u32) -> Vec<f64> {
    (0..=max_exp).map(|e| f64::from(1u32 << e)).collect()
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, prometheus::Error> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let queue_duration = histogram(
            "aft_queue_duration_seconds",
            "Time inputs wait before their batch runs.",
            duration_buckets(),
        )?;
        let tokenization_duration = histogram(
            "aft_tokenization_duration_seconds",
            "Time to tokenize a request.",
            duration_buckets(),
        )?;
        let inference_duration = histogram(
            "aft_inference_duration_seconds",
            "Time of one forward pass (one batch).",
            duration_buckets(),
        )?;
        let batch_size = histogram("aft_batch_size", "Sequences per batch.", powers_of_two(10))?;
        let batch_tokens = histogram(
            "aft_batch_tokens",
            "Padded tokens per batch (sequences x longest).",
            powers_of_two(17),
        )?;

        let requests = IntCounterVec::new(
            Opts::new(
                "aft_requests_total",
                "HTTP requests by route template and status.",
            ),
            &["route", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "aft_request_duration_seconds",
                "HTTP request duration by route template.",
            )
            .buckets(duration_buckets()),
            &["route"],
        )?;
        let queue_depth = IntGauge::new("aft_queue_depth", "Inputs waiting to be batched.")?;
        let requests_in_flight =
            IntGauge::new("aft_requests_in_flight", "HTTP requests being served.")?;
        let prompt_tokens =
            IntCounter::new("aft_prompt_tokens_total", "Tokens sent to the model.")?;
        let inputs = IntCounter::new("aft_inputs_total", "Inputs (texts or token lists) served.")?;
        let model_info = IntGaugeVec::new(
            Opts::new("aft_model_info", "The served model; always 1."),
            &["model", "variant", "device", "version"],
        )?;
        let workers_alive =
            IntGauge::new("aft_workers_alive", "Inference workers loaded and serving.")?;
        let worker_restarts = IntCounter::new(
            "aft_worker_restarts_total",
            "Inference workers restarted after dying.",
        )?;

        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(requests_in_flight.clone()))?;
        registry.register(Box::new(prompt_tokens.clone()))?;
        registry.register(Box::new(inputs.clone()))?;
        registry.register(Box::new(model_info.clone()))?;
        registry.register(Box::new(workers_alive.clone()))?;
        registry.register(Box::new(worker_restarts.clone()))?;

        let queued_inputs = IntGaugeVec::new(
            Opts::new(
                "aft_queued_inputs",
                "Inputs waiting to be batched, by priority class.",
            ),
            &["priority"],
        )?;
        let queued_tokens = IntGaugeVec::new(
            Opts::new(
                "aft_queued_tokens",
                "Tokens of the inputs waiting to be batched, by priority class.",
            ),
            &["priority"],
        )?;
        let key_queued_tokens = IntGaugeVec::new(
            Opts::new(
                "aft_key_queued_tokens",
                "Tokens waiting to be batched per API key (first 8 hex digits of its SHA-256; keys past the first 32 seen share `other`).",
            ),
            &["key"],
        )?;
        let key_limit_rejections = IntCounterVec::new(
            Opts::new(
                "aft_key_limit_rejections_total",
                "Requests refused (429) because their API key had reached its queued-token limit.",
            ),
            &["key"],
        )?;
        let oldest_turns = IntCounter::new(
            "aft_oldest_turns_total",
            "Batches anchored on the oldest waiting input by the starvation guard of fair scheduling.",
        )?;
        registry.register(Box::new(queued_inputs.clone()))?;
        registry.register(Box::new(queued_tokens.clone()))?;
        registry.register(Box::new(key_queued_tokens.clone()))?;
        registry.register(Box::new(key_limit_rejections.clone()))?;
        registry.register(Box::new(oldest_turns.clone()))?;

        Ok(Self {
            registry,
            requests,
            request_duration,
            queue_duration,
            tokenization_duration,
            inference_duration,
            batch_size,
            batch_tokens,
            queue_depth,
            requests_in_flight,
            prompt_tokens,
            inputs,
            model_info,
            workers_alive,
            worker_restarts,
            queued_inputs,
            queued_tokens,
            key_queued_tokens,
            key_limit_rejections,
            oldest_turns,
        })
    }

    pub fn set_model_info(&self, model: &str, variant: &str, device: &str, version: &str) {
        self.model_info
            .with_label_values(&[model, variant, device, version])
            .set(1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
