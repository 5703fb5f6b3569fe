//! What a request will cost before it is decoded: an allocation-free walk of
//! the body ([`scan_protobuf`], [`scan_json`]) counts what decoding creates
//! (spans, attributes, events, strings), and [`Shape::cost`] turns the counts
//! into an upper bound of the bytes that decoding, converting and encoding
//! the request for the span queue allocate at their peak.
//!
//! The point is amplification: an empty span is 2 bytes of protobuf (`0a
//! 00`) and about 1.5 KiB once decoded, converted and encoded, so a 700 KB
//! body of empty spans is a quarter of a gigabyte. The bound is checked
//! against the receiver's memory budget and the span queue's room before
//! anything is decoded. It is deliberately pessimistic (every repeated
//! element counted with its `Vec` slack, every string with an allocation);
//! the unit tests measure real peaks against it.
//!
//! Pure: bytes in, counts out.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

pub use super::wire::ScanError;
use super::wire::{self, ALLOC, MAX_DEPTH, largest, size};
use crate::sink::wire::StoredSpan;

/// Counts of what decoding a request creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub resources: u64,
    pub spans: u64,
    /// Messages other than resources and spans (scopes, key-values, any
    /// values, events, links, statuses...).
    pub messages: u64,
    /// Key-values (each may become a map entry and a number's text).
    pub values: u64,
    /// Bytes of the decoded structs (each counted twice: `Vec` slack).
    pub structs: u64,
    pub events: u64,
    /// Non-empty strings and byte fields, and their bytes.
    pub strings: u64,
    pub string_bytes: u64,
    /// The longest string (a bound of the service name copied per span).
    pub longest_string: u64,
    /// Extra bytes JSON escaping can add (control characters, quotes).
    pub escape_bytes: u64,
}

/// The message types of a trace export, as far as their shape matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
    EntityRef,
}

impl Msg {
    /// The size of the decoded struct.
    fn size(self) -> u64 {
        use opentelemetry_proto::tonic::common::v1::{
            ArrayValue, EntityRef, InstrumentationScope, KeyValueList,
        };
        use opentelemetry_proto::tonic::trace::v1::Status;
        match self {
            Msg::Request => 0,
            Msg::ResourceSpans => size::<ResourceSpans>(),
            Msg::Resource => size::<Resource>(),
            Msg::ScopeSpans => size::<ScopeSpans>(),
            Msg::Scope => size::<InstrumentationScope>(),
            Msg::Span => size::<Span>(),
            Msg::Event => size::<Event>(),
            Msg::Link => size::<Link>(),
            Msg::Status => size::<Status>(),
            Msg::KeyValue => size::<KeyValue>(),
            Msg::AnyValue => size::<AnyValue>(),
            Msg::ArrayValue => size::<ArrayValue>(),
            Msg::KvList => size::<KeyValueList>(),
            Msg::EntityRef => size::<EntityRef>(),
        }
    }

