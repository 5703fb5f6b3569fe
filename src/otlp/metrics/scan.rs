//! What a metrics request will cost before it is decoded, as
//! [`crate::otlp::scan`] does for traces: an allocation-free walk counts
//! data points, messages, strings and repeated numbers, and
//! [`Shape::cost`] bounds the bytes decoding and converting allocate.
//!
//! Amplification is the point again: an empty data point is 2 bytes of
//! protobuf and a few hundred once decoded and converted; a packed varint
//! bucket count is 1 byte on the wire and 8 (16 with `Vec` slack) decoded.
//!
//! Pure: bytes in, counts out.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
    SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub use crate::otlp::wire::ScanError;
use crate::otlp::wire::{self, ALLOC, MAX_DEPTH, largest, size};

/// What a JSON number or string may cost, in [`Shape::numbers`] (16
/// bytes each).
const JSON_VALUE: u64 = 5;

/// Counts of what decoding a metrics request creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub points: u64,
    /// Every message (the largest struct it could be, twice for `Vec`
    /// slack).
    pub messages: u64,
    /// Non-empty strings and bytes fields, and their bytes.
    pub strings: u64,
    pub string_bytes: u64,
    /// Scalar fields and packed-number bytes: each may be one `u64` or
    /// `f64` of a repeated field.
    pub numbers: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceMetrics,
    Resource,
    ScopeMetrics,
    Scope,
    Metric,
    /// Gauge, Sum, Histogram, ExponentialHistogram, Summary (their data
    /// points are field 1 of each).
    Data(u8),
    NumberPoint,
    HistogramPoint,
    ExpPoint,
    ExpBuckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
    Other,
}

/// Data kinds, by the `Metric` field that holds them.
const GAUGE: u8 = 5;
const SUM: u8 = 7;
const HISTOGRAM: u8 = 9;
const EXPONENTIAL: u8 = 10;
const SUMMARY: u8 = 11;

