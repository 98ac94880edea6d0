//! The bounded queue in front of the batcher. Admission is all-or-nothing per request: either every
//! input of a request fits under the limit or the request is refused at once (the caller's 429).
//! Depth counts inputs from admission until a batch takes them or they are dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{InferError, ModelOutput};
use crate::metrics::ModelMetrics;

/// What the worker sends back for one input.
#[derive(Debug, Clone)]
pub struct Completed {
    pub output: ModelOutput,
    pub queue_time: Duration,
    pub inference_time: Duration,
}

pub(crate) type Reply = oneshot::Sender<Result<Completed, InferError>>;

/// One input waiting for inference.
pub(crate) struct Entry {
    pub ids: Vec<u32>,
    pub enqueued: Instant,
    pub reply: Reply,
}

impl Entry {
    /// The requester went away (finished early, timed out or disconnected).
    pub fn is_cancelled(&self) -> bool {
        self.reply.is_closed()
    }

    /// The one definition of queue time: from admission until the forward pass of the input's
    /// batch starts (waiting for a batch, then for a worker). Both `aft_queue_duration_seconds`
    /// and `x-queue-time` report it.
    pub fn queue_time(&self, forward_started: Instant) -> Duration {
        forward_started.saturating_duration_since(self.enqueued)
    }
}

/// Shared count of inputs admitted but not yet taken into a batch.
pub(crate) struct Depth {
    value: AtomicUsize,
    capacity: usize,
    metrics: Arc<ModelMetrics>,
}

impl Depth {
    pub fn new(capacity: usize, metrics: Arc<ModelMetrics>) -> Self {
        Self {
            value: AtomicUsize::new(0),
            capacity,
            metrics,
        }
    }

    fn try_reserve(&self, n: usize) -> bool {
        let reserved = self
            .value
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                d.checked_add(n).filter(|&total| total <= self.capacity)
            })
            .is_ok();
        if reserved {
            self.publish();
        }
        reserved
    }

    pub fn release(&self, n: usize) {
        if n > 0 {
            self.value.fetch_sub(n, Ordering::AcqRel);
            self.publish();
        }
    }

    pub fn get(&self) -> usize {
        self.value.load(Ordering::Acquire)
    }

    fn publish(&self) {
        self.metrics.queue_depth.set(self.get() as i64);
    }
}

/// The producer side: request handlers push entries here. A request's inputs travel together,
/// so the batcher never sees half a request.
pub(crate) struct Queue {
    sender: RwLock<Option<mpsc::UnboundedSender<Vec<Entry>>>>,
    depth: Arc<Depth>,
}

impl Queue {
    pub fn new(depth: Arc<Depth>) -> (Self, mpsc::UnboundedReceiver<Vec<Entry>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                sender: RwLock::new(Some(tx)),
                depth,
            },
            rx,
        )
    }

    /// Admits every entry or none.
    pub fn push(&self, entries: Vec<Entry>) -> Result<(), InferError> {
        let guard = self.sender.read().unwrap_or_else(|p| p.into_inner());
        let sender = guard.as_ref().ok_or(InferError::ShuttingDown)?;
        let count = entries.len();
        if !self.depth.try_reserve(count) {
            return Err(InferError::QueueFull);
        }
        if sender.send(entries).is_err() {
            // The batcher is gone: nothing was queued.
            self.depth.release(count);
            return Err(InferError::ShuttingDown);
        }
        Ok(())
    }

    /// Refuses new work; the batcher finishes what was admitted, then stops.
    pub fn close(&self) {
        self.sender
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}
