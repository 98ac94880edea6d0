//! In-process limit of a model bundle's forward pass, through tch, with no HTTP and no queue.
//!
//! It runs the service's own code: the bundle is loaded and checked by `Bundle::load`, the corpus
//! (JSON lines with a "text" field) is tokenized by the service's `TextTokenizer`, batches are
//! chosen by the batcher's `select_batch` as the service forms them at saturation (a queue of
//! --queue-depths inputs drawn in corpus order, within --max-batch-size sequences and
//! --max-batch-tokens padded tokens), and each of --workers threads owns a replica made by the
//! service's `TorchFactory` (float32, eval, warmed up, --intra-op-threads libtorch threads) and
//! runs batches through `TorchBackend::forward` (padding, no_grad, outputs copied to the host).
//! It reports sentences/s and (real, unpadded) tokens/s for every workers x threads pair asked
//! for, a fixed-batch-size sweep, the bare forward latency of one short sentence (batch 1),
//! tokenization throughput, and the machine's f32 matrix-multiply GFLOP/s.
//!
//! ```sh
//! source scripts/env.sh
//! cargo run --release --example forward_bench -- --model-dir models/aft-mini \
//!     --corpus bench/corpus/texts.jsonl --json bench/results/limit.json
//! ```

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aft_serve::backend::threads::{LaneThreads, Priority};
use aft_serve::backend::torch::{batch_warm_up, TorchFactory};
use aft_serve::bundle::Bundle;
use aft_serve::config::Precision;
use aft_serve::core::{select_batch, Backend, BackendFactory, BatchLimits};
use aft_serve::tokenize::{Input, TextTokenizer};
use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

#[derive(Parser, Debug)]
#[command(about = "In-process forward-pass throughput and latency of an AFT bundle (tch)")]
struct Args {
    /// Model bundle directory (manifest.json, model.pt, tokenizer.json).
    #[arg(long)]
    model_dir: PathBuf,
    /// Which model file of the bundle to run, as the service's --precision chooses it on the CPU
    /// (auto: the bundle's int8 copy when it has one, as the service serves it by default).
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    precision: Precision,
    /// Corpus: JSON lines with a "text" field.
    #[arg(long, default_value = "bench/corpus/texts.jsonl")]
    corpus: PathBuf,
    /// Worker x intra-op thread pairs to measure at service batch shapes, e.g. 1x2,2x1.
    #[arg(long, value_delimiter = ',', default_value = "1x2,2x1,1x1,2x2")]
    configs: Vec<String>,
    /// Most sequences in one batch (as the service's --max-batch-size).
    #[arg(long, default_value_t = 64)]
    max_batch_size: usize,
    /// Most padded tokens in one batch (as the service's --max-batch-tokens); a list measures each.
    #[arg(long, value_delimiter = ',', default_value = "8192")]
    max_batch_tokens: Vec<usize>,
    /// Queue depths (closed-loop clients) under which service batches are formed; a list
    /// measures each (the first config only for depths after the first).
    #[arg(long, value_delimiter = ',', default_value = "256,16")]
    queue_depths: Vec<usize>,
    /// Fixed batch sizes for the batch-size sweep (first config's threads), first-come batches.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    batch_sizes: Vec<usize>,
    /// Seconds of measurement per point (after one warm-up pass).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Thread counts for the matmul measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    matmul_threads: Vec<i32>,
    /// Square matmul size.
    #[arg(long, default_value_t = 1024)]
    matmul_n: i64,
    /// Write the results here as JSON (also printed).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The bundle, checked as the service checks it, and its tokenizer.
struct Model {
    bundle: Arc<Bundle>,
    tokenizer: TextTokenizer,
}

impl Model {
    fn load(dir: &std::path::Path, precision: Precision) -> Result<Self> {
        let bundle = Bundle::load(dir)
            .context("invalid model bundle")?
            .with_precision(precision, Device::Cpu)?;
        let tokenizer = TextTokenizer::from_bundle(&bundle).context("cannot load the tokenizer")?;
        Ok(Self {
            bundle: Arc::new(bundle),
            tokenizer,
        })
    }

