//! Test harness: starts the real `aft-serve` binary on an ephemeral port, waits until it is
//! ready, and kills it on drop; plus helpers for the Python reference and for error shapes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_aft-serve");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny() -> PathBuf {
    repo().join("tests/fixtures/tiny-aft")
}

/// Flags that keep start-up quick on a small machine: the warm-up runs at the largest batch the
/// limits allow, so the limits stay small.
pub const FAST: &[&str] = &[
    "--max-batch-tokens",
    "1024",
    "--max-batch-size",
    "16",
    "--intra-op-threads",
    "1",
];

/// Runs the binary to completion on an ephemeral port, with `AFT_MODEL_DIR` set to
/// `model_dirs` (unset when `None`, as is `AFT_MODEL_NAME`), and returns (exit code, stderr +
/// stdout): for start-up errors.
pub fn run_to_exit(model_dirs: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.env_remove("AFT_MODEL_DIR").env_remove("AFT_MODEL_NAME");
    if let Some(dirs) = model_dirs {
        cmd.env("AFT_MODEL_DIR", dirs);
    }
    let out = cmd
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code().unwrap_or(-1), text)
}

pub struct Server {
    child: Child,
    pub base: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the tiny fixture with `args` and waits until `/health/ready` answers 200.
    pub async fn start(args: &[&str]) -> Server {
        Self::start_bundle(&tiny(), args).await
    }

    pub async fn start_bundle(bundle: &Path, args: &[&str]) -> Server {
        let server = Self::spawn(bundle, args, &[]);
        server.wait_ready().await;
        server
    }

    /// Starts the binary without waiting for readiness; `env` adds environment variables.
    pub fn spawn(bundle: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        // Only what the test says: no AFT_* from the caller's environment.
        for (key, _) in std::env::vars() {
            if key.starts_with("AFT_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied())
            .arg("--model-dir")
            .arg(bundle)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--log-level",
                "info,aft_serve=debug",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start aft-serve");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        // Drain both pipes for the whole life of the process, or it blocks on a full pipe.
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(addr) = listening_address(&line) {
                        let _ = tx.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "aft-serve did not report its address; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child,
            base: format!("http://{addr}"),
            logs,
        }
    }

    pub async fn wait_ready(&self) {
        let client = &reqwest::Client::new();
        let url = &self.url("/health/ready");
        let ready = || async move {
            let r = client.get(url).send().await;
            r.is_ok_and(|r| r.status() == 200)
        };
        if !poll_until(Duration::from_secs(120), Duration::from_millis(50), ready).await {
            panic!("server never became ready; logs:\n{}", self.log_text());
        }
    }

    /// Polls `/metrics` until the sample `name` satisfies `accept`; returns the exposition that
    /// did. Panics with the last exposition after 30 s.
    pub async fn wait_for_metric(&self, name: &str, accept: impl Fn(f64) -> bool) -> String {
        let last = Mutex::new(String::new());
        let (accept, last_ref) = (&accept, &last);
        let reached = poll_until(
            Duration::from_secs(30),
            Duration::from_millis(5),
            || async move {
                let metrics = self.metrics().await;
                let ok = accept(metric_value(&metrics, name));
                *last_ref.lock().unwrap() = metrics;
                ok
            },
        )
        .await;
        let metrics = last.into_inner().unwrap();
        assert!(
            reached,
            "{name} never reached the expected value:\n{metrics}"
        );
        metrics
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits (up to `limit`) for the process to exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal("TERM", limit)
    }

    /// Sends `SIG<name>` and waits (up to `limit`) for the process to exit.
    pub fn signal(&mut self, name: &str, limit: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_exit(limit)
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "aft-serve did not exit; logs:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// POSTs JSON and returns the status and the parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Calls `check` every `every` until it returns true (then true) or `limit` has passed (false).
pub async fn poll_until<F, Fut>(limit: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// POSTs `body` to `/v1/embed` in a task of its own; yields (status, headers, body; null when
/// the body is not JSON).
pub fn spawn_embed(
    server: &Server,
    body: Value,
) -> tokio::task::JoinHandle<(u16, reqwest::header::HeaderMap, Value)> {
    let url = server.url("/v1/embed");
    tokio::spawn(async move {
        let r = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap_or(Value::Null))
    })
}

/// A response header as text, if present.
pub fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("a text header").to_owned())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `... listening on 127.0.0.1:PORT ...` in a log line (human or JSON format).
fn listening_address(line: &str) -> Option<String> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// Asserts the one error shape, and returns the code.
pub fn assert_error_shape(body: &Value) -> String {
    let err = body
        .get("error")
        .unwrap_or_else(|| panic!("no `error` object in {body}"));
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {body}"
    );
    assert!(
        err["type"].as_str().is_some_and(|m| !m.is_empty()),
        "type: {body}"
    );
    let code = err["code"]
        .as_str()
        .unwrap_or_else(|| panic!("code: {body}"));
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "only `error` at the top: {body}"
    );
    code.to_owned()
}

pub fn python() -> PathBuf {
    std::env::var_os("AFT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv"))
        .join("bin/python")
}

