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
//! apart from it: see [`reason_metric`]).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, VersionMatch, WatchEvent, WatchParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::collect::{CollectError, Collector};
use crate::model::{About, Sample, unit};
use crate::telemetry::Telemetry;

/// Normal events worth counting; every Warning counts.
const NORMAL_REASONS: [&str; 8] = [
    "Started",
    "Killing",
    "Preempting",
    "Scheduled",
    "SuccessfulCreate",
    "ScalingReplicaSet",
    "Pulling",
    "Pulled",
];

/// Whether events of this type and reason are counted.
pub fn counted(type_: &str, reason: &str) -> bool {
    type_ == "Warning" || (type_ == "Normal" && NORMAL_REASONS.contains(&reason))
}

/// How many times the event has happened: `series.count` or
/// `deprecatedCount` (core/v1 `count`), at least 1.
pub fn occurrences(ev: &Event) -> u64 {
    let series = ev.series.as_ref().map_or(0, |s| s.count);
    let count = ev.deprecated_count.unwrap_or(0);
    series.max(count).max(1) as u64
}

/// A compact key for an event UID (a UUID: its 128 bits; anything else: a
/// hash of it).
pub fn uid_key(uid: &str) -> u128 {
    let hex: String = uid.chars().filter(|c| *c != '-').collect();
    if hex.len() == 32
        && let Ok(v) = u128::from_str_radix(&hex, 16)
    {
        return v;
    }
    let mut a = DefaultHasher::new();
    uid.hash(&mut a);
    let mut b = DefaultHasher::new();
    (uid, 1u8).hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// What an event count is about: tags `type`, `reason`, `node`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TallyKey {
    pub type_: String,
    pub reason: String,
    pub node: String,
}

/// Occurrences per type, reason and node.
pub type Tally = HashMap<TallyKey, u64>;

fn merge(into: &mut Tally, from: Tally) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

/// The mirror of counted events: UID → occurrences already counted.
#[derive(Debug, Default)]
pub struct Mirror {
    counts: HashMap<u128, u64>,
}

