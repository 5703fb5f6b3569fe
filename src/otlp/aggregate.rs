//! Per-service golden signals of accepted spans, per interval (SPEC §4):
//! span count, error rate, duration average and p50/p95/p99 in fractional
//! milliseconds from a [`Sketch`].
//!
//! A series is a `service.name` and, with Kubernetes metadata, the pod that
//! sent the spans ([`super::pods`]): its summary is tagged `namespace`,
//! `pod`, `workload`, `workload_kind` as container metrics are.
//!
//! Memory is bounded: at most `max_services` distinct series are kept per
//! interval; spans of any further series count under the overflow service
//! [`OVERFLOW_SERVICE`] (one more slot, without pod tags). Each slot is a few
//! counters and a sketch of at most 16 KiB, and everything is dropped when
//! the interval is drained.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::convert::SpanStat;
use crate::collect::{CollectError, Collector};
use crate::enrich::PodMeta;
use crate::model::{About, Sample, unit};
use crate::sketch::Sketch;

/// The `service` tag of spans beyond the per-interval cap.
pub const OVERFLOW_SERVICE: &str = "{other}";
/// Default cap on distinct services per interval.
pub const DEFAULT_MAX_SERVICES: usize = 256;

#[derive(Debug, Default, Clone)]
struct Stats {
    pod: Option<Arc<PodMeta>>,
    count: u64,
    errors: u64,
    sum_ms: f64,
    sketch: Sketch,
}

impl Stats {
    fn add(&mut self, s: &SpanStat) {
        self.count += 1;
        self.errors += u64::from(s.error);
        self.sum_ms += s.duration_ms;
        self.sketch.add(s.duration_ms);
    }
}

/// One series' numbers for one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSummary {
    pub service: String,
    /// The pod that sent the spans, when known.
    pub pod: Option<Arc<PodMeta>>,
    pub span_count: u64,
    /// Percent of spans with status ERROR.
    pub error_rate: f64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// The running interval.
#[derive(Debug)]
pub struct Aggregate {
    /// service → pod uid (empty: no pod) → numbers.
    services: HashMap<String, HashMap<String, Stats>>,
    /// Series held (not counting the overflow slot).
    series: usize,
    overflow: Stats,
    max_services: usize,
}

impl Aggregate {
    pub fn new(max_services: usize) -> Self {
        Aggregate {
            services: HashMap::new(),
            series: 0,
            overflow: Stats::default(),
            max_services,
        }
    }

    /// Record the spans of one accepted request without pods (see
    /// [`super::convert::Converted`]).
    pub fn record(&mut self, services: &[String], stats: &[SpanStat]) {
        for st in stats {
            if let Some(name) = services.get(st.service as usize) {
                self.record_span(name, None, st);
            }
        }
    }

    /// Record one span of service `name` sent by `pod`: two map lookups,
    /// no allocation once the series is held.
    pub fn record_span(&mut self, name: &str, pod: Option<&Arc<PodMeta>>, st: &SpanStat) {
        self.record_spans(name, pod, std::slice::from_ref(st));
    }

    /// Record spans of one series, as [`Aggregate::record_span`] for each
    /// in turn would, with one lookup (the first span decides where they
    /// go: once a series is held or the cap reached, it stays so).
    pub fn record_spans(&mut self, name: &str, pod: Option<&Arc<PodMeta>>, sts: &[SpanStat]) {
        let uid = pod.map_or("", |p| p.uid.as_str());
        if let Some(s) = self.services.get_mut(name).and_then(|p| p.get_mut(uid)) {
            sts.iter().for_each(|st| s.add(st));
            return;
        }
        if self.series >= self.max_services {
            sts.iter().for_each(|st| self.overflow.add(st));
            return;
        }
        self.series += 1;
        let mut stats = Stats {
            pod: pod.cloned(),
            ..Stats::default()
        };
        sts.iter().for_each(|st| stats.add(st));
        self.services
            .entry(name.to_string())
            .or_default()
            .insert(uid.to_string(), stats);
    }

    /// Distinct series held (not counting the overflow slot).
    pub fn services(&self) -> usize {
        self.series
    }

