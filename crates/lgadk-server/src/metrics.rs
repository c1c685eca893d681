//! Prometheus metrics at `/metrics`: requests by route and status, run latency, active runs
//! and streams, tokens.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The server's metrics; clones share them.
#[derive(Clone)]
pub(crate) struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: Family<Labels, Counter>,
    runs: Family<Labels, Counter>,
    run_seconds: Histogram,
    active_runs: Gauge,
    active_streams: Gauge,
    tokens: Family<Labels, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("lgadk_server");
        let requests = Family::<Labels, Counter>::default();
        registry.register("http_requests", "HTTP requests by method, route and status", requests.clone());
        let runs = Family::<Labels, Counter>::default();
        registry.register("runs", "Finished runs by status", runs.clone());
        // 1 ms to ~65 s.
        let run_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register("run_duration_seconds", "Wall time of runs, from start to saved turn", run_seconds.clone());
        let active_runs = Gauge::default();
        registry.register("active_runs", "Runs pending or running", active_runs.clone());
        let active_streams = Gauge::default();
        registry.register("active_streams", "Open SSE streams", active_streams.clone());
        let tokens = Family::<Labels, Counter>::default();
        registry.register("tokens", "Model tokens of finished runs, by direction", tokens.clone());
        Self(Arc::new(Inner { registry, requests, runs, run_seconds, active_runs, active_streams, tokens }))
    }

    pub(crate) fn request(&self, method: &str, route: &str, status: u16) {
        let labels = vec![("method", method.to_owned()), ("route", route.to_owned()), ("status", status.to_string())];
        self.0.requests.get_or_create(&labels).inc();
    }

    pub(crate) fn run_started(&self) {
        self.0.active_runs.inc();
    }

    pub(crate) fn run_finished(&self, status: &str, took: Duration, tokens_in: u64, tokens_out: u64) {
        self.0.active_runs.dec();
        self.0.runs.get_or_create(&vec![("status", status.to_owned())]).inc();
        self.0.run_seconds.observe(took.as_secs_f64());
        self.0.tokens.get_or_create(&vec![("direction", "in".to_owned())]).inc_by(tokens_in);
        self.0.tokens.get_or_create(&vec![("direction", "out".to_owned())]).inc_by(tokens_out);
    }

    /// Counts an open stream until the guard is dropped.
    pub(crate) fn stream_opened(&self) -> StreamGuard {
        self.0.active_streams.inc();
        StreamGuard(self.clone())
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.0.registry);
        text
    }
}

/// An open SSE stream, counted in `active_streams` while it lives.
pub(crate) struct StreamGuard(Metrics);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.0.active_streams.dec();
    }
}
