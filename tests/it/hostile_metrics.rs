//! Hostile input on the OTLP metrics path, against the binary: millions of
//! empty data points and huge packed bucket arrays stay within the RSS
//! bound (refused before decoding), malformed bodies are 400, invalid
//! points a partial success, logs a clear 404 / `UNIMPLEMENTED`, and
//! half-sent gRPC metrics messages held in the shared memory budget.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, exponential_histogram_data_point::Buckets, metric::Data,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::hostile::{RSS_BOUND, growth, grpc_stall_at, reset_peak, start};

const PB: &str = "application/x-protobuf";

/// POST to `path` over a fresh connection: (status, body).
fn post(port: u16, path: &str, ctype: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |p| p + 4);
    (status, buf[split..].to_vec())
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("hostile".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn point(v: f64) -> NumberDataPoint {
    NumberDataPoint {
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

/// One exponential histogram point whose packed bucket counts are `n`
/// one-byte varints (8 bytes each decoded).
fn packed_buckets(n: usize) -> ExportMetricsServiceRequest {
    let p = ExponentialHistogramDataPoint {
        count: n as u64,
        positive: Some(Buckets {
            offset: 0,
            bucket_counts: vec![1; n],
        }),
        ..Default::default()
    };
    request(vec![Metric {
        name: "e".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![p],
            aggregation_temporality: 1,
        })),
        ..Default::default()
    }])
}

async fn grpc(port: u16) -> MetricsServiceClient<tonic::transport::Channel> {
    MetricsServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_data_points_and_huge_buckets_are_bounded() {
    let a = start("2s");
    let pid = a.child.id();
    let small = request(vec![gauge("g", vec![point(1.0)])]).encode_to_vec();
    assert_eq!(post(a.otlp, "/v1/metrics", PB, &small).0, 200);
    // 5,000,000 empty data points: 2 bytes each, refused by count
    let empty = request(vec![gauge(
        "g",
        vec![NumberDataPoint::default(); 5_000_000],
    )]);
    let body = empty.encode_to_vec();
    let before = reset_peak(pid);
    let (status, text) = post(a.otlp, "/v1/metrics", PB, &body);
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&text));
    let g = growth(pid, before);
    assert!(g <= RSS_BOUND, "HTTP: peak RSS grew {} MiB", g >> 20);
    // 60,000 empty points (under the count limit): decoded within the bound
    let before = reset_peak(pid);
    let many = request(vec![gauge("g", vec![NumberDataPoint::default(); 60_000])]);
    let (status, _) = post(a.otlp, "/v1/metrics", PB, &many.encode_to_vec());
    assert!(status == 200 || status == 413, "{status}");
    let g = growth(pid, before);
    assert!(
        g <= RSS_BOUND,
        "60,000 points: peak RSS grew {} MiB",
        g >> 20
    );
    // 8,000,000 one-byte bucket counts: 64 MB decoded, refused by the bound
    let before = reset_peak(pid);
    let (status, _) = post(
        a.otlp,
        "/v1/metrics",
        PB,
        &packed_buckets(8_000_000).encode_to_vec(),
    );
    assert_eq!(status, 413);
    let g = growth(pid, before);
    assert!(
        g <= RSS_BOUND,
        "packed buckets: peak RSS grew {} MiB",
        g >> 20
    );
    // the same over gRPC, smaller (a 10 MB message takes over the 10 s
    // request timeout to arrive in a debug build on a loaded machine)
    drop(empty);
    let before = reset_peak(pid);
    let mut c = grpc(a.grpc).await;
    let empty = request(vec![gauge(
        "g",
        vec![NumberDataPoint::default(); 1_000_000],
    )]);
    let e = c.export(empty).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    let e = c.export(packed_buckets(2_000_000)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    let g = growth(pid, before);
    assert!(g <= RSS_BOUND, "gRPC: peak RSS grew {} MiB", g >> 20);
    // OTLP/JSON: `{}` a data point
    let before = reset_peak(pid);
    let json = format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"g","gauge":{{"dataPoints":[{}{{}}]}}}}]}}]}}]}}"#,
        "{},".repeat(3_000_000)
    );
    let (status, _) = post(a.otlp, "/v1/metrics", "application/json", json.as_bytes());
    assert_eq!(status, 413);
    let g = growth(pid, before);
    assert!(g <= RSS_BOUND, "JSON: peak RSS grew {} MiB", g >> 20);
    // still serving
    assert_eq!(post(a.otlp, "/v1/metrics", PB, &small).0, 200);
}

