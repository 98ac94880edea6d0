//! The TorchScript backend (tch): loads `model.pt` on a device, casts parameters to float32 (bundles
//! may store float16), runs in eval mode without autograd, and pads each batch itself.

use std::sync::Arc;

use tch::{CModule, Device, IValue, Kind, Tensor};

use super::threads::{LaneThreads, Priority};
use crate::bundle::{Bundle, EMBED_SPANS};
use crate::core::{Backend, BackendError, BackendFactory, BatchLimits, ModelOutput, TokenSpan};

/// Parses `cpu`, `cuda`, `cuda:N` or `auto`, failing clearly where CUDA is not usable.
pub fn parse_device(spec: &str) -> Result<Device, BackendError> {
    let spec = spec.trim().to_ascii_lowercase();
    let cuda_index = match spec.as_str() {
        "cpu" => return Ok(Device::Cpu),
        "auto" => return Ok(Device::cuda_if_available()),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => index,
            _ => {
                return Err(BackendError(format!(
                    "--device {spec:?}: expected cpu, cuda, cuda:N or auto"
                )))
            }
        },
    };
    if !tch::Cuda::is_available() {
        let why = if cfg!(feature = "cuda") {
            "no CUDA device or driver is visible to libtorch"
        } else {
            "this binary was built without CUDA support (rebuild with `--features cuda`)"
        };
        return Err(BackendError(format!(
            "--device {spec}: CUDA is not available: {why}"
        )));
    }
    let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
    if cuda_index >= count {
        return Err(BackendError(format!(
            "--device {spec}: there are {count} CUDA device(s) (cuda:0..cuda:{})",
            count.saturating_sub(1)
        )));
    }
    Ok(Device::Cuda(cuda_index))
}

/// How the API and metrics name a device: `cpu`, `cuda:0`, ...
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        _ => "cpu".into(),
    }
}

fn err(context: &str) -> impl Fn(tch::TchError) -> BackendError + '_ {
    move |e| BackendError(format!("{context}: {e}"))
}

/// One model replica.
pub struct TorchBackend {
    module: CModule,
    device: Device,
    pad_token_id: i64,
    embedding_dim: usize,
    num_labels: usize,
    /// The manifest lists `embed_spans` (checked by the warm-up).
    embeds_spans: bool,
    /// Set by [`TorchFactory`]: the lane's thread policy, and the count this thread has now.
    threads: Option<(LaneThreads, usize)>,
}

impl TorchBackend {
    /// Loads the bundle's `model.pt` onto `device`, float32, eval mode.
    pub fn load(bundle: &Bundle, device: Device) -> Result<Self, BackendError> {
        let path = bundle.model_path();
        let mut module = CModule::load_on_device(&path, device).map_err(|e| {
            BackendError(format!(
                "{}: cannot load TorchScript module: {e}",
                path.display()
            ))
        })?;
        // Casts only floating-point parameters and buffers; token ids stay integers.
        module.to(device, Kind::Float, false);
        module.f_set_eval().map_err(err("eval mode"))?;
        let manifest = &bundle.manifest;
        Ok(Self {
            module,
            device,
            pad_token_id: i64::from(manifest.pad_token_id),
            embedding_dim: manifest.embedding_dim,
            num_labels: manifest.labels().len(),
            embeds_spans: manifest.has_method(EMBED_SPANS),
            threads: None,
        })
    }

    /// Runs every later pass with `threads`' count, set on the calling thread, which must be
    /// the one that runs the passes.
    pub fn set_threads(&mut self, threads: LaneThreads) {
        // libtorch sets a thread's OpenMP count once more, lazily, at its first parallel op: to
        // the process-wide value that the last `set_num_threads` of any thread left. Trigger that
        // first (get does), so that a replica starting beside this one cannot set its count.
        let _ = tch::get_num_threads();
        let n = threads.threads;
        tch::set_num_threads(n as i32);
        self.threads = Some((threads, n));
    }

    /// The OpenMP threads of the calling thread (libtorch keeps the count per thread).
    pub fn calling_thread_threads() -> usize {
        usize::try_from(tch::get_num_threads()).unwrap_or(0)
    }

