//! Load generator for the OTLP receiver (not a timed test): starts the
//! agent binary with `--enable-otel`, pinned to CPU 0, forwarding to a
//! minimal local API (in this process, pinned with the generator to CPU 1),
//! and sends OTLP/HTTP protobuf requests of 512 spans over keep-alive
//! connections.
//!
//! ```text
//! cargo bench --bench otlp_load -- throughput [seconds] [connections]
//! cargo bench --bench otlp_load -- floor [seconds] [connections]
//! cargo bench --bench otlp_load -- steady [spans_per_second] [seconds]
//! cargo bench --bench otlp_load -- phases [requests]
//! cargo bench --bench otlp_load -- enrich [rounds] [requests_per_round]
//! ```
//!
//! `throughput`: as fast as the agent takes them; prints spans accepted per
//! second (200s), refusals (503s), spans the API received, and the agent's
//! CPU. `floor`: the same load against the decode floor (issue 16), a bare
//! HTTP server (this binary, pinned to CPU 0) that only decodes the bodies
//! with the generated `opentelemetry-proto` types. `steady`: a fixed rate; prints the agent's CPU (% of one core) and
//! RSS. `phases`: in process, one thread, the CPU per span of decoding,
//! converting, JSON encoding and freeing. `enrich`: in process, one thread,
//! the same 512-span requests decoded, taken by an `Ingest` and encoded as
//! the delivery queue would, with pod enrichment on (a pod cache of 100
//! pods that resolves the peer), missing (the cache has no pod at the
//! peer's address) and off (local mode), in alternating rounds; prints
//! spans per second of each and the cost of enrichment in percent.
//! Results go to BENCHMARKS.md (OTLP part).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

mod support;
use support::{Agent, api, free_port, generator_runtime, start_agent, usage};

const BATCH: usize = 512;

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

