//! A decoded `ExportMetricsServiceRequest` → one [`Point`] per data point,
//! checked: what cannot become a Cased metric is left out and counted (an
//! OTLP `partial_success`), the rest carries its service, its metric's name
//! and unit, its attributes as strings and its value. With a [`Resolver`]
//! (Kubernetes), the points of a resource whose pod is found
//! ([`crate::otlp::pods`]) also carry the pod's `namespace`, `pod`,
//! `workload`, `workload_kind` (replacing point attributes of those names).
//!
//! Pure: a request in, points out; no state (the interval arithmetic is in
//! [`super::state`]).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyV;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint, SummaryDataPoint,
    metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::quantile::{Dense, Exp, MAX_EXP_SPAN};
use crate::otlp::convert::{MAX_SERVICE_NAME, UNKNOWN_SERVICE, attr_string};
use crate::otlp::pods::Resolver;

/// Explicit buckets one data point may have (the SDKs' default is 16).
pub const MAX_BUCKETS: usize = 1024;
/// Bytes of a metric name plus its attributes: a series is kept for many
/// intervals, so what it holds is bounded.
pub const MAX_SERIES_BYTES: usize = 4096;
/// OTLP's `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;
/// `AggregationTemporality` numbers.
const DELTA: i32 = 1;
const CUMULATIVE: i32 = 2;

/// Tags the agent sets itself: attributes of these names are dropped.
pub const RESERVED_TAGS: [&str; 2] = ["service", "node"];

/// Explicit-bucket histogram counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
}

/// A histogram data point, explicit (`B` = [`Buckets`]) or exponential
/// ([`Exp`]); `start` in Unix ns, non-finite sum, min and max left out.
#[derive(Debug, Clone, PartialEq)]
pub struct HistPoint<B> {
    pub cumulative: bool,
    pub start: u64,
    pub count: u64,
    pub sum: Option<f64>,
    pub buckets: B,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// What a data point says.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A gauge, or a non-monotonic cumulative sum: the last one of an
    /// interval counts.
    Last(f64),
    /// A delta sum (monotonic or not): summed over the interval.
    Delta(f64),
    /// A monotonic cumulative sum since `start` (Unix ns).
    Cumulative {
        start: u64,
        value: f64,
    },
    Histogram(HistPoint<Buckets>),
    Exponential(HistPoint<Exp>),
    /// Quantiles `(q, value)` as sent; `count` and `sum` cumulative.
    Summary {
        start: u64,
        count: u64,
        sum: f64,
        quantiles: Vec<(f64, f64)>,
    },
}

/// One data point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Index into [`Converted::services`].
    pub service: u32,
    /// Index into [`Converted::metrics`].
    pub metric: u32,
    /// The point's attributes as strings, sorted by key.
    pub attrs: Vec<(String, String)>,
    pub value: Value,
}

/// A request's points.
#[derive(Debug, Default)]
pub struct Converted {
    pub services: Vec<String>,
    /// `(name, unit)` of each metric.
    pub metrics: Vec<(String, String)>,
    pub points: Vec<Point>,
    /// Data points left out, and why the first one was.
    pub rejected: u64,
    pub reason: Option<String>,
}

impl Converted {
    fn reject(&mut self, n: u64, why: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        self.rejected += n;
        if self.reason.is_none() {
            self.reason = Some(why());
        }
    }
}

/// Data points a request holds (every kind).
pub fn point_count(req: &ExportMetricsServiceRequest) -> usize {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| data_points(m.data.as_ref()))
        .sum()
}

fn data_points(d: Option<&Data>) -> usize {
    match d {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    }
}

/// Every data point of `req`, or the reason it was left out.
pub fn convert(req: ExportMetricsServiceRequest) -> Converted {
    convert_with(req, None)
}

