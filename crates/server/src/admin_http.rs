//! The admin HTTP port: `/metrics` (Prometheus), `/healthz` (the process answers) and
//! `/readyz` (the node serves: registered and its replicas open). A deliberately tiny
//! HTTP/1.1 responder (GET only, one request per connection): three fixed paths do not
//! justify a web framework's compile time. Real builds only; the simulation has no
//! scraper.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of request head read at most; anything longer is answered 431.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    pub ready: Arc<AtomicBool>,
}

/// Serves until the listener fails. Each connection is handled on its own task.
pub async fn serve(listener: TcpListener, state: AdminState) -> std::io::Result<()> {
    loop {
        let (conn, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(conn, &state).await {
                tracing::debug!(error = %e, "admin connection failed");
            }
        });
    }
}

async fn handle(mut conn: TcpStream, state: &AdminState) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > REQUEST_HEAD_BYTES_MAX {
            return respond(
                &mut conn,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
            )
            .await;
        }
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => {
            let body = crate::metrics::render(&state.registry);
            respond(
                &mut conn,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET", "/healthz") => respond(&mut conn, "200 OK", "text/plain", "ok\n").await,
        ("GET", "/readyz") if state.ready.load(Ordering::Relaxed) => {
            respond(&mut conn, "200 OK", "text/plain", "ready\n").await
        }
        ("GET", "/readyz") => {
            respond(
                &mut conn,
                "503 Service Unavailable",
                "text/plain",
                "not ready\n",
            )
            .await
        }
        ("GET", _) => {
            respond(
                &mut conn,
                "404 Not Found",
                "text/plain",
                "try /metrics, /healthz or /readyz\n",
            )
            .await
        }
        _ => {
            respond(
                &mut conn,
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n",
            )
            .await
        }
    }
}

async fn respond(
    conn: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let (_m, registry) = crate::metrics::Metrics::new();
        let ready = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            AdminState {
                registry: Arc::new(registry),
                ready: ready.clone(),
            },
        ));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(
            get(addr, "/metrics")
                .await
                .contains("runnel_under_replicated_shards")
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    }
}
