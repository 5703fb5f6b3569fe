//! Series state between intervals: what each OTLP data point adds to the
//! running interval, and the Cased metrics an interval ends with.
//!
//! A series is (service, metric name, attributes). Cumulative values are
//! turned into the interval's increase against the last value seen, as
//! `rate.rs` does for counters: the first sight of a series, a value that
//! went down and a new start time (a restart) give nothing for that step.
//!
//! Memory is bounded: at most `max_per_service` series a service and
//! `max_services` services are held (and [`MAX_SERIES_TOTAL`] overall);
//! points of further series are counted (per service, and on `/metrics`)
//! but not kept. A series not seen for [`STALE_INTERVALS`] intervals is
//! freed.

use std::collections::HashMap;
use std::sync::Arc;

use super::convert::{Buckets, Converted, HistPoint, Value, quantile_suffix};
use super::quantile::{self, Exp};
use crate::model::{About, Named, Sample, unit};

/// Default cap on series a service (`--otel-max-series-per-service`).
pub const DEFAULT_MAX_SERIES_PER_SERVICE: usize = 2000;
/// Series held across all services, whatever the per-service cap (raised
/// to that cap when it is larger).
pub const MAX_SERIES_TOTAL: usize = 20_000;
/// A series not seen for this many intervals is freed.
pub const STALE_INTERVALS: u64 = 5;
/// The metric counting a service's data points of series over the cap.
pub const OVERFLOW_METRIC: &str = "otel.series_overflow";
/// The `service` of data points of services over the service cap.
pub const OVERFLOW_SERVICE: &str = super::super::aggregate::OVERFLOW_SERVICE;

const PERCENTILES: [(&str, f64); 3] = [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)];

/// A histogram interval: its counts summed.
#[derive(Debug, Clone)]
struct HistAcc<B> {
    count: u64,
    sum: Option<f64>,
    buckets: B,
    min: Option<f64>,
    max: Option<f64>,
}

/// The last cumulative point of a histogram: the base of the next delta.
#[derive(Debug, Clone)]
struct HistPrev<B> {
    start: u64,
    count: u64,
    sum: f64,
    buckets: B,
}

#[derive(Debug, Clone)]
enum Kind {
    Last(Option<f64>),
    Delta(Option<f64>),
    Cumulative {
        prev: Option<(u64, f64)>,
        increase: Option<f64>,
    },
    Histogram {
        prev: Option<HistPrev<Buckets>>,
        acc: Option<HistAcc<Buckets>>,
    },
    Exponential {
        prev: Option<HistPrev<Exp>>,
        acc: Option<HistAcc<Exp>>,
    },
    Summary {
        prev: Option<(u64, u64, f64)>,
        delta: Option<(u64, f64)>,
        quantiles: Option<Vec<(f64, f64)>>,
    },
}

impl Kind {
    fn for_value(v: &Value) -> Kind {
        match v {
            Value::Last(_) => Kind::Last(None),
            Value::Delta(_) => Kind::Delta(None),
            Value::Cumulative { .. } => Kind::Cumulative {
                prev: None,
                increase: None,
            },
            Value::Histogram(_) => Kind::Histogram {
                prev: None,
                acc: None,
            },
            Value::Exponential(_) => Kind::Exponential {
                prev: None,
                acc: None,
            },
            Value::Summary { .. } => Kind::Summary {
                prev: None,
                delta: None,
                quantiles: None,
            },
        }
    }

    fn same_kind(&self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Kind::Last(_), Value::Last(_))
                | (Kind::Delta(_), Value::Delta(_))
                | (Kind::Cumulative { .. }, Value::Cumulative { .. })
                | (Kind::Histogram { .. }, Value::Histogram(_))
                | (Kind::Exponential { .. }, Value::Exponential(_))
                | (Kind::Summary { .. }, Value::Summary { .. })
        )
    }
}

#[derive(Debug)]
struct Series {
    unit: String,
    last_seen: u64,
    kind: Kind,
}

/// One service's series: metric name → attributes → state.
#[derive(Debug, Default)]
struct ServiceSeries {
    series: HashMap<String, HashMap<Vec<(String, String)>, Series>>,
    held: usize,
    /// Points of series over the cap this interval.
    overflow: u64,
}

/// What one request did to the state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub points: u64,
    pub overflow: u64,
    pub new_series: u64,
}

