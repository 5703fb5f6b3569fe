//! Delivery over real HTTP on loopback (SPEC §3, §7): wire shape, batching,
//! retries, permanent drops, the queue bound, gzip, shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cased_agent::config::{Compression, Config};
use cased_agent::delivery::backoff::Backoff;
use cased_agent::delivery::{Delivery, DeliveryOptions, FlushReport};
use cased_agent::sink::render::MetricOut;
use cased_agent::sink::{self, AnySink, wire::Metric};
use cased_agent::telemetry::{DropLabel, DropReason, Kind, KindLabel, Telemetry};

use crate::support::receiver::{Receiver, Reply};

const KEY: &str = "test-key-0123";

fn cased_sink(endpoint: &str) -> AnySink {
    crate::support::cased_sink(endpoint, KEY)
}

/// Metric `i`: names of fixed width (so batches of equal count have equal
/// size); every other one carries the four pod fields.
fn metric(i: usize) -> Metric {
    let pod = i % 2 == 1;
    let s = |v: &str| if pod { v.to_string() } else { String::new() };
    Metric {
        timestamp: 1_732_650_000_123,
        metric_name: format!("test.metric.{i:05}"),
        value: (i % 10) as f64 + 0.5,
        unit: "bytes".to_string(),
        tags: BTreeMap::from([("node".to_string(), "n1".to_string())]),
        cluster_id: "prod".to_string(),
        node_name: "n1".to_string(),
        namespace: s("default"),
        pod_name: s("web-0"),
        container_name: s("web"),
        pod_uid: s("0b5c5e4a-1b2c-4d5e-8f90-123456789abc"),
    }
}

fn metrics(range: std::ops::Range<usize>) -> Vec<Metric> {
    range.map(metric).collect()
}

/// As the cycle hands them to delivery.
fn out(ms: Vec<Metric>) -> Vec<MetricOut> {
    ms.into_iter().map(MetricOut::from).collect()
}

fn opts(batch_size: usize, timeout_ms: u64) -> DeliveryOptions {
    DeliveryOptions {
        batch_size,
        queue_max_bytes: 1 << 20,
        request_timeout: Duration::from_millis(timeout_ms),
        compression: Compression::None,
    }
}

/// Short waits so retry tests take milliseconds.
fn fast() -> Backoff {
    Backoff::try_new(
        Duration::from_millis(20),
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn kind(kind: Kind) -> KindLabel {
    KindLabel { kind }
}

fn dropped(t: &Telemetry, reason: DropReason) -> (u64, u64) {
    let l = DropLabel {
        kind: Kind::Metrics,
        reason,
    };
    (
        t.delivery.batches_dropped.get_or_create(&l).get(),
        t.delivery.items_dropped.get_or_create(&l).get(),
    )
}

fn sent(t: &Telemetry) -> (u64, u64, u64) {
    (
        t.delivery
            .batches_sent
            .get_or_create(&kind(Kind::Metrics))
            .get(),
        t.delivery
            .items_sent
            .get_or_create(&kind(Kind::Metrics))
            .get(),
        t.delivery
            .batches_retried
            .get_or_create(&kind(Kind::Metrics))
            .get(),
    )
}

fn names(body: &serde_json::Value) -> Vec<String> {
    body["metrics"]
        .as_array()
        .expect("metrics array")
        .iter()
        .map(|m| m["metric_name"].as_str().unwrap().to_string())
        .collect()
}

fn report(delivered: u64, dropped: u64, pending: u64) -> FlushReport {
    FlushReport {
        delivered_batches: delivered,
        dropped_batches: dropped,
        pending_batches: pending,
    }
}

#[tokio::test]
async fn wire_format_and_batching() {
    let rx = Receiver::start().await;
    let t = Arc::new(Telemetry::new());
    // a base path with a trailing slash must join cleanly
    let sink = cased_sink(&format!("{}/base/", rx.url()));
    let (d, _task) = Delivery::start_with(sink, opts(5, 2000), fast(), t.clone());
    let n = 23;
    let mut input = metrics(0..n);
    // a NaN never reaches the wire: dropped and counted
    let mut nan = metric(999);
    nan.value = f64::NAN;
    input.push(nan);
    d.submit_metrics(input);
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(5, 0, 0));

    let reqs = rx.requests();
    assert_eq!(reqs.len(), n.div_ceil(5));
    let mut seen = Vec::new();
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/base/api/v1/telemetry/metrics");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), Some("Bearer test-key-0123"));
        assert_eq!(r.header("content-encoding"), None);
        let ua = r.header("user-agent").unwrap();
        assert_eq!(ua, concat!("cased-agent/", env!("CARGO_PKG_VERSION")));
        // key order is part of byte compatibility
        assert!(r.body.starts_with(b"{\"metrics\":[{\"timestamp\":"));
        let v = r.json();
        let top: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(top, BTreeSet::from(["metrics", "cluster_id"]));
        assert_eq!(v["cluster_id"], "prod");
        for m in v["metrics"].as_array().unwrap() {
            let keys: BTreeSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
            let mut want = BTreeSet::from([
                "timestamp",
                "metric_name",
                "value",
                "unit",
                "tags",
                "cluster_id",
                "node_name",
            ]);
            let back: Metric = serde_json::from_value(m.clone()).unwrap();
            let i: usize = back
                .metric_name
                .rsplit('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            if i % 2 == 1 {
                want.extend(["namespace", "pod_name", "container_name", "pod_uid"]);
            }
            assert_eq!(keys, want, "metric {i}");
            assert!(m["timestamp"].is_i64());
            assert!(m["value"].is_f64());
            assert_eq!(back, metric(i));
            seen.push(i);
        }
    }
    // FIFO, each batch full but the last, every metric exactly once
    let sizes: Vec<usize> = reqs.iter().map(|r| names(&r.json()).len()).collect();
    assert_eq!(sizes, vec![5, 5, 5, 5, 3]);
    assert_eq!(seen, (0..n).collect::<Vec<_>>());

    assert_eq!(sent(&t), (5, n as u64, 0));
    assert_eq!(dropped(&t, DropReason::NonFinite), (0, 1));
    assert_eq!(t.delivery.queue_bytes.get(), 0);
    assert_eq!(t.delivery.queue_batches.get(), 0);
    assert_eq!(t.delivery.queue_capacity_bytes.get(), 1 << 20);
}

