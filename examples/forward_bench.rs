//! In-process limit of a model bundle's forward pass, through tch, with no HTTP and no queue.
//!
//! It tokenizes a corpus (JSON lines with a "text" field) with the bundle's tokenizer, forms
//! batches the way the service's batcher does at saturation (a queue of --queue-depths inputs
//! drawn in corpus order, batches chosen by the same rule as src/core/batcher.rs within
//! --max-batch-size sequences and --max-batch-tokens padded tokens), and runs them through `model.pt` cast to float32 under no_grad, on --workers threads
//! that each own a replica and use --intra-op-threads libtorch threads. It reports sentences/s
//! and (real, unpadded) tokens/s for every workers x threads pair asked for, a fixed-batch-size
//! sweep, the bare forward latency of one short sentence (batch 1), tokenization throughput, and
//! the machine's f32 matrix-multiply GFLOP/s.
//!
//! ```sh
//! source scripts/env.sh
//! cargo run --release --example forward_bench -- --model-dir models/aft-mini \
//!     --corpus bench/corpus/texts.jsonl --json bench/results/limit.json
//! ```

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use tch::{CModule, Device, IValue, Kind, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

#[derive(Parser, Debug)]
#[command(about = "In-process forward-pass throughput and latency of an AFT bundle (tch)")]
struct Args {
    /// Model bundle directory (manifest.json, model.pt, tokenizer.json).
    #[arg(long)]
    model_dir: PathBuf,
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

struct Bundle {
    dir: PathBuf,
    manifest: Value,
    pad_id: i64,
}

impl Bundle {
    fn open(dir: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(dir.join("manifest.json"))
            .with_context(|| format!("reading {}/manifest.json", dir.display()))?;
        let manifest: Value = serde_json::from_str(&text)?;
        let pad_id = manifest["pad_token_id"].as_i64().unwrap_or(0);
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            pad_id,
        })
    }

    fn max_seq_len(&self) -> usize {
        self.manifest["max_seq_len"].as_u64().unwrap_or(512) as usize
    }

    fn load_model(&self) -> Result<CModule> {
        let mut m = CModule::load(self.dir.join("model.pt"))?;
        m.to(Device::Cpu, Kind::Float, false);
        m.set_eval();
        Ok(m)
    }

    fn tokenizer(&self) -> Result<Tokenizer> {
        let mut tok = Tokenizer::from_file(self.dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("tokenizer.json: {e}"))?;
        tok.with_truncation(Some(TruncationParams {
            max_length: self.max_seq_len(),
            ..Default::default()
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        tok.with_padding(None);
        Ok(tok)
    }
}

/// Right-padded (ids, mask) tensors for a batch of sequences.
fn batch_tensors(seqs: &[&[i64]], pad: i64) -> (Tensor, Tensor) {
    let b = seqs.len();
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
    let mut ids = vec![pad; b * t];
    let mut mask = vec![0i64; b * t];
    for (i, s) in seqs.iter().enumerate() {
        ids[i * t..i * t + s.len()].copy_from_slice(s);
        mask[i * t..i * t + s.len()].fill(1);
    }
    let shape = [b as i64, t as i64];
    (
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape),
    )
}

fn forward(model: &CModule, seqs: &[&[i64]], pad: i64) -> Result<()> {
    let (ids, mask) = batch_tensors(seqs, pad);
    let out = model.forward_is(&[IValue::Tensor(ids), IValue::Tensor(mask)])?;
    match out {
        IValue::Tuple(v) if !v.is_empty() => Ok(()),
        other => bail!("model returned {other:?}, expected a tuple"),
    }
}

/// Greedy first-come batches over the sequences in order (fixed-batch-size sweep).
fn fifo_batches(seqs: &[Vec<i64>], max_size: usize) -> Vec<Vec<usize>> {
    (0..seqs.len())
        .collect::<Vec<_>>()
        .chunks(max_size)
        .map(|c| c.to_vec())
        .collect()
}

/// The service's batch choice (mirrors `select_batch` in src/core/batcher.rs): the oldest
/// waiting input always goes; the others join in order of how close their length is to it,
/// while the batch stays within both limits and at most half of it is padding.
fn select_batch(lengths: &[usize], max_tokens: usize, max_size: usize) -> Vec<usize> {
    let Some(&anchor) = lengths.first() else {
        return Vec::new();
    };
    let mut candidates: Vec<usize> = (1..lengths.len()).collect();
    candidates.sort_by_key(|&i| (lengths[i].abs_diff(anchor), i));
    let mut indices = vec![0];
    let (mut longest, mut real) = (anchor, anchor);
    for i in candidates {
        if indices.len() >= max_size {
            break;
        }
        let len = lengths[i];
        let padded = (indices.len() + 1) * longest.max(len);
        if padded > max_tokens || padded > 2 * (real + len) {
            continue;
        }
        indices.push(i);
        longest = longest.max(len);
        real += len;
    }
    indices.sort_unstable();
    indices
}

/// Batches as the service forms them at saturation under a closed loop of `depth` clients: the
/// queue holds `depth` inputs drawn in corpus order (cycling), each batch leaves by the
/// service's rule, and as many new inputs arrive as left. Covers the corpus `rounds` times.
fn service_batches(
    seqs: &[Vec<i64>],
    max_size: usize,
    max_tokens: usize,
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
        let chosen = select_batch(&lengths, max_tokens, max_size);
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

/// Runs `batches` round-robin over `workers` threads (each with its own replica and `threads`
/// intra-op threads) for about `seconds`, after one warm-up pass over the first batches.
fn run_throughput(
    bundle: &Bundle,
    seqs: &[Vec<i64>],
    batches: &[Vec<usize>],
    workers: usize,
    threads: i32,
    seconds: f64,
) -> Result<Throughput> {
    let models: Vec<CModule> = (0..workers)
        .map(|_| bundle.load_model())
        .collect::<Result<_>>()?;
    let pad = bundle.pad_id;
    let barrier = std::sync::Barrier::new(workers);
    let deadline_holder = std::sync::OnceLock::<Instant>::new();
    let results: Vec<Result<WorkerStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = models
            .iter()
            .enumerate()
            .map(|(w, model)| {
                let barrier = &barrier;
                let deadline_holder = &deadline_holder;
                s.spawn(move || -> Result<WorkerStats> {
                    tch::set_num_threads(threads);
                    let _guard = tch::no_grad_guard();
                    for b in batches.iter().skip(w).step_by(workers).take(3) {
                        let refs: Vec<&[i64]> = b.iter().map(|&i| seqs[i].as_slice()).collect();
                        forward(model, &refs, pad)?;
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let deadline =
                        *deadline_holder.get_or_init(|| start + Duration::from_secs_f64(seconds));
                    let (mut n, mut tok, mut padded, mut nb) = (0, 0, 0, 0);
                    let mut k = w;
                    loop {
                        let b = &batches[k % batches.len()];
                        let refs: Vec<&[i64]> = b.iter().map(|&i| seqs[i].as_slice()).collect();
                        forward(model, &refs, pad)?;
                        n += refs.len();
                        tok += refs.iter().map(|r| r.len()).sum::<usize>();
                        padded += refs.len() * refs.iter().map(|r| r.len()).max().unwrap_or(0);
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
            .map(|h| h.join().expect("worker panicked"))
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
    Ok(t)
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

fn parse_config(s: &str) -> Result<(usize, i32)> {
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
    bundle: &Bundle,
    tokenizer: &Tokenizer,
    texts: &[String],
    seqs: &[Vec<i64>],
    short: &[usize],
    threads: i32,
) -> Result<Value> {
    tch::set_num_threads(threads);
    let _guard = tch::no_grad_guard();
    let model = bundle.load_model()?;
    let mut fwd = Vec::new();
    let mut full = Vec::new();
    for round in 0..6 {
        for &i in short {
            let t0 = Instant::now();
            forward(&model, &[seqs[i].as_slice()], bundle.pad_id)?;
            let dt = t0.elapsed().as_secs_f64() * 1e3;
            let t1 = Instant::now();
            let enc = tokenizer
                .encode(texts[i].as_str(), true)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let ids: Vec<i64> = enc.get_ids().iter().map(|&x| x as i64).collect();
            forward(&model, &[ids.as_slice()], bundle.pad_id)?;
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
    let bundle = Bundle::open(&args.model_dir)?;
    let tokenizer = bundle.tokenizer()?;

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
    let mut seqs: Vec<Vec<i64>> = Vec::with_capacity(texts.len());
    for t in &texts {
        let enc = tokenizer
            .encode(t.as_str(), true)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        seqs.push(enc.get_ids().iter().map(|&i| i as i64).collect());
    }
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
        "model_name": bundle.manifest["name"],
        "manifest_model": bundle.manifest["model"],
        "max_seq_len": bundle.max_seq_len(),
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

    let configs: Vec<(usize, i32)> = args
        .configs
        .iter()
        .map(|s| parse_config(s))
        .collect::<Result<_>>()?;

    // Bare forward latency, batch 1, for each thread count in the configs: 200 of the corpus'
    // "short" texts (the load tests' short bodies), or the 200 shortest without buckets.
    let mut short: Vec<usize> = (0..seqs.len()).filter(|&i| buckets[i] == "short").collect();
    if short.is_empty() {
        short = (0..seqs.len()).collect();
        short.sort_by_key(|&i| seqs[i].len());
    }
    short.truncate(200);
    let mut thread_counts: Vec<i32> = configs.iter().map(|c| c.1).collect();
    thread_counts.dedup();
    let mut by_threads = serde_json::Map::new();
    for (n, &threads) in thread_counts.iter().enumerate() {
        if thread_counts[..n].contains(&threads) {
            continue;
        }
        let r = single_latency(&bundle, &tokenizer, &texts, &seqs, &short, threads)?;
        if n == 0 {
            out["single_short"] = r.clone();
        }
        by_threads.insert(threads.to_string(), r);
    }
    out["single_short_by_threads"] = Value::Object(by_threads);

    // Service batch shapes: every config x every max-batch-tokens at the first queue depth;
    // the first config at the other depths.
    let mut points: Vec<(usize, usize, usize, i32)> = Vec::new();
    let depth0 = args.queue_depths.first().copied().unwrap_or(256);
    for &mbt in &args.max_batch_tokens {
        for &(w, t) in &configs {
            points.push((depth0, mbt, w, t));
        }
    }
    for &d in args.queue_depths.iter().skip(1) {
        points.push((d, args.max_batch_tokens[0], configs[0].0, configs[0].1));
    }
    let mut service = Vec::new();
    for (depth, mbt, workers, threads) in points {
        let batches = service_batches(&seqs, args.max_batch_size, mbt, depth, 3);
        {
            let t = run_throughput(&bundle, &seqs, &batches, workers, threads, args.seconds)?;
            let mut j = throughput_json(&t);
            eprintln!(
                "service shapes, depth {depth}, workers {workers} x threads {threads}, \
                 max-batch-tokens {mbt}: {:.1} sentences/s, {:.0} tokens/s, mean batch {:.1}",
                j["sentences_per_s"].as_f64().unwrap_or(0.0),
                j["tokens_per_s"].as_f64().unwrap_or(0.0),
                j["mean_batch_size"].as_f64().unwrap_or(0.0)
            );
            j["workers"] = json!(workers);
            j["intra_op_threads"] = json!(threads);
            j["max_batch_tokens"] = json!(mbt);
            j["queue_depth"] = json!(depth);
            service.push(j);
        }
    }
    out["service_shapes"] = Value::Array(service);

    // Fixed batch sizes, first config.
    let (workers, threads) = configs[0];
    let mut sweep = Vec::new();
    for &bs in &args.batch_sizes {
        let batches = fifo_batches(&seqs, bs);
        let t = run_throughput(&bundle, &seqs, &batches, workers, threads, args.seconds)?;
        let mut j = throughput_json(&t);
        eprintln!(
            "batch size {bs}, workers {workers} x threads {threads}: {:.1} sentences/s",
            j["sentences_per_s"].as_f64().unwrap_or(0.0)
        );
        j["batch_size"] = json!(bs);
        j["workers"] = json!(workers);
        j["intra_op_threads"] = json!(threads);
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
