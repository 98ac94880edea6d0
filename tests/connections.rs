//! Connection hardening against the real server over raw TCP: a half-sent header is cut off after
//! the header-read timeout, an idle keep-alive connection after the keep-alive timeout (and not
//! sooner), connections past the cap are refused while the others are served, and shutdown does
//! not wait for idle connections.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nhost: test\r\n\r\n";

/// Reads one HTTP/1.1 response with a Content-Length; returns its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("content-length");
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed mid-response");
                data.extend_from_slice(&buf[..n]);
            }
            return head[9..12].parse().unwrap();
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("no response within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed before a response");
        data.extend_from_slice(&buf[..n]);
    }
}

/// Waits until the server closes `stream` (EOF or reset) and returns how long that took; fails
/// if it sends anything or stays open past `limit`.
async fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!(
            "expected a close, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => panic!("the connection was still open after {limit:?}"),
    }
}

#[tokio::test]
async fn a_half_sent_header_is_closed_after_the_header_read_timeout() {
    let server = Server::start(
        &[
            FAST,
            &["--header-read-timeout", "1s", "--keep-alive-timeout", "60s"],
        ]
        .concat(),
    )
    .await;
    let mut slow = TcpStream::connect(addr(&server)).await.unwrap();
    slow.write_all(b"POST /v1/embed HTTP/1.1\r\nhost: test\r\ncontent-")
        .await
        .unwrap();
    let started = Instant::now();
    // The service answers others meanwhile.
    let (status, _) = server.get("/health/ready").await;
    assert_eq!(status, 200);
    wait_closed(&mut slow, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the 1 s header timeout"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout_and_not_before() {
    let server = Server::start(
        &[
            FAST,
            &["--header-read-timeout", "1s", "--keep-alive-timeout", "3s"],
        ]
        .concat(),
    )
    .await;
    let mut conn = TcpStream::connect(addr(&server)).await.unwrap();
    conn.write_all(LIVE).await.unwrap();
    assert_eq!(read_response(&mut conn).await, 200);
    // Idle for longer than the header timeout: between requests only the keep-alive one counts.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    conn.write_all(LIVE).await.unwrap();
    assert_eq!(read_response(&mut conn).await, 200);
    let idle = wait_closed(&mut conn, Duration::from_secs(15)).await;
    assert!(
        idle >= Duration::from_millis(2800),
        "closed after {idle:?} idle, before the 3 s keep-alive timeout"
    );
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_while_the_others_are_served() {
    let server = Server::start(&[FAST, &["--max-connections", "3"]].concat()).await;
    // Let the readiness poller's connections close (they come from another client).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr(&server)).await.unwrap();
        c.write_all(LIVE).await.unwrap();
        assert_eq!(read_response(&mut c).await, 200);
        held.push(c);
    }
    // A fourth is accepted and closed without an answer.
    let mut extra = TcpStream::connect(addr(&server)).await.unwrap();
    let _ = extra.write_all(LIVE).await;
    wait_closed(&mut extra, Duration::from_secs(5)).await;
    // Those already open keep being served.
    for c in &mut held {
        c.write_all(LIVE).await.unwrap();
        assert_eq!(read_response(c).await, 200);
    }
    // One closes; its slot serves a new connection.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = TcpStream::connect(addr(&server)).await.unwrap();
        if c.write_all(LIVE).await.is_ok() {
            let mut first = [0u8; 1];
            if let Ok(Ok(1)) =
                tokio::time::timeout(Duration::from_secs(2), c.peek(&mut first)).await
            {
                assert_eq!(read_response(&mut c).await, 200);
                break;
            }
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = server.log_text();
    assert!(logs.contains("connection cap reached"), "{logs}");
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_keep_alive_connections() {
    let mut server = Server::start(&[FAST, &["--keep-alive-timeout", "120s"]].concat()).await;
    let mut idle = TcpStream::connect(addr(&server)).await.unwrap();
    idle.write_all(LIVE).await.unwrap();
    assert_eq!(read_response(&mut idle).await, 200);
    let started = Instant::now();
    let status = server.terminate(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(server.log_text().contains("shut down cleanly"));
    wait_closed(&mut idle, Duration::from_secs(1)).await;
}
