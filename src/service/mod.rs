//! What the routes call: validate a request's inputs, tokenize them, run them through the core and
//! turn model outputs into answers (normalised embeddings, top-k labels). No HTTP here: errors are
//! [`ServiceError`]s, which the HTTP layer maps to statuses.

mod chunking;
mod error;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bundle::{Bundle, EMBED_SPANS};
use crate::core::{Caller, Infer, Inference, ModelInput, TokenSpan};
use crate::metrics::ModelMetrics;
use crate::telemetry::{self, KeyValue};
use crate::tokenize::{Input, TokenPiece, TokenizerPool};

pub use chunking::{chunk_spans, ChunkSpan, Chunking};
pub use error::ServiceError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

/// How long the inference part of a request took; the routes turn it into headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub queue: Duration,
    pub inference: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct EmbedOptions {
    pub truncate: bool,
    /// L2-normalise the vectors; `None` for the model's default (the manifest's `normalize`).
    pub normalize: Option<bool>,
    /// Keep only the first `dimensions` components (before normalising).
    pub dimensions: Option<usize>,
    /// Late chunking: also one vector per chunk of each input.
    pub chunking: Option<Chunking>,
}

/// One chunk's vector and where the chunk lies in its input.
#[derive(Debug, Clone)]
pub struct ChunkVector {
    /// Characters `[start, end)` of the input text (Unicode code points).
    pub start: usize,
    pub end: usize,
    /// Text tokens in the chunk.
    pub tokens: usize,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// With `chunking`: per input, its chunks in text order.
    pub chunks: Option<Vec<Vec<ChunkVector>>>,
    pub dimensions: usize,
    pub usage: Usage,
    pub timing: Timing,
}

/// Per input, one vector per token (special tokens included), as the model's output projection
/// gives it: not normalised.
#[derive(Debug, Clone)]
pub struct TokenEmbeddings {
    pub vectors: Vec<Vec<Vec<f32>>>,
    pub usage: Usage,
    pub timing: Timing,
}

/// What `classify` scores labels with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scores {
    /// Softmax probabilities.
    #[default]
    Softmax,
    /// The head's logits as they are.
    Raw,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone)]
pub struct Classifications {
    pub results: Vec<Vec<LabelScore>>,
    pub usage: Usage,
    pub timing: Timing,
}

/// Per-request bounds the service checks before queueing anything.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Most inputs in one request.
    pub max_client_batch_size: usize,
    /// Most chunk vectors one request may ask for (late chunking).
    pub max_chunks: usize,
}

pub struct Service {
    pub model_name: String,
    pub bundle: Arc<Bundle>,
    tokenizers: TokenizerPool,
    infer: Arc<Infer>,
    metrics: Arc<ModelMetrics>,
    limits: RequestLimits,
}

impl Service {
    pub fn new(
        model_name: String,
        bundle: Arc<Bundle>,
        tokenizers: TokenizerPool,
        infer: Arc<Infer>,
        metrics: Arc<ModelMetrics>,
        limits: RequestLimits,
    ) -> Self {
        Self {
            model_name,
            bundle,
            tokenizers,
            infer,
            metrics,
            limits,
        }
    }

    /// Whether the bundle can pool chunks of a whole-document pass (`chunking`).
    pub fn supports_chunking(&self) -> bool {
        self.bundle.manifest.has_method(EMBED_SPANS)
    }

    /// `Ok` when the model is loaded and warm in every worker; otherwise why not.
    pub fn readiness(&self) -> Result<(), ServiceError> {
        self.infer.readiness().map_err(ServiceError::NotReady)
    }

    /// Waits until the model is loaded and warm in every worker; fails as soon as one fails.
    pub async fn wait_ready(&self) -> Result<(), ServiceError> {
        Ok(self.infer.wait_ready().await?)
    }

    /// Refuses new work and waits until everything admitted has been answered.
    pub async fn shutdown(&self) {
        self.infer.shutdown().await;
    }

    pub fn embedding_dim(&self) -> usize {
        self.bundle.manifest.embedding_dim
    }

    /// Token ids below this are valid pre-tokenized input.
    pub fn vocab_size(&self) -> usize {
        self.tokenizers.tokenizer().vocab_size()
    }

    pub fn labels(&self) -> &[String] {
        self.bundle.manifest.labels()
    }

