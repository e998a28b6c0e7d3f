//! The `/metrics` listener: HTTP/1.1 with hyper, a connection cap, a header-read deadline,
//! and a shutdown that stops accepting and lets open scrapes finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE as CONTENT_TYPE_HEADER, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// The `Content-Type` of a scrape: the OpenMetrics text format 1.0.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Open connections at most; a connection over the cap is closed at once. A Prometheus
/// server keeps one per target.
pub const MAX_CONNECTIONS: usize = 8;

/// How long a request head may take to arrive; a connection that sends none in time (or
/// stays idle that long between scrapes) is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The read buffer of a connection, and so the largest request head (hyper's smallest
/// allowed buffer); a longer head gets `431 Request Header Fields Too Large`.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a shutdown waits for the scrapes in progress.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the accept loop waits after an accept error that is not one connection's.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The metrics address could not be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct BindError {
    /// The address of the config's `metrics_listen`.
    pub addr: SocketAddr,
    /// Why (in use, not an address of this machine, a port below 1024…).
    pub source: std::io::Error,
}

/// Binds the metrics listener on `addr` (port 0 picks a free one: read it back with
/// `local_addr`).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Serves `registry` on `listener` until `shutdown` completes, then closes the listener,
/// ends idle connections and waits at most [`DRAIN_TIMEOUT`] for scrapes in progress.
///
/// Accept errors do not end it: they are logged and retried after 100 ms.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = tasks.join_next() => {
                if done.is_err_and(|e| e.is_panic()) {
                    tracing::error!("a metrics connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        // Dropping the stream closes it.
                        tracing::debug!(%peer, "metrics connection refused: {MAX_CONNECTIONS} are open");
                        continue;
                    };
                    let registry = Arc::clone(&registry);
                    let stop = stop_rx.clone();
                    tasks.spawn(async move {
                        let _slot = slot;
                        connection(stream, peer, registry, stop).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting metrics connections failed; retrying in 100 ms");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        () = &mut shutdown => break,
                    }
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, all_done).await.is_err() {
        tasks.shutdown().await;
    }
}

/// Serves one connection until it ends, times out, or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = answer(&registry, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    let http = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(http);
    tokio::select! {
        done = http.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        }
        () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
            // An idle connection closes now; one in the middle of a scrape finishes it.
            http.as_mut().graceful_shutdown();
            let _ = http.await;
        }
    }
}

/// The answer to one request.
fn answer<B>(registry: &Registry, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: this listener serves GET /metrics\n",
        );
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: GET /metrics\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(error = %e, "cannot encode the metrics");
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded; see the log\n",
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE_HEADER,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on a free loopback port with one counter family; stops when the sender is
    /// dropped or sent to.
    async fn start() -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let mut registry = Registry::default();
        let hits = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register("test_hits", "Hits by route", hits.clone());
        hits.get_or_create(&[("route", "/a")]).inc_by(2);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(registry), async {
            let _ = stopped.await;
        }));
        (addr, stop, server)
    }

    /// Sends `request` raw and reads the whole answer (the request asks to close).
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    fn get(method: &str, path: &str) -> Vec<u8> {
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_other_paths_and_methods() {
        let (addr, stop, server) = start().await;
        let answer = exchange(addr, &get("GET", "/metrics")).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{head}"
        );
        assert_eq!(
            crate::scrape::sample(body, "test_hits_total", &[("route", "/a")]),
            Some(2.0)
        );
        assert!(body.contains("# TYPE test_hits counter\n"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");

        let answer = exchange(addr, &get("GET", "/")).await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        let answer = exchange(addr, &get("GET", "/metrics/x")).await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");

        let answer = exchange(addr, &get("POST", "/metrics")).await;
        assert!(
            answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("allow: get, head\r\n"),
            "{answer}"
        );

        let answer = exchange(addr, &get("HEAD", "/metrics")).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with("\r\n\r\n"),
            "a HEAD answer has no body: {answer}"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_huge_head_is_refused() {
        let (addr, _stop, _server) = start().await;
        let mut request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 2 * MAX_HEAD));
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The server may close before it has read everything: a write error is fine.
        let _ = stream.write_all(&request).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_header_timeout() {
        let (addr, _stop, _server) = start().await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0; 64];
        let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, stream.read(&mut buf)).await;
        // Closed (possibly after a 408) before the test's own timeout.
        let n = read.expect("the server closed the connection").unwrap_or(0);
        let said = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || said.starts_with("HTTP/1.1 408"), "{said}");
    }

    #[tokio::test]
    async fn over_the_cap_a_connection_is_closed_at_once() {
        let (addr, stop, server) = start().await;
        let mut open = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            open.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Let the server accept them all.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // The open ones are still served.
        open[0].write_all(&get("GET", "/metrics")).await.unwrap();
        let mut answer = Vec::new();
        open[0].read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
        // Shutdown closes the idle ones and returns.
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
    }
}
