//! A pod's workload: its controlling owner, followed one level up where
//! Kubernetes puts an intermediate object (a ReplicaSet under a Deployment,
//! a Job under a CronJob).
//!
//! Nothing here watches ReplicaSets or Jobs: the parent of an owner is read
//! with a metadata-only GET when a pod first needs it, and cached for as long
//! as a pod of this node refers to that owner. When the lookup fails (API
//! server away, RBAC), a ReplicaSet named `<name>-<pod-template-hash>` is
//! taken as Deployment `<name>` (that is how the Deployment controller names
//! them) and the lookup is retried later.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Api, Client};

use crate::telemetry::Telemetry;

/// How long a failed lookup is not retried.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Bound of one lookup: the pod cache waits for it.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Name and kind of a workload, e.g. (`web`, `Deployment`).
pub type Workload = (String, String);

/// The controlling owner reference (`controller: true`), else the first one.
pub fn controller_of(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
}

/// Owner kinds whose own owner names the workload.
pub fn needs_parent(kind: &str) -> bool {
    matches!(kind, "ReplicaSet" | "Job")
}

/// The workload of a pod owned by `owner`, given the owner's own controller
/// (`parent`, when it was looked up). Static pods (owned by their Node) have
/// no workload.
pub fn workload(owner: &OwnerReference, parent: Option<&Workload>) -> Option<Workload> {
    match (owner.kind.as_str(), parent) {
        ("Node", _) => None,
        ("ReplicaSet", Some((name, kind))) if kind == "Deployment" => {
            Some((name.clone(), kind.clone()))
        }
        ("Job", Some((name, kind))) if kind == "CronJob" => Some((name.clone(), kind.clone())),
        (kind, _) => Some((owner.name.clone(), kind.to_string())),
    }
}

