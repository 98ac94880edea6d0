//! Dynamic batching: whenever a worker is free, the batcher takes the oldest waiting input and
//! the inputs closest to it in length, up to `max_batch_size` sequences and `max_batch_tokens`
//! padded tokens. No fixed delay: a batch leaves as soon as a worker can take it, unless
//! `max_wait` asks to wait for company while the batch is not full.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::queue::{Depth, Entry};
use super::InferError;
use crate::metrics::ModelMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most padded tokens in a batch (sequences x longest sequence).
    pub max_batch_tokens: usize,
    /// Most sequences in a batch.
    pub max_batch_size: usize,
}

/// Which waiting inputs form the next batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Indices into the waiting inputs, ascending.
    pub indices: Vec<usize>,
    /// Sequences x longest sequence.
    pub padded_tokens: usize,
    /// No further input of any length could join.
    pub full: bool,
}

/// Chooses the next batch from the lengths of the waiting inputs, oldest first.
///
/// The oldest input always goes (so nothing starves, even one over the token budget); the others
/// are tried in order of how close their length is to it, and join when the batch stays within
/// both limits and no more than half of it would be padding.
pub fn select_batch(lengths: &[usize], limits: BatchLimits) -> Selection {
    let Some(&anchor_len) = lengths.first() else {
        return Selection {
            indices: Vec::new(),
            padded_tokens: 0,
            full: false,
        };
    };
    let mut candidates: Vec<usize> = (1..lengths.len()).collect();
    candidates.sort_by_key(|&i| (lengths[i].abs_diff(anchor_len), i));

    let mut indices = vec![0];
    let (mut longest, mut real) = (anchor_len, anchor_len);
    for i in candidates {
        if indices.len() >= limits.max_batch_size {
            break;
        }
        let len = lengths[i];
        let padded = (indices.len() + 1) * longest.max(len);
        if padded > limits.max_batch_tokens || padded > 2 * (real + len) {
            continue;
        }
        indices.push(i);
        longest = longest.max(len);
        real += len;
    }
    indices.sort_unstable();
    let padded_tokens = indices.len() * longest;
    let full = indices.len() >= limits.max_batch_size
        || (indices.len() + 1) * longest > limits.max_batch_tokens;
    Selection {
        indices,
        padded_tokens,
        full,
    }
}

/// A batch on its way to a worker; the permit marks the worker busy until the batch is done.
pub(crate) struct Job {
    pub entries: Vec<Entry>,
    pub _permit: OwnedSemaphorePermit,
}