    /// Before a pass over `sequences`: the count for a pass of its size.
    fn begin_pass(&mut self, sequences: &[&[u32]]) {
        let Some((threads, current)) = self.threads.as_mut() else {
            return;
        };
        let longest = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let n = threads.for_pass(sequences.len() * longest);
        if n != *current {
            tch::set_num_threads(n as i32);
            *current = n;
            tracing::debug!(
                intra_op_threads = n,
                "intra-op threads changed for this pass"
            );
        }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// A forward pass at `batch` x `seq_len` (the largest batch the batcher forms), so the first
    /// requests pay neither for allocator growth nor for the graph executor's profiling runs;
    /// also checks the output shapes against the manifest.
    pub fn warm_up(&mut self, batch: usize, seq_len: usize) -> Result<(), BackendError> {
        let pad = self.pad_token_id as u32;
        let largest = vec![pad; seq_len.max(1)];
        self.forward(&vec![largest.as_slice(); batch.max(1)])?;
        // The profiling executor optimises after its first runs; let those be cheap ones.
        let small = vec![pad; seq_len.clamp(1, 8)];
        for _ in 0..2 {
            self.forward(&[small.as_slice()])?;
        }
        if self.embeds_spans {
            // The manifest promises the method: a bundle that lacks it fails here, not later.
            let span = [TokenSpan {
                start: 0,
                end: small.len(),
            }];
            for _ in 0..2 {
                self.forward_spans(&[small.as_slice()], &[&span])?;
            }
        }
        Ok(())
    }

    /// Right-padded ids and mask for `sequences` (docs/bundle-format.md): (batch, longest).
    fn inputs(&self, sequences: &[&[u32]]) -> Result<[IValue; 2], BackendError> {
        let batch = sequences.len();
        let longest = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        if batch == 0 || longest == 0 {
            return Err(BackendError("empty batch".into()));
        }
        // Right padding, mask 1 on real tokens (docs/bundle-format.md).
        let mut ids = vec![self.pad_token_id; batch * longest];
        let mut mask = vec![0i64; batch * longest];
        for (row, seq) in sequences.iter().enumerate() {
            for (col, &id) in seq.iter().enumerate() {
                ids[row * longest + col] = i64::from(id);
                mask[row * longest + col] = 1;
            }
        }
        let shape = [batch as i64, longest as i64];
        Ok([self.to_input(&ids, &shape)?, self.to_input(&mask, &shape)?])
    }

    fn to_input(&self, data: &[i64], shape: &[i64]) -> Result<IValue, BackendError> {
        let t = Tensor::f_from_slice(data)
            .and_then(|t| t.f_view(shape))
            .and_then(|t| t.f_to_device(self.device))
            .map_err(err("input tensor"))?;
        Ok(IValue::Tensor(t))
    }

    fn run(&self, sequences: &[&[u32]]) -> Result<(Vec<f32>, Vec<f32>), BackendError> {
        let inputs = self.inputs(sequences)?;
        let output = self.module.forward_is(&inputs).map_err(err("forward"))?;
        let [embeddings, logits] = tensors::<2>(output, "forward", "(embeddings, logits)")?;
        let batch = sequences.len();
        let embeddings = to_host(&embeddings, batch, self.embedding_dim, "embeddings")?;
        let logits = to_host(&logits, batch, self.num_labels, "logits")?;
        Ok((embeddings, logits))
    }

    /// `embed_spans(input_ids, attention_mask, spans (K, 3) = [row, start, end])` -> (embeddings,
    /// logits, span embeddings (K, D)) (docs/bundle-format.md).
    fn run_spans(
        &self,
        sequences: &[&[u32]],
        spans: &[&[TokenSpan]],
    ) -> Result<SpanOutputs, BackendError> {
        if !self.embeds_spans {
            return Err(BackendError(format!(
                "the bundle's model.pt does not export `{EMBED_SPANS}`"
            )));
        }
        let [ids, mask] = self.inputs(sequences)?;
        let mut table = Vec::new();
        for (row, (seq, row_spans)) in sequences.iter().zip(spans).enumerate() {
            for span in *row_spans {
                if span.start >= span.end || span.end > seq.len() {
                    return Err(BackendError(format!(
                        "span [{}, {}) is not inside sequence {row} of {} tokens",
                        span.start,
                        span.end,
                        seq.len()
                    )));
                }
                table.extend([row as i64, span.start as i64, span.end as i64]);
            }
        }
        let count = table.len() / 3;
        let span_input = self.to_input(&table, &[count as i64, 3])?;
        let output = self
            .module
            .method_is(EMBED_SPANS, &[ids, mask, span_input])
            .map_err(err(EMBED_SPANS))?;
        let [embeddings, logits, pooled] =
            tensors::<3>(output, EMBED_SPANS, "(embeddings, logits, span embeddings)")?;
        let batch = sequences.len();
        let embeddings = to_host(&embeddings, batch, self.embedding_dim, "embeddings")?;
        let logits = to_host(&logits, batch, self.num_labels, "logits")?;
        let pooled = to_host(&pooled, count, self.embedding_dim, "span embeddings")?;
        Ok(SpanOutputs {
            embeddings,
            logits,
            pooled,
        })
    }

    /// Splits flat host outputs into one [`ModelOutput`] per sequence.
    fn outputs(&self, batch: usize, embeddings: &[f32], logits: &[f32]) -> Vec<ModelOutput> {
        let dim = self.embedding_dim;
        let labels = self.num_labels;
        (0..batch)
            .map(|i| ModelOutput {
                embedding: embeddings[i * dim..(i + 1) * dim].to_vec(),
                logits: logits[i * labels..(i + 1) * labels].to_vec(),
                spans: Vec::new(),
            })
            .collect()
    }
}

/// `embed_spans`' outputs on the host, flat: (batch, D), (batch, C), (spans, D).
struct SpanOutputs {
    embeddings: Vec<f32>,
    logits: Vec<f32>,
    pooled: Vec<f32>,
}

/// The `N` tensors of a method's tuple result.
fn tensors<const N: usize>(
    output: IValue,
    method: &str,
    expected: &str,
) -> Result<[Tensor; N], BackendError> {
    let wrong = || BackendError(format!("{method} must return a tuple {expected}"));
    let IValue::Tuple(parts) = output else {
        return Err(wrong());
    };
    let tensors: Vec<Tensor> = parts
        .into_iter()
        .map(|p| match p {
            IValue::Tensor(t) => Ok(t),
            _ => Err(wrong()),
        })
        .collect::<Result<_, _>>()?;
    tensors.try_into().map_err(|_| wrong())
}

/// Copies a (batch, width) float output to the host, checking its shape.
fn to_host(t: &Tensor, batch: usize, width: usize, what: &str) -> Result<Vec<f32>, BackendError> {
    let size = t.size();
    if size != [batch as i64, width as i64] {
        return Err(BackendError(format!(
            "{what} has shape {size:?}, expected [{batch}, {width}] (see manifest.json)"
        )));
    }
    let flat = t
        .f_to_kind(Kind::Float)
        .and_then(|t| t.f_to_device(Device::Cpu))
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_view([-1]))
        .map_err(err(what))?;
    Vec::<f32>::try_from(&flat).map_err(err(what))
}