#[tokio::test]
async fn server_error_then_success_is_retried_once() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(500).with_body("oops")]);
    let t = Arc::new(Telemetry::new());
    // the default backoff: first retry within 500 ms
    let (d, _task) = Delivery::start(cased_sink(&rx.url()), opts(100, 2000), t.clone());
    d.submit_metrics(metrics(0..7));
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(1, 0, 0));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body, reqs[1].body);
    // full jitter: at most 500 ms (slack for a loaded CI machine)
    assert!(reqs[1].at - reqs[0].at < Duration::from_secs(3));
    assert_eq!(sent(&t), (1, 7, 1));
    assert_eq!(dropped(&t, DropReason::Permanent), (0, 0));
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(429).with_header("Retry-After", "1")]);
    let t = Arc::new(Telemetry::new());
    let (d, _task) =
        Delivery::start_with(cased_sink(&rx.url()), opts(100, 2000), fast(), t.clone());
    d.submit_metrics(metrics(0..3));
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(1, 0, 0));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    // the backoff alone would have waited at most 20 ms
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    assert!(gap < Duration::from_secs(3), "{gap:?}");
    assert_eq!(sent(&t), (1, 3, 1));
}

#[tokio::test]
async fn hung_server_times_out_and_is_retried() {
    let rx = Receiver::start().await;
    rx.script([Reply::Hang(Duration::from_secs(30))]);
    let t = Arc::new(Telemetry::new());
    let (d, _task) = Delivery::start_with(cased_sink(&rx.url()), opts(100, 300), fast(), t.clone());
    d.submit_metrics(metrics(0..4));
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(1, 0, 0));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    // 300 ms timeout + at most 20 ms backoff + connection set-up
    assert!(gap >= Duration::from_millis(290), "{gap:?}");
    assert!(gap < Duration::from_secs(3), "{gap:?}");
    assert_eq!(sent(&t), (1, 4, 1));
}

#[tokio::test]
async fn permanent_error_drops_once_and_the_next_batch_flows() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(400).with_body("unknown field 'bogus'")]);
    let t = Arc::new(Telemetry::new());
    let (d, _task) = Delivery::start_with(cased_sink(&rx.url()), opts(3, 2000), fast(), t.clone());
    d.submit_metrics(metrics(0..5)); // batches of 3 and 2
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(1, 1, 0));
    // nothing else is coming: no retry of the refused batch
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(names(&reqs[0].json()).len(), 3);
    assert_eq!(names(&reqs[1].json()).len(), 2);
    assert_eq!(dropped(&t, DropReason::Permanent), (1, 3));
    assert_eq!(sent(&t), (1, 2, 0));
}

#[tokio::test]
async fn connection_closed_mid_response_is_retried() {
    let rx = Receiver::start().await;
    rx.script([Reply::Close]);
    let t = Arc::new(Telemetry::new());
    let (d, _task) =
        Delivery::start_with(cased_sink(&rx.url()), opts(100, 2000), fast(), t.clone());
    d.submit_metrics(metrics(0..2));
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(1, 0, 0));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body, reqs[1].body);
    assert_eq!(sent(&t), (1, 2, 1));
}

