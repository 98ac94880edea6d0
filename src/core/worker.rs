//! Inference workers: OS threads, each owning one model replica made by the backend factory on
//! that thread. A worker that panics fails its batch, dies, and is restarted by the supervisor;
//! an ordinary inference error fails only its batch.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::batcher::Job;
use super::error::InferError;
use super::model::{Backend, BackendFactory, ModelOutput, TokenSpan};
use super::queue::{BatchRun, Completed, Entry};
use crate::metrics::ModelMetrics;

/// Which lane a pool serves (see [`super::LongLane`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Short,
    /// Inputs above the long-input threshold, one per forward pass; recorded in the
    /// `aft_long_*` metrics as well.
    Long,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Loading its replica and warming up.
    Loading,
    Ready,
    /// Died (or failed to load); a restart is scheduled unless the service is stopping.
    Dead(String),
    /// Exited because the service is stopping.
    Stopped,
}

pub(crate) struct WorkerPool {
    lane: Lane,
    factory: Arc<dyn BackendFactory>,
    jobs: Mutex<std_mpsc::Receiver<Job>>,
    states: Mutex<Vec<WorkerState>>,
    /// Consecutive failed starts per worker, for the restart back-off.
    failures: Mutex<Vec<u32>>,
    /// Shared by every lane's pool, so one subscription sees every worker.
    changed: Arc<watch::Sender<()>>,
    deaths: mpsc::UnboundedSender<usize>,
    stopping: AtomicBool,
    metrics: Arc<ModelMetrics>,
}

impl WorkerPool {
    /// Starts `count` workers and the supervisor that restarts them. Needs a tokio runtime.
    pub fn start(
        lane: Lane,
        count: usize,
        factory: Arc<dyn BackendFactory>,
        jobs: std_mpsc::Receiver<Job>,
        changed: Arc<watch::Sender<()>>,
        metrics: Arc<ModelMetrics>,
    ) -> Arc<Self> {
        let (deaths, death_rx) = mpsc::unbounded_channel();
        let pool = Arc::new(Self {
            lane,
            factory,
            jobs: Mutex::new(jobs),
            states: Mutex::new(vec![WorkerState::Loading; count]),
            failures: Mutex::new(vec![0; count]),
            changed,
            deaths,
            stopping: AtomicBool::new(false),
            metrics,
        });
        tokio::spawn(supervise(pool.clone(), death_rx));
        for index in 0..count {
            pool.spawn(index);
        }
        pool
    }

    pub fn states(&self) -> Vec<WorkerState> {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn alive(&self) -> usize {
        self.states()
            .iter()
            .filter(|s| **s == WorkerState::Ready)
            .count()
    }

    /// Stops restarting workers; they exit once the job channel closes.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn set_state(&self, index: usize, state: WorkerState) {
        {
            let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
            let was_ready = states[index] == WorkerState::Ready;
            let is_ready = state == WorkerState::Ready;
            states[index] = state;
            // Counted by changes: the pools of both lanes share the model's gauge.
            match (was_ready, is_ready) {
                (false, true) => self.metrics.workers_alive.inc(),
                (true, false) => self.metrics.workers_alive.dec(),
                _ => {}
            }
        }
        self.changed.send_replace(());
    }

    fn spawn(self: &Arc<Self>, index: usize) {
        self.set_state(index, WorkerState::Loading);
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name(match self.lane {
                Lane::Short => format!("aft-worker-{index}"),
                Lane::Long => format!("aft-long-worker-{index}"),
            })
            .spawn(move || worker_main(pool, index));
        if let Err(err) = spawned {
            self.died(index, format!("could not start a thread: {err}"));
        }
    }

    fn died(&self, index: usize, reason: String) {
        tracing::error!(worker = index, %reason, "inference worker died");
        self.set_state(index, WorkerState::Dead(reason));
        let _ = self.deaths.send(index);
    }
}

/// Restarts dead workers, backing off while they keep failing to start.
async fn supervise(pool: Arc<WorkerPool>, mut deaths: mpsc::UnboundedReceiver<usize>) {
    while let Some(index) = deaths.recv().await {
        if pool.stopping.load(Ordering::Acquire) {
            continue;
        }
        let failures = pool.failures.lock().unwrap_or_else(PoisonError::into_inner)[index];
        let delay = Duration::from_millis(100u64 << failures.min(8));
        pool.metrics.worker_restarts.inc();
        let pool = pool.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if !pool.stopping.load(Ordering::Acquire) {
                tracing::info!(worker = index, "restarting inference worker");
                pool.spawn(index);
            }
        });
    }
}

/// Reports the worker's death to the supervisor however the thread ends, unwinding included.
struct DeathWatch {
    pool: Arc<WorkerPool>,
    index: usize,
    reason: Option<String>,
}

impl Drop for DeathWatch {
    fn drop(&mut self) {
        match self.reason.take() {
            None => self.pool.set_state(self.index, WorkerState::Stopped),
            Some(reason) => self.pool.died(self.index, reason),
        }
    }
}

