//! The OTLP receiver: span requests (traces) and metric requests, the
//! points they carry and the series they keep. Every OTLP family is here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::label::label_values;

label_values! {
    pub enum Transport {
        Http => "http",
        Grpc => "grpc",
    }
}

label_values! {
    /// How an export request ended.
    pub enum Outcome {
        Accepted => "accepted",
        /// Refused before or after decoding: the span buffer or the memory
        /// budget was full, or the receiver is shutting down.
        Refused => "refused",
        Malformed => "malformed",
        TooLarge => "too_large",
        /// Content type or encoding.
        Unsupported => "unsupported",
        /// The body did not arrive in time.
        Timeout => "timeout",
        /// A logs export sent to the metrics port.
        LogsNotAccepted => "logs_not_accepted",
    }
}

label_values! {
    /// How an OTLP resource's pod was found (or not).
    pub enum Enrichment {
        /// Its own `k8s.pod.uid` or `k8s.pod.name` + `k8s.namespace.name`.
        Resource => "resource",
        /// The sender's address.
        Peer => "peer",
        /// None: the sender is on the node's network.
        HostNetwork => "host_network",
        /// None: no pod of this node.
        Unknown => "unknown",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: Enrichment,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OtlpLabel {
    pub transport: Transport,
    pub outcome: Outcome,
}

pub struct OtlpTelemetry {
    pub requests: Family<OtlpLabel, Counter>,
    pub spans_received: Counter,
    pub spans_refused: Counter,
    pub metrics_requests: Family<OtlpLabel, Counter>,
    pub enrichment: Family<ResultLabel, Counter>,
    pub points_received: Counter,
    pub points_rejected: Counter,
    pub points_overflow: Counter,
    pub series: Gauge,
    pub series_freed: Counter,
}

impl OtlpTelemetry {
    pub(super) fn register(r: &mut Registry) -> Self {
        let t = OtlpTelemetry {
            requests: Family::default(),
            spans_received: Counter::default(),
            spans_refused: Counter::default(),
            metrics_requests: Family::default(),
            enrichment: Family::default(),
            points_received: Counter::default(),
            points_rejected: Counter::default(),
            points_overflow: Counter::default(),
            series: Gauge::default(),
            series_freed: Counter::default(),
        };
        t.register_traces(r);
        t.register_metrics(r);
        t
    }

    fn register_traces(&self, r: &mut Registry) {
        r.register(
            "otlp_requests",
            "OTLP export requests, by transport and outcome",
            self.requests.clone(),
        );
        r.register(
            "spans_received",
            "Spans accepted by the OTLP receiver (each is queued for delivery)",
            self.spans_received.clone(),
        );
        r.register(
            "spans_refused",
            "Spans refused with 503/RESOURCE_EXHAUSTED because the span buffer was full (the sender retries them); requests refused before decoding count in otlp_requests{outcome=\"refused\"} only",
            self.spans_refused.clone(),
        );
    }

    fn register_metrics(&self, r: &mut Registry) {
        r.register(
            "otlp_metrics_requests",
            "OTLP metrics export requests, by transport and outcome",
            self.metrics_requests.clone(),
        );
        r.register(
            "otlp_enrichment",
            "OTLP resources (ResourceSpans, ResourceMetrics) by how their pod was found: resource (its k8s.pod.* attributes), peer (the sender's address), host_network (the node's address: none), unknown (none)",
            self.enrichment.clone(),
        );
        r.register(
            "otlp_metric_points_received",
            "OTLP metric data points added to a series",
            self.points_received.clone(),
        );
        r.register(
            "otlp_metric_points_rejected",
            "OTLP metric data points left out as invalid (reported to the sender in partial_success)",
            self.points_rejected.clone(),
        );
        r.register(
            "otlp_metric_points_overflow",
            "OTLP metric data points of series over --otel-max-series-per-service (or of services over the service cap): counted, not kept",
            self.points_overflow.clone(),
        );
        r.register(
            "otlp_metric_series",
            "OTLP metric series held after the last interval",
            self.series.clone(),
        );
        r.register(
            "otlp_metric_series_freed",
            "OTLP metric series freed after not being seen for 5 intervals",
            self.series_freed.clone(),
        );
    }

    /// A span export request ended with `outcome`.
    pub fn request(&self, transport: Transport, outcome: Outcome) {
        self.requests
            .get_or_create(&OtlpLabel { transport, outcome })
            .inc();
    }

    /// A span export request refused because the span buffer was full.
    pub fn span_buffer_full(&self, transport: Transport) {
        self.request(transport, Outcome::Refused);
        crate::warn_limited!(
            "otlp:full",
            "span buffer full: refusing spans, the sender will retry"
        );
    }

    /// A metrics export request ended with `outcome`.
    pub fn metrics_request(&self, transport: Transport, outcome: Outcome) {
        self.metrics_requests
            .get_or_create(&OtlpLabel { transport, outcome })
            .inc();
    }

    /// `n` OTLP resources whose pod was found as `result` says.
    pub fn enriched(&self, result: Enrichment, n: u64) {
        self.enrichment
            .get_or_create(&ResultLabel { result })
            .inc_by(n);
    }

    /// Points of one metrics request: `kept` added to a series, `overflow`
    /// over a series cap, `rejected` invalid.
    pub fn points(&self, kept: u64, overflow: u64, rejected: u64) {
        self.points_received.inc_by(kept);
        self.points_overflow.inc_by(overflow);
        self.points_rejected.inc_by(rejected);
    }

    /// After an interval: `held` series kept, `freed` freed.
    pub fn series_after_interval(&self, held: i64, freed: u64) {
        self.series_freed.inc_by(freed);
        self.series.set(held);
    }
}