#[tokio::test]
async fn queue_bound_drops_oldest_while_the_sink_is_down() {
    // nothing listens on this port: connection refused
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sink = cased_sink(&format!("http://127.0.0.1:{port}"));
    let one = sink
        .encode_metrics(&out(metrics(0..4)), Compression::None)
        .unwrap()
        .size();
    // every batch below has 4 metrics of the same encoded size
    for k in 1..10 {
        let b = sink
            .encode_metrics(&out(metrics(4 * k..4 * k + 4)), Compression::None)
            .unwrap();
        assert_eq!(b.size(), one);
    }
    let bound = one * 3 + one / 2; // room for three batches
    let t = Arc::new(Telemetry::new());
    // a long backoff: after the first refusal the sender waits, and every
    // batch sits in the queue
    let slow = Backoff::try_new(
        Duration::from_secs(20),
        Duration::from_secs(20),
        Duration::from_secs(20),
    )
    .unwrap();
    let o = DeliveryOptions {
        queue_max_bytes: bound,
        ..opts(4, 1000)
    };
    let (d, task) = Delivery::start_with(sink, o, slow, t.clone());
    d.submit_metrics(metrics(0..4));
    let start = tokio::time::Instant::now();
    while sent(&t).2 == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no attempt made");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(t.delivery.queue_batches.get(), 1);
    // 9 more batches, one cycle's worth
    d.submit_metrics(metrics(4..40));
    // 10 batches, room for 3: the 7 oldest dropped, the first among them
    assert_eq!(dropped(&t, DropReason::QueueFull), (7, 28));
    assert_eq!(t.delivery.queue_batches.get(), 3);
    assert_eq!(t.delivery.queue_bytes.get() as u64, 3 * one);
    assert!(t.delivery.queue_bytes.get() as u64 <= bound);
    assert_eq!(t.delivery.queue_capacity_bytes.get() as u64, bound);
    // the sink stays down through the grace period: the 3 are left
    let r = d.shutdown(Duration::from_millis(200)).await;
    assert_eq!(r.pending_batches, 3);
    assert_eq!(r.delivered_batches, 0);
    assert_eq!(dropped(&t, DropReason::Shutdown), (3, 12));
    assert_eq!(t.delivery.queue_bytes.get(), 0);
    assert_eq!(sent(&t).0, 0);
    // a second shutdown has nothing left to report
    assert_eq!(d.shutdown(Duration::from_millis(50)).await, report(0, 0, 0));
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("task ends after shutdown")
        .unwrap();
}

#[tokio::test]
async fn newest_batches_survive_an_outage() {
    let rx = Receiver::start().await;
    // the first attempt hangs past the timeout; meanwhile the queue overflows
    rx.script([Reply::Hang(Duration::from_secs(30))]);
    let t = Arc::new(Telemetry::new());
    let sink = cased_sink(&rx.url());
    let one = sink
        .encode_metrics(&out(metrics(0..4)), Compression::None)
        .unwrap()
        .size();
    let o = DeliveryOptions {
        queue_max_bytes: one * 3 + one / 2,
        ..opts(4, 800)
    };
    let (d, _task) = Delivery::start_with(sink, o, fast(), t.clone());
    d.submit_metrics(metrics(0..4));
    assert_eq!(rx.wait_for(1, Duration::from_secs(5)).await.len(), 1);
    d.submit_metrics(metrics(4..40));
    // the first batch is in flight, outside the queue: of the 9 queued, the
    // 6 oldest are dropped to fit (before this flush); then the first batch
    // times out and, the oldest of all, no longer fits when put back
    assert_eq!(dropped(&t, DropReason::QueueFull), (6, 24));
    let r = d.flush(Duration::from_secs(5)).await;
    assert_eq!(r, report(3, 1, 0));
    assert_eq!(dropped(&t, DropReason::QueueFull), (7, 28));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 4);
    let delivered: Vec<String> = reqs[1..].iter().flat_map(|r| names(&r.json())).collect();
    let want: Vec<String> = (28..40).map(|i| metric(i).metric_name).collect();
    assert_eq!(delivered, want);
}

