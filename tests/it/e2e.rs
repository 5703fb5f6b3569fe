//! The agent binary end to end against a local stand-in for the Cased API.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cli::{agent, free_port, unsafe_kill};
use crate::support::receiver::{Receiver, Reply};

const KEY: &str = "k-e2e-SECRET-42";

async fn output(mut c: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_delivers_every_metric_in_batches() {
    let rx = Receiver::start().await;
    let mut c = agent();
    c.args([
        "--once",
        "--endpoint",
        &rx.url(),
        "--cluster-id",
        "prod-e2e",
        "--node-name",
        "n-e2e",
        "--batch-size",
        "7",
    ])
    .env("CASED_API_KEY", KEY);
    let out = output(c).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains(KEY), "key in logs: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "the cased sink prints nothing on stdout"
    );

    let reqs = rx.requests();
    assert!(reqs.len() >= 3, "{} requests", reqs.len());
    let mut total = 0;
    for r in &reqs {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/v1/telemetry/metrics");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        let body = r.json();
        let top: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(top, ["cluster_id", "metrics"]);
        assert_eq!(body["cluster_id"], "prod-e2e");
        let metrics = body["metrics"].as_array().unwrap();
        assert!(!metrics.is_empty() && metrics.len() <= 7);
        total += metrics.len();
    }
    // every batch but the last is full
    for r in &reqs[..reqs.len() - 1] {
        assert_eq!(r.json()["metrics"].as_array().unwrap().len(), 7);
    }
    let all = rx.all_metrics();
    assert_eq!(all.len(), total);
    let ts = all[0]["timestamp"].as_i64().unwrap();
    for m in &all {
        assert_eq!(m["cluster_id"], "prod-e2e");
        assert_eq!(m["node_name"], "n-e2e");
        assert_eq!(m["tags"]["node"], "n-e2e");
        assert_eq!(
            m["timestamp"].as_i64().unwrap(),
            ts,
            "one cycle, one timestamp"
        );
    }
    let names: std::collections::BTreeSet<_> = all
        .iter()
        .map(|m| m["metric_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names.len(),
        all.len(),
        "a metric twice in one cycle: {names:?}"
    );
    assert!(names.contains("node.cpu.usage_percent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_nonzero_when_the_api_is_down() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut c = agent();
    c.args([
        "--once",
        "--endpoint",
        &dead,
        "--cluster-id",
        "c",
        "--request-timeout",
        "300ms",
        "--shutdown-grace",
        "1s",
    ])
    .env("CASED_API_KEY", KEY);
    let t = Instant::now();
    let out = output(c).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(8));
    assert!(!stderr.contains(KEY), "key in logs: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_is_dropped_and_once_says_so() {
    let rx = Receiver::start().await;
    rx.script([Reply::status(400).with_body("{\"error\":\"bad cluster\"}")]);
    let mut c = agent();
    c.args([
        "--once",
        "--endpoint",
        &rx.url(),
        "--cluster-id",
        "c",
        "--batch-size",
        "10",
    ])
    .env("CASED_API_KEY", KEY);
    let out = output(c).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("400"), "{stderr}");
    // the rejected batch is not retried; the others still arrive
    let reqs = rx.requests();
    let first = reqs[0].body.clone();
    assert_eq!(reqs.iter().filter(|r| r.body == first).count(), 1);
    assert!(reqs.len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_what_is_queued_then_exits_0() {
    let rx = Receiver::start().await;
    // the API fails for a while: batches pile up in the queue
    rx.script((0..6).map(|_| Reply::status(503).with_header("Retry-After", "0")));
    let port = free_port();
    let mut c = agent();
    c.args([
        "--endpoint",
        &rx.url(),
        "--cluster-id",
        "c",
        "--interval",
        "200ms",
        "--health-port",
        &port.to_string(),
        "--shutdown-grace",
        "5s",
    ])
    .env("CASED_API_KEY", KEY)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    rx.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    unsafe_kill(child.id(), 15);
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(0), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(6));
    // every cycle that was collected arrived (some more than once is allowed
    // only for retried batches; none was dropped)
    assert!(!stderr.contains("dropped"), "{stderr}");
    let all = rx.all_metrics();
    let cycles: std::collections::BTreeSet<i64> = all
        .iter()
        .map(|m| m["timestamp"].as_i64().unwrap())
        .collect();
    assert!(cycles.len() >= 3, "{} cycles delivered", cycles.len());
    // each cycle's node metrics arrive whole: every delivered cycle after
    // the first (no rates yet) has as many as the last one (container
    // metrics are left out: other tests create cgroups meanwhile)
    let per_cycle = |ts: i64| {
        all.iter()
            .filter(|m| m["timestamp"] == ts)
            .filter(|m| m["metric_name"].as_str().unwrap().starts_with("node."))
            .count()
    };
    let last = *cycles.iter().next_back().unwrap();
    for ts in cycles.iter().skip(1) {
        assert_eq!(per_cycle(*ts), per_cycle(last), "cycle {ts} incomplete");
    }
}
