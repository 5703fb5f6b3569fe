//! Hostile but small input on the OTLP and health ports, against the binary
//! (issue 11): memory, time and liveness stay bounded whatever peers send.
//! RSS from `/proc/<pid>/status` (peak `VmHWM` against `VmRSS` before).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rand::{Rng, SeedableRng};

use crate::cli::{agent, free_port, http_get, unsafe_kill};

/// The issue's bound on peak RSS growth, whatever the body.
pub(crate) const RSS_BOUND: u64 = 32 << 20;
const PB: &str = "application/x-protobuf";

pub(crate) struct Agent {
    pub(crate) child: Child,
    pub(crate) otlp: u16,
    pub(crate) grpc: u16,
    pub(crate) health: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start(grace: &str) -> Agent {
    let (otlp, grpc, health) = (free_port(), free_port(), free_port());
    let child = agent()
        .args(["--sink", "stdout", "--cluster-id", "c-hostile"])
        .args(["--interval", "1s", "--shutdown-grace", grace])
        .args(["--enable-otel", "--otel-port", &otlp.to_string()])
        .args(["--otel-grpc-port", &grpc.to_string()])
        .args(["--health-port", &health.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let a = Agent {
        child,
        otlp,
        grpc,
        health,
    };
    let t = Instant::now();
    while http_get(a.health, "/healthz").is_none()
        || TcpStream::connect(("127.0.0.1", otlp)).is_err()
    {
        assert!(t.elapsed() < Duration::from_secs(20), "agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    a
}

/// `VmRSS` or `VmHWM` of `pid`, in bytes.
fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Reset `VmHWM` to the current RSS (Linux ≥ 4.0: write 5 to clear_refs).
pub(crate) fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    status_kb(pid, "VmRSS:")
}

pub(crate) fn growth(pid: u32, before: u64) -> u64 {
    status_kb(pid, "VmHWM:").saturating_sub(before)
}

/// POST over a fresh connection: (status, head, body).
fn post(port: u16, ctype: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // the agent may answer before reading it all (413): ignore the pipe
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
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let body = buf.get(split + 4..).unwrap_or_default().to_vec();
    (status, head, body)
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn resource(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn valid_span(i: u64) -> Span {
    Span {
        trace_id: [[1u8; 8], (i + 1).to_be_bytes()].concat(),
        span_id: (i + 1).to_be_bytes().to_vec(),
        name: format!("op-{i}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_001_000_000,
        ..Default::default()
    }
}

fn small_valid() -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![resource("ok", vec![valid_span(1)])],
    }
    .encode_to_vec()
}

/// `n` empty spans: 2 bytes each on the wire.
fn empty_spans(n: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![resource("e", vec![Span::default(); n])],
    }
}

async fn grpc(port: u16) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_spans_cannot_blow_up_memory() {
    let a = start("2s");
    let pid = a.child.id();
    // warm: the first request allocates the runtime's buffers
    assert_eq!(post(a.otlp, PB, &small_valid()).0, 200);
    let before = reset_peak(pid);
    let body = empty_spans(350_000).encode_to_vec();
    assert!(body.len() < 800_000, "{}", body.len());
    let (status, _, _) = post(a.otlp, PB, &body);
    assert!(status == 200 || status == 413, "{status}");
    let g = growth(pid, before);
    assert!(g <= RSS_BOUND, "HTTP: peak RSS grew {} MiB", g >> 20);

    // the same over gRPC
    let before = reset_peak(pid);
    let mut c = grpc(a.grpc).await;
    let r = c.export(empty_spans(350_000)).await;
    if let Err(e) = &r {
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    }
    let g = growth(pid, before);
    assert!(g <= RSS_BOUND, "gRPC: peak RSS grew {} MiB", g >> 20);

    // OTLP/JSON: `{}` a span
    let before = reset_peak(pid);
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}{{}}]}}]}}]}}"#,
        "{},".repeat(230_000)
    );
    let (status, _, _) = post(a.otlp, "application/json", json.as_bytes());
    assert!(status == 200 || status == 413, "{status}");
    let g = growth(pid, before);
    assert!(g <= RSS_BOUND, "JSON: peak RSS grew {} MiB", g >> 20);

    // up to the body limit
    let before = reset_peak(pid);
    let (status, _, _) = post(a.otlp, PB, &empty_spans(5_000_000).encode_to_vec());
    assert!(status == 200 || status == 413, "{status}");
    let g = growth(pid, before);
    assert!(g <= RSS_BOUND, "10 MiB: peak RSS grew {} MiB", g >> 20);
    // and the agent still takes valid spans
    assert_eq!(post(a.otlp, PB, &small_valid()).0, 200);
}

