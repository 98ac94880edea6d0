//! The inference core: a bounded queue, a dynamic batcher and worker threads, generic over a
//! [`Backend`] that runs one batch. It knows nothing of HTTP or of torch.
//!
//! ```text
//! Infer::run ──> Queue (bounded by inputs and tokens) ─┬─> short lane: Batcher ──> Worker threads
//!      ^                                               └─> long lane:  Batcher ──> Worker threads
//!      │                                       (each Batcher with its own Scheduler)  │
//!      └───────────────────── per-input reply channel ────────────────────────────────┘
//! ```
//!
//! Lanes: with a [`LongLane`], inputs longer than its threshold queue apart and run one at a time
//! on workers of their own, so a long document never holds up the short inputs' workers
//! (head-of-line blocking); admission (the queue's input and token bounds) is shared.

mod batcher;
mod caller;
mod error;
mod model;
mod queue;
mod schedule;
mod select;
mod worker;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

pub use caller::{Caller, ClientId, Priority};
pub use error::InferError;
pub use model::{Backend, BackendError, BackendFactory, ModelInput, ModelOutput, TokenSpan};
pub use queue::BatchRun;
pub use schedule::Policy;
pub use select::{select_batch, BatchLimits, Selection};
pub use worker::WorkerState;

use crate::metrics::ModelMetrics;
use batcher::Batcher;
use queue::{Backlog, Entry, Queue};
use schedule::Scheduler;
use worker::{Lane, WorkerPool};

/// What [`Infer::start_lanes`] needs to start one lane.
struct LaneSpec {
    kind: Lane,
    workers: usize,
    factory: Arc<dyn BackendFactory>,
    limits: BatchLimits,
    max_wait: Duration,
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
    /// Most tokens admitted but not yet batched, all callers and lanes together; 0 for no limit.
    pub max_queued_tokens: usize,
    pub policy: Policy,
    /// Workers of the (short) lane every input goes to unless a [`LongLane`] takes it.
    pub workers: usize,
}

/// A lane of its own for long inputs: inputs of more than `above_tokens` tokens queue apart and
/// run one per forward pass on `workers` workers made by `factory`.
pub struct LongLane {
    pub above_tokens: usize,
    pub workers: usize,
    pub factory: Arc<dyn BackendFactory>,
}

/// The outputs for a request's inputs, in order, and how long they took.
#[derive(Debug, Clone)]
pub struct Inference {
    pub outputs: Vec<ModelOutput>,
    /// Longest time any of the inputs waited for a worker.
    pub queue_time: Duration,
    /// Longest forward pass any of the inputs was part of.
    pub inference_time: Duration,
    /// When the request's inputs were admitted to the queue.
    pub enqueued: std::time::Instant,
    /// The batches the inputs ran in, each once, in the order their inputs came back.
    pub batches: Vec<BatchRun>,
}

/// Handle to the running core; cheap to share behind an `Arc`.
pub struct Infer {
    queue: Queue,
    backlog: Arc<Backlog>,
    /// The short lane's pool first, then the long lane's, if any.
    pools: Vec<Arc<WorkerPool>>,
    batchers: Mutex<Vec<JoinHandle<()>>>,
    /// Any worker of any lane changed state.
    changed: Arc<watch::Sender<()>>,
}

impl Infer {
    /// Starts the batcher and the workers. Must be called inside a tokio runtime.
    pub fn start(
        factory: Arc<dyn BackendFactory>,
        config: InferConfig,
        metrics: Arc<ModelMetrics>,
    ) -> Self {
        Self::start_lanes(factory, config, None, metrics)
    }

