//! The fault scenarios of issue 6 (SPEC §3 responses, §7 delivery), each
//! with counts: every metric is identified by (metric name, tags,
//! timestamp) and counted as the local receiver saw it.
//!
//! Scenarios 1, 2 and 6 drive [`Delivery`] over the disk buffer in-process
//! (synthetic cycles, so the expected set is exact, and a fast backoff);
//! 3, 4, 5 and 7 run the real binary (kill -9, restarts, a full tmpfs, RSS).
//! "API down" is a [`Gate`]: a loopback proxy in front of the receiver that,
//! while closed, accepts and drops every connection, so nothing reaches the
//! API and nothing can be duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cased_agent::config::Compression;
use cased_agent::delivery::backoff::Backoff;
use cased_agent::delivery::disk::{DiskOptions, DiskQueue};
use cased_agent::delivery::queue::{BatchQueue, MemoryQueue};
use cased_agent::delivery::{Delivery, DeliveryOptions, Lanes};
use cased_agent::sink::render::MetricOut;
use cased_agent::sink::{AnySink, wire::Metric};
use cased_agent::telemetry::{DropLabel, DropReason, Kind, Telemetry};
use serde_json::Value;

use crate::cli::{agent, free_port, http_get, unsafe_kill};
use crate::support::receiver::{Receiver, Recorded, Reply};

const KEY: &str = "k-faults-SECRET-7";

// ---------------------------------------------------------------- counting

/// (metric name, tags as JSON, timestamp).
type MetricKey = (String, String, i64);

fn key(m: &Value) -> MetricKey {
    (
        m["metric_name"].as_str().expect("metric_name").to_string(),
        m["tags"].to_string(),
        m["timestamp"].as_i64().expect("timestamp"),
    )
}

fn metrics_of(r: &Recorded) -> Vec<Value> {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v.get("metrics").and_then(|m| m.as_array()).cloned())
        .unwrap_or_default()
}

/// How many times each metric arrived, over the given requests.
fn tally<'a>(reqs: impl IntoIterator<Item = &'a Recorded>) -> BTreeMap<MetricKey, usize> {
    let mut t = BTreeMap::new();
    for r in reqs {
        for m in metrics_of(r) {
            *t.entry(key(&m)).or_insert(0) += 1;
        }
    }
    t
}

/// Arrivals beyond the first, summed.
fn duplicates(t: &BTreeMap<MetricKey, usize>) -> usize {
    t.values().map(|n| n - 1).sum()
}

// ------------------------------------------------------- synthetic cycles

const T0: i64 = 1_732_650_000_000;

/// Cycle `c`: `n` metrics of `n/4` containers, one timestamp.
fn cycle(c: usize, n: usize) -> Vec<Metric> {
    (0..n)
        .map(|j| Metric {
            timestamp: T0 + c as i64 * 15_000,
            metric_name: format!("synthetic.m{:02}", j % 4),
            value: (c * 1000 + j) as f64,
            unit: "count".to_string(),
            tags: BTreeMap::from([
                ("node".to_string(), "n1".to_string()),
                ("container".to_string(), format!("c{:04}", j / 4)),
            ]),
            cluster_id: "prod".to_string(),
            node_name: "n1".to_string(),
            namespace: "default".to_string(),
            pod_name: format!("p{:04}", j / 4),
            container_name: format!("c{:04}", j / 4),
            pod_uid: String::new(),
        })
        .collect()
}

fn keys_of(ms: &[Metric]) -> BTreeSet<MetricKey> {
    ms.iter()
        .map(|m| key(&serde_json::to_value(m).unwrap()))
        .collect()
}

fn cased_sink(endpoint: &str) -> AnySink {
    crate::support::cased_sink(endpoint, KEY)
}