/// Random bodies (valid requests of random shapes, and their bytes
/// mutated) never grow RSS past the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_stay_within_the_memory_bound() {
    let a = start("2s");
    let pid = a.child.id();
    assert_eq!(post(a.otlp, PB, &small_valid()).0, 200);
    let before = reset_peak(pid);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0711);
    for round in 0..30 {
        let spans = rng.random_range(0..20_000);
        let attrs = rng.random_range(0..40);
        let span = Span {
            attributes: (0..attrs).map(|i| kv(&format!("k{i}"), "")).collect(),
            ..valid_span(round)
        };
        let resources = (0..rng.random_range(1..50))
            .map(|r| resource(&format!("svc-{r}"), vec![span.clone(); spans / 50 + 1]))
            .collect();
        let mut body = ExportTraceServiceRequest {
            resource_spans: resources,
        }
        .encode_to_vec();
        body.truncate(10 << 20);
        for _ in 0..rng.random_range(0..4) {
            let i = rng.random_range(0..body.len());
            body[i] = rng.random();
        }
        let (status, _, _) = post(a.otlp, PB, &body);
        assert!(
            [200, 400, 413, 429, 503].contains(&status),
            "round {round}: {status}"
        );
        let g = growth(pid, before);
        assert!(
            g <= RSS_BOUND,
            "round {round} ({} bytes): peak RSS grew {} MiB",
            body.len(),
            g >> 20
        );
    }
}

/// Poll `/healthz` until `done`; the slowest answer.
fn probe_health(port: u16, done: &std::sync::atomic::AtomicBool) -> Duration {
    let mut worst = Duration::ZERO;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    worst
}

#[test]
fn many_services_are_linear_and_health_answers_meanwhile() {
    let a = start("2s");
    // 40,000 resources, a distinct service.name each, no span: ~1.3 MB
    let body = ExportTraceServiceRequest {
        resource_spans: (0..40_000)
            .map(|i| resource(&format!("service-{i:05}"), vec![]))
            .collect(),
    }
    .encode_to_vec();
    assert!(body.len() > 1_000_000, "{}", body.len());
    let with_spans = ExportTraceServiceRequest {
        resource_spans: (0..40_000)
            .map(|i| resource(&format!("service-{i:05}"), vec![valid_span(i)]))
            .collect(),
    }
    .encode_to_vec();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let probe = s.spawn(|| probe_health(a.health, &done));
        std::thread::sleep(Duration::from_millis(100));
        for (what, b) in [("no spans", &body), ("a span each", &with_spans)] {
            let t = Instant::now();
            let (status, _, _) = post(a.otlp, PB, b);
            let took = t.elapsed();
            assert!([200, 413].contains(&status), "{what}: {status}");
            assert!(
                took <= Duration::from_secs(1),
                "{what}: answered in {took:?}"
            );
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let worst = probe.join().unwrap();
        assert!(
            worst <= Duration::from_millis(100),
            "/healthz took {worst:?} meanwhile"
        );
    });
}

