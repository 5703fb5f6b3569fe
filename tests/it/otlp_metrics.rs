//! OTLP metrics from real SDKs into Cased metrics, through the agent
//! binary: the Python SDK (cumulative, the default) over HTTP/protobuf and
//! gRPC, the JavaScript SDK with DELTA temporality over OTLP/JSON. The
//! clients (tests/otlp/send_*_metrics.*) export three known phases, each in
//! its own agent interval; the test reads back what reached the API.
//!
//! Clients: tests/otlp/setup.sh (skipped when missing, fails under CI).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::otlp_clients::{Agent, clients, wait_until};
use crate::support::receiver::Receiver;

const OTLP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp");
/// Seconds between the clients' phases: three agent intervals.
const GAP: &str = "3";

/// The values of one metric of `service`, in cycle order, with the tags
/// of each checked.
fn values(rx: &Receiver, service: &str, name: &str) -> Vec<f64> {
    let mut ms: Vec<Value> = rx
        .all_metrics()
        .into_iter()
        .filter(|m| m["metric_name"] == name && m["tags"]["service"] == service)
        .collect();
    ms.sort_by_key(|m| m["timestamp"].as_i64().unwrap());
    for m in &ms {
        assert_eq!(m["tags"]["node"], "n-otlp", "{m}");
        assert_eq!(m["cluster_id"], "c-metrics", "{m}");
        let route = if name == "requests" { "/a" } else { "" };
        assert_eq!(m["tags"]["route"].as_str().unwrap_or(""), route, "{m}");
    }
    ms.iter().map(|m| m["value"].as_f64().unwrap()).collect()
}

fn unit_of(rx: &Receiver, service: &str, name: &str) -> String {
    rx.all_metrics()
        .into_iter()
        .find(|m| m["metric_name"] == name && m["tags"]["service"] == service)
        .map(|m| m["unit"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// What one client's phases must have become. `delta`: the first phase
/// counts too (a cumulative series' first sight gives nothing).
fn check_service(rx: &Receiver, svc: &str, delta: bool) {
    let skip = usize::from(!delta);
    let (counts, sums) = ([1.0, 100.0, 10.0], [7.0, 5050.0, 10000.0]);
    assert_eq!(
        values(rx, svc, "requests"),
        [3.0, 17.0, 10.0][skip..],
        "{svc}"
    );
    assert_eq!(values(rx, svc, "queue.depth"), [10.0, 7.0, 12.0], "{svc}");
    assert_eq!(values(rx, svc, "temperature"), [42.5, 17.0, 3.0], "{svc}");
    assert_eq!(unit_of(rx, svc, "temperature"), "Cel");
    assert_eq!(unit_of(rx, svc, "lat.explicit.count"), "count");
    assert_eq!(unit_of(rx, svc, "lat.explicit.p99"), "ms");
    for h in ["lat.explicit", "lat.exp"] {
        assert_eq!(
            values(rx, svc, &format!("{h}.count")),
            counts[skip..],
            "{svc} {h}"
        );
        assert_eq!(
            values(rx, svc, &format!("{h}.sum")),
            sums[skip..],
            "{svc} {h}"
        );
    }
    // 1..=100: the true p50, p95, p99 are 50, 95, 99. Explicit buckets
    // (0,5,10,25,50,75,100,...): linear inside the bucket is exact for
    // uniform values. Exponential (160 buckets over 1..1000: scale ≥ 4):
    // within √β − 1 = 2.2%.
    let exp_bound = (0.5f64 * 2f64.powi(-4)).exp2() - 1.0;
    for (suffix, want) in [("p50", 50.0), ("p95", 95.0), ("p99", 99.0)] {
        let got = values(rx, svc, &format!("lat.explicit.{suffix}"));
        assert_eq!(got.len(), 3 - skip, "{svc} {suffix}: {got:?}");
        let interval = got[1 - skip];
        assert!(
            (interval - want).abs() < 1e-6,
            "{svc} explicit {suffix}: {interval}"
        );
        // 10 x 1000 in (750, 1000]
        let last = got[2 - skip];
        assert!((750.0..=1000.0).contains(&last), "{svc} {suffix}: {last}");
        let got = values(rx, svc, &format!("lat.exp.{suffix}"));
        let interval = got[1 - skip];
        let err = (interval / want - 1.0).abs();
        assert!(
            err <= exp_bound,
            "{svc} exp {suffix}: {interval} (err {err})"
        );
        let last = got[2 - skip];
        assert!(
            (last / 1000.0 - 1.0).abs() <= exp_bound,
            "{svc} exp {suffix}: {last}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cumulative_and_js_delta_sdks() {
    let Some(cl) = clients() else { return };
    let js_metrics = std::path::Path::new(OTLP_DIR)
        .join("node_modules/@opentelemetry/exporter-metrics-otlp-http")
        .is_dir();
    if !js_metrics {
        let why = "the JS metrics exporter is missing: run tests/otlp/setup.sh";
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{why}");
        eprintln!("SKIP: {why}");
        return;
    }
    let rx = Receiver::start().await;
    let a = Agent::start(
        &rx.url(),
        &["--cluster-id", "c-metrics", "--interval", "1s"],
    )
    .await;
    let py = |proto: &str, endpoint: String, service: &str| {
        let mut c = Command::new(&cl.python);
        c.arg(format!("{OTLP_DIR}/send_python_metrics.py"))
            .args(["--protocol", proto, "--endpoint", &endpoint])
            .args(["--service", service, "--gap", GAP]);
        c
    };
    let py_http = py(
        "http",
        format!("http://127.0.0.1:{}/v1/metrics", a.http),
        "py-http",
    );
    let py_grpc = py("grpc", format!("127.0.0.1:{}", a.grpc), "py-grpc");
    let mut js = Command::new(&cl.node);
    js.current_dir(OTLP_DIR)
        .arg("send_js_metrics.mjs")
        .args([
            "--endpoint",
            &format!("http://127.0.0.1:{}/v1/metrics", a.http),
        ])
        .args(["--service", "js-delta", "--gap", GAP]);
    let run = |mut c: Command| {
        tokio::task::spawn_blocking(move || {
            let out = c.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(out.status.success(), "client failed: {stderr}");
            assert!(!stderr.contains("rror"), "client logged an error: {stderr}");
        })
    };
    let (r1, r2, r3) = tokio::join!(run(py_http), run(py_grpc), run(js));
    r1.unwrap();
    r2.unwrap();
    r3.unwrap();
    wait_until("every phase's metrics", Duration::from_secs(30), || {
        ["py-http", "py-grpc", "js-delta"]
            .iter()
            .all(|s| values(&rx, s, "temperature").len() >= 3)
    })
    .await;
    // one more interval: nothing late
    tokio::time::sleep(Duration::from_secs(2)).await;
    check_service(&rx, "py-http", false);
    check_service(&rx, "py-grpc", false);
    check_service(&rx, "js-delta", true);
    assert!(a.counter("cased_agent_otlp_metric_points_received_total") >= 3 * 3 * 5);
    assert_eq!(
        a.counter("cased_agent_otlp_metric_points_rejected_total"),
        0
    );
}
