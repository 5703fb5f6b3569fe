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