impl Mirror {
    /// Take a list as the baseline: nothing in it is counted.
    pub fn reset<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        self.counts.clear();
        self.extend_baseline(events);
    }

    /// One more page of a baseline list (after [`Mirror::clear`]).
    pub fn extend_baseline<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for ev in events {
            if let Some(uid) = tracked(ev) {
                self.counts.insert(uid, occurrences(ev));
            }
        }
    }

    pub fn clear(&mut self) {
        self.counts.clear();
    }

    /// An added or modified event: the occurrences not counted yet.
    pub fn apply(&mut self, ev: &Event) -> u64 {
        let Some(uid) = tracked(ev) else { return 0 };
        let now = occurrences(ev);
        match self.counts.insert(uid, now) {
            None => now,
            Some(before) => now.saturating_sub(before),
        }
    }

    pub fn remove(&mut self, ev: &Event) {
        if let Some(uid) = ev.metadata.uid.as_deref() {
            self.counts.remove(&uid_key(uid));
        }
    }

    /// A fresh full list after the watch lost its place: what changed since
    /// the mirror was last current, as (event, new occurrences).
    pub fn diff<'a>(&mut self, events: &'a [Event]) -> Vec<(&'a Event, u64)> {
        let mut pass = Relist::default();
        let out = events
            .iter()
            .filter_map(|ev| Some((ev, pass.see(self, ev)?)))
            .collect();
        pass.finish(self);
        out
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// A relist read page by page against the mirror. The mirror is changed
/// only by [`Relist::finish`], once the whole list was read: a list that
/// fails half way leaves it as it was, so the next attempt counts the same.
#[derive(Debug, Default)]
pub struct Relist {
    /// Every counted event in the list (the others are gone).
    present: std::collections::HashSet<u128>,
    /// New occurrence counts of the events that changed.
    changed: HashMap<u128, u64>,
}

impl Relist {
    /// One event of the list: the occurrences not counted yet, if any.
    pub fn see(&mut self, mirror: &Mirror, ev: &Event) -> Option<u64> {
        let uid = tracked(ev)?;
        let now = occurrences(ev);
        self.present.insert(uid);
        let before = mirror.counts.get(&uid).copied();
        if before == Some(now) {
            return None;
        }
        self.changed.insert(uid, now);
        let n = now.saturating_sub(before.unwrap_or(0));
        (n > 0).then_some(n)
    }

    /// The list is read: the mirror becomes it.
    pub fn finish(self, mirror: &mut Mirror) {
        mirror.counts.retain(|k, _| self.present.contains(k));
        mirror.counts.extend(self.changed);
    }
}

/// UID key of an event that is counted at all (type and reason never change
/// for one event object, so the others need no memory).
fn tracked(ev: &Event) -> Option<u128> {
    let t = ev.type_.as_deref().unwrap_or("");
    let r = ev.reason.as_deref().unwrap_or("");
    if !counted(t, r) {
        return None;
    }
    ev.metadata.uid.as_deref().map(uid_key)
}

/// The leader's counts on their way to the cycle: `pending` (counted, not
/// checkpointed) → `sealed` (checkpoint being written) → `committed`
/// (checkpoint in the Lease: safe to report) → drained by the collector.
/// Every write names the leadership term it belongs to; writes of a term
/// that ended are ignored.
#[derive(Debug, Default)]
pub struct EventCounts {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    term: u64,
    pending: Tally,
    rv: Option<String>,
    sealed: Tally,
    committed: Tally,
}

impl EventCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new leadership term starts with nothing pending.
    pub fn begin(&self, term: u64) {
        let mut c = self.lock();
        c.term = term;
        c.pending.clear();
        c.sealed.clear();
        c.rv = None;
    }

    /// Leadership lost: what was not checkpointed is the successor's to count.
    pub fn discard(&self) {
        let mut c = self.lock();
        c.term = 0;
        c.pending.clear();
        c.sealed.clear();
        c.rv = None;
    }

    /// Counted occurrences up to resourceVersion `rv`.
    pub fn record(&self, term: u64, rv: &str, adds: impl IntoIterator<Item = (TallyKey, u64)>) {
        let mut c = self.lock();
        if c.term != term || term == 0 {
            return;
        }
        for (k, n) in adds {
            *c.pending.entry(k).or_default() += n;
        }
        c.rv = Some(rv.to_string());
    }

    /// Seal what is pending; the resourceVersion to checkpoint, when there
    /// is one for this term.
    pub fn seal(&self, term: u64) -> Option<String> {
        let mut c = self.lock();
        if c.term != term || term == 0 {
            return None;
        }
        let pending = std::mem::take(&mut c.pending);
        merge(&mut c.sealed, pending);
        c.rv.clone()
    }

    /// The checkpoint of the last seal is in the Lease.
    pub fn commit(&self, term: u64) {
        let mut c = self.lock();
        if c.term != term || term == 0 {
            return;
        }
        let sealed = std::mem::take(&mut c.sealed);
        merge(&mut c.committed, sealed);
    }

    /// What the cycle may report.
    pub fn drain(&self) -> Tally {
        std::mem::take(&mut self.lock().committed)
    }
}

/// Leadership as the events watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    Follower,
    Leader {
        term: u64,
        /// resourceVersion the previous holder had counted up to.
        checkpoint: Option<String>,
    },
}

/// Metric names per reason (besides `k8s.event_count` for every counted
/// event and `k8s.warning_events` for every Warning).
///
/// `k8s.oom_kills` is not among them: it counts the OOM-killed containers
/// of the pod statuses (see [`samples`]). An `OOMKilling` event
/// (node-problem-detector, about the Node) names a pid and a command, not
/// a pod, and is read by the leader while the pod status is read by the
/// pod's node: the same kill cannot be matched across the two, so counting
/// both would count it twice.
fn reason_metric(reason: &str) -> Option<&'static str> {
    match reason {
        "Evicted" => Some("k8s.evictions"),
        "FailedScheduling" => Some("k8s.failed_scheduling"),
        "BackOff" => Some("k8s.crashloop_backoff"),
        _ => None,
    }
}

