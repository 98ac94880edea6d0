//! The text-embeddings-inference (TEI) routes against the real server and the tiny model: the
//! same vectors as the native routes, TEI's shapes (nesting, token lists, `/info` fields), its
//! truncation default, and its error shape `{"error", "error_type"}` on every failure.

mod common;

use common::*;
use serde_json::{json, Value};

/// Asserts TEI's error shape (exactly `error` and `error_type`) and returns the `error_type`.
fn tei_error_type(body: &Value) -> String {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(obj.len(), 2, "only error and error_type: {body}");
    assert!(
        body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error_type"]
        .as_str()
        .unwrap_or_else(|| panic!("error_type: {body}"))
        .to_owned()
}

#[tokio::test]
async fn tei_embed_and_the_compat_root_match_v1_embed() {
    let server = Server::start(FAST).await;
    let texts = sample_texts();
    let (status, native) = server.post("/v1/embed", &json!({"inputs": texts})).await;
    assert_eq!(status, 200, "{native}");
    let native = as_rows(&native["embeddings"]);

    for path in ["/embed", "/"] {
        let (status, tei) = server.post(path, &json!({"inputs": texts})).await;
        assert_eq!(status, 200, "{path}: {tei}");
        let tei = as_rows(&tei);
        assert_eq!(tei.len(), texts.len(), "{path}");
        for (i, (a, b)) in tei.iter().zip(&native).enumerate() {
            assert!(max_abs_diff(a, b) <= 1e-6, "{path} input {i}");
        }
    }

    // One text gives a list of one vector, as TEI answers it.
    let (status, one) = server.post("/embed", &json!({"inputs": texts[0]})).await;
    assert_eq!(status, 200);
    assert_eq!(as_rows(&one).len(), 1);
    assert!(max_abs_diff(&as_rows(&one)[0], &native[0]) <= 1e-6);

    // normalize: false and dimensions, as /v1/embed gives them.
    for extra in [json!({"normalize": false}), json!({"dimensions": 8})] {
        let mut tei_body = json!({"inputs": ["hello", "a cat sat on the mat"]});
        tei_body
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let mut native_body = tei_body.clone();
        let (_, tei) = server.post("/embed", &tei_body).await;
        native_body["inputs"] = tei_body["inputs"].clone();
        let (_, native) = server.post("/v1/embed", &native_body).await;
        let (tei, native) = (as_rows(&tei), as_rows(&native["embeddings"]));
        for (a, b) in tei.iter().zip(&native) {
            assert!(max_abs_diff(a, b) <= 1e-6, "{extra}");
        }
        if extra.get("dimensions").is_some() {
            assert!(tei.iter().all(|v| v.len() == 8));
        }
    }

    // Token ids, TEI's other input kind: [CLS] hello [SEP] is the text "hello".
    let (status, ids) = server
        .post("/embed", &json!({"inputs": [[101, 7592, 102]]}))
        .await;
    assert_eq!(status, 200, "{ids}");
    let (_, hello) = server.post("/embed", &json!({"inputs": "hello"})).await;
    assert!(max_abs_diff(&as_rows(&ids)[0], &as_rows(&hello)[0]) <= 1e-6);

    // The routes are counted under their own templates.
    let metrics = server.metrics().await;
    assert!(requests_total(&metrics, "/embed", 200) >= 4.0);
    assert_eq!(requests_total(&metrics, "/", 200), 1.0);
}

#[tokio::test]
async fn tei_truncates_by_default_and_answers_errors_in_teis_shape() {
    let server = Server::start(FAST).await;
    let long = "a very long document about many things ".repeat(40); // > 128 tokens

    let (status, body) = server.post("/embed", &json!({"inputs": long})).await;
    assert_eq!(status, 200, "auto_truncate: {body}");
    let (_, truncated) = server
        .post("/v1/embed", &json!({"inputs": long, "truncate": true}))
        .await;
    assert!(max_abs_diff(&as_rows(&body)[0], &as_vec(&truncated["embeddings"][0])) <= 1e-6);

    let cases = [
        (
            json!({"inputs": long, "truncate": false}),
            422,
            "Validation",
        ),
        (
            json!({"inputs": "x", "truncation_direction": "Left"}),
            422,
            "Validation",
        ),
        (
            json!({"inputs": "x", "prompt_name": "query"}),
            422,
            "Validation",
        ),
        (json!({"inputs": []}), 422, "Validation"),
        (json!({"inputs": ""}), 422, "Validation"),
        (json!({"inputs": "x", "dimensions": 33}), 422, "Validation"),
        (json!({"inputs": "x", "model": "nope"}), 404, "Validation"),
        (json!({"input": "x"}), 422, "Validation"),
    ];
    for (body, status, error_type) in cases {
        let (got, answer) = server.post("/embed", &body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(tei_error_type(&answer), error_type, "{body}");
    }
    // Left truncation is refused whatever `truncate` says (the document lists Right alone).
    let (status, body) = server
        .post(
            "/embed",
            &json!({"inputs": "x", "truncate": false, "truncation_direction": "left"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(tei_error_type(&body), "Validation");

    // Errors raised before the handler (the body is not JSON) take the shape too.
    let r = reqwest::Client::new()
        .post(server.url("/embed_all"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(tei_error_type(&r.json().await.unwrap()), "Validation");

    // The native routes keep their own shape.
    let (status, native) = server
        .post("/v1/embed", &json!({"inputs": long, "truncate": false}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(assert_error_shape(&native), "input_too_long");
}

#[tokio::test]
async fn tei_embed_all_gives_one_vector_per_token_that_pool_to_the_embedding() {
    let server = Server::start(FAST).await;
    let texts = ["a cat sat on the mat", "hello"];
    let (status, all) = server.post("/embed_all", &json!({"inputs": texts})).await;
    assert_eq!(status, 200, "{all}");
    let (_, tokens) = server.post("/tokenize", &json!({"inputs": texts})).await;
    let (_, pooled) = server
        .post("/v1/embed", &json!({"inputs": texts, "normalize": false}))
        .await;
    for (i, per_token) in all.as_array().unwrap().iter().enumerate() {
        let per_token = as_rows(per_token);
        assert_eq!(
            per_token.len(),
            tokens[i].as_array().unwrap().len(),
            "input {i}: one vector per token, special tokens included"
        );
        assert!(per_token.iter().all(|v| v.len() == 32));
        // Mean pooling through an affine projection: the tokens' mean is the embedding.
        let mean: Vec<f32> = (0..32)
            .map(|d| per_token.iter().map(|v| v[d]).sum::<f32>() / per_token.len() as f32)
            .collect();
        let want = as_vec(&pooled["embeddings"][i]);
        assert!(
            relative_error(&mean, &want) < 5e-3,
            "input {i}: {}",
            relative_error(&mean, &want)
        );
    }
    // One text: a list of one token list.
    let (_, one) = server.post("/embed_all", &json!({"inputs": "hello"})).await;
    assert_eq!(one.as_array().unwrap().len(), 1);

    // Token vectors are bounded by --max-chunks.
    let small = Server::start(&[FAST, &["--max-chunks", "4"]].concat()).await;
    let (status, body) = small
        .post("/embed_all", &json!({"inputs": "a cat sat on the mat"}))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(tei_error_type(&body), "Validation");
}

#[tokio::test]
async fn tei_tokenize_and_decode_round_trip() {
    let server = Server::start(FAST).await;
    let text = "a cat sat on the mat, ¿sí?";
    let (status, tokens) = server.post("/tokenize", &json!({"inputs": text})).await;
    assert_eq!(status, 200, "{tokens}");
    let tokens = tokens[0].as_array().unwrap().clone();
    assert_eq!(
        tokens[0],
        json!({"id": 101, "text": "[CLS]", "special": true, "start": null, "stop": null})
    );
    assert_eq!(tokens.last().unwrap()["text"], "[SEP]");
    for token in &tokens[1..tokens.len() - 1] {
        let (start, stop) = (
            token["start"].as_u64().unwrap() as usize,
            token["stop"].as_u64().unwrap() as usize,
        );
        assert_eq!(token["special"], false);
        assert_eq!(token["text"], text[start..stop], "{token}");
    }
    let (_, bare) = server
        .post(
            "/tokenize",
            &json!({"inputs": [text, "hello"], "add_special_tokens": false}),
        )
        .await;
    assert_eq!(bare.as_array().unwrap().len(), 2);
    assert_eq!(bare[0].as_array().unwrap().len(), tokens.len() - 2);

    let plain = "a cat sat on the mat";
    let (_, plain_tokens) = server.post("/tokenize", &json!({"inputs": plain})).await;
    let ids: Vec<Value> = plain_tokens[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    let (status, texts) = server.post("/decode", &json!({"ids": ids})).await;
    assert_eq!(status, 200, "{texts}");
    assert_eq!(texts, json!([plain]));
    let (_, texts) = server
        .post(
            "/decode",
            &json!({"ids": [ids, [7592]], "skip_special_tokens": false}),
        )
        .await;
    assert!(
        texts[0].as_str().unwrap().starts_with("[CLS] a cat"),
        "{texts}"
    );
    assert_eq!(texts[1], "hello");

    let (status, body) = server.post("/decode", &json!({"ids": [30522]})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(tei_error_type(&body), "Validation");
}

/// The same labels in the same order, with scores equal to float rounding: a text's scores
/// move in the last bits with the batch it shares a pass with (padding, kernel choice by shape).
fn assert_same_predictions(got: &Value, want: &Value) {
    let rows = |v: &Value| -> Vec<(String, f64)> {
        v.as_array()
            .unwrap_or_else(|| panic!("a list of predictions: {v}"))
            .iter()
            .map(|p| {
                (
                    p["label"].as_str().unwrap_or_default().to_string(),
                    p["score"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect()
    };
    let (g, w) = (rows(got), rows(want));
    assert_eq!(g.len(), w.len(), "{got} vs {want}");
    for ((gl, gs), (wl, ws)) in g.iter().zip(&w) {
        assert_eq!(gl, wl, "{got} vs {want}");
        assert!((gs - ws).abs() < 1e-5, "{got} vs {want}");
    }
}

#[tokio::test]
async fn tei_predict_answers_every_label_single_and_batched() {
    let labels = ["billing", "shipping", "returns"];
    let bundle = tiny_with_head(&labels);
    let server = Server::start_bundle(&bundle, FAST).await;
    let texts = ["where is my parcel", "refund please"];
    let (_, native) = server
        .post("/v1/classify", &json!({"inputs": texts, "top_k": 3}))
        .await;

    let (status, single) = server.post("/predict", &json!({"inputs": texts[0]})).await;
    assert_eq!(status, 200, "{single}");
    assert_eq!(single.as_array().unwrap().len(), 3, "every label: {single}");
    assert_same_predictions(&single, &native["results"][0]);

    let batch = json!({"inputs": [[texts[0]], [texts[1]]]});
    let (_, batched) = server.post("/predict", &batch).await;
    assert_eq!(batched.as_array().map(Vec::len), Some(2), "{batched}");
    for (got, want) in batched
        .as_array()
        .unwrap()
        .iter()
        .zip(native["results"].as_array().unwrap())
    {
        assert_same_predictions(got, want);
    }

    let (_, raw) = server
        .post("/predict", &json!({"inputs": texts[0], "raw_scores": true}))
        .await;
    let scores: Vec<f64> = raw
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{raw}");
    assert!(
        (scores.iter().sum::<f64>() - 1.0).abs() > 1e-3,
        "logits, not probabilities: {raw}"
    );

    // Two texts side by side are a sentence pair in TEI: refused.
    let (status, body) = server.post("/predict", &json!({"inputs": texts})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(tei_error_type(&body), "Validation");
    let _ = std::fs::remove_dir_all(&bundle);

    // A model without a head.
    let plain = Server::start(FAST).await;
    let (status, body) = plain.post("/predict", &json!({"inputs": "x"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(tei_error_type(&body), "Validation");
}

#[tokio::test]
async fn info_carries_teis_fields_beside_its_own() {
    let server = Server::start(FAST).await;
    let (status, info) = server.get("/info").await;
    assert_eq!(status, 200);
    // Ours, unchanged.
    assert_eq!(info["model"], "tiny-aft");
    assert_eq!(info["dimensions"], 32);
    assert_eq!(info["limits"]["max_input_tokens"], 128);
    // TEI's.
    assert_eq!(info["model_id"], "tiny-aft");
    assert_eq!(info["model_dtype"], "float16");
    assert_eq!(
        info["model_type"],
        json!({"embedding": {"pooling": "mean"}})
    );
    assert_eq!(info["max_input_length"], 128);
    assert_eq!(info["max_batch_tokens"], 1024);
    assert_eq!(info["max_batch_requests"], 16);
    assert_eq!(info["max_client_batch_size"], 512);
    assert_eq!(info["auto_truncate"], true);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["model_sha"].as_str().map(str::len), Some(64));
    assert!(info["tokenization_workers"].as_u64().unwrap() >= 1);
    assert_eq!(info["models"][0]["model_id"], "tiny-aft");
}

#[tokio::test]
async fn tei_routes_need_the_key_and_answer_401_in_teis_shape() {
    let server = Server::start(&[FAST, &["--api-key", "tei-key-1"]].concat()).await;
    let client = reqwest::Client::new();
    for path in ["/embed", "/embed_all", "/predict", "/tokenize", "/"] {
        let r = client
            .post(server.url(path))
            .json(&json!({"inputs": "hello"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(tei_error_type(&r.json().await.unwrap()), "Validation");
    }
    let r = client
        .post(server.url("/embed"))
        .bearer_auth("tei-key-1")
        .json(&json!({"inputs": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
