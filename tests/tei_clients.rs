//! text-embeddings-inference clients as their users run them, against the real server: LangChain's
//! `HuggingFaceEndpointEmbeddings` (langchain-huggingface, through huggingface_hub's
//! `InferenceClient`, which posts to the server's `/`; since langchain-huggingface 1.2 the
//! embedder takes no URL, so it is given clients for one) and LlamaIndex's `TextEmbeddingsInference`
//! (which posts to `/embed`), sync and async, compared with `/v1/embed`; and what each client
//! makes of an error answer.

mod common;

use common::*;
use serde_json::{json, Value};

const SCRIPT: &str = r#"
import asyncio, json, os, sys
# huggingface_hub: no telemetry (HF_HUB_OFFLINE would refuse the server too: it blocks every URL).
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
from huggingface_hub import AsyncInferenceClient, InferenceClient
from langchain_huggingface import HuggingFaceEndpointEmbeddings
from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference
base, key, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
out = {}

def langchain(token):
    # langchain-huggingface 1.2 refuses a URL as `model` (it used to hand it to huggingface_hub);
    # a self-hosted server is reached by giving the embedder huggingface_hub clients for its URL.
    emb = HuggingFaceEndpointEmbeddings(model="tiny-aft", huggingfacehub_api_token=token)
    emb.client = InferenceClient(model=base, token=token)
    emb.async_client = AsyncInferenceClient(model=base, token=token)
    return emb

lc = langchain(key)
out["langchain_documents"] = lc.embed_documents(texts)
out["langchain_query"] = lc.embed_query(texts[0])
out["langchain_async"] = asyncio.run(lc.aembed_documents(texts))
li = TextEmbeddingsInference(model_name="tiny-aft", base_url=base, auth_token=key, embed_batch_size=2, timeout=30)
out["llamaindex_documents"] = li.get_text_embedding_batch(texts)
out["llamaindex_query"] = li.get_query_embedding(texts[0])
out["llamaindex_async"] = asyncio.run(li.aget_text_embedding(texts[1]))
errors = {}
try:
    langchain("wrong").embed_query("x")
except Exception as e:
    errors["langchain"] = [type(e).__name__, str(e)]
try:
    TextEmbeddingsInference(model_name="tiny-aft", base_url=base, auth_token="wrong").get_query_embedding("x")
except Exception as e:
    errors["llamaindex"] = [type(e).__name__, str(e)]
out["errors"] = errors
print(json.dumps(out))
"#;

#[tokio::test]
async fn langchain_and_llamaindex_tei_embedders_match_v1_embed() {
    let key = "tei-client-key";
    let server = Server::start(&[FAST, &["--api-key", key]].concat()).await;
    let texts: Vec<String> = sample_texts().into_iter().take(5).collect();
    let base = server.base.clone();
    let args = serde_json::to_string(&texts).unwrap();
    let stdout = tokio::task::spawn_blocking(move || run_python(SCRIPT, &[&base, key, &args]))
        .await
        .unwrap();
    let out: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));

    let expected: Value = reqwest::Client::new()
        .post(server.url("/v1/embed"))
        .bearer_auth(key)
        .json(&json!({"inputs": texts}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = as_rows(&expected["embeddings"]);
    let close = |got: &[Vec<f32>], want: &[Vec<f32>], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(max_abs_diff(a, b) <= 1e-6, "{what}: input {i} differs");
        }
    };
    close(
        &as_rows(&out["langchain_documents"]),
        &expected,
        "LangChain embed_documents",
    );
    close(
        &as_rows(&out["langchain_async"]),
        &expected,
        "LangChain aembed_documents",
    );
    close(
        &[as_vec(&out["langchain_query"])],
        &expected[..1],
        "LangChain embed_query",
    );
    close(
        &as_rows(&out["llamaindex_documents"]),
        &expected,
        "LlamaIndex batch",
    );
    close(
        &[as_vec(&out["llamaindex_query"])],
        &expected[..1],
        "LlamaIndex query",
    );
    close(
        &[as_vec(&out["llamaindex_async"])],
        &expected[1..2],
        "LlamaIndex async",
    );

    // The server's `error` reaches LangChain's caller (huggingface_hub reads TEI's `error`).
    // LlamaIndex does not look at the status: it indexes the answer, so any error body (TEI's
    // own too, a JSON object) ends as a KeyError in the caller.
    let errors = &out["errors"];
    let (kind, message) = (
        &errors["langchain"][0],
        errors["langchain"][1].as_str().unwrap_or(""),
    );
    assert!(
        kind.as_str().is_some_and(|k| k.contains("HTTPError")),
        "{errors}"
    );
    assert!(
        message.contains("401") && message.contains("API key"),
        "{errors}"
    );
    assert_eq!(errors["llamaindex"][0], "KeyError", "{errors}");

    // Each client reached the route it is documented to use.
    let metrics = server.metrics().await;
    assert!(
        requests_total(&metrics, "/", 200) >= 3.0,
        "LangChain posts to /"
    );
    assert!(
        requests_total(&metrics, "/embed", 200) >= 3.0,
        "LlamaIndex posts to /embed"
    );
}
