//! Kubernetes: API server watches, owner lookups and the events Lease.

use std::fmt::Display;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::label::label_values;

label_values! {
    /// A watched collection.
    pub enum Watch {
        /// This node's pods.
        Pods => "pods",
        /// Cluster events (leader only).
        Events => "events",
    }
}

/// The request of a list-then-watch that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    List,
    Watch,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabel {
    pub watch: Watch,
}

/// Registered under the `k8s_` prefix.
pub struct K8sTelemetry {
    pub watch_up: Family<WatchLabel, Gauge>,
    pub watch_errors: Family<WatchLabel, Counter>,
    pub watch_relists: Family<WatchLabel, Counter>,
    pub pods_cached: Gauge,
    pub owner_lookups: Counter,
    pub leader: Gauge,
    pub leader_transitions: Counter,
    pub events_seen: Counter,
}

impl K8sTelemetry {
    pub(super) fn register(r: &mut Registry) -> Self {
        let t = K8sTelemetry {
            watch_up: Family::default(),
            watch_errors: Family::default(),
            watch_relists: Family::default(),
            pods_cached: Gauge::default(),
            owner_lookups: Counter::default(),
            leader: Gauge::default(),
            leader_transitions: Counter::default(),
            events_seen: Counter::default(),
        };
        t.register_watches(r);
        t.register_leader(r);
        t
    }

    fn register_watches(&self, r: &mut Registry) {
        r.register(
            "watch_up",
            "1 while the API server watch is connected and current, 0 while it fails and retries",
            self.watch_up.clone(),
        );
        r.register(
            "watch_errors",
            "API server watch or list failures (each retried with backoff)",
            self.watch_errors.clone(),
        );
        r.register(
            "watch_relists",
            "Full lists of a watched collection (start, 410 Expired, reconnect)",
            self.watch_relists.clone(),
        );
        r.register(
            "pods_cached",
            "Pods of this node in the metadata cache",
            self.pods_cached.clone(),
        );
        r.register(
            "owner_lookups",
            "Owner (ReplicaSet, Job) metadata requests to the API server",
            self.owner_lookups.clone(),
        );
    }

    fn register_leader(&self, r: &mut Registry) {
        r.register(
            "leader",
            "1 while this agent holds the events Lease (and counts cluster events)",
            self.leader.clone(),
        );
        r.register(
            "leader_transitions",
            "Times this agent became the events leader",
            self.leader_transitions.clone(),
        );
        r.register(
            "events_seen",
            "Kubernetes event occurrences counted by this agent (as leader)",
            self.events_seen.clone(),
        );
    }

    /// Whether the last list/watch request of `watch` was answered.
    pub fn watch_state(&self, watch: Watch, up: bool) {
        self.watch_up
            .get_or_create(&WatchLabel { watch })
            .set(i64::from(up));
    }

    fn watch_error(&self, watch: Watch) {
        let l = WatchLabel { watch };
        self.watch_up.get_or_create(&l).set(0);
        self.watch_errors.get_or_create(&l).inc();
    }

    /// The pod watch failed (it is retried).
    pub fn pod_watch_failed(&self, error: &dyn Display) {
        self.watch_error(Watch::Pods);
        crate::warn_limited!(
            "k8s:pods",
            error = %error,
            "pod watch failed; keeping the last known pod metadata and retrying"
        );
    }

    /// A list or watch of events failed (it is retried).
    pub fn event_watch_failed(&self, step: Step, error: &dyn Display) {
        self.watch_error(Watch::Events);
        let (key, what) = match step {
            Step::List => ("k8s:events:list", "list"),
            Step::Watch => ("k8s:events:watch", "watch"),
        };
        crate::warn_limited!(key, error = %error, "event {what} failed; retrying");
    }

    pub fn relisted(&self, watch: Watch) {
        self.watch_relists
            .get_or_create(&WatchLabel { watch })
            .inc();
    }

    /// `watch` stopped on purpose (leadership lost): no longer up or down.
    pub fn watch_stopped(&self, watch: Watch) {
        self.watch_up.remove(&WatchLabel { watch });
    }

    pub fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
        if leading {
            self.leader_transitions.inc();
        }
    }
}
