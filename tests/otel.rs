//! OpenTelemetry traces against a real OTLP/HTTP receiver built here on the collector's own
//! protobuf messages: a request's span continues the caller's W3C `traceparent`, its children
//! (tokenize, queue, batch, forward) link to it with their attributes, the service is named by
//! `OTEL_SERVICE_NAME`; and nothing is exported without `--otlp-endpoint`.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A span as received, with its service's name.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

/// An OTLP/HTTP trace receiver on an ephemeral loopback port.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, sink.clone()));
            }
        });
        Self { url, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

/// Answers OTLP export requests on one connection (keep-alive) until it closes.
async fn serve(mut conn: TcpStream, sink: Arc<Mutex<Vec<Received>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        assert!(head.starts_with("post /v1/traces "), "{head}");
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "{head}"
        );
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        let body_start = head_end + 4;
        while buf.len() < body_start + length {
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let request = ExportTraceServiceRequest::decode(&buf[body_start..body_start + length])
            .expect("an OTLP trace export");
        buf.drain(..body_start + length);
        {
            let mut sink = sink.lock().unwrap();
            for resource_spans in request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        sink.push(Received {
                            service: service.clone(),
                            span,
                        });
                    }
                }
            }
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if conn.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn a_request_is_traced_under_the_callers_traceparent_with_its_stages() {
    let collector = Collector::start().await;
    let mut args = FAST.to_vec();
    args.extend(["--otlp-endpoint", &collector.url]);
    let server = Server::spawn(
        &tiny(),
        &args,
        &[
            ("OTEL_SERVICE_NAME", "aft-trace-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    server.wait_ready().await;
    let texts = ["a cat sat on the mat", "hello", "the rain in spain"];
    let r = reqwest::Client::new()
        .post(server.url("/v1/embed"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"inputs": texts}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let tokens = body["usage"]["prompt_tokens"].as_i64().unwrap();
    // A TEI route without a traceparent starts a trace of its own.
    let (status, _) = server.post("/embed", &json!({"inputs": "hello"})).await;
    assert_eq!(status, 200);

    let ours = |spans: &[Received]| -> Vec<Received> {
        spans
            .iter()
            .filter(|s| hex::encode(&s.span.trace_id) == TRACE_ID)
            .cloned()
            .collect()
    };
    let complete = |spans: &[Received]| {
        let names: Vec<&str> = spans.iter().map(|s| s.span.name.as_str()).collect();
        ["request", "tokenize", "queue", "batch", "forward"]
            .iter()
            .all(|n| names.contains(n))
    };
    let arrived = poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let spans = ours(&collector.spans());
        async move { complete(&spans) }
    })
    .await;
    let spans = ours(&collector.spans());
    assert!(arrived, "spans of the trace: {spans:#?}");

    let by_name: HashMap<&str, &Span> = spans
        .iter()
        .map(|s| (s.span.name.as_str(), &s.span))
        .collect();
    let request = by_name["request"];
    assert_eq!(hex::encode(&request.parent_span_id), CALLER_SPAN);
    assert!(spans.iter().all(|s| s.service == "aft-trace-test"));
    assert_eq!(
        string_attr(&request.attributes, "http.route").as_deref(),
        Some("/v1/embed")
    );
    assert_eq!(
        int_attr(&request.attributes, "http.response.status_code"),
        Some(200)
    );
    for child in ["tokenize", "queue", "batch"] {
        assert_eq!(
            by_name[child].parent_span_id, request.span_id,
            "{child} is a child of the request"
        );
        assert_eq!(
            string_attr(&by_name[child].attributes, "model").as_deref(),
            Some("tiny-aft"),
            "{child}"
        );
    }
    let batch = by_name["batch"];
    assert_eq!(by_name["forward"].parent_span_id, batch.span_id);
    let size = int_attr(&batch.attributes, "batch.size").unwrap();
    assert!((1..=3).contains(&size), "{size}");
    assert!(int_attr(&batch.attributes, "batch.padded_tokens").unwrap() >= tokens / 3);
    assert_eq!(
        string_attr(&batch.attributes, "batch.lane").as_deref(),
        Some("short")
    );
    assert_eq!(
        int_attr(&by_name["tokenize"].attributes, "tokens"),
        Some(tokens)
    );
    // The stages follow one another inside the request (1 ms slack for the clock conversions).
    let slack = 1_000_000;
    let queue = by_name["queue"];
    assert!(by_name["tokenize"].end_time_unix_nano <= queue.start_time_unix_nano + slack);
    assert!(queue.end_time_unix_nano <= batch.start_time_unix_nano + slack);
    assert!(request.start_time_unix_nano <= by_name["tokenize"].start_time_unix_nano + slack);
    assert!(batch.end_time_unix_nano <= request.end_time_unix_nano + slack);

    // The TEI request's trace: a root span (no caller) with the same stages.
    let tei_arrived = poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let spans = collector.spans();
        async move {
            spans.iter().any(|s| {
                s.span.name == "request"
                    && string_attr(&s.span.attributes, "http.route").as_deref() == Some("/embed")
                    && s.span.parent_span_id.is_empty()
            })
        }
    })
    .await;
    assert!(tei_arrived, "{:#?}", collector.spans());
}

#[tokio::test]
async fn nothing_is_exported_without_otlp_endpoint() {
    let collector = Collector::start().await;
    // The OTLP exporter's own variable does not turn traces on: only --otlp-endpoint does.
    let server = Server::spawn(
        &tiny(),
        FAST,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    server.wait_ready().await;
    let (status, _) = server
        .post("/v1/embed", &json!({"inputs": ["a", "b"]}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
    assert!(!server.log_text().contains("exporting traces"));
}
