//! [`Ingest`] on both paths: a protobuf body through the fast path and the
//! same request through prost give the sink the same JSON, the same
//! answer, counters and per-service aggregate; what the fast path leaves
//! to prost still gets prost's decision.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::*;

/// Which method took a submission, and its spans as JSON.
type Submission = (&'static str, Vec<Vec<u8>>);

#[derive(Default)]
struct Both {
    got: Mutex<Vec<Submission>>,
}

impl SpanSink for Both {
    fn try_submit(&self, spans: Vec<StoredSpan>) -> Result<(), SpanBufferFull> {
        let json = spans
            .iter()
            .map(|s| serde_json::to_vec(s).unwrap())
            .collect();
        self.got.lock().unwrap().push(("stored", json));
        Ok(())
    }
    fn try_submit_json(&self, spans: JsonSpans) -> Result<(), SpanBufferFull> {
        let json = spans.iter().map(<[u8]>::to_vec).collect();
        self.got.lock().unwrap().push(("json", json));
        Ok(())
    }
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// Two services; 30 spans, one in ten an error, one with a bad trace id.
fn request() -> ExportTraceServiceRequest {
    let rs = |svc: &str, first: u64| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", Value::StringValue(svc.into()))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: (first..first + 15)
                .map(|i| Span {
                    trace_id: if i == 3 {
                        vec![1]
                    } else {
                        [[1; 8], i.to_be_bytes()].concat()
                    },
                    span_id: (i + 1).to_be_bytes().to_vec(),
                    name: format!("GET /{i}"),
                    kind: 2,
                    start_time_unix_nano: 1_000_000_000 * i,
                    end_time_unix_nano: 1_000_000_000 * i + 1_000_000 * (i + 1),
                    attributes: vec![
                        kv("http.request.method", Value::StringValue("GET".into())),
                        kv("http.response.status_code", Value::IntValue(200)),
                    ],
                    status: (i % 10 == 0).then(|| Status {
                        code: 2,
                        message: "boom".into(),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![rs("cart", 0), rs("pay", 100)],
    }
}

fn ingest() -> (Ingest, Arc<Both>, Arc<Telemetry>) {
    let sink = Arc::new(Both::default());
    let telemetry = Arc::new(Telemetry::new());
    let cfg = OtlpConfig::local(0, 0, "prod");
    (
        Ingest::new(&cfg, sink.clone(), telemetry.clone()),
        sink,
        telemetry,
    )
}

fn counter(t: &Telemetry, name: &str) -> String {
    let text = t.encode();
    let line = text.lines().find(|l| l.starts_with(name));
    line.unwrap_or_default().to_string()
}

#[test]
fn both_paths_give_the_sink_and_the_aggregate_the_same() {
    let body = request().encode_to_vec();
    let (fast, fast_sink, fast_t) = ingest();
    let (slow, slow_sink, slow_t) = ingest();
    let a = fast
        .export_body(&body, decode::Encoding::Protobuf, None, 30)
        .unwrap();
    let b = slow.export(request()).unwrap();
    assert_eq!(a, b);
    assert_eq!((a.spans, a.rejected), (29, 1));
    let (fast_got, slow_got) = (fast_sink.got.lock().unwrap(), slow_sink.got.lock().unwrap());
    assert_eq!(fast_got[0].0, "json");
    assert_eq!(slow_got[0].0, "stored");
    assert_eq!(fast_got[0].1, slow_got[0].1);
    let summaries = fast.metrics().drain();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries.iter().map(|s| s.span_count).sum::<u64>(), 29);
    assert_eq!(summaries, slow.metrics().drain());
    for (name, want) in [
        ("cased_agent_spans_received_total ", "29"),
        ("cased_agent_spans_refused_total ", "1"),
    ] {
        let got = counter(&fast_t, name);
        assert_eq!(got, format!("{name}{want}"));
        assert_eq!(got, counter(&slow_t, name));
    }
}

#[test]
fn what_the_fast_path_leaves_gets_prosts_decision() {
    let (ingest, sink, _) = ingest();
    // one span whose attribute value sets its oneof twice (prost merges)
    let span = [
        &[0x0a, 16][..],
        &[7; 16],
        &[0x12, 8],
        &[9; 8],
        &[0x4a, 9, 0x0a, 1, b'k', 0x12, 4, 0x0a, 0, 0x18, 4],
    ]
    .concat();
    let scope = [&[0x12, span.len() as u8][..], &span].concat();
    let rs = [&[0x12, scope.len() as u8][..], &scope].concat();
    let body = [&[0x0a, rs.len() as u8][..], &rs].concat();
    let a = ingest
        .export_body(&body, decode::Encoding::Protobuf, None, 30)
        .unwrap();
    assert_eq!(a.spans, 1);
    let got = sink.got.lock().unwrap();
    assert_eq!(got[0].0, "stored");
    let json = String::from_utf8(got[0].1[0].clone()).unwrap();
    assert!(json.contains(r#""attributes":{"k":"4"}"#), "{json}");
    drop(got);
    // malformed: prost's refusal and message
    let e = ingest
        .export_body(
            &body[..body.len() - 2],
            decode::Encoding::Protobuf,
            None,
            30,
        )
        .unwrap_err();
    assert!(
        matches!(&e, Refusal::Malformed(m) if m.starts_with("invalid protobuf")),
        "{e:?}"
    );
}
