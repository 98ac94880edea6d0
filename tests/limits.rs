//! Backpressure (429), timeouts (504) and start-up failures that must be clear.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_at_once() {
    let server = Server::start(&[
        "--max-queue-size",
        "8",
        "--max-client-batch-size",
        "8",
        "--max-batch-size",
        "1",
        "--max-batch-tokens",
        "128",
        "--intra-op-threads",
        "1",
    ])
    .await;
    let long = "a long text that fills the window ".repeat(30);
    let url = server.url("/v1/embed");
    // 48 requests of 8 long inputs each, one sequence per batch: the queue (8 inputs) overflows.
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let (url, text) = (url.clone(), format!("{i} {long}"));
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let r = reqwest::Client::new()
                    .post(url)
                    .json(&json!({"inputs": vec![text; 8]}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body: serde_json::Value = r.json().await.unwrap();
                (status, retry_after, body, started.elapsed())
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (status, retry_after, body, _elapsed) = task.await.unwrap();
        match status {
            200 => {
                ok += 1;
                assert_eq!(body["embeddings"].as_array().unwrap().len(), 8);
            }
            429 => {
                refused += 1;
                assert_eq!(assert_error_shape(&body), "queue_full");
                assert_eq!(body["error"]["type"], "rate_limit_error");
                let secs: u64 = retry_after.expect("Retry-After on 429").parse().unwrap();
                assert!(secs >= 1);
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"aft_requests_total{route="/v1/embed",status="429"}"#
        ),
        refused as f64
    );
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
    let server = Server::start(&[
        "--request-timeout",
        "30ms",
        "--max-batch-size",
        "1",
        "--max-batch-tokens",
        "128",
        "--intra-op-threads",
        "1",
    ])
    .await;
    let long = "a long text that fills the window ".repeat(30);
    let inputs: Vec<String> = (0..300).map(|i| format!("{i} {long}")).collect();
    let started = std::time::Instant::now();
    let (status, body) = server.post("/v1/embed", &json!({"inputs": inputs})).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(assert_error_shape(&body), "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The service keeps answering, and the abandoned inputs never reach the model.
    let (status, _) = server.post("/v1/embed", &json!({"inputs": "short"})).await;
    assert_eq!(status, 200);
    let mut metrics = server.metrics().await;
    for _ in 0..100 {
        if metric_value(&metrics, r#"aft_queue_depth{model="tiny-aft"}"#) == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = server.metrics().await;
    }
    assert_eq!(
        metric_value(&metrics, r#"aft_queue_depth{model="tiny-aft"}"#),
        0.0
    );
    let batches = metric_value(&metrics, r#"aft_batch_size_count{model="tiny-aft"}"#);
    assert!(
        batches < 150.0,
        "{batches} of 300 abandoned inputs were still run"
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"aft_requests_total{route="/v1/embed",status="504"}"#
        ),
        1.0
    );
}

/// Runs the binary to completion and returns (exit code, stderr + stdout).
fn run_to_exit(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn cuda_on_a_machine_without_it_fails_with_one_clear_error() {
    if tch::Cuda::is_available() {
        eprintln!("CUDA is available here; see scripts/gpu-check instead");
        return;
    }
    let tiny = tiny();
    for device in ["cuda", "cuda:1"] {
        let (code, text) =
            run_to_exit(&["--model-dir", tiny.to_str().unwrap(), "--device", device]);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("CUDA is not available"), "{text}");
        assert!(text.contains(&format!("--device {device}")), "{text}");
    }
    let (code, text) = run_to_exit(&["--model-dir", tiny.to_str().unwrap(), "--device", "tpu"]);
    assert_eq!(code, 1);
    assert!(
        text.contains("expected cpu, cuda, cuda:N or auto"),
        "{text}"
    );
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
        let (code, text) = run_to_exit(&["--model-dir", dir.to_str().unwrap()]);
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
    let (code, text) = run_to_exit(&["--model-dir", "/nonexistent/bundle"]);
    assert_eq!(code, 1);
    assert!(text.contains("/nonexistent/bundle/manifest.json"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inconsistent_options_are_refused() {
    let (code, text) = run_to_exit(&[
        "--model-dir",
        tiny().to_str().unwrap(),
        "--max-queue-size",
        "4",
        "--max-client-batch-size",
        "8",
    ]);
    assert_eq!(code, 1);
    assert!(text.contains("--max-client-batch-size"), "{text}");
}
