//! OTLP spans → the API's [`StoredSpan`] (SPEC §3), plus the few numbers per
//! span that the per-service metrics need ([`SpanStat`]).
//!
//! Pure: no I/O. The request is consumed so strings move instead of being
//! copied.
//!
//! - `service_name` is the resource's `service.name` string, cut to 128
//!   bytes (`unknown` when absent, empty or not a string);
//! - `attributes` holds every span attribute as a string: strings as they
//!   are, ints and doubles in decimal, bools `true`/`false`, bytes in base64,
//!   arrays and maps as JSON (a later duplicate key wins);
//! - `events` is the JSON text of `[{"name", "time_unix_nano", "attributes"}]`;
//! - `http_method` from `http.method` or `http.request.method`,
//!   `http_status_code` from `http.status_code` or
//!   `http.response.status_code`, `http_url` from the first of `http.url`,
//!   `http.target`, `url.full`, `url.path` (old semantic conventions first);
//!   empty (`0`) when absent;
//! - with a [`Resolver`] (Kubernetes), each resource's pod
//!   ([`super::pods`]) adds its `k8s.*` attributes to every span of the
//!   resource, never replacing a key the span has.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde::Serialize;

use super::pods::{Resolver, span_attributes};
use crate::enrich::PodMeta;
use crate::sink::wire::StoredSpan;

/// Service name used when a resource has none.
pub const UNKNOWN_SERVICE: &str = "unknown";
/// Longer service names are cut (at a character boundary): the name is
/// copied into every span, so its length multiplies.
pub const MAX_SERVICE_NAME: usize = 128;

/// What the per-service aggregate needs of one span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpanStat {
    /// Index into [`Converted::services`] (and [`Converted::pods`]).
    pub service: u32,
    pub duration_ms: f64,
    pub error: bool,
}

/// One export request, converted.
#[derive(Debug, Default)]
pub struct Converted {
    pub spans: Vec<StoredSpan>,
    /// Distinct (service name, pod) of this request: the service names.
    pub services: Vec<String>,
    /// ... and the pods (`None`: no pod known), in the same order.
    pub pods: Vec<Option<Arc<PodMeta>>>,
    /// One per span, in the order of `spans`.
    pub stats: Vec<SpanStat>,
    /// Spans left out because their ids are invalid ([`check_ids`]).
    pub rejected: u64,
    /// Why the first of them was.
    pub reject_reason: Option<String>,
}

/// Number of spans in a request (before converting it).
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Convert every span of `req` (without pod metadata).
pub fn convert(req: ExportTraceServiceRequest, cluster_id: &str) -> Converted {
    convert_with(req, cluster_id, None)
}

/// Convert every span of `req`, each resource's pod found by `pods`.
pub fn convert_with(
    req: ExportTraceServiceRequest,
    cluster_id: &str,
    mut pods: Option<&mut Resolver<'_>>,
) -> Converted {
    let mut out = Converted {
        spans: Vec::with_capacity(span_count(&req)),
        ..Converted::default()
    };
    // the index of each distinct (service, pod uid): a map, so many
    // resources stay linear
    let mut index: HashMap<(String, String), u32> = HashMap::new();
    for rs in req.resource_spans {
        let service = service_name(rs.resource.as_ref());
        let attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let pod = pods.as_mut().and_then(|r| r.resolve(attrs));
        // one list for every span of the resource: nothing allocated per span
        let extra: Option<std::sync::Arc<[(String, String)]>> =
            pod.as_ref().map(|p| span_attributes(p, attrs).into());
        let key = (
            service,
            pod.as_ref().map(|p| p.uid.clone()).unwrap_or_default(),
        );
        let idx = match index.get(&key) {
            Some(&i) => i,
            None => {
                let i = out.services.len() as u32;
                out.services.push(key.0.clone());
                out.pods.push(pod);
                index.insert(key, i);
                i
            }
        };
        for ss in rs.scope_spans {
            for mut span in ss.spans {
                if let Err(why) = check_ids(&mut span) {
                    out.rejected += 1;
                    out.reject_reason.get_or_insert(why);
                    continue;
                }
                let mut stored = span_to_stored(span, &out.services[idx as usize], cluster_id);
                stored.attributes.added = extra.clone();
                out.stats.push(SpanStat {
                    service: idx,
                    duration_ms: stored.duration_ns as f64 / 1e6,
                    error: stored.status_code == StatusCode::Error as i32,
                });
                out.spans.push(stored);
            }
        }
    }
    out
}