fn fast() -> Backoff {
    Backoff::try_new(
        Duration::from_millis(20),
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn disk_opts() -> DiskOptions {
    DiskOptions {
        max_bytes: 64 << 20,
        memory_fallback_bytes: 1 << 20,
        never_evict: false,
    }
}

/// Delivery over a disk buffer in `dir`.
fn start_disk_delivery(
    endpoint: &str,
    dir: &Path,
    batch_size: usize,
    timeout: Duration,
) -> (Delivery, Arc<Telemetry>) {
    let t = Arc::new(Telemetry::new());
    // the metrics lane's place in a buffer directory
    let q = DiskQueue::open(&dir.join("metrics"), disk_opts(), t.clone()).expect("buffer opens");
    let lanes = Lanes {
        metrics: Box::new(q),
        spans: Box::new(MemoryQueue::new(0)),
    };
    let (d, _task) = Delivery::start_lanes(
        cased_sink(endpoint),
        DeliveryOptions {
            batch_size,
            queue_max_bytes: 1 << 20,
            request_timeout: timeout,
            compression: Compression::None,
        },
        fast(),
        lanes,
        t.clone(),
    );
    (d, t)
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

// -------------------------------------------------------------------- gate

/// A loopback TCP proxy to `upstream`; while closed it accepts and drops
/// every connection before reading a byte (the API is down).
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start(upstream: std::net::SocketAddr) -> Gate {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(false));
        let o = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = l.accept().await else {
                    continue;
                };
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut up).await;
                    }
                });
            }
        });
        Gate { port, open, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------ the binary

/// The agent binary, its stderr in a file, its health port.
struct Agent {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Agent {
    fn start(endpoint: &str, log: &Path, extra: &[&str]) -> Agent {
        let port = free_port();
        let mut c: Command = agent();
        c.args([
            "--endpoint",
            endpoint,
            "--cluster-id",
            "c-faults",
            "--node-name",
            "n-faults",
            "--health-port",
            &port.to_string(),
        ])
        .args(extra)
        .env("CASED_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
        let child = c.spawn().expect("agent starts");
        Agent {
            child: Some(child),
            port,
            log: log.to_path_buf(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn scrape(&self) -> Option<String> {
        http_get(self.port, "/metrics").map(|(_, b)| b)
    }

    /// Poll `/metrics` until `pred` holds; the last text.
    async fn wait_metrics(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let port = self.port;
            let text = tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
                .await
                .unwrap()
                .map(|(_, b)| b);
            if let Some(t) = &text
                && pred(t)
            {
                return t.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on /metrics; last: {text:?}\nlog:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send `sig`, wait for the exit: (exit code, stderr).
    async fn stop(mut self, sig: i32) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        unsafe_kill(child.id(), sig);
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        (status.code(), self.log_text())
    }

    /// Peak resident set (VmHWM) and current RSS, KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Value of one sample of the exposition: `name` or `name{labels}` exactly.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn sample0(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

/// Everything in the metrics lane of a buffer directory, oldest first, as
/// the receiver would count it (read without acknowledging: the buffer is
/// left as it was).
fn buffer_contents(dir: &Path) -> (BTreeMap<MetricKey, usize>, u64) {
    let t = Arc::new(Telemetry::new());
    let mut q = DiskQueue::open(&dir.join("metrics"), disk_opts(), t).expect("buffer opens");
    let mut counts = BTreeMap::new();
    let mut batches = 0;
    while let Some(b) = q.pop_front() {
        batches += 1;
        let v: Value = serde_json::from_slice(&b.batch.body).expect("a JSON body");
        for m in v["metrics"].as_array().unwrap() {
            *counts.entry(key(m)).or_insert(0) += 1;
        }
    }
    (counts, batches)
}

fn timestamps(t: &BTreeMap<MetricKey, usize>) -> BTreeSet<i64> {
    t.keys().map(|k| k.2).collect()
}

/// Every cycle but the first (no rates yet) carries the same metric names.
fn assert_cycles_complete(t: &BTreeMap<MetricKey, usize>, skip_first: usize) {
    let mut by_ts: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for k in t.keys() {
        by_ts.entry(k.2).or_default().insert(k.0.as_str());
    }
    let full: BTreeSet<&str> = by_ts.values().flatten().copied().collect();
    for (i, (ts, names)) in by_ts.iter().enumerate() {
        if i < skip_first {
            continue;
        }
        assert_eq!(names, &full, "cycle {ts} incomplete");
    }
}

// --------------------------------------------------------------- scenarios

/// 1. The API is down for 10 cycles, then back: every metric of those
///    cycles arrives, oldest first; duplicates: 0 (nothing reached the API
///    while it was down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_api_down_ten_cycles_then_back_loses_nothing() {
    let rx = Receiver::start().await;
    let gate = Gate::start(rx.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let (d, t) = start_disk_delivery(&gate.url(), dir.path(), 25, Duration::from_secs(2));
    let mut expected = BTreeSet::new();
    for c in 0..10 {
        let ms = cycle(c, 100);
        expected.extend(keys_of(&ms));
        d.submit_metrics(ms);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(rx.requests().is_empty(), "the API was down");
    assert_eq!(t.delivery.queue_batches.get(), 40);
    assert!(t.delivery.batches_retried.get_or_create(&kind()).get() >= 3);
    gate.set_open(true);
    for c in 10..12 {
        let ms = cycle(c, 100);
        expected.extend(keys_of(&ms));
        d.submit_metrics(ms);
    }
    let r = d.flush(Duration::from_secs(10)).await;
    assert_eq!(r.pending_batches, 0);
    assert_eq!(t.delivery.batches_sent.get_or_create(&kind()).get(), 48);
    let reqs = rx.requests();
    let got = tally(&reqs);
    assert_eq!(got.len(), 1200);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(duplicates(&got), 0);
    // oldest first
    let firsts: Vec<i64> = reqs.iter().map(|r| key(&metrics_of(r)[0]).2).collect();
    assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "{firsts:?}");
    assert_eq!(t.buffer.disk_bytes.get(), 0);
    assert_eq!(dropped(&t, DropReason::QueueFull), (0, 0));
}

fn kind() -> cased_agent::telemetry::KindLabel {
    cased_agent::telemetry::KindLabel {
        kind: Kind::Metrics,
    }
}

/// 2. 500 half of the time, 429 with `Retry-After: 2`, a hang past the
///    request timeout, a close mid-response: nothing lost. Duplicates:
///    exactly the two batches the API may have kept without the agent
///    knowing (the hung one and the closed one), 20 metrics each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_flaky_api_loses_nothing_and_duplicates_only_the_unknown() {
    let rx = Receiver::start().await;
    let mut script = Vec::new();
    for _ in 0..4 {
        script.push(Reply::status(500));
        script.push(Reply::status(200));
    }
    script.push(Reply::status(429).with_header("Retry-After", "2"));
    script.push(Reply::Hang(Duration::from_millis(1500)));
    script.push(Reply::Close);
    script.push(Reply::status(503));
    rx.script(script.clone());
    let dir = tempfile::tempdir().unwrap();
    let (d, t) = start_disk_delivery(&rx.url(), dir.path(), 20, Duration::from_millis(400));
    let mut expected = BTreeSet::new();
    for c in 0..5 {
        let ms = cycle(c, 100);
        expected.extend(keys_of(&ms));
        d.submit_metrics(ms);
    }
    let r = d.flush(Duration::from_secs(20)).await;
    assert_eq!(r.pending_batches, 0);
    assert_eq!(t.delivery.batches_sent.get_or_create(&kind()).get(), 25);
    let reqs = rx.requests();
    // 25 batches + one retry per failed attempt (4×500, 429, hang, close, 503)
    assert_eq!(reqs.len(), 33);
    assert_eq!(t.delivery.batches_retried.get_or_create(&kind()).get(), 8);
    // the server kept what it answered 2xx, and may have kept the hung and
    // the closed request: count those as arrivals
    let kept = reqs
        .iter()
        .enumerate()
        .filter(|(i, _)| match script.get(*i) {
            None | Some(Reply::Hang(_)) | Some(Reply::Close) => true,
            Some(Reply::Status { status, .. }) => *status == 200,
        });
    let got = tally(kept.map(|(_, r)| r));
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(duplicates(&got), 40);
    // Retry-After honoured: the request after the 429 came 2 s later
    let gap = reqs[9].at.duration_since(reqs[8].at);
    assert!(gap >= Duration::from_millis(1950), "{gap:?}");
    assert_eq!(dropped(&t, DropReason::Permanent), (0, 0));
}

/// 6. A permanent 400 for one batch: that batch is dropped and counted
///    once, not retried, and not kept on disk; the rest flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_a_permanent_400_drops_one_batch_once() {
    let rx = Receiver::start().await;
    rx.script([
        Reply::status(200),
        Reply::status(400).with_body("{\"error\":\"bad metric\"}"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (d, t) = start_disk_delivery(&rx.url(), dir.path(), 25, Duration::from_secs(2));
    let mut expected = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for c in 0..3 {
        let ms = cycle(c, 100);
        if c == 0 {
            refused = keys_of(&ms[25..50]);
        }
        expected.extend(keys_of(&ms));
        d.submit_metrics(ms);
    }
    let r = d.flush(Duration::from_secs(10)).await;
    assert_eq!(r.pending_batches, 0);
    assert_eq!(t.delivery.batches_sent.get_or_create(&kind()).get(), 11);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 12, "the refused batch is not retried");
    let got = tally(
        reqs.iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, r)| r),
    );
    let want: BTreeSet<_> = expected.difference(&refused).cloned().collect();
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(got.len(), 275);
    assert_eq!(duplicates(&got), 0);
    assert_eq!(dropped(&t, DropReason::Permanent), (1, 25));
    // and it does not come back after a restart
    let r = d.shutdown(Duration::from_secs(1)).await;
    assert_eq!(r.pending_batches, 0);
    drop(d);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (left, batches) = buffer_contents(dir.path());
    assert_eq!((left.len(), batches), (0, 0));
}

/// 3. `kill -9` while the API is down and the buffer holds data, a restart
///    still down and a SIGTERM (kept on disk, exit 0), a restart with the
///    API back: everything arrives, oldest first, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_kill_9_and_restarts_lose_nothing() {
    let rx = Receiver::start().await;
    let gate = Gate::start(rx.addr()).await;
    let tmp = tempfile::tempdir().unwrap();
    let buf = tmp.path().join("buffer");
    let buf_s = buf.to_str().unwrap().to_string();
    let args = [
        "--interval",
        "100ms",
        "--batch-size",
        "10",
        "--buffer-path",
        &buf_s,
        "--request-timeout",
        "500ms",
        "--shutdown-grace",
        "1s",
    ];
    // run 1: API down, ≥ 10 cycles, then kill -9
    let a = Agent::start(&gate.url(), &tmp.path().join("a.log"), &args);
    let m = a
        .wait_metrics(Duration::from_secs(15), |m| {
            sample0(m, "cased_agent_cycles_total") >= 10.0
        })
        .await;
    let produced = sample0(&m, "cased_agent_metrics_produced_total") as usize;
    let last_ms = (sample0(&m, "cased_agent_last_cycle_timestamp_seconds") * 1000.0).round() as i64;
    let (code, _) = a.stop(9).await;
    assert_eq!(code, None, "killed by the signal");
    let (disk1, disk1_batches) = buffer_contents(&buf);
    // everything produced up to that scrape is on disk, once
    let upto: usize = disk1
        .iter()
        .filter(|(k, _)| k.2 <= last_ms)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(upto, produced);
    assert_eq!(duplicates(&disk1), 0);
    assert!(timestamps(&disk1).len() >= 10);
    assert_cycles_complete(&disk1, 1);

    // run 2: still down; SIGTERM keeps it all on disk and exits 0
    let b = Agent::start(&gate.url(), &tmp.path().join("b.log"), &args);
    let m = b
        .wait_metrics(Duration::from_secs(15), |m| {
            sample0(m, "cased_agent_cycles_total") >= 5.0
        })
        .await;
    assert_eq!(
        sample0(&m, "cased_agent_buffer_recovered_batches_total") as u64,
        disk1_batches
    );
    let (code, log) = b.stop(15).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("kept in the disk buffer"), "{log}");
    assert!(!log.contains("dropped"), "{log}");
    let (disk2, _) = buffer_contents(&buf);
    assert!(disk1.keys().all(|k| disk2.contains_key(k)));
    assert!(timestamps(&disk2).len() >= timestamps(&disk1).len() + 5);
    assert!(rx.requests().is_empty(), "the API was down");

    // run 3: the API is back: all of it arrives, the old first
    gate.set_open(true);
    let c = Agent::start(&gate.url(), &tmp.path().join("c.log"), &args);
    let want = disk2.len();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = tally(&rx.requests());
        if disk2.keys().all(|k| got.contains_key(k)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} arrived",
            disk2.keys().filter(|k| got.contains_key(*k)).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, log) = c.stop(15).await;
    assert_eq!(code, Some(0), "{log}");
    let reqs = rx.requests();
    let got = tally(&reqs);
    assert_eq!(duplicates(&got), 0);
    let old_ts = timestamps(&disk2);
    let new: Vec<i64> = timestamps(&got).difference(&old_ts).copied().collect();
    assert!(!new.is_empty(), "run 3 collected too");
    // the buffered cycles were delivered before any new one
    let first_new = reqs
        .iter()
        .position(|r| metrics_of(r).iter().any(|m| !old_ts.contains(&key(m).2)))
        .unwrap();
    let last_old = reqs
        .iter()
        .rposition(|r| metrics_of(r).iter().any(|m| old_ts.contains(&key(m).2)))
        .unwrap();
    assert!(last_old < first_new, "old {last_old} new {first_new}");
}

/// Records of a segment file: (offset, length) of each, as the reader
/// sees them.
fn record_spans(data: &[u8]) -> Vec<(usize, usize)> {
    cased_agent::delivery::disk::scan_records(data)
        .into_iter()
        .filter_map(|s| match s {
            cased_agent::delivery::disk::Scanned::Record { offset, len, .. } => Some((offset, len)),
            _ => None,
        })
        .collect()
}

/// 4. A corrupted buffer (random bytes in the middle of one record, the
///    last record cut short): the agent starts, delivers the 8 intact
///    batches exactly once, and counts the 2 damaged regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_corrupt_buffer_delivers_what_is_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let buf = tmp.path().join("buffer");
    let sink = cased_sink("http://127.0.0.1:9");
    let mut batches = Vec::new();
    {
        let t = Arc::new(Telemetry::new());
        let mut q = DiskQueue::open(&buf, disk_opts(), t).unwrap();
        for c in 0..10 {
            let ms = cycle(c, 12);
            let out: Vec<MetricOut> = ms.iter().map(MetricOut::from).collect();
            let b = sink.encode_metrics(&out, Compression::None).unwrap();
            assert!(
                q.push_back(cased_agent::delivery::queue::QueuedBatch {
                    seq: c as u64 + 1,
                    batch: b
                })
                .is_empty()
            );
            batches.push(keys_of(&ms));
        }
    }
    let seg = buf.join("seg-00000000000000000001.log");
    let mut data = std::fs::read(&seg).unwrap();
    let spans = record_spans(&data);
    assert_eq!(spans.len(), 10);
    // pseudo-random bytes over the middle of record 3
    let (o3, l3) = spans[3];
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut data[o3 + l3 / 3..o3 + 2 * l3 / 3] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    // the last record torn in the middle
    let (o9, l9) = spans[9];
    data.truncate(o9 + l9 / 2);
    std::fs::write(&seg, &data).unwrap();

    let rx = Receiver::start().await;
    let buf_s = buf.to_str().unwrap();
    let a = Agent::start(
        &rx.url(),
        &tmp.path().join("a.log"),
        &["--interval", "200ms", "--buffer-path", buf_s],
    );
    let m = a
        .wait_metrics(Duration::from_secs(10), |m| {
            sample0(m, "cased_agent_batches_sent_total{kind=\"metrics\"}") >= 10.0
        })
        .await;
    assert_eq!(
        sample0(&m, "cased_agent_buffer_recovered_batches_total"),
        8.0
    );
    assert_eq!(sample0(&m, "cased_agent_buffer_corrupt_records_total"), 2.0);
    assert_eq!(
        sample0(&m, "cased_agent_buffer_corrupt_bytes_total") as usize,
        l3 + l9 / 2
    );
    let (code, log) = a.stop(15).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("skipped a torn or corrupt region"), "{log}");
    let reqs = rx.requests();
    let synthetic = tally(reqs.iter().filter(|r| {
        metrics_of(r)
            .first()
            .is_some_and(|m| m["metric_name"].as_str().unwrap().starts_with("synthetic."))
    }));
    let mut want = BTreeSet::new();
    for (i, b) in batches.iter().enumerate() {
        if i != 3 && i != 9 {
            want.extend(b.iter().cloned());
        }
    }
    assert_eq!(synthetic.len(), 96);
    assert_eq!(synthetic.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(duplicates(&synthetic), 0);
    // the recovered batches went first
    assert!(
        metrics_of(&reqs[0])[0]["metric_name"]
            .as_str()
            .unwrap()
            .starts_with("synthetic.")
    );
    // the damaged segment is gone once everything in it was resolved
    assert!(!seg.exists());
}

/// Root is needed (mount); under `CI=true` its absence is a failure.
fn need_root(test: &str) -> bool {
    crate::cgroup_support::need_root(test)
}

/// A small tmpfs, unmounted (lazily, so a busy mount cannot leak) and
/// removed on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "cased-faults-tmpfs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs at {}", path.display());
        Tmpfs { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// 5. Disk full (a 128 KiB tmpfs as the buffer path, API down): a clear
///    error, the queue falls back to memory, no crash; once the API is back
///    everything produced arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_disk_full_falls_back_to_memory() {
    if !need_root("s5_disk_full_falls_back_to_memory") {
        return;
    }
    let fs = Tmpfs::mount("128k");
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let gate = Gate::start(rx.addr()).await;
    let buf = fs.path.join("buffer");
    let a = Agent::start(
        &gate.url(),
        &tmp.path().join("a.log"),
        &[
            "--interval",
            "50ms",
            "--batch-size",
            "5",
            "--buffer-path",
            buf.to_str().unwrap(),
            "--buffer-max-bytes",
            "64MiB",
            "--request-timeout",
            "500ms",
        ],
    );
    let m = a
        .wait_metrics(Duration::from_secs(20), |m| {
            sample0(m, "cased_agent_buffer_errors_total{op=\"write\"}") >= 1.0
        })
        .await;
    assert_eq!(sample0(&m, "cased_agent_buffer_memory_fallback"), 1.0);
    assert!(a.scrape().is_some(), "still serving");
    let log = a.log_text();
    assert!(log.contains("disk buffer write failed"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert_eq!(log.matches("disk buffer write failed").count(), 1, "{log}");
    // a few more cycles in memory, then the API comes back
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.set_open(true);
    let m = a
        .wait_metrics(Duration::from_secs(20), |m| {
            sample0(m, "cased_agent_queue_batches") == 0.0
                && sample0(m, "cased_agent_buffer_disk_bytes") == 0.0
                && sample0(m, "cased_agent_metrics_produced_total")
                    == sample0(m, "cased_agent_items_sent_total{kind=\"metrics\"}")
        })
        .await;
    let produced = sample0(&m, "cased_agent_metrics_produced_total") as usize;
    let last_ms = (sample0(&m, "cased_agent_last_cycle_timestamp_seconds") * 1000.0).round() as i64;
    assert!(!m.contains("cased_agent_batches_dropped_total{"), "{m}");
    let got = tally(&rx.requests());
    let upto: BTreeMap<_, _> = got.into_iter().filter(|(k, _)| k.2 <= last_ms).collect();
    assert_eq!(upto.values().sum::<usize>(), produced);
    assert_eq!(duplicates(&upto), 0);
    assert_cycles_complete(&upto, 1);
    let (code, log) = a.stop(15).await;
    assert_eq!(code, Some(0), "{log}");
}

/// 7. Memory ceiling: an API outage of 300 cycles of 31 batches each
///    (30 minutes at 15 s is 120 cycles) at a 10 ms interval, every metric
///    its own batch, a 1 MiB disk cap (reached after ~150 cycles): the cap
///    holds (oldest dropped, counted) and the agent's peak RSS stays under
///    40 MiB, flat after the cap is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s7_memory_stays_bounded_in_a_long_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Gate::start("127.0.0.1:9".parse().unwrap()).await;
    let buf = tmp.path().join("buffer");
    let a = Agent::start(
        &gate.url(),
        &tmp.path().join("a.log"),
        &[
            "--interval",
            "10ms",
            "--batch-size",
            "1",
            "--buffer-path",
            buf.to_str().unwrap(),
            "--buffer-max-bytes",
            "1MiB",
        ],
    );
    // generous timeouts: a loaded machine syncs slowly
    let m = a
        .wait_metrics(Duration::from_secs(60), |m| {
            sample0(
                m,
                "cased_agent_batches_dropped_total{kind=\"metrics\",reason=\"queue_full\"}",
            ) > 0.0
        })
        .await;
    let cycles_at_cap = sample0(&m, "cased_agent_cycles_total");
    let (hwm_at_cap, _) = a.memory_kib();
    let m = a
        .wait_metrics(Duration::from_secs(60), |m| {
            sample0(m, "cased_agent_cycles_total") >= 300.0
        })
        .await;
    let (hwm, rss) = a.memory_kib();
    let disk = sample0(&m, "cased_agent_buffer_disk_bytes");
    let dropped = sample0(
        &m,
        "cased_agent_batches_dropped_total{kind=\"metrics\",reason=\"queue_full\"}",
    );
    let produced = sample0(&m, "cased_agent_metrics_produced_total");
    eprintln!(
        "s7: cap reached after {cycles_at_cap} cycles; after {} cycles: {produced} metrics, \
         {dropped} batches dropped, {disk} bytes on disk, VmHWM {hwm} KiB (at cap {hwm_at_cap}), VmRSS {rss} KiB",
        sample0(&m, "cased_agent_cycles_total")
    );
    assert!(disk <= (1 << 20) as f64, "{disk}");
    assert!(dropped > 0.0);
    assert!(hwm < 40 * 1024, "peak RSS {hwm} KiB");
    assert!(
        hwm <= hwm_at_cap + 4 * 1024,
        "RSS grew after the cap: {hwm_at_cap} → {hwm} KiB"
    );
    let (code, log) = a.stop(15).await;
    assert_eq!(code, Some(0), "{log}");
}

/// An unusable buffer directory at start (a path below a regular file): a
/// clear error, memory-only queueing, and delivery goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_unusable_buffer_dir_at_start_means_memory_only() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let rx = Receiver::start().await;
    let a = Agent::start(
        &rx.url(),
        &tmp.path().join("a.log"),
        &[
            "--interval",
            "100ms",
            "--buffer-path",
            file.join("buffer").to_str().unwrap(),
        ],
    );
    let m = a
        .wait_metrics(Duration::from_secs(10), |m| {
            sample0(m, "cased_agent_batches_sent_total{kind=\"metrics\"}") >= 3.0
        })
        .await;
    assert_eq!(
        sample0(&m, "cased_agent_buffer_errors_total{op=\"open\"}"),
        1.0
    );
    assert_eq!(sample0(&m, "cased_agent_buffer_memory_fallback"), 1.0);
    let (code, log) = a.stop(15).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("disk buffer unusable"), "{log}");
    assert!(log.contains("not-a-dir/buffer"), "{log}");
    assert!(tally(&rx.requests()).len() >= 31);
}

// ------------------------------------------------- lanes: kinds apart

const METRICS_PATH: &str = "/api/v1/telemetry/metrics";
const SPANS_PATH: &str = "/api/v1/telemetry/spans";

/// The agent with the OTLP receiver on free ports: (agent, OTLP/HTTP url).
fn otel_agent(endpoint: &str, log: &Path, extra: &[&str]) -> (Agent, String) {
    let (http, grpc) = (free_port(), free_port());
    let (h, g) = (http.to_string(), grpc.to_string());
    let mut args = vec!["--enable-otel", "--otel-port", &h, "--otel-grpc-port", &g];
    args.extend_from_slice(extra);
    let a = Agent::start(endpoint, log, &args);
    (a, format!("http://127.0.0.1:{http}/v1/traces"))
}

/// Post one OTLP/HTTP protobuf request of `n` spans with ids from `first`;
/// the status (0: no answer, e.g. not listening yet).
async fn post_spans(c: &reqwest::Client, url: &str, n: usize, pad: usize, first: u64) -> u16 {
    use prost::Message;
    let body = crate::otlp::request("lanes", n, pad, first).encode_to_vec();
    match c
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Wait until the OTLP receiver answers (an empty request).
async fn otlp_ready(c: &reqwest::Client, url: &str, a: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while post_spans(c, url, 0, 0, 1).await != 200 {
        assert!(
            Instant::now() < deadline,
            "OTLP never up:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Span ids (hex, as stored) of ids `first..first+n`.
fn span_ids(first: u64, n: usize) -> Vec<String> {
    (first..first + n as u64)
        .map(|id| format!("{id:016x}"))
        .collect()
}

/// Distinct cycles (metric timestamps) the API kept.
fn cycles_kept(rx: &Receiver) -> BTreeSet<i64> {
    rx.requests_to(METRICS_PATH)
        .iter()
        .filter(|r| r.accepted())
        .flat_map(metrics_of)
        .map(|m| key(&m).2)
        .collect()
}

/// 8. The spans endpoint answers 503 for ever while metrics work, the
///    agent receiving spans all along at `--interval 1s`: every cycle's
///    metrics still arrive (before the lanes: 3 cycles in 14 s, then only
///    `queue_full` drops, the sender stuck on the oldest span batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_failing_spans_endpoint_does_not_stop_metrics() {
    let rx = Receiver::start().await;
    rx.always_path(SPANS_PATH, Some(Reply::status(503)));
    let tmp = tempfile::tempdir().unwrap();
    let (a, url) = otel_agent(&rx.url(), &tmp.path().join("a.log"), &["--interval", "1s"]);
    let c = crate::otlp::http_client();
    otlp_ready(&c, &url, &a).await;
    // spans all along: 20 every 250 ms for 10 s
    let t0 = Instant::now();
    let mut id = 1_000;
    while t0.elapsed() < Duration::from_secs(10) {
        post_spans(&c, &url, 20, 0, id).await;
        id += 20;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m = a.scrape().expect("scrape");
    let cycles = sample0(&m, "cased_agent_cycles_total") as usize;
    assert!(cycles >= 8, "{cycles} cycles in 10 s");
    // every cycle up to that scrape arrives (the last within a cycle)
    let deadline = Instant::now() + Duration::from_secs(5);
    while cycles_kept(&rx).len() < cycles && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = cycles_kept(&rx).len();
    let span_reqs = rx.requests_to(SPANS_PATH);
    eprintln!(
        "s8: {cycles} cycles, {kept} delivered; {} span requests (all 503)",
        span_reqs.len()
    );
    assert!(kept >= cycles, "only {kept} of {cycles} cycles delivered");
    assert!(span_reqs.len() >= 2, "the span lane kept retrying");
    assert!(span_reqs.iter().all(|r| r.status == Some(503)));
    let m = a.scrape().expect("scrape");
    assert!(sample0(&m, "cased_agent_batches_retried_total{kind=\"spans\"}") >= 1.0);
    assert_eq!(
        sample0(
            &m,
            "cased_agent_batches_dropped_total{kind=\"metrics\",reason=\"queue_full\"}"
        ),
        0.0
    );
    let (code, log) = a.stop(15).await;
    assert_eq!(code, Some(0), "{log}");
}

/// 9. The metrics endpoint answers 503 for ever: spans keep arriving,
///    every accepted span within seconds of being accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9_failing_metrics_endpoint_does_not_stop_spans() {
    let rx = Receiver::start().await;
    rx.always_path(METRICS_PATH, Some(Reply::status(503)));
    let tmp = tempfile::tempdir().unwrap();
    let (a, url) = otel_agent(&rx.url(), &tmp.path().join("a.log"), &["--interval", "1s"]);
    let c = crate::otlp::http_client();
    otlp_ready(&c, &url, &a).await;
    let mut accepted = BTreeSet::new();
    let mut id = 1_000;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(8) {
        if post_spans(&c, &url, 20, 0, id).await == 200 {
            accepted.extend(span_ids(id, 20));
        }
        id += 20;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(accepted.len() >= 400, "{} spans accepted", accepted.len());
    let got = |rx: &Receiver| -> BTreeSet<String> {
        rx.accepted_spans()
            .iter()
            .map(|s| s["span_id"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !accepted.is_subset(&got(&rx)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrived = got(&rx);
    let missing = accepted.difference(&arrived).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} accepted spans missing",
        accepted.len()
    );
    let metric_reqs = rx.requests_to(METRICS_PATH);
    assert!(metric_reqs.len() >= 2, "the metrics lane kept retrying");
    assert!(metric_reqs.iter().all(|r| r.status == Some(503)));
    let (code, log) = a.stop(15).await;
    assert_eq!(code, Some(0), "{log}");
}

/// 10. With a buffer: the API down (503 with `Retry-After: 1` on both
///     paths) while spans keep coming and metrics pile up past their part
///     of the cap; then back. Every span the receiver answered 200 arrives,
///     none that it refused; nothing of the spans is dropped. `buffer` is
///     the `--buffer-path` (a working directory, a full tmpfs, a file in
///     place of the directory: the memory fallback).
async fn accepted_spans_survive_an_outage(buffer: &Path, tmp: &Path, fallback: bool) {
    let rx = Receiver::start().await;
    let down = Reply::status(503).with_header("Retry-After", "1");
    rx.always_path(SPANS_PATH, Some(down.clone()));
    rx.always_path(METRICS_PATH, Some(down));
    let (a, url) = otel_agent(
        &rx.url(),
        &tmp.join("a.log"),
        &[
            "--interval",
            "100ms",
            "--batch-size",
            "20",
            "--buffer-path",
            buffer.to_str().unwrap(),
            "--buffer-max-bytes",
            "1MiB",
            "--queue-max-bytes",
            "1MiB",
        ],
    );
    let c = crate::otlp::http_client();
    otlp_ready(&c, &url, &a).await;
    // 40 requests of 40 spans of ~1.3 KiB: about 2 MiB, four times the
    // span lane's half of the cap: the end is refused at the door
    let (mut accepted, mut refused) = (BTreeSet::new(), BTreeSet::new());
    for k in 0..40u64 {
        let first = 10_000 + k * 40;
        match post_spans(&c, &url, 40, 1000, first).await {
            200 => accepted.extend(span_ids(first, 40)),
            _ => refused.extend(span_ids(first, 40)),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // metrics keep piling up meanwhile
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "s10: {} spans accepted, {} refused",
        accepted.len(),
        refused.len()
    );
    assert!(accepted.len() >= 200, "{}", accepted.len());
    assert!(!refused.is_empty(), "the span lane's bound was reached");
    let m = a.scrape().expect("scrape");
    if fallback {
        assert_eq!(
            sample0(&m, "cased_agent_buffer_memory_fallback"),
            1.0,
            "{m}"
        );
    }
    // the API is back
    rx.always_path(SPANS_PATH, None);
    rx.always_path(METRICS_PATH, None);
    let got = |rx: &Receiver| -> BTreeMap<String, usize> {
        let mut t = BTreeMap::new();
        for s in rx.accepted_spans() {
            *t.entry(s["span_id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        t
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while got(&rx).len() < accepted.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let arrived = got(&rx);
    let ids: BTreeSet<String> = arrived.keys().cloned().collect();
    let missing = accepted.difference(&ids).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} accepted spans lost",
        accepted.len()
    );
    assert_eq!(ids, accepted, "only accepted spans arrive");
    assert_eq!(
        arrived.values().sum::<usize>(),
        accepted.len(),
        "no duplicates"
    );
    let m = a.scrape().expect("scrape");
    assert!(
        !m.contains("cased_agent_batches_dropped_total{kind=\"spans\""),
        "{m}"
    );
    let (code, log) = a.stop(15).await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_disk_buffer_delivers_every_accepted_span() {
    let tmp = tempfile::tempdir().unwrap();
    accepted_spans_survive_an_outage(&tmp.path().join("buffer"), tmp.path(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_unusable_buffer_dir_delivers_every_accepted_span() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    accepted_spans_survive_an_outage(&file.join("buffer"), tmp.path(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s10_full_disk_delivers_every_accepted_span() {
    if !need_root("s10_full_disk_delivers_every_accepted_span") {
        return;
    }
    // room for a few records only: the lanes fall back to memory soon
    let fs = Tmpfs::mount("64k");
    let tmp = tempfile::tempdir().unwrap();
    accepted_spans_survive_an_outage(&fs.path.join("buffer"), tmp.path(), true).await;
}
