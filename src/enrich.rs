//! Samples → wire metrics: the one place that turns what a sample is about
//! into tags and fields, with Kubernetes metadata when there is some.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{About, ContainerIdentity, Sample};
use crate::sink::render::{MetricOut, Subject, SubjectFields};

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

/// Turns samples into wire metrics. A container's (or pod's) tags and pod
/// fields are the same every cycle, so its [`Subject`] is rendered once and
/// kept while the container is seen, re-rendered when its metadata changes
/// (looked up once per cycle). Non-finite values pass through: delivery
/// drops and counts them ([`crate::delivery::Delivery::submit_metrics`]),
/// the one place that knows JSON has no such numbers.
#[derive(Debug, Default)]
pub struct Enricher {
    cycle: u64,
    /// The node's subject, and the (node, cluster) it was rendered for.
    node: Option<(String, String, Arc<Subject>)>,
    /// By the address of the identity the entry keeps alive (so the address
    /// cannot be reused by another container while the entry exists).
    containers: HashMap<usize, Cached>,
    pods: HashMap<Arc<str>, Cached>,
}

/// A rendered subject and what it was rendered from.
#[derive(Debug)]
struct Cached {
    pod: Option<Arc<PodMeta>>,
    container_name: Box<str>,
    subject: Arc<Subject>,
    /// The cycle it was last looked up in.
    seen: u64,
    _identity: Option<Arc<ContainerIdentity>>,
}

impl Cached {
    fn same(&self, pod: &Option<Arc<PodMeta>>, container_name: &str) -> bool {
        let pod_same = match (&self.pod, pod) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
            _ => false,
        };
        pod_same && *self.container_name == *container_name
    }
}

impl Enricher {
    /// A new cycle: metadata is looked up again (once per subject).
    pub fn begin_cycle(&mut self) {
        self.cycle += 1;
    }

    /// Forget the subjects not seen this cycle (containers that are gone).
    pub fn end_cycle(&mut self) {
        let cycle = self.cycle;
        self.containers.retain(|_, c| c.seen == cycle);
        self.pods.retain(|_, c| c.seen == cycle);
    }

    /// Subjects kept, and the bytes they hold.
    pub fn cached(&self) -> (usize, usize) {
        let all = self.containers.values().chain(self.pods.values());
        let bytes = all.map(|c| c.subject.heap_bytes()).sum();
        (self.containers.len() + self.pods.len(), bytes)
    }

    pub fn to_wire(
        &mut self,
        samples: impl IntoIterator<Item = Sample>,
        ctx: &CycleContext<'_>,
        meta: &dyn Metadata,
        out: &mut Vec<MetricOut>,
    ) {
        for s in samples {
            let m = self.one(s, ctx, meta);
            out.push(m);
        }
    }

    fn one(&mut self, s: Sample, ctx: &CycleContext<'_>, meta: &dyn Metadata) -> MetricOut {
        let (name, unit) = (Cow::Borrowed(s.name), Cow::Borrowed(s.unit));
        let mut m = MetricOut {
            timestamp: ctx.timestamp_ms,
            name,
            value: s.value,
            unit,
            subject: self.node_subject(ctx),
            tags: s.tags,
        };
        match &s.about {
            About::Node | About::Tags => {}
            About::Named(n) => {
                m.name = Cow::Owned(n.name.clone());
                m.unit = Cow::Owned(n.unit.clone());
                let tags = n.tags.iter().cloned().collect();
                m.subject = Arc::new(render(Fields::default(), tags, ctx));
            }
            About::Container(id) => m.subject = self.container_subject(id, ctx, meta),
            About::Pod { pod_uid } => m.subject = self.pod_subject(pod_uid, ctx, meta),
        }
        m
    }

    fn node_subject(&mut self, ctx: &CycleContext<'_>) -> Arc<Subject> {
        match &self.node {
            Some((n, c, s)) if n == ctx.node && c == ctx.cluster_id => s.clone(),
            _ => {
                let s = Arc::new(render(Fields::default(), BTreeMap::new(), ctx));
                self.node = Some((ctx.node.into(), ctx.cluster_id.into(), s.clone()));
                s
            }
        }
    }

