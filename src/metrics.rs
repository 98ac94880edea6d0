//! Prometheus metrics, in a registry of their own (no globals, so tests can make many). The names
//! are a fixed contract with the deployment dashboards, alerts and the autoscaler, written once in
//! `src/metrics.json` (name, type, label names, help of every family): the help texts come from
//! it, and registering a family that it does not list, or lists otherwise, fails.
//!
//! HTTP families are server-wide; everything the core and the service record is per model, with a
//! `model` label: [`Metrics::model`] hands each model its own [`ModelMetrics`], the series of
//! those families for that one model.

use std::collections::BTreeMap;

use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::{Deserialize, Serialize};

/// `src/metrics.json`: every metric family the service exports.
pub const CONTRACT_JSON: &str = include_str!("metrics.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FamilyType {
    Counter,
    Gauge,
    Histogram,
}

/// One entry of `src/metrics.json`. Names carry no `_bucket`/`_sum`/`_count` suffix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FamilyType,
    pub labels: Vec<String>,
    pub help: String,
}

/// The families of `src/metrics.json`, in its order.
pub fn families() -> Result<Vec<Family>, serde_json::Error> {
    serde_json::from_str(CONTRACT_JSON)
}

/// The contract by name, so each registration can take its help text and be checked.
struct Contract(BTreeMap<String, Family>);

impl Contract {
    fn load() -> Result<Self, prometheus::Error> {
        let families =
            families().map_err(|e| prometheus::Error::Msg(format!("src/metrics.json: {e}")))?;
        Ok(Self(
            families.into_iter().map(|f| (f.name.clone(), f)).collect(),
        ))
    }

    /// The help text of `name`, after checking that the contract lists it as a `kind` with
    /// `labels`.
    fn help(
        &self,
        name: &str,
        kind: FamilyType,
        labels: &[&str],
    ) -> Result<&str, prometheus::Error> {
        let family = self
            .0
            .get(name)
            .ok_or_else(|| prometheus::Error::Msg(format!("{name} is not in src/metrics.json")))?;
        if family.kind != kind || family.labels != labels {
            return Err(prometheus::Error::Msg(format!(
                "{name} is registered as a {kind:?} with labels {labels:?}; src/metrics.json says \
                 {:?} with {:?}",
                family.kind, family.labels
            )));
        }
        Ok(&family.help)
    }
}

/// The label that names the model on per-model families.
const MODEL: &str = "model";

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub requests_in_flight: IntGauge,
    pub model_info: IntGaugeVec,
    queue_duration: HistogramVec,
    tokenization_duration: HistogramVec,
    inference_duration: HistogramVec,
    batch_size: HistogramVec,
    batch_tokens: HistogramVec,
    queue_depth: IntGaugeVec,
    prompt_tokens: IntCounterVec,
    inputs: IntCounterVec,
    workers_alive: IntGaugeVec,
    worker_restarts: IntCounterVec,
    queued_inputs: IntGaugeVec,
    queued_tokens: IntGaugeVec,
    key_queued_tokens: IntGaugeVec,
    key_limit_rejections: IntCounterVec,
    oldest_turns: IntCounterVec,
    long_input_tokens: HistogramVec,
    long_inference_duration: HistogramVec,
    long_inputs_running: IntGaugeVec,
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
    // Fair scheduling: who is waiting (see core::schedule).
    pub queued_inputs: ModelVec<IntGaugeVec>,
    pub queued_tokens: ModelVec<IntGaugeVec>,
    pub key_queued_tokens: ModelVec<IntGaugeVec>,
    pub key_limit_rejections: ModelVec<IntCounterVec>,
    pub oldest_turns: IntCounter,
    // The long-input lane (see core::LongLane).
    pub long_input_tokens: Histogram,
    pub long_inference_duration: Histogram,
    pub long_inputs_running: IntGauge,
}

/// The most labels a per-model family has besides `model`.
const MAX_OTHER_LABELS: usize = 3;

/// One model's part of a per-model family with more labels than `model`: the model is fixed,
/// the other label values are given at each use.
#[derive(Clone)]
pub struct ModelVec<V> {
    vec: V,
    model: String,
}

