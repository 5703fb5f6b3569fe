//! The agent's own counters and gauges, served on `/metrics` (SPEC §6).
//!
//! One [`Telemetry`] is built at start and shared (`Arc`) with every part
//! that counts something. Names are prefixed `cased_agent_`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectorLabel {
    pub collector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `metrics` or `spans`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    /// `metrics` or `spans`.
    pub kind: String,
    /// Why: `permanent` (4xx), `queue_full` (oldest dropped), `shutdown`
    /// (grace period over, nothing to keep it in), `non_finite` (NaN/inf),
    /// `corrupt` (a disk buffer record unreadable when it was due).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OtlpLabel {
    /// `http` or `grpc`.
    pub transport: String,
    /// `accepted`, `refused` (span buffer full), `malformed`, `too_large`,
    /// `unsupported` (content type or encoding).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// OTLP enrichment: `resource`, `peer`, `host_network`, `unknown`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// Disk buffer operation: `open`, `write`, `sync`, `read`, `cursor`,
    /// `delete`.
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabel {
    /// `pods` (this node's pods) or `events` (cluster events, leader only).
    pub watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// HTTP tracing: `unanswered` (connection closed or idle with requests
    /// waiting), `unmatched` (a response with no request), `pending_limit`,
    /// `conn_limit`.
    pub reason: String,
}