#[tokio::test]
async fn gzip_body_decodes_to_the_same_json() {
    let rx = Receiver::start().await;
    let t = Arc::new(Telemetry::new());
    let sink = cased_sink(&rx.url());
    let plain = sink
        .encode_metrics(&out(metrics(0..50)), Compression::None)
        .unwrap();
    let o = DeliveryOptions {
        compression: Compression::Gzip,
        ..opts(100, 2000)
    };
    let (d, _task) = Delivery::start_with(sink, o, fast(), t.clone());
    d.submit_metrics(metrics(0..50));
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(1, 0, 0));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(&r.raw_body[..2], &[0x1f, 0x8b]);
    assert!(
        r.raw_body.len() * 4 < plain.body.len(),
        "gzip shrinks repetitive JSON"
    );
    assert_eq!(r.body, plain.body.to_vec());
    assert_eq!(names(&r.json()).len(), 50);
}

#[tokio::test]
async fn shutdown_delivers_what_is_queued_then_refuses() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(503)]);
    let t = Arc::new(Telemetry::new());
    let (d, task) = Delivery::start_with(cased_sink(&rx.url()), opts(2, 2000), fast(), t.clone());
    d.submit_metrics(metrics(0..6));
    let r = d.shutdown(Duration::from_secs(5)).await;
    assert_eq!(r, report(3, 0, 0));
    assert_eq!(rx.requests().len(), 4);
    d.submit_metrics(metrics(6..9));
    assert_eq!(dropped(&t, DropReason::Shutdown), (2, 3));
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("task ends after shutdown")
        .unwrap();
    assert_eq!(rx.requests().len(), 4);
}

#[tokio::test]
async fn stdout_sink_encodes_one_metric_per_line() {
    let cfg =
        Config::try_parse_from(["cased-agent", "--sink", "stdout", "--node-name", "n1"]).unwrap();
    let s = sink::build(&cfg).unwrap();
    assert_eq!(s.name(), "stdout");
    // compression does not apply to stdout
    let b = s
        .encode_metrics(&out(metrics(0..3)), Compression::Gzip)
        .unwrap();
    let text = std::str::from_utf8(&b.body).unwrap();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(lines.len(), 3);
    assert!(text.ends_with('\n'));
    for (i, l) in lines.iter().enumerate() {
        let m: Metric = serde_json::from_str(l).unwrap();
        assert_eq!(m, metric(i));
        assert_eq!(*l, serde_json::to_string(&metric(i)).unwrap());
    }
}

#[tokio::test]
async fn redirects_keep_the_body_or_are_refused() {
    let rx = Receiver::start().await;
    rx.script([
        Reply::status(308).with_header("Location", "/moved/api/v1/telemetry/metrics"),
        // a 301 would turn the POST into a GET: refused, reported, dropped
        Reply::status(301).with_header("Location", "/elsewhere"),
    ]);
    let t = Arc::new(Telemetry::new());
    let (d, _task) = Delivery::start_with(cased_sink(&rx.url()), opts(2, 2000), fast(), t.clone());
    d.submit_metrics(metrics(0..4));
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(1, 1, 0));
    let reqs = rx.requests();
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/telemetry/metrics",
            "/moved/api/v1/telemetry/metrics",
            "/api/v1/telemetry/metrics"
        ]
    );
    assert_eq!(reqs[1].method, "POST");
    assert_eq!(reqs[0].body, reqs[1].body);
    assert_eq!(
        reqs[1].header("authorization"),
        Some("Bearer test-key-0123")
    );
    assert_eq!(dropped(&t, DropReason::Permanent), (1, 2));
    assert_eq!(rx.all_metrics().len(), 6);
}

/// A writer the test can read back, or one whose reader has gone.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>, bool);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.1 {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn stdout_sink_through_delivery_and_broken_pipe() {
    use cased_agent::sink::stdout::StdoutSink;
    let out = Capture::default();
    let t = Arc::new(Telemetry::new());
    let sink = AnySink::Stdout(StdoutSink::with_writer(Box::new(out.clone())));
    let (d, _task) = Delivery::start_with(sink, opts(4, 2000), fast(), t.clone());
    d.submit_metrics(metrics(0..10));
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(3, 0, 0));
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let got: Vec<Metric> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, metrics(0..10));
    assert_eq!(sent(&t), (3, 10, 0));

    // stdout closed (`| head`): each batch dropped and counted, no panic
    let t = Arc::new(Telemetry::new());
    let sink = AnySink::Stdout(StdoutSink::with_writer(Box::new(Capture(
        Default::default(),
        true,
    ))));
    let (d, _task) = Delivery::start_with(sink, opts(4, 2000), fast(), t.clone());
    d.submit_metrics(metrics(0..10));
    assert_eq!(d.flush(Duration::from_secs(5)).await, report(0, 3, 0));
    assert_eq!(dropped(&t, DropReason::Permanent), (3, 10));
    assert_eq!(sent(&t), (0, 0, 0));
}
