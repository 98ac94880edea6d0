//! API keys and CORS.

mod common;

use aft_serve::server::{Verb, ROUTES};
use common::*;
use serde_json::json;

#[tokio::test]
async fn api_keys_guard_every_route_but_health_and_metrics() {
    let dir = tempdir("keys");
    let key_file = dir.join("keys.txt");
    std::fs::write(&key_file, "# ops key\nkey-from-file-7f3a\n").unwrap();
    let mut args = FAST.to_vec();
    args.extend([
        "--api-key",
        "key-from-flag-91bc",
        "--cors-allow-origin",
        "https://app.example",
    ]);
    // (FAST has no --api-key or CORS flags, so nothing is given twice.)
    let server = Server::spawn(
        &tiny(),
        &args,
        &[("AFT_API_KEY_FILE", key_file.to_str().unwrap())],
    );
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let body = json!({"inputs": "hello"});

    for auth in [
        None,
        Some("Bearer wrong-key"),
        Some("Basic a2V5"),
        Some("Bearer "),
        Some("key-from-flag-91bc"),
    ] {
        let mut req = client.post(server.url("/v1/embed")).json(&body);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert!(r.headers().contains_key("x-request-id"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(assert_error_shape(&body), "invalid_api_key");
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    for key in ["key-from-flag-91bc", "key-from-file-7f3a"] {
        for scheme in ["Bearer", "bearer"] {
            let r = client
                .post(server.url("/v1/embed"))
                .header("authorization", format!("{scheme} {key}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{scheme} {key}");
        }
    }
    // Every route of the table: the open ones answer without a key, every other one wants it.
    for route in ROUTES {
        let url = server.url(route.path);
        let req = match route.method {
            Verb::Get => client.get(url),
            Verb::Post => client.post(url).json(&body),
        };
        let status = req.send().await.unwrap().status();
        let expected = if route.open { 200 } else { 401 };
        assert_eq!(status, expected, "{route:?}");
    }
    // The document served lists exactly the routes of the table.
    let doc: serde_json::Value = client
        .get(server.url("/openapi.json"))
        .header("authorization", "Bearer key-from-flag-91bc")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().unwrap().keys();
            methods.map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut routed: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    routed.sort();
    assert_eq!(documented, routed);

    // CORS: a preflight from the allowed origin passes without a key; others get no grant.
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, server.url("/v1/embed"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let r = preflight("https://app.example").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = preflight("https://evil.example").await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    // Keys never reach the logs.
    let logs = server.log_text();
    assert!(logs.contains("api_keys=2"), "{logs}");
    assert!(!logs.contains("key-from-flag-91bc") && !logs.contains("key-from-file-7f3a"));
    let _ = std::fs::remove_dir_all(&dir);
}