/// Every series held, and the running interval.
#[derive(Debug)]
pub struct State {
    services: HashMap<String, ServiceSeries>,
    max_per_service: usize,
    max_services: usize,
    max_total: usize,
    held: usize,
    interval: u64,
}

impl State {
    pub fn new(max_per_service: usize, max_services: usize) -> Self {
        State {
            services: HashMap::new(),
            max_per_service: max_per_service.max(1),
            max_services: max_services.max(1),
            max_total: MAX_SERIES_TOTAL.max(max_per_service),
            held: 0,
            interval: 0,
        }
    }

    /// Series held now.
    pub fn series(&self) -> usize {
        self.held
    }

    /// Add a request's points to the running interval.
    pub fn apply(&mut self, c: Converted) -> Applied {
        let mut a = Applied::default();
        let Converted {
            services,
            metrics,
            points,
            ..
        } = c;
        let now = self.interval;
        for p in points {
            a.points += 1;
            let (Some(service), Some((name, unit))) = (
                services.get(p.service as usize),
                metrics.get(p.metric as usize),
            ) else {
                continue;
            };
            let Some(s) = self.series_of(service, name, unit, p.attrs, &p.value, &mut a) else {
                a.overflow += 1;
                continue;
            };
            s.last_seen = now;
            update(&mut s.kind, p.value);
        }
        a
    }

    /// The state of a series, made if the caps allow; `None` counts the
    /// point under the service's overflow.
    fn series_of(
        &mut self,
        service: &str,
        name: &str,
        unit: &str,
        attrs: Vec<(String, String)>,
        value: &Value,
        a: &mut Applied,
    ) -> Option<&mut Series> {
        let known = self.services.contains_key(service);
        let key = if known || self.services.len() < self.max_services {
            service
        } else {
            OVERFLOW_SERVICE
        };
        let room = self.held < self.max_total;
        // no allocation for a service or name already held (every point
        // passes here)
        if !self.services.contains_key(key) {
            self.services
                .insert(key.to_string(), ServiceSeries::default());
        }
        let svc = self.services.get_mut(key)?;
        if key == OVERFLOW_SERVICE && !known {
            svc.overflow += 1;
            return None;
        }
        let exists = svc.series.get(name).is_some_and(|m| m.contains_key(&attrs));
        if !exists && (svc.held >= self.max_per_service || !room) {
            svc.overflow += 1;
            return None;
        }
        if !exists {
            svc.held += 1;
            self.held += 1;
            a.new_series += 1;
        }
        if !svc.series.contains_key(name) {
            svc.series.insert(name.to_string(), HashMap::new());
        }
        let by_attrs = svc.series.get_mut(name)?;
        let s = by_attrs.entry(attrs).or_insert_with(|| Series {
            unit: unit.to_string(),
            last_seen: 0,
            kind: Kind::for_value(value),
        });
        if !s.kind.same_kind(value) {
            // the sender changed the instrument's kind: start over
            s.kind = Kind::for_value(value);
        }
        if s.unit != unit {
            s.unit = unit.to_string();
        }
        Some(s)
    }

    /// End the interval: its samples, then free series not seen for
    /// [`STALE_INTERVALS`]. Returns how many series were freed.
    pub fn drain(&mut self, out: &mut Vec<Sample>) -> u64 {
        let now = self.interval;
        let mut freed = 0u64;
        for (service, svc) in self.services.iter_mut() {
            if svc.overflow > 0 {
                let mut s = Sample::new(
                    OVERFLOW_METRIC,
                    svc.overflow as f64,
                    unit::COUNT,
                    About::Tags,
                );
                s.tags.push(("service", service.clone()));
                out.push(s);
                svc.overflow = 0;
            }
            for (name, by_attrs) in svc.series.iter_mut() {
                by_attrs.retain(|attrs, s| {
                    if s.last_seen == now {
                        emit(service, name, attrs, s, out);
                    }
                    let keep = now - s.last_seen < STALE_INTERVALS;
                    freed += u64::from(!keep);
                    keep
                });
            }
            svc.series.retain(|_, m| !m.is_empty());
            let held: usize = svc.series.values().map(HashMap::len).sum();
            svc.held = held;
        }
        self.services.retain(|_, s| !s.series.is_empty());
        self.held = self.services.values().map(|s| s.held).sum();
        self.interval += 1;
        freed
    }
}

