//! The Cased API's JSON shapes (SPEC §3). Keep them byte-compatible: field
//! names and order, and the four pod fields omitted when empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One metric as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Unix milliseconds of the collection cycle.
    pub timestamp: i64,
    pub metric_name: String,
    pub value: f64,
    pub unit: String,
    pub tags: BTreeMap<String, String>,
    pub cluster_id: String,
    pub node_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_uid: String,
}

/// Body of `POST /api/v1/telemetry/metrics`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MetricsBatch<'a> {
    #[serde(borrow)]
    pub metrics: std::borrow::Cow<'a, [Metric]>,
    pub cluster_id: std::borrow::Cow<'a, str>,
}

/// One span as the API takes it (SPEC §3), in the API's field order.
/// Every field is always present: an absent parent is `""`, an absent HTTP
/// status is `0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSpan {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, or empty for a root span.
    pub parent_span_id: String,
    pub service_name: String,
    pub span_name: String,
    /// OTLP `SpanKind` number.
    pub span_kind: i32,
    /// Span start, Unix milliseconds.
    pub timestamp: i64,
    pub duration_ns: u64,
    /// OTLP `Status.code` number (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    pub status_message: String,
    /// Every span attribute as a string.
    pub attributes: BTreeMap<String, String>,
    /// JSON-encoded array of `{"name", "time_unix_nano", "attributes"}`.
    pub events: String,
    pub http_method: String,
    pub http_status_code: i64,
    pub http_url: String,
    pub cluster_id: String,
}

/// Body of `POST /api/v1/telemetry/spans`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpansBatch<'a> {
    #[serde(borrow)]
    pub spans: std::borrow::Cow<'a, [StoredSpan]>,
}