    /// The message type of a length-delimited field, `None` for strings,
    /// bytes and unknown fields.
    fn child(self, field: u64) -> Option<Msg> {
        use Msg::*;
        Some(match (self, field) {
            (Request, 1) => ResourceSpans,
            (ResourceSpans, 1) => Resource,
            (ResourceSpans, 2) => ScopeSpans,
            (Resource, 1) | (Scope, 3) | (Span, 9) | (Event, 3) | (Link, 4) | (KvList, 1) => {
                KeyValue
            }
            (Resource, 3) => EntityRef,
            (ScopeSpans, 1) => Scope,
            (ScopeSpans, 2) => Span,
            (Span, 11) => Event,
            (Span, 13) => Link,
            (Span, 15) => Status,
            (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KvList,
            _ => return None,
        })
    }
}

#[derive(Default)]
struct Walk {
    shape: Shape,
}

/// Count a protobuf `ExportTraceServiceRequest` without decoding it. Wire
/// errors are found here; type errors (a string where a message belongs)
/// are left to the decoder.
pub fn scan_protobuf(body: &[u8]) -> Result<Shape, ScanError> {
    let mut w = Walk::default();
    walk(body, 0, Msg::Request, 0, &mut w)?;
    Ok(w.shape)
}

fn walk(buf: &[u8], base: usize, msg: Msg, depth: u32, w: &mut Walk) -> Result<(), ScanError> {
    if depth > MAX_DEPTH {
        return Err(ScanError::TooDeep);
    }
    for f in wire::fields(buf, base) {
        let f = f?;
        if f.delimited() {
            let inner = &buf[f.start..f.end];
            match msg.child(f.number) {
                Some(child) => enter(inner, base + f.start, msg, child, depth, w)?,
                None => string(inner, w),
            }
        }
    }
    Ok(())
}

/// One nested message: count it and walk it.
fn enter(
    inner: &[u8],
    base: usize,
    parent: Msg,
    child: Msg,
    depth: u32,
    w: &mut Walk,
) -> Result<(), ScanError> {
    let s = &mut w.shape;
    // an optional field lives in its parent; a repeated one in a `Vec`
    // that may have doubled
    let inline = matches!(
        (parent, child),
        (Msg::ResourceSpans, Msg::Resource)
            | (Msg::ScopeSpans, Msg::Scope)
            | (Msg::Span, Msg::Status)
            | (Msg::KeyValue, Msg::AnyValue)
            | (Msg::AnyValue, Msg::ArrayValue | Msg::KvList)
    );
    if !inline {
        s.structs += 2 * child.size();
    }
    match child {
        Msg::ResourceSpans => s.resources += 1,
        Msg::Span => s.spans += 1,
        Msg::KeyValue => {
            s.messages += 1;
            s.values += 1;
        }
        Msg::Event => {
            s.messages += 1;
            s.events += 1;
        }
        _ => s.messages += 1,
    }
    walk(inner, base, child, depth + 1, w)
}

fn string(bytes: &[u8], w: &mut Walk) {
    if bytes.is_empty() {
        return;
    }
    let s = &mut w.shape;
    s.strings += 1;
    s.string_bytes += bytes.len() as u64;
    s.longest_string = s.longest_string.max(bytes.len() as u64);
    s.escape_bytes += escapes(bytes);
}

/// Extra bytes JSON escaping adds to `bytes`, written twice (a span's events
/// are JSON text inside the JSON batch): a control character becomes
/// `\u00XX` and then `\\u00XX`, a quote or backslash two and then three.
fn escapes(bytes: &[u8]) -> u64 {
    // most strings have none: checked eight bytes at a time first
    if !wire::needs_escape(bytes) {
        return 0;
    }
    bytes
        .iter()
        .map(|&b| match b {
            0..=0x1f => 12,
            b'"' | b'\\' => 3,
            _ => 0,
        })
        .sum()
}

/// Count an OTLP/JSON body without decoding it: every object is a message,
/// every object directly in a `"spans"` array a span (in a
/// `"resourceSpans"` array a resource), every string a string. An object
/// costs as much as the largest message it could be. Keys written with
/// escapes count as `"spans"`, so no spelling hides a span.
pub fn scan_json(body: &[u8]) -> Result<Shape, ScanError> {
    const OTHER: u8 = 0;
    const SPANS: u8 = 1;
    const RESOURCES: u8 = 2;
    let mut s = Shape::default();
    // what the array at each nesting level holds (serde_json stops at 128)
    let mut class = [OTHER; 130];
    let mut depth = 0usize;
    let mut key = OTHER;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                let (end, escaped, is_key) = wire::json_string(body, i)?;
                let text = &body[i + 1..end];
                if is_key {
                    key = match text {
                        _ if escaped => SPANS,
                        b"spans" => SPANS,
                        b"resourceSpans" => RESOURCES,
                        _ => OTHER,
                    };
                }
                if !text.is_empty() {
                    s.strings += 1;
                    s.string_bytes += text.len() as u64;
                    s.longest_string = s.longest_string.max(text.len() as u64);
                    s.escape_bytes += escapes(text);
                }
                i = end + 1;
                continue;
            }
            c @ (b'{' | b'[') => {
                if depth + 1 >= class.len() {
                    return Err(ScanError::TooDeep);
                }
                if c == b'{' {
                    s.messages += 1;
                    s.values += 1;
                    s.structs += 2 * LARGEST;
                    match class[depth] {
                        SPANS => s.spans += 1,
                        RESOURCES => s.resources += 1,
                        _ => {}
                    }
                }
                depth += 1;
                class[depth] = if c == b'[' { key } else { OTHER };
                key = OTHER;
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

/// The largest struct a JSON object may decode to.
const LARGEST: u64 = largest(&[
    size::<Span>(),
    size::<ResourceSpans>() + size::<Resource>(),
    size::<ScopeSpans>(),
    size::<Event>(),
    size::<Link>(),
    size::<KeyValue>() + size::<AnyValue>(),
]);

/// Bytes any request allocates at once whatever its shape.
const FIXED: u64 = 16 << 10;

impl Shape {
    /// Upper bound of the bytes decoding, converting and encoding this
    /// request allocate at once (not counting the body itself).
    ///
    /// Decoded (`d`): the structs and strings prost builds. Converting moves
    /// the strings, so what it adds (`c`) is the spans' own structs and
    /// their new text: hex ids, the cluster id and service name, numbers as
    /// text, map nodes, the events' JSON (a copy of their strings). The
    /// batch (`e`) is JSON: the encoder reserves 640 bytes a span, and a
    /// larger batch makes its `Vec` double, so up to twice its text. The
    /// decoded request is gone (consumed by converting) once the batch is
    /// encoded, so the peak is the larger of `d + c` and `c + e` (plus the
    /// strings moved from `d` into `c`).
    pub fn cost(&self, cluster_id_len: usize) -> u64 {
        let cid = cluster_id_len as u64;
        let service = self
            .longest_string
            .min(super::convert::MAX_SERVICE_NAME as u64);
        let d = self.structs + self.strings * ALLOC + self.string_bytes;
        let per_span = size::<StoredSpan>()
            + size::<super::convert::SpanStat>()
            + 6 * ALLOC
            + cid
            + service
            + 64;
        let c = self.spans * per_span
            + self.values * (96 + ALLOC)
            + self.events * (ALLOC + 64)
            + self.string_bytes
            + self.escape_bytes
            + self.resources * (3 * ALLOC + 128 + 2 * service);
        // an empty span's JSON is about 330 bytes with the largest numbers
        let text = self.spans * (330 + cid + service + 64)
            + self.values * 8
            + self.events * 64
            + self.string_bytes
            + self.escape_bytes;
        let e = (self.spans * 640 + 64).max(2 * text);
        // converting frees the decoded request as it goes; the batch is
        // encoded from the converted spans, which hold the moved strings
        let moved = self.strings * ALLOC + self.string_bytes;
        // what any request allocates whatever its size (maps, first
        // capacities): the otlp_bound fuzz target found a one-span request
        // at 3,989 bytes against 3,336 without it
        FIXED + (d + c).max(c + moved + e)
    }
}

#[cfg(test)]
mod tests {
    use super::super::convert;
    use super::super::decode::{self, Encoding};
    use super::super::meter::peak_of;
    use super::*;
    use crate::sink::wire::SpansBatch;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::Status;
    use prost::Message;
    use rand::{Rng, SeedableRng};

    const CLUSTER: &str = "prod-cluster";

    fn kv(k: &str, v: Option<Value>) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: v.map(|v| AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn request(resources: Vec<(String, Vec<Span>)>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: resources
                .into_iter()
                .map(|(service, spans)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", Some(Value::StringValue(service)))],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn real_span(i: u64, attrs: usize) -> Span {
        Span {
            trace_id: (1..=16).map(|b| b ^ i as u8).collect(),
            span_id: vec![7; 8],
            parent_span_id: vec![3; 8],
            name: format!("GET /api/v1/items/{i}"),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i,
            end_time_unix_nano: 1_700_000_000_001_000_000 + i,
            attributes: (0..attrs)
                .map(|a| match a % 4 {
                    0 => kv(
                        &format!("http.attr.{a}"),
                        Some(Value::StringValue(format!("value-{i}-{a}"))),
                    ),
                    1 => kv(
                        &format!("n.{a}"),
                        Some(Value::IntValue(-(i as i64) * 1_000_003)),
                    ),
                    2 => kv(&format!("d.{a}"), Some(Value::DoubleValue(1.0 / 3.0))),
                    _ => kv(&format!("b.{a}"), Some(Value::BoolValue(true))),
                })
                .collect(),
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            ..Default::default()
        }
    }

    /// What `Ingest::export` allocates at its peak, on this thread: decode,
    /// convert, encode the batch as the sink does.
    fn measured(body: &[u8], enc: Encoding) -> u64 {
        let ((), peak) = peak_of(|| {
            let req = decode::decode(body, enc).expect("decodes");
            let c = convert::convert(req, CLUSTER);
            let mut out = Vec::with_capacity(64 + c.spans.len() * 640);
            serde_json::to_writer(
                &mut out,
                &SpansBatch {
                    spans: std::borrow::Cow::Borrowed(&c.spans),
                },
            )
            .expect("encodes");
            drop(out);
            drop(c);
        });
        peak
    }

    /// What the fast path allocates at its peak: span JSON, then the
    /// batches of 100 the delivery queue makes of it.
    fn measured_fast(body: &[u8], spans: u64) -> u64 {
        let ((), peak) = peak_of(|| {
            // a body left to prost costs what the fast path took before
            let Ok(e) = crate::otlp::fast::encode(body, CLUSTER, None, spans) else {
                return;
            };
            let slices = e.spans.slices();
            let batches: Vec<Vec<u8>> = slices
                .chunks(100)
                .map(crate::sink::span_json::api_body)
                .collect();
            drop(batches);
        });
        peak
    }

    /// The bound holds, and is not absurdly pessimistic for `realistic`.
    fn check(what: &str, req: &ExportTraceServiceRequest, realistic: bool) {
        let pb = req.encode_to_vec();
        let json = serde_json::to_vec(req).unwrap();
        for (enc, body) in [(Encoding::Protobuf, &pb), (Encoding::Json, &json)] {
            let shape = match enc {
                Encoding::Protobuf => scan_protobuf(body).unwrap(),
                Encoding::Json => scan_json(body).unwrap(),
            };
            assert_eq!(shape.spans, convert::span_count(req) as u64, "{what}");
            let cost = shape.cost(CLUSTER.len());
            let peak = measured(body, enc);
            eprintln!("{what} {enc:?}: peak {peak} bound {cost}");
            assert!(
                peak <= cost,
                "{what} {enc:?}: peak {peak} over the bound {cost} ({shape:?})"
            );
            if enc == Encoding::Protobuf {
                // the fast path (body → span JSON → batches) within it too
                let fast = measured_fast(body, shape.spans);
                eprintln!("{what} fast path: peak {fast}");
                assert!(fast <= cost, "{what}: fast path peak {fast} over {cost}");
            }
            if realistic && enc == Encoding::Protobuf {
                assert!(
                    cost <= 3 * peak,
                    "{what}: bound {cost} over 3x the peak {peak}"
                );
            }
        }
    }

    #[test]
    fn a_body_of_no_spans_costs_the_fast_path_nothing_much() {
        // unknown fields only (what the otlp_bound fuzz target found: the
        // fast path's buffer was sized from the body's length, over the bound)
        let input = include_bytes!("../../fuzz/seeds/otlp_bound/pb-no-spans");
        let body = &input[1..];
        let shape = scan_protobuf(body).unwrap();
        assert_eq!(shape.spans, 0);
        let cost = shape.cost(CLUSTER.len());
        let peak = measured_fast(body, shape.spans);
        assert!(peak <= cost, "fast path peak {peak} over {cost}");
    }

    #[test]
    fn bound_holds_for_hostile_and_real_shapes() {
        let empty = request(vec![("svc".into(), vec![Span::default(); 5000])]);
        check("empty spans", &empty, true);
        let real = request(vec![(
            "checkout".into(),
            (0..2000).map(|i| real_span(i, 10)).collect(),
        )]);
        check("real spans", &real, true);
        let many_services = request(
            (0..5000)
                .map(|i| (format!("service-{i}"), vec![real_span(i, 1)]))
                .collect(),
        );
        check("a service a span", &many_services, true);
        let no_spans = request((0..5000).map(|i| (format!("s{i}"), vec![])).collect());
        check("resources without spans", &no_spans, false);
        let empty_attrs = request(vec![(
            "a".into(),
            vec![Span {
                attributes: vec![kv("", None); 20_000],
                ..Default::default()
            }],
        )]);
        check("empty attributes", &empty_attrs, false);
        let control = "\u{1}\"\\".repeat(2000);
        let events = request(vec![(
            control.clone(),
            (0..50)
                .map(|_| Span {
                    name: control.clone(),
                    events: vec![
                        Event {
                            name: control.clone(),
                            attributes: vec![kv(
                                &control,
                                Some(Value::StringValue(control.clone()))
                            )],
                            ..Default::default()
                        };
                        3
                    ],
                    ..Default::default()
                })
                .collect(),
        )]);
        check("escapes in events", &events, false);
    }

    fn nested(depth: u32) -> AnyValue {
        if depth == 0 {
            return AnyValue {
                value: Some(Value::IntValue(i64::MIN)),
            };
        }
        let v = if depth.is_multiple_of(2) {
            Value::ArrayValue(ArrayValue {
                values: vec![nested(depth - 1), nested(depth - 1)],
            })
        } else {
            Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(nested(depth - 1)),
                    ..Default::default()
                }],
            })
        };
        AnyValue { value: Some(v) }
    }

