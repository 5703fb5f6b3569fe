//! This node's pods, from a watch cache, as [`Metadata`] for enrichment.
//!
//! One `watcher` + `reflector` on `/api/v1/pods?fieldSelector=spec.nodeName=<node>`
//! (list once, then watch; relist on `410 Gone`; reconnect with backoff),
//! managed fields and annotations stripped. After every change the task
//! derives an [`Index`] from the reflector's store (pod UID → [`PodMeta`],
//! container id → pod and container name, pod IP → pod, pod name → pod)
//! and swaps it in; lookups from the collection cycle and the OTLP receiver
//! only clone an `Arc` under a read lock and read one map, so they never
//! wait on the API server. While the API server is away the last index stays.
//!
//! The same pass finds containers that ended `OOMKilled` (Kubernetes reports
//! those in the pod status, not as events) and counts each once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};

use super::backoff::backed_off;
use super::events::{Tally, TallyKey};
use super::owners::{Owners, Workload, controller_of};
use crate::enrich::{Metadata, Peer, PodMeta};
use crate::model::ContainerIdentity;
use crate::telemetry::{Telemetry, Watch};

/// Labels that only tell revisions apart: not tags (SPEC §5).
const HASH_LABELS: [&str; 2] = ["pod-template-hash", "controller-revision-hash"];

/// A container id from the pod status without its `<runtime>://` prefix
/// (`containerd://`, `cri-o://`, `docker://`, ...).
pub fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, bare)| bare)
}

/// Metadata of one pod, with its workload already resolved.
pub fn pod_meta(pod: &Pod, workload: Option<Workload>) -> PodMeta {
    let (workload, workload_kind) = workload.unwrap_or_default();
    PodMeta {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.uid().unwrap_or_default(),
        workload,
        workload_kind,
        labels: pod
            .labels()
            .iter()
            .filter(|(k, _)| !HASH_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        containers: pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default(),
    }
}

/// A pod's addresses as the IP index needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAddresses {
    /// `status.podIPs` (else `status.podIP`), unless the pod is on the host
    /// network (then its IP is the node's) or has ended (its IP may already
    /// be another pod's).
    pub pod_ips: Vec<IpAddr>,
    /// The node's addresses: `status.hostIPs` (else `status.hostIP`), and
    /// the IPs of host-network pods.
    pub host_ips: Vec<IpAddr>,
}

/// What [`PodAddresses`] a pod has; addresses that do not parse are left out.
pub fn addresses(pod: &Pod) -> PodAddresses {
    let Some(st) = pod.status.as_ref() else {
        return PodAddresses::default();
    };
    let parse = |list: Option<Vec<&str>>, one: Option<&String>| -> Vec<IpAddr> {
        let list = list.filter(|l| !l.is_empty());
        let all = list.unwrap_or_else(|| one.map(|s| vec![s.as_str()]).unwrap_or_default());
        all.iter()
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .collect()
    };
    let pod_ips = parse(
        st.pod_ips
            .as_ref()
            .map(|l| l.iter().map(|p| p.ip.as_str()).collect()),
        st.pod_ip.as_ref(),
    );
    let mut host_ips = parse(
        st.host_ips
            .as_ref()
            .map(|l| l.iter().map(|p| p.ip.as_str()).collect()),
        st.host_ip.as_ref(),
    );
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
    if host_network {
        host_ips.extend(pod_ips);
        return PodAddresses {
            pod_ips: Vec::new(),
            host_ips,
        };
    }
    let ended = matches!(st.phase.as_deref(), Some("Succeeded" | "Failed"));
    PodAddresses {
        pod_ips: if ended { Vec::new() } else { pod_ips },
        host_ips,
    }
}

fn all_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let s = pod.status.as_ref();
    [
        s.and_then(|s| s.container_statuses.as_deref()),
        s.and_then(|s| s.init_container_statuses.as_deref()),
        s.and_then(|s| s.ephemeral_container_statuses.as_deref()),
    ]
    .into_iter()
    .flat_map(|l| l.unwrap_or_default())
}

