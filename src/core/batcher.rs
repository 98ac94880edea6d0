//! The batcher task: whenever a worker is free, it takes the next batch from the scheduler
//! ([`super::schedule`] decides which inputs, by the rule in [`super::select`]) and hands it to
//! the workers. No fixed delay: a batch leaves as soon as a worker can take it, unless
//! `max_wait` asks to wait for company while the batch is not full.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::error::InferError;
use super::queue::{Backlog, Entry};
use super::schedule::Scheduler;
use super::select::BatchLimits;
use crate::metrics::ModelMetrics;

/// A batch on its way to a worker; the permit marks the worker busy until the batch is done.
pub(crate) struct Job {
    pub entries: Vec<Entry>,
    pub _permit: OwnedSemaphorePermit,
}

pub(crate) struct Batcher {
    pub receiver: mpsc::UnboundedReceiver<Vec<Entry>>,
    pub backlog: Arc<Backlog>,
    pub scheduler: Scheduler,
    pub limits: BatchLimits,
    pub max_wait: Duration,
    /// One permit per worker: a batch is formed only when a worker can run it, so inputs
    /// arriving meanwhile can still join it.
    pub free_workers: Arc<Semaphore>,
    pub jobs: std::sync::mpsc::Sender<Job>,
    pub metrics: Arc<ModelMetrics>,
}

impl Batcher {
    /// Runs until the queue is closed and everything admitted has been handed to a worker.
    pub async fn run(mut self) {
        loop {
            if self.scheduler.is_empty() {
                match self.receiver.recv().await {
                    Some(entries) => self.scheduler.push_request(entries),
                    None => break,
                }
            }
            let Ok(permit) = self.free_workers.clone().acquire_owned().await else {
                break;
            };
            self.drain_channel();
            self.drop_cancelled();
            if self.scheduler.is_empty() {
                continue;
            }
            if !self.max_wait.is_zero() {
                self.wait_for_more().await;
            }
            let entries = self.take_batch();
            if entries.is_empty() {
                continue;
            }
            if let Err(err) = self.jobs.send(Job {
                entries,
                _permit: permit,
            }) {
                // Every worker is gone: nothing can run this batch.
                for entry in err.0.entries {
                    let _ = entry.reply.send(Err(InferError::ShuttingDown));
                }
                break;
            }
        }
        let left = self.scheduler.drain();
        self.backlog.release(&left);
        for entry in left {
            let _ = entry.reply.send(Err(InferError::ShuttingDown));
        }
    }

    fn drain_channel(&mut self) {
        while let Ok(entries) = self.receiver.try_recv() {
            self.scheduler.push_request(entries);
        }
    }

    /// Work for requesters that went away is dropped before it reaches the model.
    fn drop_cancelled(&mut self) {
        let gone = self.scheduler.drop_cancelled();
        self.backlog.release(&gone);
    }

    /// Waits until the oldest input has waited `max_wait` or the batch is full.
    async fn wait_for_more(&mut self) {
        let Some(oldest) = self.scheduler.oldest() else {
            return;
        };
        let deadline = tokio::time::Instant::from_std(oldest.enqueued + self.max_wait);
        loop {
            if self.scheduler.next_is_full(self.limits) {
                return;
            }
            tokio::select! {
                entries = self.receiver.recv() => match entries {
                    Some(entries) => {
                        self.scheduler.push_request(entries);
                        self.drain_channel();
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    fn take_batch(&mut self) -> Vec<Entry> {
        let Some(batch) = self.scheduler.take(self.limits) else {
            return Vec::new();
        };
        let taken = batch.entries;
        self.backlog.release(&taken);
        if batch.oldest_turn {
            self.metrics.oldest_turns.inc();
        }
        self.metrics.batch_size.observe(taken.len() as f64);
        self.metrics
            .batch_tokens
            .observe(batch.padded_tokens as f64);
        taken
    }
}
