//! Every bad input in a table gets its status and the one error shape, and the service still
//! answers afterwards.

mod common;

use common::*;
use serde_json::json;

struct Case {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    what: &'static str,
    path: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        what,
        method: "POST",
        path,
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
    }
}

fn cases() -> Vec<Case> {
    let ten_thousand = serde_json::to_vec(&json!({"inputs": vec!["x"; 10_000]})).unwrap();
    let mut ten_mb = br#"{"inputs": [""#.to_vec();
    ten_mb.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    ten_mb.extend(br#""]}"#);
    let deep = format!(r#"{{"input": {}1{}}}"#, "[".repeat(5000), "]".repeat(5000));
    let long = "word ".repeat(400);
    let embed = "/v1/embed";
    let openai = "/v1/embeddings";
    let classify = "/v1/classify";
    vec![
        case("broken JSON", embed, r#"{"inputs": "#, 400, "invalid_json"),
        case("empty body", embed, "", 400, "invalid_json"),
        case(
            "trailing garbage",
            embed,
            r#"{"inputs": "a"} x"#,
            400,
            "invalid_json",
        ),
        case(
            "invalid escape",
            embed,
            r#"{"inputs": "\uZZZZ"}"#,
            400,
            "invalid_json",
        ),
        case(
            "lone surrogate",
            embed,
            r#"{"inputs": "\ud800"}"#,
            400,
            "invalid_json",
        ),
        case(
            "non-UTF-8 bytes",
            embed,
            b"{\"inputs\": \"\xff\xfe\xfd\"}".to_vec(),
            400,
            "invalid_json",
        ),
        case("nesting 5000 deep", openai, deep, 422, "invalid_input"),
        case(
            "nested array as a text",
            embed,
            r#"{"inputs": [[[[["a"]]]]]}"#,
            422,
            "invalid_input",
        ),
        case(
            "nesting 100000 deep, unclosed",
            embed,
            format!(r#"{{"inputs": {}"#, "[".repeat(100_000)),
            422,
            "invalid_input",
        ),
        case("body is an array", embed, "[1, 2]", 422, "invalid_input"),
        case(
            "body is a string",
            embed,
            r#""just text""#,
            422,
            "invalid_input",
        ),
        case("missing inputs", embed, "{}", 422, "invalid_input"),
        case(
            "inputs null",
            embed,
            r#"{"inputs": null}"#,
            422,
            "invalid_input",
        ),
        case(
            "inputs a number",
            embed,
            r#"{"inputs": 5}"#,
            422,
            "invalid_input",
        ),
        case(
            "inputs an object",
            embed,
            r#"{"inputs": {"a": 1}}"#,
            422,
            "invalid_input",
        ),
        case(
            "nested arrays",
            embed,
            r#"{"inputs": [["a"]]}"#,
            422,
            "invalid_input",
        ),
        case(
            "number among texts",
            embed,
            r#"{"inputs": ["a", 1]}"#,
            422,
            "invalid_input",
        ),
        case(
            "null among texts",
            embed,
            r#"{"inputs": ["a", null]}"#,
            422,
            "invalid_input",
        ),
        case(
            "empty list",
            embed,
            r#"{"inputs": []}"#,
            422,
            "invalid_input",
        ),
        case(
            "empty string",
            embed,
            r#"{"inputs": ""}"#,
            422,
            "invalid_input",
        ),
        case(
            "empty string in list",
            embed,
            r#"{"inputs": ["a", ""]}"#,
            422,
            "invalid_input",
        ),
        case(
            "normalize a string",
            embed,
            r#"{"inputs": "a", "normalize": "yes"}"#,
            422,
            "invalid_input",
        ),
        case(
            "truncate null",
            embed,
            r#"{"inputs": "a", "truncate": null}"#,
            422,
            "invalid_input",
        ),
        case(
            "dimensions 0",
            embed,
            r#"{"inputs": "a", "dimensions": 0}"#,
            422,
            "invalid_input",
        ),
        case(
            "dimensions negative",
            embed,
            r#"{"inputs": "a", "dimensions": -1}"#,
            422,
            "invalid_input",
        ),
        case(
            "dimensions too large",
            embed,
            r#"{"inputs": "a", "dimensions": 33}"#,
            422,
            "invalid_input",
        ),
        case(
            "dimensions huge",
            embed,
            r#"{"inputs": "a", "dimensions": 1e30}"#,
            422,
            "invalid_input",
        ),
        case(
            "dimensions past u64",
            embed,
            r#"{"inputs": "a", "dimensions": 99999999999999999999999}"#,
            422,
            "invalid_input",
        ),
        case(
            "unknown field",
            embed,
            r#"{"inputs": "a", "normalise": true}"#,
            422,
            "invalid_input",
        ),
        case(
            "duplicate field",
            embed,
            r#"{"inputs": "a", "inputs": "b"}"#,
            422,
            "invalid_input",
        ),
        case(
            "too long, truncate=false",
            embed,
            json!({"inputs": long, "truncate": false}).to_string(),
            422,
            "input_too_long",
        ),
        case("10,000 inputs", embed, ten_thousand, 413, "too_many_inputs"),
        case("10 MB body", embed, ten_mb, 413, "payload_too_large"),
        Case {
            content_type: Some("text/plain"),
            ..case(
                "text/plain",
                embed,
                r#"{"inputs": "a"}"#,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: None,
            ..case(
                "no content type",
                embed,
                r#"{"inputs": "a"}"#,
                415,
                "unsupported_media_type",
            )
        },
        case(
            "negative token id",
            openai,
            r#"{"input": [[101, -5, 102]]}"#,
            422,
            "invalid_input",
        ),
        case(
            "token id past the vocabulary",
            openai,
            r#"{"input": [101, 30522]}"#,
            422,
            "invalid_input",
        ),
        case(
            "token id past i64",
            openai,
            r#"{"input": [18446744073709551615]}"#,
            422,
            "invalid_input",
        ),
        case(
            "token id a float",
            openai,
            r#"{"input": [1e30]}"#,
            422,
            "invalid_input",
        ),
        case(
            "empty token list",
            openai,
            r#"{"input": [[101], []]}"#,
            422,
            "invalid_input",
        ),
        case(
            "token ids three deep",
            openai,
            r#"{"input": [[[101]]]}"#,
            422,
            "invalid_input",
        ),
        case(
            "texts mixed with ids",
            openai,
            r#"{"input": ["a", 101]}"#,
            422,
            "invalid_input",
        ),
        case(
            "input null",
            openai,
            r#"{"input": null}"#,
            422,
            "invalid_input",
        ),
        case(
            "missing input",
            openai,
            r#"{"model": "tiny-aft"}"#,
            422,
            "invalid_input",
        ),
        case(
            "unknown encoding",
            openai,
            r#"{"input": "a", "encoding_format": "binary"}"#,
            422,
            "invalid_input",
        ),
        case(
            "unknown model",
            openai,
            r#"{"input": "a", "model": "gpt-9"}"#,
            404,
            "model_not_found",
        ),
        case(
            "empty openai list",
            openai,
            r#"{"input": []}"#,
            422,
            "invalid_input",
        ),
        case(
            "classify without a head",
            classify,
            r#"{"inputs": "a"}"#,
            400,
            "no_classifier",
        ),
        case(
            "classify top_k negative",
            classify,
            r#"{"inputs": "a", "top_k": -1}"#,
            422,
            "invalid_input",
        ),
        Case {
            method: "GET",
            ..case("GET on a POST route", embed, "", 405, "method_not_allowed")
        },
        Case {
            method: "DELETE",
            ..case("DELETE on /info", "/info", "", 405, "method_not_allowed")
        },
        case("unknown route", "/v1/nothing", "{}", 404, "not_found"),
    ]
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_the_error_shape() {
    let server = Server::start(FAST).await;
    let client = reqwest::Client::new();
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for c in &cases {
        let mut req = client
            .request(c.method.parse().unwrap(), server.url(c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: request failed: {e}", c.what));
                continue;
            }
        };
        let status = response.status().as_u16();
        let has_id = response.headers().contains_key("x-request-id");
        let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        let shape = std::panic::catch_unwind(|| assert_error_shape(&body));
        match shape {
            Ok(code) if status == c.status && code == c.code && has_id => {}
            Ok(code) => failures.push(format!(
                "{}: got {status} {code}, want {} {}: {body}",
                c.what, c.status, c.code
            )),
            Err(_) => failures.push(format!(
                "{}: got {status} without the error shape: {body}",
                c.what
            )),
        }
        // Still serving after each one.
        assert_eq!(server.get("/health/live").await.0, 200, "after {}", c.what);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let (status, body) = server
        .post("/v1/embed", &json!({"inputs": ["still", "fine"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(server.get("/health/ready").await.0, 200);
    assert_eq!(
        metric_value(
            &server.metrics().await,
            r#"aft_queue_depth{model="tiny-aft"}"#
        ),
        0.0
    );
}
