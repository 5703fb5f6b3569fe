//! Which pod of this node sent an OTLP resource, and what that adds to its
//! spans and metrics (issue 14).
//!
//! Per `ResourceSpans` / `ResourceMetrics`, what the sender said wins:
//! `k8s.pod.uid` → the pod by UID; else `k8s.pod.name` +
//! `k8s.namespace.name` → the pod by name; else the connection's peer
//! address → the pod by IP (`status.podIPs`). A resource that names a pod
//! this node does not have gets nothing (the peer is not asked: it would
//! contradict the sender); so does a peer on the host network (the node's
//! own addresses, loopback) or one no pod has.
//!
//! The peer is looked up at most once a request, whatever its number of
//! resources and spans; each lookup is one map read of the pod cache's
//! current index. Pure apart from those reads.

use std::net::IpAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use super::convert::attr_string;
use crate::enrich::{Metadata, Peer, PodMeta};
use crate::telemetry::Enrichment;

/// How a resource's pod was found (the `result` label of
/// `cased_agent_otlp_enrichment_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// By the resource's own `k8s.pod.uid` or `k8s.pod.name` +
    /// `k8s.namespace.name`.
    Resource,
    /// By the connection's peer address.
    Peer,
    /// Nothing: the peer is the node itself.
    HostNetwork,
    /// Nothing: no pod of this node has that address, or the resource
    /// names a pod this node does not have.
    Unknown,
}

impl Found {
    /// Its label on `/metrics`.
    pub fn telemetry(self) -> Enrichment {
        match self {
            Found::Resource => Enrichment::Resource,
            Found::Peer => Enrichment::Peer,
            Found::HostNetwork => Enrichment::HostNetwork,
            Found::Unknown => Enrichment::Unknown,
        }
    }

    pub const ALL: [Found; 4] = [
        Found::Resource,
        Found::Peer,
        Found::HostNetwork,
        Found::Unknown,
    ];
}

/// The pod of one resource, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub pod: Option<Arc<PodMeta>>,
    pub found: Found,
}

/// A string attribute of a resource (non-empty).
fn resource_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
}

/// The rule: the resource's own attributes, else the peer (`peer` is
/// called only then).
pub fn resolve(attrs: &[KeyValue], meta: &dyn Metadata, peer: impl FnOnce() -> Peer) -> Resolved {
    let named = if let Some(uid) = resource_str(attrs, "k8s.pod.uid") {
        Some(meta.pod(uid))
    } else if let (Some(name), Some(ns)) = (
        resource_str(attrs, "k8s.pod.name"),
        resource_str(attrs, "k8s.namespace.name"),
    ) {
        Some(meta.pod_by_name(ns, name))
    } else {
        None
    };
    let (pod, found) = match named {
        Some(Some(p)) => (Some(p), Found::Resource),
        Some(None) => (None, Found::Unknown),
        None => match peer() {
            Peer::Pod(p) => (Some(p), Found::Peer),
            Peer::HostNetwork => (None, Found::HostNetwork),
            Peer::Unknown => (None, Found::Unknown),
        },
    };
    Resolved { pod, found }
}

/// The OpenTelemetry semantic-conventions attribute naming a workload kind.
pub fn workload_attribute(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => "k8s.deployment.name",
        "StatefulSet" => "k8s.statefulset.name",
        "DaemonSet" => "k8s.daemonset.name",
        "ReplicaSet" => "k8s.replicaset.name",
        "Job" => "k8s.job.name",
        "CronJob" => "k8s.cronjob.name",
        _ => return None,
    })
}

/// What the spans of a resource from `pod` get: `k8s.namespace.name`,
/// `k8s.pod.name`, `k8s.pod.uid`, `k8s.node.name`, the workload's
/// attribute, `k8s.container.name` when the pod has one container. A key
/// the resource sets keeps the resource's value.
pub fn span_attributes(pod: &PodMeta, resource: &[KeyValue]) -> Vec<(String, String)> {
    let mut out: Vec<(&'static str, &str)> = vec![
        ("k8s.namespace.name", &pod.namespace),
        ("k8s.pod.name", &pod.name),
        ("k8s.pod.uid", &pod.uid),
        ("k8s.node.name", &pod.node),
    ];
    if let Some(key) = workload_attribute(&pod.workload_kind) {
        out.push((key, &pod.workload));
    }
    if let [one] = pod.containers.as_slice() {
        out.push(("k8s.container.name", one));
    }
    out.into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let sent = resource
                .iter()
                .rev()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.as_ref())
                .map(attr_string);
            (k.to_string(), sent.unwrap_or_else(|| v.to_string()))
        })
        .collect()
}

