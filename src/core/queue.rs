//! The bounded queue in front of the batcher. Admission is all-or-nothing per request: either every
//! input of a request fits under the limits or the request is refused at once (the caller's 429).
//! The backlog counts inputs from admission until a batch takes them or they are dropped, in all
//! (the queue limit, in inputs and in tokens), per priority class and per API key (the per-key
//! token limit). Admitted inputs go to their lane's batcher: the long lane when there is one and
//! they are longer than its threshold, else the short lane.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::caller::{Caller, ClientId, Priority};
use super::error::InferError;
use super::model::{ModelOutput, TokenSpan};
use crate::metrics::ModelMetrics;

/// API keys with a metric series of their own; later keys share the series `other`.
pub const MAX_KEY_SERIES: usize = 32;
pub const OTHER_KEYS: &str = "other";

/// What the worker sends back for one input.
#[derive(Debug, Clone)]
pub struct Completed {
    pub output: ModelOutput,
    pub queue_time: Duration,
    pub inference_time: Duration,
    pub batch: BatchRun,
}

/// The batch an input ran in: when its forward pass started, how long it took, and its shape
/// (for traces; see [`crate::telemetry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRun {
    pub started: Instant,
    pub forward: Duration,
    /// Sequences in the batch.
    pub size: usize,
    /// Sequences x the longest.
    pub padded_tokens: usize,
    /// `short` or `long`.
    pub lane: &'static str,
}

pub(crate) type Reply = oneshot::Sender<Result<Completed, InferError>>;

/// One input waiting for inference.
pub(crate) struct Entry {
    pub ids: Vec<u32>,
    /// Token spans to pool apart (late chunking); usually empty.
    pub spans: Vec<TokenSpan>,
    pub enqueued: Instant,
    pub reply: Reply,
    pub caller: Caller,
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

/// Admission limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most inputs waiting, all callers together.
    pub max_inputs: usize,
    /// Most tokens one API key may have waiting; 0 for no limit. A key with nothing waiting is
    /// always admitted (within `max_inputs`), so one request larger than the limit still runs.
    pub max_key_tokens: usize,
    /// Most tokens waiting, all callers together; 0 for no limit. A request holding more can
    /// never be admitted ([`InferError::TooManyTokens`]).
    pub max_tokens: usize,
}

#[derive(Default)]
struct Ledger {
    inputs: usize,
    tokens: usize,
    key_tokens: HashMap<ClientId, usize>,
    /// Metric label per key, fixed at first sight.
    key_labels: HashMap<ClientId, String>,
}

impl Ledger {
    fn label(&mut self, client: ClientId) -> &str {
        let named = self.key_labels.len();
        self.key_labels.entry(client).or_insert_with(|| {
            if named < MAX_KEY_SERIES {
                client.label()
            } else {
                OTHER_KEYS.to_owned()
            }
        })
    }
}

/// Shared count of the work admitted but not yet taken into a batch.
pub(crate) struct Backlog {
    /// Mirror of `Ledger::inputs`, readable without the lock.
    depth: AtomicUsize,
    limits: Limits,
    ledger: Mutex<Ledger>,
    metrics: Arc<ModelMetrics>,
}

impl Backlog {
    pub fn new(limits: Limits, metrics: Arc<ModelMetrics>) -> Self {
        for priority in Priority::ALL {
            // Every class has a series from the start, at 0.
            metrics
                .queued_inputs
                .with_label_values(&[priority.as_str()]);
            metrics
                .queued_tokens
                .with_label_values(&[priority.as_str()]);
        }
        Self {
            depth: AtomicUsize::new(0),
            limits,
            ledger: Mutex::new(Ledger::default()),
            metrics,
        }
    }

    /// Reserves room for one request's inputs, or says why there is none.
    fn admit(&self, caller: Caller, inputs: usize, tokens: usize) -> Result<(), InferError> {
        let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = caller.client {
            let queued = ledger.key_tokens.get(&client).copied().unwrap_or(0);
            let limit = self.limits.max_key_tokens;
            if limit > 0 && queued > 0 && queued + tokens > limit {
                let label = ledger.label(client).to_owned();
                self.metrics
                    .key_limit_rejections
                    .with_label_values(&[&label])
                    .inc();
                return Err(InferError::KeyQueueFull {
                    queued,
                    requested: tokens,
                    limit,
                });
            }
        }
        let max_tokens = self.limits.max_tokens;
        if max_tokens > 0 && tokens > max_tokens {
            return Err(InferError::TooManyTokens {
                tokens,
                limit: max_tokens,
            });
        }
        if ledger.inputs + inputs > self.limits.max_inputs
            || (max_tokens > 0 && ledger.tokens + tokens > max_tokens)
        {
            return Err(InferError::QueueFull);
        }
        ledger.inputs += inputs;
        ledger.tokens += tokens;
        self.depth.store(ledger.inputs, Ordering::Release);
        self.metrics.queue_depth.set(ledger.inputs as i64);
        let class = caller.priority.as_str();
        self.metrics
            .queued_inputs
            .with_label_values(&[class])
            .add(inputs as i64);
        self.metrics
            .queued_tokens
            .with_label_values(&[class])
            .add(tokens as i64);
        if let Some(client) = caller.client {
            *ledger.key_tokens.entry(client).or_default() += tokens;
            let label = ledger.label(client).to_owned();
            self.metrics
                .key_queued_tokens
                .with_label_values(&[&label])
                .add(tokens as i64);
        }
        Ok(())
    }

