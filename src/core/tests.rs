//! The core on its own, with a fake backend: routing, batching limits, backpressure,
//! cancellation, failures and restarts, shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::queue::{MAX_KEY_SERIES, OTHER_KEYS};
use super::schedule::OLDEST_TURN;
use super::*;
use crate::metrics::Metrics;

/// Token id that makes the fake backend return an error.
const FAIL: u32 = 999_999;
/// Token id that makes the fake backend panic.
const PANIC: u32 = 666_666;

/// A gate the fake backend waits on before each forward pass, so tests can pile work up.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Every batch the backend ran, as its sequences.
    batches: Mutex<Vec<Vec<Vec<u32>>>>,
    gate: Gate,
    started: AtomicUsize,
    creates: AtomicUsize,
    fail_create: std::sync::atomic::AtomicBool,
}

struct FakeBackend(Arc<Shared>);

impl Backend for FakeBackend {
    fn forward(&mut self, sequences: &[&[u32]]) -> Result<Vec<ModelOutput>, BackendError> {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        self.0.gate.wait();
        self.0
            .batches
            .lock()
            .unwrap()
            .push(sequences.iter().map(|s| s.to_vec()).collect());
        if sequences.iter().any(|s| s.contains(&PANIC)) {
            panic!("fake backend panic");
        }
        if sequences.iter().any(|s| s.contains(&FAIL)) {
            return Err(BackendError("fake failure".into()));
        }
        // The output identifies the input: [first id, length].
        Ok(sequences
            .iter()
            .map(|s| ModelOutput {
                embedding: vec![s[0] as f32, s.len() as f32],
                logits: vec![],
                spans: vec![],
            })
            .collect())
    }
}

struct FakeFactory(Arc<Shared>);

impl BackendFactory for FakeFactory {
    fn create(&self, _worker: usize) -> Result<Box<dyn Backend>, BackendError> {
        self.0.creates.fetch_add(1, Ordering::SeqCst);
        if self.0.fail_create.load(Ordering::SeqCst) {
            return Err(BackendError("cannot load".into()));
        }
        Ok(Box::new(FakeBackend(self.0.clone())))
    }
}

fn config(max_batch_size: usize, max_batch_tokens: usize, max_queue_size: usize) -> InferConfig {
    InferConfig {
        limits: BatchLimits {
            max_batch_tokens,
            max_batch_size,
        },
        max_wait: Duration::ZERO,
        max_queue_size,
        max_queued_tokens_per_key: 0,
        max_queued_tokens: 0,
        policy: Policy::Fair,
        workers: 1,
    }
}

async fn start(config: InferConfig, open: bool) -> (Arc<Infer>, Arc<Shared>, Arc<ModelMetrics>) {
    start_in(&Metrics::new().unwrap(), config, open).await
}

/// As [`start`], recording into `registry` (for tests that read the rendered metrics).
async fn start_in(
    registry: &Metrics,
    config: InferConfig,
    open: bool,
) -> (Arc<Infer>, Arc<Shared>, Arc<ModelMetrics>) {
    let shared = Arc::new(Shared::default());
    if open {
        shared.gate.open();
    }
    let metrics = Arc::new(registry.model("test"));
    let infer = Infer::start(
        Arc::new(FakeFactory(shared.clone())),
        config,
        metrics.clone(),
    );
    infer.wait_ready().await.unwrap();
    (Arc::new(infer), shared, metrics)
}

/// Waits (briefly) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn seq(first: u32, len: usize) -> Vec<u32> {
    let mut s = vec![first];
    s.resize(len, 1);
    s
}

