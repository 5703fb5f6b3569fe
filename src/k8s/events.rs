//! Cluster events, counted once in the whole cluster (SPEC §4).
//!
//! Only the Lease holder ([`super::leader`]) watches `events.k8s.io/v1`
//! Events; followers open no watch at all. The leader keeps a mirror of the
//! counted events (UID → occurrences), so an update that bumps `count`
//! (`series.count`, or `deprecatedCount` for events written through core/v1)
//! adds only the increase, and a relist after `410 Gone` is a diff against
//! the mirror: nothing lost, nothing counted twice.
//!
//! Handover without double counting: the leader writes the resourceVersion
//! up to which it has counted into its Lease on every renewal, and only
//! counts covered by a successful write are handed to the collection cycle.
//! A new leader lists the events *as of* that resourceVersion
//! (`resourceVersionMatch=Exact`) to rebuild the mirror, then watches from
//! it. Counts a leader had not checkpointed when it lost the Lease are
//! dropped by it and counted by its successor instead. If the checkpoint is
//! too old for the API server (compacted), the successor starts from now and
//! says so.
//!
//! OOM kills found in pod statuses ([`super::pods`]) are counted by every
//! node for its own pods and drained by the same collector; they alone make
//! `k8s.oom_kills` (an `OOMKilling` event of the same kill cannot be told
//! apart from it: see `tally::reason_metric`).

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, VersionMatch, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::backoff::WatchBackoff;
use crate::telemetry::k8s::Step;
use crate::telemetry::{Telemetry, Watch};

mod tally;

pub use self::tally::*;

/// Page size of event lists.
const PAGE: u32 = 500;
/// Bound of one pod lookup (the node an event is about).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pods whose node is remembered (events often repeat for one pod).
const NODE_CACHE_MAX: usize = 10_000;

/// How long "this pod has no node yet" is believed (repeated
/// `FailedScheduling` events would otherwise each cost a GET).
const UNPLACED_TTL: Duration = Duration::from_secs(10);

/// The node an event is about: the Node itself, the reporting kubelet, or
/// the node of the pod it is about (looked up once, cached). "" when the
/// event is about nothing on a node (an unscheduled pod, a Deployment).
struct NodeResolver {
    pods: HashMap<String, (String, Instant)>,
}

impl NodeResolver {
    fn from_event(ev: &Event) -> Option<String> {
        let r = ev.regarding.as_ref();
        if let Some(r) = r
            && r.kind.as_deref() == Some("Node")
        {
            return r.name.clone();
        }
        if let Some(host) = ev.deprecated_source.as_ref().and_then(|s| s.host.clone())
            && !host.is_empty()
        {
            return Some(host);
        }
        if ev.reporting_controller.as_deref() == Some("kubelet")
            && let Some(i) = ev.reporting_instance.clone()
            && !i.is_empty()
        {
            return Some(i);
        }
        None
    }

    async fn node_of(&mut self, client: &Client, ev: &Event) -> String {
        if let Some(n) = Self::from_event(ev) {
            return n;
        }
        let Some(r) = ev
            .regarding
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
        else {
            return String::new();
        };
        let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) else {
            return String::new();
        };
        let key = r.uid.clone().unwrap_or_else(|| format!("{ns}/{name}"));
        // a pod just placed is what `Scheduled` is about: never trust "unplaced" then
        let scheduled = ev.reason.as_deref() == Some("Scheduled");
        match self.pods.get(&key) {
            Some((n, _)) if !n.is_empty() => return n.clone(),
            Some((_, at)) if !scheduled && at.elapsed() < UNPLACED_TTL => return String::new(),
            _ => {}
        }
        let api = Api::<Pod>::namespaced(client.clone(), ns);
        let node = match tokio::time::timeout(LOOKUP_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(Some(p))) => p.spec.and_then(|s| s.node_name).unwrap_or_default(),
            Ok(Ok(None)) => String::new(),
            Ok(Err(e)) => {
                crate::warn_limited!("k8s:event-pod", error = %e, "cannot read the pod an event is about");
                return String::new();
            }
            Err(_) => return String::new(),
        };
        if self.pods.len() >= NODE_CACHE_MAX {
            self.pods.clear();
        }
        self.pods.insert(key, (node.clone(), Instant::now()));
        node
    }
}

fn tally_key(ev: &Event, node: String) -> TallyKey {
    TallyKey {
        type_: ev.type_.clone().unwrap_or_default(),
        reason: ev.reason.clone().unwrap_or_default(),
        node,
    }
}