/// A trace id is 16 bytes, a span id 8, neither all zero; a parent span id
/// is empty or 8 bytes (all zero means none, as some SDKs send for roots).
pub fn check_ids(span: &mut Span) -> Result<(), String> {
    if check_id_bytes(&span.trace_id, &span.span_id, &span.parent_span_id)? {
        span.parent_span_id.clear();
    }
    Ok(())
}

/// [`check_ids`] on the ids alone: `Ok(true)` when the parent is 8 zero
/// bytes (none).
pub fn check_id_bytes(trace_id: &[u8], span_id: &[u8], parent: &[u8]) -> Result<bool, String> {
    let valid = |id: &[u8], n: usize| id.len() == n && id.iter().any(|&b| b != 0);
    if !valid(trace_id, 16) {
        return Err(format!(
            "invalid trace id {:?}: 16 bytes, not all zero",
            short_hex(trace_id)
        ));
    }
    if !valid(span_id, 8) {
        return Err(format!(
            "invalid span id {:?}: 8 bytes, not all zero",
            short_hex(span_id)
        ));
    }
    match parent.len() {
        0 => Ok(false),
        8 => Ok(parent.iter().all(|&b| b == 0)),
        _ => Err(format!(
            "invalid parent span id {:?}: empty or 8 bytes",
            short_hex(parent)
        )),
    }
}

/// An id for a message: its first 32 bytes in hex.
fn short_hex(id: &[u8]) -> String {
    hex(&id[..id.len().min(32)])
}

/// A resource's `service.name` when it is a non-empty string (cut to
/// [`MAX_SERVICE_NAME`] bytes), else [`UNKNOWN_SERVICE`].
pub(crate) fn service_name(resource: Option<&Resource>) -> String {
    let value = resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        });
    let Some(mut s) = value else {
        return UNKNOWN_SERVICE.to_string();
    };
    if s.len() > MAX_SERVICE_NAME {
        let mut end = MAX_SERVICE_NAME;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s = &s[..end];
    }
    s.to_string()
}

/// Where `http_method` comes from, first present first.
pub const HTTP_METHOD: &[&str] = &["http.method", "http.request.method"];
/// ... `http_status_code` (its value parsed as an integer).
pub const HTTP_STATUS_CODE: &[&str] = &["http.status_code", "http.response.status_code"];
/// ... `http_url` (old semantic conventions first).
pub const HTTP_URL: &[&str] = &["http.url", "http.target", "url.full", "url.path"];

/// One span. `duration_ns` is 0 when the end precedes the start.
pub fn span_to_stored(span: Span, service: &str, cluster_id: &str) -> StoredSpan {
    let attributes = attributes_map(span.attributes);
    let http_method = first_of(&attributes, HTTP_METHOD)
        .unwrap_or_default()
        .to_string();
    let http_status_code = first_of(&attributes, HTTP_STATUS_CODE)
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let http_url = first_of(&attributes, HTTP_URL)
        .unwrap_or_default()
        .to_string();
    let (status_code, status_message) = match span.status {
        Some(s) => (s.code, s.message),
        None => (0, String::new()),
    };
    StoredSpan {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        service_name: service.to_string(),
        span_name: span.name,
        span_kind: span.kind,
        timestamp: (span.start_time_unix_nano / 1_000_000) as i64,
        duration_ns: span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano),
        status_code,
        status_message,
        attributes: attributes.into(),
        events: events_json(span.events),
        http_method,
        http_status_code,
        http_url,
        cluster_id: cluster_id.to_string(),
    }
}

fn first_of<'a>(attrs: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| attrs.get(*k).map(String::as_str))
}