    /// Token ids of `text` as the service makes them (truncated at the model's limit).
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(0, &Input::Text(text.to_owned()), true)?)
    }

    /// A warmed-up replica on the CPU, made on (and for) the calling thread exactly as a service
    /// worker makes its own: `threads` intra-op threads, warmed at the largest batch `limits`
    /// allow.
    fn replica(&self, threads: usize, limits: BatchLimits) -> Result<Box<dyn Backend>> {
        let warm_up = batch_warm_up(self.bundle.manifest.max_seq_len, limits);
        let threads = LaneThreads {
            threads,
            beside_short: threads,
            priority: Priority::Normal,
            short_activity: Default::default(),
        };
        let factory = TorchFactory::new(self.bundle.clone(), Device::Cpu, threads, warm_up);
        Ok(factory.create(0)?)
    }
}

/// One forward pass over `batch` (indices into `seqs`).
fn forward(backend: &mut dyn Backend, seqs: &[Vec<u32>], batch: &[usize]) -> Result<()> {
    let refs: Vec<&[u32]> = batch.iter().map(|&i| seqs[i].as_slice()).collect();
    backend.forward(&refs)?;
    Ok(())
}

/// Greedy first-come batches over the sequences in order (fixed-batch-size sweep).
fn fifo_batches(seqs: &[Vec<u32>], max_size: usize) -> Vec<Vec<usize>> {
    (0..seqs.len())
        .collect::<Vec<_>>()
        .chunks(max_size.max(1))
        .map(|c| c.to_vec())
        .collect()
}

/// Batches as the service forms them at saturation under a closed loop of `depth` clients: the
/// queue holds `depth` inputs drawn in corpus order (cycling), each batch leaves as the batcher's
/// `select_batch` chooses it, and as many new inputs arrive as left. Covers the corpus `rounds`
/// times.
fn service_batches(
    seqs: &[Vec<u32>],
    limits: BatchLimits,
    depth: usize,
    rounds: usize,
) -> Vec<Vec<usize>> {
    let total = seqs.len() * rounds;
    let mut next = 0usize;
    let mut pending: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    let mut batches = Vec::new();
    let mut served = 0;
    while served < total {
        while pending.len() < depth.max(1) {
            pending.push_back(next % seqs.len());
            next += 1;
        }
        let lengths: Vec<usize> = pending.iter().map(|&i| seqs[i].len()).collect();
        let chosen = select_batch(&lengths, limits).indices;
        let mut batch = Vec::with_capacity(chosen.len());
        for &k in chosen.iter().rev() {
            if let Some(i) = pending.remove(k) {
                batch.push(i);
            }
        }
        batch.reverse();
        served += batch.len();
        batches.push(batch);
    }
    batches
}

/// (sentences, real tokens, padded tokens, batches, seconds) of one worker.
type WorkerStats = (usize, usize, usize, usize, f64);

struct Throughput {
    sentences: usize,
    tokens: usize,
    padded_tokens: usize,
    batches: usize,
    elapsed: f64,
}

/// Batches over the tokenized corpus, and the limits they were formed under (which also size
/// each replica's warm-up, as in the service).
struct Workload<'a> {
    seqs: &'a [Vec<u32>],
    batches: Vec<Vec<usize>>,
    limits: BatchLimits,
}