    /// Gives back the room of inputs that left the queue (batched, dropped or refused).
    pub fn release(&self, entries: &[Entry]) {
        if entries.is_empty() {
            return;
        }
        let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        ledger.inputs = ledger.inputs.saturating_sub(entries.len());
        let tokens: usize = entries.iter().map(|e| e.ids.len()).sum();
        ledger.tokens = ledger.tokens.saturating_sub(tokens);
        self.depth.store(ledger.inputs, Ordering::Release);
        self.metrics.queue_depth.set(ledger.inputs as i64);
        for entry in entries {
            let tokens = entry.ids.len();
            let class = entry.caller.priority.as_str();
            self.metrics.queued_inputs.with_label_values(&[class]).dec();
            self.metrics
                .queued_tokens
                .with_label_values(&[class])
                .sub(tokens as i64);
            if let Some(client) = entry.caller.client {
                if let Some(queued) = ledger.key_tokens.get_mut(&client) {
                    *queued = queued.saturating_sub(tokens);
                    if *queued == 0 {
                        ledger.key_tokens.remove(&client);
                    }
                }
                let label = ledger.label(client).to_owned();
                self.metrics
                    .key_queued_tokens
                    .with_label_values(&[&label])
                    .sub(tokens as i64);
            }
        }
    }

    /// Inputs waiting.
    pub fn get(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    /// Tokens `client` has waiting.
    pub fn key_tokens(&self, client: ClientId) -> usize {
        let ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        ledger.key_tokens.get(&client).copied().unwrap_or(0)
    }
}

/// The producer side: request handlers push entries here. A request's inputs travel together
/// to each lane, so a batcher never sees part of a request's inputs for that lane.
pub(crate) struct Queue {
    /// Per lane: the short lane first, then the long lane, if any.
    senders: RwLock<Option<Vec<mpsc::UnboundedSender<Vec<Entry>>>>>,
    /// Inputs of more tokens than this go to the long lane (when there is one).
    long_above: Option<usize>,
    backlog: Arc<Backlog>,
}

impl Queue {
    pub fn new(
        backlog: Arc<Backlog>,
        senders: Vec<mpsc::UnboundedSender<Vec<Entry>>>,
        long_above: Option<usize>,
    ) -> Self {
        // Without a second lane, every input goes to the first.
        let long_above = long_above.filter(|_| senders.len() > 1);
        Self {
            senders: RwLock::new(Some(senders)),
            long_above,
            backlog,
        }
    }

    /// Admits every entry or none. The entries share `caller`.
    pub fn push(&self, caller: Caller, entries: Vec<Entry>) -> Result<(), InferError> {
        let guard = self.senders.read().unwrap_or_else(|p| p.into_inner());
        let senders = guard.as_ref().ok_or(InferError::ShuttingDown)?;
        let tokens = entries.iter().map(|e| e.ids.len()).sum();
        self.backlog.admit(caller, entries.len(), tokens)?;
        let (long, short): (Vec<Entry>, Vec<Entry>) = match self.long_above {
            Some(above) => entries.into_iter().partition(|e| e.ids.len() > above),
            None => (Vec::new(), entries),
        };
        let mut refused = false;
        for (lane, group) in [short, long].into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let Some(tx) = senders.get(lane) else {
                self.backlog.release(&group);
                refused = true;
                continue;
            };
            // The batcher is gone (shutting down): this part was never queued.
            if let Err(err) = tx.send(group) {
                self.backlog.release(&err.0);
                refused = true;
            }
        }
        if refused {
            return Err(InferError::ShuttingDown);
        }
        Ok(())
    }

    /// Refuses new work; the batchers finish what was admitted, then stop.
    pub fn close(&self) {
        self.senders
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}