/// Add one point to a series of the same kind.
fn update(kind: &mut Kind, v: Value) {
    match (kind, v) {
        (Kind::Last(last), Value::Last(x)) => *last = Some(x),
        (Kind::Delta(sum), Value::Delta(x)) => *sum = Some(sum.unwrap_or(0.0) + x),
        (Kind::Cumulative { prev, increase }, Value::Cumulative { start, value }) => {
            if let Some((pstart, pv)) = *prev
                && pstart == start
                && value >= pv
            {
                *increase = Some(increase.unwrap_or(0.0) + (value - pv));
            }
            *prev = Some((start, value));
        }
        (Kind::Histogram { prev, acc }, Value::Histogram(p)) => update_histogram(prev, acc, p),
        (Kind::Exponential { prev, acc }, Value::Exponential(p)) => update_histogram(prev, acc, p),
        (
            Kind::Summary {
                prev,
                delta,
                quantiles: q,
            },
            Value::Summary {
                start,
                count,
                sum,
                quantiles,
            },
        ) => {
            if let Some((ps, pc, psum)) = *prev
                && ps == start
                && count >= pc
            {
                let (dc, ds) = delta.unwrap_or((0, 0.0));
                *delta = Some((dc + (count - pc), ds + (sum - psum)));
            }
            *prev = Some((start, count, sum));
            *q = Some(quantiles);
        }
        _ => {}
    }
}

/// What the two histogram kinds' buckets do in interval arithmetic.
trait BucketSet: Clone {
    /// These cumulative buckets less an earlier point's; `None` when they
    /// cannot be compared (other bounds or scale, a count went down).
    fn less(&self, earlier: &Self) -> Option<Self>;
    /// Add `other` in; `false` when they cannot be added (other bounds).
    fn add(&mut self, other: &Self) -> bool;
}

impl BucketSet for Buckets {
    fn less(&self, earlier: &Self) -> Option<Self> {
        if self.bounds != earlier.bounds {
            return None;
        }
        let counts = self
            .counts
            .iter()
            .zip(&earlier.counts)
            .map(|(c, e)| c.checked_sub(*e))
            .collect::<Option<Vec<u64>>>()?;
        Some(Buckets {
            bounds: self.bounds.clone(),
            counts,
        })
    }

    fn add(&mut self, other: &Self) -> bool {
        if self.bounds != other.bounds {
            return false;
        }
        for (x, y) in self.counts.iter_mut().zip(&other.counts) {
            *x = x.saturating_add(*y);
        }
        true
    }
}

impl BucketSet for Exp {
    fn less(&self, earlier: &Self) -> Option<Self> {
        self.minus(earlier)
    }

    fn add(&mut self, other: &Self) -> bool {
        *self = self.merged(other);
        true
    }
}

/// Fold a histogram point into its interval: a cumulative one as the
/// difference from the last (nothing on first sight, a restart or new
/// bounds), a delta one as it is; buckets that cannot be added to the
/// interval's (new bounds within it) replace them: the latest win.
fn update_histogram<B: BucketSet>(
    prev: &mut Option<HistPrev<B>>,
    acc: &mut Option<HistAcc<B>>,
    p: HistPoint<B>,
) {
    let this = if p.cumulative {
        let base = prev.replace(HistPrev {
            start: p.start,
            count: p.count,
            sum: p.sum.unwrap_or(0.0),
            buckets: p.buckets.clone(),
        });
        let Some(base) = base else { return };
        if base.start != p.start || p.count < base.count {
            return;
        }
        let Some(buckets) = p.buckets.less(&base.buckets) else {
            return;
        };
        HistAcc {
            count: p.count - base.count,
            sum: p.sum.map(|s| s - base.sum),
            buckets,
            min: p.min,
            max: p.max,
        }
    } else {
        HistAcc {
            count: p.count,
            sum: p.sum,
            buckets: p.buckets,
            min: p.min,
            max: p.max,
        }
    };
    if let Some(a) = acc.as_mut()
        && a.buckets.add(&this.buckets)
    {
        a.count += this.count;
        a.sum = add_opt(a.sum, this.sum);
        a.min = min_opt(a.min, this.min, f64::min);
        a.max = min_opt(a.max, this.max, f64::max);
    } else {
        *acc = Some(this);
    }
}