/// Runs a Python snippet (in models/, so `aft` imports) with `args`; panics with its output on
/// failure and returns stdout.
pub fn run_python(code: &str, args: &[&str]) -> String {
    // A file rather than `-c`: torch.jit.script reads the source of the classes it compiles.
    let dir = tempdir("python");
    let script = dir.join("script.py");
    std::fs::write(&script, code).unwrap();
    let out = Command::new(python())
        .current_dir(repo().join("models"))
        .env("PYTHONPATH", repo().join("models"))
        .arg(&script)
        .args(args)
        .output()
        .expect("run python");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Reference {
    pub embeddings: Vec<Vec<f32>>,
    pub logits: Vec<Vec<f32>>,
    pub token_counts: Vec<usize>,
}

/// The eager PyTorch model's outputs for `texts` (`python -m aft.reference`).
pub fn reference(bundle: &Path, texts: &[String]) -> Reference {
    let dir = tempdir("reference");
    let input = dir.join("texts.json");
    let output = dir.join("out.json");
    std::fs::write(&input, serde_json::to_string(texts).unwrap()).unwrap();
    let out = Command::new(python())
        .current_dir(repo().join("models"))
        .args(["-m", "aft.reference", "--bundle"])
        .arg(bundle)
        .arg("--texts")
        .arg(&input)
        .arg("--out")
        .arg(&output)
        .output()
        .expect("run aft.reference");
    assert!(
        out.status.success(),
        "aft.reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let matrix = |key: &str| -> Vec<Vec<f32>> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    };
    Reference {
        embeddings: matrix("embeddings"),
        logits: matrix("logits"),
        token_counts: v["token_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect(),
    }
}

pub fn tempdir(name: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("aft-test-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn as_vec(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// A JSON list of vectors (TEI's answers, `/v1/embed`'s `embeddings`) as rows.
pub fn as_rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(as_vec)
        .collect()
}

pub fn normalized(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    v.iter().map(|x| (f64::from(*x) / n) as f32).collect()
}

/// ||a - b|| / ||b||.
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm = b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
    diff / norm.max(f64::MIN_POSITIVE)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Texts of many lengths, some longer than the tiny model's 128 tokens.
pub fn sample_texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "a cat sat on the mat",
        "The quick brown fox jumps over the lazy dog.",
        "hello",
        "Attention free transformers replace dot-product attention with element-wise operations.",
        "¿Dónde está la biblioteca? 图书馆在哪里？ 🚀",
        "x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.push("the rain in spain falls mainly on the plain ".repeat(8));
    texts.push("a very long document about many things ".repeat(40)); // > 128 tokens: truncated
    texts
}

/// A copy of the tiny bundle with a classifier head of `labels`, made by the Python exporter.
pub fn tiny_with_head(labels: &[&str]) -> PathBuf {
    let out = tempdir("tiny-head");
    let code = r#"
import dataclasses, json, sys
from aft.encoder import AFTEncoder
from aft.export import export_bundle
from aft.fixtures import TINY_CONFIG, tiny_model
out, tokenizer, labels = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
base = tiny_model()
cfg = dataclasses.replace(TINY_CONFIG, num_labels=len(labels))
import torch
torch.manual_seed(1)
model = AFTEncoder(cfg)
model.load_state_dict(base.state_dict(), strict=False)
with torch.no_grad():
    model.head.weight.normal_(0, 2.0)
export_bundle(model.eval(), tokenizer, out, name="tiny-head", labels=labels, dtype="float32")
"#;
    let labels = serde_json::to_string(labels).unwrap();
    run_python(
        code,
        &[
            out.to_str().unwrap(),
            tiny().join("tokenizer.json").to_str().unwrap(),
            &labels,
        ],
    );
    out
}

/// `aft_requests_total` for one route template and status.
pub fn requests_total(metrics: &str, route: &str, status: u16) -> f64 {
    metric_value(
        metrics,
        &format!(r#"aft_requests_total{{route="{route}",status="{status}"}}"#),
    )
}

/// The value of a metric line `name value` (name with labels as rendered).
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}