fn attributes_map(kvs: Vec<KeyValue>) -> BTreeMap<String, String> {
    kvs.into_iter()
        .map(|kv| {
            let v = match kv.value {
                Some(AnyValue {
                    value: Some(Value::StringValue(s)),
                }) => s,
                Some(v) => attr_string(&v),
                None => String::new(),
            };
            (kv.key, v)
        })
        .collect()
}

/// An attribute value as the API's string.
pub fn attr_string(v: &AnyValue) -> String {
    match &v.value {
        // a profiling-only string-table index: absent outside profiles
        None | Some(Value::StringValueStrindex(_)) => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => base64(b),
        Some(Value::ArrayValue(_)) | Some(Value::KvlistValue(_)) => {
            serde_json::to_string(&to_json(v)).unwrap_or_default()
        }
    }
}

/// An attribute value as JSON (for arrays and maps): ints and doubles as
/// numbers (non-finite doubles as their decimal text), bytes as base64.
fn to_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None | Some(Value::StringValueStrindex(_)) => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or_else(|| J::String(d.to_string())),
        Some(Value::BytesValue(b)) => J::String(base64(b)),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(to_json).collect()),
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|e| {
                    let v = e.value.as_ref().map(to_json).unwrap_or(J::Null);
                    (e.key.clone(), v)
                })
                .collect(),
        ),
    }
}

#[derive(Serialize)]
struct EventOut {
    name: String,
    time_unix_nano: u64,
    attributes: BTreeMap<String, String>,
}

