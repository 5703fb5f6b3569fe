//! The fast path against the reference (prost + convert.rs + serde_json):
//! the fixtures, thousands of generated requests (with and without pods),
//! the same requests damaged, and hand-made wire oddities.

use std::net::IpAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::reference::{Agreement, compare};
use super::*;
use crate::enrich::{Metadata, Peer};
use crate::model::ContainerIdentity;

const CLUSTER: &str = "prod \"eu\"";

fn fixture(rel: &str) -> Vec<u8> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/otlp/opentelemetry-proto"
    );
    std::fs::read(format!("{dir}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Two pods: `a` (one container, also the peer 10.0.0.1) and `b`.
struct Pods(Vec<Arc<PodMeta>>);

fn pods() -> Pods {
    let pod = |name: &str, containers: &[&str]| {
        Arc::new(PodMeta {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            workload: "web".into(),
            workload_kind: "Deployment".into(),
            labels: vec![],
            node: "n1".into(),
            containers: containers.iter().map(|c| c.to_string()).collect(),
        })
    };
    Pods(vec![pod("a", &["app"]), pod("b", &["app", "side"])])
}

impl Metadata for Pods {
    fn pod(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.0.iter().find(|p| p.uid == uid).cloned()
    }
    fn container(&self, _: &ContainerIdentity) -> Option<(Arc<PodMeta>, String)> {
        None
    }
    fn knows_pods(&self) -> bool {
        true
    }
    fn pod_by_name(&self, ns: &str, name: &str) -> Option<Arc<PodMeta>> {
        self.0
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
            .cloned()
    }
    fn peer(&self, ip: IpAddr) -> Peer {
        match ip.to_string().as_str() {
            "10.0.0.1" => Peer::Pod(self.0[0].clone()),
            "192.168.1.5" => Peer::HostNetwork,
            _ => Peer::Unknown,
        }
    }
}

/// Compare with and without pods (the peer a pod, then unknown).
fn agree(body: &[u8]) -> Agreement {
    let meta = pods();
    let a = compare(body, CLUSTER, None, None).unwrap_or_else(|e| panic!("{e}"));
    for peer in ["10.0.0.1", "10.9.9.9"] {
        let b = compare(body, CLUSTER, Some(&meta), Some(peer.parse().unwrap()))
            .unwrap_or_else(|e| panic!("with pods: {e}"));
        assert_eq!(a, b);
    }
    a
}

#[test]
fn every_fixture_is_taken_and_identical() {
    let pb = fixture("examples-f6bb641/trace.protobuf-bin");
    assert_eq!(agree(&pb), Agreement::Same);
    for rel in [
        "examples-HEAD-ac2c4b5/trace.json",
        "examples-ca6170e/trace.json",
    ] {
        let req: ExportTraceServiceRequest = serde_json::from_slice(&fixture(rel)).unwrap();
        assert_eq!(agree(&req.encode_to_vec()), Agreement::Same, "{rel}");
    }
    // the fixture's span, as the API gets it
    let e = encode(&pb, "c", None, 4).unwrap();
    let json = String::from_utf8(e.spans.iter().next().unwrap().to_vec()).unwrap();
    assert!(json.starts_with(r#"{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","parent_span_id":"eee19b7ec3c1b173","#), "{json}");
}

#[test]
fn the_fuzz_seeds_agree() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
    let mut n = 0;
    for target in ["otlp_decode", "otlp_bound"] {
        for entry in std::fs::read_dir(format!("{dir}/{target}")).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            let Some((&mode, body)) = data.split_first() else {
                continue;
            };
            // otlp_decode's first byte says the content encoding
            let enc =
                [None, Some("gzip"), Some("deflate"), Some("identity")][usize::from(mode & 3)];
            let enc = if target == "otlp_decode" { enc } else { None };
            let Ok(body) = crate::otlp::decode::inflate(body.to_vec().into(), enc, 1 << 24) else {
                continue;
            };
            agree(&body);
            n += 1;
        }
    }
    assert!(n >= 6, "{n} seeds");
}

/// Strings that matter: the keys convert.rs looks up, escapes, non-ASCII,
/// numbers with spaces, a long service name.
const STRINGS: &[&str] = &[
    "",
    "a",
    "b",
    "service.name",
    "http.method",
    "http.request.method",
    "http.status_code",
    "http.response.status_code",
    "http.url",
    "http.target",
    "url.full",
    "url.path",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.namespace.name",
    "k8s.container.name",
    "uid-a",
    "uid-b",
    "uid-zz",
    "shop",
    "GET",
    " 200 ",
    "+42",
    "-7",
    "99999999999999999999",
    "quote \" back \\ slash / end",
    "ctl \u{0}\u{1}\u{1f}\t\n\r\u{8}\u{c}\u{7f}",
    "é ü 日本 🙂",
];

fn text(rng: &mut StdRng) -> String {
    if rng.random_bool(0.03) {
        return "é".repeat(rng.random_range(60..70)) + "x";
    }
    STRINGS[rng.random_range(0..STRINGS.len())].to_string()
}

fn any_value(rng: &mut StdRng, depth: u32) -> AnyValue {
    let doubles = [0.25, 3.0, -0.0, 1e300, 1e-7, f64::NAN, f64::INFINITY, 0.1];
    let top = if depth > 2 { 6 } else { 9 };
    let value = match rng.random_range(0..top) {
        0 => None,
        1 | 2 => Some(Value::StringValue(text(rng))),
        3 => Some(Value::BoolValue(rng.random())),
        4 => Some(Value::IntValue(
            [0, 200, 503, -1, i64::MIN, i64::MAX][rng.random_range(0..6)],
        )),
        5 => Some(Value::DoubleValue(
            doubles[rng.random_range(0..doubles.len())],
        )),
        6 => Some(Value::BytesValue(
            (0..rng.random_range(0..7)).map(|_| rng.random()).collect(),
        )),
        7 => Some(Value::ArrayValue(ArrayValue {
            values: (0..rng.random_range(0..4))
                .map(|_| any_value(rng, depth + 1))
                .collect(),
        })),
        _ => Some(Value::KvlistValue(KeyValueList {
            values: attributes(rng, depth + 1, 4),
        })),
    };
    AnyValue { value }
}

fn attributes(rng: &mut StdRng, depth: u32, max: usize) -> Vec<KeyValue> {
    (0..rng.random_range(0..=max))
        .map(|_| KeyValue {
            key: text(rng),
            value: (!rng.random_bool(0.05)).then(|| any_value(rng, depth)),
            key_strindex: if rng.random_bool(0.05) { 3 } else { 0 },
        })
        .collect()
}

fn id(rng: &mut StdRng, n: usize) -> Vec<u8> {
    match rng.random_range(0..40) {
        0 => vec![0; n],
        1 => vec![0xab; n / 2],
        2 => Vec::new(),
        _ => (0..n).map(|_| rng.random()).collect(),
    }
}

fn span(rng: &mut StdRng) -> Span {
    let start: u64 = rng.random_range(0..2_000_000_000_000_000_000);
    Span {
        trace_id: id(rng, 16),
        span_id: id(rng, 8),
        parent_span_id: match rng.random_range(0..4) {
            0 => Vec::new(),
            1 => vec![0; 8],
            2 if rng.random_bool(0.1) => vec![1, 2, 3],
            _ => (0..8).map(|_| rng.random()).collect(),
        },
        trace_state: if rng.random_bool(0.1) {
            text(rng)
        } else {
            String::new()
        },
        flags: rng.random_range(0..3),
        name: text(rng),
        kind: [0, 1, 2, 3, -5, i32::MAX][rng.random_range(0..6)],
        start_time_unix_nano: start,
        end_time_unix_nano: start.wrapping_add(rng.random_range(0..5_000_000))
            - rng.random_range(0..2),
        attributes: attributes(rng, 0, 8),
        dropped_attributes_count: rng.random_range(0..2),
        events: (0..rng.random_range(0..3))
            .map(|_| Event {
                time_unix_nano: rng.random(),
                name: text(rng),
                attributes: attributes(rng, 0, 3),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: (0..rng.random_range(0..2))
            .map(|_| Link {
                trace_id: id(rng, 16),
                span_id: id(rng, 8),
                trace_state: text(rng),
                attributes: attributes(rng, 0, 2),
                dropped_attributes_count: 1,
                flags: 1,
            })
            .collect(),
        dropped_links_count: 0,
        status: rng.random_bool(0.5).then(|| Status {
            message: text(rng),
            code: [0, 1, 2, 7][rng.random_range(0..4)],
        }),
    }
}

fn resource(rng: &mut StdRng) -> Option<Resource> {
    if rng.random_bool(0.1) {
        return None;
    }
    let mut attributes = attributes(rng, 0, 4);
    if rng.random_bool(0.8) {
        let v = if rng.random_bool(0.9) {
            Value::StringValue(format!("svc-{}", rng.random_range(0..3)))
        } else {
            Value::IntValue(5)
        };
        attributes.push(KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        });
    }
    Some(Resource {
        attributes,
        dropped_attributes_count: 0,
        entity_refs: vec![],
    })
}

fn request(rng: &mut StdRng) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: (0..rng.random_range(0..4))
            .map(|_| ResourceSpans {
                resource: resource(rng),
                scope_spans: (0..rng.random_range(0..3))
                    .map(|_| ScopeSpans {
                        scope: rng.random_bool(0.5).then(|| InstrumentationScope {
                            name: text(rng),
                            version: "1.0".into(),
                            attributes: attributes(rng, 0, 2),
                            dropped_attributes_count: 0,
                        }),
                        spans: (0..rng.random_range(0..6)).map(|_| span(rng)).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            })
            .collect(),
    }
}

#[test]
fn generated_requests_are_taken_and_identical() {
    let mut rng = StdRng::seed_from_u64(16);
    let mut spans = 0;
    for i in 0..3000 {
        let req = request(&mut rng);
        spans += convert::span_count(&req);
        let body = req.encode_to_vec();
        assert_eq!(agree(&body), Agreement::Same, "request {i}");
    }
    assert!(spans > 10_000, "{spans} spans");
}

#[test]
fn damaged_requests_get_prosts_decision() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut seen = [0u32; 3];
    for _ in 0..3000 {
        let mut body = request(&mut rng).encode_to_vec();
        if body.is_empty() {
            continue;
        }
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..body.len());
            match rng.random_range(0..4) {
                0 => body[i] = rng.random(),
                1 => body[i] ^= 0x80,
                2 => body.truncate(i),
                _ => body.insert(i, rng.random()),
            }
            if body.is_empty() {
                break;
            }
        }
        let a = agree(&body);
        seen[a as usize] += 1;
    }
    // most damage is refused by both, some still decodes the same
    assert!(seen[Agreement::BothRefused as usize] > 1000, "{seen:?}");
    assert!(seen[Agreement::Same as usize] > 100, "{seen:?}");
}