    /// Take the interval's numbers and start a new interval. Series with
    /// no span are absent; sorted by service name, then namespace and pod.
    pub fn drain(&mut self) -> Vec<ServiceSummary> {
        let services = std::mem::take(&mut self.services);
        let overflow = std::mem::take(&mut self.overflow);
        self.series = 0;
        let mut out: Vec<ServiceSummary> = services
            .into_iter()
            .flat_map(|(service, pods)| pods.into_values().map(move |s| (service.clone(), s)))
            .chain((overflow.count > 0).then(|| (OVERFLOW_SERVICE.to_string(), overflow)))
            .map(|(service, s)| summarize(service, s))
            .collect();
        fn key(s: &ServiceSummary) -> (&str, &str, &str) {
            let p = s.pod.as_deref();
            let (ns, name) = p.map_or(("", ""), |p| (p.namespace.as_str(), p.name.as_str()));
            (s.service.as_str(), ns, name)
        }
        out.sort_by(|a, b| key(a).cmp(&key(b)));
        out
    }
}

fn summarize(service: String, s: Stats) -> ServiceSummary {
    let n = s.count.max(1) as f64;
    let q = |p: f64| s.sketch.quantile(p).unwrap_or(0.0);
    ServiceSummary {
        service,
        pod: s.pod,
        span_count: s.count,
        error_rate: s.errors as f64 * 100.0 / n,
        avg_ms: s.sum_ms / n,
        p50_ms: q(0.50),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
    }
}

impl ServiceSummary {
    /// The six `trace.*` samples, tagged `service` and the pod's tags
    /// (`node` is added by enrichment).
    pub fn push_samples(&self, out: &mut Vec<Sample>) {
        for (name, value, u) in [
            ("trace.span_count", self.span_count as f64, unit::COUNT),
            ("trace.error_rate", self.error_rate, unit::PERCENT),
            ("trace.duration_avg", self.avg_ms, unit::MS),
            ("trace.duration_p50", self.p50_ms, unit::MS),
            ("trace.duration_p95", self.p95_ms, unit::MS),
            ("trace.duration_p99", self.p99_ms, unit::MS),
        ] {
            let mut s = Sample::new(name, value, u, About::Tags);
            s.tags.push(("service", self.service.clone()));
            if let Some(p) = &self.pod {
                s.tags.extend(p.tags().map(|(k, v)| (k, v.to_string())));
            }
            out.push(s);
        }
    }
}

/// The OTLP receiver's per-interval metrics, as a [`Collector`]: each
/// `collect` drains the aggregate of the spans accepted since the last one.
#[derive(Clone)]
pub struct TraceMetrics {
    aggregate: Arc<Mutex<Aggregate>>,
}

impl TraceMetrics {
    pub fn new(aggregate: Arc<Mutex<Aggregate>>) -> Self {
        TraceMetrics { aggregate }
    }

    /// Drain the interval (what `collect` does, without samples).
    pub fn drain(&self) -> Vec<ServiceSummary> {
        self.aggregate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
    }
}