/// A connection that sent its headers and 2 of 1,000 declared body bytes.
fn stall(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\nContent-Length: 1000\r\n\r\n\x0a\x00"
    )
    .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_nothing_and_are_cut() {
    let a = start("2s");
    let stalled: Vec<TcpStream> = (0..8).map(|_| stall(a.otlp)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let port = a.otlp;
    let (status, _, _) = tokio::task::spawn_blocking(move || post(port, PB, &small_valid()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        t.elapsed() <= Duration::from_secs(1),
        "HTTP: {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let req = ExportTraceServiceRequest::decode(&small_valid()[..]).unwrap();
    let mut c = grpc(a.grpc).await;
    tokio::time::timeout(Duration::from_secs(5), c.export(req))
        .await
        .expect("gRPC answered")
        .unwrap();
    assert!(
        t.elapsed() <= Duration::from_secs(1),
        "gRPC: {:?}",
        t.elapsed()
    );
    // each stalled body is answered (408) or closed within the read timeout
    let t = Instant::now();
    let cut = tokio::task::spawn_blocking(move || {
        stalled
            .into_iter()
            .map(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).to_string()
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let took = t.elapsed();
    assert!(took <= Duration::from_secs(13), "cut after {took:?}");
    for c in cut {
        assert!(c.is_empty() || c.starts_with("HTTP/1.1 408"), "{c}");
    }
}

/// The agent's open sockets.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

#[test]
fn half_sent_headers_are_capped_and_cut() {
    let a = start("2s");
    let pid = a.child.id();
    let before = reset_peak(pid);
    // past the cap and the kernel's backlog, connects wait for a SYN retry:
    // those are left out
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], a.health));
    let held: Vec<TcpStream> = (0..2000)
        .filter_map(|_| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .ok()?;
            Some(s)
        })
        .collect();
    assert!(held.len() >= 1000, "{} connections", held.len());
    std::thread::sleep(Duration::from_secs(1));
    let open = sockets(pid);
    // the cap (64 on the health port) plus the listeners and clients
    assert!(open <= 100, "{open} sockets held");
    let g = growth(pid, before);
    assert!(g <= 16 << 20, "RSS grew {} MiB", g >> 20);
    // the first ones are cut after the header read timeout (5 s)
    let mut first = held.into_iter();
    let mut s = first.next().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let _ = n;
    assert!(
        t.elapsed() <= Duration::from_secs(8),
        "cut after {:?}",
        t.elapsed()
    );
    // once the peers are gone, the port answers again
    drop(first);
    let t = Instant::now();
    while http_get(a.health, "/healthz").map(|r| r.0) != Some(200) {
        assert!(t.elapsed() < Duration::from_secs(10), "health port stuck");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_exits_within_grace_whatever_peers_do() {
    let a = start("2s");
    // half-sent requests on every port, and a stalled body
    let mut h = TcpStream::connect(("127.0.0.1", a.health)).unwrap();
    h.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let _body = stall(a.otlp);
    let mut o = TcpStream::connect(("127.0.0.1", a.otlp)).unwrap();
    o.write_all(b"POST /v1/traces HTTP/1.1\r\n").unwrap();
    let _g = TcpStream::connect(("127.0.0.1", a.grpc)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut a = a;
    let t = Instant::now();
    unsafe_kill(a.child.id(), 15);
    loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            t.elapsed() <= Duration::from_millis(3500),
            "still running {:?} after SIGTERM with --shutdown-grace 2s",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_are_a_partial_success() {
    let a = start("2s");
    let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"ab","spanId":"0102030405060708","name":"bad"},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"0000000000000000","name":"zero"},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"good"}
    ]}]}]}"#;
    let port = a.otlp;
    let (status, head, body) =
        tokio::task::spawn_blocking(move || post(port, "application/json", json))
            .await
            .unwrap();
    assert_eq!(status, 200, "{head}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let p = &v["partialSuccess"];
    assert_eq!(p["rejectedSpans"].to_string().trim_matches('"'), "2", "{v}");
    assert!(
        p["errorMessage"].as_str().unwrap().contains("trace id"),
        "{v}"
    );
    // over gRPC
    let mut req = ExportTraceServiceRequest::decode(&small_valid()[..]).unwrap();
    let mut bad = valid_span(9);
    bad.trace_id = vec![0; 16];
    req.resource_spans[0].scope_spans[0].spans.push(bad);
    let mut c = grpc(a.grpc).await;
    let resp: ExportTraceServiceResponse = c.export(req).await.unwrap().into_inner();
    let p = resp.partial_success.unwrap();
    assert_eq!(p.rejected_spans, 1);
    assert!(p.error_message.contains("trace id"), "{}", p.error_message);
}

