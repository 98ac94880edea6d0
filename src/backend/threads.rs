//! How many libtorch (OpenMP) threads a replica's forward passes use, and when that changes.
//!
//! A long-input lane's passes run for seconds. Short workers that keep every CPU beside one
//! over-subscribe the cores: their OpenMP threads spin-wait at barriers for cores the long pass
//! holds, and short latency collapses (p99 10x its value alone on 2 CPUs,
//! docs/LONG_DOCUMENTS.md). So a short replica runs with `alone` threads while no long pass runs
//! in the process and with `beside_long` while one does; long replicas count their passes in the
//! `long_running` they share with every replica.

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

impl LaneThreads {
    /// The count a pass starting now should use.
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
}