fn add_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, None) => x,
        (None, y) => y,
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Push one sample of a series.
fn sample(
    out: &mut Vec<Sample>,
    service: &str,
    name: String,
    unit: &str,
    attrs: &[(String, String)],
    value: f64,
) {
    let mut tags = Vec::with_capacity(attrs.len() + 1);
    tags.extend(attrs.iter().cloned());
    tags.push(("service".to_string(), service.to_string()));
    let named = Named {
        name,
        unit: unit.to_string(),
        tags,
    };
    out.push(Sample::new("", value, "", About::Named(Arc::new(named))));
}

/// The samples a series ends its interval with; resets its interval.
fn emit(
    service: &str,
    name: &str,
    attrs: &[(String, String)],
    s: &mut Series,
    out: &mut Vec<Sample>,
) {
    let unit = s.unit.as_str();
    let mut put = |suffix: &str, u: &str, v: f64| {
        let n = if suffix.is_empty() {
            name.to_string()
        } else {
            format!("{name}.{suffix}")
        };
        sample(out, service, n, u, attrs, v);
    };
    match &mut s.kind {
        Kind::Last(v) | Kind::Delta(v) => {
            if let Some(x) = v.take() {
                put("", unit, x);
            }
        }
        Kind::Cumulative { increase, .. } => {
            if let Some(x) = increase.take() {
                put("", unit, x);
            }
        }
        Kind::Histogram { acc, .. } => {
            if let Some(a) = acc.take() {
                let q =
                    |p| quantile::explicit(&a.buckets.bounds, &a.buckets.counts, p, a.min, a.max);
                emit_histogram(&mut put, unit, a.count, a.sum, q);
            }
        }
        Kind::Exponential { acc, .. } => {
            if let Some(a) = acc.take() {
                let q = |p| a.buckets.quantile(p, a.min, a.max);
                emit_histogram(&mut put, unit, a.count, a.sum, q);
            }
        }
        Kind::Summary {
            delta, quantiles, ..
        } => {
            for (q, v) in quantiles.take().unwrap_or_default() {
                put(&quantile_suffix(q), unit, v);
            }
            if let Some((c, sum)) = delta.take() {
                put("count", unit::COUNT, c as f64);
                put("sum", unit, sum);
            }
        }
    }
}

