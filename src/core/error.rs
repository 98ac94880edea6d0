//! How running inputs through the core can fail.

#[derive(Debug, Clone, thiserror::Error)]
pub enum InferError {
    #[error("the queue is full")]
    QueueFull,
    /// The request alone holds more tokens than the queue may ever hold: it can never run.
    #[error("the request holds {tokens} tokens, more than the {limit} the queue can hold")]
    TooManyTokens { tokens: usize, limit: usize },
    /// The caller's API key already has its share of the queue.
    #[error("this API key already has {queued} tokens queued; {requested} more would pass its limit of {limit}")]
    KeyQueueFull {
        queued: usize,
        requested: usize,
        limit: usize,
    },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    NotReady(String),
    #[error("inference failed: {0}")]
    Backend(String),
    #[error("the inference worker died while running this input")]
    WorkerDied,
}
