//! What can go wrong serving a request, in the service's own terms. No transport here: the HTTP
//! layer (`server::error`) gives each case its status, error type and code.

use crate::core::InferError;
use crate::tokenize::TokenizeError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A request field has a value the service cannot use.
    #[error("{message}")]
    InvalidInput { param: String, message: String },
    #[error("inputs[{index}] has {tokens} tokens, more than the limit of {limit} (the model's max_seq_len, or the server's --max-input-tokens when lower); send truncate=true to truncate it")]
    InputTooLong {
        index: usize,
        tokens: usize,
        limit: usize,
    },
    #[error("{count} inputs in one request, more than the limit of {limit}")]
    TooManyInputs { count: usize, limit: usize },
    /// The request alone holds more tokens than the queue may ever hold.
    #[error("the request holds {tokens} tokens, more than the {limit} the server queues at once (--max-queued-tokens); split it")]
    TooManyTokens { tokens: usize, limit: usize },
    #[error("the request asks for {count} chunk vectors, more than the limit of {limit} (--max-chunks); use longer chunks or fewer inputs")]
    TooManyChunks { count: usize, limit: usize },
    /// Per-token vectors (`/embed_all`) past `--max-chunks`, which bounds every request's pooled
    /// vectors.
    #[error("the request asks for {count} token vectors, more than the limit of {limit} (--max-chunks); send fewer or shorter inputs")]
    TooManyTokenVectors { count: usize, limit: usize },
    /// Per-token vectors asked of a bundle whose model.pt does not export `embed_spans`.
    #[error("model {0:?} cannot give per-token vectors: its bundle's model.pt exports no `embed_spans` method (re-export it with the current aft.export)")]
    TokenVectorsUnsupported(String),
    /// Late chunking asked of a bundle whose model.pt does not export `embed_spans`.
    #[error("model {0:?} cannot do late chunking: its bundle's model.pt exports no `embed_spans` method (re-export it with the current aft.export)")]
    ChunkingUnsupported(String),
    /// Classification asked of a model without a classifier head.
    #[error("model {0:?} has no classifier head")]
    NoClassifier(String),
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("the request queue is full; retry later")]
    QueueFull,
    /// The caller's API key already holds its share of the queue (`--max-queued-tokens-per-key`).
    #[error("{0}; retry later")]
    KeyQueueFull(String),
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The model is loading or a worker is down; the message says which.
    #[error("{0}")]
    NotReady(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            param: param.into(),
            message: message.into(),
        }
    }
}

impl From<TokenizeError> for ServiceError {
    fn from(err: TokenizeError) -> Self {
        match err {
            TokenizeError::TooLong { index, tokens, limit } => {
                Self::InputTooLong { index, tokens, limit }
            }
            TokenizeError::Empty { index } => Self::invalid(
                format!("inputs[{index}]"),
                format!("inputs[{index}] is empty"),
            ),
            TokenizeError::TokenIdOutOfRange { index, position, id, vocab_size } => Self::invalid(
                format!("inputs[{index}][{position}]"),
                format!(
                    "inputs[{index}][{position}] = {id} is not a token id (valid ids are 0..{vocab_size})"
                ),
            ),
            TokenizeError::Tokenizer(msg) => Self::Internal(format!("tokenizer: {msg}")),
            TokenizeError::Closed => Self::ShuttingDown,
        }
    }
}

impl From<InferError> for ServiceError {
    fn from(err: InferError) -> Self {
        match err {
            InferError::QueueFull => Self::QueueFull,
            InferError::TooManyTokens { tokens, limit } => Self::TooManyTokens { tokens, limit },
            err @ InferError::KeyQueueFull { .. } => Self::KeyQueueFull(err.to_string()),
            InferError::ShuttingDown => Self::ShuttingDown,
            InferError::NotReady(reason) => Self::NotReady(reason),
            InferError::Backend(msg) => Self::Inference(msg),
            InferError::WorkerDied => {
                Self::Inference("the inference worker stopped while running this request".into())
            }
        }
    }
}