/// One request's lookups: the peer at most once, the outcome of each
/// resource counted for `/metrics`.
pub struct Resolver<'a> {
    meta: &'a dyn Metadata,
    peer_ip: Option<IpAddr>,
    peer: Option<Peer>,
    /// Resources per [`Found`] (in [`Found::ALL`] order).
    pub counts: [u64; 4],
}

impl<'a> Resolver<'a> {
    pub fn new(meta: &'a dyn Metadata, peer_ip: Option<IpAddr>) -> Self {
        Resolver {
            meta,
            peer_ip: peer_ip.map(|ip| ip.to_canonical()),
            peer: None,
            counts: [0; 4],
        }
    }

    /// The pod of one resource (its attributes).
    pub fn resolve(&mut self, attrs: &[KeyValue]) -> Option<Arc<PodMeta>> {
        let (meta, ip, cached) = (self.meta, self.peer_ip, &mut self.peer);
        let r = resolve(attrs, meta, || {
            cached
                .get_or_insert_with(|| ip.map_or(Peer::Unknown, |ip| meta.peer(ip)))
                .clone()
        });
        // `Found` in declaration order is `Found::ALL`'s order
        self.counts[r.found as usize] += 1;
        r.pod
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ContainerIdentity;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use std::cell::Cell;

    fn pod(name: &str, containers: &[&str]) -> Arc<PodMeta> {
        Arc::new(PodMeta {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            workload: "web".into(),
            workload_kind: "Deployment".into(),
            labels: vec![],
            node: "n1".into(),
            containers: containers.iter().map(|c| c.to_string()).collect(),
        })
    }

    struct Pods(Vec<Arc<PodMeta>>);

    impl Metadata for Pods {
        fn pod(&self, uid: &str) -> Option<Arc<PodMeta>> {
            self.0.iter().find(|p| p.uid == uid).cloned()
        }
        fn container(&self, _: &ContainerIdentity) -> Option<(Arc<PodMeta>, String)> {
            None
        }
        fn pod_by_name(&self, ns: &str, name: &str) -> Option<Arc<PodMeta>> {
            self.0
                .iter()
                .find(|p| p.namespace == ns && p.name == name)
                .cloned()
        }
        fn peer(&self, ip: IpAddr) -> Peer {
            match ip.to_string().as_str() {
                "10.0.0.1" => Peer::Pod(self.0[0].clone()),
                "192.168.1.5" => Peer::HostNetwork,
                _ => Peer::Unknown,
            }
        }
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resource_wins_over_the_peer() {
        let meta = Pods(vec![pod("a", &["app"]), pod("b", &["app", "sidecar"])]);
        let asked = Cell::new(0);
        let peer = || {
            asked.set(asked.get() + 1);
            meta.peer("10.0.0.1".parse().unwrap())
        };
        let by_uid = resolve(&[kv("k8s.pod.uid", "uid-b")], &meta, peer);
        assert_eq!(by_uid.found, Found::Resource);
        assert_eq!(by_uid.pod.unwrap().name, "b");
        let by_name = resolve(
            &[kv("k8s.pod.name", "b"), kv("k8s.namespace.name", "shop")],
            &meta,
            || unreachable!("the peer is not asked"),
        );
        assert_eq!(
            (by_name.found, by_name.pod.unwrap().name.as_str()),
            (Found::Resource, "b")
        );
        // a uid this node does not have: nothing, and not the peer's pod
        let gone = resolve(&[kv("k8s.pod.uid", "uid-zz")], &meta, || {
            unreachable!("the peer is not asked")
        });
        assert_eq!((gone.found, gone.pod), (Found::Unknown, None));
        // a name without its namespace does not name a pod: the peer
        let half = resolve(&[kv("k8s.pod.name", "b")], &meta, peer);
        assert_eq!(
            (half.found, half.pod.unwrap().name.as_str()),
            (Found::Peer, "a")
        );
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn peer_host_network_and_unknown() {
        let meta = Pods(vec![pod("a", &["app"])]);
        let mut r = Resolver::new(&meta, Some("::ffff:10.0.0.1".parse().unwrap()));
        assert_eq!(r.resolve(&[]).unwrap().name, "a");
        assert_eq!(r.resolve(&[kv("service.name", "x")]).unwrap().name, "a");
        assert_eq!(r.counts, [0, 2, 0, 0]);
        let mut host = Resolver::new(&meta, Some("192.168.1.5".parse().unwrap()));
        assert!(host.resolve(&[]).is_none());
        let mut none = Resolver::new(&meta, None);
        assert!(none.resolve(&[]).is_none());
        assert_eq!((host.counts, none.counts), ([0, 0, 1, 0], [0, 0, 0, 1]));
    }

    #[test]
    fn span_attributes_of_a_pod() {
        let one = span_attributes(&pod("a", &["app"]), &[]);
        let want = [
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "a"),
            ("k8s.pod.uid", "uid-a"),
            ("k8s.node.name", "n1"),
            ("k8s.deployment.name", "web"),
            ("k8s.container.name", "app"),
        ];
        let got: Vec<(&str, &str)> = one.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
        // two containers: which one sent is not known, so no container name
        let two = span_attributes(&pod("b", &["app", "sidecar"]), &[]);
        assert_eq!(two.len(), 5);
        assert!(two.iter().all(|(k, _)| k != "k8s.container.name"));
        // the resource's own value of a key wins
        let sent = span_attributes(&pod("a", &["app"]), &[kv("k8s.container.name", "main")]);
        assert_eq!(sent[5], ("k8s.container.name".into(), "main".into()));
        // no workload, or one without a semantic-conventions name
        let mut bare = (*pod("c", &[])).clone();
        bare.workload_kind = "Node".into();
        assert_eq!(span_attributes(&bare, &[]).len(), 4);
        assert_eq!(workload_attribute("CronJob"), Some("k8s.cronjob.name"));
        assert_eq!(
            workload_attribute("StatefulSet"),
            Some("k8s.statefulset.name")
        );
    }

    #[test]
    fn spans_get_their_pods_attributes_without_overwrite() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let meta = Pods(vec![pod("a", &["app"]), pod("b", &["app"])]);
        let span = |attrs: Vec<KeyValue>| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: attrs,
            ..Default::default()
        };
        let rs = |resource: Vec<KeyValue>, spans: Vec<Span>| ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                rs(
                    vec![kv("service.name", "api")],
                    vec![span(vec![]), span(vec![kv("k8s.pod.name", "mine")])],
                ),
                rs(
                    vec![kv("service.name", "api"), kv("k8s.pod.uid", "uid-b")],
                    vec![span(vec![])],
                ),
            ],
        };
        let mut r = Resolver::new(&meta, Some("10.0.0.1".parse().unwrap()));
        let c = super::super::convert::convert_with(req, "c", Some(&mut r));
        assert_eq!(r.counts, [1, 1, 0, 0]);
        let at = |i: usize, k: &str| c.spans[i].attributes.get(k).unwrap_or_default().to_string();
        assert_eq!(at(0, "k8s.pod.name"), "a");
        assert_eq!(at(0, "k8s.pod.uid"), "uid-a");
        assert_eq!(c.spans[0].attributes.len(), 6);
        // the span's own key stays
        assert_eq!(at(1, "k8s.pod.name"), "mine");
        assert_eq!(at(1, "k8s.pod.uid"), "uid-a");
        assert_eq!(at(2, "k8s.pod.name"), "b");
        // one series per (service, pod)
        assert_eq!(c.services, vec!["api", "api"]);
        let pods: Vec<&str> = c
            .pods
            .iter()
            .map(|p| p.as_ref().unwrap().name.as_str())
            .collect();
        assert_eq!(pods, vec!["a", "b"]);
        assert_eq!(
            c.stats.iter().map(|s| s.service).collect::<Vec<_>>(),
            vec![0, 0, 1]
        );
    }
}