const METRICS_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// Half-sent gRPC metrics messages hold the one memory budget while they
/// arrive, as trace messages do: with all of it held, a further metrics
/// or trace request is refused as overload (retryable) at once, and both
/// are served again once the stalled messages are cut (10 s timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_metrics_messages_hold_the_budget() {
    const MIB: usize = 1 << 20;
    let a = start("2s");
    let pid = a.child.id();
    let small = request(vec![gauge("g", vec![point(1.0)])]);
    grpc(a.grpc).await.export(small.clone()).await.unwrap();
    let before = reset_peak(pid);
    // 24 MiB budget: three messages of 8 MiB (9 MiB declared) leave 64 bytes
    let mut stalled = Vec::new();
    for sent in [8 * MIB - 5, 8 * MIB - 5, 8 * MIB - 5 - 64] {
        stalled.push(grpc_stall_at(a.grpc, METRICS_EXPORT, 9 * MIB as u32, sent).await);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = grpc(a.grpc).await.export(small.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.metadata().get_bin("google.rpc.retryinfo-bin").is_some(),
        "not retryable: {e:?}"
    );
    let port = a.otlp;
    let body = small.encode_to_vec();
    let (status, _) = tokio::task::spawn_blocking(move || post(port, "/v1/traces", PB, &body))
        .await
        .unwrap();
    assert_eq!(status, 429, "a trace request beside a full budget");
    let g = growth(pid, before);
    assert!(
        g <= RSS_BOUND,
        "stalled messages: peak RSS grew {} MiB",
        g >> 20
    );
    for s in stalled {
        let status = tokio::time::timeout(Duration::from_secs(15), s)
            .await
            .expect("a stalled metrics message is answered")
            .unwrap();
        assert_ne!(status, "0", "a stalled message answered OK");
    }
    let t = std::time::Instant::now();
    while let Err(e) = grpc(a.grpc).await.export(small.clone()).await {
        assert!(t.elapsed() < Duration::from_secs(5), "still refused: {e:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_invalid_and_logs() {
    let a = start("2s");
    for (ctype, body) in [
        (PB, &b"\x0a\x05ab"[..]),
        (PB, &[0xff; 16][..]),
        ("application/json", &b"{\"hello\": 1}"[..]),
        (
            "application/json",
            &b"{\"resourceMetrics\": [{\"scopeMetrics\": 3}]}"[..],
        ),
        ("application/json", &b"[[[["[..]),
    ] {
        let (status, text) = post(a.otlp, "/v1/metrics", ctype, body);
        assert_eq!(status, 400, "{body:?}: {}", String::from_utf8_lossy(&text));
    }
    assert_eq!(post(a.otlp, "/v1/metrics", "text/plain", b"x").0, 415);
    // invalid points are left out and reported; the valid one is taken
    let req = request(vec![
        gauge("ok", vec![point(1.0)]),
        gauge("", vec![point(2.0), point(3.0)]),
        gauge("nan", vec![point(f64::NAN)]),
    ]);
    let (status, body) = post(a.otlp, "/v1/metrics", PB, &req.encode_to_vec());
    assert_eq!(status, 200);
    let resp = ExportMetricsServiceResponse::decode(&body[..]).unwrap();
    let ps = resp.partial_success.unwrap();
    assert_eq!(ps.rejected_data_points, 3);
    assert!(
        ps.error_message.contains("without a name"),
        "{}",
        ps.error_message
    );
    let mut c = grpc(a.grpc).await;
    let resp = c.export(req).await.unwrap().into_inner();
    assert_eq!(resp.partial_success.unwrap().rejected_data_points, 3);
    // logs: 404 over HTTP, UNIMPLEMENTED over gRPC, naming what is taken
    let (status, body) = post(a.otlp, "/v1/logs", PB, b"\x0a\x00");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 404);
    assert!(
        text.contains("/v1/metrics") && text.contains("/v1/traces"),
        "{text}"
    );
    let st = logs_call(a.grpc).await;
    assert_eq!(st.code(), tonic::Code::Unimplemented);
    assert!(st.message().contains("MetricsService"), "{}", st.message());
}

/// `LogsService/Export` with an empty message.
async fn logs_call(port: u16) -> tonic::Status {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    );
    g.unary::<_, ExportMetricsServiceResponse, _>(
        tonic::Request::new(ExportMetricsServiceRequest::default()),
        path,
        Codec,
    )
    .await
    .unwrap_err()
}

/// A prost codec for the test's one call.
#[derive(Default)]
struct Codec;
struct Enc;
struct Dec;

impl tonic::codec::Codec for Codec {
    type Encode = ExportMetricsServiceRequest;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = Enc;
    type Decoder = Dec;
    fn encoder(&mut self) -> Enc {
        Enc
    }
    fn decoder(&mut self) -> Dec {
        Dec
    }
}

impl tonic::codec::Encoder for Enc {
    type Item = ExportMetricsServiceRequest;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Self::Item,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Decoder for Dec {
    type Item = ExportMetricsServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, tonic::Status> {
        Message::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}