fn worker_main(pool: Arc<WorkerPool>, index: usize) {
    let mut watch = DeathWatch {
        pool: pool.clone(),
        index,
        reason: Some("the worker thread panicked".into()),
    };
    let created = catch_unwind(AssertUnwindSafe(|| pool.factory.create(index)));
    let mut backend = match created {
        Ok(Ok(backend)) => backend,
        Ok(Err(err)) => {
            pool.failures.lock().unwrap_or_else(PoisonError::into_inner)[index] += 1;
            watch.reason = Some(format!("could not load the model: {err}"));
            return;
        }
        Err(panic) => {
            pool.failures.lock().unwrap_or_else(PoisonError::into_inner)[index] += 1;
            watch.reason = Some(format!(
                "panicked while loading the model: {}",
                panic_message(&panic)
            ));
            return;
        }
    };
    pool.failures.lock().unwrap_or_else(PoisonError::into_inner)[index] = 0;
    pool.set_state(index, WorkerState::Ready);
    tracing::info!(worker = index, "inference worker ready");
    loop {
        // Workers take turns waiting on the shared channel; the lock is released before running.
        let job = pool
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = job else {
            watch.reason = None;
            return;
        };
        if let Err(reason) = run_job(backend.as_mut(), job, pool.lane, &pool.metrics) {
            watch.reason = Some(reason);
            return;
        }
    }
}

/// Runs one batch and answers each of its inputs. `Err` means the replica panicked and the
/// worker must not be trusted with more work.
fn run_job(
    backend: &mut dyn Backend,
    job: Job,
    lane: Lane,
    metrics: &ModelMetrics,
) -> Result<(), String> {
    let Job { entries, _permit } = job;
    // Requesters may have gone while the batch waited for this worker.
    let entries: Vec<_> = entries.into_iter().filter(|e| !e.is_cancelled()).collect();
    if entries.is_empty() {
        return Ok(());
    }
    let sequences: Vec<&[u32]> = entries.iter().map(|e| e.ids.as_slice()).collect();
    let started = Instant::now();
    for entry in &entries {
        metrics
            .queue_duration
            .observe(entry.queue_time(started).as_secs_f64());
    }
    let long = lane == Lane::Long;
    if long {
        metrics.long_inputs_running.add(entries.len() as i64);
    }
    let with_spans = entries.iter().any(|e| !e.spans.is_empty());
    let result = catch_unwind(AssertUnwindSafe(|| {
        if with_spans {
            let spans: Vec<&[TokenSpan]> = entries.iter().map(|e| e.spans.as_slice()).collect();
            backend.forward_spans(&sequences, &spans)
        } else {
            backend.forward(&sequences)
        }
    }));
    let inference_time = started.elapsed();
    metrics
        .inference_duration
        .observe(inference_time.as_secs_f64());
    if long {
        metrics.long_inputs_running.sub(entries.len() as i64);
        metrics
            .long_inference_duration
            .observe(inference_time.as_secs_f64());
        for entry in &entries {
            metrics.long_input_tokens.observe(entry.ids.len() as f64);
        }
    }
    let spans_ok = |outputs: &[ModelOutput]| {
        outputs
            .iter()
            .zip(&entries)
            .all(|(o, e)| o.spans.len() == e.spans.len())
    };
    let outputs = match result {
        Ok(Ok(outputs)) if outputs.len() == entries.len() && spans_ok(&outputs) => outputs,
        Ok(Ok(outputs)) => {
            let msg = format!(
                "the model returned {} outputs for {} inputs, or the wrong number of span vectors",
                outputs.len(),
                entries.len()
            );
            fail_all(entries, InferError::Backend(msg));
            return Ok(());
        }
        Ok(Err(err)) => {
            tracing::error!(error = %err, batch = entries.len(), "inference failed");
            fail_all(entries, InferError::Backend(err.to_string()));
            return Ok(());
        }
        Err(panic) => {
            let msg = panic_message(&panic);
            fail_all(entries, InferError::WorkerDied);
            return Err(format!("panicked during inference: {msg}"));
        }
    };
    let batch = BatchRun {
        started,
        forward: inference_time,
        size: entries.len(),
        padded_tokens: entries.len() * sequences_longest(&entries),
        lane: if long { "long" } else { "short" },
    };
    for (entry, output) in entries.into_iter().zip(outputs) {
        let queue_time = entry.queue_time(started);
        let _ = entry.reply.send(Ok(Completed {
            output,
            queue_time,
            inference_time,
            batch,
        }));
    }
    Ok(())
}

/// The longest sequence of a batch, in tokens.
fn sequences_longest(entries: &[Entry]) -> usize {
    entries.iter().map(|e| e.ids.len()).max().unwrap_or(0)
}

fn fail_all(entries: Vec<Entry>, err: InferError) {
    for entry in entries {
        let _ = entry.reply.send(Err(err.clone()));
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