impl Msg {
    fn child(self, field: u64) -> Option<Msg> {
        use Msg::*;
        Some(match (self, field) {
            (Request, 1) => ResourceMetrics,
            (ResourceMetrics, 1) => Resource,
            (ResourceMetrics, 2) => ScopeMetrics,
            (ScopeMetrics, 1) => Scope,
            (ScopeMetrics, 2) => Metric,
            (Metric, f @ (5 | 7 | 9 | 10 | 11)) => Data(f as u8),
            (Data(GAUGE | SUM), 1) => NumberPoint,
            (Data(HISTOGRAM), 1) => HistogramPoint,
            (Data(EXPONENTIAL), 1) => ExpPoint,
            (Data(SUMMARY), 1) => SummaryPoint,
            (ExpPoint, 8 | 9) => ExpBuckets,
            (SummaryPoint, 6) => Quantile,
            (NumberPoint, 5) | (HistogramPoint, 8) | (ExpPoint, 11) => Exemplar,
            (Resource, 1)
            | (Scope, 3)
            | (Metric, 12)
            | (NumberPoint, 7)
            | (HistogramPoint, 9)
            | (ExpPoint, 1)
            | (SummaryPoint, 7)
            | (Exemplar, 7)
            | (KvList, 1) => KeyValue,
            (Resource, 3) => Other,
            (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KvList,
            _ => return None,
        })
    }

    /// Packed repeated numbers: bucket counts and bounds.
    fn packed(self, field: u64) -> bool {
        matches!(
            (self, field),
            (Msg::HistogramPoint, 6 | 7) | (Msg::ExpBuckets, 2)
        )
    }

    fn is_point(self) -> bool {
        matches!(
            self,
            Msg::NumberPoint | Msg::HistogramPoint | Msg::ExpPoint | Msg::SummaryPoint
        )
    }
}

/// Count a protobuf `ExportMetricsServiceRequest` without decoding it.
pub fn scan_protobuf(body: &[u8]) -> Result<Shape, ScanError> {
    let mut s = Shape::default();
    walk(body, 0, Msg::Request, 0, &mut s)?;
    Ok(s)
}

fn walk(buf: &[u8], base: usize, msg: Msg, depth: u32, s: &mut Shape) -> Result<(), ScanError> {
    if depth > MAX_DEPTH {
        return Err(ScanError::TooDeep);
    }
    for f in wire::fields(buf, base) {
        let f = f?;
        let len = (f.end - f.start) as u64;
        if !f.delimited() {
            s.numbers += 1;
        } else if msg.packed(f.number) {
            // one byte may be one varint
            s.numbers += len;
        } else if let Some(child) = msg.child(f.number) {
            s.messages += 1;
            s.points += u64::from(child.is_point());
            walk(&buf[f.start..f.end], base + f.start, child, depth + 1, s)?;
        } else if len > 0 {
            s.strings += 1;
            s.string_bytes += len;
        }
    }
    Ok(())
}

/// Count an OTLP/JSON body without decoding it: every object is a message
/// (the largest), every object in a `"dataPoints"` array a data point,
/// every string a string, every number token a number. Keys written with
/// escapes count as `"dataPoints"`, so no spelling hides a point.
pub fn scan_json(body: &[u8]) -> Result<Shape, ScanError> {
    let mut s = Shape::default();
    // whether the array at each nesting level holds data points
    let mut points = [false; 130];
    let mut depth = 0usize;
    let mut key_is_points = false;
    let mut i = 0;
    let mut in_number = false;
    while i < body.len() {
        let c = body[i];
        let number_char = c.is_ascii_digit() || c == b'-';
        if number_char && !in_number {
            // a repeated number may pass through a `serde_json::Value`
            // (32 bytes, in a `Vec` that doubled) before its 8 bytes
            s.numbers += JSON_VALUE;
        }
        in_number = number_char || (in_number && matches!(c, b'.' | b'e' | b'E' | b'+'));
        match c {
            b'"' => {
                let (end, escaped, is_key) = wire::json_string(body, i)?;
                let text = &body[i + 1..end];
                if is_key {
                    key_is_points = escaped || text == b"dataPoints";
                }
                if !text.is_empty() {
                    s.strings += 1;
                    s.string_bytes += text.len() as u64;
                }
                // a 64-bit integer may be a string, through a `Value` too
                s.numbers += JSON_VALUE;
                i = end + 1;
                in_number = false;
                continue;
            }
            b'{' | b'[' => {
                if depth + 1 >= points.len() {
                    return Err(ScanError::TooDeep);
                }
                if c == b'{' {
                    s.messages += 1;
                    s.points += u64::from(points[depth]);
                }
                depth += 1;
                points[depth] = c == b'[' && key_is_points;
                key_is_points = false;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1).ok_or(ScanError::Json(i))?;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(s)
}

/// The largest struct a message may decode to.
const LARGEST: u64 = largest(&[
    size::<ResourceMetrics>() + size::<Resource>(),
    size::<ScopeMetrics>(),
    size::<Metric>(),
    size::<HistogramDataPoint>(),
    size::<ExponentialHistogramDataPoint>(),
    size::<SummaryDataPoint>(),
    size::<KeyValue>() + size::<AnyValue>(),
]);

impl Shape {
    /// Upper bound of the bytes decoding and converting this request
    /// allocate at once (not counting the body itself): the decoded
    /// structs, strings and numbers, and what converting adds: a
    /// [`super::convert::Point`] a data point, attribute values as text,
    /// copied numbers (the buckets a point keeps), names and units.
    pub fn cost(&self) -> u64 {
        let decoded = self.messages * 2 * LARGEST
            + self.strings * ALLOC
            + self.string_bytes
            + self.numbers * 16;
        let point = size::<super::convert::Point>() + 2 * ALLOC;
        let converted = self.points * point
            + self.messages * (48 + 2 * ALLOC)
            + 2 * self.string_bytes
            + self.numbers * 16;
        decoded + converted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::decode::Encoding;
    use crate::otlp::meter::peak_of;
    use crate::otlp::metrics::{convert, decode};
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyV;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, Gauge, Histogram, NumberDataPoint, exponential_histogram_data_point,
        metric::Data,
    };
    use prost::Message;

    fn req(data: Vec<Data>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: data
                        .into_iter()
                        .enumerate()
                        .map(|(i, d)| Metric {
                            name: format!("metric.{i}"),
                            unit: "ms".into(),
                            data: Some(d),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn kv(k: String, v: String) -> KeyValue {
        KeyValue {
            key: k,
            value: Some(AnyValue {
                value: Some(AnyV::StringValue(v)),
            }),
            ..Default::default()
        }
    }

    /// Decoding and converting peak under the bound, for both encodings.
    fn check(what: &str, r: &ExportMetricsServiceRequest) {
        let pb = r.encode_to_vec();
        let json = serde_json::to_vec(r).unwrap();
        for (enc, body) in [(Encoding::Protobuf, &pb), (Encoding::Json, &json)] {
            let shape = match enc {
                Encoding::Protobuf => scan_protobuf(body).unwrap(),
                Encoding::Json => scan_json(body).unwrap(),
            };
            assert_eq!(
                shape.points,
                convert::point_count(r) as u64,
                "{what} {enc:?}"
            );
            let ((), peak) = peak_of(|| {
                let d = decode(body, enc).unwrap();
                let c = convert::convert(d);
                drop(c);
            });
            let cost = shape.cost();
            eprintln!("{what} {enc:?}: peak {peak} bound {cost}");
            assert!(peak <= cost, "{what} {enc:?}: peak {peak} over {cost}");
        }
    }

    #[test]
    fn bound_holds_for_hostile_and_real_shapes() {
        let empty = req(vec![Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint::default(); 20_000],
        })]);
        check("empty points", &empty);
        let attrs: Vec<KeyValue> = (0..8)
            .map(|i| kv(format!("attr.{i}"), format!("value-{i}")))
            .collect();
        let real = req(vec![Data::Histogram(Histogram {
            data_points: (0..2000)
                .map(|i| HistogramDataPoint {
                    attributes: attrs.clone(),
                    count: 16 * i,
                    sum: Some(1.5),
                    bucket_counts: vec![i; 16],
                    explicit_bounds: (0..15).map(f64::from).collect(),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: 2,
        })]);
        check("real histograms", &real);
        let packed = req(vec![Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                count: 100_000,
                positive: Some(exponential_histogram_data_point::Buckets {
                    offset: 0,
                    bucket_counts: vec![1; 100_000],
                }),
                ..Default::default()
            }],
            aggregation_temporality: 1,
        })]);
        check("packed buckets", &packed);
        let many_attrs = req(vec![Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: (0..5000)
                    .map(|i| kv(format!("k{i}"), String::new()))
                    .collect(),
                ..Default::default()
            }],
        })]);
        check("many attributes", &many_attrs);
    }

    #[test]
    fn json_points_counted_under_any_spelling() {
        let s = scan_json(br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{"dat\u0061Points":[{},{},{}]}}]}]}]}"#).unwrap();
        assert_eq!(s.points, 3);
        assert!(scan_json(b"{\"a\": \"open").is_err());
        assert!(scan_protobuf(b"\x0a\x05ab").is_err());
    }
}
