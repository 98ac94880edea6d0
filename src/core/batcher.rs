//! Dynamic batching: whenever a worker is free, the batcher takes the input the scheduler picks
//! (see [`super::schedule`]) and the inputs closest to it in length, up to `max_batch_size`
//! sequences and `max_batch_tokens` padded tokens. No fixed delay: a batch leaves as soon as a
//! worker can take it, unless `max_wait` asks to wait for company while the batch is not full.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::queue::{Backlog, Entry};
use super::schedule::Scheduler;
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
    select_around(0, lengths, limits, usize::MAX, |i, gap| (gap, i))
}

/// [`select_batch`] around any anchor: the input at `anchor` always goes, and the others, none
/// longer than `max_len`, are tried in the order of `rank(index, length gap to the anchor)`,
/// smallest first.
pub(crate) fn select_around<K: Ord>(
    anchor: usize,
    lengths: &[usize],
    limits: BatchLimits,
    max_len: usize,
    rank: impl Fn(usize, usize) -> K,
) -> Selection {
    let Some(&anchor_len) = lengths.get(anchor) else {
        return Selection {
            indices: Vec::new(),
            padded_tokens: 0,
            full: false,
        };
    };
    let mut candidates: Vec<usize> = (0..lengths.len())
        .filter(|&i| i != anchor && lengths[i] <= max_len)
        .collect();
    candidates.sort_by_cached_key(|&i| rank(i, lengths[i].abs_diff(anchor_len)));

    let mut indices = vec![anchor];
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
    fn any_input_can_anchor_the_batch() {
        // Anchored on the 30-token input, the 31 joins before the short ones; ties go by rank.
        let s = select_around(1, &[5, 30, 6, 31, 29], LIMITS, usize::MAX, |i, gap| {
            (gap, i)
        });
        assert_eq!(s.indices, vec![1, 3]);
        let limits = BatchLimits {
            max_batch_tokens: 1000,
            max_batch_size: 3,
        };
        let s = select_around(1, &[5, 30, 6, 31, 29], limits, usize::MAX, |i, gap| {
            (gap, i)
        });
        assert_eq!(s.indices, vec![1, 3, 4]);
        assert_eq!(s.padded_tokens, 93);
        // Capped at 30 tokens, the 31 stays out and a shorter one comes in.
        let s = select_around(1, &[5, 30, 6, 31, 29], limits, 30, |i, gap| (gap, i));
        assert_eq!(s.indices, vec![1, 2, 4]);
        // A rank that prefers late indices among equal gaps.
        let s = select_around(
            0,
            &[30, 31, 29],
            BatchLimits {
                max_batch_tokens: 1000,
                max_batch_size: 2,
            },
            usize::MAX,
            |i, gap| (gap, usize::MAX - i),
        );
        assert_eq!(s.indices, vec![0, 2]);
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