    /// [`Infer::start`], with a lane of its own for long inputs when `long` is given.
    pub fn start_lanes(
        factory: Arc<dyn BackendFactory>,
        config: InferConfig,
        long: Option<LongLane>,
        metrics: Arc<ModelMetrics>,
    ) -> Self {
        let limits = queue::Limits {
            max_inputs: config.max_queue_size,
            max_key_tokens: config.max_queued_tokens_per_key,
            max_tokens: config.max_queued_tokens,
        };
        let backlog = Arc::new(Backlog::new(limits, metrics.clone()));
        let changed = Arc::new(watch::channel(()).0);
        let mut lanes = vec![LaneSpec {
            kind: Lane::Short,
            workers: config.workers.max(1),
            factory,
            limits: config.limits,
            max_wait: config.max_wait,
        }];
        let mut long_above = None;
        if let Some(long) = long {
            long_above = Some(long.above_tokens);
            lanes.push(LaneSpec {
                kind: Lane::Long,
                workers: long.workers.max(1),
                factory: long.factory,
                // One long input per forward pass: memory follows the longest input alone.
                limits: BatchLimits {
                    max_batch_tokens: config.limits.max_batch_tokens,
                    max_batch_size: 1,
                },
                max_wait: Duration::ZERO,
            });
        }
        let mut senders = Vec::with_capacity(lanes.len());
        let mut pools = Vec::with_capacity(lanes.len());
        let mut batchers = Vec::with_capacity(lanes.len());
        for lane in lanes {
            let (tx, receiver) = tokio::sync::mpsc::unbounded_channel();
            let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
            let pool = WorkerPool::start(
                lane.kind,
                lane.workers,
                lane.factory,
                jobs_rx,
                changed.clone(),
                metrics.clone(),
            );
            let batcher = Batcher {
                receiver,
                backlog: backlog.clone(),
                scheduler: Scheduler::new(config.policy),
                limits: lane.limits,
                max_wait: lane.max_wait,
                free_workers: Arc::new(Semaphore::new(lane.workers)),
                jobs: jobs_tx,
                metrics: metrics.clone(),
            };
            batchers.push(tokio::spawn(batcher.run()));
            senders.push(tx);
            pools.push(pool);
        }
        let queue = Queue::new(backlog.clone(), senders, long_above);
        Self {
            queue,
            backlog,
            pools,
            batchers: Mutex::new(batchers),
            changed,
        }
    }

    /// Runs every sequence through the model; outputs come back in input order. Inputs may be
    /// spread over several batches. Dropping the future withdraws the inputs not yet running.
    pub async fn run<I: Into<ModelInput>>(
        &self,
        sequences: Vec<I>,
    ) -> Result<Inference, InferError> {
        self.run_as(sequences, Caller::default()).await
    }

    /// [`Infer::run`] on behalf of `caller`, whose priority and key decide where the inputs queue.
    pub async fn run_as<I: Into<ModelInput>>(
        &self,
        sequences: Vec<I>,
        caller: Caller,
    ) -> Result<Inference, InferError> {
        if self.alive() == 0 {
            return Err(InferError::NotReady(
                self.readiness().err().unwrap_or_default(),
            ));
        }
        let now = std::time::Instant::now();
        let mut replies = Vec::with_capacity(sequences.len());
        let entries = sequences
            .into_iter()
            .map(|input| {
                let ModelInput { ids, spans } = input.into();
                let (reply, rx) = tokio::sync::oneshot::channel();
                replies.push(rx);
                Entry {
                    ids,
                    spans,
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
            enqueued: now,
            batches: Vec::new(),
        };
        for rx in replies {
            let done = rx.await.map_err(|_| InferError::WorkerDied)??;
            inference.queue_time = inference.queue_time.max(done.queue_time);
            inference.inference_time = inference.inference_time.max(done.inference_time);
            if !inference.batches.contains(&done.batch) {
                inference.batches.push(done.batch);
            }
            inference.outputs.push(done.output);
        }
        Ok(inference)
    }

    /// Workers loaded and serving, all lanes together.
    fn alive(&self) -> usize {
        self.pools.iter().map(|p| p.alive()).sum()
    }

    /// `Ok` when every worker is loaded and warm; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        let states = self.worker_states();
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

    /// Every worker's state: the short lane's first, then the long lane's.
    pub fn worker_states(&self) -> Vec<WorkerState> {
        self.pools.iter().flat_map(|p| p.states()).collect()
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
        let mut changed = self.changed.subscribe();
        loop {
            let states = self.worker_states();
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
        for pool in &self.pools {
            pool.stop();
        }
        self.queue.close();
        let handles =
            std::mem::take(&mut *self.batchers.lock().unwrap_or_else(PoisonError::into_inner));
        for handle in handles {
            let _ = handle.await;
        }
        // The batchers have dropped the job channels: workers finish their batch and stop.
        let mut changed = self.changed.subscribe();
        while self
            .worker_states()
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