fn events_json(events: Vec<Event>) -> String {
    if events.is_empty() {
        return "[]".to_string();
    }
    let out: Vec<EventOut> = events
        .into_iter()
        .map(|e| EventOut {
            name: e.name,
            time_unix_nano: e.time_unix_nano,
            attributes: attributes_map(e.attributes),
        })
        .collect();
    serde_json::to_string(&out).unwrap_or_else(|_| "[]".to_string())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Standard base64 with padding (RFC 4648 §4), as OTLP/JSON writes bytes.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn attribute_values_as_strings() {
        let cases: Vec<(Value, &str)> = vec![
            (s("x y"), "x y"),
            (Value::IntValue(-42), "-42"),
            (Value::IntValue(i64::MAX), "9223372036854775807"),
            (Value::DoubleValue(0.25), "0.25"),
            (Value::DoubleValue(3.0), "3"),
            (Value::BoolValue(true), "true"),
            (Value::BoolValue(false), "false"),
            (Value::BytesValue(vec![0xde, 0xad]), "3q0="),
            (
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(s("a")),
                        },
                        AnyValue {
                            value: Some(Value::IntValue(2)),
                        },
                        AnyValue {
                            value: Some(Value::DoubleValue(1.5)),
                        },
                        AnyValue {
                            value: Some(Value::BoolValue(true)),
                        },
                    ],
                }),
                r#"["a",2,1.5,true]"#,
            ),
            (
                Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", s("v")), kv("n", Value::IntValue(1))],
                }),
                r#"{"k":"v","n":1}"#,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(attr_string(&AnyValue { value: Some(v) }), want);
        }
        assert_eq!(attr_string(&AnyValue { value: None }), "");
    }

    fn span(attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: (1..=16).collect(),
            span_id: vec![0xab; 8],
            name: "GET /cart".into(),
            kind: 2,
            start_time_unix_nano: 1_732_650_000_123_456_789,
            end_time_unix_nano: 1_732_650_000_124_691_356,
            attributes: attrs,
            ..Default::default()
        }
    }

    #[test]
    fn old_semantic_conventions() {
        let st = span_to_stored(
            span(vec![
                kv("http.method", s("GET")),
                kv("http.status_code", Value::IntValue(200)),
                kv("http.target", s("/cart")),
            ]),
            "checkout",
            "prod",
        );
        assert_eq!(st.trace_id, "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(st.span_id, "abababababababab");
        assert_eq!(st.parent_span_id, "");
        assert_eq!(st.timestamp, 1_732_650_000_123);
        assert_eq!(st.duration_ns, 1_234_567);
        assert_eq!(
            (
                st.http_method.as_str(),
                st.http_status_code,
                st.http_url.as_str()
            ),
            ("GET", 200, "/cart")
        );
        assert_eq!(st.attributes.get("http.status_code"), Some("200"));
        assert_eq!(st.events, "[]");
        assert_eq!((st.status_code, st.status_message.as_str()), (0, ""));
    }

    #[test]
    fn new_semantic_conventions_and_url_priority() {
        let st = span_to_stored(
            span(vec![
                kv("http.request.method", s("POST")),
                kv("http.response.status_code", Value::IntValue(503)),
                kv("url.path", s("/pay")),
                kv("url.full", s("https://shop/pay?x=1")),
            ]),
            "checkout",
            "prod",
        );
        assert_eq!(
            (
                st.http_method.as_str(),
                st.http_status_code,
                st.http_url.as_str()
            ),
            ("POST", 503, "https://shop/pay?x=1")
        );
        let none = span_to_stored(span(vec![]), "c", "p");
        assert_eq!(
            (
                none.http_method.as_str(),
                none.http_status_code,
                none.http_url.as_str()
            ),
            ("", 0, "")
        );
    }

    #[test]
    fn events_status_and_stats() {
        let mut sp = span(vec![]);
        sp.parent_span_id = vec![1, 2, 3, 4, 5, 6, 7, 8];
        sp.status = Some(Status {
            code: 2,
            message: "boom".into(),
        });
        sp.events = vec![Event {
            time_unix_nano: 1_732_650_000_124_000_000,
            name: "exception".into(),
            attributes: vec![
                kv("exception.type", s("ValueError")),
                kv("retry", Value::IntValue(3)),
            ],
            dropped_attributes_count: 0,
        }];
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", s("pay"))],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![sp, span(vec![])],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    resource: None,
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(vec![])],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        assert_eq!(span_count(&req), 3);
        let c = convert(req, "prod");
        assert_eq!(c.services, vec!["pay", "unknown"]);
        let first = &c.spans[0];
        assert_eq!(first.parent_span_id, "0102030405060708");
        assert_eq!(
            (first.status_code, first.status_message.as_str()),
            (2, "boom")
        );
        assert_eq!(
            first.events,
            r#"[{"name":"exception","time_unix_nano":1732650000124000000,"attributes":{"exception.type":"ValueError","retry":"3"}}]"#
        );
        assert_eq!(c.spans[2].service_name, "unknown");
        assert_eq!(c.spans[1].cluster_id, "prod");
        assert_eq!(
            c.stats,
            vec![
                SpanStat {
                    service: 0,
                    duration_ms: 1.234567,
                    error: true
                },
                SpanStat {
                    service: 0,
                    duration_ms: 1.234567,
                    error: false
                },
                SpanStat {
                    service: 1,
                    duration_ms: 1.234567,
                    error: false
                },
            ]
        );
    }

    #[test]
    fn invalid_ids_are_rejected_and_counted() {
        let mut ok = span(vec![]);
        ok.parent_span_id = vec![0; 8];
        let mut short = span(vec![]);
        short.trace_id = vec![0xab];
        let mut zero = span(vec![]);
        zero.span_id = vec![0; 8];
        let mut parent = span(vec![]);
        parent.parent_span_id = vec![1; 3];
        let long = "é".repeat(100);
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s(&long))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![short, ok, zero, parent],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let c = convert(req, "p");
        assert_eq!((c.spans.len(), c.rejected), (1, 3));
        assert!(c.reject_reason.unwrap().contains("trace id \"ab\""));
        // an all-zero parent is a root
        assert_eq!(c.spans[0].parent_span_id, "");
        // cut at a character boundary
        assert_eq!(c.spans[0].service_name.len(), MAX_SERVICE_NAME);
        assert_eq!(c.services, vec!["é".repeat(64)]);
    }

    #[test]
    fn end_before_start_is_zero_duration() {
        let mut sp = span(vec![]);
        sp.end_time_unix_nano = sp.start_time_unix_nano - 5;
        assert_eq!(span_to_stored(sp, "a", "b").duration_ns, 0);
    }
}
