//! How many libtorch (OpenMP) threads a replica's forward passes use, and when that changes.
//!
//! [`CpuSharers`] splits the CPUs between the workers of every model. A long-input lane's passes
//! run for seconds, and short workers that keep every CPU beside one over-subscribe the cores:
//! their OpenMP threads spin-wait at barriers for cores the long pass holds, and short latency
//! collapses (measured in docs/LONG_DOCUMENTS.md, "Short requests under a stream of long
//! documents"). So a short replica runs with `alone` threads while no long pass runs in the
//! process and with `beside_long` while one does; long replicas count their passes in the
//! `long_running` they share with every replica.
//!
//! A pass too small to split runs on one thread whatever the lane's count: below
//! [`ONE_THREAD_BELOW_TOKENS`] the threads cost more in synchronisation than they save.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::bundle::Bundle;
use crate::config::Config;

/// How the CPUs are shared between the workers of every model (see [`CpuSharers::lane_threads`]).
#[derive(Debug, Clone)]
pub struct CpuSharers {
    /// The CPUs this process may use (the cgroup's quota included).
    pub cpus: usize,
    /// The short-input workers of every model. Long lanes are left out: they are idle unless a
    /// long document arrives, and counting them would take threads from a lone short worker for
    /// nothing (the cost is measured in docs/BENCHMARKS.md, "The default model changed").
    pub short: usize,
    /// Every worker of every model, long lanes included: the share while a long pass runs.
    pub all: usize,
    /// Long passes running now, across every model (see [`LaneThreads`]).
    pub long_running: Arc<AtomicUsize>,
}

impl CpuSharers {
    /// Counts the workers `config` gives the models of `bundles`, sharing `cpus`.
    pub fn count(config: &Config, bundles: &[(String, Arc<Bundle>)], cpus: usize) -> Self {
        let short = config.workers * bundles.len();
        let long: usize = bundles
            .iter()
            .map(|(_, bundle)| {
                let max_input = config.max_input_tokens(bundle.manifest.max_seq_len);
                config
                    .long_lane_threshold(max_input)
                    .map_or(0, |_| config.long_workers)
            })
            .sum();
        Self {
            cpus,
            short,
            all: short + long,
            long_running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The threads of a model's (short, long) lanes: `intra_op_threads` throughout when it is
    /// set; else the short workers share the CPUs, and every worker does while a long pass runs
    /// (always, on a long lane), so that the cores are never over-subscribed.
    pub fn lane_threads(&self, intra_op_threads: usize) -> (LaneThreads, LaneThreads) {
        let share = |sharers: usize| (self.cpus / sharers.max(1)).max(1);
        let (alone, beside_long) = match intra_op_threads {
            0 => (share(self.short), share(self.all)),
            n => (n, n),
        };
        let lane = |alone, long_lane| LaneThreads {
            alone,
            beside_long,
            long_lane,
            long_running: self.long_running.clone(),
        };
        (lane(alone, false), lane(beside_long, true))
    }
}

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

/// Passes of fewer tokens than this (batch x padded length) run on one thread: for them more
/// threads cost more in synchronisation than they save, and large batches are not affected
/// (measured in docs/BENCHMARKS.md, "Small passes on one thread").
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
    use clap::Parser;

    use super::*;

    fn tiny_bundles(n: usize) -> Vec<(String, Arc<Bundle>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-aft");
        let bundle = Arc::new(Bundle::load(&dir).expect("the tiny fixture bundle loads"));
        (0..n).map(|i| (format!("m{i}"), bundle.clone())).collect()
    }

    /// (short lane alone, short lane beside a long pass, long lane) threads on `cpus` CPUs.
    fn threads(args: &[&str], models: usize, cpus: usize) -> (usize, usize, usize) {
        let argv = ["aft-serve", "--model-dir", "unused"].iter().chain(args);
        let config = Config::try_parse_from(argv).expect("valid flags");
        let sharers = CpuSharers::count(&config, &tiny_bundles(models), cpus);
        let (short, long) = sharers.lane_threads(config.intra_op_threads);
        assert!(!short.long_lane && long.long_lane);
        assert_eq!(long.alone, long.beside_long);
        (short.alone, short.beside_long, long.alone)
    }

    #[test]
    fn short_workers_share_the_cpus_and_yield_to_long_passes() {
        // tiny-aft takes 128 tokens, so a 64-token threshold gives each model a long lane.
        let lane = ["--long-input-tokens", "64"];
        // One model on 2 CPUs: the short worker has both until a long pass runs.
        assert_eq!(threads(&lane, 1, 2), (2, 1, 1));
        // Two models of 2 workers each on 16 CPUs: 4 short workers, 6 with the long lanes.
        let two = ["--workers", "2", "--long-input-tokens", "64"];
        assert_eq!(threads(&two, 2, 16), (4, 2, 2));
        // No long lane (none asked for, or inputs that cannot be long): nothing to yield to.
        let none = ["--long-input-tokens", "64", "--long-workers", "0"];
        assert_eq!(threads(&none, 2, 16), (8, 8, 8));
        assert_eq!(threads(&["--long-input-tokens", "512"], 1, 2), (2, 2, 2));
        // Given threads are kept throughout.
        let given = ["--intra-op-threads", "3", "--long-input-tokens", "64"];
        assert_eq!(threads(&given, 1, 2), (3, 3, 3));
    }

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
