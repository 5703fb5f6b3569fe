//! The OTLP receiver in process (`otlp::start` on loopback, a recording
//! span sink): the protocol's own example payloads, every bad input and its
//! status, and refusal when the span buffer is full, over HTTP and gRPC.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cased_agent::otlp::{self, OtlpConfig, OtlpHandles, SpanBufferFull, SpanSink};
use cased_agent::sink::wire::StoredSpan;
use cased_agent::telemetry::Telemetry;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/fixtures/otlp/opentelemetry-proto"
);

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Records what it takes; refuses everything while `full` is set.
#[derive(Default)]
struct Recorder {
    spans: Mutex<Vec<StoredSpan>>,
    full: AtomicBool,
}

impl SpanSink for Recorder {
    fn try_submit(&self, spans: Vec<StoredSpan>) -> Result<(), SpanBufferFull> {
        if self.full.load(Ordering::SeqCst) {
            return Err(SpanBufferFull);
        }
        self.spans.lock().unwrap().extend(spans);
        Ok(())
    }
}

struct Running {
    handles: OtlpHandles,
    sink: Arc<Recorder>,
    telemetry: Arc<Telemetry>,
    _stop: tokio_util::sync::DropGuard,
}

impl Running {
    fn url(&self) -> String {
        format!("http://{}/v1/traces", self.handles.http_addr)
    }

    fn spans(&self) -> Vec<StoredSpan> {
        self.sink.spans.lock().unwrap().clone()
    }