#[tokio::test]
async fn results_come_back_to_the_right_request_in_order() {
    let (infer, _shared, _) = start(config(8, 1024, 1000), true).await;
    let mut tasks = Vec::new();
    for r in 0..32u32 {
        let infer = infer.clone();
        tasks.push(tokio::spawn(async move {
            let inputs: Vec<Vec<u32>> = (0..3)
                .map(|i| seq(r * 10 + i, 1 + (r as usize + i as usize) % 7))
                .collect();
            let out = infer.run(inputs.clone()).await.unwrap();
            for (input, output) in inputs.iter().zip(&out.outputs) {
                assert_eq!(output.embedding, vec![input[0] as f32, input.len() as f32]);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn batches_respect_size_and_padded_token_limits() {
    let (infer, shared, metrics) = start(config(4, 40, 1000), false).await;
    // The first input occupies the worker; the rest pile up behind the closed gate.
    let first = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(1, 3)]).await }
    });
    eventually("first batch to start", || {
        shared.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let lengths = [3usize, 4, 3, 10, 3, 3, 12, 4, 3];
    let rest = tokio::spawn({
        let infer = infer.clone();
        async move {
            infer
                .run(
                    lengths
                        .iter()
                        .enumerate()
                        .map(|(i, &l)| seq(100 + i as u32, l))
                        .collect(),
                )
                .await
        }
    });
    eventually("inputs to be queued", || {
        infer.queue_depth() == lengths.len()
    })
    .await;
    shared.gate.open();
    first.await.unwrap().unwrap();
    let out = rest.await.unwrap().unwrap();
    assert_eq!(out.outputs.len(), lengths.len());
    for (i, o) in out.outputs.iter().enumerate() {
        assert_eq!(o.embedding, vec![(100 + i) as f32, lengths[i] as f32]);
    }
    let batches = shared.batches.lock().unwrap().clone();
    assert!(
        batches.len() >= 3,
        "9 inputs in batches of at most 4: {batches:?}"
    );
    for batch in &batches {
        let longest = batch.iter().map(Vec::len).max().unwrap();
        assert!(batch.len() <= 4, "batch too large: {batch:?}");
        assert!(
            batch.len() * longest <= 40,
            "over the token budget: {batch:?}"
        );
    }
    // The short inputs were grouped together rather than padded to the long ones.
    assert_eq!(
        batches[1].iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 3, 3]
    );
    assert_eq!(metrics.queue_depth.get(), 0);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let (infer, shared, _) = start(config(1, 100, 4), false).await;
    let busy = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(1, 2)]).await }
    });
    eventually("worker busy", || shared.started.load(Ordering::SeqCst) == 1).await;
    let queued = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(2, 2), seq(3, 2), seq(4, 2)]).await }
    });
    eventually("3 queued", || infer.queue_depth() == 3).await;
    // 3 waiting + 2 more > 4: refused whole, nothing admitted.
    let refused = infer.run(vec![seq(5, 2), seq(6, 2)]).await;
    assert!(matches!(refused, Err(InferError::QueueFull)), "{refused:?}");
    assert_eq!(infer.queue_depth(), 3);
    // One more still fits.
    let fits = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(7, 2)]).await }
    });
    shared.gate.open();
    busy.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    fits.await.unwrap().unwrap();
}

#[tokio::test]
async fn work_for_departed_requests_is_dropped_before_inference() {
    let (infer, shared, _) = start(config(8, 1000, 100), false).await;
    let busy = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(1, 2)]).await }
    });
    eventually("worker busy", || shared.started.load(Ordering::SeqCst) == 1).await;
    let gone = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(42, 2), seq(43, 2)]).await }
    });
    eventually("queued", || infer.queue_depth() == 2).await;
    gone.abort();
    let _ = gone.await;
    shared.gate.open();
    busy.await.unwrap().unwrap();
    let after = infer.run(vec![seq(50, 2)]).await.unwrap();
    assert_eq!(after.outputs[0].embedding, vec![50.0, 2.0]);
    let seen: Vec<u32> = shared
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|s| s[0])
        .collect();
    assert_eq!(
        seen,
        vec![1, 50],
        "cancelled inputs must not reach the model"
    );
    assert_eq!(infer.queue_depth(), 0);
}

#[tokio::test]
async fn an_inference_error_fails_the_batch_and_the_worker_keeps_serving() {
    let (infer, shared, metrics) = start(config(8, 1000, 100), true).await;
    let err = infer.run(vec![seq(FAIL, 3)]).await.unwrap_err();
    assert!(
        matches!(err, InferError::Backend(ref m) if m.contains("fake failure")),
        "{err:?}"
    );
    let ok = infer.run(vec![seq(7, 3)]).await.unwrap();
    assert_eq!(ok.outputs[0].embedding, vec![7.0, 3.0]);
    assert_eq!(
        shared.creates.load(Ordering::SeqCst),
        1,
        "no restart for an ordinary error"
    );
    assert_eq!(metrics.worker_restarts.get(), 0);
}

