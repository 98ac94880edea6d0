//! The inference core: a bounded queue, a dynamic batcher and worker threads, generic over a
//! [`Backend`] that runs one batch. It knows nothing of HTTP or of torch.
//!
//! ```text
//! Infer::run ──> Queue (bounded, per input) ──> Batcher (when a worker is free) ──> Worker threads
//!      ^                                          └ Scheduler (fair order)            │
//!      └───────────────────── per-input reply channel ────────────────────────────────┘
//! ```

pub mod batcher;
mod queue;
pub mod schedule;
mod worker;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use batcher::{select_batch, BatchLimits, Selection};
pub use queue::{Completed, MAX_KEY_SERIES, OTHER_KEYS};
pub use schedule::{Caller, ClientId, Policy, Priority, MAX_STRETCH, OLDEST_TURN};
pub use worker::WorkerState;

use crate::metrics::ModelMetrics;
use batcher::Batcher;
use queue::{Backlog, Entry, Queue};
use schedule::Scheduler;
use worker::WorkerPool;

/// The model's outputs for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutput {
    /// Pooled embedding, before normalisation.
    pub embedding: Vec<f32>,
    /// Classifier logits; empty for a model without a head.
    pub logits: Vec<f32>,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// Runs forward passes. Each worker owns one, made on (and never leaving) its own thread.
pub trait Backend {
    /// One forward pass over unpadded token sequences; one output per sequence, in order.
    fn forward(&mut self, sequences: &[&[u32]]) -> Result<Vec<ModelOutput>, BackendError>;
}

