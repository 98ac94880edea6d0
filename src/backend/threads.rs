//! How many libtorch (OpenMP) threads a replica's forward passes use, and at what OS priority.
//!
//! [`CpuSharers`] splits the CPUs between the short-input workers of every model. The long-input
//! lanes run at the lowest OS priority ([`Priority::Background`]: `SCHED_IDLE` on Linux), so the
//! kernel hands a core to a short pass the moment one is runnable, and a long pass, which runs
//! for seconds and cannot change its thread count half-way, never holds one up for CPU time. A
//! long pass takes every CPU when no short pass has run for [`SHORT_QUIET_FOR`]; while short
//! traffic flows it starts with its share (CPUs / every worker), because a long pass on the
//! other cores still slows short passes down through the shared cache and memory (measured in
//! docs/LONG_DOCUMENTS.md, "Short requests under a stream of long documents").
//!
//! A pass too small to split runs on one thread whatever the lane's count: below
//! [`ONE_THREAD_BELOW_TOKENS`] the threads cost more in synchronisation than they save.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bundle::Bundle;
use crate::config::Config;

/// How the CPUs are shared between the workers of every model (see [`CpuSharers::lane_threads`]).
#[derive(Debug, Clone)]
pub struct CpuSharers {
    /// The CPUs this process may use (the cgroup's quota included).
    pub cpus: usize,
    /// The short-input workers of every model: they share the CPUs.
    pub short: usize,
    /// The long-input workers of every model: they share the CPUs, at background priority.
    pub long: usize,
    /// When a short pass last started, in any model.
    pub short_activity: Arc<ShortActivity>,
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
            long,
            short_activity: Arc::new(ShortActivity::new()),
        }
    }

    /// The threads of a model's (short, long) lanes: `intra_op_threads` throughout when it is
    /// set; else the short workers share the CPUs, and so do the long ones (each lane's workers
    /// never over-subscribe the cores among themselves), each long one with CPUs / every worker
    /// while short traffic flows. Long lanes run in the background.
    pub fn lane_threads(&self, intra_op_threads: usize) -> (LaneThreads, LaneThreads) {
        let share = |sharers: usize| match intra_op_threads {
            0 => (self.cpus / sharers.max(1)).max(1),
            n => n,
        };
        let short = LaneThreads {
            threads: share(self.short),
            beside_short: share(self.short),
            priority: Priority::Normal,
            short_activity: self.short_activity.clone(),
        };
        let long = LaneThreads {
            threads: share(self.long),
            beside_short: share(self.short + self.long),
            priority: Priority::Background,
            short_activity: self.short_activity.clone(),
        };
        (short, long)
    }
}

/// A long pass starting within this long of a short one uses its share, not every CPU.
pub const SHORT_QUIET_FOR: Duration = Duration::from_secs(1);

/// When a short pass last started, shared by every lane of every model.
#[derive(Debug)]
pub struct ShortActivity {
    epoch: Instant,
    /// Milliseconds since `epoch` at the last short pass's start, plus one (0: none yet).
    last: AtomicU64,
}

impl ShortActivity {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A short pass starts now.
    pub fn mark(&self) {
        self.last
            .store(self.now_ms().saturating_add(1), Ordering::Relaxed);
    }

    /// Whether a short pass started within `window`.
    pub fn within(&self, window: Duration) -> bool {
        match self.last.load(Ordering::Relaxed) {
            0 => false,
            last => {
                let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                self.now_ms().saturating_add(1).saturating_sub(last) <= window
            }
        }
    }
}

impl Default for ShortActivity {
    fn default() -> Self {
        Self::new()
    }
}

/// The intra-op threads of one lane's replicas, and the OS priority they run at.
#[derive(Debug, Clone)]
pub struct LaneThreads {
    /// Threads of a pass; for a long lane, when no short pass ran for [`SHORT_QUIET_FOR`].
    pub threads: usize,
    /// A long lane's threads for a pass starting while short traffic flows.
    pub beside_short: usize,
    pub priority: Priority,
    pub short_activity: Arc<ShortActivity>,
}

/// Passes of fewer tokens than this (batch x padded length) run on one thread: for them more
/// threads cost more in synchronisation than they save, and large batches are not affected
/// (measured in docs/BENCHMARKS.md, "Small passes on one thread").
pub const ONE_THREAD_BELOW_TOKENS: usize = 128;

impl LaneThreads {
    /// The count a pass of `tokens` (batch x padded length) starting now should use; a short
    /// pass also records that it starts.
    pub fn for_pass(&self, tokens: usize) -> usize {
        let long_lane = self.priority == Priority::Background;
        if !long_lane {
            self.short_activity.mark();
        }
        if tokens < ONE_THREAD_BELOW_TOKENS {
            1
        } else if long_lane && self.short_activity.within(SHORT_QUIET_FOR) {
            self.beside_short
        } else {
            self.threads
        }
    }
}

/// The OS scheduling priority of a worker thread and of the OpenMP threads it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Normal,
    /// Runs only on CPUs nothing else of normal priority wants (`SCHED_IDLE`; where that is
    /// refused, nice 19).
    Background,
}