#[tokio::test]
async fn a_panicking_worker_is_reported_and_restarted() {
    let (infer, shared, metrics) = start(config(8, 1000, 100), true).await;
    assert_eq!(metrics.workers_alive.get(), 1);
    let err = infer.run(vec![seq(PANIC, 3)]).await.unwrap_err();
    assert!(matches!(err, InferError::WorkerDied), "{err:?}");
    eventually("restart", || {
        shared.creates.load(Ordering::SeqCst) == 2 && infer.readiness().is_ok()
    })
    .await;
    assert_eq!(metrics.worker_restarts.get(), 1);
    assert_eq!(metrics.workers_alive.get(), 1);
    let ok = infer.run(vec![seq(8, 2)]).await.unwrap();
    assert_eq!(ok.outputs[0].embedding, vec![8.0, 2.0]);
}

#[tokio::test]
async fn readiness_reports_a_dead_worker() {
    let (infer, shared, metrics) = start(config(8, 1000, 100), true).await;
    shared.fail_create.store(true, Ordering::SeqCst);
    let _ = infer.run(vec![seq(PANIC, 1)]).await;
    eventually("a failed restart", || {
        shared.creates.load(Ordering::SeqCst) >= 2
    })
    .await;
    let reason = infer.readiness().unwrap_err();
    assert!(reason.contains("worker 0 of 1"), "{reason}");
    assert_eq!(metrics.workers_alive.get(), 0);
    assert!(matches!(
        infer.run(vec![seq(1, 1)]).await,
        Err(InferError::NotReady(_))
    ));
    // Once loading works again the supervisor brings it back.
    shared.fail_create.store(false, Ordering::SeqCst);
    eventually("recovery", || infer.readiness().is_ok()).await;
}

#[tokio::test]
async fn wait_ready_fails_when_the_model_cannot_load() {
    let shared = Arc::new(Shared::default());
    shared.fail_create.store(true, Ordering::SeqCst);
    let metrics = Arc::new(Metrics::new().unwrap().model("test"));
    let infer = Infer::start(Arc::new(FakeFactory(shared)), config(8, 100, 10), metrics);
    let err = infer.wait_ready().await.unwrap_err();
    assert!(err.to_string().contains("cannot load"), "{err}");
}

#[tokio::test]
async fn max_wait_gathers_inputs_into_one_batch() {
    let mut cfg = config(8, 1000, 100);
    cfg.max_wait = Duration::from_millis(300);
    let (infer, shared, _) = start(cfg, true).await;
    let a = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(1, 2)]).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    infer.run(vec![seq(2, 2)]).await.unwrap();
    a.await.unwrap().unwrap();
    let batches = shared.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].len(), 2);
}

