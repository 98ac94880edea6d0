//! Fair scheduling against the real binary: a short request is served while a heavy one runs
//! (and is not under `--scheduling fifo`), `priority`, and the per-key queue limit.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// One forward pass per input, so a heavy request is many batches.
const ONE_PER_BATCH: &[&str] = &[
    "--max-batch-size",
    "1",
    "--max-batch-tokens",
    "128",
    "--intra-op-threads",
    "1",
];

/// 512 pre-tokenized inputs of 128 tokens (no tokenization time: the work is all inference).
fn heavy_body() -> Value {
    let input: Vec<Vec<u32>> = (0..512)
        .map(|i| (0..128).map(|t| 1000 + (i * 7 + t) % 5000).collect())
        .collect();
    json!({ "input": input })
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
    done: Instant,
}

/// POSTs `body` to `base` + `path` (a base URL, so spawned tasks can call it too).
async fn post(base: &str, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        done: Instant::now(),
    }
}

fn millis(headers: &HeaderMap, name: &str) -> f64 {
    headers[name].to_str().unwrap().parse().unwrap()
}

/// A metric's value, if the series exists yet.
fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
}

/// Waits until the server reports `name` above 0.
async fn until_positive(server: &Server, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server.metrics().await, name).unwrap_or(0.0) <= 0.0 {
        assert!(Instant::now() < deadline, "{name} never rose");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Starts the heavy request (512 x 128 tokens) as `headers` says.
fn spawn_heavy(
    server: &Server,
    headers: &'static [(&'static str, &'static str)],
) -> tokio::task::JoinHandle<Answer> {
    let base = server.base.clone();
    tokio::spawn(async move { post(&base, "/v1/embeddings", heavy_body(), headers).await })
}

/// Sends the heavy request, then (once its inputs wait) a short one. Returns both answers and
/// whether the heavy one was still running when the short one had its answer.
async fn heavy_and_short(server: &Server) -> (Answer, Answer, bool) {
    let heavy = spawn_heavy(server, &[]);
    until_positive(server, r#"aft_queue_depth{model="tiny-aft"}"#).await;
    let short = post(
        &server.base,
        "/v1/embed",
        json!({"inputs": "a short question"}),
        &[],
    )
    .await;
    let heavy_running = !heavy.is_finished();
    let heavy = heavy.await.unwrap();
    assert_eq!(heavy.status, 200, "{}", heavy.body);
    assert_eq!(short.status, 200, "{}", short.body);
    assert_eq!(heavy.body["data"].as_array().unwrap().len(), 512);
    (heavy, short, heavy_running)
}

#[tokio::test]
async fn a_short_request_completes_while_a_heavy_one_runs() {
    let server = Server::start(ONE_PER_BATCH).await;
    let (heavy, short, heavy_running) = heavy_and_short(&server).await;
    let heavy_ms = millis(&heavy.headers, "x-total-time");
    let short_queue_ms = millis(&short.headers, "x-queue-time");
    // The heavy request is 512 forward passes; the short one waits for about one of them.
    assert!(
        heavy_running,
        "the heavy request ({heavy_ms} ms) was over before the short one"
    );
    assert!(
        short_queue_ms * 10.0 < heavy_ms,
        "short request queued {short_queue_ms} ms during a {heavy_ms} ms heavy request"
    );

    // The same under --scheduling fifo: the short request waits for all of the heavy one.
    let mut fifo_args = ONE_PER_BATCH.to_vec();
    fifo_args.extend(["--scheduling", "fifo"]);
    let fifo = Server::start(&fifo_args).await;
    let (_, info) = fifo.get("/info").await;
    assert_eq!(info["scheduling"], "fifo");
    let (heavy, short, _) = heavy_and_short(&fifo).await;
    let heavy_ms = millis(&heavy.headers, "x-total-time");
    let short_queue_ms = millis(&short.headers, "x-queue-time");
    assert!(
        short_queue_ms * 2.0 > heavy_ms,
        "fifo: short request queued only {short_queue_ms} ms during a {heavy_ms} ms heavy request"
    );
}

fn key_label(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..8].to_owned()
}

#[tokio::test]
async fn a_key_over_its_queued_token_limit_gets_429_and_other_keys_do_not() {
    let mut args = ONE_PER_BATCH.to_vec();
    args.extend([
        "--api-key",
        "tenant-a-5c1f",
        "--api-key",
        "tenant-b-9e07",
        "--max-queued-tokens-per-key",
        "4096",
    ]);
    let server = Server::start(&args).await;
    let (a, b) = (key_label("tenant-a-5c1f"), key_label("tenant-b-9e07"));
    // Tenant A's bulk job: 65,536 tokens, admitted because A had nothing queued; marked low.
    let heavy = spawn_heavy(
        &server,
        &[
            ("authorization", "Bearer tenant-a-5c1f"),
            ("x-priority", "low"),
        ],
    );
    until_positive(
        &server,
        &format!("aft_key_queued_tokens{{key=\"{a}\",model=\"tiny-aft\"}}"),
    )
    .await;
    let metrics = server.metrics().await;
    assert!(
        metric_value(
            &metrics,
            r#"aft_queued_inputs{model="tiny-aft",priority="low"}"#
        ) > 0.0
    );
    assert!(
        metric_value(
            &metrics,
            r#"aft_queued_tokens{model="tiny-aft",priority="low"}"#
        ) > 0.0
    );

    // A's next request is refused at once, with the error shape and Retry-After.
    let refused = post(
        &server.base,
        "/v1/embed",
        json!({"inputs": "one more", "priority": "normal"}),
        &[("authorization", "Bearer tenant-a-5c1f")],
    )
    .await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(assert_error_shape(&refused.body), "key_queue_full");
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 4096"),
        "{}",
        refused.body
    );
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);

    // Tenant B is served meanwhile.
    let served = post(
        &server.base,
        "/v1/embed",
        json!({"inputs": ["b's question", "and another"]}),
        &[("authorization", "Bearer tenant-b-9e07")],
    )
    .await;
    assert_eq!(served.status, 200, "{}", served.body);
    let heavy = heavy.await.unwrap();
    assert_eq!(heavy.status, 200, "{}", heavy.body);
    assert!(
        served.done < heavy.done,
        "tenant B waited for tenant A's job"
    );

    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            &format!("aft_key_limit_rejections_total{{key=\"{a}\",model=\"tiny-aft\"}}")
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            &format!("aft_key_queued_tokens{{key=\"{a}\",model=\"tiny-aft\"}}")
        ),
        0.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            &format!("aft_key_queued_tokens{{key=\"{b}\",model=\"tiny-aft\"}}")
        ),
        0.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"aft_queued_inputs{model="tiny-aft",priority="low"}"#
        ),
        0.0
    );
    // With its job done, A is admitted again.
    let again = post(
        &server.base,
        "/v1/embed",
        json!({"inputs": "one more"}),
        &[("authorization", "Bearer tenant-a-5c1f")],
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
}

