//! Samples → wire metrics: the one place that turns what a sample is about
//! into tags and fields, with Kubernetes metadata when there is some.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{About, ContainerIdentity, Sample};
use crate::sink::wire::Metric;

/// What Kubernetes says about a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub workload: String,
    pub workload_kind: String,
    /// Pod labels (already without `pod-template-hash` and
    /// `controller-revision-hash`).
    pub labels: Vec<(String, String)>,
    /// `spec.nodeName`.
    pub node: String,
    /// `spec.containers[].name` (not init or ephemeral containers).
    pub containers: Vec<String>,
}

impl PodMeta {
    /// The tags container metrics carry for their pod (SPEC §5) that OTLP
    /// data (`trace.*`, OTLP metrics) carries too: `namespace`, `pod`, and
    /// `workload` + `workload_kind` when the pod has a workload.
    pub fn tags(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let w = !self.workload.is_empty();
        [
            ("namespace", self.namespace.as_str(), true),
            ("pod", self.name.as_str(), true),
            ("workload", self.workload.as_str(), w),
            ("workload_kind", self.workload_kind.as_str(), w),
        ]
        .into_iter()
        .filter(|(_, v, keep)| *keep && !v.is_empty())
        .map(|(k, v, _)| (k, v))
    }
}

/// Who a connection's peer address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A pod of this node (by `status.podIPs`).
    Pod(Arc<PodMeta>),
    /// The node itself: a host-network pod or process (or loopback).
    HostNetwork,
    /// Nothing this node knows.
    Unknown,
}

/// A source of pod metadata (the watch cache). Lookups never block.
pub trait Metadata: Send + Sync {
    fn pod(&self, uid: &str) -> Option<Arc<PodMeta>>;
    /// The pod and container name of a container, joined on its id.
    fn container(&self, id: &ContainerIdentity) -> Option<(Arc<PodMeta>, String)>;
    /// Whether there are pods to know at all (`false` in local mode, where
    /// the OTLP receiver then skips enrichment entirely).
    fn knows_pods(&self) -> bool {
        false
    }
    /// The pod of this node with `(namespace, name)`.
    fn pod_by_name(&self, _namespace: &str, _name: &str) -> Option<Arc<PodMeta>> {
        None
    }
    /// Who `ip` is (IPv4-mapped IPv6 addresses already made IPv4).
    fn peer(&self, _ip: IpAddr) -> Peer {
        Peer::Unknown
    }
}

/// Local mode: nothing known beyond the cgroup path.
pub struct NoMetadata;

impl Metadata for NoMetadata {
    fn pod(&self, _uid: &str) -> Option<Arc<PodMeta>> {
        None
    }
    fn container(&self, _id: &ContainerIdentity) -> Option<(Arc<PodMeta>, String)> {
        None
    }
}

/// What every metric of a cycle shares.
#[derive(Debug, Clone)]
pub struct CycleContext<'a> {
    pub node: &'a str,
    pub cluster_id: &'a str,
    pub timestamp_ms: i64,
}

/// Turn samples into wire metrics. Non-finite values pass through:
/// delivery drops and counts them ([`crate::delivery::Delivery::submit_metrics`]),
/// the one place that knows JSON has no such numbers.
pub fn to_wire(
    samples: impl IntoIterator<Item = Sample>,
    ctx: &CycleContext<'_>,
    meta: &dyn Metadata,
    out: &mut Vec<Metric>,
) {
    out.extend(samples.into_iter().map(|s| one(s, ctx, meta)));
}

fn add_pod_tags(tags: &mut BTreeMap<String, String>, m: &Metric, pod: Option<&PodMeta>) {
    if let Some(p) = pod {
        if !p.workload.is_empty() {
            tags.insert("workload".into(), p.workload.clone());
            tags.insert("workload_kind".into(), p.workload_kind.clone());
        }
        for (k, v) in &p.labels {
            tags.insert(format!("label.{k}"), v.clone());
        }
    }
    for (k, v) in [
        ("namespace", &m.namespace),
        ("pod", &m.pod_name),
        ("pod_uid", &m.pod_uid),
    ] {
        if !v.is_empty() {
            tags.insert(k.into(), v.clone());
        }
    }
}