/// A paged list of events, read one page at a time (the leader never holds
/// the whole cluster's events). The first page may ask for an exact
/// resourceVersion; later pages carry it in the `continue` token.
struct Pages {
    next: Option<ListParams>,
    /// The list's resourceVersion, once the last page is read.
    rv: String,
}

impl Pages {
    fn new(exact: Option<&str>) -> Self {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(rv) = exact {
            lp = lp.at(rv).matching(VersionMatch::Exact);
        }
        Pages {
            next: Some(lp),
            rv: String::new(),
        }
    }

    /// The next page; `None` after the last.
    async fn next(&mut self, api: &Api<Event>) -> Result<Option<Vec<Event>>, kube::Error> {
        let Some(lp) = self.next.take() else {
            return Ok(None);
        };
        let page = api.list(&lp).await?;
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => {
                self.next = Some(ListParams::default().limit(PAGE).continue_token(&token));
            }
            None => self.rv = page.metadata.resource_version.unwrap_or_default(),
        }
        Ok(Some(page.items))
    }
}

/// Rebuild the mirror from a paged list as a baseline; the list's
/// resourceVersion.
async fn baseline_list(
    api: &Api<Event>,
    exact: Option<&str>,
    mirror: &mut Mirror,
) -> Result<String, kube::Error> {
    let mut pages = Pages::new(exact);
    mirror.clear();
    while let Some(items) = pages.next(api).await? {
        mirror.extend_baseline(&items);
    }
    Ok(pages.rv)
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 410)
}

/// The events watcher: idle while a follower, counting while the leader.
pub async fn run(
    client: Client,
    mut leadership: watch::Receiver<Leadership>,
    counts: Arc<EventCounts>,
    telemetry: Arc<Telemetry>,
) {
    loop {
        let state = leadership.borrow_and_update().clone();
        match state {
            Leadership::Follower => {
                if leadership.changed().await.is_err() {
                    return;
                }
            }
            Leadership::Leader { term, checkpoint } => {
                let mut w = Watcher {
                    api: Api::all(client.clone()),
                    client: client.clone(),
                    counts: counts.clone(),
                    telemetry: telemetry.clone(),
                    term,
                    mirror: Mirror::default(),
                    nodes: NodeResolver {
                        pods: HashMap::new(),
                    },
                };
                tokio::select! {
                    _ = w.follow(checkpoint) => {}
                    r = leadership.changed() => {
                        if r.is_err() {
                            return;
                        }
                    }
                }
                telemetry.k8s.watch_stopped(Watch::Events);
            }
        }
    }
}

struct Watcher {
    api: Api<Event>,
    client: Client,
    counts: Arc<EventCounts>,
    telemetry: Arc<Telemetry>,
    term: u64,
    mirror: Mirror,
    nodes: NodeResolver,
}

impl Watcher {
    fn failed(&self, step: Step, e: &dyn std::fmt::Display) {
        self.telemetry.k8s.event_watch_failed(step, e);
    }