#[tokio::test]
async fn priority_is_validated_on_every_inference_route() {
    let server = Server::start(FAST).await;
    for (path, body) in [
        ("/v1/embed", json!({"inputs": "x", "priority": "low"})),
        ("/v1/embeddings", json!({"input": "x", "priority": "low"})),
        ("/v1/embed", json!({"inputs": "x", "priority": "normal"})),
    ] {
        let r = post(&server.base, path, body.clone(), &[]).await;
        assert_eq!(r.status, 200, "{path} {body}: {}", r.body);
    }
    for (path, body) in [
        ("/v1/embed", json!({"inputs": "x", "priority": "high"})),
        ("/v1/embeddings", json!({"input": "x", "priority": 3})),
        ("/v1/classify", json!({"inputs": "x", "priority": "urgent"})),
    ] {
        let r = post(&server.base, path, body.clone(), &[]).await;
        assert_eq!(r.status, 422, "{path} {body}: {}", r.body);
        assert_eq!(assert_error_shape(&r.body), "invalid_input");
    }
    let r = post(
        &server.base,
        "/v1/embed",
        json!({"inputs": "x"}),
        &[("x-priority", "LOW")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &server.base,
        "/v1/embed",
        json!({"inputs": "x"}),
        &[("x-priority", "asap")],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(assert_error_shape(&r.body), "invalid_input");
    assert_eq!(r.body["error"]["param"], "x-priority");
}