impl Collector for TraceMetrics {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn collect(&mut self, _now: Instant, out: &mut Vec<Sample>) -> Result<(), CollectError> {
        for s in self.drain() {
            s.push_samples(out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(service: u32, ms: f64, error: bool) -> SpanStat {
        SpanStat {
            service,
            duration_ms: ms,
            error,
        }
    }

    #[test]
    fn per_service_numbers() {
        let mut a = Aggregate::new(10);
        let names = vec!["api".to_string(), "db".to_string()];
        // api: 1..=100 ms, every 4th an error; db: 0.5 ms x 3
        let mut stats: Vec<SpanStat> = (1..=100).map(|i| stat(0, i as f64, i % 4 == 0)).collect();
        stats.extend((0..3).map(|_| stat(1, 0.5, false)));
        a.record(&names, &stats);
        let out = a.drain();
        assert_eq!(out.len(), 2);
        let api = &out[0];
        assert_eq!(api.service, "api");
        assert_eq!(api.span_count, 100);
        assert!((api.error_rate - 25.0).abs() < 1e-12);
        assert!((api.avg_ms - 50.5).abs() < 1e-9);
        // exact values of ranks 49, 94, 98 are 50, 95, 99
        for (got, want) in [(api.p50_ms, 50.0), (api.p95_ms, 95.0), (api.p99_ms, 99.0)] {
            assert!((got - want).abs() <= 0.01 * want, "{got} vs {want}");
        }
        let db = &out[1];
        assert_eq!((db.service.as_str(), db.span_count), ("db", 3));
        assert_eq!(db.error_rate, 0.0);
        assert!((db.p99_ms - 0.5).abs() < 1e-12);
        // drained: the next interval starts empty
        assert!(a.drain().is_empty());
    }

    #[test]
    fn a_run_of_spans_is_recorded_as_each_in_turn() {
        let run: Vec<SpanStat> = (0..50).map(|i| stat(0, f64::from(i), i % 7 == 0)).collect();
        let (mut each, mut runs) = (Aggregate::new(2), Aggregate::new(2));
        for name in ["a", "b", "c", "a"] {
            run.iter().for_each(|st| each.record_span(name, None, st));
            runs.record_spans(name, None, &run);
        }
        // "c" is past the cap of 2: the overflow bucket, both ways
        let (e, r) = (each.drain(), runs.drain());
        assert_eq!(e.len(), 3);
        assert_eq!(
            e.iter().map(|s| s.span_count).collect::<Vec<_>>(),
            [100, 50, 50]
        );
        assert_eq!(e, r);
    }

    #[test]
    fn service_cap_and_overflow() {
        let mut a = Aggregate::new(3);
        for i in 0..10 {
            a.record(
                &[format!("svc{i}")],
                &[stat(0, 1.0, i % 2 == 0), stat(0, 3.0, false)],
            );
        }
        assert_eq!(a.services(), 3);
        // a service already held keeps its own slot
        a.record(&["svc1".to_string()], &[stat(0, 2.0, false)]);
        let out = a.drain();
        let names: Vec<&str> = out.iter().map(|s| s.service.as_str()).collect();
        assert_eq!(names, vec!["svc0", "svc1", "svc2", "{other}"]);
        assert_eq!(out[1].span_count, 3);
        let other = &out[3];
        assert_eq!(other.span_count, 14);
        // svc3..svc9: errors on 4, 6, 8 → 3 of 14 spans
        assert!((other.error_rate - 300.0 / 14.0).abs() < 1e-9);
        assert!((other.avg_ms - 2.0).abs() < 1e-12);
        assert_eq!(a.services(), 0);
    }

    #[test]
    fn collector_emits_six_tagged_samples_per_service() {
        let agg = Arc::new(Mutex::new(Aggregate::new(4)));
        agg.lock().unwrap().record(
            &["web".to_string()],
            &[stat(0, 2.5, true), stat(0, 7.5, false)],
        );
        let mut c = TraceMetrics::new(agg);
        let mut out = Vec::new();
        c.collect(Instant::now(), &mut out).unwrap();
        let got: Vec<(&str, f64, &str)> = out.iter().map(|s| (s.name, s.value, s.unit)).collect();
        assert_eq!(got[0], ("trace.span_count", 2.0, "count"));
        assert_eq!(got[1], ("trace.error_rate", 50.0, "percent"));
        assert_eq!(got[2], ("trace.duration_avg", 5.0, "ms"));
        assert_eq!(got.len(), 6);
        assert!(
            out.iter()
                .all(|s| s.tags == vec![("service", "web".to_string())])
        );
        assert!(matches!(out[0].about, About::Tags));
        out.clear();
        c.collect(Instant::now(), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn series_per_service_and_pod_tagged_like_containers() {
        let pod = |name: &str, workload: &str| {
            Arc::new(PodMeta {
                namespace: "shop".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                workload: workload.into(),
                workload_kind: if workload.is_empty() {
                    ""
                } else {
                    "Deployment"
                }
                .into(),
                ..PodMeta::default()
            })
        };
        let (a, b) = (pod("a", "web"), pod("b", ""));
        let mut agg = Aggregate::new(3);
        for p in [Some(&a), Some(&b), None, Some(&a)] {
            agg.record_span("api", p, &stat(0, 1.0, false));
        }
        // a fourth series: over the cap of 3, into the overflow
        agg.record_span("db", Some(&a), &stat(0, 1.0, false));
        assert_eq!(agg.services(), 3);
        let out = agg.drain();
        let got: Vec<(&str, Option<&str>, u64)> = out
            .iter()
            .map(|s| {
                (
                    s.service.as_str(),
                    s.pod.as_ref().map(|p| p.name.as_str()),
                    s.span_count,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("api", None, 1),
                ("api", Some("a"), 2),
                ("api", Some("b"), 1),
                ("{other}", None, 1)
            ]
        );
        let mut samples = Vec::new();
        out[1].push_samples(&mut samples);
        let tags: Vec<(&str, &str)> = samples[0]
            .tags
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        assert_eq!(
            tags,
            vec![
                ("service", "api"),
                ("namespace", "shop"),
                ("pod", "a"),
                ("workload", "web"),
                ("workload_kind", "Deployment")
            ]
        );
        samples.clear();
        out[2].push_samples(&mut samples);
        assert_eq!(samples[0].tags.len(), 3);
        assert_eq!(agg.services(), 0);
    }
}
