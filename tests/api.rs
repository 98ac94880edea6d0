//! The API against the real binary: values equal to the Python eager model, batch invariance,
//! concurrency, every route and its headers.

mod common;

use std::collections::HashSet;

use aft_serve::tokenize::{Input, TextTokenizer};
use base64::Engine;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn embeddings_equal_the_python_eager_model() {
    let server = Server::start(FAST).await;
    let texts = sample_texts();
    let reference = reference(&tiny(), &texts);

    // Raw (unnormalised) embeddings against the reference.
    let (status, body) = server
        .post("/v1/embed", &json!({"inputs": texts, "normalize": false}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "tiny-aft");
    assert_eq!(body["dimensions"], 32);
    let got: Vec<Vec<f32>> = body["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(as_vec)
        .collect();
    assert_eq!(got.len(), texts.len());
    for (i, (g, r)) in got.iter().zip(&reference.embeddings).enumerate() {
        let err = relative_error(g, r);
        assert!(
            err <= 1e-4,
            "text {i} differs from the eager model by {err:e}"
        );
    }
    // Usage counts the tokens the model saw (the long text truncated to 128).
    let tokens: usize = reference.token_counts.iter().sum();
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_eq!(body["usage"]["total_tokens"], tokens);
    assert_eq!(*reference.token_counts.last().unwrap(), 128);

    // Normalised by default (the manifest says normalize: true).
    let (status, body) = server.post("/v1/embed", &json!({"inputs": texts})).await;
    assert_eq!(status, 200);
    for (g, r) in body["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&reference.embeddings)
    {
        assert!(relative_error(&as_vec(g), &normalized(r)) <= 1e-4);
    }

    // `dimensions` keeps the leading components, then normalises.
    let (status, body) = server
        .post("/v1/embed", &json!({"inputs": texts[0], "dimensions": 8}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dimensions"], 8);
    let v = as_vec(&body["embeddings"][0]);
    assert!(relative_error(&v, &normalized(&reference.embeddings[0][..8])) <= 1e-4);

    // Over-long input with truncate=false: 422 naming the count and the limit.
    let long = texts.last().unwrap();
    let (status, body) = server
        .post(
            "/v1/embed",
            &json!({"inputs": ["ok", long], "truncate": false}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(assert_error_shape(&body), "input_too_long");
    let message = body["error"]["message"].as_str().unwrap();
    let full = TextTokenizer::from_file(&tiny().join("tokenizer.json"), 100_000, None).unwrap();
    let count = full
        .encode(0, &Input::Text(long.clone()), false)
        .unwrap()
        .len();
    assert!(
        message.contains(&format!("{count} tokens")) && message.contains("128"),
        "{message}"
    );
    assert_eq!(body["error"]["param"], "inputs[1]");

    // The OpenAI route gives the same vectors, as floats and as base64.
    let (status, body) = server
        .post(
            "/v1/embeddings",
            &json!({"input": texts, "model": "tiny-aft"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "tiny-aft");
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_openai_data_matches(&body, &reference.embeddings);
    let (status, body) = server
        .post(
            "/v1/embeddings",
            &json!({"input": texts[1], "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(relative_error(&decoded, &normalized(&reference.embeddings[1])) <= 1e-4);

    // Pre-tokenized input: the text's own token ids give the text's embedding.
    let tokenizer = TextTokenizer::from_file(&tiny().join("tokenizer.json"), 128, None).unwrap();
    let ids: Vec<Vec<u32>> = texts[..3]
        .iter()
        .map(|t| tokenizer.encode(0, &Input::Text(t.clone()), true).unwrap())
        .collect();
    let (status, body) = server.post("/v1/embeddings", &json!({"input": ids})).await;
    assert_eq!(status, 200, "{body}");
    assert_openai_data_matches(&body, &reference.embeddings[..3]);
    let (status, body) = server
        .post("/v1/embeddings", &json!({"input": ids[0]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
}

/// The `data` of an OpenAI embeddings answer: one `embedding` object per reference row, in order,
/// equal to the normalised reference.
fn assert_openai_data_matches(body: &Value, reference: &[Vec<f32>]) {
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), reference.len(), "{body}");
    for (i, (item, r)) in data.iter().zip(reference).enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        let err = relative_error(&as_vec(&item["embedding"]), &normalized(r));
        assert!(err <= 1e-4, "data[{i}] differs by {err:e}");
    }
}

#[tokio::test]
async fn a_text_embeds_the_same_alone_and_beside_much_longer_texts() {
    // FIFO batching, which pads a short text to the longest beside it: fair scheduling would
    // keep it out of a batch of texts more than twice its length, and padding is what this
    // test checks.
    let server = Server::start(&[
        "--scheduling",
        "fifo",
        "--max-batch-tokens",
        "2048",
        "--max-batch-size",
        "16",
        "--intra-op-threads",
        "1",
    ])
    .await;
    let short = "a kitten rested on the rug";
    let long = "a much longer text that fills the whole context window of the model ".repeat(12);
    let (status, alone) = server
        .post("/v1/embed", &json!({"inputs": short, "normalize": false}))
        .await;
    assert_eq!(status, 200);
    let alone = as_vec(&alone["embeddings"][0]);
    // First in the request, so it anchors a batch that the long texts then join: the short text
    // runs padded to 128 tokens beside them.
    let mut inputs = vec![short.to_string()];
    inputs.extend((0..7).map(|i| format!("{i} {long}")));
    let (status, body) = server
        .post("/v1/embed", &json!({"inputs": inputs, "normalize": false}))
        .await;
    assert_eq!(status, 200);
    let beside = as_vec(&body["embeddings"][0]);
    let d = max_abs_diff(&beside, &alone);
    assert!(
        d <= 1e-5,
        "the text beside long ones differs from the text alone by {d:e}"
    );
    // And it did share the batch: two batches in all (alone, then 8 x 128 padded tokens).
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"aft_batch_size_count{model="tiny-aft"}"#),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"aft_batch_size_bucket{model="tiny-aft",le="8"}"#
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"aft_batch_tokens_bucket{model="tiny-aft",le="512"}"#
        ),
        1.0,
        "{metrics}"
    );
    // The eager model agrees with both.
    let reference = reference(&tiny(), &[short.to_string()]);
    assert!(relative_error(&beside, &reference.embeddings[0]) <= 1e-4);
}

#[tokio::test]
async fn sixty_four_concurrent_clients_get_their_own_answers() {
    let server = Server::start(FAST).await;
    let texts: Vec<String> = (0..64)
        .map(|i| {
            format!(
                "client number {i} asks about {} things",
                "many ".repeat(i % 13)
            )
        })
        .collect();
    let reference = reference(&tiny(), &texts);
    let base = server.base.clone();
    let mut tasks = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let (text, url) = (text.clone(), format!("{base}/v1/embed"));
        tasks.push(tokio::spawn(async move {
            let id = format!("client-{i}");
            let r = reqwest::Client::new()
                .post(url)
                .header("x-request-id", &id)
                .json(&json!({"inputs": [text], "normalize": false}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["x-request-id"], id.as_str());
            let body: Value = r.json().await.unwrap();
            as_vec(&body["embeddings"][0])
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let got = task.await.unwrap();
        let err = relative_error(&got, &reference.embeddings[i]);
        assert!(
            err <= 1e-4,
            "client {i} got someone else's answer or a wrong one ({err:e})"
        );
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"aft_inputs_total{model="tiny-aft"}"#),
        64.0
    );
    assert_eq!(requests_total(&metrics, "/v1/embed", 200), 64.0);
}

#[tokio::test]
async fn routes_headers_and_metrics() {
    let server = Server::start(FAST).await;
    let client = reqwest::Client::new();

    for path in ["/health", "/health/ready"] {
        let (status, body) = server.get(path).await;
        assert_eq!((status, body), (200, json!({"status": "ready"})), "{path}");
    }
    assert_eq!(
        server.get("/health/live").await,
        (200, json!({"status": "ok"}))
    );

    let (status, models) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny-aft");
    assert_eq!(models["data"][0]["object"], "model");
    assert!(models["data"][0]["created"].as_u64().unwrap() > 1_700_000_000);

    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["model"], "tiny-aft");
    assert_eq!(info["device"], "cpu");
    assert_eq!(info["dimensions"], 32);
    assert_eq!(info["labels"], Value::Null);
    assert_eq!(info["limits"]["max_seq_len"], 128);
    assert_eq!(info["limits"]["max_batch_tokens"], 1024);
    assert_eq!(info["manifest"]["format_version"], 1);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/embed",
        "/v1/embeddings",
        "/v1/classify",
        "/v1/models",
        "/info",
        "/health/ready",
        "/metrics",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"].get("EmbedRequest").is_some());
    let docs = client.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(docs.text().await.unwrap().contains("swagger-ui"));

    // Request ids: echoed when sent, generated otherwise; timing headers in milliseconds.
    let r = client
        .post(server.url("/v1/embed"))
        .header("x-request-id", "my-id-123")
        .json(&json!({"inputs": ["one", "two"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "my-id-123");
    let ms = |name: &str| r.headers()[name].to_str().unwrap().parse::<f64>().unwrap();
    assert!(ms("x-total-time") > 0.0 && ms("x-inference-time") > 0.0);
    assert!(ms("x-queue-time") >= 0.0 && ms("x-total-time") >= ms("x-inference-time"));
    let mut ids = HashSet::new();
    for path in ["/health/live", "/nope", "/metrics"] {
        let r = client.get(server.url(path)).send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.len() >= 32, "{id}");
        assert!(ids.insert(id));
        for h in ["x-queue-time", "x-inference-time", "x-total-time"] {
            assert!(r.headers().contains_key(h), "{path} lacks {h}");
        }
    }

    // Unknown routes and wrong methods get the error shape.
    let (status, body) = server.get("/v2/whatever").await;
    assert_eq!(status, 404);
    assert_eq!(assert_error_shape(&body), "not_found");
    let r = client.get(server.url("/v1/embed")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        assert_error_shape(&r.json().await.unwrap()),
        "method_not_allowed"
    );
    let (status, body) = server.post("/health", &json!({})).await;
    assert_eq!(status, 405);
    assert_error_shape(&body);

    // Every family of the contract (src/metrics.json) is exported: its help, its type, and its
    // label names on its samples.
    let metrics = server.metrics().await;
    for family in aft_serve::metrics::families().unwrap() {
        if family.labels.iter().any(|l| l == "key") {
            // Per-key series exist only once an API key has queued work (tests/fairness.rs).
            continue;
        }
        let kind = serde_json::to_value(family.kind).unwrap();
        let kind = kind.as_str().unwrap();
        for line in [
            format!("# HELP {} {}", family.name, family.help),
            format!("# TYPE {} {kind}", family.name),
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "{line:?} missing:\n{metrics}"
            );
        }
        let mut expected = family.labels.clone();
        expected.sort();
        assert_eq!(
            sample_label_names(&metrics, &family.name),
            Some(expected),
            "labels of {}:\n{metrics}",
            family.name
        );
    }
    assert_eq!(
        metric_value(
            &metrics,
            r#"aft_model_info{device="cpu",model="tiny-aft",variant="local",version="0.1.0"}"#
        ),
        1.0
    );
    assert_eq!(requests_total(&metrics, "/v1/embed", 200), 1.0);
    assert_eq!(requests_total(&metrics, "unmatched", 404), 2.0);
    assert_eq!(requests_total(&metrics, "/v1/embed", 405), 1.0);
    assert_eq!(
        metric_value(&metrics, r#"aft_workers_alive{model="tiny-aft"}"#),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, r#"aft_inputs_total{model="tiny-aft"}"#),
        2.0
    );
    assert_eq!(
        metric_value(&metrics, r#"aft_queue_depth{model="tiny-aft"}"#),
        0.0
    );
    assert!(
        !metrics.contains("/v2/whatever"),
        "raw paths must not become labels"
    );
}

#[tokio::test]
async fn the_queue_time_header_and_metric_measure_the_same_wait() {
    let server = Server::start(FAST).await;
    let client = reqwest::Client::new();
    let (mut header_total_ms, mut inputs) = (0.0, 0);
    for texts in [vec!["one input"], vec!["two", "inputs"]] {
        let r = client
            .post(server.url("/v1/embed"))
            .json(&json!({ "inputs": texts }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let queue_ms: f64 = r.headers()["x-queue-time"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // A request's inputs are admitted together and run in one batch here, so each waited
        // what the header says.
        header_total_ms += queue_ms * texts.len() as f64;
        inputs += texts.len();
        let metrics = server.metrics().await;
        assert_eq!(
            metric_value(&metrics, r#"aft_batch_size_sum{model="tiny-aft"}"#),
            inputs as f64
        );
        assert_eq!(
            metric_value(
                &metrics,
                r#"aft_queue_duration_seconds_count{model="tiny-aft"}"#
            ),
            inputs as f64
        );
        let metric_total_ms = metric_value(
            &metrics,
            r#"aft_queue_duration_seconds_sum{model="tiny-aft"}"#,
        ) * 1000.0;
        // The header is rounded to the microsecond.
        assert!(
            (metric_total_ms - header_total_ms).abs() <= 0.0006 * inputs as f64,
            "metric {metric_total_ms} ms, headers {header_total_ms} ms"
        );
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"aft_batch_size_count{model="tiny-aft"}"#),
        2.0
    );
}

/// Sorted label names of the first sample of family `name` in a text exposition (a histogram's
/// `le` left out); `None` when the family has no sample.
fn sample_label_names(metrics: &str, name: &str) -> Option<Vec<String>> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = ["_bucket", "_sum", "_count", ""]
                .iter()
                .find_map(|suffix| rest.strip_prefix(suffix))
                .filter(|r| r.starts_with(['{', ' ']))?;
            let Some(labels) = rest.strip_prefix('{') else {
                return Some(Vec::new());
            };
            let labels = &labels[..labels.find('}')?];
            let mut names: Vec<String> = labels
                .split("\",")
                .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.to_owned()))
                .filter(|k| k != "le")
                .collect();
            names.sort();
            Some(names)
        })
}

#[tokio::test]
async fn classify_returns_softmax_top_k_and_needs_a_head() {
    // Without a head: a clear 400.
    let plain = Server::start(FAST).await;
    let (status, body) = plain
        .post("/v1/classify", &json!({"inputs": "a cat"}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_error_shape(&body), "no_classifier");
    drop(plain);

    let labels = [
        "noun.animal",
        "noun.artifact",
        "noun.food",
        "noun.person",
        "noun.plant",
    ];
    let bundle = tiny_with_head(&labels);
    let server = Server::start_bundle(&bundle, FAST).await;
    let texts = sample_texts();
    let reference = reference(&bundle, &texts);
    let (status, body) = server
        .post("/v1/classify", &json!({"inputs": texts, "top_k": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "tiny-head");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), texts.len());
    for (i, result) in results.iter().enumerate() {
        let logits = &reference.logits[i];
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = logits.iter().map(|l| f64::from(l - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        let mut expected: Vec<(usize, f64)> = exps.iter().map(|e| e / sum).enumerate().collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        let result = result.as_array().unwrap();
        assert_eq!(result.len(), 3);
        for (got, (label, p)) in result.iter().zip(&expected) {
            assert_eq!(got["label"], labels[*label], "text {i}");
            let score = got["score"].as_f64().unwrap();
            assert!(
                (score - p).abs() <= 1e-4 * p.max(1e-3),
                "text {i}: {score} vs {p}"
            );
        }
    }
    // top_k defaults to 1 and is capped at the number of labels.
    let (_, body) = server
        .post("/v1/classify", &json!({"inputs": "a cat"}))
        .await;
    assert_eq!(body["results"][0].as_array().unwrap().len(), 1);
    let (_, body) = server
        .post("/v1/classify", &json!({"inputs": ["a cat"], "top_k": 50}))
        .await;
    let all = body["results"][0].as_array().unwrap();
    assert_eq!(all.len(), labels.len());
    let total: f64 = all.iter().map(|s| s["score"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5);
    assert!(all
        .windows(2)
        .all(|w| w[0]["score"].as_f64() >= w[1]["score"].as_f64()));
    let (status, body) = server
        .post("/v1/classify", &json!({"inputs": "a cat", "top_k": 0}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(assert_error_shape(&body), "invalid_input");
    let (_, info) = server.get("/info").await;
    assert_eq!(info["labels"], json!(labels));
    let _ = std::fs::remove_dir_all(&bundle);
}

#[tokio::test]
async fn an_inference_failure_answers_500_and_the_service_keeps_serving() {
    let bundle = faulty_bundle();
    let server = Server::start_bundle(&bundle, FAST).await;
    // Token id 1000 makes this model raise inside forward().
    let (status, body) = server
        .post("/v1/embeddings", &json!({"input": [[101, 1000, 102]]}))
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(assert_error_shape(&body), "inference_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "{body}"
    );
    // A request sharing nothing with the failing batch is fine, and the worker was not restarted.
    let (status, _) = server
        .post("/v1/embeddings", &json!({"input": [[101, 2000, 102]]}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post("/v1/embed", &json!({"inputs": "still serving"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.get("/health/ready").await.0, 200);
    let metrics = server.metrics().await;
    assert_eq!(requests_total(&metrics, "/v1/embeddings", 500), 1.0);
    assert_eq!(
        metric_value(&metrics, r#"aft_worker_restarts_total{model="faulty"}"#),
        0.0
    );
    let _ = std::fs::remove_dir_all(&bundle);
}

/// The tiny model wrapped in a TorchScript module that raises when it sees token id 1000.
fn faulty_bundle() -> std::path::PathBuf {
    let out = tempdir("faulty");
    let code = r#"
import hashlib, json, shutil, sys
from pathlib import Path
import torch
src, out = Path(sys.argv[1]), Path(sys.argv[2])
class Faulty(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
    def forward(self, input_ids, attention_mask):
        if bool((input_ids == 1000).any()):
            raise RuntimeError("injected failure")
        return self.inner(input_ids, attention_mask)
torch.jit.script(Faulty(torch.jit.load(str(src / "model.pt")))).save(str(out / "model.pt"))
shutil.copy(src / "tokenizer.json", out / "tokenizer.json")
m = json.loads((src / "manifest.json").read_text())
data = (out / "model.pt").read_bytes()
m["files"]["model.pt"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
m["name"] = "faulty"
m["methods"] = []  # the wrapper exports forward only (no embed_spans)
(out / "manifest.json").write_text(json.dumps(m))
"#;
    run_python(code, &[tiny().to_str().unwrap(), out.to_str().unwrap()]);
    out
}
