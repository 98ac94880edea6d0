//! Prometheus metrics, in a registry of their own (no globals, so tests can make many). The names
//! are a fixed contract with the deployment dashboards and the autoscaler (src/metrics.json).
//!
//! HTTP families are server-wide; everything the core and the service record is per model, with a
//! `model` label: [`Metrics::model`] hands each model its own [`ModelMetrics`], the series of
//! those families for that one model.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The label that names the model on per-model families.
const MODEL: &str = "model";

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub requests_in_flight: IntGauge,
    queue_duration: HistogramVec,
    tokenization_duration: HistogramVec,
    inference_duration: HistogramVec,
    batch_size: HistogramVec,
    batch_tokens: HistogramVec,
    queue_depth: IntGaugeVec,
    prompt_tokens: IntCounterVec,
    inputs: IntCounterVec,
    model_info: IntGaugeVec,
    workers_alive: IntGaugeVec,
    worker_restarts: IntCounterVec,
}

/// One model's series of the per-model families; the core and the service record into these.
#[derive(Clone)]
pub struct ModelMetrics {
    pub queue_duration: Histogram,
    pub tokenization_duration: Histogram,
    pub inference_duration: Histogram,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub queue_depth: IntGauge,
    pub prompt_tokens: IntCounter,
    pub inputs: IntCounter,
    pub workers_alive: IntGauge,
    pub worker_restarts: IntCounter,
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
        let histogram = |name: &str,
                         help: &str,
                         buckets: Vec<f64>|
         -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &[MODEL])?;
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
        let requests_in_flight =
            IntGauge::new("aft_requests_in_flight", "HTTP requests being served.")?;
        let queue_depth = IntGaugeVec::new(
            Opts::new("aft_queue_depth", "Inputs waiting to be batched."),
            &[MODEL],
        )?;
        let prompt_tokens = IntCounterVec::new(
            Opts::new("aft_prompt_tokens_total", "Tokens sent to the model."),
            &[MODEL],
        )?;
        let inputs = IntCounterVec::new(
            Opts::new("aft_inputs_total", "Inputs (texts or token lists) served."),
            &[MODEL],
        )?;
        let model_info = IntGaugeVec::new(
            Opts::new("aft_model_info", "A served model; always 1."),
            &[MODEL, "variant", "device", "version"],
        )?;
        let workers_alive = IntGaugeVec::new(
            Opts::new("aft_workers_alive", "Inference workers loaded and serving."),
            &[MODEL],
        )?;
        let worker_restarts = IntCounterVec::new(
            Opts::new(
                "aft_worker_restarts_total",
                "Inference workers restarted after dying.",
            ),
            &[MODEL],
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

        Ok(Self {
            registry,
            requests,
            request_duration,
            requests_in_flight,
            queue_duration,
            tokenization_duration,
            inference_duration,
            batch_size,
            batch_tokens,
            queue_depth,
            prompt_tokens,
            inputs,
            model_info,
            workers_alive,
            worker_restarts,
        })
    }

    /// The series of `model` in every per-model family, created now so that /metrics lists
    /// them (at zero) before the model's first request.
    pub fn model(&self, model: &str) -> ModelMetrics {
        let m = &[model];
        ModelMetrics {
            queue_duration: self.queue_duration.with_label_values(m),
            tokenization_duration: self.tokenization_duration.with_label_values(m),
            inference_duration: self.inference_duration.with_label_values(m),
            batch_size: self.batch_size.with_label_values(m),
            batch_tokens: self.batch_tokens.with_label_values(m),
            queue_depth: self.queue_depth.with_label_values(m),
            prompt_tokens: self.prompt_tokens.with_label_values(m),
            inputs: self.inputs.with_label_values(m),
            workers_alive: self.workers_alive.with_label_values(m),
            worker_restarts: self.worker_restarts.with_label_values(m),
        }
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