/// Every data point of `req`, each resource's pod found by `pods`.
pub fn convert_with(
    req: ExportMetricsServiceRequest,
    mut pods: Option<&mut Resolver<'_>>,
) -> Converted {
    let mut out = Converted::default();
    for rm in req.resource_metrics {
        let service = out.services.len() as u32;
        out.services.push(service_name(rm.resource.as_ref()));
        let attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let pod_tags: Vec<(&'static str, String)> = pods
            .as_mut()
            .and_then(|r| r.resolve(attrs))
            .map(|p| p.tags().map(|(k, v)| (k, v.to_string())).collect())
            .unwrap_or_default();
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                let n = data_points(m.data.as_ref()) as u64;
                if m.name.is_empty() {
                    out.reject(n, || "a metric without a name".into());
                    continue;
                }
                if m.name.len() > MAX_SERIES_BYTES {
                    out.reject(n, || format!("a metric name over {MAX_SERIES_BYTES} bytes"));
                    continue;
                }
                let Some(data) = m.data else { continue };
                let metric = out.metrics.len() as u32;
                let name_len = m.name.len();
                out.metrics.push((m.name, m.unit));
                let ctx = Ctx {
                    service,
                    metric,
                    name_len,
                    pod_tags: &pod_tags,
                };
                metric_points(&mut out, &ctx, data);
            }
        }
    }
    out
}

/// Where a metric's points go.
struct Ctx<'a> {
    service: u32,
    metric: u32,
    name_len: usize,
    /// The resource's pod's tags (empty: no pod).
    pod_tags: &'a [(&'static str, String)],
}

fn metric_points(out: &mut Converted, ctx: &Ctx, data: Data) {
    match data {
        Data::Gauge(g) => {
            for p in g.data_points {
                number(out, ctx, p, |v, _| Value::Last(v));
            }
        }
        Data::Sum(s) => {
            let t = s.aggregation_temporality;
            if t != DELTA && t != CUMULATIVE && s.is_monotonic {
                let name = &out.metrics[ctx.metric as usize].0;
                let why = format!(
                    "sum {name:?}: aggregation temporality {t} is neither delta nor cumulative"
                );
                out.reject(s.data_points.len() as u64, || why);
                return;
            }
            for p in s.data_points {
                number(out, ctx, p, |v, start| match (s.is_monotonic, t) {
                    (_, DELTA) => Value::Delta(v),
                    (false, _) => Value::Last(v),
                    (true, _) => Value::Cumulative { start, value: v },
                });
            }
        }
        Data::Histogram(h) => {
            let cumulative = h.aggregation_temporality == CUMULATIVE;
            for p in h.data_points {
                histogram(out, ctx, p, cumulative);
            }
        }
        Data::ExponentialHistogram(h) => {
            let cumulative = h.aggregation_temporality == CUMULATIVE;
            for p in h.data_points {
                exponential(out, ctx, p, cumulative);
            }
        }
        Data::Summary(s) => {
            for p in s.data_points {
                summary(out, ctx, p);
            }
        }
    }
}

/// The point's attributes, or `None` (rejected) when they are too long.
fn attributes(out: &mut Converted, ctx: &Ctx, kvs: Vec<KeyValue>) -> Option<Vec<(String, String)>> {
    let mut bytes = ctx.name_len;
    let mut attrs = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let key = kv.key.as_str();
        if RESERVED_TAGS.contains(&key) || ctx.pod_tags.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let v = kv.value.as_ref().map(attr_string).unwrap_or_default();
        bytes += kv.key.len() + v.len();
        if bytes > MAX_SERIES_BYTES {
            out.reject(1, || {
                format!("a data point whose name and attributes are over {MAX_SERIES_BYTES} bytes")
            });
            return None;
        }
        attrs.push((kv.key, v));
    }
    attrs.extend(ctx.pod_tags.iter().map(|(k, v)| (k.to_string(), v.clone())));
    attrs.sort_unstable();
    // the last of duplicate keys wins, as in a map
    attrs.dedup_by(|a, b| a.0 == b.0);
    Some(attrs)
}

fn push(out: &mut Converted, ctx: &Ctx, attrs: Vec<(String, String)>, value: Value) {
    out.points.push(Point {
        service: ctx.service,
        metric: ctx.metric,
        attrs,
        value,
    });
}

