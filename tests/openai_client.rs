//! The official `openai` Python client against the server: embeddings (its default base64
//! encoding and floats), token-id input, models, and its error classes.

mod common;

use common::*;
use serde_json::{json, Value};

const SCRIPT: &str = r#"
import json, sys
import openai
base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
out = {}
r = client.embeddings.create(model="tiny-aft", input=["a cat sat on the mat", "hello"])
out["default"] = [d.embedding for d in r.data]
out["usage"] = [r.usage.prompt_tokens, r.usage.total_tokens]
out["model"] = r.model
r = client.embeddings.create(model="tiny-aft", input="hello", encoding_format="float", dimensions=8)
out["float_dims"] = r.data[0].embedding
r = client.embeddings.create(model="tiny-aft", input=[[101, 7592, 102]])
out["ids"] = r.data[0].embedding
out["models"] = [m.id for m in client.models.list()]
errors = {}
try:
    client.embeddings.create(model="gpt-9", input="x")
except openai.NotFoundError as e:
    errors["model"] = [e.status_code, e.code, e.type]
try:
    client.embeddings.create(model="tiny-aft", input=[])
except openai.UnprocessableEntityError as e:
    errors["empty"] = [e.status_code, e.code, e.type]
try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).embeddings.create(model="tiny-aft", input="x")
except openai.AuthenticationError as e:
    errors["auth"] = [e.status_code, e.code, e.type]
out["errors"] = errors
print(json.dumps(out))
"#;

#[tokio::test]
async fn the_official_openai_client_works() {
    let mut args = FAST.to_vec();
    args.extend(["--api-key", "sk-test-123"]);
    let server = Server::start(&args).await;
    let base = server.base.clone();
    let stdout = tokio::task::spawn_blocking(move || run_python(SCRIPT, &[&base, "sk-test-123"]))
        .await
        .unwrap();
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();

    let client = reqwest::Client::new();
    let embed = |inputs: Value, extra: Value| {
        let mut body = json!({"inputs": inputs});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        client
            .post(server.url("/v1/embed"))
            .bearer_auth("sk-test-123")
            .json(&body)
            .send()
    };
    let expected: Value = embed(json!(["a cat sat on the mat", "hello"]), json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for i in 0..2 {
        let got = as_vec(&out["default"][i]);
        let want = as_vec(&expected["embeddings"][i]);
        assert!(
            max_abs_diff(&got, &want) <= 1e-6,
            "input {i}: base64 round trip differs"
        );
    }
    assert_eq!(
        out["usage"],
        expected["usage"]["prompt_tokens"]
            .as_u64()
            .map(|t| json!([t, t]))
            .unwrap()
    );
    assert_eq!(out["model"], "tiny-aft");
    let dims: Value = embed(json!("hello"), json!({"dimensions": 8}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["float_dims"].as_array().unwrap().len(), 8);
    assert!(max_abs_diff(&as_vec(&out["float_dims"]), &as_vec(&dims["embeddings"][0])) <= 1e-6);
    // [CLS] hello [SEP] as ids is the text "hello".
    assert!(max_abs_diff(&as_vec(&out["ids"]), &as_vec(&expected["embeddings"][1])) <= 1e-6);
    assert_eq!(out["models"], json!(["tiny-aft"]));
    assert_eq!(
        out["errors"]["model"],
        json!([404, "model_not_found", "invalid_request_error"])
    );
    assert_eq!(
        out["errors"]["empty"],
        json!([422, "invalid_input", "invalid_request_error"])
    );
    assert_eq!(
        out["errors"]["auth"],
        json!([401, "invalid_api_key", "authentication_error"])
    );
}