/// Makes a ready (loaded, warmed-up) backend; called on the worker thread that will own it.
pub trait BackendFactory: Send + Sync + 'static {
    fn create(&self, worker: usize) -> Result<Box<dyn Backend>, BackendError>;
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InferError {
    #[error("the queue is full")]
    QueueFull,
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

#[derive(Debug, Clone)]
pub struct InferConfig {
    pub limits: BatchLimits,
    /// Optional wait for more inputs before running a batch that is not full.
    pub max_wait: Duration,
    /// Most inputs admitted but not yet batched.
    pub max_queue_size: usize,
    /// Most tokens one API key may have admitted but not yet batched; 0 for no limit.
    pub max_queued_tokens_per_key: usize,
    pub policy: Policy,
    pub workers: usize,
}

/// The outputs for a request's inputs, in order, and how long they took.
#[derive(Debug, Clone)]
pub struct Inference {
    pub outputs: Vec<ModelOutput>,
    /// Longest time any of the inputs waited for a worker.
    pub queue_time: Duration,
    /// Longest forward pass any of the inputs was part of.
    pub inference_time: Duration,
}

/// Handle to the running core; cheap to share behind an `Arc`.
pub struct Infer {
    queue: Queue,
    backlog: Arc<Backlog>,
    pool: Arc<WorkerPool>,
    batcher: Mutex<Option<JoinHandle<()>>>,
}

impl Infer {
    /// Starts the batcher and the workers. Must be called inside a tokio runtime.
    pub fn start(
        factory: Arc<dyn BackendFactory>,
        config: InferConfig,
        metrics: Arc<ModelMetrics>,
    ) -> Self {
        let workers = config.workers.max(1);
        let limits = queue::Limits {
            max_inputs: config.max_queue_size,
            max_key_tokens: config.max_queued_tokens_per_key,
        };
        let backlog = Arc::new(Backlog::new(limits, metrics.clone()));
        let (queue, receiver) = Queue::new(backlog.clone());
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
        let pool = WorkerPool::start(workers, factory, jobs_rx, metrics.clone());
        let batcher = Batcher {
            receiver,
            backlog: backlog.clone(),
            scheduler: Scheduler::new(config.policy),
            limits: config.limits,
            max_wait: config.max_wait,
            free_workers: Arc::new(Semaphore::new(workers)),
            jobs: jobs_tx,
            metrics,
        };
        let handle = tokio::spawn(batcher.run());
        Self {
            queue,
            backlog,
            pool,
            batcher: Mutex::new(Some(handle)),
        }
    }

    /// Runs every sequence through the model; outputs come back in input order. Inputs may be
    /// spread over several batches. Dropping the future withdraws the inputs not yet running.
    pub async fn run(&self, sequences: Vec<Vec<u32>>) -> Result<Inference, InferError> {
        self.run_as(sequences, Caller::default()).await
    }

    /// [`Infer::run`] on behalf of `caller`, whose priority and key decide where the inputs queue.
    pub async fn run_as(
        &self,
        sequences: Vec<Vec<u32>>,
        caller: Caller,
    ) -> Result<Inference, InferError> {
        if self.pool.alive() == 0 {
            return Err(InferError::NotReady(
                self.readiness().err().unwrap_or_default(),
            ));
        }
        let now = std::time::Instant::now();
        let mut replies = Vec::with_capacity(sequences.len());
        let entries = sequences
            .into_iter()
            .map(|ids| {
                let (reply, rx) = tokio::sync::oneshot::channel();
                replies.push(rx);
                Entry {
                    ids,
                    enqueued: now,
                    reply,
                    caller,
                }
            })
            .collect();
        self.queue.push(caller, entries)?;
        let mut inference = Inference {
            outputs: Vec::with_capacity(replies.len()),
            queue_time: Duration::ZERO,
            inference_time: Duration::ZERO,
        };
        for rx in replies {
            let done = rx.await.map_err(|_| InferError::WorkerDied)??;
            inference.queue_time = inference.queue_time.max(done.queue_time);
            inference.inference_time = inference.inference_time.max(done.inference_time);
            inference.outputs.push(done.output);
        }
        Ok(inference)
    }

    /// `Ok` when every worker is loaded and warm; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        let states = self.pool.states();
        let total = states.len();
        for (i, state) in states.iter().enumerate() {
            match state {
                WorkerState::Ready => {}
                WorkerState::Loading => {
                    return Err(format!("worker {i} of {total} is loading the model"))
                }
                WorkerState::Dead(reason) => {
                    return Err(format!(
                        "worker {i} of {total} is down ({reason}); restarting"
                    ))
                }
                WorkerState::Stopped => return Err("the service is shutting down".into()),
            }
        }
        Ok(())
    }

    pub fn worker_states(&self) -> Vec<WorkerState> {
        self.pool.states()
    }

    /// Inputs admitted and not yet batched.
    pub fn queue_depth(&self) -> usize {
        self.backlog.get()
    }

    /// Tokens admitted for `client` and not yet batched.
    pub fn queued_tokens_of(&self, client: ClientId) -> usize {
        self.backlog.key_tokens(client)
    }

    /// Waits until every worker is ready; fails as soon as one fails to start.
    pub async fn wait_ready(&self) -> Result<(), InferError> {
        let mut changed = self.pool.subscribe();
        loop {
            let states = self.pool.states();
            if let Some(WorkerState::Dead(reason)) =
                states.iter().find(|s| matches!(s, WorkerState::Dead(_)))
            {
                return Err(InferError::NotReady(reason.clone()));
            }
            if states.iter().all(|s| *s == WorkerState::Ready) {
                return Ok(());
            }
            if changed.changed().await.is_err() {
                return Err(InferError::ShuttingDown);
            }
        }
    }

    /// Refuses new work and waits until everything admitted has been handed to the workers and
    /// answered.
    pub async fn shutdown(&self) {
        self.pool.stop();
        self.queue.close();
        let handle = self
            .batcher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        // The batcher has dropped the job channel: workers finish their batch and stop.
        let mut changed = self.pool.subscribe();
        while self
            .pool
            .states()
            .iter()
            .any(|s| matches!(s, WorkerState::Ready | WorkerState::Loading))
        {
            if changed.changed().await.is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
