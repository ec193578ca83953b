//! Prometheus metrics of the gateway (its own registry, served as text on /metrics):
//! HTTP requests and latency per route, ingests by outcome, Triton call latency and
//! errors per model, text-embedding cache hits, faces detected, rerank calls and latency;
//! and what the last health check found (readiness, the store's size, each Triton endpoint),
//! refreshed on every scrape.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use triton_client::ClientError;

use crate::api::HealthResponse;

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_latency: HistogramVec,
    ingests: IntCounterVec,
    triton_latency: HistogramVec,
    triton_errors: IntCounterVec,
    text_cache: IntCounterVec,
    faces_detected: IntCounter,
    rerank_requests: IntCounterVec,
    rerank_latency: HistogramVec,
    ready: IntGauge,
    store_ready: IntGaugeVec,
    store_images: IntGaugeVec,
    triton_endpoint_ready: IntGaugeVec,
}

/// What happened to one uploaded photo.
#[derive(Clone, Copy, Debug)]
pub enum IngestOutcome {
    Created,
    AlreadyStored,
    Failed,
}

/// The `outcome` labels of `IngestOutcome`, in its order.
const INGEST_OUTCOMES: [&str; 3] = ["created", "already_stored", "failed"];

/// Rerank of 100 to 10,000 candidates takes microseconds to milliseconds.
const RERANK_BUCKETS: &[f64] = &[0.000_01, 0.000_05, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1];
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("gateway_http_requests_total", "HTTP requests by route, method and status"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let http_latency = HistogramVec::new(
            HistogramOpts::new("gateway_http_request_duration_seconds", "HTTP request latency by route")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("valid metric");
        let ingests =
            IntCounterVec::new(Opts::new("gateway_ingested_images_total", "uploaded photos by outcome"), &["outcome"])
                .expect("valid metric");
        let triton_latency = HistogramVec::new(
            HistogramOpts::new("gateway_triton_request_duration_seconds", "Triton inference latency by model")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["model"],
        )
        .expect("valid metric");
        let triton_errors = IntCounterVec::new(
            Opts::new("gateway_triton_errors_total", "failed Triton inference calls by model and kind"),
            &["model", "kind"],
        )
        .expect("valid metric");
        let text_cache = IntCounterVec::new(
            Opts::new("gateway_text_embedding_cache_total", "text-query embedding cache lookups"),
            &["result"],
        )
        .expect("valid metric");
        let faces_detected =
            IntCounter::new("gateway_faces_detected_total", "faces face_embed returned (face endpoints and ingest)")
                .expect("valid metric");
        let rerank_requests = IntCounterVec::new(
            Opts::new("gateway_rerank_requests_total", "face rerank calls by scorer (native, plugin) and outcome"),
            &["scorer", "outcome"],
        )
        .expect("valid metric");
        let rerank_latency = HistogramVec::new(
            HistogramOpts::new("gateway_rerank_duration_seconds", "face rerank scoring and sorting time by scorer")
                .buckets(RERANK_BUCKETS.to_vec()),
            &["scorer"],
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "gateway_ready",
            "1 when the last health check found Triton, its required models and the store ready",
        )
        .expect("valid metric");
        let store_ready = IntGaugeVec::new(
            Opts::new("gateway_store_ready", "1 when the store answered the last health check, by store kind"),
            &["store"],
        )
        .expect("valid metric");
        let store_images = IntGaugeVec::new(
            Opts::new(
                "gateway_store_images",
                "photos in the store at the last health check (absent while it does not answer)",
            ),
            &["store"],
        )
        .expect("valid metric");
        let triton_endpoint_ready = IntGaugeVec::new(
            Opts::new(
                "gateway_triton_endpoint_ready",
                "1 when the Triton endpoint answered ready to the last health check's probe",
            ),
            &["endpoint"],
        )
        .expect("valid metric");
        for metric in [&store_ready, &store_images, &triton_endpoint_ready] {
            registry.register(Box::new(metric.clone())).expect("unique metric");
        }
        registry.register(Box::new(ready.clone())).expect("unique metric");
        for metric in [&http_requests, &ingests, &triton_errors, &text_cache, &rerank_requests] {
            registry.register(Box::new(metric.clone())).expect("unique metric");
        }
        for metric in [&http_latency, &triton_latency, &rerank_latency] {
            registry.register(Box::new(metric.clone())).expect("unique metric");
        }
        registry.register(Box::new(faces_detected.clone())).expect("unique metric");
        // Every known label set starts at zero: a series born at 1 has no earlier sample, so
        // rate() would miss its first increments (and a hit rate would divide by zero).
        for outcome in INGEST_OUTCOMES {
            ingests.with_label_values(&[outcome]);
        }
        for result in ["hit", "miss"] {
            text_cache.with_label_values(&[result]);
        }
        for scorer in ["native", "plugin"] {
            rerank_latency.with_label_values(&[scorer]);
            for outcome in ["ok", "failed"] {
                rerank_requests.with_label_values(&[scorer, outcome]);
            }
        }
        Metrics {
            registry,
            http_requests,
            http_latency,
            ingests,
            triton_latency,
            triton_errors,
            text_cache,
            faces_detected,
            rerank_requests,
            rerank_latency,
            ready,
            store_ready,
            store_images,
            triton_endpoint_ready,
        }
    }

    /// Publishes a health report as gauges. A store that did not answer has no size: the old
    /// one is dropped rather than shown as current.
    pub fn record_health(&self, report: &HealthResponse) {
        self.ready.set(i64::from(report.status == "ok"));
        let store = &report.store;
        self.store_ready.with_label_values(&[&store.kind]).set(i64::from(store.ready));
        match store.images {
            Some(images) => self.store_images.with_label_values(&[&store.kind]).set(images as i64),
            None => {
                // Err only when the series was never set: nothing to drop.
                let _ = self.store_images.remove_label_values(&[&store.kind]);
            }
        }
        for endpoint in &report.triton.endpoints {
            self.triton_endpoint_ready.with_label_values(&[&endpoint.endpoint]).set(i64::from(endpoint.ready));
        }
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests.with_label_values(&[method, route, &status.to_string()]).inc();
        self.http_latency.with_label_values(&[method, route]).observe(elapsed.as_secs_f64());
    }

    pub fn count_ingest(&self, outcome: IngestOutcome) {
        let label = match outcome {
            IngestOutcome::Created => INGEST_OUTCOMES[0],
            IngestOutcome::AlreadyStored => INGEST_OUTCOMES[1],
            IngestOutcome::Failed => INGEST_OUTCOMES[2],
        };
        self.ingests.with_label_values(&[label]).inc();
    }

    pub fn observe_triton(&self, model: &str, elapsed: Duration, error: Option<&ClientError>) {
        self.triton_latency.with_label_values(&[model]).observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            let kind = match error {
                ClientError::Unavailable { .. } => "unavailable",
                ClientError::ConnectionLost { .. } => "connection_lost",
                ClientError::DeadlineExceeded { .. } => "deadline",
                ClientError::Rejected { .. } => "rejected",
                _ => "other",
            };
            self.triton_errors.with_label_values(&[model, kind]).inc();
        }
    }

    pub fn count_text_cache(&self, hit: bool) {
        self.text_cache.with_label_values(&[if hit { "hit" } else { "miss" }]).inc();
    }

    pub fn count_faces(&self, faces: usize) {
        self.faces_detected.inc_by(faces as u64);
    }

    /// One rerank call: `scorer` is `native` or `plugin`; a failed call has no latency.
    pub fn observe_rerank(&self, scorer: &str, elapsed: Option<Duration>) {
        let outcome = if elapsed.is_some() { "ok" } else { "failed" };
        self.rerank_requests.with_label_values(&[scorer, outcome]).inc();
        if let Some(elapsed) = elapsed {
            self.rerank_latency.with_label_values(&[scorer]).observe(elapsed.as_secs_f64());
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|err| format!("# encoding failed: {err}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FacesHealth, StoreHealth};
    use crate::inference::{EndpointHealth, InferenceHealth};

    fn report(store_images: Option<usize>, endpoints: &[(&str, bool)]) -> HealthResponse {
        let endpoints = endpoints
            .iter()
            .map(|(endpoint, ready)| EndpointHealth {
                endpoint: (*endpoint).to_owned(),
                ready: *ready,
                in_flight: 0,
                taken_out: 0,
                last_error: None,
            })
            .collect::<Vec<_>>();
        let triton_ready = endpoints.iter().any(|e| e.ready);
        let store_ready = store_images.is_some();
        HealthResponse {
            status: if triton_ready && store_ready { "ok" } else { "unavailable" },
            triton: InferenceHealth {
                ready: triton_ready,
                server_ready: triton_ready,
                models: Vec::new(),
                endpoints,
                error: None,
            },
            store: StoreHealth {
                kind: "embedded".into(),
                ready: store_ready,
                images: store_images,
                quarantined: 0,
                error: None,
                nodes: Vec::new(),
            },
            faces: FacesHealth { model: "face_embed".into(), index_on_ingest: false, rerank_scorer: "native".into() },
        }
    }

    #[test]
    fn known_label_sets_start_at_zero() {
        let text = Metrics::new().render();
        for line in [
            "gateway_ingested_images_total{outcome=\"created\"} 0",
            "gateway_ingested_images_total{outcome=\"already_stored\"} 0",
            "gateway_ingested_images_total{outcome=\"failed\"} 0",
            "gateway_text_embedding_cache_total{result=\"hit\"} 0",
            "gateway_text_embedding_cache_total{result=\"miss\"} 0",
            "gateway_rerank_requests_total{outcome=\"ok\",scorer=\"native\"} 0",
            "gateway_rerank_requests_total{outcome=\"failed\",scorer=\"plugin\"} 0",
            "gateway_rerank_duration_seconds_count{scorer=\"native\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn health_gauges_follow_the_last_report() {
        let metrics = Metrics::new();
        metrics.record_health(&report(Some(42), &[("http://a:8001", true), ("http://b:8001", false)]));
        let text = metrics.render();
        for line in [
            "gateway_ready 1",
            "gateway_store_ready{store=\"embedded\"} 1",
            "gateway_store_images{store=\"embedded\"} 42",
            "gateway_triton_endpoint_ready{endpoint=\"http://a:8001\"} 1",
            "gateway_triton_endpoint_ready{endpoint=\"http://b:8001\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // The store stops answering and the ready endpoint goes: no stale size, all zeros.
        metrics.record_health(&report(None, &[("http://a:8001", false), ("http://b:8001", false)]));
        let text = metrics.render();
        for line in [
            "gateway_ready 0",
            "gateway_store_ready{store=\"embedded\"} 0",
            "gateway_triton_endpoint_ready{endpoint=\"http://a:8001\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("gateway_store_images{"), "a stale store size is still shown:\n{text}");
    }

    #[test]
    fn renders_every_family_after_use() {
        let metrics = Metrics::new();
        metrics.observe_http("GET", "/search/text", 200, Duration::from_millis(3));
        metrics.count_ingest(IngestOutcome::Created);
        metrics.observe_triton("clip_text", Duration::from_millis(2), None);
        metrics.count_text_cache(true);
        metrics.count_faces(3);
        metrics.observe_rerank("native", Some(Duration::from_micros(40)));
        let text = metrics.render();
        for name in [
            "gateway_http_requests_total",
            "gateway_http_request_duration_seconds_bucket",
            "gateway_ingested_images_total{outcome=\"created\"} 1",
            "gateway_triton_request_duration_seconds",
            "gateway_text_embedding_cache_total{result=\"hit\"} 1",
            "gateway_faces_detected_total 3",
            "gateway_rerank_requests_total{outcome=\"ok\",scorer=\"native\"} 1",
            "gateway_rerank_duration_seconds_bucket",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