/// The parent of an owner when the API server cannot be asked: a
/// ReplicaSet named `<deployment>-<pod-template-hash>`.
pub fn guess_parent(owner: &OwnerReference, labels: &BTreeMap<String, String>) -> Option<Workload> {
    if owner.kind != "ReplicaSet" {
        return None;
    }
    let hash = labels.get("pod-template-hash")?;
    let name = owner.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    (!name.is_empty()).then(|| (name.to_string(), "Deployment".to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: String,
    namespace: String,
    name: String,
}

#[derive(Debug, Clone)]
enum Entry {
    /// Looked up: the owner's own controller, if any.
    Found(Option<Workload>),
    /// The lookup failed at this time.
    Failed(Instant),
}

/// Cached parent lookups, owned by the pod cache task.
pub struct Owners {
    client: Client,
    telemetry: Arc<Telemetry>,
    cache: HashMap<Key, Entry>,
}

impl Owners {
    pub fn new(client: Client, telemetry: Arc<Telemetry>) -> Self {
        Owners {
            client,
            telemetry,
            cache: HashMap::new(),
        }
    }

    /// The workload of a pod in `namespace` with these owner references and
    /// labels. Asks the API server only for an owner not seen before (or
    /// whose lookup failed more than a while ago).
    pub async fn resolve(
        &mut self,
        namespace: &str,
        refs: &[OwnerReference],
        labels: &BTreeMap<String, String>,
    ) -> Option<Workload> {
        let owner = controller_of(refs)?;
        if !needs_parent(&owner.kind) {
            return workload(owner, None);
        }
        let key = Key {
            kind: owner.kind.clone(),
            namespace: namespace.to_string(),
            name: owner.name.clone(),
        };
        let cached = match self.cache.get(&key) {
            Some(Entry::Found(p)) => Some(p.clone()),
            Some(Entry::Failed(at)) if at.elapsed() < RETRY_AFTER => None,
            _ => match self.lookup(&key).await {
                Ok(p) => {
                    self.cache.insert(key, Entry::Found(p.clone()));
                    Some(p)
                }
                Err(e) => {
                    crate::warn_limited!(
                        "k8s:owner",
                        kind = %key.kind,
                        namespace = %key.namespace,
                        name = %key.name,
                        error = %e,
                        "cannot read the owner of a pod; guessing its workload from names"
                    );
                    self.cache.insert(key, Entry::Failed(Instant::now()));
                    None
                }
            },
        };
        match cached {
            Some(parent) => workload(owner, parent.as_ref()),
            None => workload(owner, guess_parent(owner, labels).as_ref()),
        }
    }

    /// Forget owners that no pod refers to any more (bounds the cache).
    pub fn retain_referenced<'a>(
        &mut self,
        in_use: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) {
        let keep: HashSet<Key> = in_use
            .into_iter()
            .map(|(kind, namespace, name)| Key {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
            .collect();
        self.cache.retain(|k, _| keep.contains(k));
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    async fn lookup(&self, key: &Key) -> Result<Option<Workload>, LookupError> {
        self.telemetry.k8s.owner_lookups.inc();
        let get = async {
            let refs = match key.kind.as_str() {
                "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), &key.namespace)
                    .get_metadata_opt(&key.name)
                    .await?
                    .map(|m| m.metadata.owner_references),
                _ => Api::<Job>::namespaced(self.client.clone(), &key.namespace)
                    .get_metadata_opt(&key.name)
                    .await?
                    .map(|m| m.metadata.owner_references),
            };
            Ok::<_, kube::Error>(
                refs.flatten().and_then(|refs| {
                    controller_of(&refs).map(|r| (r.name.clone(), r.kind.clone()))
                }),
            )
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, get).await {
            Ok(r) => r.map_err(LookupError::Api),
            Err(_) => Err(LookupError::Timeout),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("API server: {0}")]
    Api(#[source] kube::Error),
    #[error("no answer within {LOOKUP_TIMEOUT:?}")]
    Timeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oref(kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn controller_wins_over_first() {
        let refs = [
            oref("ConfigMap", "x", None),
            oref("StatefulSet", "db", Some(true)),
        ];
        assert_eq!(controller_of(&refs).unwrap().name, "db");
        assert_eq!(controller_of(&refs[..1]).unwrap().name, "x");
        assert!(controller_of(&[]).is_none());
    }

    #[test]
    fn workload_through_parents() {
        let rs = oref("ReplicaSet", "coredns-747dbcf5df", Some(true));
        let dep = ("coredns".to_string(), "Deployment".to_string());
        assert_eq!(workload(&rs, Some(&dep)), Some(dep.clone()));
        assert_eq!(
            workload(&rs, None),
            Some(("coredns-747dbcf5df".into(), "ReplicaSet".into()))
        );
        let job = oref("Job", "backup-29000000", Some(true));
        let cj = ("backup".to_string(), "CronJob".to_string());
        assert_eq!(workload(&job, Some(&cj)), Some(cj));
        assert_eq!(
            workload(&job, None),
            Some(("backup-29000000".into(), "Job".into()))
        );
        let ds = oref("DaemonSet", "kube-proxy", Some(true));
        assert_eq!(
            workload(&ds, None),
            Some(("kube-proxy".into(), "DaemonSet".into()))
        );
        assert_eq!(workload(&oref("Node", "n1", Some(true)), None), None);
        assert!(needs_parent("ReplicaSet") && needs_parent("Job") && !needs_parent("DaemonSet"));
    }

    #[test]
    fn guess_from_template_hash() {
        // names and hash from the kubelet fixture (coredns pod)
        let rs = oref("ReplicaSet", "coredns-747dbcf5df", Some(true));
        let mut labels = BTreeMap::new();
        labels.insert("pod-template-hash".to_string(), "747dbcf5df".to_string());
        assert_eq!(
            guess_parent(&rs, &labels),
            Some(("coredns".into(), "Deployment".into()))
        );
        // the fixture's own label (an older hash encoding) does not match: no guess
        labels.insert("pod-template-hash".to_string(), "3038679189".to_string());
        assert_eq!(guess_parent(&rs, &labels), None);
        labels.clear();
        assert_eq!(guess_parent(&rs, &labels), None);
    }
}
