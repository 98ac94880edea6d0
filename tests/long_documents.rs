//! Long documents end to end, with a real tiny AFT-decay bundle (built by `aft.fixtures`,
//! exported for 65,536 tokens): one-pass embedding of a long input against the eager model, late
//! chunking (spans, vectors against an independent eager computation, context), its errors, the
//! token limits (413/422/429), and the long-input lane that keeps short requests moving.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};

/// Words the MiniLM tokenizer keeps as one token each (checked by
/// `the_test_words_are_one_token_each`), two of them with non-ASCII letters, so character and byte
/// offsets differ.
const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "mat", "café", "dog", "river", "mountain", "green", "city", "ran",
    "quickly", "music", "book", "über", "house", "water", "light", "stone",
];

/// A text of `n` words (one token each) in a varied but deterministic order.
fn words(n: usize, seed: u64) -> String {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            WORDS[((state >> 33) % WORDS.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The tiny AFT-decay bundle, exported once per test binary.
fn decay_bundle() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = tempdir("tiny-decay");
        run_python(
            "import sys\nfrom aft.fixtures import write_tiny_decay\nwrite_tiny_decay(sys.argv[1])\n",
            &[out.to_str().unwrap()],
        );
        out
    })
    .clone()
}

async fn start(args: &[&str]) -> Server {
    // Long inputs on a busy 2-CPU machine take seconds: no test should meet the 30 s default.
    let mut all = vec!["--intra-op-threads", "1", "--request-timeout", "300s"];
    all.extend_from_slice(args);
    Server::start_bundle(&decay_bundle(), &all).await
}

/// Characters `[start, end)` of `text` (code points, as the API counts them).
fn slice(text: &str, start: usize, end: usize) -> String {
    text.chars().skip(start).take(end - start).collect()
}

const MODEL: &str = "tiny-decay";

fn metric(name: &str) -> String {
    format!(r#"{name}{{model="{MODEL}"}}"#)
}

#[tokio::test]
async fn the_test_words_are_one_token_each() {
    let server = start(&[]).await;
    let (status, body) = server.post("/v1/embed", &json!({ "inputs": WORDS })).await;
    assert_eq!(status, 200, "{body}");
    // [CLS] word [SEP] per input.
    assert_eq!(body["usage"]["prompt_tokens"], 3 * WORDS.len(), "{body}");
}

#[tokio::test]
async fn a_long_input_runs_whole_in_one_pass_on_the_long_lane_and_matches_the_eager_model() {
    let server = start(&["--max-batch-tokens", "1024"]).await;
    let text = words(6000, 1);
    let (status, body) = server
        .post(
            "/v1/embed",
            &json!({ "inputs": [text.clone()], "truncate": false }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 6002);
    let served = as_vec(&body["embeddings"][0]);

    let reference = reference(&decay_bundle(), std::slice::from_ref(&text));
    assert_eq!(reference.token_counts, vec![6002]);
    let err = relative_error(&served, &normalized(&reference.embeddings[0]));
    assert!(err < 1e-4, "relative error {err} against the eager model");

    // It ran on the long lane, as one input of 6,002 tokens in one forward pass.
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, &metric("aft_long_input_tokens_count")),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, &metric("aft_long_input_tokens_sum")),
        6002.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            &metric("aft_long_inference_duration_seconds_count")
        ),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, &metric("aft_long_inputs_running")),
        0.0
    );
    let (_, info) = server.get("/info").await;
    assert_eq!(info["limits"]["max_seq_len"], 65536);
    assert_eq!(info["limits"]["max_input_tokens"], 65536);
    assert_eq!(info["limits"]["long_input_tokens"], 1024);
    assert_eq!(info["late_chunking"], true);
}

