//! Load generator for the OTLP metrics receiver (issue 14; not a timed
//! test): starts the agent binary with `--enable-otel` pinned to CPU 0,
//! forwarding to a minimal local API (in this process, pinned with the
//! generator to CPU 1), and sends OTLP/HTTP protobuf metrics requests from
//! 100 series over keep-alive connections.
//!
//! ```text
//! cargo bench --bench otlp_metrics -- steady [points_per_second] [seconds]
//! cargo bench --bench otlp_metrics -- throughput [seconds] [connections]
//! ```
//!
//! Each request carries one data point of each of the 100 series: 25
//! monotonic cumulative sums, 25 gauges, 25 non-monotonic sums and 25
//! explicit-bucket histograms (10 bounds), cumulative values growing from
//! request to request as an SDK's do. `steady`: a fixed rate (default
//! 10,000 points/s); `throughput`: as fast as the agent takes them. Both
//! print points accepted per second, the agent's CPU, points per agent
//! CPU-second, RSS and peak RSS, and the Cased metrics the API received.
//! Results go to BENCHMARKS.md (OTLP metrics).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

mod support;
use support::{api, free_port, generator_runtime, start_agent, usage};

/// Series of each of the four kinds; points per request.
const PER_KIND: u64 = 25;
const POINTS: u64 = 4 * PER_KIND;
const BOUNDS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn number(series: u64, start: u64, now: u64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![kv("series", &series.to_string()), kv("route", "/api/items")],
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn histogram(series: u64, start: u64, now: u64, n: u64) -> HistogramDataPoint {
    // n observations so far, spread over the buckets
    let mut counts = vec![n / 11; BOUNDS.len() + 1];
    let at = series as usize % counts.len();
    counts[at] += n % 11;
    HistogramDataPoint {
        attributes: vec![kv("series", &series.to_string())],
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: counts.iter().sum(),
        sum: Some(n as f64 * 20.0),
        bucket_counts: counts,
        explicit_bounds: BOUNDS.to_vec(),
        ..Default::default()
    }
}

fn sum(name: &str, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: "1".into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: 2,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

/// Request `n` (from 1): every series' point as a cumulative SDK sends it.
fn body(n: u64, start: u64) -> Bytes {
    let now = now_ns();
    let series = |k: u64| (0..PER_KIND).map(move |i| k * PER_KIND + i);
    let metrics = vec![
        sum(
            "bench.requests",
            true,
            series(0)
                .map(|s| number(s, start, now, (n * (s + 1)) as f64))
                .collect(),
        ),
        Metric {
            name: "bench.temperature".into(),
            unit: "Cel".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: series(1)
                    .map(|s| number(s, start, now, 20.0 + (n % 7) as f64))
                    .collect(),
            })),
            ..Default::default()
        },
        sum(
            "bench.queue.depth",
            false,
            series(2)
                .map(|s| number(s, start, now, (n % 50) as f64))
                .collect(),
        ),
        Metric {
            name: "bench.latency".into(),
            unit: "ms".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: series(3).map(|s| histogram(s, start, now, n * 3)).collect(),
                aggregation_temporality: 2,
            })),
            ..Default::default()
        },
    ];
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bench-metrics")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Bytes::from(req.encode_to_vec())
}

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    refused: AtomicU64,
    sent: AtomicU64,
}

/// One keep-alive connection sending requests until `until`; at most one
/// per `pace` when given. Requests are numbered across connections.
async fn sender(url: String, until: Instant, pace: Option<Duration>, c: Arc<Counts>, start: u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let mut tick = pace.map(tokio::time::interval);
    while Instant::now() < until {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let n = c.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let resp = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body(n, start))
            .send()
            .await;
        match resp.map(|r| r.status().as_u16()) {
            Ok(200) => c.accepted.fetch_add(POINTS, Ordering::Relaxed),
            Ok(429 | 503) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                c.refused.fetch_add(POINTS, Ordering::Relaxed)
            }
            other => panic!("unexpected answer {other:?}"),
        };
    }
}

/// `conns` senders (paced or not) for `secs` after 3 s of warm-up; the
/// figures of agent `pid` go into `report`.
async fn run(url: &str, pid: u32, secs: u64, conns: u64, pace: Option<Duration>) -> Report {
    let counts = Arc::new(Counts::default());
    let start = now_ns();
    let go = |until: Instant| {
        (0..conns)
            .map(|_| tokio::spawn(sender(url.into(), until, pace, counts.clone(), start)))
            .collect::<Vec<_>>()
    };
    for t in go(Instant::now() + Duration::from_secs(3)) {
        t.await.unwrap();
    }
    let (a0, r0) = (
        counts.accepted.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
    );
    let (cpu0, _, _) = usage(pid);
    let t0 = Instant::now();
    for t in go(t0 + Duration::from_secs(secs)) {
        t.await.unwrap();
    }
    let seconds = t0.elapsed().as_secs_f64();
    let (cpu1, rss_kib, peak_kib) = usage(pid);
    Report {
        seconds,
        accepted: counts.accepted.load(Ordering::Relaxed) - a0,
        refused: counts.refused.load(Ordering::Relaxed) - r0,
        cpu: cpu1 - cpu0,
        rss_kib,
        peak_kib,
    }
}

struct Report {
    seconds: f64,
    accepted: u64,
    refused: u64,
    cpu: f64,
    rss_kib: u64,
    peak_kib: u64,
}

impl Report {
    fn print(&self, mode: &str, forwarded: u64) {
        let el = self.seconds;
        let mut r = BTreeMap::new();
        r.insert("seconds", format!("{el:.1}"));
        r.insert(
            "points_accepted_per_s",
            format!("{:.0}", self.accepted as f64 / el),
        );
        r.insert(
            "points_refused_per_s",
            format!("{:.0}", self.refused as f64 / el),
        );
        r.insert(
            "agent_cpu_percent_of_one_core",
            format!("{:.2}", self.cpu / el * 100.0),
        );
        r.insert(
            "points_per_agent_cpu_second",
            format!("{:.0}", self.accepted as f64 / self.cpu.max(1e-9)),
        );
        r.insert(
            "agent_rss_mib",
            format!("{:.1}", self.rss_kib as f64 / 1024.0),
        );
        r.insert(
            "agent_peak_rss_mib",
            format!("{:.1}", self.peak_kib as f64 / 1024.0),
        );
        r.insert("cased_metrics_received_by_api", forwarded.to_string());
        println!("otlp_metrics {mode}:");
        for (k, v) in r {
            println!("  {k:32} {v}");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mode = args
        .first()
        .map(String::as_str)
        .unwrap_or("steady")
        .to_string();
    let arg = |i: usize, d: u64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let rt = generator_runtime();
    rt.block_on(async move {
        let seen = Arc::new(AtomicU64::new(0));
        let api_addr = api(b"\"metric_name\"", seen.clone()).await;
        let otel = free_port();
        let url = format!("http://127.0.0.1:{otel}/v1/metrics");
        let agent = start_agent(api_addr, otel, &[]);
        let pid = agent.0.id();
        let report = match mode.as_str() {
            "steady" => {
                let (rate, secs) = (arg(1, 10_000), arg(2, 30));
                // requests of 100 points over 2 connections
                let pace = Duration::from_secs_f64(2.0 * POINTS as f64 / rate.max(1) as f64);
                run(&url, pid, secs, 2, Some(pace)).await
            }
            "throughput" => run(&url, pid, arg(1, 10), arg(2, 4), None).await,
            other => panic!("unknown mode {other}: steady or throughput"),
        };
        report.print(&mode, seen.load(Ordering::Relaxed));
    });
}
