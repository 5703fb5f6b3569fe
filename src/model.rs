//! What collectors produce: one [`Sample`] per value, and what it is about.
//!
//! Wire shapes (SPEC §3) live only at the sink edge (`sink::wire`); a sample
//! names its subject, and enrichment turns the subject into tags.

use std::sync::Arc;

/// Container runtime (or service manager) a cgroup belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    Podman,
    /// A systemd service (`*.service`) outside Kubernetes.
    Systemd,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::Crio => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Systemd => "systemd",
        }
    }
}

/// Kubernetes QoS class, as the kubelet lays out the cgroup tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// A container as its cgroup path tells it (no API server involved).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerIdentity {
    pub runtime: Runtime,
    /// Runtime container id (64 hex for docker/containerd/cri-o); empty for
    /// a systemd service.
    pub container_id: String,
    /// Pod UID in its API form (dashes, not the systemd underscores), when
    /// the cgroup belongs to a Kubernetes pod.
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
    /// What to call it when nothing better is known: the container id, or
    /// the systemd unit name.
    pub name: String,
}

/// What a sample is about.
#[derive(Debug, Clone)]
pub enum About {
    /// The node as a whole.
    Node,
    /// One container (or systemd service).
    Container(Arc<ContainerIdentity>),
    /// A pod as a whole (its network namespace): the container tag and
    /// field stay empty.
    Pod { pod_uid: Arc<str> },
    /// Only the sample's own tags (HTTP, traces, events). `node` is still
    /// added unless the tags carry one.
    Tags,
    /// A metric its sender named (OTLP metrics): name, unit and tag keys
    /// are not known when the agent is built, so they travel here and the
    /// sample's own `name` and `unit` are ignored. `node` is added.
    Named(Arc<Named>),
}

/// The name, unit and tags of an [`About::Named`] sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub unit: String,
    pub tags: Vec<(String, String)>,
}

/// One value of one metric in one cycle.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub about: About,
    /// Extra tags (`method`, `path`, `service`, `type`, `reason`, ...).
    pub tags: Vec<(&'static str, String)>,
}

impl Sample {
    pub fn new(name: &'static str, value: f64, unit: &'static str, about: About) -> Self {
        Sample {
            name,
            value,
            unit,
            about,
            tags: Vec::new(),
        }
    }

    pub fn node(name: &'static str, value: f64, unit: &'static str) -> Self {
        Sample::new(name, value, unit, About::Node)
    }
}

/// Units used on the wire (SPEC §4).
pub mod unit {
    pub const PERCENT: &str = "percent";
    pub const BYTES: &str = "bytes";
    pub const BYTES_PER_SEC: &str = "bytes/sec";
    pub const COUNT: &str = "count";
    pub const CORES: &str = "cores";
    pub const MS_PER_SEC: &str = "ms/sec";
    pub const MS: &str = "ms";
}