fn one(s: Sample, ctx: &CycleContext<'_>, meta: &dyn Metadata) -> Metric {
    let mut m = Metric {
        timestamp: ctx.timestamp_ms,
        metric_name: s.name.to_string(),
        value: s.value,
        unit: s.unit.to_string(),
        tags: BTreeMap::new(),
        cluster_id: ctx.cluster_id.to_string(),
        node_name: ctx.node.to_string(),
        namespace: String::new(),
        pod_name: String::new(),
        container_name: String::new(),
        pod_uid: String::new(),
    };
    let mut tags = BTreeMap::new();
    match &s.about {
        About::Node | About::Tags => {}
        About::Named(n) => {
            m.metric_name.clone_from(&n.name);
            m.unit.clone_from(&n.unit);
            for (k, v) in &n.tags {
                tags.insert(k.clone(), v.clone());
            }
        }
        About::Container(id) => {
            let found = meta.container(id);
            let pod = match &found {
                Some((p, _)) => Some(p.clone()),
                None => id.pod_uid.as_deref().and_then(|u| meta.pod(u)),
            };
            m.container_name = match &found {
                Some((_, name)) => name.clone(),
                None => id.name.clone(),
            };
            m.pod_uid = id.pod_uid.clone().unwrap_or_default();
            if let Some(p) = &pod {
                m.namespace = p.namespace.clone();
                m.pod_name = p.name.clone();
            }
            tags.insert("container".into(), m.container_name.clone());
            if !id.container_id.is_empty() {
                tags.insert("container_id".into(), id.container_id.clone());
            }
            add_pod_tags(&mut tags, &m, pod.as_deref());
        }
        About::Pod { pod_uid } => {
            let pod = meta.pod(pod_uid);
            m.pod_uid = pod_uid.to_string();
            if let Some(p) = &pod {
                m.namespace = p.namespace.clone();
                m.pod_name = p.name.clone();
            }
            tags.insert("container".into(), String::new());
            add_pod_tags(&mut tags, &m, pod.as_deref());
        }
    }
    for (k, v) in s.tags {
        tags.insert(k.to_string(), v);
    }
    tags.entry("node".into())
        .or_insert_with(|| ctx.node.to_string());
    m.tags = tags;
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{QosClass, Runtime};

    fn ctx() -> CycleContext<'static> {
        CycleContext {
            node: "n1",
            cluster_id: "prod",
            timestamp_ms: 1732650000123,
        }
    }

    #[test]
    fn container_without_metadata_has_path_identity() {
        let id = Arc::new(ContainerIdentity {
            runtime: Runtime::Containerd,
            container_id: "abc".into(),
            pod_uid: Some("3f0e2b1a-77c4-4d7e-9a51-6c2d8e9f0a12".into()),
            qos: Some(QosClass::Burstable),
            name: "abc".into(),
        });
        let mut out = vec![];
        to_wire(
            vec![
                Sample::new("container.memory.usage", 5.0, "bytes", About::Container(id)),
                Sample::node("node.load.1", f64::NAN, "count"),
            ],
            &ctx(),
            &NoMetadata,
            &mut out,
        );
        // a NaN is delivery's to drop (and count)
        assert_eq!(out.len(), 2);
        assert!(out[1].value.is_nan());
        let j = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(j["pod_uid"], "3f0e2b1a-77c4-4d7e-9a51-6c2d8e9f0a12");
        assert_eq!(j["container_name"], "abc");
        assert_eq!(j["tags"]["node"], "n1");
        assert_eq!(j["tags"]["container"], "abc");
        assert_eq!(j["tags"]["pod_uid"], "3f0e2b1a-77c4-4d7e-9a51-6c2d8e9f0a12");
        assert!(j.get("namespace").is_none());
        assert!(j.get("pod_name").is_none());
    }

    #[test]
    fn named_sample_takes_its_name_unit_and_tags() {
        let named = crate::model::Named {
            name: "http.server.duration.p99".into(),
            unit: "ms".into(),
            tags: vec![
                ("route".into(), "/a".into()),
                ("service".into(), "api".into()),
            ],
        };
        let mut out = vec![];
        to_wire(
            vec![Sample::new("", 12.5, "", About::Named(Arc::new(named)))],
            &ctx(),
            &NoMetadata,
            &mut out,
        );
        let j = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(j["metric_name"], "http.server.duration.p99");
        assert_eq!(j["unit"], "ms");
        assert_eq!(j["value"], 12.5);
        assert_eq!(
            j["tags"],
            serde_json::json!({"route": "/a", "service": "api", "node": "n1"})
        );
    }

    #[test]
    fn node_metric_shape() {
        let mut out = vec![];
        to_wire(
            vec![Sample::node("node.load.1", 0.5, "count")],
            &ctx(),
            &NoMetadata,
            &mut out,
        );
        let s = serde_json::to_string(&out[0]).unwrap();
        assert_eq!(
            s,
            r#"{"timestamp":1732650000123,"metric_name":"node.load.1","value":0.5,"unit":"count","tags":{"node":"n1"},"cluster_id":"prod","node_name":"n1"}"#
        );
    }
}
