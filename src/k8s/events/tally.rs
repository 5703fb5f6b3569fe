//! The events watcher's pure half: which events count, the mirror of what
//! was counted (so a bumped `count` adds only its increase and a relist is
//! a diff), the per-term counts and their checkpoints, and the samples the
//! cycle gets. No API I/O here ([`super`] does that).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::events::v1::Event;

use crate::collect::{CollectError, Collector};
use crate::model::{About, Sample, unit};

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