/// A connection that sent its headers and `sent` of `declared` body bytes,
/// then stalls (bytes a pod's client may hold in the agent for the body
/// timeout).
fn stall_big(port: u16, declared: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PB}\r\nContent-Length: {declared}\r\n\r\n"
    )
    .unwrap();
    s.write_all(&vec![0x0a; sent]).unwrap();
    s
}

/// A gRPC `Export` whose message declares `declared` bytes and sends
/// `sent`, then stalls; resolves to the `grpc-status` it is answered with.
async fn grpc_stall(port: u16, declared: u32, sent: usize) -> tokio::task::JoinHandle<String> {
    let path = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    grpc_stall_at(port, path, declared, sent).await
}

/// A gRPC message to `path` declaring `declared` bytes of which `sent`
/// are sent, the stream left open; the task returns its `grpc-status`.
pub(crate) async fn grpc_stall_at(
    port: u16,
    path: &str,
    declared: u32,
    sent: usize,
) -> tokio::task::JoinHandle<String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = tonic::codegen::http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut stream) = client.send_request(req, false).unwrap();
    let mut msg = vec![0u8];
    msg.extend(declared.to_be_bytes());
    msg.resize(5 + sent, 0x0a);
    stream.send_data(msg.into(), false).unwrap();
    tokio::spawn(async move {
        let _keep = (client, stream);
        let resp = resp.await.unwrap();
        let (parts, mut body) = resp.into_parts();
        if let Some(s) = parts.headers.get("grpc-status") {
            return s.to_str().unwrap().to_string();
        }
        while body.data().await.is_some() {}
        let t = body.trailers().await.ok().flatten().unwrap_or_default();
        t.get("grpc-status")
            .map(|s| s.to_str().unwrap().to_string())
            .unwrap_or_default()
    })
}

/// The memory budget is taken by bodies still arriving (HTTP bodies and
/// gRPC messages alike, one budget for both): a further request is refused
/// as overload — 429 with `Retry-After`, `RESOURCE_EXHAUSTED` with a retry
/// delay — at once, and served again once the stalled ones are cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_held_by_stalled_bodies_is_429_then_recovers() {
    const MIB: usize = 1 << 20;
    let a = start("2s");
    let pid = a.child.id();
    assert_eq!(post(a.otlp, PB, &small_valid()).0, 200);
    let before = reset_peak(pid);
    // 24 MiB budget: two 8 MiB HTTP bodies and 8 MiB of a gRPC message,
    // each of 9 MiB declared, leave 64 bytes free
    let port = a.otlp;
    let stalled = tokio::task::spawn_blocking(move || {
        vec![
            stall_big(port, 9 * MIB, 8 * MIB),
            stall_big(port, 9 * MIB, 8 * MIB),
        ]
    })
    .await
    .unwrap();
    let grpc_stalled = grpc_stall(a.grpc, 9 * MIB as u32, 8 * MIB - 5 - 64).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    let (status, head, _) = tokio::task::spawn_blocking(move || post(port, PB, &small_valid()))
        .await
        .unwrap();
    assert_eq!(status, 429, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert!(t.elapsed() <= Duration::from_secs(2), "{:?}", t.elapsed());
    let req = ExportTraceServiceRequest::decode(&small_valid()[..]).unwrap();
    let e = grpc(a.grpc).await.export(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.metadata().get_bin("google.rpc.retryinfo-bin").is_some(),
        "no retry delay: {e:?}"
    );
    let g = growth(pid, before);
    assert!(
        g <= RSS_BOUND,
        "stalled bodies: peak RSS grew {} MiB",
        g >> 20
    );
    // cut after the body timeout (10 s from their start), then served
    let status = tokio::time::timeout(Duration::from_secs(15), grpc_stalled)
        .await
        .expect("the stalled gRPC message is answered")
        .unwrap();
    assert_ne!(status, "0", "a stalled message answered OK");
    let t = Instant::now();
    loop {
        let (status, _, _) = tokio::task::spawn_blocking(move || post(port, PB, &small_valid()))
            .await
            .unwrap();
        if status == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "still {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    grpc(a.grpc).await.export(req).await.unwrap();
    drop(stalled);
}