impl Priority {
    /// Applies the priority to the calling thread; the threads it starts later (libgomp's pool,
    /// created at the first parallel op) inherit it. Returns what was applied, for the log.
    pub fn apply_to_this_thread(self) -> std::io::Result<&'static str> {
        match self {
            Priority::Normal => Ok("normal"),
            Priority::Background => background(),
        }
    }
}

#[cfg(target_os = "linux")]
fn background() -> std::io::Result<&'static str> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on the calling thread (pid 0) with a valid, initialised argument.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        return Ok("SCHED_IDLE");
    }
    let refused = std::io::Error::last_os_error();
    // Some seccomp profiles refuse scheduler changes; nice is per thread on Linux (tid below).
    // SAFETY: as above; gettid cannot fail.
    let tid = unsafe { libc::gettid() };
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) } == 0 {
        return Ok("nice 19");
    }
    Err(refused)
}

#[cfg(not(target_os = "linux"))]
fn background() -> std::io::Result<&'static str> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "background priority is implemented on Linux only",
    ))
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

    /// (short lane, long lane alone, long lane beside short traffic) threads on `cpus` CPUs.
    fn threads(args: &[&str], models: usize, cpus: usize) -> (usize, usize, usize) {
        let argv = ["aft-serve", "--model-dir", "unused"].iter().chain(args);
        let config = Config::try_parse_from(argv).expect("valid flags");
        let sharers = CpuSharers::count(&config, &tiny_bundles(models), cpus);
        let (short, long) = sharers.lane_threads(config.intra_op_threads);
        assert_eq!(short.priority, Priority::Normal);
        assert_eq!(long.priority, Priority::Background);
        assert_eq!(short.beside_short, short.threads);
        (short.threads, long.threads, long.beside_short)
    }

    #[test]
    fn short_workers_share_the_cpus_and_long_lanes_take_them_all_in_the_background() {
        // tiny-aft takes 128 tokens, so a 64-token threshold gives each model a long lane.
        let lane = ["--long-input-tokens", "64"];
        // One model on 2 CPUs: each lane has both, the long one 1 beside short traffic.
        assert_eq!(threads(&lane, 1, 2), (2, 2, 1));
        // Two models of 2 workers each on 16 CPUs: 4 short workers, 2 long ones.
        let two = ["--workers", "2", "--long-input-tokens", "64"];
        assert_eq!(threads(&two, 2, 16), (4, 8, 2));
        // Two long workers per model: the long lanes share the CPUs among themselves too.
        let many = ["--long-input-tokens", "64", "--long-workers", "2"];
        assert_eq!(threads(&many, 2, 16), (8, 4, 2));
        // Given threads are kept throughout.
        let given = ["--intra-op-threads", "3", "--long-input-tokens", "64"];
        assert_eq!(threads(&given, 1, 2), (3, 3, 3));
    }

    fn lane(priority: Priority, activity: &Arc<ShortActivity>) -> LaneThreads {
        LaneThreads {
            threads: 4,
            beside_short: 2,
            priority,
            short_activity: activity.clone(),
        }
    }

    #[test]
    fn passes_below_the_threshold_run_on_one_thread() {
        let lane = lane(Priority::Normal, &Arc::new(ShortActivity::new()));
        assert_eq!(lane.for_pass(1), 1);
        assert_eq!(lane.for_pass(ONE_THREAD_BELOW_TOKENS - 1), 1);
        assert_eq!(lane.for_pass(ONE_THREAD_BELOW_TOKENS), 4);
    }

    #[test]
    fn a_long_pass_takes_every_cpu_only_when_no_short_pass_ran_lately() {
        let activity = Arc::new(ShortActivity::new());
        let (short, long) = (
            lane(Priority::Normal, &activity),
            lane(Priority::Background, &activity),
        );
        let big = ONE_THREAD_BELOW_TOKENS;
        assert_eq!(long.for_pass(big), 4, "no short pass yet");
        assert!(!activity.within(SHORT_QUIET_FOR));
        assert_eq!(short.for_pass(1), 1);
        assert!(
            activity.within(SHORT_QUIET_FOR),
            "a short pass, small ones included, counts"
        );
        assert_eq!(long.for_pass(big), 2, "its share beside short traffic");
        assert_eq!(short.for_pass(big), 4, "short passes keep theirs");
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            !activity.within(Duration::from_millis(10)),
            "quiet again after the window"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn background_priority_applies_to_the_calling_thread_and_the_threads_it_starts() {
        let before = scheduling();
        let (applied, own, child) = std::thread::spawn(|| {
            let applied = Priority::Background
                .apply_to_this_thread()
                .expect("an unprivileged thread may lower its own priority");
            let child = std::thread::spawn(scheduling).join().expect("child runs");
            (applied, scheduling(), child)
        })
        .join()
        .expect("the thread runs");
        match applied {
            "SCHED_IDLE" => assert_eq!(own.0, libc::SCHED_IDLE),
            _ => assert_eq!(own.1, 19),
        }
        assert_eq!(child, own, "a thread started later inherits the priority");
        assert_eq!(scheduling(), before, "other threads keep theirs");
    }

    /// The calling thread's (scheduling policy, nice value).
    #[cfg(target_os = "linux")]
    fn scheduling() -> (i32, i32) {
        // SAFETY: queries on the calling thread.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, tid),
            )
        }
    }
}
