//! The Cased API's JSON shapes (SPEC §3). Keep them byte-compatible: field
//! names and order, and the four pod fields omitted when empty.

use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// Every span attribute as a string (and the pod's, [`Attributes`]).
    pub attributes: Attributes,
    /// JSON-encoded array of `{"name", "time_unix_nano", "attributes"}`.
    pub events: String,
    pub http_method: String,
    pub http_status_code: i64,
    pub http_url: String,
    pub cluster_id: String,
}

/// A span's attributes: its own, and those the agent adds (a pod's
/// metadata, one list shared by every span of a resource, so enrichment
/// allocates nothing per span). One JSON object on the wire, the span's
/// own first; a key of its own wins over an added one.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub own: BTreeMap<String, String>,
    pub added: Option<Arc<[(String, String)]>>,
}

impl Attributes {
    /// The added attributes whose keys the span does not have.
    fn added(&self) -> impl Iterator<Item = (&str, &str)> {
        self.added
            .iter()
            .flat_map(|a| a.iter())
            .filter(|(k, _)| !self.own.contains_key(k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every attribute once: the span's own, then the added ones.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let own = self.own.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        own.chain(self.added())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.own.len() + self.added().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<BTreeMap<String, String>> for Attributes {
    fn from(own: BTreeMap<String, String>) -> Self {
        Attributes { own, added: None }
    }
}

impl PartialEq for Attributes {
    fn eq(&self, other: &Self) -> bool {
        fn all(a: &Attributes) -> BTreeMap<&str, &str> {
            a.iter().collect()
        }
        all(self) == all(other)
    }
}

impl Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(Attributes::from)
    }
}

impl StoredSpan {
    /// About the bytes of this span's JSON (a little more, unescaped): the
    /// encoder's buffer is made this large at once, so spans with many
    /// attributes (pod metadata adds six) never regrow it.
    pub fn json_len_hint(&self) -> usize {
        // field names, punctuation, ids, numbers
        let fixed = 360;
        let attrs: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum();
        fixed
            + attrs
            + self.service_name.len()
            + self.span_name.len()
            + self.status_message.len()
            + self.events.len()
            + self.http_method.len()
            + self.http_url.len()
            + self.cluster_id.len()
    }
}

/// Body of `POST /api/v1/telemetry/spans`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpansBatch<'a> {
    #[serde(borrow)]
    pub spans: std::borrow::Cow<'a, [StoredSpan]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_attributes_are_shared_and_never_overwrite() {
        let added: Arc<[(String, String)]> = vec![
            ("k8s.pod.name".to_string(), "web-1".to_string()),
            ("k8s.namespace.name".to_string(), "shop".to_string()),
        ]
        .into();
        let own = BTreeMap::from([
            ("http.route".to_string(), "/cart".to_string()),
            ("k8s.pod.name".to_string(), "mine".to_string()),
        ]);
        let a = Attributes {
            own,
            added: Some(added.clone()),
        };
        assert_eq!(a.len(), 3);
        assert_eq!(a.get("k8s.pod.name"), Some("mine"));
        assert_eq!(a.get("k8s.namespace.name"), Some("shop"));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"http.route":"/cart","k8s.pod.name":"mine","k8s.namespace.name":"shop"}"#
        );
        // read back: one map, equal to what was written
        let back: Attributes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.own.len(), 3);
        // shared, not copied: two spans, one list
        let b = a.clone();
        assert!(Arc::ptr_eq(
            a.added.as_ref().unwrap(),
            b.added.as_ref().unwrap()
        ));
        assert_eq!(Arc::strong_count(&added), 3);
    }

    #[test]
    fn json_len_hint_covers_the_encoding() {
        let mut s = StoredSpan {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            parent_span_id: "b7ad6b7169203332".into(),
            service_name: "checkout".into(),
            span_name: "GET /api/cart".into(),
            span_kind: 2,
            timestamp: 1_796_187_782_400,
            duration_ns: 12_345_678,
            status_code: 2,
            status_message: "boom".into(),
            attributes: Attributes::default(),
            events: "[]".into(),
            http_method: "GET".into(),
            http_status_code: 500,
            http_url: "/api/cart?id=7".into(),
            cluster_id: "prod-eu".into(),
        };
        for n in [0, 6, 12, 40] {
            s.attributes = Attributes::from(
                (0..n)
                    .map(|i| (format!("k8s.attr.{i}"), format!("value-{i}")))
                    .collect::<BTreeMap<_, _>>(),
            );
            let json = serde_json::to_vec(&s).unwrap().len();
            let hint = s.json_len_hint();
            assert!(hint >= json && hint <= json + 64, "{n}: {hint} vs {json}");
        }
    }
}