    fn container_subject(
        &mut self,
        id: &Arc<ContainerIdentity>,
        ctx: &CycleContext<'_>,
        meta: &dyn Metadata,
    ) -> Arc<Subject> {
        let key = Arc::as_ptr(id) as usize;
        let cycle = self.cycle;
        if let Some(c) = self.containers.get(&key).filter(|c| c.seen == cycle) {
            return c.subject.clone();
        }
        let found = meta.container(id);
        let (pod, name) = match found {
            Some((p, name)) => (Some(p), name),
            None => (
                id.pod_uid.as_deref().and_then(|u| meta.pod(u)),
                id.name.clone(),
            ),
        };
        if let Some(c) = self
            .containers
            .get_mut(&key)
            .filter(|c| c.same(&pod, &name))
        {
            c.seen = cycle;
            return c.subject.clone();
        }
        let subject = Arc::new(container_subject(id, pod.as_deref(), &name, ctx));
        let entry = Cached {
            pod,
            container_name: name.into_boxed_str(),
            subject: subject.clone(),
            seen: cycle,
            _identity: Some(id.clone()),
        };
        self.containers.insert(key, entry);
        subject
    }

    fn pod_subject(
        &mut self,
        uid: &Arc<str>,
        ctx: &CycleContext<'_>,
        meta: &dyn Metadata,
    ) -> Arc<Subject> {
        let cycle = self.cycle;
        if let Some(c) = self.pods.get(uid).filter(|c| c.seen == cycle) {
            return c.subject.clone();
        }
        let pod = meta.pod(uid);
        if let Some(c) = self.pods.get_mut(uid).filter(|c| c.same(&pod, "")) {
            c.seen = cycle;
            return c.subject.clone();
        }
        let mut f = Fields {
            pod_uid: uid,
            ..Fields::default()
        };
        if let Some(p) = &pod {
            f.namespace = &p.namespace;
            f.pod_name = &p.name;
        }
        let mut tags = BTreeMap::from([("container".to_string(), String::new())]);
        add_pod_tags(&mut tags, &f, pod.as_deref());
        let subject = Arc::new(render(f, tags, ctx));
        let entry = Cached {
            pod,
            container_name: Box::default(),
            subject: subject.clone(),
            seen: cycle,
            _identity: None,
        };
        self.pods.insert(uid.clone(), entry);
        subject
    }
}

/// Turn samples into wire metrics with subjects of their own (no cache).
pub fn to_wire(
    samples: impl IntoIterator<Item = Sample>,
    ctx: &CycleContext<'_>,
    meta: &dyn Metadata,
    out: &mut Vec<MetricOut>,
) {
    let mut e = Enricher::default();
    e.begin_cycle();
    e.to_wire(samples, ctx, meta, out);
}

/// The pod fields of a subject.
#[derive(Default)]
struct Fields<'a> {
    namespace: &'a str,
    pod_name: &'a str,
    container_name: &'a str,
    pod_uid: &'a str,
}

fn container_subject(
    id: &ContainerIdentity,
    pod: Option<&PodMeta>,
    container_name: &str,
    ctx: &CycleContext<'_>,
) -> Subject {
    let mut f = Fields {
        container_name,
        pod_uid: id.pod_uid.as_deref().unwrap_or_default(),
        ..Fields::default()
    };
    if let Some(p) = pod {
        f.namespace = &p.namespace;
        f.pod_name = &p.name;
    }
    let mut tags = BTreeMap::from([("container".to_string(), container_name.to_string())]);
    if !id.container_id.is_empty() {
        tags.insert("container_id".into(), id.container_id.clone());
    }
    add_pod_tags(&mut tags, &f, pod);
    render(f, tags, ctx)
}

fn add_pod_tags(tags: &mut BTreeMap<String, String>, f: &Fields<'_>, pod: Option<&PodMeta>) {
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
        ("namespace", f.namespace),
        ("pod", f.pod_name),
        ("pod_uid", f.pod_uid),
    ] {
        if !v.is_empty() {
            tags.insert(k.into(), v.to_string());
        }
    }
}