/// (bare container id, container name) of every container of a pod the
/// runtime knows: the running one, and the previous instance of each (its
/// cgroup may still be read once after a restart).
pub fn container_ids(pod: &Pod) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for cs in all_statuses(pod) {
        let last = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.container_id.as_deref());
        for id in [cs.container_id.as_deref(), last].into_iter().flatten() {
            let bare = bare_container_id(id);
            if !bare.is_empty() {
                out.push((bare.to_string(), cs.name.clone()));
            }
        }
    }
    out
}

/// Containers of a pod that ended `OOMKilled`: a key that names that one
/// termination (the dead container's id), and when it ended.
pub fn oom_terminations(pod: &Pod) -> Vec<(String, Option<Timestamp>)> {
    let uid = pod.uid().unwrap_or_default();
    let mut out = Vec::new();
    for cs in all_statuses(pod) {
        let states = [cs.state.as_ref(), cs.last_state.as_ref()];
        for t in states
            .into_iter()
            .flatten()
            .filter_map(|s| s.terminated.as_ref())
        {
            if t.reason.as_deref() != Some("OOMKilled") {
                continue;
            }
            let key = match t.container_id.as_deref().map(bare_container_id) {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => format!("{uid}/{}/{}", cs.name, cs.restart_count),
            };
            out.push((key, t.finished_at.as_ref().map(|f| f.0)));
        }
    }
    out
}

/// What enrichment looks up, derived from the store after every change.
#[derive(Debug, Default)]
pub struct Index {
    by_uid: HashMap<String, Arc<PodMeta>>,
    by_container: HashMap<String, (Arc<PodMeta>, String)>,
    by_ip: HashMap<IpAddr, Arc<PodMeta>>,
    /// Pod name → the pods of that name (one per namespace).
    by_name: HashMap<String, Vec<Arc<PodMeta>>>,
    host_ips: HashSet<IpAddr>,
}

impl Index {
    pub fn insert(&mut self, meta: PodMeta, containers: Vec<(String, String)>) -> Arc<PodMeta> {
        let meta = Arc::new(meta);
        for (id, name) in containers {
            self.by_container.insert(id, (meta.clone(), name));
        }
        self.by_name
            .entry(meta.name.clone())
            .or_default()
            .push(meta.clone());
        self.by_uid.insert(meta.uid.clone(), meta.clone());
        meta
    }

    /// Index `meta` by its pod IPs, and note the node's addresses.
    pub fn insert_addresses(&mut self, meta: &Arc<PodMeta>, addrs: PodAddresses) {
        for ip in addrs.pod_ips {
            self.by_ip.insert(ip, meta.clone());
        }
        self.host_ips.extend(addrs.host_ips);
    }

    /// Who `ip` is: a pod by its IP, the node (its addresses, loopback),
    /// or unknown.
    pub fn peer(&self, ip: IpAddr) -> Peer {
        let ip = ip.to_canonical();
        if let Some(p) = self.by_ip.get(&ip) {
            return Peer::Pod(p.clone());
        }
        if ip.is_loopback() || self.host_ips.contains(&ip) {
            return Peer::HostNetwork;
        }
        Peer::Unknown
    }

    pub fn by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodMeta>> {
        self.by_name
            .get(name)?
            .iter()
            .find(|p| p.namespace == namespace)
            .cloned()
    }

    pub fn pods(&self) -> usize {
        self.by_uid.len()
    }
}

/// The watch cache as enrichment sees it.
#[derive(Debug, Default)]
pub struct PodCache {
    index: RwLock<Arc<Index>>,
    ready: AtomicBool,
}