fn emit_histogram(
    put: &mut impl FnMut(&str, &str, f64),
    unit: &str,
    count: u64,
    sum: Option<f64>,
    q: impl Fn(f64) -> Option<f64>,
) {
    put("count", unit::COUNT, count as f64);
    if let Some(s) = sum {
        put("sum", unit, s);
    }
    for (suffix, p) in PERCENTILES {
        if let Some(v) = q(p) {
            put(suffix, unit, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::metrics::convert::Point;

    /// `(service, metric, attrs, value)`.
    type P<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Value);

    /// Points as one request.
    fn req(points: Vec<P<'_>>) -> Converted {
        let mut c = Converted::default();
        for (svc, name, attrs, value) in points {
            let service = match c.services.iter().position(|s| s == svc) {
                Some(i) => i,
                None => {
                    c.services.push(svc.to_string());
                    c.services.len() - 1
                }
            };
            c.metrics.push((name.to_string(), "ms".to_string()));
            c.points.push(Point {
                service: service as u32,
                metric: (c.metrics.len() - 1) as u32,
                attrs: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                value,
            });
        }
        c
    }

    /// One interval's samples as `name{tags} → value`.
    fn drain(st: &mut State) -> std::collections::BTreeMap<String, f64> {
        let mut out = Vec::new();
        st.drain(&mut out);
        out.into_iter()
            .map(|s| match &s.about {
                About::Named(n) => {
                    let tags: Vec<String> =
                        n.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    (format!("{}{{{}}}", n.name, tags.join(",")), s.value)
                }
                _ => {
                    let tags: Vec<String> =
                        s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    (format!("{}{{{}}}", s.name, tags.join(",")), s.value)
                }
            })
            .collect()
    }

    fn cum(start: u64, value: f64) -> Value {
        Value::Cumulative { start, value }
    }

    #[test]
    fn cumulative_sum_first_sight_and_resets_give_nothing() {
        let mut st = State::new(10, 10);
        let c = |v| req(vec![("api", "reqs", &[("route", "/a")], cum(1, v))]);
        st.apply(c(5.0));
        assert!(drain(&mut st).is_empty(), "first sight");
        st.apply(c(8.0));
        st.apply(c(12.0));
        assert_eq!(drain(&mut st)["reqs{route=/a,service=api}"], 7.0);
        // no change: an increase of 0 is still reported
        st.apply(c(12.0));
        assert_eq!(drain(&mut st)["reqs{route=/a,service=api}"], 0.0);
        // went down: a restart, nothing for that step; then counting again
        st.apply(c(3.0));
        assert!(drain(&mut st).is_empty());
        st.apply(c(4.0));
        assert_eq!(drain(&mut st)["reqs{route=/a,service=api}"], 1.0);
        // a new start time is a restart too, even when the value is higher
        st.apply(req(vec![("api", "reqs", &[("route", "/a")], cum(2, 50.0))]));
        assert!(drain(&mut st).is_empty());
        // an interval without points gives nothing
        assert!(drain(&mut st).is_empty());
    }

    #[test]
    fn delta_sums_gauges_and_updowns() {
        let mut st = State::new(10, 10);
        st.apply(req(vec![
            ("api", "hits", &[], Value::Delta(2.0)),
            ("api", "hits", &[], Value::Delta(3.5)),
            ("api", "temp", &[], Value::Last(20.0)),
            ("api", "temp", &[], Value::Last(21.0)),
        ]));
        st.apply(req(vec![("api", "hits", &[], Value::Delta(1.0))]));
        let got = drain(&mut st);
        assert_eq!(got["hits{service=api}"], 6.5);
        assert_eq!(got["temp{service=api}"], 21.0);
        assert_eq!(got.len(), 2);
        st.apply(req(vec![("api", "temp", &[], Value::Last(-4.0))]));
        let got = drain(&mut st);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got["temp{service=api}"], -4.0);
    }

    fn hist(cumulative: bool, counts: &[u64], sum: f64) -> Value {
        Value::Histogram(HistPoint {
            cumulative,
            start: 1,
            count: counts.iter().sum(),
            sum: Some(sum),
            buckets: Buckets {
                bounds: vec![10.0, 20.0, 30.0],
                counts: counts.to_vec(),
            },
            min: None,
            max: None,
        })
    }

    #[test]
    fn cumulative_histogram_interval_deltas_and_percentiles() {
        let mut st = State::new(10, 10);
        let h = |counts: &[u64], sum| req(vec![("api", "lat", &[], hist(true, counts, sum))]);
        st.apply(h(&[1, 0, 0, 0], 5.0));
        assert!(drain(&mut st).is_empty(), "first sight");
        // the interval: 10 values in (10, 20], summing 150
        st.apply(h(&[1, 4, 0, 0], 65.0));
        st.apply(h(&[1, 10, 0, 0], 155.0));
        let got = drain(&mut st);
        assert_eq!(got["lat.count{service=api}"], 10.0);
        assert_eq!(got["lat.sum{service=api}"], 150.0);
        // ranks 5, 9.5, 9.9 of 10 in (10, 20]: linear inside the bucket
        assert!((got["lat.p50{service=api}"] - 15.0).abs() < 1e-9);
        assert!((got["lat.p95{service=api}"] - 19.5).abs() < 1e-9);
        assert!((got["lat.p99{service=api}"] - 19.9).abs() < 1e-9);
        // nothing new: count 0, sum 0, no percentiles
        st.apply(h(&[1, 10, 0, 0], 155.0));
        let got = drain(&mut st);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got["lat.count{service=api}"], 0.0);
        // a reset (counts went down) gives nothing
        st.apply(h(&[0, 1, 0, 0], 12.0));
        assert!(drain(&mut st).is_empty());
    }

    #[test]
    fn delta_histograms_are_summed() {
        let mut st = State::new(10, 10);
        st.apply(req(vec![
            ("api", "lat", &[], hist(false, &[2, 0, 0, 0], 9.0)),
            ("api", "lat", &[], hist(false, &[0, 0, 2, 0], 50.0)),
        ]));
        let got = drain(&mut st);
        assert_eq!(got["lat.count{service=api}"], 4.0);
        assert_eq!(got["lat.sum{service=api}"], 59.0);
        // rank 2 of 4 is the end of the first bucket: 10 (from 0)
        assert!((got["lat.p50{service=api}"] - 10.0).abs() < 1e-9);
        assert!((got["lat.p99{service=api}"] - 29.8).abs() < 1e-9);
    }

    fn exp(cumulative: bool, offset: i32, counts: &[u64], sum: f64) -> Value {
        Value::Exponential(HistPoint {
            cumulative,
            start: 1,
            count: counts.iter().sum(),
            sum: Some(sum),
            buckets: Exp {
                scale: 0,
                zero: 0,
                positive: quantile::Dense {
                    offset,
                    counts: counts.to_vec(),
                },
                negative: Default::default(),
            },
            min: None,
            max: None,
        })
    }

    #[test]
    fn exponential_histograms() {
        let mut st = State::new(10, 10);
        // scale 0: bucket 3 is (8, 16], its middle 8·√2
        st.apply(req(vec![("api", "e", &[], exp(true, 3, &[1], 9.0))]));
        assert!(drain(&mut st).is_empty());
        st.apply(req(vec![("api", "e", &[], exp(true, 3, &[5, 2], 70.0))]));
        let got = drain(&mut st);
        assert_eq!(got["e.count{service=api}"], 6.0);
        assert_eq!(got["e.sum{service=api}"], 61.0);
        assert!((got["e.p50{service=api}"] - 8.0 * 2f64.sqrt()).abs() < 1e-9);
        assert!((got["e.p99{service=api}"] - 16.0 * 2f64.sqrt()).abs() < 1e-9);
        // delta points of different offsets merge
        st.apply(req(vec![
            ("api", "d", &[], exp(false, 0, &[1], 1.5)),
            ("api", "d", &[], exp(false, 5, &[3], 100.0)),
        ]));
        let got = drain(&mut st);
        assert_eq!(got["d.count{service=api}"], 4.0);
        assert_eq!(got["d.sum{service=api}"], 101.5);
    }

    #[test]
    fn summaries_quantiles_and_count_sum_deltas() {
        let mut st = State::new(10, 10);
        let s = |count, sum| Value::Summary {
            start: 1,
            count,
            sum,
            quantiles: vec![(0.5, 3.0), (0.999, 9.0)],
        };
        st.apply(req(vec![("api", "rpc", &[], s(10, 40.0))]));
        let got = drain(&mut st);
        assert_eq!(got["rpc.p50{service=api}"], 3.0);
        assert_eq!(got["rpc.p99.9{service=api}"], 9.0);
        assert!(!got.contains_key("rpc.count{service=api}"), "first sight");
        st.apply(req(vec![("api", "rpc", &[], s(14, 52.0))]));
        let got = drain(&mut st);
        assert_eq!(got["rpc.count{service=api}"], 4.0);
        assert_eq!(got["rpc.sum{service=api}"], 12.0);
    }

    #[test]
    fn series_cap_overflow_and_freeing() {
        let mut st = State::new(3, 2);
        let points = |svc: &'static str, n: usize| {
            let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let mut c = Converted::default();
            c.services.push(svc.to_string());
            c.metrics.push(("g".to_string(), "1".to_string()));
            for n in names {
                c.points.push(Point {
                    service: 0,
                    metric: 0,
                    attrs: vec![("k".to_string(), n)],
                    value: Value::Last(1.0),
                });
            }
            c
        };
        let a = st.apply(points("api", 5));
        assert_eq!((a.points, a.overflow, a.new_series), (5, 2, 3));
        assert_eq!(st.series(), 3);
        // a second and a third service: the third is over the service cap
        st.apply(points("db", 1));
        let a = st.apply(points("web", 4));
        assert_eq!(a.overflow, 4);
        let got = drain(&mut st);
        assert_eq!(got["otel.series_overflow{service=api}"], 2.0);
        assert_eq!(got["otel.series_overflow{service={other}}"], 4.0);
        assert_eq!(got.keys().filter(|k| k.starts_with("g{")).count(), 4);
        // api's series unseen: freed after 5 intervals, then room again
        let mut freed = 0;
        for _ in 0..5 {
            st.apply(points("db", 1));
            freed += st.drain(&mut Vec::new());
        }
        assert_eq!(freed, 3);
        assert_eq!(st.series(), 1);
        let a = st.apply(points("api", 5));
        assert_eq!(a.overflow, 2);
    }
}