/// One request of 512 realistic server spans (6 attributes, an error
/// every 20th, an event every 8th) for service `load-{n % 4}`.
fn body(n: u64) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = (0..BATCH as u64)
        .map(|i| {
            let id = n * BATCH as u64 + i + 1;
            let start = now + i * 1000;
            Span {
                trace_id: [id.to_be_bytes(), n.to_be_bytes()].concat(),
                span_id: id.to_be_bytes().to_vec(),
                parent_span_id: if i % 2 == 1 {
                    (id - 1).to_be_bytes().to_vec()
                } else {
                    Vec::new()
                },
                name: format!("GET /api/items/{}", i % 16),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 200_000 + (i * 7919) % 5_000_000,
                attributes: vec![
                    kv("http.request.method", s("GET")),
                    kv("http.route", s("/api/items/{id}")),
                    kv("url.path", s(&format!("/api/items/{}", i % 16))),
                    kv(
                        "http.response.status_code",
                        Value::IntValue(if i % 20 == 0 { 500 } else { 200 }),
                    ),
                    kv("server.address", s("items.default.svc")),
                    kv("user_agent.original", s("load/1.0")),
                ],
                events: if i % 8 == 0 {
                    vec![Event {
                        time_unix_nano: start + 100,
                        name: "cache.miss".into(),
                        attributes: vec![kv("key", s("item"))],
                        dropped_attributes_count: 0,
                    }]
                } else {
                    Vec::new()
                },
                status: (i % 20 == 0).then(|| Status {
                    code: 2,
                    message: "upstream".into(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(&format!("load-{}", n % 4)))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
    .into()
}

/// A minimal Cased API: reads each request, answers 200, counts spans by
/// counting `"trace_id"` in the bodies.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// One keep-alive connection sending `bodies` in turn until `until`; at
/// most one request per `pace` when given.
async fn sender(
    url: String,
    bodies: Arc<Vec<Bytes>>,
    until: Instant,
    pace: Option<Duration>,
    c: Arc<Counts>,
) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut i = 0usize;
    let mut tick = pace.map(tokio::time::interval);
    while Instant::now() < until {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let resp = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(bodies[i % bodies.len()].clone())
            .send()
            .await;
        i += 1;
        match resp.map(|r| r.status().as_u16()) {
            Ok(200) => c.accepted.fetch_add(BATCH as u64, Ordering::Relaxed),
            Ok(503) => {
                c.refused.fetch_add(BATCH as u64, Ordering::Relaxed);
                // a real client backs off; keep it short to stay saturating
                tokio::time::sleep(Duration::from_millis(5)).await;
                0
            }
            other => panic!("unexpected answer {other:?}"),
        };
    }
}

/// The load of `throughput` and `floor`: the bodies, where they go, what
/// was answered and what the API received.
struct Load {
    url: String,
    bodies: Arc<Vec<Bytes>>,
    counts: Arc<Counts>,
    api_spans: Arc<AtomicU64>,
}

impl Load {
    /// `conns` senders as fast as process `pid` answers: 2 s of warm-up,
    /// then `secs` measured; the figures go into `report`.
    async fn saturate(&self, pid: u32, secs: u64, conns: u64, report: &mut BTreeMap<&str, String>) {
        let run = |until: Instant| {
            (0..conns)
                .map(|_| {
                    tokio::spawn(sender(
                        self.url.clone(),
                        self.bodies.clone(),
                        until,
                        None,
                        self.counts.clone(),
                    ))
                })
                .collect::<Vec<_>>()
        };
        for t in run(Instant::now() + Duration::from_secs(2)) {
            t.await.unwrap();
        }
        let (c, api) = (&self.counts, &self.api_spans);
        let (a0, r0, f0) = (
            c.accepted.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed),
            api.load(Ordering::Relaxed),
        );
        let (cpu0, _, _) = usage(pid);
        let (me0, _, _) = usage(std::process::id());
        let t0 = Instant::now();
        for t in run(t0 + Duration::from_secs(secs)) {
            t.await.unwrap();
        }
        let el = t0.elapsed().as_secs_f64();
        let (cpu1, rss, hwm) = usage(pid);
        let (me1, _, _) = usage(std::process::id());
        let acc = c.accepted.load(Ordering::Relaxed) - a0;
        let refd = c.refused.load(Ordering::Relaxed) - r0;
        let fwd = api.load(Ordering::Relaxed) - f0;
        let pct = |cpu: f64| format!("{:.1}", cpu / el * 100.0);
        report.insert("generator_and_api_cpu_percent", pct(me1 - me0));
        report.insert("seconds", format!("{el:.1}"));
        report.insert("connections", conns.to_string());
        report.insert("spans_accepted_per_s", format!("{:.0}", acc as f64 / el));
        report.insert("spans_refused_per_s", format!("{:.0}", refd as f64 / el));
        report.insert("spans_forwarded_per_s", format!("{:.0}", fwd as f64 / el));
        report.insert("agent_cpu_percent_of_one_core", pct(cpu1 - cpu0));
        report.insert(
            "spans_per_agent_cpu_second",
            format!("{:.0}", acc as f64 / (cpu1 - cpu0).max(1e-9)),
        );
        report.insert("agent_rss_mib", format!("{:.1}", rss as f64 / 1024.0));
        report.insert("agent_peak_rss_mib", format!("{:.1}", hwm as f64 / 1024.0));
    }
}

/// The decode floor (issue 16): this bench binary again, as a bare
/// OTLP/HTTP server on `port` pinned to CPU 0 like the agent, that only
/// decodes each body into the generated `opentelemetry-proto` types.
fn start_floor(port: u16) -> Agent {
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new("taskset");
    c.args(["-c", "0"])
        .arg(exe)
        .args(["floor-server", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let a = Agent(c.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "floor server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    a
}

/// The floor server itself: hyper's HTTP/1 on a two-worker runtime (the
/// agent's), each body collected, decoded with prost and dropped; 200 with
/// an empty `ExportTraceServiceResponse`, 400 when it does not decode.
fn floor_server(port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let status = match ExportTraceServiceRequest::decode(&body[..]) {
                            Ok(r) => {
                                std::hint::black_box(&r);
                                200
                            }
                            Err(_) => 400,
                        };
                        let out = ExportTraceServiceResponse::default().encode_to_vec();
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(out)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("throughput");
    let arg = |i: usize, d: u64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    if mode == "floor-server" {
        return floor_server(arg(1, 4318) as u16);
    }
    let rt = generator_runtime();
    rt.block_on(async move {
        let api_spans = Arc::new(AtomicU64::new(0));
        let api_addr = api(b"\"trace_id\"", api_spans.clone()).await;
        let otel = free_port();
        let bodies: Arc<Vec<Bytes>> = Arc::new((0..16).map(body).collect());
        let url = format!("http://127.0.0.1:{otel}/v1/traces");
        let counts = Arc::new(Counts::default());
        let mut report = BTreeMap::new();
        match mode {
            "throughput" => {
                let (secs, conns) = (arg(1, 10), arg(2, 4));
                let bs = std::env::var("BENCH_BATCH_SIZE").unwrap_or_else(|_| "1000".into());
                let agent = start_agent(api_addr, otel, &["--batch-size", &bs]);
                let load = Load {
                    url,
                    bodies,
                    counts,
                    api_spans,
                };
                load.saturate(agent.0.id(), secs, conns, &mut report).await;
            }
            "floor" => {
                let (secs, conns) = (arg(1, 10), arg(2, 4));
                let server = start_floor(otel);
                let load = Load {
                    url,
                    bodies,
                    counts,
                    api_spans,
                };
                load.saturate(server.0.id(), secs, conns, &mut report).await;
            }
            "steady" => {
                let (rate, secs) = (arg(1, 10_000), arg(2, 30));
                let bs = std::env::var("BENCH_BATCH_SIZE").unwrap_or_else(|_| "100".into());
                let agent = start_agent(api_addr, otel, &["--batch-size", &bs]);
                let pid = agent.0.id();
                // requests of 512 spans: rate/512 per second over 2 connections
                let per_conn = Duration::from_secs_f64(2.0 * BATCH as f64 / rate as f64);
                let warm = Instant::now() + Duration::from_secs(3);
                let run = |until| {
                    (0..2)
                        .map(|_| {
                            tokio::spawn(sender(
                                url.clone(),
                                bodies.clone(),
                                until,
                                Some(per_conn),
                                counts.clone(),
                            ))
                        })
                        .collect::<Vec<_>>()
                };
                for t in run(warm) {
                    t.await.unwrap();
                }
                let a0 = counts.accepted.load(Ordering::Relaxed);
                let (cpu0, _, _) = usage(pid);
                let t0 = Instant::now();
                for t in run(t0 + Duration::from_secs(secs)) {
                    t.await.unwrap();
                }
                let el = t0.elapsed().as_secs_f64();
                let (cpu1, rss, hwm) = usage(pid);
                let acc = counts.accepted.load(Ordering::Relaxed) - a0;
                report.insert("seconds", format!("{el:.1}"));
                report.insert("spans_accepted_per_s", format!("{:.0}", acc as f64 / el));
                report.insert(
                    "spans_refused",
                    counts.refused.load(Ordering::Relaxed).to_string(),
                );
                report.insert(
                    "agent_cpu_percent_of_one_core",
                    format!("{:.2}", (cpu1 - cpu0) / el * 100.0),
                );
                report.insert("agent_rss_mib", format!("{:.1}", rss as f64 / 1024.0));
                report.insert("agent_peak_rss_mib", format!("{:.1}", hwm as f64 / 1024.0));
            }
            "phases" => {
                // in process, one thread: CPU per span of each step
                let n = arg(1, 200) as usize;
                let mut t = [Duration::ZERO; 4];
                let mut spans_total = 0u64;
                for i in 0..n {
                    let b = &bodies[i % bodies.len()];
                    let t0 = Instant::now();
                    let req = ExportTraceServiceRequest::decode(&b[..]).unwrap();
                    let t1 = Instant::now();
                    let c = cased_agent::otlp::convert::convert(req, "bench");
                    let t2 = Instant::now();
                    let mut bytes = 0;
                    for chunk in c.spans.chunks(100) {
                        let mut out = Vec::with_capacity(64 + chunk.len() * 640);
                        serde_json::to_writer(
                            &mut out,
                            &cased_agent::sink::wire::SpansBatch {
                                spans: std::borrow::Cow::Borrowed(chunk),
                            },
                        )
                        .unwrap();
                        bytes += out.len();
                    }
                    let t3 = Instant::now();
                    spans_total += c.spans.len() as u64;
                    drop(c);
                    let t4 = Instant::now();
                    std::hint::black_box(bytes);
                    for (k, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3].into_iter().enumerate() {
                        t[k] += d;
                    }
                }
                // the fast path (issue 16): body → span JSON → batches of 100
                let mut fast = [Duration::ZERO; 3];
                for i in 0..n {
                    let b = &bodies[i % bodies.len()];
                    let t0 = Instant::now();
                    let e =
                        cased_agent::otlp::fast::encode(b, "bench", None, BATCH as u64).unwrap();
                    let t1 = Instant::now();
                    let slices = e.spans.slices();
                    let mut bytes = 0;
                    for chunk in slices.chunks(100) {
                        bytes += cased_agent::sink::span_json::api_body(chunk).len();
                    }
                    let t2 = Instant::now();
                    drop(slices);
                    drop(e);
                    let t3 = Instant::now();
                    std::hint::black_box(bytes);
                    for (k, d) in [t1 - t0, t2 - t1, t3 - t2].into_iter().enumerate() {
                        fast[k] += d;
                    }
                }
                let per = |d: Duration| {
                    format!("{:.3} us/span", d.as_secs_f64() * 1e6 / spans_total as f64)
                };
                report.insert("1_decode_protobuf", per(t[0]));
                report.insert("2_convert_to_storedspan", per(t[1]));
                report.insert("3_encode_json_batches", per(t[2]));
                report.insert("4_drop", per(t[3]));
                report.insert("total", per(t.iter().sum()));
                report.insert("fast_1_body_to_span_json", per(fast[0]));
                report.insert("fast_2_json_batches", per(fast[1]));
                report.insert("fast_3_drop", per(fast[2]));
                report.insert("fast_total", per(fast.iter().sum()));
            }
            "enrich" => enrich(&bodies, arg(1, 20), arg(2, 50), &mut report),
            other => panic!("unknown mode {other}: throughput, floor, steady, phases or enrich"),
        }
        println!("otlp_load {mode}:");
        for (k, v) in report {
            println!("  {k:32} {v}");
        }
    });
}

/// A span sink that encodes what it takes as the delivery queue would
/// (JSON batches of 100), then drops it.
struct EncodeSink;

impl cased_agent::otlp::SpanSink for EncodeSink {
    fn try_submit(
        &self,
        spans: Vec<cased_agent::sink::wire::StoredSpan>,
    ) -> Result<(), cased_agent::otlp::SpanBufferFull> {
        for chunk in spans.chunks(100) {
            let hint: usize = chunk.iter().map(|s| s.json_len_hint()).sum();
            let mut out = Vec::with_capacity(64 + hint);
            serde_json::to_writer(
                &mut out,
                &cased_agent::sink::wire::SpansBatch {
                    spans: std::borrow::Cow::Borrowed(chunk),
                },
            )
            .unwrap();
            std::hint::black_box(out.len());
        }
        Ok(())
    }

    fn try_submit_json(
        &self,
        spans: cased_agent::sink::span_json::JsonSpans,
    ) -> Result<(), cased_agent::otlp::SpanBufferFull> {
        for chunk in spans.slices().chunks(100) {
            std::hint::black_box(cased_agent::sink::span_json::api_body(chunk).len());
        }
        Ok(())
    }
}

/// A pod cache of 100 pods at 10.232.0.1..=100.
fn bench_pods() -> Arc<cased_agent::k8s::pods::PodCache> {
    use cased_agent::k8s::pods::{Index, PodAddresses, PodCache};
    let mut index = Index::default();
    for i in 1..=100u8 {
        let meta = cased_agent::enrich::PodMeta {
            namespace: "shop".into(),
            name: format!("web-7d4f8b9c6d-{i:05}"),
            uid: format!("5a1c3c5e-0b7e-4c4b-9a53-2f6f3c1d{i:04}"),
            workload: "web".into(),
            workload_kind: "Deployment".into(),
            labels: vec![("app".into(), "web".into())],
            node: "ip-10-0-1-23.ec2.internal".into(),
            containers: vec!["web".into()],
        };
        let meta = index.insert(meta, vec![]);
        let addrs = PodAddresses {
            pod_ips: vec![std::net::IpAddr::from([10, 232, 0, i])],
            host_ips: vec![],
        };
        index.insert_addresses(&meta, addrs);
    }
    let cache = Arc::new(PodCache::default());
    cache.replace(index);
    cache
}

/// `rounds` rounds of on / miss / off, each `per_round` requests: spans per
/// second of each (the median round), and what enrichment costs.
fn enrich(bodies: &[Bytes], rounds: u64, per_round: u64, report: &mut BTreeMap<&str, String>) {
    use cased_agent::otlp::{Ingest, OtlpConfig, decode};
    let cfg = OtlpConfig::local(0, 0, "bench");
    let telemetry = Arc::new(cased_agent::telemetry::Telemetry::new());
    let make = |meta: Option<Arc<dyn cased_agent::enrich::Metadata>>| {
        let i = Ingest::new(&cfg, Arc::new(EncodeSink), telemetry.clone());
        match meta {
            Some(m) => i.with_metadata(m),
            None => i,
        }
    };
    let pods: Arc<dyn cased_agent::enrich::Metadata> = bench_pods();
    let modes = [
        (
            "on",
            make(Some(pods.clone())),
            Some(std::net::IpAddr::from([10, 232, 0, 42])),
        ),
        (
            "miss",
            make(Some(pods)),
            Some(std::net::IpAddr::from([10, 232, 1, 1])),
        ),
        (
            "off",
            make(None),
            Some(std::net::IpAddr::from([10, 232, 0, 42])),
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds + 1 {
        for (m, (_, ingest, peer)) in modes.iter().enumerate() {
            let t0 = Instant::now();
            let mut spans = 0;
            for i in 0..per_round {
                let b = &bodies[i as usize % bodies.len()];
                let req = decode::decode(b, decode::Encoding::Protobuf).unwrap();
                spans += ingest.export_from(req, *peer).unwrap().spans;
            }
            // round 0 warms up
            if round > 0 {
                rates[m].push(spans as f64 / t0.elapsed().as_secs_f64());
            }
        }
        // the aggregates are drained every interval in the agent
        for (_, ingest, _) in &modes {
            std::hint::black_box(ingest.metrics().drain());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [on, miss, off] = [0, 1, 2].map(|m| median(&mut rates[m]));
    report.insert("rounds", rounds.to_string());
    report.insert("spans_per_s_enrich_on", format!("{on:.0}"));
    report.insert("spans_per_s_enrich_miss", format!("{miss:.0}"));
    report.insert("spans_per_s_enrich_off", format!("{off:.0}"));
    report.insert(
        "cost_on_percent",
        format!("{:.2}", (1.0 - on / off) * 100.0),
    );
    report.insert(
        "cost_miss_percent",
        format!("{:.2}", (1.0 - miss / off) * 100.0),
    );
}