pub(crate) struct Batcher {
    pub receiver: mpsc::UnboundedReceiver<Vec<Entry>>,
    pub depth: Arc<Depth>,
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
        let mut pending: VecDeque<Entry> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match self.receiver.recv().await {
                    Some(entries) => pending.extend(entries),
                    None => break,
                }
            }
            let Ok(permit) = self.free_workers.clone().acquire_owned().await else {
                break;
            };
            self.drain_channel(&mut pending);
            self.drop_cancelled(&mut pending);
            if pending.is_empty() {
                continue;
            }
            if !self.max_wait.is_zero() {
                self.wait_for_more(&mut pending).await;
            }
            let entries = self.take_batch(&mut pending);
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
        self.depth.release(pending.len());
        for entry in pending {
            let _ = entry.reply.send(Err(InferError::ShuttingDown));
        }
    }

    fn drain_channel(&mut self, pending: &mut VecDeque<Entry>) {
        while let Ok(entries) = self.receiver.try_recv() {
            pending.extend(entries);
        }
    }

    /// Work for requesters that went away is dropped before it reaches the model.
    fn drop_cancelled(&self, pending: &mut VecDeque<Entry>) {
        let before = pending.len();
        pending.retain(|e| !e.is_cancelled());
        self.depth.release(before - pending.len());
    }

    /// Waits until the oldest input has waited `max_wait` or the batch is full.
    async fn wait_for_more(&mut self, pending: &mut VecDeque<Entry>) {
        let Some(oldest) = pending.front() else {
            return;
        };
        let deadline = tokio::time::Instant::from_std(oldest.enqueued + self.max_wait);
        loop {
            let lengths: Vec<usize> = pending.iter().map(|e| e.ids.len()).collect();
            if select_batch(&lengths, self.limits).full {
                return;
            }
            tokio::select! {
                entries = self.receiver.recv() => match entries {
                    Some(entries) => {
                        pending.extend(entries);
                        self.drain_channel(pending);
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    fn take_batch(&self, pending: &mut VecDeque<Entry>) -> Vec<Entry> {
        let lengths: Vec<usize> = pending.iter().map(|e| e.ids.len()).collect();
        let selection = select_batch(&lengths, self.limits);
        let mut chosen = selection.indices.iter().copied().peekable();
        let mut taken = Vec::with_capacity(selection.indices.len());
        let mut rest = VecDeque::with_capacity(pending.len() - selection.indices.len());
        for (i, entry) in pending.drain(..).enumerate() {
            if chosen.peek() == Some(&i) {
                chosen.next();
                taken.push(entry);
            } else {
                rest.push_back(entry);
            }
        }
        *pending = rest;
        self.depth.release(taken.len());
        self.metrics.batch_size.observe(taken.len() as f64);
        self.metrics
            .batch_tokens
            .observe(selection.padded_tokens as f64);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        max_batch_tokens: 64,
        max_batch_size: 4,
    };

    #[test]
    fn empty_queue_gives_empty_batch() {
        let s = select_batch(&[], LIMITS);
        assert!(s.indices.is_empty());
        assert_eq!(s.padded_tokens, 0);
    }

    #[test]
    fn respects_max_batch_size() {
        let s = select_batch(&[4; 10], LIMITS);
        assert_eq!(s.indices, vec![0, 1, 2, 3]);
        assert_eq!(s.padded_tokens, 16);
        assert!(s.full);
    }

    #[test]
    fn counts_padding_against_the_token_budget() {
        // 20 + 20 + 20 = 60 padded tokens fit; a fourth would need 80.
        let s = select_batch(&[20, 20, 20, 20], LIMITS);
        assert_eq!(s.indices, vec![0, 1, 2]);
        assert_eq!(s.padded_tokens, 60);
        assert!(s.full);
        // A 30-token sequence next to a 20 costs 2 x 30 = 60, so a third 20 (90) does not fit.
        let s = select_batch(&[20, 30, 20], LIMITS);
        assert_eq!(s.indices, vec![0, 2]);
        assert_eq!(s.padded_tokens, 40);
    }

    #[test]
    fn oldest_always_goes_even_over_budget() {
        let s = select_batch(&[100, 2, 2], LIMITS);
        assert_eq!(s.indices, vec![0]);
        assert_eq!(s.padded_tokens, 100);
        assert!(s.full);
    }

    #[test]
    fn groups_similar_lengths() {
        // Oldest is 5 tokens: the other short ones join, the long ones wait.
        let lengths = [5, 30, 6, 31, 4, 5];
        let s = select_batch(
            &lengths,
            BatchLimits {
                max_batch_tokens: 1000,
                max_batch_size: 4,
            },
        );
        assert_eq!(s.indices, vec![0, 2, 4, 5]);
        assert_eq!(s.padded_tokens, 24);
        // Then the long ones go together.
        let s = select_batch(&[30, 31], LIMITS);
        assert_eq!(s.indices, vec![0, 1]);
    }

    #[test]
    fn refuses_batches_that_are_mostly_padding() {
        let s = select_batch(
            &[2, 2, 2, 60],
            BatchLimits {
                max_batch_tokens: 1000,
                max_batch_size: 8,
            },
        );
        assert_eq!(s.indices, vec![0, 1, 2]);
        assert!(!s.full);
    }
}