/// The subject's JSON; `node` is a tag unless the subject's tags carry one
/// (a metric's own `node` tag still wins over both).
fn render(f: Fields<'_>, mut tags: BTreeMap<String, String>, ctx: &CycleContext<'_>) -> Subject {
    tags.entry("node".into())
        .or_insert_with(|| ctx.node.to_string());
    Subject::render(&SubjectFields {
        tags,
        cluster_id: ctx.cluster_id,
        node_name: ctx.node,
        namespace: f.namespace,
        pod_name: f.pod_name,
        container_name: f.container_name,
        pod_uid: f.pod_uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{QosClass, Runtime};
    use crate::sink::wire::Metric;

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
        let j = serde_json::to_value(out[0].to_metric()).unwrap();
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
        let j = serde_json::to_value(out[0].to_metric()).unwrap();
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
        let mut body = Vec::new();
        out[0].write_json(&mut body);
        let s = String::from_utf8(body).unwrap();
        assert_eq!(
            s,
            r#"{"timestamp":1732650000123,"metric_name":"node.load.1","value":0.5,"unit":"count","tags":{"node":"n1"},"cluster_id":"prod","node_name":"n1"}"#
        );
    }

    /// A pod cache of one pod whose metadata a test can change.
    struct OnePod(std::sync::Mutex<Arc<PodMeta>>);

    impl Metadata for OnePod {
        fn pod(&self, uid: &str) -> Option<Arc<PodMeta>> {
            let p = self.0.lock().unwrap().clone();
            (p.uid == uid).then_some(p)
        }
        fn container(&self, id: &ContainerIdentity) -> Option<(Arc<PodMeta>, String)> {
            let p = self.pod(id.pod_uid.as_deref()?)?;
            (id.container_id == "c1").then(|| (p, "web".to_string()))
        }
    }

    const UID: &str = "3f0e2b1a-77c4-4d7e-9a51-6c2d8e9f0a12";

    fn pod(labels: &[(&str, &str)]) -> Arc<PodMeta> {
        Arc::new(PodMeta {
            namespace: "shop".into(),
            name: "web-7d4f9-abcde".into(),
            uid: UID.into(),
            workload: "web".into(),
            workload_kind: "Deployment".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            node: "n1".into(),
            containers: vec!["web".into()],
        })
    }

    fn container(cid: &str) -> Arc<ContainerIdentity> {
        Arc::new(ContainerIdentity {
            runtime: Runtime::Containerd,
            container_id: cid.into(),
            pod_uid: Some(UID.into()),
            qos: Some(QosClass::Burstable),
            name: cid.into(),
        })
    }

    /// Today's conversion before subjects were rendered once: the API's
    /// owned shape, built field by field (the reference).
    fn reference(s: &Sample, ctx: &CycleContext<'_>, meta: &dyn Metadata) -> Metric {
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
        let mut pod = None;
        match &s.about {
            About::Node | About::Tags => {}
            About::Named(n) => {
                m.metric_name.clone_from(&n.name);
                m.unit.clone_from(&n.unit);
                tags.extend(n.tags.iter().cloned());
            }
            About::Container(id) => {
                let found = meta.container(id);
                pod = match &found {
                    Some((p, _)) => Some(p.clone()),
                    None => id.pod_uid.as_deref().and_then(|u| meta.pod(u)),
                };
                m.container_name = found.map_or(id.name.clone(), |(_, n)| n);
                m.pod_uid = id.pod_uid.clone().unwrap_or_default();
                tags.insert("container".into(), m.container_name.clone());
                if !id.container_id.is_empty() {
                    tags.insert("container_id".into(), id.container_id.clone());
                }
            }
            About::Pod { pod_uid } => {
                pod = meta.pod(pod_uid);
                m.pod_uid = pod_uid.to_string();
                tags.insert("container".into(), String::new());
            }
        }
        if matches!(s.about, About::Container(_) | About::Pod { .. }) {
            if let Some(p) = &pod {
                m.namespace = p.namespace.clone();
                m.pod_name = p.name.clone();
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
        for (k, v) in &s.tags {
            tags.insert(k.to_string(), v.clone());
        }
        tags.entry("node".into())
            .or_insert_with(|| ctx.node.to_string());
        m.tags = tags;
        m
    }

    fn samples() -> Vec<Sample> {
        let named = crate::model::Named {
            name: "rpc.duration".into(),
            unit: "ms".into(),
            tags: vec![("node".into(), "theirs".into()), ("a".into(), "1".into())],
        };
        let mut v = vec![
            Sample::node("node.load.1", 0.5, "count"),
            Sample::new("trace.spans", 3.0, "count", About::Tags),
            Sample::new("c.mem", 5.0, "bytes", About::Container(container("c1"))),
            Sample::new("c.mem", 6.0, "bytes", About::Container(container("c2"))),
            Sample::new(
                "p.net",
                7.0,
                "bytes",
                About::Pod {
                    pod_uid: UID.into(),
                },
            ),
            Sample::new(
                "p.net",
                8.0,
                "bytes",
                About::Pod {
                    pod_uid: "other".into(),
                },
            ),
            Sample::new("", 9.0, "", About::Named(Arc::new(named))),
        ];
        let mut odd = Sample::new("c.io", 1.0, "bytes", About::Container(container("c1")));
        odd.tags = vec![
            ("device", "sda \"1\"".into()),
            ("node", "mine".into()),
            ("container", "x".into()),
        ];
        v.push(odd);
        v
    }

    #[test]
    fn every_subject_matches_the_reference() {
        let meta = OnePod(std::sync::Mutex::new(pod(&[
            ("app", "web"),
            ("tier", "é\t"),
        ])));
        for meta in [&meta as &dyn Metadata, &NoMetadata] {
            let mut e = Enricher::default();
            for _cycle in 0..2 {
                e.begin_cycle();
                let mut out = vec![];
                e.to_wire(samples(), &ctx(), meta, &mut out);
                e.end_cycle();
                for (got, s) in out.iter().zip(samples()) {
                    let mut body = Vec::new();
                    got.write_json(&mut body);
                    let want = serde_json::to_string(&reference(&s, &ctx(), meta)).unwrap();
                    assert_eq!(String::from_utf8(body).unwrap(), want);
                }
            }
        }
    }

    #[test]
    fn a_subject_is_rendered_once_and_again_when_its_pod_changes() {
        let meta = OnePod(std::sync::Mutex::new(pod(&[("app", "web")])));
        let id = container("c1");
        let gone = container("c2");
        let mut e = Enricher::default();
        let cycle = |e: &mut Enricher, ids: &[&Arc<ContainerIdentity>]| {
            e.begin_cycle();
            let mut out = vec![];
            let s = ids.iter().flat_map(|id| {
                (0..3)
                    .map(|i| Sample::new("c.m", i as f64, "count", About::Container((*id).clone())))
            });
            e.to_wire(s, &ctx(), &meta, &mut out);
            e.end_cycle();
            out
        };
        let a = cycle(&mut e, &[&id, &gone]);
        assert!(Arc::ptr_eq(&a[0].subject, &a[2].subject));
        assert_eq!(e.cached().0, 2);
        let b = cycle(&mut e, &[&id]);
        // kept across cycles; the container not seen is forgotten
        assert!(Arc::ptr_eq(&a[0].subject, &b[0].subject));
        assert_eq!(e.cached().0, 1);
        // the pod's labels change: rendered again, with them
        *meta.0.lock().unwrap() = pod(&[("app", "web"), ("version", "2")]);
        let c = cycle(&mut e, &[&id]);
        assert!(!Arc::ptr_eq(&b[0].subject, &c[0].subject));
        assert_eq!(c[0].to_metric().tags["label.version"], "2");
        assert!(!b[0].to_metric().tags.contains_key("label.version"));
        // an equal pod in a new allocation (a resync) is not a change
        *meta.0.lock().unwrap() = pod(&[("app", "web"), ("version", "2")]);
        let d = cycle(&mut e, &[&id]);
        assert!(Arc::ptr_eq(&c[0].subject, &d[0].subject));
    }
}
