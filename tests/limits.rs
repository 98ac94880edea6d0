//! Backpressure (429), timeouts (504) and start-up failures that must be clear.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// One sequence per batch, small batches, one libtorch thread: the queue drains slowly.
const ONE_SEQUENCE_PER_BATCH: &[&str] = &[
    "--max-batch-size",
    "1",
    "--max-batch-tokens",
    "128",
    "--intra-op-threads",
    "1",
];

/// Asserts a 429 in the error shape, with a `Retry-After` of at least a second.
fn assert_queue_full(status: u16, retry_after: Option<&str>, body: &Value) {
    assert_eq!(status, 429, "{body}");
    assert_eq!(assert_error_shape(body), "queue_full");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let secs: u64 = retry_after.expect("Retry-After on 429").parse().unwrap();
    assert!(secs >= 1);
}

fn texts(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

#[tokio::test]
async fn a_request_that_does_not_fit_the_queue_is_refused_at_once_with_429() {
    // A batch of one is not full (max 2), so with a 60 s --max-wait-us the first input waits in
    // the queue for company: the queue stays occupied, deterministically, until a second comes.
    let server = Server::start(&[
        "--max-queue-size",
        "4",
        "--max-client-batch-size",
        "4",
        "--max-batch-size",
        "2",
        "--max-batch-tokens",
        "256",
        "--max-wait-us",
        "60000000",
        "--intra-op-threads",
        "1",
    ])
    .await;
    let waiting = spawn_embed(
        &server,
        json!({ "inputs": texts(&["the first input waits for company"]) }),
    );
    server
        .wait_for_metric(r#"aft_queue_depth{model="tiny-aft"}"#, |v| v == 1.0)
        .await;

    // 1 waiting + 4 more > 4: refused while the input ahead of it still waits, so the refusal
    // did not wait for space.
    let (status, headers, body) =
        spawn_embed(&server, json!({ "inputs": texts(&["a", "b", "c", "d"]) }))
            .await
            .unwrap();
    assert_queue_full(status, header(&headers, "retry-after").as_deref(), &body);
    assert!(
        !waiting.is_finished(),
        "the queued request was answered before the refusal"
    );

    // A second input completes the batch: both run together.
    let (status, _, body) = spawn_embed(&server, json!({ "inputs": texts(&["the second input"]) }))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let metrics = server.metrics().await;
    assert_eq!(requests_total(&metrics, "/v1/embed", 429), 1.0);
    assert_eq!(
        metric_value(&metrics, r#"aft_batch_size_count{model="tiny-aft"}"#),
        1.0
    );
    // The refused request cost no inference.
    assert_eq!(
        metric_value(&metrics, r#"aft_inputs_total{model="tiny-aft"}"#),
        2.0
    );
    assert_eq!(
        metric_value(&metrics, r#"aft_queue_depth{model="tiny-aft"}"#),
        0.0
    );
}

#[tokio::test]
async fn an_overloaded_queue_refuses_the_excess_and_runs_only_what_it_admitted() {
    let mut args = vec!["--max-queue-size", "8", "--max-client-batch-size", "8"];
    args.extend_from_slice(ONE_SEQUENCE_PER_BATCH);
    let server = Server::start(&args).await;
    let long = "a long text that fills the window ".repeat(30);
    // 48 requests of 8 long inputs each, one sequence per batch: the queue (8 inputs) overflows.
    let tasks: Vec<_> = (0..48)
        .map(|i| spawn_embed(&server, json!({ "inputs": vec![format!("{i} {long}"); 8] })))
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (status, headers, body) = task.await.unwrap();
        if status == 200 {
            ok += 1;
            assert_eq!(body["embeddings"].as_array().unwrap().len(), 8);
        } else {
            refused += 1;
            assert_queue_full(status, header(&headers, "retry-after").as_deref(), &body);
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    let metrics = server.metrics().await;
    assert_eq!(requests_total(&metrics, "/v1/embed", 429), refused as f64);
    assert_eq!(
        metric_value(&metrics, r#"aft_queue_depth{model="tiny-aft"}"#),
        0.0
    );
    // Refused requests cost no inference.
    assert_eq!(
        metric_value(&metrics, r#"aft_inputs_total{model="tiny-aft"}"#),
        (ok * 8) as f64
    );
}

#[tokio::test]
async fn a_slow_request_times_out_with_504_and_its_work_is_dropped() {
    let mut args = vec!["--request-timeout", "30ms"];
    args.extend_from_slice(ONE_SEQUENCE_PER_BATCH);
    let server = Server::start(&args).await;
    let long = "a long text that fills the window ".repeat(30);
    let inputs: Vec<String> = (0..300).map(|i| format!("{i} {long}")).collect();
    let started = std::time::Instant::now();
    let (status, body) = server.post("/v1/embed", &json!({"inputs": inputs})).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(assert_error_shape(&body), "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The service keeps answering (within the same 30 ms, which a busy machine may need a few
    // tries to meet), and the abandoned inputs never reach the model.
    let timed_out = std::sync::atomic::AtomicUsize::new(0);
    let (server_ref, timed_out_ref) = (&server, &timed_out);
    let answered = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async move {
            let (status, body) = server_ref
                .post("/v1/embed", &json!({"inputs": "short"}))
                .await;
            match status {
                200 => true,
                504 => {
                    timed_out_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    false
                }
                other => panic!("unexpected {other}: {body}"),
            }
        },
    )
    .await;
    assert!(answered, "no 200 after the timeout:\n{}", server.log_text());
    let metrics = server
        .wait_for_metric(r#"aft_queue_depth{model="tiny-aft"}"#, |v| v == 0.0)
        .await;
    let batches = metric_value(&metrics, r#"aft_batch_size_count{model="tiny-aft"}"#);
    assert!(
        batches < 150.0,
        "{batches} of 300 abandoned inputs were still run"
    );
    assert_eq!(
        requests_total(&metrics, "/v1/embed", 504),
        (1 + timed_out.into_inner()) as f64
    );
}

#[test]
fn an_unusable_device_fails_with_one_clear_error() {
    let tiny = tiny();
    let run = |device: &str| {
        run_to_exit(
            None,
            &["--model-dir", tiny.to_str().unwrap(), "--device", device],
        )
    };
    let (code, text) = run("tpu");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("expected cpu, cuda, cuda:N or auto"),
        "{text}"
    );
    // This test links libtorch as the binary does, so it sees the CUDA devices the binary sees.
    if tch::Cuda::is_available() {
        let count = tch::Cuda::device_count();
        let device = format!("cuda:{count}");
        let (code, text) = run(&device);
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains(&format!(
                "--device {device}: there are {count} CUDA device(s)"
            )),
            "{text}"
        );
    } else {
        for device in ["cuda", "cuda:1"] {
            let (code, text) = run(device);
            assert_eq!(code, 1, "{text}");
            assert!(text.contains("CUDA is not available"), "{text}");
            assert!(text.contains(&format!("--device {device}")), "{text}");
        }
    }
}

#[test]
fn a_bad_bundle_fails_naming_the_file_and_field() {
    let dir = tempdir("bad-bundle");
    for f in ["model.pt", "tokenizer.json", "manifest.json"] {
        std::fs::copy(tiny().join(f), dir.join(f)).unwrap();
    }
    let manifest_path = dir.join("manifest.json");
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let check = |edit: &dyn Fn(&mut serde_json::Value), field: &str| {
        let mut m = original.clone();
        edit(&mut m);
        std::fs::write(&manifest_path, m.to_string()).unwrap();
        let (code, text) = run_to_exit(None, &["--model-dir", dir.to_str().unwrap()]);
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains("manifest.json") && text.contains(&format!("`{field}`")),
            "{field}: {text}"
        );
    };
    check(
        &|m| m["files"]["model.pt"]["sha256"] = json!("0".repeat(64)),
        "files.model.pt.sha256",
    );
    check(&|m| m["format_version"] = json!(7), "format_version");
    check(&|m| m["dtype"] = json!("int4"), "dtype");
    check(
        &|m| {
            m.as_object_mut().unwrap().remove("max_seq_len");
        },
        "max_seq_len",
    );
    let (code, text) = run_to_exit(None, &["--model-dir", "/nonexistent/bundle"]);
    assert_eq!(code, 1);
    assert!(text.contains("/nonexistent/bundle/manifest.json"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inconsistent_options_are_refused() {
    let (code, text) = run_to_exit(
        None,
        &[
            "--model-dir",
            tiny().to_str().unwrap(),
            "--max-queue-size",
            "4",
            "--max-client-batch-size",
            "8",
        ],
    );
    assert_eq!(code, 1);
    assert!(text.contains("--max-client-batch-size"), "{text}");
}