impl PodCache {
    fn current(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, index: Index) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
    }

    /// True once the first list has been loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Pods in the cache.
    pub fn len(&self) -> usize {
        self.current().pods()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Metadata for PodCache {
    fn pod(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.current().by_uid.get(uid).cloned()
    }

    fn container(&self, id: &ContainerIdentity) -> Option<(Arc<PodMeta>, String)> {
        if id.container_id.is_empty() {
            return None;
        }
        self.current().by_container.get(&id.container_id).cloned()
    }

    fn knows_pods(&self) -> bool {
        true
    }

    fn pod_by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodMeta>> {
        self.current().by_name(namespace, name)
    }

    fn peer(&self, ip: IpAddr) -> Peer {
        self.current().peer(ip)
    }
}

/// Keep only what the cache uses: metadata without managed fields and
/// annotations, `spec.nodeName`, `spec.hostNetwork`, the containers' names,
/// the phase, the pod's and host's IPs, container statuses. (The store
/// holds every pod of the node for the agent's lifetime.)
pub fn slim(p: &mut Pod) {
    p.managed_fields_mut().clear();
    p.annotations_mut().clear();
    if let Some(spec) = p.spec.as_mut() {
        let containers = std::mem::take(&mut spec.containers)
            .into_iter()
            .map(|c| k8s_openapi::api::core::v1::Container {
                name: c.name,
                ..Default::default()
            })
            .collect();
        *spec = PodSpec {
            node_name: spec.node_name.take(),
            host_network: spec.host_network.take(),
            containers,
            ..Default::default()
        };
    }
    if let Some(st) = p.status.as_mut() {
        *st = PodStatus {
            container_statuses: st.container_statuses.take(),
            init_container_statuses: st.init_container_statuses.take(),
            ephemeral_container_statuses: st.ephemeral_container_statuses.take(),
            phase: st.phase.take(),
            pod_ip: st.pod_ip.take(),
            pod_ips: st.pod_ips.take(),
            host_ip: st.host_ip.take(),
            host_ips: st.host_ips.take(),
            ..Default::default()
        };
    }
}

/// Start the pod watch; the returned cache fills once the first list is in.
pub fn spawn(
    client: Client,
    node: String,
    telemetry: Arc<Telemetry>,
    local: Arc<Mutex<Tally>>,
) -> Arc<PodCache> {
    let cache = Arc::new(PodCache::default());
    let task = Task {
        owners: Owners::new(client.clone(), telemetry.clone()),
        cache: cache.clone(),
        telemetry,
        local,
        node,
        started: Timestamp::now(),
        seen_oom: HashSet::new(),
    };
    tokio::spawn(task.run(client));
    cache
}

struct Task {
    owners: Owners,
    cache: Arc<PodCache>,
    telemetry: Arc<Telemetry>,
    local: Arc<Mutex<Tally>>,
    node: String,
    /// OOM kills that ended before this are not ours to count (a restart
    /// of the agent must not count them again).
    started: Timestamp,
    seen_oom: HashSet<String>,
}

impl Task {
    async fn run(mut self, client: Client) {
        let (store, writer) = reflector::store::<Pod>();
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let stream = backed_off(watcher::watcher(Api::<Pod>::all(client), cfg))
            .modify(slim)
            .reflect(writer);
        let mut stream = pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(ev) => match ev {
                    Event::Init => self.telemetry.k8s.relisted(Watch::Pods),
                    Event::InitApply(_) => {}
                    Event::Apply(_) | Event::Delete(_) => self.rebuild(&store).await,
                    Event::InitDone => {
                        self.rebuild(&store).await;
                        if !self.cache.ready.swap(true, Ordering::Relaxed) {
                            tracing::info!(
                                node = %self.node,
                                pods = self.cache.len(),
                                "pod metadata cache loaded"
                            );
                        }
                    }
                },
                Err(e) => {
                    self.telemetry.k8s.pod_watch_failed(&e);
                }
            }
        }
    }

    async fn rebuild(&mut self, store: &Store<Pod>) {
        let pods = store.state();
        let mut index = Index::default();
        let empty = BTreeMap::new();
        for pod in &pods {
            let ns = pod.namespace().unwrap_or_default();
            let refs = pod.metadata.owner_references.as_deref().unwrap_or_default();
            let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
            let workload = self.owners.resolve(&ns, refs, labels).await;
            let meta = index.insert(pod_meta(pod, workload), container_ids(pod));
            index.insert_addresses(&meta, addresses(pod));
        }
        let owners: Vec<(String, String, String)> = pods
            .iter()
            .filter_map(|p| {
                let o = controller_of(p.metadata.owner_references.as_deref()?)?;
                Some((
                    o.kind.clone(),
                    p.namespace().unwrap_or_default(),
                    o.name.clone(),
                ))
            })
            .collect();
        self.owners.retain_referenced(
            owners
                .iter()
                .map(|(k, ns, n)| (k.as_str(), ns.as_str(), n.as_str())),
        );
        // counts first: whoever sees the new index sees its kills counted
        self.count_oom_kills(&pods);
        self.telemetry.k8s.pods_cached.set(index.pods() as i64);
        self.cache.replace(index);
    }

    fn count_oom_kills(&mut self, pods: &[Arc<Pod>]) {
        let mut present = HashSet::new();
        let mut new = 0u64;
        for pod in pods {
            for (key, finished) in oom_terminations(pod) {
                if !self.seen_oom.contains(&key) && finished.is_some_and(|f| f >= self.started) {
                    new += 1;
                }
                present.insert(key);
            }
        }
        self.seen_oom = present;
        if new > 0 {
            let key = TallyKey {
                type_: "Warning".into(),
                reason: "OOMKilled".into(),
                node: self.node.clone(),
            };
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            *local.entry(key).or_default() += new;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<Pod> {
        let text = include_str!("../../tests/fixtures/k8s/podlist_container_ready.json");
        let list: k8s_openapi::List<Pod> = serde_json::from_str(text).unwrap();
        list.items
    }

    #[test]
    fn strips_every_runtime_prefix() {
        assert_eq!(bare_container_id("docker://abc"), "abc");
        assert_eq!(bare_container_id("containerd://abc"), "abc");
        assert_eq!(bare_container_id("cri-o://abc"), "abc");
        assert_eq!(bare_container_id("abc"), "abc");
    }

    #[test]
    fn kubelet_podlist_to_index() {
        let pods = fixture();
        assert_eq!(pods.len(), 5);
        let proxy = pods
            .iter()
            .find(|p| p.name_any() == "kube-proxy-d9fx4")
            .unwrap();
        let m = pod_meta(proxy, Some(("kube-proxy".into(), "DaemonSet".into())));
        assert_eq!(m.namespace, "kube-system");
        assert_eq!(m.uid, "47ea1faf-85f7-11e9-892f-02c6fa0ccfb0");
        // controller-revision-hash is dropped, the rest kept, sorted
        assert_eq!(
            m.labels,
            vec![
                ("app".to_string(), "kube-proxy".to_string()),
                ("pod-template-generation".to_string(), "1".to_string()),
            ]
        );
        assert_eq!(
            container_ids(proxy),
            vec![(
                "f8222454e2866de60831bd99cec33d282ea9a6e7e8d63a09593d303c6c570b2c".to_string(),
                "kube-proxy".to_string()
            )]
        );

        let mut index = Index::default();
        for p in &pods {
            index.insert(pod_meta(p, None), container_ids(p));
        }
        let cache = PodCache::default();
        cache.replace(index);
        assert_eq!(cache.len(), 5);
        let id = ContainerIdentity {
            runtime: crate::model::Runtime::Docker,
            container_id: "3698873b7d4ebc30f230d15fdfd46cca6ab6b312be4f6c23b8860a2522f5f90b".into(),
            pod_uid: None,
            qos: None,
            name: "3698873b7d4e".into(),
        };
        let (pod, container) = cache.container(&id).unwrap();
        assert_eq!(
            (pod.name.as_str(), container.as_str()),
            ("coredns-747dbcf5df-ks57g", "coredns")
        );
        assert_eq!(pod.labels, vec![("dns".to_string(), "coredns".to_string())]);
        assert_eq!(
            cache
                .pod("b4e03af2-8608-11e9-892f-02c6fa0ccfb0")
                .unwrap()
                .name,
            "redis-unready-69cfd574f5-wg9vb"
        );
        assert!(cache.pod("00000000-0000-0000-0000-000000000000").is_none());
    }

    fn pod_json(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn index_by_ip_and_name() {
        let pods = [
            // dual stack: both addresses; one container
            pod_json(serde_json::json!({
                "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"},
                "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "x"}]},
                "status": {"phase": "Running", "podIP": "10.1.0.5",
                    "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}],
                    "hostIP": "192.168.0.10", "hostIPs": [{"ip": "192.168.0.10"}]}
            })),
            // only the old single field
            pod_json(serde_json::json!({
                "metadata": {"name": "web-1", "namespace": "other", "uid": "u2"},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": "Running", "podIP": "10.1.0.6"}
            })),
            // host network: its IP is the node's, never a pod's
            pod_json(serde_json::json!({
                "metadata": {"name": "proxy", "namespace": "kube-system", "uid": "u3"},
                "spec": {"hostNetwork": true, "containers": [{"name": "p"}]},
                "status": {"phase": "Running", "podIP": "192.168.0.11",
                    "podIPs": [{"ip": "192.168.0.11"}]}
            })),
            // ended: its IP may be another pod's already
            pod_json(serde_json::json!({
                "metadata": {"name": "job-x", "namespace": "shop", "uid": "u4"},
                "spec": {"containers": [{"name": "j"}]},
                "status": {"phase": "Succeeded", "podIP": "10.1.0.7"}
            })),
        ];
        let mut index = Index::default();
        for mut p in pods {
            slim(&mut p);
            let meta = index.insert(pod_meta(&p, None), container_ids(&p));
            index.insert_addresses(&meta, addresses(&p));
        }
        let name_of = |ip: &str| match index.peer(ip.parse().unwrap()) {
            Peer::Pod(p) => format!("{}/{}", p.namespace, p.name),
            other => format!("{other:?}"),
        };
        assert_eq!(name_of("10.1.0.5"), "shop/web-1");
        assert_eq!(name_of("fd00::5"), "shop/web-1");
        assert_eq!(name_of("::ffff:10.1.0.5"), "shop/web-1");
        assert_eq!(name_of("10.1.0.6"), "other/web-1");
        assert_eq!(name_of("192.168.0.11"), "HostNetwork");
        assert_eq!(name_of("192.168.0.10"), "HostNetwork");
        assert_eq!(name_of("127.0.0.1"), "HostNetwork");
        assert_eq!(name_of("10.1.0.7"), "Unknown");
        assert_eq!(name_of("10.9.9.9"), "Unknown");
        assert_eq!(index.by_ip.len(), 3);
        let web = index.by_name("shop", "web-1").unwrap();
        assert_eq!((web.uid.as_str(), web.node.as_str()), ("u1", "n1"));
        assert_eq!(web.containers, vec!["app".to_string()]);
        assert_eq!(index.by_name("other", "web-1").unwrap().containers.len(), 2);
        assert!(index.by_name("nope", "web-1").is_none());
    }

    #[test]
    fn slim_keeps_what_the_index_uses() {
        for mut p in fixture() {
            let before = (
                pod_meta(&p, None),
                container_ids(&p),
                p.spec.as_ref().unwrap().node_name.clone(),
                addresses(&p),
            );
            let size = serde_json::to_string(&p).unwrap().len();
            slim(&mut p);
            let after = (
                pod_meta(&p, None),
                container_ids(&p),
                p.spec.as_ref().unwrap().node_name.clone(),
                addresses(&p),
            );
            assert_eq!(before, after);
            assert!(serde_json::to_string(&p).unwrap().len() * 2 < size);
        }
    }

    #[test]
    fn oom_killed_terminations_are_found() {
        let mut pod = fixture().remove(1);
        assert!(oom_terminations(&pod).is_empty());
        let cs = &mut pod
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0];
        cs.last_state = Some(
            serde_json::from_value(serde_json::json!({
                "terminated": {"exitCode": 137, "reason": "OOMKilled",
                    "finishedAt": "2026-11-26T22:00:00Z", "containerID": "containerd://dead01"}
            }))
            .unwrap(),
        );
        let found = oom_terminations(&pod);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "dead01");
        assert_eq!(found[0].1.unwrap().as_second(), 1795730400);
        // the dead instance still joins to the container name
        assert!(container_ids(&pod).contains(&("dead01".to_string(), "kube-proxy".to_string())));
    }
}