#[tokio::test]
async fn shutdown_finishes_admitted_work_and_refuses_new() {
    let (infer, shared, _) = start(config(2, 1000, 100), false).await;
    let pending = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run((0..5).map(|i| seq(i, 2)).collect()).await }
    });
    eventually("queued", || shared.started.load(Ordering::SeqCst) == 1).await;
    let stopper = tokio::spawn({
        let infer = infer.clone();
        async move { infer.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(matches!(
        infer.run(vec![seq(9, 1)]).await,
        Err(InferError::ShuttingDown)
    ));
    shared.gate.open();
    let out = pending.await.unwrap().unwrap();
    assert_eq!(out.outputs.len(), 5);
    stopper.await.unwrap();
    assert!(infer
        .worker_states()
        .iter()
        .all(|s| *s == WorkerState::Stopped));
}

/// Starts `inputs` as one request of `caller` in the background.
fn spawn_run(
    infer: &Arc<Infer>,
    inputs: Vec<Vec<u32>>,
    caller: Caller,
) -> tokio::task::JoinHandle<Result<Inference, InferError>> {
    let infer = infer.clone();
    tokio::spawn(async move { infer.run_as(inputs, caller).await })
}

/// Occupies the only worker with one input behind the closed gate, then queues `requests` in
/// order; opens the gate once all of them wait, and returns the batches the model ran (the
/// occupying one first) with each request's outcome.
async fn run_behind_a_busy_worker(
    cfg: InferConfig,
    requests: Vec<(Vec<Vec<u32>>, Caller)>,
) -> (
    Vec<Vec<Vec<u32>>>,
    Vec<Result<Inference, InferError>>,
    Arc<ModelMetrics>,
) {
    let (infer, shared, metrics) = start(cfg, false).await;
    let busy = spawn_run(&infer, vec![seq(0, 2)], Caller::default());
    eventually("worker busy", || shared.started.load(Ordering::SeqCst) == 1).await;
    let total: usize = requests.iter().map(|(inputs, _)| inputs.len()).sum();
    let mut tasks = Vec::new();
    for (inputs, caller) in requests {
        let before = infer.queue_depth();
        let n = inputs.len();
        tasks.push(spawn_run(&infer, inputs, caller));
        // One at a time, so arrival order is the order given.
        eventually("request queued", || infer.queue_depth() == before + n).await;
    }
    assert_eq!(infer.queue_depth(), total);
    shared.gate.open();
    busy.await.unwrap().unwrap();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let batches = shared.batches.lock().unwrap().clone();
    (batches, results, metrics)
}

/// Index of the batch that carried the input whose first token is `id`.
fn batch_of(batches: &[Vec<Vec<u32>>], id: u32) -> usize {
    batches
        .iter()
        .position(|b| b.iter().any(|s| s[0] == id))
        .unwrap_or_else(|| panic!("input {id} never ran: {batches:?}"))
}

async fn heavy_then_short(policy: Policy) -> (usize, usize) {
    let mut cfg = config(4, 1000, 1000);
    cfg.policy = policy;
    let heavy: Vec<Vec<u32>> = (0..40).map(|i| seq(100 + i, 8)).collect();
    let (batches, results, _) = run_behind_a_busy_worker(
        cfg,
        vec![
            (heavy, Caller::default()),
            (vec![seq(7, 8)], Caller::default()),
        ],
    )
    .await;
    for r in results {
        r.unwrap();
    }
    (batch_of(&batches, 7), batches.len())
}

#[tokio::test]
async fn a_short_request_is_not_queued_behind_a_heavy_one() {
    // Batch 0 occupies the worker; the other 41 inputs need 11 batches of 4.
    let (fair_at, fair_batches) = heavy_then_short(Policy::Fair).await;
    assert_eq!(fair_batches, 12);
    assert_eq!(fair_at, 1, "fair: the short request shares the next batch");
    let (fifo_at, fifo_batches) = heavy_then_short(Policy::Fifo).await;
    assert_eq!(fifo_batches, 12);
    assert_eq!(
        fifo_at, 11,
        "fifo: the short request waits for all of the heavy one"
    );
}

#[tokio::test]
async fn the_oldest_input_is_served_within_the_starvation_bound() {
    // One sequence per batch. A long input first, then 20 short single-input requests, each
    // of which fair order puts ahead of it.
    let mut requests = vec![(vec![seq(1, 50)], Caller::default())];
    for i in 0..20 {
        requests.push((vec![seq(100 + i, 2)], Caller::default()));
    }
    let (batches, results, metrics) =
        run_behind_a_busy_worker(config(1, 1000, 1000), requests).await;
    assert!(results.into_iter().all(|r| r.is_ok()));
    // 7 short batches pass it over, then the guard gives it the 8th.
    assert_eq!(batch_of(&batches, 1), OLDEST_TURN as usize);
    assert_eq!(metrics.oldest_turns.get(), 1);
}

#[tokio::test]
async fn low_priority_work_yields_to_normal_work_and_still_runs() {
    let low = Caller {
        priority: Priority::Low,
        client: None,
    };
    let (batches, results, metrics) = run_behind_a_busy_worker(
        config(1, 1000, 1000),
        vec![
            ((1..=3).map(|i| seq(i, 4)).collect(), low),
            (vec![seq(50, 4)], Caller::default()),
            (vec![seq(51, 4)], Caller::default()),
        ],
    )
    .await;
    assert!(results.into_iter().all(|r| r.is_ok()));
    // The later normal requests run first, then the low ones.
    let order: Vec<u32> = batches.iter().map(|b| b[0][0]).collect();
    assert_eq!(order, vec![0, 50, 51, 1, 2, 3]);
    for class in ["low", "normal"] {
        assert_eq!(metrics.queued_inputs.with_label_values(&[class]).get(), 0);
        assert_eq!(metrics.queued_tokens.with_label_values(&[class]).get(), 0);
    }
}

#[tokio::test]
async fn waiting_work_is_counted_per_class_and_per_key() {
    let mut cfg = config(8, 1000, 1000);
    cfg.max_queued_tokens_per_key = 20;
    let (infer, shared, metrics) = start(cfg, false).await;
    let a = ClientId(0xaaaa_0001_0000_0000);
    let b = ClientId(0xbbbb_0002_0000_0000);
    let as_key = |client| Caller {
        priority: Priority::Normal,
        client: Some(client),
    };
    let busy = spawn_run(&infer, vec![seq(0, 2)], Caller::default());
    eventually("worker busy", || shared.started.load(Ordering::SeqCst) == 1).await;

    let mut admitted = vec![spawn_run(&infer, vec![seq(1, 8), seq(2, 8)], as_key(a))];
    eventually("a queued", || infer.queued_tokens_of(a) == 16).await;
    // 16 + 8 > 20: refused at once, nothing admitted.
    let refused = infer.run_as(vec![seq(3, 8)], as_key(a)).await;
    assert!(
        matches!(
            refused,
            Err(InferError::KeyQueueFull {
                queued: 16,
                requested: 8,
                limit: 20
            })
        ),
        "{refused:?}"
    );
    assert_eq!(infer.queued_tokens_of(a), 16);
    // Another key is not affected; key a can still fill up to its limit exactly.
    admitted.push(spawn_run(&infer, vec![seq(4, 8)], as_key(b)));
    admitted.push(spawn_run(&infer, vec![seq(5, 4)], as_key(a)));
    admitted.push(spawn_run(
        &infer,
        vec![seq(6, 3)],
        Caller {
            priority: Priority::Low,
            client: None,
        },
    ));
    eventually("all queued", || infer.queue_depth() == 5).await;
    assert_eq!(infer.queued_tokens_of(a), 20);
    assert_eq!(infer.queued_tokens_of(b), 8);
    let key = |id: ClientId| metrics.key_queued_tokens.with_label_values(&[&id.label()]);
    assert_eq!(a.label(), "aaaa0001");
    assert_eq!(key(a).get(), 20);
    assert_eq!(key(b).get(), 8);
    assert_eq!(
        metrics
            .key_limit_rejections
            .with_label_values(&["aaaa0001"])
            .get(),
        1
    );
    assert_eq!(
        metrics.queued_tokens.with_label_values(&["normal"]).get(),
        28
    );
    assert_eq!(
        metrics.queued_inputs.with_label_values(&["normal"]).get(),
        4
    );
    assert_eq!(metrics.queued_tokens.with_label_values(&["low"]).get(), 3);
    assert_eq!(metrics.queued_inputs.with_label_values(&["low"]).get(), 1);

    shared.gate.open();
    busy.await.unwrap().unwrap();
    for t in admitted {
        t.await.unwrap().unwrap();
    }
    assert_eq!(infer.queued_tokens_of(a), 0);
    assert_eq!(key(a).get(), 0);
    assert_eq!(key(b).get(), 0);
    for class in ["low", "normal"] {
        assert_eq!(metrics.queued_tokens.with_label_values(&[class]).get(), 0);
    }
    // With nothing queued, a key is admitted even for a request over its limit.
    let big = infer
        .run_as((0..4).map(|i| seq(10 + i, 8)).collect(), as_key(a))
        .await
        .unwrap();
    assert_eq!(big.outputs.len(), 4);
}

#[tokio::test]
async fn key_series_are_capped() {
    let mut cfg = config(8, 1000, 10_000);
    cfg.max_queued_tokens_per_key = 1;
    let registry = Metrics::new().unwrap();
    let (infer, shared, metrics) = start_in(&registry, cfg, false).await;
    let busy = spawn_run(&infer, vec![seq(0, 2)], Caller::default());
    eventually("worker busy", || shared.started.load(Ordering::SeqCst) == 1).await;
    let keys = MAX_KEY_SERIES as u64 + 5;
    let mut tasks = Vec::new();
    for k in 0..keys {
        let caller = Caller {
            priority: Priority::Normal,
            client: Some(ClientId((k + 1) << 32)),
        };
        tasks.push(spawn_run(&infer, vec![seq(1, 2)], caller));
    }
    eventually("all queued", || infer.queue_depth() == keys as usize).await;
    let text = registry.render().unwrap();
    let series = text
        .lines()
        .filter(|l| l.starts_with("aft_key_queued_tokens{"))
        .count();
    assert_eq!(series, MAX_KEY_SERIES + 1, "{text}");
    assert_eq!(
        metrics
            .key_queued_tokens
            .with_label_values(&[OTHER_KEYS])
            .get(),
        10
    );
    shared.gate.open();
    busy.await.unwrap().unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn queued_tokens_are_bounded_and_a_request_over_the_bound_is_refused_outright() {
    let mut cfg = config(1, 100, 100);
    cfg.max_queued_tokens = 10;
    let (infer, shared, _) = start(cfg, false).await;
    // More tokens than the queue may ever hold: it could never run.
    let err = infer.run(vec![seq(1, 11)]).await.unwrap_err();
    assert!(
        matches!(
            err,
            InferError::TooManyTokens {
                tokens: 11,
                limit: 10
            }
        ),
        "{err:?}"
    );
    // 4 tokens go to the (held) worker, 6 wait; 5 more would pass 10 tokens waiting.
    let running = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(2, 4)]).await }
    });
    eventually("the first batch to start", || {
        shared.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let waiting = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(3, 6)]).await }
    });
    eventually("6 tokens to wait", || infer.queue_depth() == 1).await;
    let err = infer.run(vec![seq(4, 5)]).await.unwrap_err();
    assert!(matches!(err, InferError::QueueFull), "{err:?}");
    // 4 more fit exactly.
    let fits = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(5, 4)]).await }
    });
    eventually("10 tokens to wait", || infer.queue_depth() == 2).await;
    shared.gate.open();
    for task in [running, waiting, fits] {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn long_inputs_take_their_own_lane_and_never_hold_up_short_ones() {
    let short = Arc::new(Shared::default());
    short.gate.open();
    // The long lane's worker is held: whatever it runs stays running.
    let long = Arc::new(Shared::default());
    let metrics = Arc::new(Metrics::new().unwrap().model("test"));
    let infer = Arc::new(Infer::start_lanes(
        Arc::new(FakeFactory(short.clone())),
        config(8, 64, 100),
        Some(LongLane {
            above_tokens: 16,
            workers: 1,
            factory: Arc::new(FakeFactory(long.clone())),
        }),
        metrics.clone(),
    ));
    infer.wait_ready().await.unwrap();
    assert_eq!(infer.worker_states().len(), 2);
    // One request with a long input between two short ones: the long one goes to its lane.
    let mixed = tokio::spawn({
        let infer = infer.clone();
        async move { infer.run(vec![seq(1, 5), seq(2, 40), seq(3, 16)]).await }
    });
    eventually("the long input to start", || {
        long.started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(metrics.long_inputs_running.get(), 1);
    // While it runs, short requests are served by the short lane, whole.
    for i in 0..3 {
        let out = infer.run(vec![seq(10 + i, 8)]).await.unwrap();
        assert_eq!(out.outputs[0].embedding, vec![(10 + i) as f32, 8.0]);
    }
    assert!(!mixed.is_finished());
    long.gate.open();
    let out = mixed.await.unwrap().unwrap();
    let firsts: Vec<f32> = out.outputs.iter().map(|o| o.embedding[0]).collect();
    assert_eq!(firsts, vec![1.0, 2.0, 3.0], "answers in input order");
    // Each lane ran exactly its inputs: 16 tokens is not above the threshold.
    let long_batches = long.batches.lock().unwrap().clone();
    assert_eq!(long_batches, vec![vec![seq(2, 40)]]);
    assert!(short
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .all(|s| s.len() <= 16));
    assert_eq!(metrics.long_input_tokens.get_sample_count(), 1);
    assert_eq!(metrics.long_input_tokens.get_sample_sum(), 40.0);
    assert_eq!(metrics.long_inputs_running.get(), 0);
    infer.shutdown().await;
}
