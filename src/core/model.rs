//! What the core asks of a model: a [`Backend`] that runs one forward pass over a batch, made on
//! its worker's thread by a [`BackendFactory`], and the inputs and outputs of one sequence.

/// The model's outputs for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutput {
    /// Pooled embedding, before normalisation.
    pub embedding: Vec<f32>,
    /// Classifier logits; empty for a model without a head.
    pub logits: Vec<f32>,
    /// One pooled embedding (before normalisation) per requested [`TokenSpan`], in order; empty
    /// when none was requested.
    pub spans: Vec<Vec<f32>>,
}

/// Token positions `[start, end)` of one sequence (special tokens count), pooled on their own
/// from the token states of the whole sequence's forward pass (late chunking).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSpan {
    pub start: usize,
    pub end: usize,
}

/// One input to the model: its token ids, and the spans to pool apart (usually none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelInput {
    pub ids: Vec<u32>,
    pub spans: Vec<TokenSpan>,
}

impl From<Vec<u32>> for ModelInput {
    fn from(ids: Vec<u32>) -> Self {
        Self {
            ids,
            spans: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Runs forward passes. Each worker owns one, made on (and never leaving) its own thread.
pub trait Backend {
    /// One forward pass over unpadded token sequences; one output per sequence, in order.
    fn forward(&mut self, sequences: &[&[u32]]) -> Result<Vec<ModelOutput>, BackendError>;

    /// [`Backend::forward`], plus one pooled vector per span of each sequence (`spans[i]` are
    /// sequence `i`'s, within its length), in [`ModelOutput::spans`].
    fn forward_spans(
        &mut self,
        sequences: &[&[u32]],
        spans: &[&[TokenSpan]],
    ) -> Result<Vec<ModelOutput>, BackendError> {
        let _ = (sequences, spans);
        Err(BackendError("this model cannot pool token spans".into()))
    }
}

/// Makes a ready (loaded, warmed-up) backend; called on the worker thread that will own it.
pub trait BackendFactory: Send + Sync + 'static {
    fn create(&self, worker: usize) -> Result<Box<dyn Backend>, BackendError>;
}