    pub async fn embed(
        &self,
        inputs: Vec<Input>,
        options: EmbedOptions,
        caller: Caller,
    ) -> Result<Embeddings, ServiceError> {
        let full = self.embedding_dim();
        let dimensions = match options.dimensions {
            None => full,
            Some(d) if (1..=full).contains(&d) => d,
            Some(d) => {
                return Err(ServiceError::invalid(
                    "dimensions",
                    format!("dimensions must be between 1 and {full}, got {d}"),
                ))
            }
        };
        let normalize = options.normalize.unwrap_or(self.bundle.manifest.normalize);
        let finish = |mut v: Vec<f32>| {
            v.truncate(dimensions);
            if normalize {
                l2_normalize(&mut v);
            }
            v
        };
        let Some(chunking) = options.chunking else {
            let (inference, usage) = self.run(inputs, options.truncate, caller).await?;
            let timing = timing(&inference);
            return Ok(Embeddings {
                vectors: inference
                    .outputs
                    .into_iter()
                    .map(|o| finish(o.embedding))
                    .collect(),
                chunks: None,
                dimensions,
                usage,
                timing,
            });
        };
        let (inference, usage, spans) = self
            .run_chunked(inputs, chunking, options.truncate, caller)
            .await?;
        let timing = timing(&inference);
        let mut vectors = Vec::with_capacity(inference.outputs.len());
        let mut chunks = Vec::with_capacity(inference.outputs.len());
        for (output, spans) in inference.outputs.into_iter().zip(spans) {
            vectors.push(finish(output.embedding));
            chunks.push(
                output
                    .spans
                    .into_iter()
                    .zip(spans)
                    .map(|(v, span)| ChunkVector {
                        start: span.chars.0,
                        end: span.chars.1,
                        tokens: span.tokens.end - span.tokens.start,
                        embedding: finish(v),
                    })
                    .collect(),
            );
        }
        Ok(Embeddings {
            vectors,
            chunks: Some(chunks),
            dimensions,
            usage,
            timing,
        })
    }