fn number(out: &mut Converted, ctx: &Ctx, p: NumberDataPoint, f: impl Fn(f64, u64) -> Value) {
    if p.flags & NO_RECORDED_VALUE != 0 {
        return;
    }
    let v = match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => return out.reject(1, || "a number data point without a value".into()),
    };
    if !v.is_finite() {
        return out.reject(1, || format!("a data point of value {v}"));
    }
    if let Some(attrs) = attributes(out, ctx, p.attributes) {
        push(out, ctx, attrs, f(v, p.start_time_unix_nano));
    }
}

fn histogram(out: &mut Converted, ctx: &Ctx, p: HistogramDataPoint, cumulative: bool) {
    if p.flags & NO_RECORDED_VALUE != 0 {
        return;
    }
    let (bounds, mut counts) = (p.explicit_bounds, p.bucket_counts);
    if counts.is_empty() && bounds.is_empty() {
        counts = vec![p.count];
    }
    let why = if counts.len() != bounds.len() + 1 {
        Some(format!(
            "a histogram with {} bucket counts for {} bounds",
            counts.len(),
            bounds.len()
        ))
    } else if counts.len() > MAX_BUCKETS {
        Some(format!("a histogram of over {MAX_BUCKETS} buckets"))
    } else if !bounds.windows(2).all(|w| w[0] < w[1]) || !bounds.iter().all(|b| b.is_finite()) {
        Some("histogram bounds not finite and increasing".into())
    } else if counts.iter().fold(0u64, |a, &c| a.saturating_add(c)) != p.count {
        Some(format!(
            "a histogram whose bucket counts do not add up to its count {}",
            p.count
        ))
    } else {
        None
    };
    if let Some(why) = why {
        return out.reject(1, || why);
    }
    if let Some(attrs) = attributes(out, ctx, p.attributes) {
        let value = Value::Histogram(HistPoint {
            cumulative,
            start: p.start_time_unix_nano,
            count: p.count,
            sum: p.sum.filter(|s| s.is_finite()),
            buckets: Buckets { bounds, counts },
            min: p.min.filter(|s| s.is_finite()),
            max: p.max.filter(|s| s.is_finite()),
        });
        push(out, ctx, attrs, value);
    }
}

fn exponential(out: &mut Converted, ctx: &Ctx, p: ExponentialHistogramDataPoint, cumulative: bool) {
    if p.flags & NO_RECORDED_VALUE != 0 {
        return;
    }
    let side = |b: Option<
        opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets,
    >| {
        let b = b.unwrap_or_default();
        let fits = b.bucket_counts.len() <= MAX_EXP_SPAN
            && (b.offset as i64 + b.bucket_counts.len() as i64) < i32::MAX as i64;
        fits.then_some(Dense {
            offset: b.offset,
            counts: b.bucket_counts,
        })
    };
    let (Some(positive), Some(negative)) = (side(p.positive), side(p.negative)) else {
        return out.reject(1, || {
            format!("an exponential histogram of over {MAX_EXP_SPAN} buckets a side")
        });
    };
    if !(-10..=20).contains(&p.scale) {
        return out.reject(1, || {
            format!(
                "an exponential histogram of scale {} (OTLP allows -10..=20)",
                p.scale
            )
        });
    }
    let buckets = Exp {
        scale: p.scale,
        zero: p.zero_count,
        positive,
        negative,
    };
    if buckets.count() != p.count {
        return out.reject(1, || {
            format!(
                "an exponential histogram whose buckets do not add up to its count {}",
                p.count
            )
        });
    }
    if let Some(attrs) = attributes(out, ctx, p.attributes) {
        let value = Value::Exponential(HistPoint {
            cumulative,
            start: p.start_time_unix_nano,
            count: p.count,
            sum: p.sum.filter(|s| s.is_finite()),
            buckets,
            min: p.min.filter(|s| s.is_finite()),
            max: p.max.filter(|s| s.is_finite()),
        });
        push(out, ctx, attrs, value);
    }
}