    /// The mirror as of the checkpoint (or now, without one); returns the
    /// resourceVersion to watch from.
    async fn baseline(&mut self, checkpoint: Option<&str>) -> Result<String, kube::Error> {
        self.telemetry.k8s.relisted(Watch::Events);
        if let Some(cp) = checkpoint {
            match baseline_list(&self.api, Some(cp), &mut self.mirror).await {
                Ok(rv) => {
                    tracing::info!(
                        checkpoint = cp,
                        events = self.mirror.len(),
                        "counting events from the previous leader's checkpoint"
                    );
                    return Ok(if rv.is_empty() { cp.to_string() } else { rv });
                }
                Err(e) if is_gone(&e) => {
                    tracing::warn!(
                        checkpoint = cp,
                        "the events checkpoint is too old for the API server; events since it are not counted"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        let rv = baseline_list(&self.api, None, &mut self.mirror).await?;
        tracing::info!(events = self.mirror.len(), "counting events from now");
        Ok(rv)
    }

    /// After `410 Gone`: a fresh list, counted against the mirror page by
    /// page.
    async fn relist(&mut self) -> Result<String, kube::Error> {
        self.telemetry.k8s.relisted(Watch::Events);
        let mut pages = Pages::new(None);
        let mut pass = Relist::default();
        let mut adds = Tally::new();
        while let Some(items) = pages.next(&self.api).await? {
            for ev in &items {
                if let Some(n) = pass.see(&self.mirror, ev) {
                    let node = self.nodes.node_of(&self.client, ev).await;
                    *adds.entry(tally_key(ev, node)).or_default() += n;
                }
            }
        }
        pass.finish(&mut self.mirror);
        // the list is one point in time: its counts go in at once, so a
        // checkpoint never falls between them
        self.telemetry.k8s.events_seen.inc_by(adds.values().sum());
        self.counts.record(self.term, &pages.rv, adds);
        Ok(pages.rv)
    }

    async fn count(&mut self, ev: &Event, n: u64, rv: &str) {
        let node = self.nodes.node_of(&self.client, ev).await;
        self.telemetry.k8s.events_seen.inc_by(n);
        self.counts
            .record(self.term, rv, [(tally_key(ev, node), n)]);
    }

    /// Count events until the task is dropped (leadership lost): list,
    /// then watch, relisting after `410 Gone`; every failure waits the
    /// shared [`WatchBackoff`], reset by any watch event received.
    async fn follow(&mut self, checkpoint: Option<String>) {
        let mut backoff = WatchBackoff::new();
        let mut state = Follow::Baseline(checkpoint);
        loop {
            state = match state {
                Follow::Baseline(cp) => match self.baseline(cp.as_deref()).await {
                    Ok(rv) => {
                        self.counts.record(self.term, &rv, []);
                        Follow::Watch(rv)
                    }
                    Err(e) => {
                        self.failed(Step::List, &e);
                        backoff.wait().await;
                        Follow::Baseline(cp)
                    }
                },
                Follow::Watch(rv) => self.watch(rv, &mut backoff).await,
                Follow::Relist => match self.relist().await {
                    Ok(rv) => Follow::Watch(rv),
                    Err(e) => {
                        self.failed(Step::List, &e);
                        backoff.wait().await;
                        Follow::Relist
                    }
                },
            };
        }
    }

    /// One watch from `rv` until it ends (the server's timeout: watch
    /// again), breaks (wait, then watch again) or is `Gone` (relist).
    async fn watch(&mut self, mut rv: String, backoff: &mut WatchBackoff) -> Follow {
        let wp = WatchParams::default().timeout(290);
        let stream = match self.api.watch(&wp, &rv).await {
            Ok(s) => s,
            Err(e) => {
                self.failed(Step::Watch, &e);
                backoff.wait().await;
                return Follow::Watch(rv);
            }
        };
        let mut stream = pin!(stream);
        while let Some(item) = stream.next().await {
            backoff.reset();
            match item {
                Ok(WatchEvent::Added(ev)) | Ok(WatchEvent::Modified(ev)) => {
                    let new_rv = ev.resource_version().unwrap_or_else(|| rv.clone());
                    let n = self.mirror.apply(&ev);
                    if n > 0 {
                        self.count(&ev, n, &new_rv).await;
                    } else {
                        self.counts.record(self.term, &new_rv, []);
                    }
                    rv = new_rv;
                }
                Ok(WatchEvent::Deleted(ev)) => {
                    self.mirror.remove(&ev);
                    if let Some(new_rv) = ev.resource_version() {
                        self.counts.record(self.term, &new_rv, []);
                        rv = new_rv;
                    }
                }
                Ok(WatchEvent::Bookmark(b)) => {
                    rv = b.metadata.resource_version;
                    self.counts.record(self.term, &rv, []);
                }
                Ok(WatchEvent::Error(s)) if s.code == 410 => return Follow::Relist,
                Ok(WatchEvent::Error(s)) => {
                    self.failed(Step::Watch, &s.message);
                    backoff.wait().await;
                    return Follow::Watch(rv);
                }
                Err(e) => {
                    self.failed(Step::Watch, &e);
                    backoff.wait().await;
                    return Follow::Watch(rv);
                }
            }
        }
        Follow::Watch(rv)
    }
}

/// Where [`Watcher::follow`] is.
enum Follow {
    /// Rebuild the mirror as of the checkpoint (or now).
    Baseline(Option<String>),
    /// Watch from this resourceVersion.
    Watch(String),
    /// The watch's resourceVersion is gone: list again, diffed.
    Relist,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_event_parses_and_is_not_counted() {
        let text = include_str!("../../tests/fixtures/k8s/event.json");
        let ev: Event = serde_json::from_str(text).unwrap();
        assert_eq!(ev.reason.as_deref(), Some("TestEvent"));
        assert_eq!(occurrences(&ev), 1);
        // a Normal event with a reason outside the list
        assert!(!counted("Normal", "TestEvent"));
        assert!(counted("Normal", "Pulled") && counted("Warning", "Anything"));
        assert_eq!(NodeResolver::from_event(&ev), None);
        let mut m = Mirror::default();
        assert_eq!(m.apply(&ev), 0);
        assert!(m.is_empty());
    }
}
