//! SIGTERM under load: no accepted request is lost, and the process exits 0.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn sigterm_during_load_loses_no_accepted_request() {
    let mut server = Server::start(&[
        "--max-batch-tokens",
        "1024",
        "--max-batch-size",
        "2",
        "--intra-op-threads",
        "1",
        "--shutdown-timeout",
        "60s",
    ])
    .await;
    let url = server.url("/v1/embed");
    let post = |inputs: Vec<String>| {
        let url = url.clone();
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&json!({"inputs": inputs}))
                .send()
                .await?;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
    };
    // A large request first: its inputs are older, so everything after it waits in the queue.
    let long = "a long text that fills the whole window of the model ".repeat(12);
    let blocker = post((0..256).map(|i| format!("{i} {long}")).collect());
    server
        .wait_for_metric(r#"aft_queue_depth{model="tiny-aft"}"#, |v| v >= 1.0)
        .await;
    let clients = 24;
    let text = "a medium length sentence about the shutdown of services";
    let tasks: Vec<_> = (0..clients)
        .map(|i| post(vec![format!("{i} {text}"); 16]))
        .collect();
    // Every request is accepted and in flight (plus the metrics request itself) before the signal.
    server
        .wait_for_metric("aft_requests_in_flight", |v| v >= (clients + 2) as f64)
        .await;
    let stopping = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(90));
        (status, server)
    });
    let (code, body) = blocker
        .await
        .unwrap()
        .expect("the large request lost its answer");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 256);
    for task in tasks {
        let (code, body) = task
            .await
            .unwrap()
            .expect("an accepted request lost its answer");
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["embeddings"].as_array().unwrap().len(), 16);
    }
    let (status, server) = stopping.await.unwrap();
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    let logs = server.log_text();
    assert!(
        logs.contains("SIGTERM received") && logs.contains("shut down cleanly"),
        "{logs}"
    );
    // Nothing listens any more.
    assert!(reqwest::get(server.url("/health/live")).await.is_err());
}

#[tokio::test]
async fn sigint_when_idle_exits_0_after_a_clean_shutdown() {
    let mut server = Server::start(FAST).await;
    let (status, _) = server
        .post("/v1/embed", &json!({"inputs": "one last request"}))
        .await;
    assert_eq!(status, 200);
    let status = server.signal("INT", Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    let logs = server.log_text();
    assert!(
        logs.contains("SIGINT received") && logs.contains("shut down cleanly"),
        "{logs}"
    );
}