impl<P: MetricVecBuilder> ModelVec<MetricVec<P>> {
    /// The series for this model and `rest`, the family's other label values in order (at most
    /// [`MAX_OTHER_LABELS`]). On the request path, so the values are gathered on the stack.
    pub fn with_label_values(&self, rest: &[&str]) -> P::M {
        let mut values = [""; MAX_OTHER_LABELS + 1];
        let n = rest.len().min(MAX_OTHER_LABELS);
        debug_assert_eq!(n, rest.len(), "a per-model family with too many labels");
        values[0] = self.model.as_str();
        values[1..=n].copy_from_slice(&rest[..n]);
        self.vec.with_label_values(&values[..=n])
    }
}

fn model_vec<V: Clone>(vec: &V, model: &str) -> ModelVec<V> {
    ModelVec {
        vec: vec.clone(),
        model: model.to_owned(),
    }
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
        let contract = Contract::load()?;
        let registry = Registry::new();
        let register = |c: Box<dyn prometheus::core::Collector>| registry.register(c);
        // Per-model families: one series per served model.
        let histogram = |name: &str,
                         buckets: Vec<f64>|
         -> Result<HistogramVec, prometheus::Error> {
            let help = contract.help(name, FamilyType::Histogram, &[MODEL])?;
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &[MODEL])?;
            register(Box::new(h.clone()))?;
            Ok(h)
        };
        let gauge = |name: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let help = contract.help(name, FamilyType::Gauge, &[MODEL])?;
            let g = IntGaugeVec::new(Opts::new(name, help), &[MODEL])?;
            register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str| -> Result<IntCounterVec, prometheus::Error> {
            let help = contract.help(name, FamilyType::Counter, &[MODEL])?;
            let c = IntCounterVec::new(Opts::new(name, help), &[MODEL])?;
            register(Box::new(c.clone()))?;
            Ok(c)
        };

        let opts = |name: &str, kind, labels: &[&str]| -> Result<Opts, prometheus::Error> {
            Ok(Opts::new(name, contract.help(name, kind, labels)?))
        };
        let requests_labels = ["route", "status"];
        let requests = IntCounterVec::new(
            opts("aft_requests_total", FamilyType::Counter, &requests_labels)?,
            &requests_labels,
        )?;
        register(Box::new(requests.clone()))?;
        let request_duration = HistogramVec::new(
            HistogramOpts::from(opts(
                "aft_request_duration_seconds",
                FamilyType::Histogram,
                &["route"],
            )?)
            .buckets(duration_buckets()),
            &["route"],
        )?;
        register(Box::new(request_duration.clone()))?;
        let model_info_labels = ["model", "variant", "device", "version"];
        let model_info = IntGaugeVec::new(
            opts("aft_model_info", FamilyType::Gauge, &model_info_labels)?,
            &model_info_labels,
        )?;
        register(Box::new(model_info.clone()))?;

        let queue_duration = histogram("aft_queue_duration_seconds", duration_buckets())?;
        let tokenization_duration =
            histogram("aft_tokenization_duration_seconds", duration_buckets())?;
        let inference_duration = histogram("aft_inference_duration_seconds", duration_buckets())?;
        let batch_size = histogram("aft_batch_size", powers_of_two(10))?;
        let batch_tokens = histogram("aft_batch_tokens", powers_of_two(17))?;
        let queue_depth = gauge("aft_queue_depth")?;
        let requests_in_flight = IntGauge::new(
            "aft_requests_in_flight",
            contract.help("aft_requests_in_flight", FamilyType::Gauge, &[])?,
        )?;
        register(Box::new(requests_in_flight.clone()))?;
        let prompt_tokens = counter("aft_prompt_tokens_total")?;
        let inputs = counter("aft_inputs_total")?;
        let workers_alive = gauge("aft_workers_alive")?;
        let worker_restarts = counter("aft_worker_restarts_total")?;

        // Fair scheduling: who is waiting (see core::schedule).
        let gauge_vec = |name: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(opts(name, FamilyType::Gauge, labels)?, labels)?;
            register(Box::new(g.clone()))?;
            Ok(g)
        };
        let queued_inputs = gauge_vec("aft_queued_inputs", &[MODEL, "priority"])?;
        let queued_tokens = gauge_vec("aft_queued_tokens", &[MODEL, "priority"])?;
        let key_queued_tokens = gauge_vec("aft_key_queued_tokens", &[MODEL, "key"])?;
        let rejection_labels = [MODEL, "key"];
        let key_limit_rejections = IntCounterVec::new(
            opts(
                "aft_key_limit_rejections_total",
                FamilyType::Counter,
                &rejection_labels,
            )?,
            &rejection_labels,
        )?;
        register(Box::new(key_limit_rejections.clone()))?;
        let oldest_turns = counter("aft_oldest_turns_total")?;
        // The long-input lane: inputs up to 2^17 tokens, forward passes up to about 2 minutes.
        let long_input_tokens = histogram("aft_long_input_tokens", powers_of_two(17))?;
        let long_inference_duration = histogram(
            "aft_long_inference_duration_seconds",
            prometheus::exponential_buckets(0.001, 2.0, 18).unwrap_or_default(),
        )?;
        let long_inputs_running = gauge("aft_long_inputs_running")?;

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
            long_input_tokens,
            long_inference_duration,
            long_inputs_running,
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
            queued_inputs: model_vec(&self.queued_inputs, model),
            queued_tokens: model_vec(&self.queued_tokens, model),
            key_queued_tokens: model_vec(&self.key_queued_tokens, model),
            key_limit_rejections: model_vec(&self.key_limit_rejections, model),
            oldest_turns: self.oldest_turns.with_label_values(m),
            long_input_tokens: self.long_input_tokens.with_label_values(m),
            long_inference_duration: self.long_inference_duration.with_label_values(m),
            long_inputs_running: self.long_inputs_running.with_label_values(m),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, type, label names, help) of every family the registry exports.
    fn registered(metrics: &Metrics) -> Vec<Family> {
        // Labelled families appear only once they have a series.
        metrics.requests.with_label_values(&["/r", "200"]).inc();
        metrics
            .request_duration
            .with_label_values(&["/r"])
            .observe(0.1);
        metrics.set_model_info("m", "v", "cpu", "0");
        let model = metrics.model("m");
        // Families with labels beyond `model` get a series at their first use.
        model.queued_inputs.with_label_values(&["normal"]);
        model.queued_tokens.with_label_values(&["normal"]);
        model.key_queued_tokens.with_label_values(&["k"]);
        model.key_limit_rejections.with_label_values(&["k"]);
        let mut out: Vec<Family> = metrics
            .registry
            .gather()
            .iter()
            .map(|f| Family {
                name: f.name().to_owned(),
                kind: match f.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => FamilyType::Counter,
                    prometheus::proto::MetricType::GAUGE => FamilyType::Gauge,
                    prometheus::proto::MetricType::HISTOGRAM => FamilyType::Histogram,
                    other => panic!("{} has unexpected type {other:?}", f.name()),
                },
                labels: f.get_metric()[0]
                    .get_label()
                    .iter()
                    .map(|l| l.name().to_owned())
                    .collect(),
                help: f.help().to_owned(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    #[test]
    fn registers_exactly_the_families_of_metrics_json() {
        let metrics = Metrics::new().unwrap();
        let mut contract = families().unwrap();
        contract.sort_by(|a, b| a.name.cmp(&b.name));
        let mut got = registered(&metrics);
        // The exposition sorts label names; the contract keeps them in registration order.
        for f in contract.iter_mut().chain(got.iter_mut()) {
            f.labels.sort();
        }
        assert_eq!(got, contract);
    }

    #[test]
    fn the_contract_names_each_family_once_without_sample_suffixes() {
        let contract = families().unwrap();
        let mut names: Vec<&str> = contract.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), contract.len(), "a family is listed twice");
        for f in &contract {
            assert!(f.name.starts_with("aft_"), "{}", f.name);
            assert!(!f.help.is_empty(), "{} has no help", f.name);
            for suffix in ["_bucket", "_sum", "_count"] {
                assert!(!f.name.ends_with(suffix), "{}", f.name);
            }
        }
    }

    #[test]
    fn registering_a_family_the_contract_lists_otherwise_fails() {
        let contract = Contract::load().unwrap();
        assert!(contract
            .help("aft_queue_depth", FamilyType::Gauge, &["model"])
            .is_ok());
        assert!(contract
            .help("aft_queue_depth", FamilyType::Gauge, &[])
            .is_err());
        assert!(contract
            .help("aft_queue_depth", FamilyType::Counter, &["model"])
            .is_err());
        assert!(contract
            .help("aft_requests_total", FamilyType::Counter, &["route"])
            .is_err());
        assert!(contract
            .help("aft_not_in_the_contract", FamilyType::Gauge, &[])
            .is_err());
    }
}