fn summary(out: &mut Converted, ctx: &Ctx, p: SummaryDataPoint) {
    if p.flags & NO_RECORDED_VALUE != 0 {
        return;
    }
    let quantiles: Vec<(f64, f64)> = p
        .quantile_values
        .iter()
        .map(|q| (q.quantile, q.value))
        .collect();
    if quantiles.len() > MAX_BUCKETS
        || !quantiles
            .iter()
            .all(|(q, v)| (0.0..=1.0).contains(q) && v.is_finite())
    {
        return out.reject(1, || {
            "a summary with a quantile outside 0..=1 or a non-finite value".into()
        });
    }
    if let Some(attrs) = attributes(out, ctx, p.attributes) {
        let value = Value::Summary {
            start: p.start_time_unix_nano,
            count: p.count,
            sum: if p.sum.is_finite() { p.sum } else { 0.0 },
            quantiles,
        };
        push(out, ctx, attrs, value);
    }
}

/// A resource's `service.name` when it is a non-empty string (cut to
/// [`MAX_SERVICE_NAME`] bytes, as for spans), else [`UNKNOWN_SERVICE`].
fn service_name(resource: Option<&Resource>) -> String {
    let name = resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyV::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        });
    let Some(s) = name else {
        return UNKNOWN_SERVICE.to_string();
    };
    let mut end = s.len().min(MAX_SERVICE_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The tag name of a summary quantile: `p50` for 0.5, `p99.9` for 0.999.
pub fn quantile_suffix(q: f64) -> String {
    let pct = (q * 100.0 * 1000.0).round() / 1000.0;
    format!("p{pct}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::decode::Encoding;
    use crate::otlp::metrics::decode;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, Metric, ResourceMetrics, ScopeMetrics, Sum,
    };

    const FIX: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/otlp/opentelemetry-proto"
    );

    fn fixture(rel: &str) -> Vec<u8> {
        std::fs::read(format!("{FIX}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    #[test]
    fn every_metrics_fixture_converts_without_rejects() {
        // the older example's histogram has 3 bucket counts for 1 bound:
        // invalid by the protocol, so left out
        for (rel, enc, n, rejected) in [
            ("examples-HEAD-ac2c4b5/metrics.json", Encoding::Json, 4, 0),
            ("examples-2487cf3/metrics.json", Encoding::Json, 2, 1),
            (
                "examples-f6bb641/metrics.protobuf-bin",
                Encoding::Protobuf,
                0,
                0,
            ),
        ] {
            let req = decode(&fixture(rel), enc).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let total = point_count(&req);
            let c = convert(req);
            assert_eq!(c.rejected, rejected, "{rel}: {:?}", c.reason);
            assert_eq!(c.points.len() as u64 + rejected, total as u64, "{rel}");
            if n > 0 {
                assert_eq!(c.points.len(), n, "{rel}");
                assert_eq!(c.metrics[0], ("my.counter".to_string(), "1".to_string()));
                assert!(matches!(
                    c.points[0].value,
                    Value::Delta(_) | Value::Cumulative { .. }
                ));
            }
        }
        // not a metrics export
        assert!(decode(b"{\"resourceSpans\": []}", Encoding::Json).is_err());
        assert!(decode(b"{}", Encoding::Json).is_ok());
    }

    fn kv(k: &str, v: AnyV) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn req(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: None,
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn num(v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            value: Some(number_data_point::Value::AsDouble(v)),
            start_time_unix_nano: 5,
            ..Default::default()
        }
    }

    #[test]
    fn kinds_attributes_and_rejects() {
        let attrs = vec![
            kv("b", AnyV::IntValue(3)),
            kv("a", AnyV::BoolValue(true)),
            kv("service", AnyV::StringValue("spoof".into())),
            kv("node", AnyV::StringValue("spoof".into())),
        ];
        let sum = |temporality, mono| Metric {
            name: "s".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![num(2.0, attrs.clone())],
                aggregation_temporality: temporality,
                is_monotonic: mono,
            })),
            ..Default::default()
        };
        let bad_hist = HistogramDataPoint {
            count: 3,
            bucket_counts: vec![1, 2],
            explicit_bounds: vec![1.0, 2.0],
            ..Default::default()
        };
        let c = convert(req(vec![
            sum(CUMULATIVE, true),
            sum(DELTA, true),
            sum(CUMULATIVE, false),
            sum(0, true),
            Metric {
                name: "g".into(),
                data: Some(Data::Gauge(Gauge {
                    data_points: vec![
                        num(f64::INFINITY, vec![]),
                        NumberDataPoint::default(),
                        NumberDataPoint {
                            flags: NO_RECORDED_VALUE,
                            ..Default::default()
                        },
                    ],
                })),
                ..Default::default()
            },
            Metric {
                name: "h".into(),
                data: Some(Data::Histogram(Histogram {
                    data_points: vec![bad_hist],
                    aggregation_temporality: DELTA,
                })),
                ..Default::default()
            },
        ]));
        assert_eq!(c.services, vec![UNKNOWN_SERVICE.to_string()]);
        let values: Vec<&Value> = c.points.iter().map(|p| &p.value).collect();
        assert_eq!(
            values,
            vec![
                &Value::Cumulative {
                    start: 5,
                    value: 2.0
                },
                &Value::Delta(2.0),
                &Value::Last(2.0),
            ]
        );
        let want: Vec<(String, String)> =
            vec![("a".into(), "true".into()), ("b".into(), "3".into())];
        assert!(
            c.points.iter().all(|p| p.attrs == want),
            "{:?}",
            c.points[0].attrs
        );
        // unspecified temporality, infinity, no value, a bucket mismatch;
        // "no recorded value" is skipped, not rejected
        assert_eq!(c.rejected, 4, "{:?}", c.reason);
        assert!(c.reason.unwrap().contains("temporality 0"));
    }

    #[test]
    fn quantile_names() {
        assert_eq!(quantile_suffix(0.5), "p50");
        assert_eq!(quantile_suffix(0.99), "p99");
        assert_eq!(quantile_suffix(0.999), "p99.9");
        assert_eq!(quantile_suffix(0.0), "p0");
        assert_eq!(quantile_suffix(1.0), "p100");
    }

    struct OnePod;

    impl crate::enrich::Metadata for OnePod {
        fn pod(&self, _: &str) -> Option<std::sync::Arc<crate::enrich::PodMeta>> {
            None
        }
        fn container(
            &self,
            _: &crate::model::ContainerIdentity,
        ) -> Option<(std::sync::Arc<crate::enrich::PodMeta>, String)> {
            None
        }
        fn peer(&self, _: std::net::IpAddr) -> crate::enrich::Peer {
            crate::enrich::Peer::Pod(std::sync::Arc::new(crate::enrich::PodMeta {
                namespace: "shop".into(),
                name: "web-1".into(),
                uid: "u1".into(),
                workload: "web".into(),
                workload_kind: "StatefulSet".into(),
                ..Default::default()
            }))
        }
    }

    #[test]
    fn points_carry_their_pods_tags() {
        let gauge = || Metric {
            name: "g".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![num(
                    1.0,
                    vec![
                        kv("pod", AnyV::StringValue("spoof".into())),
                        kv("z", AnyV::IntValue(1)),
                    ],
                )],
            })),
            ..Default::default()
        };
        let mut r = Resolver::new(&OnePod, Some("10.0.0.1".parse().unwrap()));
        let c = convert_with(req(vec![gauge()]), Some(&mut r));
        assert_eq!(r.counts, [0, 1, 0, 0]);
        let attrs: Vec<(&str, &str)> = c.points[0]
            .attrs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attrs,
            vec![
                ("namespace", "shop"),
                ("pod", "web-1"),
                ("workload", "web"),
                ("workload_kind", "StatefulSet"),
                ("z", "1"),
            ]
        );
        // without a resolver (local mode) the sender's attributes stay
        let c = convert(req(vec![gauge()]));
        assert_eq!(c.points[0].attrs.len(), 2);
        assert_eq!(c.points[0].attrs[0], ("pod".into(), "spoof".into()));
    }
}