/// Runs the workload's batches round-robin over `workers` threads (each with its own replica and
/// `threads` intra-op threads) for about `seconds`, after one warm-up pass over the first
/// batches; the throughput as JSON, with the workers x threads it ran on.
fn run_throughput(
    model: &Model,
    work: &Workload,
    workers: usize,
    threads: usize,
    seconds: f64,
) -> Result<Value> {
    let (seqs, batches, limits) = (work.seqs, work.batches.as_slice(), work.limits);
    let barrier = std::sync::Barrier::new(workers);
    let deadline_holder = std::sync::OnceLock::<Instant>::new();
    let results: Vec<Result<WorkerStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let barrier = &barrier;
                let deadline_holder = &deadline_holder;
                s.spawn(move || -> Result<WorkerStats> {
                    // Every worker reaches the barrier, even one whose replica failed, so the
                    // others are not left waiting.
                    let replica = model.replica(threads, limits).and_then(|mut backend| {
                        for b in batches.iter().skip(w).step_by(workers).take(3) {
                            forward(backend.as_mut(), seqs, b)?;
                        }
                        Ok(backend)
                    });
                    barrier.wait();
                    let mut backend = replica?;
                    let start = Instant::now();
                    let deadline =
                        *deadline_holder.get_or_init(|| start + Duration::from_secs_f64(seconds));
                    let (mut n, mut tok, mut padded, mut nb) = (0, 0, 0, 0);
                    let mut k = w;
                    loop {
                        let b = &batches[k % batches.len()];
                        forward(backend.as_mut(), seqs, b)?;
                        let longest = b.iter().map(|&i| seqs[i].len()).max().unwrap_or(0);
                        n += b.len();
                        tok += b.iter().map(|&i| seqs[i].len()).sum::<usize>();
                        padded += b.len() * longest;
                        nb += 1;
                        k += workers;
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    Ok((n, tok, padded, nb, start.elapsed().as_secs_f64()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    let mut t = Throughput {
        sentences: 0,
        tokens: 0,
        padded_tokens: 0,
        batches: 0,
        elapsed: 0.0,
    };
    for r in results {
        let (n, tok, padded, nb, el) = r?;
        t.sentences += n;
        t.tokens += tok;
        t.padded_tokens += padded;
        t.batches += nb;
        t.elapsed = t.elapsed.max(el);
    }
    let mut j = throughput_json(&t);
    j["workers"] = json!(workers);
    j["intra_op_threads"] = json!(threads);
    Ok(j)
}

fn throughput_json(t: &Throughput) -> Value {
    json!({
        "sentences_per_s": t.sentences as f64 / t.elapsed,
        "tokens_per_s": t.tokens as f64 / t.elapsed,
        "padded_tokens_per_s": t.padded_tokens as f64 / t.elapsed,
        "mean_batch_size": t.sentences as f64 / t.batches.max(1) as f64,
        "padding_fraction": 1.0 - t.tokens as f64 / t.padded_tokens.max(1) as f64,
        "batches": t.batches,
        "seconds": t.elapsed,
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn parse_config(s: &str) -> Result<(usize, usize)> {
    let (w, t) = s
        .split_once('x')
        .with_context(|| format!("config {s:?} is not WxT"))?;
    Ok((w.trim().parse()?, t.trim().parse()?))
}

fn matmul_gflops(n: i64, threads: i32, seconds: f64) -> f64 {
    tch::set_num_threads(threads);
    let _guard = tch::no_grad_guard();
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    for _ in 0..3 {
        let _ = a.matmul(&b);
    }
    let start = Instant::now();
    let mut reps = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let _ = a.matmul(&b);
        reps += 1;
    }
    2.0 * (n as f64).powi(3) * reps as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// Batch-1 forward latency (and tokenize + forward) over `short`, 5 timed rounds after one.
fn single_latency(
    model: &Model,
    limits: BatchLimits,
    texts: &[String],
    seqs: &[Vec<u32>],
    short: &[usize],
    threads: usize,
) -> Result<Value> {
    let mut backend = model.replica(threads, limits)?;
    let mut fwd = Vec::new();
    let mut full = Vec::new();
    for round in 0..6 {
        for &i in short {
            let t0 = Instant::now();
            forward(backend.as_mut(), seqs, &[i])?;
            let dt = t0.elapsed().as_secs_f64() * 1e3;
            let t1 = Instant::now();
            let ids = model.encode(&texts[i])?;
            backend.forward(&[ids.as_slice()])?;
            let dt_full = t1.elapsed().as_secs_f64() * 1e3;
            if round > 0 {
                fwd.push(dt);
                full.push(dt_full);
            }
        }
    }
    fwd.sort_by(f64::total_cmp);
    full.sort_by(f64::total_cmp);
    let mean_len =
        short.iter().map(|&i| seqs[i].len()).sum::<usize>() as f64 / short.len().max(1) as f64;
    eprintln!(
        "batch-1 short sentence ({mean_len:.1} tokens), {threads} thread(s): forward p50 \
         {:.3} ms, tokenize+forward p50 {:.3} ms",
        percentile(&fwd, 0.5),
        percentile(&full, 0.5)
    );
    Ok(json!({
        "threads": threads, "mean_tokens": mean_len, "samples": fwd.len(),
        "forward_ms": {"p50": percentile(&fwd, 0.5), "p90": percentile(&fwd, 0.9),
                       "p99": percentile(&fwd, 0.99), "min": fwd.first().copied()},
        "tokenize_forward_ms": {"p50": percentile(&full, 0.5),
                                "p90": percentile(&full, 0.9)},
    }))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let model = Model::load(&args.model_dir, args.precision)?;
    let manifest = &model.bundle.manifest;
    let (Some(&mbt0), Some(&depth0)) = (args.max_batch_tokens.first(), args.queue_depths.first())
    else {
        bail!("--max-batch-tokens and --queue-depths need at least one value each");
    };
    // The service's limits for replicas made outside the service-shape points (their warm-up).
    let base_limits = BatchLimits {
        max_batch_tokens: mbt0,
        max_batch_size: args.max_batch_size,
    };

    let file = std::fs::File::open(&args.corpus)
        .with_context(|| format!("opening {}", args.corpus.display()))?;
    let mut texts = Vec::new();
    let mut buckets: Vec<String> = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)?;
        texts.push(
            v["text"]
                .as_str()
                .context("corpus line without text")?
                .to_string(),
        );
        buckets.push(v["bucket"].as_str().unwrap_or("").to_string());
    }
    if texts.is_empty() {
        bail!("empty corpus {}", args.corpus.display());
    }

    // Tokenization throughput, one thread, one text at a time (as per-request tokenization).
    let start = Instant::now();
    let seqs: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| model.encode(t))
        .collect::<Result<_>>()?;
    let tok_s = start.elapsed().as_secs_f64();
    let total_tokens: usize = seqs.iter().map(|s| s.len()).sum();
    eprintln!(
        "corpus: {} texts, {} tokens (mean {:.1}); tokenization {:.0} texts/s on one thread",
        seqs.len(),
        total_tokens,
        total_tokens as f64 / seqs.len() as f64,
        seqs.len() as f64 / tok_s
    );

    let mut out = json!({
        "model_dir": args.model_dir.display().to_string(),
        "precision": model.bundle.precision().as_str(),
        "model_name": manifest.name,
        "manifest_model": manifest.model,
        "max_seq_len": manifest.max_seq_len,
        "corpus": args.corpus.display().to_string(),
        "corpus_texts": seqs.len(),
        "corpus_tokens": total_tokens,
        "tokenization_texts_per_s_1thread": seqs.len() as f64 / tok_s,
        "torch": {"has_openmp": tch::utils::has_openmp(), "has_mkl": tch::utils::has_mkl(),
                  "has_mkldnn": tch::utils::has_mkldnn(),
                  "default_threads": tch::get_num_threads()},
        "max_batch_size": args.max_batch_size,
        "seconds_per_point": args.seconds,
    });

    // Matrix-multiply peak.
    let mut mm = Vec::new();
    for &th in &args.matmul_threads {
        let g = matmul_gflops(args.matmul_n, th, args.seconds.min(3.0));
        eprintln!(
            "matmul {0}x{0} f32, {th} thread(s): {g:.1} GFLOP/s",
            args.matmul_n
        );
        mm.push(json!({"threads": th, "n": args.matmul_n, "gflops": g}));
    }
    out["matmul"] = Value::Array(mm);

    let configs: Vec<(usize, usize)> = args
        .configs
        .iter()
        .map(|s| parse_config(s))
        .collect::<Result<_>>()?;
    let Some(&(first_workers, first_threads)) = configs.first() else {
        bail!("--configs needs at least one WxT pair");
    };

    // Bare forward latency, batch 1, for each thread count in the configs: 200 of the corpus'
    // "short" texts (the load tests' short bodies), or the 200 shortest without buckets.
    let mut short: Vec<usize> = (0..seqs.len()).filter(|&i| buckets[i] == "short").collect();
    if short.is_empty() {
        short = (0..seqs.len()).collect();
        short.sort_by_key(|&i| seqs[i].len());
    }
    short.truncate(200);
    let mut thread_counts: Vec<usize> = configs.iter().map(|c| c.1).collect();
    thread_counts.dedup();
    let mut by_threads = serde_json::Map::new();
    for (n, &threads) in thread_counts.iter().enumerate() {
        if thread_counts[..n].contains(&threads) {
            continue;
        }
        let r = single_latency(&model, base_limits, &texts, &seqs, &short, threads)?;
        if n == 0 {
            out["single_short"] = r.clone();
        }
        by_threads.insert(threads.to_string(), r);
    }
    out["single_short_by_threads"] = Value::Object(by_threads);

    // Service batch shapes: every config x every max-batch-tokens at the first queue depth;
    // the first config at the other depths.
    let mut points: Vec<(usize, usize, usize, usize)> = Vec::new();
    for &mbt in &args.max_batch_tokens {
        for &(w, t) in &configs {
            points.push((depth0, mbt, w, t));
        }
    }
    for &d in args.queue_depths.iter().skip(1) {
        points.push((d, mbt0, first_workers, first_threads));
    }
    let mut service = Vec::new();
    for (depth, mbt, workers, threads) in points {
        let limits = BatchLimits {
            max_batch_tokens: mbt,
            max_batch_size: args.max_batch_size,
        };
        let work = Workload {
            seqs: &seqs,
            batches: service_batches(&seqs, limits, depth, 3),
            limits,
        };
        let mut j = run_throughput(&model, &work, workers, threads, args.seconds)?;
        eprintln!(
            "service shapes, depth {depth}, workers {workers} x threads {threads}, \
             max-batch-tokens {mbt}: {:.1} sentences/s, {:.0} tokens/s, mean batch {:.1}",
            j["sentences_per_s"].as_f64().unwrap_or(0.0),
            j["tokens_per_s"].as_f64().unwrap_or(0.0),
            j["mean_batch_size"].as_f64().unwrap_or(0.0)
        );
        j["max_batch_tokens"] = json!(mbt);
        j["queue_depth"] = json!(depth);
        service.push(j);
    }
    out["service_shapes"] = Value::Array(service);

    // Fixed batch sizes, first config.
    let (workers, threads) = (first_workers, first_threads);
    let mut sweep = Vec::new();
    for &bs in &args.batch_sizes {
        let work = Workload {
            seqs: &seqs,
            batches: fifo_batches(&seqs, bs),
            limits: base_limits,
        };
        let mut j = run_throughput(&model, &work, workers, threads, args.seconds)?;
        eprintln!(
            "batch size {bs}, workers {workers} x threads {threads}: {:.1} sentences/s",
            j["sentences_per_s"].as_f64().unwrap_or(0.0)
        );
        j["batch_size"] = json!(bs);
        sweep.push(j);
    }
    out["batch_size_sweep"] = Value::Array(sweep);

    let text = serde_json::to_string_pretty(&out)?;
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &text)?;
    }
    println!("{text}");
    Ok(())
}