    /// `cased_agent_otlp_requests_total{transport,outcome}`.
    fn requests(&self, transport: &str, outcome: &str) -> u64 {
        let text = self.telemetry.encode();
        let want = format!(
            "cased_agent_otlp_requests_total{{transport=\"{transport}\",outcome=\"{outcome}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&want))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }
}

async fn start(cfg: OtlpConfig) -> Running {
    let sink = Arc::new(Recorder::default());
    let telemetry = Arc::new(Telemetry::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let handles = otlp::start(&cfg, sink.clone(), telemetry.clone(), stop.clone())
        .await
        .unwrap();
    Running {
        handles,
        sink,
        telemetry,
        _stop: stop.drop_guard(),
    }
}

pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// `n` spans of `service`, span i lasting (i+1) ms, with a string
/// attribute of `pad` bytes (zeros: compresses to almost nothing).
pub fn request(service: &str, n: usize, pad: usize, first_id: u64) -> ExportTraceServiceRequest {
    let spans = (0..n as u64)
        .map(|i| {
            let id = first_id + i;
            let start = 1_732_650_000_000_000_000 + i * 1_000_000;
            let mut attrs = vec![kv("http.method", Value::StringValue("GET".into()))];
            if pad > 0 {
                attrs.push(kv("pad", Value::StringValue("0".repeat(pad))));
            }
            Span {
                trace_id: [id.to_be_bytes(), id.to_be_bytes()].concat(),
                span_id: id.to_be_bytes().to_vec(),
                name: format!("op-{i}"),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + (i + 1) * 1_000_000,
                attributes: attrs,
                status: (i % 2 == 0).then(|| Status {
                    code: 2,
                    message: "e".into(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    ctype: Option<&str>,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, Option<String>, Vec<u8>) {
    let mut r = c.post(url).body(body);
    if let Some(t) = ctype {
        r = r.header("content-type", t);
    }
    if let Some(e) = encoding {
        r = r.header("content-encoding", e);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The protocol's example span, as the API must get it.
fn assert_example(s: &StoredSpan) {
    assert_eq!(s.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(s.span_id, "eee19b7ec3c1b174");
    assert_eq!(s.parent_span_id, "eee19b7ec3c1b173");
    assert_eq!(s.service_name, "my.service");
    assert_eq!(s.span_name, "I'm a server span");
    assert_eq!(s.span_kind, 2);
    assert_eq!(s.timestamp, 1_544_712_660_000);
    assert_eq!(s.duration_ns, 1_000_000_000);
    assert_eq!((s.status_code, s.status_message.as_str()), (0, ""));
    assert_eq!(s.attributes.len(), 1);
    assert_eq!(s.attributes.get("my.span.attr"), Some("some value"));
    assert_eq!(s.events, "[]");
    assert_eq!(
        (
            s.http_method.as_str(),
            s.http_status_code,
            s.http_url.as_str()
        ),
        ("", 0, "")
    );
    assert_eq!(s.cluster_id, "c-otlp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_takes_every_example_payload() {
    let r = start(OtlpConfig::local(0, 0, "c-otlp")).await;
    let c = http_client();
    let url = r.url();
    let pb = fixture("examples-f6bb641/trace.protobuf-bin");
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (JSON, None, fixture("examples-HEAD-ac2c4b5/trace.json")),
        (JSON, None, fixture("examples-ca6170e/trace.json")),
        (
            "application/json; charset=utf-8",
            Some("gzip"),
            gzip(&fixture("examples-ca6170e/trace.json")),
        ),
        (PB, None, pb.clone()),
        (PB, Some("gzip"), gzip(&pb)),
    ];
    for (ct, enc, body) in cases {
        let (status, rct, rbody) = post(&c, &url, Some(ct), enc, body).await;
        assert_eq!(
            status,
            200,
            "{ct} {enc:?}: {}",
            String::from_utf8_lossy(&rbody)
        );
        if ct == PB {
            assert_eq!(rct.as_deref(), Some(PB));
            // an empty ExportTraceServiceResponse
            let resp = ExportTraceServiceResponse::decode(&rbody[..]).unwrap();
            assert!(resp.partial_success.is_none());
        } else {
            assert_eq!(rct.as_deref(), Some(JSON));
            assert_eq!(rbody, b"{}");
        }
    }
    let spans = r.spans();
    assert_eq!(spans.len(), 5);
    spans.iter().for_each(assert_example);
    let m = r.handles.metrics.drain();
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].service.as_str(), m[0].span_count), ("my.service", 5));
    assert_eq!(m[0].error_rate, 0.0);
    assert!((m[0].avg_ms - 1000.0).abs() < 1e-9);
    assert!((m[0].p99_ms - 1000.0).abs() < 1e-9);
    assert_eq!(r.requests("http", "accepted"), 5);
}

/// A chunked request (no Content-Length) of `total` bytes, by hand.
fn chunked_post(addr: std::net::SocketAddr, total: usize) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let _ = s.write_all(head.as_bytes());
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        // the server may answer and close before the end: stop writing then
        if s.write_all(format!("{n:x}\r\n").as_bytes()).is_err()
            || s.write_all(&chunk[..n]).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
        sent += n;
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bad_inputs_get_their_status() {
    let r = start(OtlpConfig::local(0, 0, "c-otlp")).await;
    let c = http_client();
    let url = r.url();
    let pb = fixture("examples-f6bb641/trace.protobuf-bin");
    let limit = 10 * 1024 * 1024;
    // just over the limit as sent, and as inflated from ~10 KiB of gzip
    let big = request("big", 1, limit + 1, 1).encode_to_vec();
    assert!(big.len() > limit);
    let bomb = gzip(&big);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    // (what, content type, content encoding, body, status)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            "not protobuf",
            PB,
            None,
            b"\xff\xff\xff\xff not protobuf".to_vec(),
            400,
        ),
        (
            "truncated protobuf",
            PB,
            None,
            pb[..pb.len() - 9].to_vec(),
            400,
        ),
        ("not JSON", JSON, None, b"hello".to_vec(), 400),
        (
            "JSON, not OTLP",
            JSON,
            None,
            br#"{"hello":"world"}"#.to_vec(),
            400,
        ),
        (
            "OTLP metrics, not traces",
            JSON,
            None,
            fixture("examples-HEAD-ac2c4b5/metrics.json"),
            400,
        ),
        (
            "OTLP logs, not traces",
            JSON,
            None,
            fixture("examples-HEAD-ac2c4b5/logs.json"),
            400,
        ),
        ("gzip header, not gzip", PB, Some("gzip"), pb.clone(), 400),
        ("text/plain", "text/plain", None, pb.clone(), 415),
        (
            "form",
            "application/x-www-form-urlencoded",
            None,
            b"a=b".to_vec(),
            415,
        ),
        ("brotli", PB, Some("br"), pb.clone(), 415),
        ("over the limit", PB, None, big, 413),
        ("gzip bomb", PB, Some("gzip"), bomb, 413),
    ];
    for (what, ct, enc, body, want) in cases {
        let (status, rct, rbody) = post(&c, &url, Some(ct), enc, body).await;
        assert_eq!(status, want, "{what}: {}", String::from_utf8_lossy(&rbody));
        // 400 and 413 carry a google.rpc.Status in the request's encoding
        if want != 415 {
            if ct == PB {
                assert_eq!(rct.as_deref(), Some(PB), "{what}");
                let st = otlp::decode::RpcStatus::decode(&rbody[..]).unwrap();
                assert_eq!(st.code, 3, "{what}");
                assert!(!st.message.is_empty(), "{what}");
            } else {
                let v: serde_json::Value = serde_json::from_slice(&rbody).unwrap();
                assert_eq!(v["code"], 3, "{what}");
                assert!(v["message"].as_str().unwrap().len() > 5, "{what}");
            }
        }
    }
    // no content type at all
    let (status, _, _) = post(&c, &url, None, None, pb.clone()).await;
    assert_eq!(status, 415);
    // over the limit without a Content-Length (chunked)
    let addr = r.handles.http_addr;
    let status = tokio::task::spawn_blocking(move || chunked_post(addr, limit + 4096))
        .await
        .unwrap();
    assert_eq!(status, 413);
    // other methods
    for m in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let resp = c.request(m.clone(), &url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{m}");
        assert_eq!(resp.headers()["allow"], "POST", "{m}");
    }
    // other paths (`/v1/metrics` is the metrics receiver's: tests/it/hostile_metrics.rs)
    let other = url.replace("/v1/traces", "/v1/profiles");
    assert_eq!(post(&c, &other, Some(PB), None, pb).await.0, 404);

    assert!(r.spans().is_empty(), "nothing bad reached the sink");
    assert!(r.handles.metrics.drain().is_empty());
    assert_eq!(r.requests("http", "malformed"), 7);
    assert_eq!(r.requests("http", "unsupported"), 4);
    assert_eq!(r.requests("http", "too_large"), 3);
    assert_eq!(r.requests("http", "accepted"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refuses_with_retry_after_when_full_and_counts_nothing() {
    let mut cfg = OtlpConfig::local(0, 0, "c-otlp");
    cfg.retry_after = Duration::from_secs(3);
    let r = start(cfg).await;
    let c = http_client();
    let body = request("svc", 10, 0, 1).encode_to_vec();
    r.sink.full.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let resp = c
            .post(r.url())
            .header("content-type", PB)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers()["retry-after"], "3");
        let st = otlp::decode::RpcStatus::decode(&resp.bytes().await.unwrap()[..]).unwrap();
        assert_eq!(st.code, 8);
    }
    assert!(
        r.handles.metrics.drain().is_empty(),
        "refused spans are not counted"
    );
    r.sink.full.store(false, Ordering::SeqCst);
    let (status, _, _) = post(&c, &r.url(), Some(PB), None, body).await;
    assert_eq!(status, 200);
    let m = r.handles.metrics.drain();
    assert_eq!((m[0].span_count, m[0].error_rate), (10, 50.0));
    assert_eq!(r.spans().len(), 10);
    assert_eq!(r.requests("http", "refused"), 2);
    assert!(
        r.telemetry
            .encode()
            .contains("cased_agent_spans_refused_total 20\n")
    );
    assert!(
        r.telemetry
            .encode()
            .contains("cased_agent_spans_received_total 10\n")
    );
}

async fn grpc_client(r: &Running) -> TraceServiceClient<tonic::transport::Channel> {
    let ep = format!("http://{}", r.handles.grpc_addr);
    TraceServiceClient::connect(ep)
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_limits_and_refusal() {
    let r = start(OtlpConfig::local(0, 0, "c-otlp")).await;
    // the protocol's example, plain and gzip
    let example =
        ExportTraceServiceRequest::decode(&fixture("examples-f6bb641/trace.protobuf-bin")[..])
            .unwrap();
    let mut plain = grpc_client(&r).await;
    plain.export(example.clone()).await.unwrap();
    let mut gz = grpc_client(&r)
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    gz.export(example).await.unwrap();
    let spans = r.spans();
    assert_eq!(spans.len(), 2);
    spans.iter().for_each(assert_example);

    // over the limit as sent, and as inflated (a gzip bomb)
    let big = request("big", 1, 10 * 1024 * 1024 + 1, 1);
    let e = plain.export(big.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.metadata().get_bin("google.rpc.retryinfo-bin").is_none());
    let e = gz.export(big).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.metadata().get_bin("google.rpc.retryinfo-bin").is_none());

    // not protobuf: a gRPC frame of garbage, by hand over HTTP/2 (reqwest
    // needs a crypto provider even for plain HTTP)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let garbage = b"\xff\xff\xff\xff\xff\xff";
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(garbage.len() as u32).to_be_bytes());
    frame.extend_from_slice(garbage);
    let resp = h2
        .post(format!(
            "http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            r.handles.grpc_addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["grpc-status"], "3", "{:?}", resp.headers());

    // full: RESOURCE_EXHAUSTED with RetryInfo, nothing taken
    r.sink.full.store(true, Ordering::SeqCst);
    let e = plain.export(request("svc", 4, 0, 100)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    let info = e.metadata().get_bin("google.rpc.retryinfo-bin").unwrap();
    let info = otlp::decode::RetryInfo::decode(&info.to_bytes().unwrap()[..]).unwrap();
    assert_eq!(info.retry_delay.unwrap().seconds, 1);
    let details = otlp::decode::RpcStatus::decode(e.details()).unwrap();
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    r.sink.full.store(false, Ordering::SeqCst);
    plain.export(request("svc", 4, 0, 100)).await.unwrap();

    assert_eq!(r.spans().len(), 6);
    let m = r.handles.metrics.drain();
    let svc = m.iter().find(|s| s.service == "svc").unwrap();
    assert_eq!(svc.span_count, 4);
    assert!((svc.avg_ms - 2.5).abs() < 1e-9);
    assert_eq!(r.requests("grpc", "accepted"), 3);
    assert_eq!(r.requests("grpc", "refused"), 1);
}