pub struct Telemetry {
    registry: Registry,
    pub cycles: Counter,
    pub cycle_duration_seconds: Gauge<f64, AtomicU64>,
    pub last_cycle_timestamp_seconds: Gauge<f64, AtomicU64>,
    pub metrics_produced: Counter,
    pub collector_errors: Family<CollectorLabel, Counter>,
    pub container_errors: Counter,
    pub containers: Gauge,
    pub batches_sent: Family<KindLabel, Counter>,
    pub items_sent: Family<KindLabel, Counter>,
    pub batches_retried: Family<KindLabel, Counter>,
    pub batches_dropped: Family<DropLabel, Counter>,
    pub items_dropped: Family<DropLabel, Counter>,
    pub queue_bytes: Gauge,
    pub queue_batches: Gauge,
    pub queue_capacity_bytes: Gauge,
    pub otlp_requests: Family<OtlpLabel, Counter>,
    pub spans_received: Counter,
    pub spans_refused: Counter,
    pub otel_metrics_requests: Family<OtlpLabel, Counter>,
    pub otlp_enrichment: Family<ResultLabel, Counter>,
    pub otel_points_received: Counter,
    pub otel_points_rejected: Counter,
    pub otel_points_overflow: Counter,
    pub otel_series: Gauge,
    pub otel_series_freed: Counter,
    pub buffer_disk_bytes: Gauge,
    pub buffer_memory_fallback: Gauge,
    pub buffer_recovered_batches: Counter,
    pub buffer_corrupt_records: Counter,
    pub buffer_corrupt_bytes: Counter,
    pub buffer_errors: Family<OpLabel, Counter>,
    pub k8s_watch_up: Family<WatchLabel, Gauge>,
    pub k8s_watch_errors: Family<WatchLabel, Counter>,
    pub k8s_watch_relists: Family<WatchLabel, Counter>,
    pub k8s_pods_cached: Gauge,
    pub k8s_owner_lookups: Counter,
    pub k8s_leader: Gauge,
    pub k8s_leader_transitions: Counter,
    pub k8s_events_seen: Counter,
    pub ebpf_up: Gauge,
    pub ebpf_events: Counter,
    pub ebpf_events_lost: Counter,
    pub ebpf_connections: Gauge,
    pub http_requests: Counter,
    pub http_dropped: Family<ReasonLabel, Counter>,
    undelivered_batches: AtomicU64,
    // delivery lanes (one disk queue each): how many are in memory
    // fallback; `buffer_memory_fallback` shows whether any is
    buffer_fallback_lanes: std::sync::atomic::AtomicI64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cased_agent");
        let t = Telemetry {
            cycles: Counter::default(),
            cycle_duration_seconds: Gauge::default(),
            last_cycle_timestamp_seconds: Gauge::default(),
            metrics_produced: Counter::default(),
            collector_errors: Family::default(),
            container_errors: Counter::default(),
            containers: Gauge::default(),
            batches_sent: Family::default(),
            items_sent: Family::default(),
            batches_retried: Family::default(),
            batches_dropped: Family::default(),
            items_dropped: Family::default(),
            queue_bytes: Gauge::default(),
            queue_batches: Gauge::default(),
            queue_capacity_bytes: Gauge::default(),
            otlp_requests: Family::default(),
            spans_received: Counter::default(),
            spans_refused: Counter::default(),
            otel_metrics_requests: Family::default(),
            otlp_enrichment: Family::default(),
            otel_points_received: Counter::default(),
            otel_points_rejected: Counter::default(),
            otel_points_overflow: Counter::default(),
            otel_series: Gauge::default(),
            otel_series_freed: Counter::default(),
            buffer_disk_bytes: Gauge::default(),
            buffer_memory_fallback: Gauge::default(),
            buffer_recovered_batches: Counter::default(),
            buffer_corrupt_records: Counter::default(),
            buffer_corrupt_bytes: Counter::default(),
            buffer_errors: Family::default(),
            k8s_watch_up: Family::default(),
            k8s_watch_errors: Family::default(),
            k8s_watch_relists: Family::default(),
            k8s_pods_cached: Gauge::default(),
            k8s_owner_lookups: Counter::default(),
            k8s_leader: Gauge::default(),
            k8s_leader_transitions: Counter::default(),
            k8s_events_seen: Counter::default(),
            ebpf_up: Gauge::default(),
            ebpf_events: Counter::default(),
            ebpf_events_lost: Counter::default(),
            ebpf_connections: Gauge::default(),
            http_requests: Counter::default(),
            http_dropped: Family::default(),
            undelivered_batches: AtomicU64::new(0),
            buffer_fallback_lanes: std::sync::atomic::AtomicI64::new(0),
            registry: Registry::default(),
        };
        registry.register("cycles", "Collection cycles completed", t.cycles.clone());
        registry.register(
            "cycle_duration_seconds",
            "Wall time of the last collection cycle",
            t.cycle_duration_seconds.clone(),
        );
        registry.register(
            "last_cycle_timestamp_seconds",
            "Unix time the last collection cycle completed",
            t.last_cycle_timestamp_seconds.clone(),
        );
        registry.register(
            "metrics_produced",
            "Metrics produced by collection cycles",
            t.metrics_produced.clone(),
        );
        registry.register(
            "collector_errors",
            "Collector failures (that collector's part of a cycle was lost)",
            t.collector_errors.clone(),
        );
        registry.register(
            "container_errors",
            "Containers whose metrics were lost for a cycle (file vanished, malformed)",
            t.container_errors.clone(),
        );
        registry.register(
            "containers",
            "Containers (and services) seen in the last cycle",
            t.containers.clone(),
        );
        registry.register("batches_sent", "Batches delivered", t.batches_sent.clone());
        registry.register(
            "items_sent",
            "Metrics or spans delivered",
            t.items_sent.clone(),
        );
        registry.register(
            "batches_retried",
            "Delivery attempts that failed transiently and were retried",
            t.batches_retried.clone(),
        );
        registry.register(
            "batches_dropped",
            "Batches dropped, by reason",
            t.batches_dropped.clone(),
        );
        registry.register(
            "items_dropped",
            "Metrics or spans dropped, by reason",
            t.items_dropped.clone(),
        );
        registry.register(
            "queue_bytes",
            "Bytes waiting in the delivery queue",
            t.queue_bytes.clone(),
        );
        registry.register(
            "queue_batches",
            "Batches waiting in the delivery queue",
            t.queue_batches.clone(),
        );
        registry.register(
            "queue_capacity_bytes",
            "Bound of the delivery queue in bytes",
            t.queue_capacity_bytes.clone(),
        );
        registry.register(
            "otlp_requests",
            "OTLP export requests, by transport and outcome",
            t.otlp_requests.clone(),
        );
        registry.register(
            "spans_received",
            "Spans accepted by the OTLP receiver (each is queued for delivery)",
            t.spans_received.clone(),
        );
        registry.register(
            "spans_refused",
            "Spans refused with 503/RESOURCE_EXHAUSTED because the span buffer was full (the sender retries them); requests refused before decoding count in otlp_requests{outcome=\"refused\"} only",
            t.spans_refused.clone(),
        );
        registry.register(
            "otlp_metrics_requests",
            "OTLP metrics export requests, by transport and outcome",
            t.otel_metrics_requests.clone(),
        );
        registry.register(
            "otlp_enrichment",
            "OTLP resources (ResourceSpans, ResourceMetrics) by how their pod was found: resource (its k8s.pod.* attributes), peer (the sender's address), host_network (the node's address: none), unknown (none)",
            t.otlp_enrichment.clone(),
        );
        registry.register(
            "otlp_metric_points_received",
            "OTLP metric data points added to a series",
            t.otel_points_received.clone(),
        );
        registry.register(
            "otlp_metric_points_rejected",
            "OTLP metric data points left out as invalid (reported to the sender in partial_success)",
            t.otel_points_rejected.clone(),
        );
        registry.register(
            "otlp_metric_points_overflow",
            "OTLP metric data points of series over --otel-max-series-per-service (or of services over the service cap): counted, not kept",
            t.otel_points_overflow.clone(),
        );
        registry.register(
            "otlp_metric_series",
            "OTLP metric series held after the last interval",
            t.otel_series.clone(),
        );
        registry.register(
            "otlp_metric_series_freed",
            "OTLP metric series freed after not being seen for 5 intervals",
            t.otel_series_freed.clone(),
        );
        registry.register(
            "buffer_disk_bytes",
            "Bytes of undelivered batches in the disk buffer",
            t.buffer_disk_bytes.clone(),
        );
        registry.register(
            "buffer_memory_fallback",
            "1 while the disk buffer is unusable and batches queue in memory only",
            t.buffer_memory_fallback.clone(),
        );
        registry.register(
            "buffer_recovered_batches",
            "Batches found in the disk buffer at start (delivered first)",
            t.buffer_recovered_batches.clone(),
        );
        registry.register(
            "buffer_corrupt_records",
            "Torn or corrupt regions of the disk buffer skipped",
            t.buffer_corrupt_records.clone(),
        );
        registry.register(
            "buffer_corrupt_bytes",
            "Bytes of the disk buffer skipped as torn or corrupt",
            t.buffer_corrupt_bytes.clone(),
        );
        registry.register(
            "buffer_errors",
            "Disk buffer I/O failures, by operation (open, write, sync, read, cursor, delete)",
            t.buffer_errors.clone(),
        );
        registry.register(
            "k8s_watch_up",
            "1 while the API server watch is connected and current, 0 while it fails and retries",
            t.k8s_watch_up.clone(),
        );
        registry.register(
            "k8s_watch_errors",
            "API server watch or list failures (each retried with backoff)",
            t.k8s_watch_errors.clone(),
        );
        registry.register(
            "k8s_watch_relists",
            "Full lists of a watched collection (start, 410 Expired, reconnect)",
            t.k8s_watch_relists.clone(),
        );
        registry.register(
            "k8s_pods_cached",
            "Pods of this node in the metadata cache",
            t.k8s_pods_cached.clone(),
        );
        registry.register(
            "k8s_owner_lookups",
            "Owner (ReplicaSet, Job) metadata requests to the API server",
            t.k8s_owner_lookups.clone(),
        );
        registry.register(
            "k8s_leader",
            "1 while this agent holds the events Lease (and counts cluster events)",
            t.k8s_leader.clone(),
        );
        registry.register(
            "k8s_leader_transitions",
            "Times this agent became the events leader",
            t.k8s_leader_transitions.clone(),
        );
        registry.register(
            "k8s_events_seen",
            "Kubernetes event occurrences counted by this agent (as leader)",
            t.k8s_events_seen.clone(),
        );
        registry.register(
            "ebpf_up",
            "1 when the eBPF HTTP tracer is loaded and attached",
            t.ebpf_up.clone(),
        );
        registry.register(
            "ebpf_events",
            "Events read from the eBPF ring buffer",
            t.ebpf_events.clone(),
        );
        registry.register(
            "ebpf_events_lost",
            "eBPF events lost because the ring buffer was full",
            t.ebpf_events_lost.clone(),
        );
        registry.register(
            "ebpf_connections",
            "Connections the HTTP tracer follows",
            t.ebpf_connections.clone(),
        );
        registry.register(
            "http_requests_traced",
            "HTTP requests paired with their response by the eBPF tracer",
            t.http_requests.clone(),
        );
        registry.register(
            "http_dropped",
            "HTTP requests or responses the tracer gave up on, by reason",
            t.http_dropped.clone(),
        );
        Telemetry { registry, ..t }
    }

    /// Prometheus text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn drop_items(&self, kind: &str, reason: &str, batches: u64, items: u64) {
        let l = DropLabel {
            kind: kind.to_string(),
            reason: reason.to_string(),
        };
        if batches > 0 {
            self.batches_dropped.get_or_create(&l).inc_by(batches);
        }
        self.items_dropped.get_or_create(&l).inc_by(items);
        if reason != "non_finite" {
            self.undelivered_batches
                .fetch_add(batches, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Batches dropped for any reason but a non-finite value, since start
    /// (`--once` exits non-zero when this is not zero).
    pub fn undelivered_batches(&self) -> u64 {
        self.undelivered_batches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn http_dropped(&self, reason: &str, n: u64) {
        self.http_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(n);
    }

    /// `n` OTLP resources whose pod was found as `result` says.
    pub fn otlp_enriched(&self, result: &str, n: u64) {
        self.otlp_enrichment
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc_by(n);
    }

    pub fn otel_metrics_request(&self, transport: &str, outcome: &str) {
        self.otel_metrics_requests
            .get_or_create(&OtlpLabel {
                transport: transport.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn otlp_request(&self, transport: &str, outcome: &str) {
        self.otlp_requests
            .get_or_create(&OtlpLabel {
                transport: transport.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A delivery lane's buffer entered (`true`) or left memory fallback:
    /// `buffer_memory_fallback` is 1 while any lane is in it.
    pub fn buffer_fallback(&self, on: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let d = if on { 1 } else { -1 };
        let n = self.buffer_fallback_lanes.fetch_add(d, Relaxed) + d;
        self.buffer_memory_fallback.set(i64::from(n > 0));
    }

    pub fn buffer_error(&self, op: &str) {
        self.buffer_errors
            .get_or_create(&OpLabel { op: op.to_string() })
            .inc();
    }

    /// Whether the last list/watch request of `watch` was answered.
    pub fn k8s_watch_state(&self, watch: &str, up: bool) {
        let l = WatchLabel {
            watch: watch.to_string(),
        };
        self.k8s_watch_up.get_or_create(&l).set(i64::from(up));
    }

    /// A list or watch of `watch` failed (it is retried).
    pub fn k8s_watch_error(&self, watch: &str) {
        let l = WatchLabel {
            watch: watch.to_string(),
        };
        self.k8s_watch_up.get_or_create(&l).set(0);
        self.k8s_watch_errors.get_or_create(&l).inc();
    }

    pub fn k8s_relist(&self, watch: &str) {
        self.k8s_watch_relists
            .get_or_create(&WatchLabel {
                watch: watch.to_string(),
            })
            .inc();
    }

    pub fn collector_error(&self, collector: &str) {
        self.collector_errors
            .get_or_create(&CollectorLabel {
                collector: collector.to_string(),
            })
            .inc();
    }
}