impl Backend for TorchBackend {
    fn forward(&mut self, sequences: &[&[u32]]) -> Result<Vec<ModelOutput>, BackendError> {
        self.begin_pass(sequences);
        // Grad mode is thread-local, and this runs on the worker's own thread.
        let (embeddings, logits) = tch::no_grad(|| self.run(sequences))?;
        Ok(self.outputs(sequences.len(), &embeddings, &logits))
    }

    fn forward_spans(
        &mut self,
        sequences: &[&[u32]],
        spans: &[&[TokenSpan]],
    ) -> Result<Vec<ModelOutput>, BackendError> {
        if spans.len() != sequences.len() {
            return Err(BackendError(format!(
                "{} span lists for {} sequences",
                spans.len(),
                sequences.len()
            )));
        }
        self.begin_pass(sequences);
        let SpanOutputs {
            embeddings,
            logits,
            pooled,
        } = tch::no_grad(|| self.run_spans(sequences, spans))?;
        let mut outputs = self.outputs(sequences.len(), &embeddings, &logits);
        let dim = self.embedding_dim;
        let mut vectors = pooled.chunks_exact(dim).map(<[f32]>::to_vec);
        for (output, row_spans) in outputs.iter_mut().zip(spans) {
            output.spans = vectors.by_ref().take(row_spans.len()).collect();
        }
        Ok(outputs)
    }
}

/// The warm-up shape of a replica whose inputs are at most `max_len` tokens, batched under
/// `limits`: the largest batch the batcher can form, longest sequences, as many as the budget
/// allows.
pub fn batch_warm_up(max_len: usize, limits: BatchLimits) -> (usize, usize) {
    let seq_len = max_len.min(limits.max_batch_tokens).max(1);
    let batch = (limits.max_batch_tokens / seq_len).clamp(1, limits.max_batch_size.max(1));
    (batch, seq_len)
}

/// Makes warmed-up replicas for the workers.
pub struct TorchFactory {
    bundle: Arc<Bundle>,
    device: Device,
    threads: LaneThreads,
    warm_up: (usize, usize),
}

impl TorchFactory {
    /// `threads`: the lane's intra-op threads (see [`LaneThreads`]).
    /// `warm_up` is the (batch, sequence length) of the warm-up pass: the largest batch this
    /// replica's lane forms (see [`TorchBackend::warm_up`]).
    pub fn new(
        bundle: Arc<Bundle>,
        device: Device,
        threads: LaneThreads,
        warm_up: (usize, usize),
    ) -> Self {
        Self {
            bundle,
            device,
            threads,
            warm_up,
        }
    }

    pub fn threads(&self) -> &LaneThreads {
        &self.threads
    }
}

impl BackendFactory for TorchFactory {
    fn create(&self, worker: usize) -> Result<Box<dyn Backend>, BackendError> {
        let started = std::time::Instant::now();
        // First, so that the OpenMP threads this thread starts (at the warm-up) inherit it. On
        // a GPU the passes wait on the device: nothing to yield.
        let priority = match self.device {
            Device::Cpu => self.threads.priority,
            _ => Priority::Normal,
        };
        let priority = priority.apply_to_this_thread().unwrap_or_else(|err| {
            tracing::warn!(worker, error = %err, "could not lower this worker's priority");
            "normal"
        });
        let mut backend = TorchBackend::load(&self.bundle, self.device)?;
        let (batch, seq_len) = self.warm_up;
        backend.warm_up(batch, seq_len)?;
        // Per thread: the OpenMP thread count belongs to the calling thread, the worker's.
        backend.set_threads(self.threads.clone());
        tracing::info!(
            worker,
            device = %device_name(self.device),
            intra_op_threads = TorchBackend::calling_thread_threads(),
            priority,
            warm_up = %format!("{batch}x{seq_len}"),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model replica loaded and warm"
        );
        Ok(Box::new(backend))
    }
}
