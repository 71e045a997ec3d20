//! A minimal HTTP endpoint serving `/metrics` in Prometheus' text format.
//!
//! Each daemon instance owns its own `prometheus::Registry` (several run in one process
//! under `borg dev`), and serves it here.

use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest request head read; anything longer is answered 431 and dropped.
const REQUEST_HEAD_MAX_BYTES: usize = 8 * 1024;

/// Binds `addr` and serves `/metrics` until `shutdown` fires. Returns the bound address
/// (useful with port 0) once listening.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let registry = registry.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, &registry).await {
                    tracing::debug!(%error, "metrics request failed");
                }
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: tokio::net::TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > REQUEST_HEAD_MAX_BYTES {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", b"").await;
        }
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    if method != b"GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
        )
        .await;
    }
    if path != b"/metrics" && !path.starts_with(b"/metrics?") {
        return respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"try /metrics\n",
        )
        .await;
    }
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&registry.gather(), &mut body) {
        let message = format!("encoding metrics failed: {error}\n");
        return respond(
            &mut stream,
            "500 Internal Server Error",
            "text/plain",
            message.as_bytes(),
        )
        .await;
    }
    respond(&mut stream, "200 OK", encoder.format_type(), &body).await
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_registry_and_nothing_else() {
        let registry = Registry::new();
        let counter = IntCounter::new("borg_test_things_total", "things").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);
        let shutdown = CancellationToken::new();
        let addr = serve_metrics("127.0.0.1:0".parse().unwrap(), registry, shutdown.clone())
            .await
            .unwrap();
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("borg_test_things_total 3"), "{metrics}");
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
        shutdown.cancel();
    }
}