    /// Late chunking: tokenizes the texts with offsets, places the chunks, and runs each text
    /// once, whole, pooling every chunk from that pass.
    async fn run_chunked(
        &self,
        inputs: Vec<Input>,
        chunking: Chunking,
        truncate: bool,
        caller: Caller,
    ) -> Result<(Inference, Usage, Vec<Vec<ChunkSpan>>), ServiceError> {
        let chunking = chunking.validate()?;
        if !self.supports_chunking() {
            return Err(ServiceError::ChunkingUnsupported(self.model_name.clone()));
        }
        self.check_count(&inputs)?;
        let texts = inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| match input {
                Input::Text(text) => Ok(text),
                Input::Ids(_) => Err(ServiceError::invalid(
                    format!("inputs[{i}]"),
                    "chunking needs texts (chunk spans are character offsets)",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let count = texts.len();
        let started = Instant::now();
        let tokenized = self
            .tokenizers
            .encode_texts_with_offsets(texts, truncate)
            .await?;
        let tokenized_at = Instant::now();
        self.metrics
            .tokenization_duration
            .observe(tokenized_at.duration_since(started).as_secs_f64());
        let spans: Vec<Vec<ChunkSpan>> =
            tokenized.iter().map(|t| chunk_spans(t, chunking)).collect();
        let total_chunks: usize = spans.iter().map(Vec::len).sum();
        if total_chunks > self.limits.max_chunks {
            return Err(ServiceError::TooManyChunks {
                count: total_chunks,
                limit: self.limits.max_chunks,
            });
        }
        let tokens: usize = tokenized.iter().map(|t| t.ids.len()).sum();
        let model_inputs = tokenized
            .into_iter()
            .zip(&spans)
            .map(|(t, spans)| ModelInput {
                ids: t.ids,
                spans: spans.iter().map(|s| s.tokens).collect(),
            })
            .collect();
        let inference = self.infer.run_as(model_inputs, caller).await?;
        self.metrics.inputs.inc_by(count as u64);
        self.metrics.prompt_tokens.inc_by(tokens as u64);
        self.trace(started, tokenized_at, count, tokens, &inference);
        Ok((
            inference,
            Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
            spans,
        ))
    }

    /// One vector per token of each input, from one pass over the whole input: each token's
    /// state pooled as a span of its own (`embed_spans`), so the core batches, schedules and
    /// bounds these inputs as any other. At most `--max-chunks` vectors per request.
    pub async fn embed_tokens(
        &self,
        inputs: Vec<Input>,
        truncate: bool,
        caller: Caller,
    ) -> Result<TokenEmbeddings, ServiceError> {
        if !self.supports_chunking() {
            return Err(ServiceError::TokenVectorsUnsupported(
                self.model_name.clone(),
            ));
        }
        self.check_count(&inputs)?;
        let count = inputs.len();
        let started = Instant::now();
        let tokenized = self.tokenizers.encode_all(inputs, truncate).await?;
        let tokenized_at = Instant::now();
        self.metrics
            .tokenization_duration
            .observe(tokenized_at.duration_since(started).as_secs_f64());
        let tokens = tokenized.total_tokens;
        if tokens > self.limits.max_chunks {
            return Err(ServiceError::TooManyTokenVectors {
                count: tokens,
                limit: self.limits.max_chunks,
            });
        }
        let model_inputs = tokenized
            .ids
            .into_iter()
            .map(|ids| ModelInput {
                spans: (0..ids.len())
                    .map(|t| TokenSpan {
                        start: t,
                        end: t + 1,
                    })
                    .collect(),
                ids,
            })
            .collect();
        let inference = self.infer.run_as(model_inputs, caller).await?;
        self.metrics.inputs.inc_by(count as u64);
        self.metrics.prompt_tokens.inc_by(tokens as u64);
        self.trace(started, tokenized_at, count, tokens, &inference);
        let timing = timing(&inference);
        Ok(TokenEmbeddings {
            vectors: inference.outputs.into_iter().map(|o| o.spans).collect(),
            usage: Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
            timing,
        })
    }

    /// Records a served request in its trace, when traces are on: its tokenization (`started` to
    /// `tokenized_at`), and per batch its inputs ran in, the wait for it (`queue`), the batch
    /// and its forward pass.
    fn trace(
        &self,
        started: Instant,
        tokenized_at: Instant,
        inputs: usize,
        tokens: usize,
        inference: &Inference,
    ) {
        let Some(request) = telemetry::current() else {
            return;
        };
        let model = || KeyValue::new("model", self.model_name.clone());
        request.child(
            "tokenize",
            started,
            tokenized_at,
            vec![
                model(),
                KeyValue::new("inputs", inputs as i64),
                KeyValue::new("tokens", tokens as i64),
            ],
        );
        for batch in &inference.batches {
            let lane = KeyValue::new("batch.lane", batch.lane);
            request.child(
                "queue",
                inference.enqueued,
                batch.started,
                vec![model(), lane.clone()],
            );
            let ended = batch.started + batch.forward;
            request
                .child(
                    "batch",
                    batch.started,
                    ended,
                    vec![
                        model(),
                        lane,
                        KeyValue::new("batch.size", batch.size as i64),
                        KeyValue::new("batch.padded_tokens", batch.padded_tokens as i64),
                    ],
                )
                .child("forward", batch.started, ended, vec![model()]);
        }
    }

    /// How the tokenizer cuts each text (no truncation; nothing reaches the model).
    pub async fn tokenize(
        &self,
        texts: Vec<String>,
        add_special: bool,
    ) -> Result<Vec<Vec<TokenPiece>>, ServiceError> {
        self.check_count_of(texts.len())?;
        if let Some(i) = texts.iter().position(String::is_empty) {
            return Err(ServiceError::invalid(
                format!("inputs[{i}]"),
                format!("inputs[{i}] is empty"),
            ));
        }
        Ok(self.tokenizers.pieces(texts, add_special).await?)
    }

    /// The text of each token-id list (nothing reaches the model).
    pub async fn decode(
        &self,
        ids: Vec<Vec<i64>>,
        skip_special: bool,
    ) -> Result<Vec<String>, ServiceError> {
        self.check_count_of(ids.len())?;
        Ok(self.tokenizers.decode(ids, skip_special).await?)
    }

    /// A request has at least one input and at most `max_client_batch_size`.
    fn check_count(&self, inputs: &[Input]) -> Result<(), ServiceError> {
        self.check_count_of(inputs.len())
    }

    fn check_count_of(&self, count: usize) -> Result<(), ServiceError> {
        if count == 0 {
            return Err(ServiceError::invalid("inputs", "inputs must not be empty"));
        }
        if count > self.limits.max_client_batch_size {
            return Err(ServiceError::TooManyInputs {
                count,
                limit: self.limits.max_client_batch_size,
            });
        }
        Ok(())
    }

    pub async fn classify(
        &self,
        inputs: Vec<Input>,
        top_k: usize,
        scores: Scores,
        truncate: bool,
        caller: Caller,
    ) -> Result<Classifications, ServiceError> {
        let labels = self.labels();
        if labels.is_empty() {
            return Err(ServiceError::NoClassifier(self.model_name.clone()));
        }
        if top_k == 0 {
            return Err(ServiceError::invalid("top_k", "top_k must be at least 1"));
        }
        let (inference, usage) = self.run(inputs, truncate, caller).await?;
        let timing = timing(&inference);
        let results = inference
            .outputs
            .iter()
            .map(|o| match scores {
                Scores::Softmax => top_k_softmax(&o.logits, labels, top_k),
                Scores::Raw => top_k_raw(&o.logits, labels, top_k),
            })
            .collect();
        Ok(Classifications {
            results,
            usage,
            timing,
        })
    }

    /// Checks the input count, tokenizes, and runs the model on behalf of `caller`.
    async fn run(
        &self,
        inputs: Vec<Input>,
        truncate: bool,
        caller: Caller,
    ) -> Result<(Inference, Usage), ServiceError> {
        self.check_count(&inputs)?;
        let count = inputs.len();
        let started = Instant::now();
        let tokenized = self.tokenizers.encode_all(inputs, truncate).await?;
        let tokenized_at = Instant::now();
        self.metrics
            .tokenization_duration
            .observe(tokenized_at.duration_since(started).as_secs_f64());
        let tokens = tokenized.total_tokens;
        let inference = self.infer.run_as(tokenized.ids, caller).await?;
        self.metrics.inputs.inc_by(count as u64);
        self.metrics.prompt_tokens.inc_by(tokens as u64);
        self.trace(started, tokenized_at, count, tokens, &inference);
        Ok((
            inference,
            Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        ))
    }
}

fn timing(inference: &Inference) -> Timing {
    Timing {
        queue: inference.queue_time,
        inference: inference.inference_time,
    }
}

/// Scales `v` to unit length (left as is when it is all zeros).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// The `k` most likely labels under a softmax over `logits`, highest first.
pub fn top_k_softmax(logits: &[f32], labels: &[String], k: usize) -> Vec<LabelScore> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let mut scored: Vec<LabelScore> = labels
        .iter()
        .zip(&exps)
        .map(|(label, e)| LabelScore {
            label: label.clone(),
            score: (e / sum) as f32,
        })
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    scored.truncate(k);
    scored
}

/// The `k` labels of the highest logits, highest first, scored by their logits.
pub fn top_k_raw(logits: &[f32], labels: &[String], k: usize) -> Vec<LabelScore> {
    let mut scored: Vec<LabelScore> = labels
        .iter()
        .zip(logits)
        .map(|(label, &score)| LabelScore {
            label: label.clone(),
            score,
        })
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    scored.truncate(k);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_to_unit_length() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0, 0.0];
        l2_normalize(&mut zero);
        assert_eq!(zero, vec![0.0, 0.0]);
    }

    #[test]
    fn softmax_top_k_is_sorted_and_sums_to_one() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let all = top_k_softmax(&[1.0, 3.0, 2.0], &labels, 10);
        assert_eq!(
            all.iter().map(|s| s.label.as_str()).collect::<Vec<_>>(),
            vec!["b", "c", "a"]
        );
        let total: f32 = all.iter().map(|s| s.score).sum();
        assert!((total - 1.0).abs() < 1e-6);
        let expected_b = 3f64.exp() / (1f64.exp() + 2f64.exp() + 3f64.exp());
        assert!((f64::from(all[0].score) - expected_b).abs() < 1e-6);
        assert_eq!(top_k_softmax(&[1.0, 3.0, 2.0], &labels, 1).len(), 1);
        // Large logits must not overflow.
        let big = top_k_softmax(&[1000.0, 999.0, -1000.0], &labels, 3);
        assert!(big.iter().all(|s| s.score.is_finite()));
    }
}