    /// Random shapes: the bound holds for every one.
    #[test]
    fn bound_holds_for_random_requests() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..12 {
            let resources = (0..rng.random_range(1..10))
                .map(|r| {
                    let spans = (0..rng.random_range(0..100))
                        .map(|i| {
                            let mut s = real_span(i, rng.random_range(0..12));
                            if rng.random_bool(0.3) {
                                s.attributes.push(KeyValue {
                                    key: "deep".into(),
                                    value: Some(nested(rng.random_range(0..8))),
                                    ..Default::default()
                                });
                            }
                            if rng.random_bool(0.2) {
                                s.events = vec![
                                    Event {
                                        name: "e".into(),
                                        attributes: s.attributes.clone(),
                                        ..Default::default()
                                    };
                                    rng.random_range(1..4)
                                ];
                            }
                            s
                        })
                        .collect();
                    (format!("svc-{r}"), spans)
                })
                .collect();
            check(&format!("round {round}"), &request(resources), false);
        }
    }

    #[test]
    fn wire_errors_are_found() {
        assert_eq!(scan_protobuf(b"\x0a\x05ab"), Err(ScanError::Wire(2)));
        assert!(scan_protobuf(b"\x0b").is_err());
        assert!(scan_protobuf(&[0xff; 11]).is_err());
        let mut deep = Vec::new();
        for _ in 0..200 {
            let mut outer = vec![0x2a];
            prost::encoding::encode_varint(deep.len() as u64, &mut outer);
            outer.extend_from_slice(&deep);
            deep = outer;
        }
        // AnyValue→ArrayValue→AnyValue...: not under the request's schema,
        // so only counted as bytes; a real deep chain is
        assert!(scan_protobuf(&deep).is_ok());
        assert!(scan_json(b"{\"a\": \"unterminated}").is_err());
        assert!(scan_json(&b"[".repeat(200)).is_err());
        assert!(scan_json(b"}").is_err());
    }

    #[test]
    fn escaped_keys_still_count_spans() {
        let s = scan_json(br#"{"resourceSpans":[{"scopeSpans":[{"sp\u0061ns":[{},{},{}]}]}]}"#)
            .unwrap();
        assert_eq!((s.resources, s.spans), (1, 3));
        let s =
            scan_json(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"events":[{}]},{}]}]}]}"#)
                .unwrap();
        assert_eq!(s.spans, 2);
    }
}
