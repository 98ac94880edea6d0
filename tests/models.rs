//! Several models behind one endpoint: the real binary serving two bundles, requests routed by
//! `model` on every inference route, listing, metrics per model, unknown models, readiness, and
//! the start-up errors of naming; and `--precision`: aft-mini served from its int8 copy by
//! default on CPU, close to its float model.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn aft_mini() -> PathBuf {
    repo().join("models/aft-mini")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn manifest(bundle: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap()
}

fn manifest_labels(bundle: &Path) -> Vec<String> {
    serde_json::from_value(manifest(bundle)["labels"].clone()).unwrap()
}

/// tiny-aft (the default: 32 dimensions, no classifier head) beside aft-mini (384 dimensions,
/// a classifier head), both in float (aft-mini's own output is checked against its eager float
/// model; its int8 copy, the default on CPU, is checked by `precision_*` below).
async fn two_models() -> Server {
    let mini = aft_mini();
    let mut args = vec!["--model-dir", path(&mini), "--precision", "float"];
    args.extend_from_slice(FAST);
    Server::start(&args).await
}

fn assert_model_not_found(status: u16, body: &Value, name: &str) {
    assert_eq!(status, 404, "{body}");
    assert_eq!(assert_error_shape(body), "model_not_found", "{body}");
    assert_eq!(body["error"]["param"], "model", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(name), "{message}");
}