/// A field: key, then the payload as its wire type has it.
fn field(n: u32, wire: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(u64::from(n << 3 | u32::from(wire)), &mut out);
    if wire == 2 {
        prost::encoding::encode_varint(payload.len() as u64, &mut out);
    }
    out.extend_from_slice(payload);
    out
}

fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(v, &mut out);
    out
}

/// A request of one resource (`service`) whose one scope holds `span`.
fn wrap(resource_first: bool, span: &[u8]) -> Vec<u8> {
    let res = Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue("svc".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec();
    let scope = field(2, 2, &field(2, 2, span));
    let rs = if resource_first {
        [field(1, 2, &res), scope].concat()
    } else {
        [scope, field(1, 2, &res)].concat()
    };
    field(1, 2, &rs)
}

fn ids() -> Vec<u8> {
    [field(1, 2, &[7; 16]), field(2, 2, &[9; 8])].concat()
}

#[test]
fn wire_oddities_agree() {
    let kv = |k: &str, any: &[u8]| {
        field(
            9,
            2,
            &[field(1, 2, k.as_bytes()), field(2, 2, any)].concat(),
        )
    };
    let cases: Vec<(&str, Vec<u8>, Agreement)> = vec![
        ("plain", ids(), Agreement::Same),
        (
            "name twice: the last",
            [ids(), field(5, 2, b"one"), field(5, 2, b"two")].concat(),
            Agreement::Same,
        ),
        (
            "status twice: merged, valid",
            [
                ids(),
                field(15, 2, &field(3, 0, &varint(2))),
                field(15, 2, &field(2, 2, b"late")),
            ]
            .concat(),
            Agreement::Same,
        ),
        (
            "kind past i32",
            [ids(), field(6, 0, &varint(u64::MAX - 3))].concat(),
            Agreement::Same,
        ),
        (
            "overlong varint",
            [ids(), field(6, 0, &[0x82, 0x80, 0x00])].concat(),
            Agreement::Same,
        ),
        (
            "unknown fields",
            [
                ids(),
                field(99, 0, &varint(1)),
                field(98, 1, &[0; 8]),
                field(97, 5, &[0; 4]),
                field(96, 2, b"zz"),
            ]
            .concat(),
            Agreement::Same,
        ),
        (
            "duplicate keys: the last",
            [
                ids(),
                kv("k", &field(1, 2, b"one")),
                kv("j", &field(3, 0, &varint(4))),
                kv("k", &field(1, 2, b"two")),
            ]
            .concat(),
            Agreement::Same,
        ),
        (
            "a value's oneof twice: prost merges",
            [
                ids(),
                kv("k", &[field(1, 2, b"s"), field(3, 0, &varint(4))].concat()),
            ]
            .concat(),
            Agreement::LeftToProst,
        ),
        (
            "a key-value's value twice",
            [
                ids(),
                field(
                    9,
                    2,
                    &[
                        field(1, 2, b"k"),
                        field(2, 2, &field(1, 2, b"x")),
                        field(2, 2, &field(3, 0, &varint(1))),
                    ]
                    .concat(),
                ),
            ]
            .concat(),
            Agreement::LeftToProst,
        ),
        (
            "name as a varint",
            [ids(), field(5, 0, &varint(1))].concat(),
            Agreement::BothRefused,
        ),
        (
            "start as a varint",
            [ids(), field(7, 0, &varint(1))].concat(),
            Agreement::BothRefused,
        ),
        (
            "bad UTF-8 in trace_state",
            [ids(), field(3, 2, &[0xc3])].concat(),
            Agreement::BothRefused,
        ),
        (
            "bad UTF-8 in a link",
            [ids(), field(13, 2, &field(3, 2, &[0xff]))].concat(),
            Agreement::BothRefused,
        ),
        (
            "a group",
            [ids(), vec![0xa3, 0x06, 0xa4, 0x06]].concat(),
            Agreement::LeftToProst,
        ),
        (
            "flags as a varint",
            [ids(), field(16, 0, &varint(1))].concat(),
            Agreement::BothRefused,
        ),
        (
            "a zero parent is a root",
            [ids(), field(4, 2, &[0; 8])].concat(),
            Agreement::Same,
        ),
        (
            "bad ids: rejected, counted",
            field(1, 2, &[1; 3]),
            Agreement::Same,
        ),
    ];
    for (what, span, want) in cases {
        for first in [true, false] {
            let body = wrap(first, &span);
            assert_eq!(agree(&body), want, "{what} (resource first: {first})");
        }
    }
}

#[test]
fn a_resource_given_twice_is_merged() {
    let res = |k: &str, v: &str| {
        field(
            1,
            2,
            &field(
                1,
                2,
                &[
                    field(1, 2, k.as_bytes()),
                    field(2, 2, &field(1, 2, v.as_bytes())),
                ]
                .concat(),
            ),
        )
    };
    let scope = field(2, 2, &field(2, 2, &ids()));
    let rs = [
        res("service.name", "one"),
        scope,
        res("k8s.pod.uid", "uid-b"),
    ]
    .concat();
    let body = field(1, 2, &rs);
    assert_eq!(agree(&body), Agreement::Same);
    let meta = pods();
    let mut r = Resolver::new(&meta, None);
    let e = encode(&body, "c", Some(&mut r), 1).unwrap();
    assert_eq!(e.services, ["one"]);
    assert_eq!(e.pods[0].as_ref().unwrap().name, "b");
    let json = String::from_utf8(e.spans.iter().next().unwrap().to_vec()).unwrap();
    assert!(json.contains(r#""k8s.pod.name":"b""#), "{json}");
}

#[test]
fn deep_values_are_left_to_prost() {
    let mut v = AnyValue {
        value: Some(Value::IntValue(1)),
    };
    for _ in 0..60 {
        v = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values: vec![v] })),
        };
    }
    let kv = KeyValue {
        key: "deep".into(),
        value: Some(v),
        ..Default::default()
    };
    let body = wrap(true, &[ids(), field(9, 2, &kv.encode_to_vec())].concat());
    // 60 arrays are 120 messages: prost refuses them too
    assert_eq!(agree(&body), Agreement::BothRefused);
}

#[test]
fn batches_are_the_sinks_bytes() {
    let mut rng = StdRng::seed_from_u64(3);
    let req = request(&mut rng);
    let body = req.encode_to_vec();
    let fast = encode(&body, CLUSTER, None, 4).unwrap();
    let stored = convert::convert(req, CLUSTER).spans;
    assert!(stored.len() > 3);
    let slices = fast.spans.slices();
    let url: url::Url = "http://127.0.0.1:1/".parse().unwrap();
    let cased =
        crate::sink::cased::CasedSink::new(&url, "k", CLUSTER, std::time::Duration::from_secs(1))
            .unwrap();
    for z in [
        crate::config::Compression::None,
        crate::config::Compression::Gzip,
    ] {
        let want = cased.encode_spans(&stored, z).unwrap();
        let got = crate::sink::cased::encode_span_json(&slices, z).unwrap();
        assert_eq!(
            (got.body, got.items, got.encoding),
            (want.body, want.items, want.encoding)
        );
    }
    let want = crate::sink::stdout::encode_spans(&stored).unwrap();
    let got = crate::sink::stdout::encode_span_json(&slices);
    assert_eq!(got.body, want.body);
}
