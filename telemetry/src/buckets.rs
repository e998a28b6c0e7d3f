//! The buckets of the latency histograms.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// The upper bounds, in seconds, of every latency histogram's buckets: from 0.5 ms, doubling,
/// to 16.384 s (15 buckets, and `+Inf`). Store calls land in the first ones, revocations
/// (a change-log poll away) around 0.1–1 s, and anything slower than a few seconds is an
/// incident whatever its exact figure.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096, 8.192, 16.384,
];

/// A histogram of latencies in seconds, with the [`LATENCY_BUCKETS`]. A plain function, so it
/// can construct a `Family`'s histograms
/// (`Family::<Labels, Histogram>::new_with_constructor(latency_histogram)`).
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Latency histograms by one label (`[("operation", "read")]`), each with the
/// [`LATENCY_BUCKETS`]. Label values are `&'static str`, so the set of series is bounded by
/// the code.
pub type LatencyFamily = Family<[(&'static str, &'static str); 1], Histogram, fn() -> Histogram>;

/// An empty [`LatencyFamily`].
pub fn latency_family() -> LatencyFamily {
    Family::new_with_constructor(latency_histogram)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_from_half_a_millisecond() {
        assert_eq!(LATENCY_BUCKETS[0], 0.0005);
        for pair in LATENCY_BUCKETS.windows(2) {
            assert_eq!(pair[1], pair[0] * 2.0);
        }
        let h = latency_histogram();
        h.observe(0.003);
        h.observe(100.0);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("t_seconds", "t", h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let bucket = |le| crate::scrape::sample(&text, "t_seconds_bucket", &[("le", le)]);
        assert_eq!(bucket("0.002"), Some(0.0));
        assert_eq!(bucket("0.004"), Some(1.0));
        assert_eq!(bucket("16.384"), Some(1.0));
        assert_eq!(bucket("+Inf"), Some(2.0));
        assert_eq!(
            crate::scrape::sample(&text, "t_seconds_count", &[]),
            Some(2.0)
        );
    }
}
