//! # telemetry
//!
//! The Prometheus exporter that `authz-server` and `pubsub-guard` share. Each program keeps
//! its metrics in a [`prometheus_client`] [`Registry`] and, when its config names a
//! `metrics_listen` address, serves them with [`serve`]:
//!
//! - [`serve`]: a small HTTP/1.1 listener answering `GET /metrics` (and `HEAD`) with the
//!   registry in the OpenMetrics text format ([`CONTENT_TYPE`]), `404 Not Found` for any
//!   other path and `405 Method Not Allowed` for any other method. Request heads are bounded
//!   ([`MAX_HEAD`]) and must arrive within [`HEADER_READ_TIMEOUT`]; at most
//!   [`MAX_CONNECTIONS`] connections are open (a scraper needs one); it stops accepting when
//!   its `shutdown` future completes and gives open scrapes [`DRAIN_TIMEOUT`] to finish.
//! - [`bind`]: the listener, with an error that says which address could not be bound.
//! - [`latency_histogram`] and [`LATENCY_BUCKETS`]: the buckets every latency histogram of
//!   the project uses, from half a millisecond to about 16 seconds; [`LatencyFamily`] for
//!   such histograms by one label (the store latency by operation).
//! - [`scrape`]: reads one sample out of a scrape's text, by name and labels (for tests and
//!   scripts).
//!
//! What it does not do: TLS, authentication or push. Bind it to loopback (or a private
//! interface) and let the Prometheus server come to it.
//!
//! ```
//! use std::sync::Arc;
//! use prometheus_client::metrics::counter::Counter;
//! use prometheus_client::registry::Registry;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut registry = Registry::default();
//! let scrapes_seen = Counter::<u64>::default();
//! registry.register("demo_events", "Events seen", scrapes_seen.clone());
//! scrapes_seen.inc_by(3);
//!
//! let listener = telemetry::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(telemetry::serve(listener, Arc::new(registry), async {
//!     let _ = stopped.await;
//! }));
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
//! client
//!     .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
//!     .await
//!     .unwrap();
//! let mut answer = String::new();
//! client.read_to_string(&mut answer).await.unwrap();
//! let (_head, body) = answer.split_once("\r\n\r\n").unwrap();
//! assert_eq!(telemetry::scrape::sample(body, "demo_events_total", &[]), Some(3.0));
//!
//! stop.send(()).unwrap();
//! server.await.unwrap();
//! # }
//! ```

mod buckets;
mod exporter;
pub mod scrape;

pub use buckets::{LATENCY_BUCKETS, LatencyFamily, latency_family, latency_histogram};
pub use exporter::{
    BindError, CONTENT_TYPE, DRAIN_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD, bind,
    serve,
};
pub use prometheus_client;
pub use prometheus_client::registry::Registry;
