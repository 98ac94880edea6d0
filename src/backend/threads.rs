//! How many libtorch (OpenMP) threads a replica's forward passes use, and when that changes.
//!
//! A long-input lane's passes run for seconds. Short workers that keep every CPU beside one
//! over-subscribe the cores: their OpenMP threads spin-wait at barriers for cores the long pass
//! holds, and short latency collapses (p99 10x its value alone on 2 CPUs,
//! docs/LONG_DOCUMENTS.md). So a short replica runs with `alone` threads while no long pass runs
//! in the process and with `beside_long` while one does; long replicas count their passes in the
//! `long_running` they share with every replica.
//!
//! A pass too small to split runs on one thread whatever the lane's count: below
//! [`ONE_THREAD_BELOW_TOKENS`] the threads cost more in synchronisation than they save, and a
//! lone short sentence on two threads took twice as long as on one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The intra-op threads of one lane's replicas.
#[derive(Debug, Clone)]
pub struct LaneThreads {
    /// Threads while no long pass runs anywhere in the process.
    pub alone: usize,
    /// Threads while one does (a long lane's own passes use `alone`).
    pub beside_long: usize,
    /// This lane's passes are long ones: they count themselves in `long_running`.
    pub long_lane: bool,
    /// Long passes running now, across every model's long lane.
    pub long_running: Arc<AtomicUsize>,
}

/// Passes of fewer tokens than this (batch x padded length) run on one thread. With aft-mini on
/// 2 CPUs and default flags, a lone short sentence took p50 9.5 ms on the worker's 2 threads and
/// 4.5 ms with this rule; concurrency 4 served 2.0x the requests/s, and saturation (batches of
/// 64 texts) did not change (docs/BENCHMARKS.md, "Small passes on one thread").
pub const ONE_THREAD_BELOW_TOKENS: usize = 128;

impl LaneThreads {
    /// The count a pass of `tokens` (batch x padded length) starting now should use.
    pub fn for_pass(&self, tokens: usize) -> usize {
        if tokens < ONE_THREAD_BELOW_TOKENS {
            1
        } else {
            self.now()
        }
    }

    /// The lane's count for a pass starting now, small passes aside.
    pub fn now(&self) -> usize {
        let beside_long = !self.long_lane && self.long_running.load(Ordering::Relaxed) > 0;
        if beside_long {
            self.beside_long
        } else {
            self.alone
        }
    }

    /// For a long lane, marks a pass as running until the guard drops; `None` for a short one.
    pub fn long_pass(&self) -> Option<LongPass> {
        self.long_lane.then(|| {
            self.long_running.fetch_add(1, Ordering::Relaxed);
            LongPass(self.long_running.clone())
        })
    }
}

/// A long pass in progress (see [`LaneThreads::long_pass`]).
pub struct LongPass(Arc<AtomicUsize>);

impl Drop for LongPass {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lanes_yield_threads_while_a_long_pass_runs() {
        let running = Arc::new(AtomicUsize::new(0));
        let short = LaneThreads {
            alone: 4,
            beside_long: 2,
            long_lane: false,
            long_running: running.clone(),
        };
        let long = LaneThreads {
            alone: 2,
            beside_long: 2,
            long_lane: true,
            long_running: running.clone(),
        };
        assert_eq!(short.now(), 4);
        assert!(short.long_pass().is_none());
        let pass = long.long_pass();
        assert_eq!((short.now(), long.now()), (2, 2));
        drop(pass);
        assert_eq!(short.now(), 4);
        assert_eq!(running.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn passes_below_the_threshold_run_on_one_thread() {
        let short = LaneThreads {
            alone: 4,
            beside_long: 2,
            long_lane: false,
            long_running: Arc::new(AtomicUsize::new(0)),
        };
        assert_eq!(short.for_pass(1), 1);
        assert_eq!(short.for_pass(ONE_THREAD_BELOW_TOKENS - 1), 1);
        assert_eq!(short.for_pass(ONE_THREAD_BELOW_TOKENS), 4);
        let _pass = LaneThreads {
            long_lane: true,
            ..short.clone()
        }
        .long_pass();
        assert_eq!(short.for_pass(ONE_THREAD_BELOW_TOKENS), 2);
        assert_eq!(short.for_pass(1), 1);
    }
}