#[tokio::test]
async fn two_bundles_in_one_server_are_routed_by_model_on_every_route() {
    let server = two_models().await;
    let text = "the committee approved the budget for the new library";

    // /v1/embed: the default without `model`, either model by name.
    let (status, body) = server.post("/v1/embed", &json!({"inputs": text})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "tiny-aft");
    assert_eq!(body["dimensions"], 32);
    let (status, body) = server
        .post(
            "/v1/embed",
            &json!({"inputs": [text], "model": "aft-mini", "normalize": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "aft-mini");
    assert_eq!(body["dimensions"], 384);
    // It is aft-mini's own output, not merely its shape: the eager Python model agrees.
    let served = as_vec(&body["embeddings"][0]);
    let reference = reference(&aft_mini(), &[text.to_string()]);
    let err = relative_error(&served, &reference.embeddings[0]);
    assert!(
        err <= 1e-3,
        "aft-mini via `model` differs from its reference by {err:e}"
    );
    let (status, body) = server
        .post("/v1/embed", &json!({"inputs": text, "model": "tiny-aft"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dimensions"], 32);

    // /v1/embeddings (OpenAI).
    let (status, body) = server
        .post(
            "/v1/embeddings",
            &json!({"input": text, "model": "aft-mini"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "aft-mini");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 384);
    let (status, body) = server.post("/v1/embeddings", &json!({"input": text})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "tiny-aft");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 32);

    // /v1/classify: the default has no head; aft-mini answers with its own labels.
    let (status, body) = server.post("/v1/classify", &json!({"inputs": text})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_error_shape(&body), "no_classifier");
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"inputs": [text, "a cat sat on the mat"], "model": "aft-mini", "top_k": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "aft-mini");
    let labels = manifest_labels(&aft_mini());
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for result in results {
        let result = result.as_array().unwrap();
        assert_eq!(result.len(), 3);
        for scored in result {
            let label = scored["label"].as_str().unwrap();
            assert!(
                labels.iter().any(|l| l == label),
                "{label} is not aft-mini's"
            );
        }
    }

    // An unknown model: 404 in the one error shape, on every route.
    for (route, body) in [
        ("/v1/embed", json!({"inputs": text, "model": "nope"})),
        ("/v1/embeddings", json!({"input": text, "model": "nope"})),
        ("/v1/classify", json!({"inputs": text, "model": "nope"})),
    ] {
        let (status, answer) = server.post(route, &body).await;
        assert_model_not_found(status, &answer, "nope");
    }

    // Each model counted its own inputs, under its own `model` label.
    let metrics = server.metrics().await;
    let value = |name: &str| metric_value(&metrics, name);
    assert_eq!(value(r#"aft_inputs_total{model="tiny-aft"}"#), 3.0);
    assert_eq!(value(r#"aft_inputs_total{model="aft-mini"}"#), 4.0);
    // Batches too: every input aft-mini ran went through its own batcher, none of tiny-aft's.
    assert_eq!(value(r#"aft_batch_size_sum{model="aft-mini"}"#), 4.0);
    assert_eq!(value(r#"aft_batch_size_sum{model="tiny-aft"}"#), 3.0);
    assert_eq!(
        value(r#"aft_queue_duration_seconds_count{model="aft-mini"}"#),
        4.0
    );
    // aft-mini reads 65,536 tokens, so it has a long-input lane: one more worker.
    for (model, workers) in [("tiny-aft", 1.0), ("aft-mini", 2.0)] {
        assert_eq!(
            value(&format!(r#"aft_workers_alive{{model="{model}"}}"#)),
            workers
        );
        assert_eq!(
            value(&format!(r#"aft_queue_depth{{model="{model}"}}"#)),
            0.0
        );
        assert_eq!(
            value(&format!(r#"aft_worker_restarts_total{{model="{model}"}}"#)),
            0.0
        );
        assert!(
            metrics.contains(&format!(r#"aft_prompt_tokens_total{{model="{model}"}}"#)),
            "{metrics}"
        );
    }
    assert_eq!(
        value(r#"aft_model_info{device="cpu",model="aft-mini",variant="decay",version="0.1.0"}"#),
        1.0
    );
    assert_eq!(
        value(r#"aft_model_info{device="cpu",model="tiny-aft",variant="local",version="0.1.0"}"#),
        1.0
    );
}

#[tokio::test]
async fn models_and_info_list_every_model_with_the_default_first() {
    let server = two_models().await;
    let (status, list) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny-aft", "aft-mini"]);
    assert!(list["data"][1]["created"].as_u64().unwrap() > 0);
    assert_eq!(list["data"][1]["precision"], "float");

    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200);
    // The single-model fields describe the default, as they did before.
    assert_eq!(info["model"], "tiny-aft");
    assert_eq!(info["dimensions"], 32);
    assert_eq!(info["labels"], Value::Null);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let models = info["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["model"], "tiny-aft");
    assert_eq!(models[1]["model"], "aft-mini");
    assert_eq!(models[1]["dimensions"], 384);
    assert_eq!(
        models[1]["limits"]["max_seq_len"],
        manifest(&aft_mini())["max_seq_len"]
    );
    assert_eq!(models[1]["workers"], 1);
    assert_eq!(models[1]["labels"], json!(manifest_labels(&aft_mini())));
    assert_eq!(models[1]["manifest"]["name"], "aft-mini");
    // --precision float: both run model.pt (tiny-aft has no int8 copy anyway).
    assert_eq!(info["precision"], "float");
    assert_eq!(models[1]["precision"], "float");
    assert_eq!(
        models[1]["model_sha"],
        manifest(&aft_mini())["files"]["model.pt"]["sha256"]
    );
}

#[tokio::test]
async fn one_bundle_served_under_two_names_with_name_equals_dir() {
    let tiny = tiny();
    let renamed = format!("twin={}", path(&tiny));
    let mut args = vec!["--model-dir", renamed.as_str()];
    args.extend_from_slice(FAST);
    let server = Server::start(&args).await;
    let (_, list) = server.get("/v1/models").await;
    assert_eq!(list["data"][0]["id"], "tiny-aft");
    assert_eq!(list["data"][1]["id"], "twin");
    let (status, a) = server
        .post("/v1/embed", &json!({"inputs": "same weights"}))
        .await;
    assert_eq!(status, 200);
    let (status, b) = server
        .post(
            "/v1/embed",
            &json!({"inputs": "same weights", "model": "twin"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(b["model"], "twin");
    let d = max_abs_diff(&as_vec(&a["embeddings"][0]), &as_vec(&b["embeddings"][0]));
    assert!(
        d <= 1e-6,
        "the same bundle under two names differs by {d:e}"
    );
    // Each name has a queue and workers of its own, so each counts only its own inputs.
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, r#"aft_inputs_total{model="twin"}"#),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, r#"aft_inputs_total{model="tiny-aft"}"#),
        1.0
    );
}

#[test]
fn two_models_with_one_name_are_a_start_up_error() {
    let tiny = tiny();
    let (code, text) = run_to_exit(
        None,
        &["--model-dir", path(&tiny), "--model-dir", path(&tiny)],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(r#"two models are named "tiny-aft""#),
        "{text}"
    );
    assert!(
        !text.contains("listening on"),
        "it must fail before listening: {text}"
    );
    // The same through the variable, comma-separated, with the clash made by a given name.
    let named = format!("{},tiny-aft={}", path(&tiny), path(&tiny));
    let (code, text) = run_to_exit(Some(&named), &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(r#"two models are named "tiny-aft""#),
        "{text}"
    );
    let (code, text) = run_to_exit(None, &["--model-dir", &format!("={}", path(&tiny))]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("empty model name"), "{text}");
}

/// A copy of tiny-aft whose model.pt is not TorchScript, with a manifest that lists its true
/// size and hash: the bundle verifies, and only loading the model fails (in the workers).
fn unloadable_bundle() -> PathBuf {
    let dir = tempdir("unloadable");
    std::fs::copy(tiny().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let garbage = b"this is not a TorchScript archive".repeat(64);
    std::fs::write(dir.join("model.pt"), &garbage).unwrap();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(tiny().join("manifest.json")).unwrap()).unwrap();
    manifest["name"] = json!("unloadable");
    manifest["files"]["model.pt"]["sha256"] = json!(hex::encode(Sha256::digest(&garbage)));
    manifest["files"]["model.pt"]["size"] = json!(garbage.len());
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    dir
}

#[tokio::test]
async fn readiness_waits_for_every_model_and_a_model_that_cannot_load_stops_the_server() {
    let broken = unloadable_bundle();
    let mut args = vec!["--model-dir", path(&broken)];
    args.extend_from_slice(FAST);
    let mut server = Server::spawn(&tiny(), &args, &[]);
    // The default model loads fine, but the service is never ready: the other one cannot load.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.try_exit() {
            break status;
        }
        if let Ok(r) = client.get(server.url("/health/ready")).send().await {
            assert_ne!(r.status(), 200, "ready with a model that cannot load");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(1), "{}", server.log_text());
    let logs = server.log_text();
    assert!(
        logs.contains(r#"a model could not be loaded: model "unloadable""#),
        "{logs}"
    );
    let _ = std::fs::remove_dir_all(&broken);
}

#[tokio::test]
async fn precision_default_on_cpu_serves_aft_mini_in_int8_close_to_float() {
    // aft-mini carries an int8 copy (manifest `int8_model`: dynamically quantized Linear layers,
    // packed int8 weights, CPU only). With default flags on the CPU it is what is served, and
    // its vectors stay within cosine 0.99 of the float model's (`--precision float`), with the
    // same top topic label.
    let mini = aft_mini();
    let default = Server::start_bundle(&mini, FAST).await;
    let mut float_args = vec!["--precision", "float"];
    float_args.extend_from_slice(FAST);
    let float = Server::start_bundle(&mini, &float_args).await;
    let files = &manifest(&mini)["files"];
    let int8_file = manifest(&mini)["int8_model"].as_str().unwrap().to_string();
    for (server, precision, file) in [
        (&default, "int8", int8_file.as_str()),
        (&float, "float", "model.pt"),
    ] {
        let (status, info) = server.get("/info").await;
        assert_eq!(status, 200);
        assert_eq!(info["model"], "aft-mini");
        assert_eq!(info["device"], "cpu");
        assert_eq!(info["precision"], precision, "{info}");
        assert_eq!(info["models"][0]["precision"], precision);
        // TEI's model_sha is the served file's.
        assert_eq!(info["model_sha"], files[file]["sha256"]);
        let (_, list) = server.get("/v1/models").await;
        assert_eq!(list["data"][0]["precision"], precision);
        // The start-up log says which file and why.
        let logs = server.log_text();
        assert!(
            logs.contains(&format!("precision={precision}")) && logs.contains(file),
            "{logs}"
        );
    }
    int8_serves_what_float_does(&float, &default).await;
}

#[test]
fn precision_int8_without_an_int8_copy_is_a_start_up_error_naming_the_bundle() {
    let tiny = tiny();
    let (code, text) = run_to_exit(None, &["--model-dir", path(&tiny), "--precision", "int8"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(path(&tiny)) && text.contains("no int8 model"),
        "{text}"
    );
    assert!(text.contains("--precision float"), "{text}");
    assert!(
        !text.contains("listening on"),
        "it must fail before listening: {text}"
    );
    // The same through the variable; and `float` or `auto` serve the bundle without one.
    let out = std::process::Command::new(BIN)
        .env("AFT_PRECISION", "int8")
        .env_remove("AFT_MODEL_DIR")
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--model-dir",
            path(&tiny),
        ])
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no int8 model"), "{stderr}");
}

#[tokio::test]
async fn the_converted_aft_base_serves_embeddings_topics_and_long_documents() {
    // aft-base is all-MiniLM-L6-v2 converted by aft.convert: post-LayerNorm blocks and an
    // embedding LayerNorm around AFT-decay mixers, served by the same loader as every bundle.
    let server = Server::start_bundle(&repo().join("models/aft-base"), FAST).await;
    let texts = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
    ];
    let (status, body) = server.post("/v1/embed", &json!({"inputs": texts})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "aft-base");
    let e: Vec<Vec<f32>> = body["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(as_vec)
        .collect();
    let dot = |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
    assert_eq!(e[0].len(), 384);
    assert!(
        dot(&e[0], &e[1]) > dot(&e[0], &e[2]) + 0.1,
        "paraphrase not closer"
    );
    let (status, body) = server
        .post(
            "/v1/classify",
            &json!({"inputs": "a small domesticated carnivore"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A document past the teacher's 256 tokens, embedded whole and in late chunks.
    let doc = "The river rose after the rain and the old bridge closed for repairs. ".repeat(60);
    let (status, body) = server
        .post(
            "/v1/embed",
            &json!({"inputs": doc, "chunking": {"tokens": 256, "overlap": 0}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["usage"]["prompt_tokens"].as_u64().unwrap() > 800,
        "{body}"
    );
    assert!(body["chunks"][0].as_array().unwrap().len() >= 3, "{body}");
}

/// One model served in float by one server and in int8 by another: 384-d vectors within
/// cosine 0.99 of each other (but not identical: something was quantized) and the same top
/// topic label for every text.
async fn int8_serves_what_float_does(float: &Server, int8: &Server) {
    let texts = [
        "the committee approved the budget for the new library",
        "a small domesticated carnivore kept as a pet",
        "Restart the daemon after editing its configuration file.",
    ];
    let mut vectors = Vec::new();
    let mut top_labels = Vec::new();
    for server in [float, int8] {
        let (status, body) = server.post("/v1/embed", &json!({"inputs": texts})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["dimensions"], 384);
        let rows: Vec<Vec<f32>> = body["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(as_vec)
            .collect();
        vectors.push(rows);
        let (status, body) = server.post("/v1/classify", &json!({"inputs": texts})).await;
        assert_eq!(status, 200, "{body}");
        let labels: Vec<String> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0]["label"].as_str().unwrap().to_string())
            .collect();
        top_labels.push(labels);
    }
    for (i, (float, int8)) in vectors[0].iter().zip(&vectors[1]).enumerate() {
        // Both are L2-normalised: the dot product is the cosine.
        let cosine: f32 = float.iter().zip(int8).map(|(a, b)| a * b).sum();
        assert!(
            cosine > 0.99,
            "text {i}: cosine {cosine} between float and int8"
        );
        assert!(
            cosine < 0.999_99,
            "text {i}: identical vectors, nothing quantized?"
        );
    }
    assert_eq!(top_labels[0], top_labels[1]);
}