/// Samples of one interval: events (leader only) and this node's OOM kills
/// from pod statuses (the only source of `k8s.oom_kills`).
pub fn samples(events: &Tally, local_oom: &Tally, out: &mut Vec<Sample>) {
    let mut by_metric: HashMap<(&'static str, &TallyKey), u64> = HashMap::new();
    for (k, n) in events {
        *by_metric.entry(("k8s.event_count", k)).or_default() += n;
        if k.type_ == "Warning" {
            *by_metric.entry(("k8s.warning_events", k)).or_default() += n;
        }
        if let Some(m) = reason_metric(&k.reason) {
            *by_metric.entry((m, k)).or_default() += n;
        }
    }
    for (k, n) in local_oom {
        *by_metric.entry(("k8s.oom_kills", k)).or_default() += n;
    }
    let mut sorted: Vec<_> = by_metric.into_iter().collect();
    sorted.sort();
    for ((name, k), n) in sorted {
        let mut s = Sample::new(name, n as f64, unit::COUNT, About::Tags);
        s.tags = vec![
            ("type", k.type_.clone()),
            ("reason", k.reason.clone()),
            ("node", k.node.clone()),
        ];
        out.push(s);
    }
}

/// Drains the interval's event counts into the cycle. Never waits on the
/// API server.
pub struct EventsCollector {
    events: Arc<EventCounts>,
    local: Arc<Mutex<Tally>>,
}

impl EventsCollector {
    pub fn new(events: Arc<EventCounts>, local: Arc<Mutex<Tally>>) -> Self {
        EventsCollector { events, local }
    }
}

impl Collector for EventsCollector {
    fn name(&self) -> &'static str {
        "k8s_events"
    }

    fn collect(&mut self, _now: Instant, out: &mut Vec<Sample>) -> Result<(), CollectError> {
        let events = self.events.drain();
        let local = std::mem::take(&mut *self.local.lock().unwrap_or_else(|e| e.into_inner()));
        samples(&events, &local, out);
        Ok(())
    }
}

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
                telemetry
                    .k8s_watch_up
                    .remove(&crate::telemetry::WatchLabel {
                        watch: "events".to_string(),
                    });
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
    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        self.telemetry.k8s_watch_error("events");
        crate::warn_limited!(format!("k8s:events:{what}"), error = %e, "event {what} failed; retrying");
    }

    /// The mirror as of the checkpoint (or now, without one); returns the
    /// resourceVersion to watch from.
    async fn baseline(&mut self, checkpoint: Option<&str>) -> Result<String, kube::Error> {
        self.telemetry.k8s_relist("events");
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
        self.telemetry.k8s_relist("events");
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
        self.telemetry.k8s_events_seen.inc_by(adds.values().sum());
        self.counts.record(self.term, &pages.rv, adds);
        Ok(pages.rv)
    }

    async fn count(&mut self, ev: &Event, n: u64, rv: &str) {
        let node = self.nodes.node_of(&self.client, ev).await;
        self.telemetry.k8s_events_seen.inc_by(n);
        self.counts
            .record(self.term, rv, [(tally_key(ev, node), n)]);
    }

    async fn follow(&mut self, checkpoint: Option<String>) {
        let mut delay = Duration::from_millis(250);
        let mut rv = loop {
            match self.baseline(checkpoint.as_deref()).await {
                Ok(rv) => break rv,
                Err(e) => {
                    self.failed("list", &e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(15));
                }
            }
        };
        self.counts.record(self.term, &rv, []);
        let wp = WatchParams::default().timeout(290);
        loop {
            let stream = match self.api.watch(&wp, &rv).await {
                Ok(s) => s,
                Err(e) => {
                    self.failed("watch", &e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(15));
                    continue;
                }
            };
            let mut stream = pin!(stream);
            let mut gone = false;
            let mut broken = false;
            while let Some(item) = stream.next().await {
                delay = Duration::from_millis(250);
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
                    Ok(WatchEvent::Error(s)) if s.code == 410 => {
                        gone = true;
                        break;
                    }
                    Ok(WatchEvent::Error(s)) => {
                        self.failed("watch", &s.message);
                        broken = true;
                        break;
                    }
                    Err(e) => {
                        self.failed("watch", &e);
                        broken = true;
                        break;
                    }
                }
            }
            if broken {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            if gone {
                loop {
                    match self.relist().await {
                        Ok(new_rv) => {
                            rv = new_rv;
                            break;
                        }
                        Err(e) => {
                            self.failed("list", &e);
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(15));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        uid: &str,
        type_: &str,
        reason: &str,
        count: Option<i32>,
        series: Option<i32>,
    ) -> Event {
        let mut v = serde_json::json!({
            "metadata": {"name": "e", "namespace": "default", "uid": uid},
            "eventTime": "2026-11-26T22:00:00.000000Z",
            "type": type_, "reason": reason,
            "regarding": {"kind": "Pod", "name": "web-0", "namespace": "default"},
        });
        if let Some(c) = count {
            v["deprecatedCount"] = c.into();
        }
        if let Some(c) = series {
            v["series"] =
                serde_json::json!({"count": c, "lastObservedTime": "2026-11-26T22:00:01.000000Z"});
        }
        serde_json::from_value(v).unwrap()
    }

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

    #[test]
    fn bumps_count_the_increase_only() {
        let mut m = Mirror::default();
        let a = "fb799e35-7187-4a02-a07d-0f1fa4153b99";
        assert_eq!(m.apply(&event(a, "Warning", "BackOff", Some(1), None)), 1);
        assert_eq!(m.apply(&event(a, "Warning", "BackOff", Some(4), None)), 3);
        // a series (events.k8s.io reporters)
        assert_eq!(
            m.apply(&event(a, "Warning", "BackOff", Some(4), Some(6))),
            2
        );
        // same count again (an unrelated field changed): nothing
        assert_eq!(m.apply(&event(a, "Warning", "BackOff", None, Some(6))), 0);
        assert_eq!(m.len(), 1);
        // a relist: one bumped, one new, one gone
        let b = "00000000-0000-0000-0000-000000000002";
        let list = vec![
            event(a, "Warning", "BackOff", None, Some(9)),
            event(b, "Normal", "Pulled", Some(2), None),
        ];
        let d = m.diff(&list);
        assert_eq!(d.iter().map(|(_, n)| *n).collect::<Vec<_>>(), vec![3, 2]);
        assert_eq!(m.diff(&list[1..]).len(), 0);
        assert_eq!(m.len(), 1);
        // baseline: nothing counted, later bumps counted from it
        m.reset(&list);
        assert_eq!(m.apply(&event(a, "Warning", "BackOff", None, Some(10))), 1);
    }

    #[test]
    fn relist_pages_change_the_mirror_only_when_finished() {
        let (a, b, c) = (
            "00000000-0000-0000-0000-00000000000a",
            "00000000-0000-0000-0000-00000000000b",
            "00000000-0000-0000-0000-00000000000c",
        );
        let mut m = Mirror::default();
        m.clear();
        m.extend_baseline(&[event(a, "Warning", "BackOff", Some(2), None)]);
        m.extend_baseline(&[event(b, "Warning", "BackOff", Some(1), None)]);
        assert_eq!(m.len(), 2);
        // page 1: a bumped by 3; page 2: c new (b is gone)
        let page1 = [event(a, "Warning", "BackOff", Some(5), None)];
        let page2 = [event(c, "Normal", "Pulled", Some(4), None)];
        let mut pass = Relist::default();
        assert_eq!(pass.see(&m, &page1[0]), Some(3));
        // the list fails here: the mirror is as it was, a retry counts the same
        drop(pass);
        let mut pass = Relist::default();
        assert_eq!(pass.see(&m, &page1[0]), Some(3));
        assert_eq!(pass.see(&m, &page2[0]), Some(4));
        pass.finish(&mut m);
        assert_eq!(m.len(), 2);
        assert_eq!(m.apply(&page1[0]), 0);
        assert_eq!(m.apply(&event(b, "Warning", "BackOff", Some(1), None)), 1);
    }

    #[test]
    fn uid_keys() {
        assert_eq!(
            uid_key("fb799e35-7187-4a02-a07d-0f1fa4153b99"),
            0xfb799e3571874a02a07d0f1fa4153b99
        );
        assert_ne!(uid_key("not-a-uuid"), uid_key("not-a-uuid2"));
    }

    #[test]
    fn counts_reach_the_cycle_only_when_checkpointed() {
        let c = EventCounts::default();
        let k = |r: &str| TallyKey {
            type_: "Warning".into(),
            reason: r.into(),
            node: "n1".into(),
        };
        c.begin(1);
        c.record(1, "10", [(k("BackOff"), 2)]);
        assert!(c.drain().is_empty());
        assert_eq!(c.seal(1).as_deref(), Some("10"));
        c.record(1, "11", [(k("BackOff"), 1)]);
        c.commit(1);
        assert_eq!(c.drain().get(&k("BackOff")), Some(&2));
        // a stale term writes nothing; losing the lease drops the rest
        c.record(7, "12", [(k("Evicted"), 5)]);
        c.discard();
        assert_eq!(c.seal(1), None);
        c.commit(1);
        assert!(c.drain().is_empty());
    }

    #[test]
    fn samples_per_metric() {
        let mut events = Tally::new();
        let k = |t: &str, r: &str, n: &str| TallyKey {
            type_: t.into(),
            reason: r.into(),
            node: n.into(),
        };
        events.insert(k("Warning", "BackOff", "n1"), 3);
        events.insert(k("Warning", "FailedScheduling", ""), 2);
        events.insert(k("Normal", "Pulled", "n2"), 1);
        events.insert(k("Warning", "OOMKilling", "n1"), 1);
        let mut local = Tally::new();
        local.insert(k("Warning", "OOMKilled", "n1"), 2);
        let mut out = vec![];
        samples(&events, &local, &mut out);
        let get = |name: &str, reason: &str| -> Vec<f64> {
            out.iter()
                .filter(|s| s.name == name && s.tags[1].1 == reason)
                .map(|s| s.value)
                .collect()
        };
        assert_eq!(get("k8s.event_count", "BackOff"), vec![3.0]);
        assert_eq!(get("k8s.crashloop_backoff", "BackOff"), vec![3.0]);
        assert_eq!(get("k8s.warning_events", "BackOff"), vec![3.0]);
        assert_eq!(get("k8s.failed_scheduling", "FailedScheduling"), vec![2.0]);
        assert_eq!(get("k8s.warning_events", "Pulled"), Vec::<f64>::new());
        assert_eq!(get("k8s.event_count", "Pulled"), vec![1.0]);
        // an OOMKilling event is an event, not a kill count (see reason_metric)
        assert_eq!(get("k8s.oom_kills", "OOMKilling"), Vec::<f64>::new());
        assert_eq!(get("k8s.event_count", "OOMKilling"), vec![1.0]);
        assert_eq!(get("k8s.oom_kills", "OOMKilled"), vec![2.0]);
        assert_eq!(get("k8s.event_count", "OOMKilled"), Vec::<f64>::new());
        let fs = out
            .iter()
            .find(|s| s.name == "k8s.failed_scheduling")
            .unwrap();
        assert_eq!(fs.tags[2], ("node", String::new()));
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|s| s.unit == "count"));
    }
}
