//! Kubernetes: this node's pod metadata (a watch cache) and cluster events
//! (counted once, by the Lease holder). See `docs/k8s.md`.
//!
//! [`connect`] finds credentials (in-cluster service account, else
//! `KUBECONFIG` / `~/.kube/config`, else none: local mode); [`start`] spawns
//! the background tasks and hands back what the collection cycle uses, none
//! of which ever waits on the API server.

pub mod backoff;
pub mod events;
pub mod health;
pub mod leader;
pub mod owners;
pub mod pods;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::config::{Config as KubeConfig, KubeConfigOptions};
use tokio::sync::watch;

use crate::telemetry::Telemetry;
use events::{EventCounts, EventsCollector, Leadership, Tally};
use pods::PodCache;

/// Lease duration unless `CASED_LEASE_DURATION` says otherwise.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// What the collection cycle gets from Kubernetes.
pub struct K8s {
    /// Pod metadata for enrichment.
    pub meta: Arc<PodCache>,
    /// Event and OOM-kill counts, drained every cycle.
    pub collector: EventsCollector,
    /// Gives the events Lease up on shutdown (when events are counted).
    pub release: Option<leader::LeaseRelease>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("in-cluster configuration: {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building the API client: {0}")]
    Client(#[source] kube::Error),
}

fn kubeconfig_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".kube").join("config");
    p.exists().then_some(p)
}

/// A client for `config` whose list/watch answers feed `k8s_watch_up`.
pub fn client_from(config: KubeConfig, telemetry: &Arc<Telemetry>) -> Result<Client, ConnectError> {
    let builder = kube::client::ClientBuilder::try_from(config).map_err(ConnectError::Client)?;
    Ok(builder
        .with_layer(&health::WatchHealthLayer::new(telemetry.clone()))
        .build())
}

/// Credentials, in SPEC §5 order. `Ok(None)` is local mode.
pub async fn connect(telemetry: &Arc<Telemetry>) -> Result<Option<Client>, ConnectError> {
    // kube's rustls uses ring; installing twice is harmless
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        KubeConfig::incluster().map_err(ConnectError::InCluster)?
    } else if let Some(path) = kubeconfig_path() {
        KubeConfig::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(|source| ConnectError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?
    } else {
        return Ok(None);
    };
    client_from(config, telemetry).map(Some)
}

/// Lease duration: `CASED_LEASE_DURATION` (`15s`, `3s`, ...) or 15 s.
pub fn lease_duration() -> Duration {
    std::env::var("CASED_LEASE_DURATION")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .filter(|d| *d >= Duration::from_secs(1))
        .unwrap_or(DEFAULT_LEASE_DURATION)
}

/// Spawn the pod watch and, with `events`, the leader election and the
/// events watcher. Must be called inside the tokio runtime.
pub fn start(
    client: Client,
    node: &str,
    namespace: &str,
    events: bool,
    telemetry: Arc<Telemetry>,
) -> K8s {
    let local: Arc<Mutex<Tally>> = Arc::default();
    let counts = Arc::new(EventCounts::default());
    let meta = pods::spawn(
        client.clone(),
        node.to_string(),
        telemetry.clone(),
        local.clone(),
    );
    let mut release = None;
    if events {
        let (tx, rx) = watch::channel(Leadership::Follower);
        let cfg = leader::LeaseConfig::new(namespace, node, lease_duration());
        let (handle, release_rx) = leader::LeaseRelease::new();
        release = Some(handle);
        tokio::spawn(leader::run(
            client.clone(),
            cfg,
            counts.clone(),
            tx,
            telemetry.clone(),
            release_rx,
        ));
        tokio::spawn(events::run(client, rx, counts.clone(), telemetry));
    }
    K8s {
        meta,
        collector: EventsCollector::new(counts, local),
        release,
    }
}
