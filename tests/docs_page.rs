//! `/docs` in a real browser: Debian's Chromium, headless, driven over the DevTools protocol. The
//! page renders every operation and schema from `/openapi.json`, its Markdown is rendered, a
//! "Try it out" call from the page succeeds, and the browser requests nothing outside the server.
//!
//! Needs `chromium` on PATH (`apt-get install chromium`), or its path in `AFT_BROWSER`.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn browser() -> PathBuf {
    if let Some(path) = std::env::var_os("AFT_BROWSER") {
        return PathBuf::from(path);
    }
    ["chromium", "chromium-browser"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
        .expect("no chromium on PATH: install Debian's `chromium` or set AFT_BROWSER")
}

/// Headless Chromium with a fresh profile, killed on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Browser {
    fn start() -> Self {
        let profile = tempdir("chromium");
        let child = Command::new(browser())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        Self { child, profile }
    }

    /// The browser's DevTools WebSocket URL, from the port file it writes into its profile.
    async fn endpoint(&self) -> String {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A minimal DevTools protocol client: commands answered in order, events kept.
struct Cdp {
    socket: Socket,
    next_id: u64,
    events: Vec<Value>,
}

impl Cdp {
    async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect to chromium's DevTools");
        Self {
            socket,
            next_id: 0,
            events: Vec::new(),
        }
    }

    /// Sends `method` (to the page `session`, when given) and returns its result.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send a DevTools command");
        let answer = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let frame = self.socket.next().await.expect("DevTools closed");
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if v["id"] == id {
                    return v;
                }
                self.events.push(v);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer"));
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Evaluates `expression` in the page, awaiting a promise, and returns its value.
    async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let result = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Every URL the page asked for so far.
    fn requested_urls(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Waits for a selector (within a time), then clicks through "Try it out" and "Execute" of the
/// operation `op` and returns the live response's status and body text.
const TRY_IT: &str = r##"
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const until = async (what, f) => {
    const start = Date.now();
    while (Date.now() - start < 30000) { const v = f(); if (v) return v; await sleep(50); }
    throw new Error("timed out waiting for " + what);
  };
  const op = await until("the operation", () => document.querySelector("#OP"));
  (op.querySelector(".opblock-summary-control") || op.querySelector(".opblock-summary")).click();
  (await until("Try it out", () => op.querySelector(".try-out__btn"))).click();
  (await until("Execute", () => op.querySelector(".execute"))).click();
  const status = await until("a response", () => op.querySelector(".live-responses-table tr.response .response-col_status"));
  const body = await until("its body", () => op.querySelector(".live-responses-table .response-col_description pre"));
  return {status: status.textContent.trim(), body: body.textContent};
})()
"##;

#[tokio::test]
async fn the_docs_page_renders_every_operation_and_try_it_out_works_offline() {
    let server = Server::start(FAST).await;
    let (_, doc) = server.get("/openapi.json").await;
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();

    let browser = Browser::start();
    let mut cdp = Cdp::connect(&browser.endpoint().await).await;
    let target = cdp
        .call(None, "Target.createTarget", json!({"url": "about:blank"}))
        .await;
    let attached = cdp
        .call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await;
    let session = attached["sessionId"].as_str().unwrap().to_owned();
    let s = Some(session.as_str());
    for domain in [
        "Network.enable",
        "Page.enable",
        "Runtime.enable",
        "Log.enable",
    ] {
        cdp.call(s, domain, json!({})).await;
    }
    cdp.call(s, "Page.navigate", json!({"url": server.url("/docs")}))
        .await;

    // Every operation of the document is on the page, and every schema.
    let rendered = cdp
        .eval(
            &session,
            r#"(async () => {
                const start = Date.now();
                while (Date.now() - start < 60000) {
                    const ops = document.querySelectorAll(".opblock").length;
                    if (ops > 0 && document.querySelector(".models")) {
                        return {ops, text: document.body.innerText,
                                code: [...document.querySelectorAll(".info .description code")].map(c => c.textContent)};
                    }
                    await new Promise(r => setTimeout(r, 100));
                }
                return null;
            })()"#,
        )
        .await;
    assert!(
        rendered.is_object(),
        "the page never rendered its operations"
    );
    assert_eq!(rendered["ops"], operations, "one block per operation");
    let text = rendered["text"].as_str().unwrap();
    for schema in [
        "EmbedRequest",
        "TeiEmbedRequest",
        "ErrorBody",
        "TeiErrorBody",
    ] {
        assert!(text.contains(schema), "schema {schema} not on the page");
    }
    // Markdown is rendered: `x-request-id` is code, not text between backticks.
    assert!(
        rendered["code"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "x-request-id"),
        "{}",
        rendered["code"]
    );

    // "Try it out" on /v1/embed with the example body, then on TEI's /embed.
    for (op, check) in [
        ("operations-inference-embed", "embeddings"),
        ("operations-tei-tei_embed", ""),
    ] {
        let answer = cdp.eval(&session, &TRY_IT.replace("OP", op)).await;
        // The status cell reads "200" (Swagger UI may append "Undocumented" and the like).
        let status = answer["status"].as_str().unwrap_or("");
        assert!(status.starts_with("200"), "{op}: status {status:?}");
        let body: Value = serde_json::from_str(answer["body"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{op}: {e}: {answer}"));
        let vectors = if check.is_empty() {
            &body
        } else {
            &body[check]
        };
        assert_eq!(vectors.as_array().map(Vec::len), Some(2), "{op}: {body}");
    }

    // Nothing outside the server was requested, and nothing was blocked or failed.
    let urls = cdp.requested_urls();
    assert!(
        urls.iter().any(|u| u.ends_with("/openapi.json")),
        "{urls:?}"
    );
    let outside: Vec<&String> = urls
        .iter()
        .filter(|u| !u.starts_with(&server.base) && !u.starts_with("data:"))
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the server: {outside:?}"
    );
    let problems: Vec<&Value> = cdp
        .events
        .iter()
        .filter(|e| {
            e["method"] == "Runtime.exceptionThrown"
                || (e["method"] == "Log.entryAdded" && e["params"]["entry"]["level"] == "error")
        })
        .collect();
    assert!(problems.is_empty(), "errors in the page: {problems:?}");
}