/// The chunk vectors as the eager model computes them, independently of the service: tokenize
/// with the Python tokenizer, find each chunk's tokens from its character span, mean of the
/// final token states over them, output projection, L2 normalisation.
fn eager_chunks(text: &str, chunks: &[Value]) -> Vec<Vec<f32>> {
    let code = r#"
import json, sys
import torch
import torch.nn.functional as F
from aft.bundle import load_eager, load_tokenizer
bundle, text, spans = sys.argv[1], open(sys.argv[2]).read(), json.loads(sys.argv[3])
model, tok = load_eager(bundle), load_tokenizer(bundle)
enc = tok.encode(text)
ids = torch.tensor([enc.ids])
out = []
with torch.no_grad():
    states = model.token_states(ids, torch.ones_like(ids))[0]
    for start, end, count in spans:
        inside = [i for i, (o, s) in enumerate(zip(enc.offsets, enc.special_tokens_mask))
                  if not s and o[0] >= start and o[1] <= end]
        assert len(inside) == count and inside == list(range(inside[0], inside[-1] + 1))
        v = model.proj(states[inside[0]:inside[-1] + 1].mean(0))
        out.append(F.normalize(v, dim=-1).tolist())
print(json.dumps(out))
"#;
    let dir = tempdir("chunks");
    let text_file = dir.join("text.txt");
    std::fs::write(&text_file, text).unwrap();
    let spans: Vec<[u64; 3]> = chunks
        .iter()
        .map(|c| {
            [
                c["start"].as_u64().unwrap(),
                c["end"].as_u64().unwrap(),
                c["tokens"].as_u64().unwrap(),
            ]
        })
        .collect();
    let out = run_python(
        code,
        &[
            decay_bundle().to_str().unwrap(),
            text_file.to_str().unwrap(),
            &serde_json::to_string(&spans).unwrap(),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let rows: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
    rows.iter().map(as_vec).collect()
}

#[tokio::test]
async fn late_chunking_spans_cover_the_text_and_chunks_carry_the_documents_context() {
    let server = start(&["--max-batch-tokens", "1024"]).await;
    let text = words(1500, 2);
    let (status, body) = server
        .post(
            "/v1/embed",
            &json!({ "inputs": [text.clone(), "a short second input"],
                     "chunking": {"tokens": 128, "overlap": 16} }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let chunks = body["chunks"][0].as_array().unwrap().clone();
    // 1,500 text tokens in windows of 128 every 112: starts 0, 112, ..., 1456 (14 chunks), the
    // last one 44 tokens long.
    assert_eq!(chunks.len(), 14, "{body}");
    let text_chars = text.chars().count();
    assert_ne!(
        text_chars,
        text.len(),
        "the text must hold multi-byte characters"
    );
    assert_eq!(chunks[0]["start"], 0);
    assert_eq!(
        chunks[13]["end"], text_chars,
        "spans count characters, not bytes"
    );
    let mut previous_start = None;
    for (i, chunk) in chunks.iter().enumerate() {
        let (start, end) = (
            chunk["start"].as_u64().unwrap() as usize,
            chunk["end"].as_u64().unwrap() as usize,
        );
        let tokens = chunk["tokens"].as_u64().unwrap();
        assert_eq!(tokens, if i < 13 { 128 } else { 1500 - 1456 }, "chunk {i}");
        assert!(previous_start.is_none_or(|p| p < start) && start < end && end <= text_chars);
        previous_start = Some(start);
        // The span is exactly the chunk's words: alone, they are its tokens again.
        let piece = slice(&text, start, end);
        assert!(
            !piece.starts_with(' ') && !piece.ends_with(' '),
            "{piece:?}"
        );
        let (status, alone) = server
            .post(
                "/v1/embed",
                &json!({ "inputs": [piece], "truncate": false }),
            )
            .await;
        assert_eq!(status, 200, "{alone}");
        assert_eq!(alone["usage"]["prompt_tokens"], tokens + 2, "chunk {i}");
        // Pooled from the whole document's pass, the chunk knows its context: it differs from
        // the same words embedded alone.
        let err = relative_error(
            &as_vec(&chunk["embedding"]),
            &as_vec(&alone["embeddings"][0]),
        );
        assert!(
            err > 1e-2,
            "chunk {i} equals its text embedded alone ({err})"
        );
    }
    // Overlapping chunks share their overlap's characters.
    assert!(chunks[1]["start"].as_u64() < chunks[0]["end"].as_u64());

    // Each chunk vector is the eager model's mean of the chunk's token states, projected.
    for (i, (served, eager)) in chunks.iter().zip(eager_chunks(&text, &chunks)).enumerate() {
        let err = relative_error(&as_vec(&served["embedding"]), &eager);
        assert!(err < 1e-4, "chunk {i}: relative error {err}");
    }

    // The document vector is the one a request without chunking gets.
    let (_, plain) = server
        .post("/v1/embed", &json!({ "inputs": [text.clone()] }))
        .await;
    let err = relative_error(
        &as_vec(&body["embeddings"][0]),
        &as_vec(&plain["embeddings"][0]),
    );
    assert!(err < 1e-5, "document vector differs with chunking ({err})");
    assert!(plain.get("chunks").is_none(), "{plain}");
    // A short input is one chunk over all its words.
    let short = body["chunks"][1].as_array().unwrap();
    assert_eq!(short.len(), 1);
    assert_eq!(
        (&short[0]["start"], &short[0]["end"]),
        (&json!(0), &json!(20))
    );

    // `dimensions` cuts and renormalises chunk vectors as it does document vectors.
    let (status, cut) = server
        .post(
            "/v1/embed",
            &json!({ "inputs": ["a short input"], "dimensions": 8,
                     "chunking": {"tokens": 2} }),
        )
        .await;
    assert_eq!(status, 200, "{cut}");
    for chunk in cut["chunks"][0].as_array().unwrap() {
        let v = as_vec(&chunk["embedding"]);
        assert_eq!(v.len(), 8);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[tokio::test]
async fn chunking_errors_name_the_parameter_and_the_reason() {
    let server = start(&["--max-chunks", "10"]).await;
    let cases = [
        (
            json!({"tokens": 0}),
            422,
            "invalid_input",
            "chunking.tokens",
        ),
        (
            json!({"tokens": 8, "overlap": 8}),
            422,
            "invalid_input",
            "chunking.overlap",
        ),
        (json!({"tokens": 1}), 413, "too_many_chunks", "chunking"),
    ];
    for (chunking, status, code, param) in cases {
        let (got, body) = server
            .post(
                "/v1/embed",
                &json!({ "inputs": [words(20, 3)], "chunking": chunking }),
            )
            .await;
        assert_eq!(got, status, "{chunking}: {body}");
        assert_eq!(assert_error_shape(&body), code, "{body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    for bad in [
        json!({"overlap": 2}),
        json!({"tokens": 4, "stride": 2}),
        json!({"tokens": -1}),
    ] {
        let (got, body) = server
            .post("/v1/embed", &json!({ "inputs": ["x y"], "chunking": bad }))
            .await;
        assert_eq!(got, 422, "{bad}: {body}");
        assert_eq!(assert_error_shape(&body), "invalid_input");
    }

    // A bundle exported before embed_spans existed (a copy of tiny-aft whose manifest lists no
    // methods) still serves everything else, and says why it cannot chunk.
    let dir = tempdir("no-methods");
    for file in ["model.pt", "tokenizer.json"] {
        std::fs::copy(tiny().join(file), dir.join(file)).unwrap();
    }
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny().join("manifest.json")).unwrap()).unwrap();
    manifest["methods"] = json!([]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let old = Server::start_bundle(&dir, FAST).await;
    let (status, body) = old
        .post(
            "/v1/embed",
            &json!({ "inputs": ["a b c"], "chunking": {"tokens": 2} }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_error_shape(&body), "chunking_unsupported");
    assert_eq!(body["error"]["param"], "chunking");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("embed_spans"));
    let (status, _) = old.post("/v1/embed", &json!({ "inputs": ["a b c"] })).await;
    assert_eq!(status, 200);
    let (_, info) = old.get("/info").await;
    assert_eq!(info["late_chunking"], false);
}

#[tokio::test]
async fn inputs_past_the_limits_get_422_and_requests_past_the_queue_get_413() {
    let server = start(&["--max-input-tokens", "4000", "--max-queued-tokens", "10000"]).await;
    let (status, body) = server
        .post(
            "/v1/embed",
            &json!({ "inputs": [words(5000, 4)], "truncate": false }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(assert_error_shape(&body), "input_too_long");
    assert_eq!(body["error"]["param"], "inputs[0]");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("4000"),
        "{body}"
    );
    // Truncated at the server's limit, not the model's.
    let (status, body) = server
        .post("/v1/embed", &json!({ "inputs": [words(5000, 4)] }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 4000);
    // Three inputs of 3,502 tokens can never be queued at once under 10,000.
    let inputs = vec![words(3500, 5); 3];
    let (status, body) = server.post("/v1/embed", &json!({ "inputs": inputs })).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(assert_error_shape(&body), "too_many_tokens");
    assert_eq!(body["error"]["param"], "inputs");
    let (_, info) = server.get("/info").await;
    assert_eq!(info["limits"]["max_input_tokens"], 4000);
    assert_eq!(info["limits"]["max_queued_tokens"], 10000);
}

#[tokio::test]
async fn queued_tokens_are_bounded_with_429_and_retry_after() {
    // A batch of one 1,002-token input is not full (2 x 1,002 fits 4,096 tokens), so with a
    // 60 s --max-wait-us it waits in the queue for company: 1,002 tokens stay queued,
    // deterministically, until a second input comes.
    let server = start(&[
        "--max-batch-tokens",
        "4096",
        "--max-batch-size",
        "2",
        "--max-wait-us",
        "60000000",
        "--max-queued-tokens",
        "3000",
    ])
    .await;
    let waiting = spawn_embed(&server, json!({ "inputs": [words(1000, 6)] }));
    server
        .wait_for_metric(&metric("aft_queue_depth"), |v| v == 1.0)
        .await;
    // 1,002 queued + 2,102 > 3,000: refused at once, while the first still waits.
    let (status, headers, body) = spawn_embed(&server, json!({ "inputs": [words(2100, 7)] }))
        .await
        .unwrap();
    assert_eq!(status, 429, "{body}");
    assert_eq!(assert_error_shape(&body), "queue_full");
    let retry_after = header(&headers, "retry-after").expect("Retry-After");
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    assert!(!waiting.is_finished());
    // 1,002 + 1,502 fits: it fills the waiting input's batch (2 inputs) and both run at once.
    let (status, _, body) = spawn_embed(&server, json!({ "inputs": [words(1500, 8)] }))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn short_requests_are_served_while_a_long_document_runs_on_its_own_lane() {
    let server = start(&["--max-batch-tokens", "1024"]).await;
    let long = spawn_embed(&server, json!({ "inputs": [words(20000, 9)] }));
    server
        .wait_for_metric(&metric("aft_long_inputs_running"), |v| v == 1.0)
        .await;
    for i in 0..3 {
        let (status, body) = server
            .post(
                "/v1/embed",
                &json!({ "inputs": [format!("short request {i}")] }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // All three were answered while the long document was still in its forward pass.
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, &metric("aft_long_inputs_running")),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, &metric("aft_long_input_tokens_count")),
        0.0
    );
    assert!(!long.is_finished());
    let (status, _, body) = long.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 20002);
}

#[tokio::test]
async fn without_a_long_lane_a_short_request_waits_for_the_long_document() {
    // The contrast: --long-workers 0 puts long inputs on the one worker short ones use.
    let server = start(&["--max-batch-tokens", "1024", "--long-workers", "0"]).await;
    let (_, info) = server.get("/info").await;
    assert_eq!(info["limits"]["long_input_tokens"], Value::Null);
    let long = spawn_embed(&server, json!({ "inputs": [words(20000, 9)] }));
    // The long input has left the queue for the worker.
    server
        .wait_for_metric(&metric("aft_batch_size_count"), |v| v >= 1.0)
        .await;
    let short = spawn_embed(&server, json!({ "inputs": ["short request"] }));
    let (status, headers, _) = short.await.unwrap();
    assert_eq!(status, 200);
    let short_queue_ms = millis(&headers, "x-queue-time");
    let (status, headers, _) = long.await.unwrap();
    assert_eq!(status, 200);
    let long_inference_ms = millis(&headers, "x-inference-time");
    // Sent just after the long forward pass began, the short request waited for most of it
    // (half is a wide margin for the milliseconds between the two).
    assert!(
        short_queue_ms >= long_inference_ms / 2.0,
        "the short request waited {short_queue_ms} ms, the long pass took {long_inference_ms} ms"
    );
}

/// A timing header (`x-queue-time`, `x-inference-time`), in milliseconds.
fn millis(headers: &reqwest::header::HeaderMap, name: &str) -> f64 {
    header(headers, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// (thread name, scheduling policy, nice) of every thread of process `pid` (/proc).
fn thread_scheduling(pid: u32) -> Vec<(String, u32, i32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            // "tid (name) state ...": fields counted from 1; `nice` is 19th, `policy` 41st.
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some((
                name,
                fields.get(38)?.parse().ok()?,
                fields.get(16)?.parse().ok()?,
            ))
        })
        .collect()
}

const SCHED_IDLE: u32 = 5;

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_long_document_takes_every_cpu_at_background_priority_and_short_work_keeps_its_own() {
    // --intra-op-threads 0: the short worker gets every CPU, and so does the long lane, whose
    // threads run at background priority (SCHED_IDLE, or nice 19 where that is refused), so a
    // short pass takes the cores from a long one the moment it needs them. Both replicas load
    // at once, and libtorch once gave a thread the count that the other had set last: the log
    // reports the count each thread really has.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let args = [
        "--long-input-tokens",
        "1024",
        "--max-batch-tokens",
        "1024",
        "--request-timeout",
        "300s",
    ];
    let server = Server::start_bundle(&decay_bundle(), &args).await;
    let logs = server.log_text();
    let replica = |warm_up: &str| -> (usize, String) {
        let line = logs
            .lines()
            .find(|l| l.contains("model replica loaded") && l.contains(warm_up))
            .unwrap_or_else(|| panic!("no replica log line with {warm_up}:\n{logs}"));
        let value = |key: &str| {
            let rest = line.split(&format!("{key}=")).nth(1)?;
            let value = match rest.strip_prefix('"') {
                Some(quoted) => quoted.split('"').next(),
                None => rest.split_whitespace().next(),
            };
            value.map(str::to_string)
        };
        let threads = value("intra_op_threads").and_then(|n| n.parse().ok());
        (
            threads.expect("intra_op_threads"),
            value("priority").expect("priority"),
        )
    };
    // Short lane: batches of 1,024 tokens; long lane: one input of 2 x 1,024 tokens.
    let (short_threads, short_priority) = replica("warm_up=1x1024");
    let (long_threads, long_priority) = replica("warm_up=1x2048");
    assert_eq!((short_threads, short_priority.as_str()), (cpus, "normal"));
    assert_eq!(long_threads, cpus, "the long lane has every CPU");
    assert!(
        ["SCHED_IDLE", "nice 19"].contains(&long_priority.as_str()),
        "{long_priority}"
    );

    let long = spawn_embed(&server, json!({ "inputs": [words(20000, 9)] }));
    server
        .wait_for_metric(&metric("aft_long_inputs_running"), |v| v == 1.0)
        .await;
    let background = |&(_, policy, nice): &(String, u32, i32)| policy == SCHED_IDLE || nice == 19;
    let threads = thread_scheduling(server.pid());
    let named = |prefix: &'static str| threads.iter().filter(move |t| t.0.starts_with(prefix));
    assert!(named("aft-long-worke").all(background), "{threads:?}");
    assert!(!named("aft-worker").any(background), "{threads:?}");
    // The long worker and its OpenMP threads (which are named after the thread that started them).
    let in_background = threads.iter().filter(|t| background(t)).count();
    assert!(
        in_background >= cpus,
        "{in_background} < {cpus}: {threads:?}"
    );

    // Short-lane, but not a small pass (those run on one thread whatever the lane's count).
    let short = words(300, 4);
    let (status, _, body) = spawn_embed(&server, json!({ "inputs": [short] }))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = long.await.unwrap();
    assert_eq!(status, 200, "{body}");
}
