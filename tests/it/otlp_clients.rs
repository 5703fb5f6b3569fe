//! The agent binary with `--enable-otel`, fed by real OpenTelemetry SDKs
//! (Python over HTTP/protobuf and gRPC, JavaScript over OTLP/JSON), and
//! overloaded by a fast sender in front of a slow API; what it forwards is
//! read back from a local stand-in for the Cased API.
//!
//! The SDKs are installed by `tests/otlp/setup.sh` (a venv at
//! `target/otlp-venv`, `tests/otlp/node_modules`); `CASED_OTLP_PYTHON` and
//! `CASED_OTLP_NODE` override where the Python interpreter and node are.
//! Missing clients fail the test under `CI=true` and skip it otherwise.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use serde_json::{Value, json};

use crate::cli::{agent, free_port, http_get};
use crate::otlp::{http_client, request};
use crate::support::receiver::{Receiver, Reply};

const KEY: &str = "k-otlp-SECRET";
const OTLP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp");

pub(crate) struct Clients {
    pub(crate) python: PathBuf,
    pub(crate) node: PathBuf,
}

/// The installed SDK clients, or `None` (skip) when they are missing and
/// CI is not set.
pub(crate) fn clients() -> Option<Clients> {
    let python = std::env::var_os("CASED_OTLP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/otlp-venv/bin/python"
            ))
        });
    let node = std::env::var_os("CASED_OTLP_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"));
    let py_ok = Command::new(&python)
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let node_ok = Command::new(&node)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && PathBuf::from(OTLP_DIR)
            .join("node_modules/@opentelemetry/exporter-trace-otlp-http")
            .is_dir();
    if py_ok && node_ok {
        return Some(Clients { python, node });
    }
    let why = format!(
        "OpenTelemetry SDK clients missing (python {}: {py_ok}, node + node_modules: {node_ok}); run tests/otlp/setup.sh",
        python.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("SKIP: {why}");
    None
}

/// The agent with the OTLP receiver on free ports; killed on drop.
pub(crate) struct Agent {
    pub(crate) child: Child,
    pub(crate) http: u16,
    pub(crate) grpc: u16,
    pub(crate) health: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    pub(crate) async fn start(api: &str, extra: &[&str]) -> Agent {
        Agent::start_env(api, extra, &[]).await
    }

    /// As [`Agent::start`], with these environment variables set.
    pub(crate) async fn start_env(
        api: &str,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Agent {
        let (http, grpc, health) = (free_port(), free_port(), free_port());
        let mut c = agent();
        c.envs(env.iter().copied());
        c.args([
            "--enable-otel",
            "--otel-port",
            &http.to_string(),
            "--otel-grpc-port",
            &grpc.to_string(),
            "--health-port",
            &health.to_string(),
            "--endpoint",
            api,
            "--api-key",
            KEY,
            "--node-name",
            "n-otlp",
        ])
        .args(extra)
        .env_remove("ENABLE_OTEL")
        .env_remove("OTEL_PORT")
        .env_remove("OTEL_GRPC_PORT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let a = Agent {
            child: c.spawn().unwrap(),
            http,
            grpc,
            health,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [http, grpc] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(Instant::now() < deadline, "OTLP port {port} never opened");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        a
    }

    /// Peak resident memory (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// A counter of the agent's `/metrics`.
    pub(crate) fn counter(&self, name: &str) -> u64 {
        let (_, text) = http_get(self.health, "/metrics").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }
}

/// Run a client script; its stdout is the manifest of what it sent.
async fn run_client(mut c: Command) -> Vec<Value> {
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("client output: {e}: {stderr}"));
    v["spans"].as_array().unwrap().clone()
}

/// A u64 the scripts print as a number (Python) or a string (JS).
fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a u64: {v}"))
}

const SPAN_KEYS: [&str; 16] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "service_name",
    "span_name",
    "span_kind",
    "timestamp",
    "duration_ns",
    "status_code",
    "status_message",
    "attributes",
    "events",
    "http_method",
    "http_status_code",
    "http_url",
    "cluster_id",
];

/// Every span the API received, checking each request's envelope.
fn received_spans(rx: &Receiver, max_batch: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for r in rx.requests() {
        if r.path != "/api/v1/telemetry/spans" {
            continue;
        }
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        let body = r.json();
        let top: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(top, ["spans"]);
        let spans = body["spans"].as_array().unwrap();
        assert!(
            !spans.is_empty() && spans.len() <= max_batch,
            "{}",
            spans.len()
        );
        // the API's field order, in the bytes as sent
        let text = std::str::from_utf8(&r.body).unwrap();
        let mut at = 0;
        for k in SPAN_KEYS {
            let pos = text[at..]
                .find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} missing or out of order"));
            at += pos;
        }
        out.extend(spans.iter().cloned());
    }
    out
}

pub(crate) fn wait_until(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
) -> impl Future<Output = ()> {
    let deadline = Instant::now() + timeout;
    let what = what.to_string();
    async move {
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The attributes every script sets on span `i`, as the API must get them.
fn expected_attributes(i: u64) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("app.retry", "3"),
        ("app.ratio", "0.25"),
        ("app.cached", "true"),
        ("app.tags", r#"["a","b"]"#),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let http = if i.is_multiple_of(2) {
        [
            ("http.method", "GET".to_string()),
            ("http.status_code", "200".to_string()),
            ("http.target", format!("/cart/{i}")),
        ]
    } else {
        [
            ("http.request.method", "POST".to_string()),
            ("http.response.status_code", "503".to_string()),
            ("url.path", format!("/pay/{i}")),
        ]
    };
    m.extend(http.into_iter().map(|(k, v)| (k.to_string(), v)));
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_js_sdks_end_to_end() {
    let Some(cl) = clients() else { return };
    let rx = Receiver::start().await;
    let a = Agent::start(
        &rx.url(),
        &[
            "--cluster-id",
            "c-sdk",
            "--interval",
            "1s",
            "--batch-size",
            "16",
        ],
    )
    .await;
    const PER: usize = 40;
    let py = |proto: &str, endpoint: String, services: &str, compression: &str| {
        let mut c = Command::new(&cl.python);
        c.arg(format!("{OTLP_DIR}/send_python.py"))
            .args(["--protocol", proto, "--endpoint", &endpoint])
            .args(["--compression", compression])
            .args(["--services", services, "--per-service", &PER.to_string()]);
        c
    };
    // HTTP/protobuf with deflate, gRPC with gzip, OTLP/JSON with gzip
    let py_http = py(
        "http",
        format!("http://127.0.0.1:{}/v1/traces", a.http),
        "py-http-checkout,py-http-cart",
        "deflate",
    );
    let py_grpc = py(
        "grpc",
        format!("127.0.0.1:{}", a.grpc),
        "py-grpc-checkout,py-grpc-cart",
        "gzip",
    );
    let mut js = Command::new(&cl.node);
    js.current_dir(OTLP_DIR)
        .arg("send_js.mjs")
        .arg("--gzip")
        .args([
            "--endpoint",
            &format!("http://127.0.0.1:{}/v1/traces", a.http),
        ])
        .args([
            "--services",
            "js-checkout,js-cart",
            "--per-service",
            &PER.to_string(),
        ]);
    let (m1, m2, m3) = tokio::join!(run_client(py_http), run_client(py_grpc), run_client(js));
    let sent: Vec<Value> = [m1, m2, m3].concat();
    assert_eq!(sent.len(), 6 * PER);
    let services: BTreeSet<String> = sent
        .iter()
        .map(|s| s["service_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(services.len(), 6);

    // everything forwarded, and one interval's trace metrics per service
    let trace_metrics = |svc: &str| -> Vec<Value> {
        rx.all_metrics()
            .into_iter()
            .filter(|m| {
                m["metric_name"].as_str().unwrap().starts_with("trace.")
                    && m["tags"]["service"] == svc
            })
            .collect()
    };
    wait_until("spans and trace metrics", Duration::from_secs(20), || {
        received_spans(&rx, 16).len() >= sent.len()
            && services.iter().all(|s| trace_metrics(s).len() >= 6)
    })
    .await;

    // spans: exactly the ones sent, each with the SPEC §3 fields and values
    let got = received_spans(&rx, 16);
    assert_eq!(got.len(), sent.len(), "a span delivered twice or unknown");
    let by_id: HashMap<&str, &Value> = got
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    assert_eq!(by_id.len(), got.len());
    for want in &sent {
        let id = want["span_id"].as_str().unwrap();
        let s = by_id
            .get(id)
            .unwrap_or_else(|| panic!("span {id} not delivered"));
        let obj = s.as_object().unwrap();
        assert_eq!(obj.len(), SPAN_KEYS.len(), "{s}");
        let i: u64 = want["span_name"].as_str().unwrap()[3..].parse().unwrap();
        let (start, end) = (num(&want["start_ns"]), num(&want["end_ns"]));
        for k in [
            "trace_id",
            "parent_span_id",
            "service_name",
            "span_name",
            "span_kind",
            "status_code",
            "status_message",
            "http_method",
            "http_status_code",
            "http_url",
        ] {
            assert_eq!(s[k], want[k], "{k} of {s}");
        }
        assert_eq!(s["timestamp"], json!(start / 1_000_000), "{s}");
        assert_eq!(s["duration_ns"], json!(end - start), "{s}");
        assert_eq!(s["cluster_id"], "c-sdk");
        let attrs: BTreeMap<String, String> =
            serde_json::from_value(s["attributes"].clone()).unwrap();
        assert_eq!(attrs, expected_attributes(i), "{s}");
        let events: Value = serde_json::from_str(s["events"].as_str().unwrap()).unwrap();
        let want_events = match &want["event"] {
            Value::Null => json!([]),
            e => json!([{
                "name": e["name"],
                "time_unix_nano": num(&e["time_unix_nano"]),
                "attributes": e["attributes"],
            }]),
        };
        assert_eq!(events, want_events, "{s}");
    }

    // trace.* metrics: counts and error rates exact, percentiles within 1%
    for svc in &services {
        let mut durs: Vec<f64> = sent
            .iter()
            .filter(|s| s["service_name"] == svc.as_str())
            .map(|s| (num(&s["end_ns"]) - num(&s["start_ns"])) as f64 / 1e6)
            .collect();
        durs.sort_by(f64::total_cmp);
        let errors = sent
            .iter()
            .filter(|s| s["service_name"] == svc.as_str() && s["status_code"] == 2)
            .count();
        assert_eq!((durs.len(), errors), (PER, 8));
        let ms = trace_metrics(svc);
        let by_name: HashMap<&str, &Value> = ms
            .iter()
            .map(|m| (m["metric_name"].as_str().unwrap(), m))
            .collect();
        assert_eq!(
            ms.len(),
            6,
            "one interval holds the service's one request: {ms:?}"
        );
        for m in &ms {
            assert_eq!(m["tags"], json!({"node": "n-otlp", "service": svc}));
            assert_eq!(m["cluster_id"], "c-sdk");
            assert_eq!(m["node_name"], "n-otlp");
        }
        let value = |n: &str| by_name[n]["value"].as_f64().unwrap();
        let unit = |n: &str| by_name[n]["unit"].as_str().unwrap();
        assert_eq!(value("trace.span_count"), PER as f64);
        assert_eq!(unit("trace.span_count"), "count");
        assert_eq!(value("trace.error_rate"), 20.0);
        assert_eq!(unit("trace.error_rate"), "percent");
        let avg = durs.iter().sum::<f64>() / PER as f64;
        assert!(
            (value("trace.duration_avg") - avg).abs() < 1e-9 * avg,
            "{svc}"
        );
        for (name, q) in [
            ("trace.duration_p50", 0.50),
            ("trace.duration_p95", 0.95),
            ("trace.duration_p99", 0.99),
        ] {
            let exact = durs[(q * (PER as f64 - 1.0)) as usize];
            let got = value(name);
            assert!(
                (got - exact).abs() <= 0.01 * exact,
                "{svc} {name}: {got} vs {exact}"
            );
            assert_eq!(unit(name), "ms");
        }
    }
    assert_eq!(
        a.counter("cased_agent_spans_received_total"),
        sent.len() as u64
    );
    assert_eq!(a.counter("cased_agent_spans_refused_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_refuses_then_delivers_every_accepted_span() {
    let rx = Receiver::start().await;
    // a slow API: the first 40 requests take 150 ms each (one at a time)
    rx.script((0..40).map(|_| Reply::Hang(Duration::from_millis(150))));
    let a = Agent::start(
        &rx.url(),
        &[
            "--cluster-id",
            "c-load",
            "--interval",
            "1s",
            "--batch-size",
            "100",
            "--queue-max-bytes",
            "2MiB",
        ],
    )
    .await;
    let c = http_client();
    let url = format!("http://127.0.0.1:{}/v1/traces", a.http);
    // push batches of 512 spans for 3 s, far more than 150 ms per 100 spans
    let mut accepted: BTreeSet<u64> = BTreeSet::new();
    let (mut refused, mut next) = (0u64, 1u64);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let body = request("load", 512, 0, next).encode_to_vec();
        let resp = c
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => accepted.extend(next..next + 512),
            503 => {
                assert_eq!(resp.headers()["retry-after"], "1");
                refused += 512;
            }
            s => panic!("status {s}"),
        }
        next += 512;
    }
    let sent = next - 1;
    assert!(refused > 0, "never refused ({sent} spans sent)");
    assert!(!accepted.is_empty());
    eprintln!(
        "overload: sent {sent}, accepted {}, refused {refused}",
        accepted.len()
    );

    // the API recovers: every accepted span arrives, nothing else
    let span_ids = || -> Vec<u64> {
        received_spans(&rx, 100)
            .iter()
            .map(|s| u64::from_str_radix(s["span_id"].as_str().unwrap(), 16).unwrap())
            .collect()
    };
    wait_until("every accepted span", Duration::from_secs(30), || {
        span_ids().len() >= accepted.len()
    })
    .await;
    let got = span_ids();
    let got_set: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(got.len(), got_set.len(), "a span delivered twice");
    assert_eq!(got_set, accepted);

    // memory stayed bounded (2 MiB queue, 4 requests decoded at once): the
    // stated ceiling is 64 MiB of peak RSS (about 21 MiB measured, debug build)
    let peak = a.peak_rss_kib();
    eprintln!("overload: agent peak RSS {} MiB", peak / 1024);
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    assert_eq!(
        a.counter("cased_agent_spans_received_total"),
        accepted.len() as u64
    );
    // refused before decoding (no span count known) or after: every
    // refused request is counted
    assert_eq!(
        a.counter(r#"cased_agent_otlp_requests_total{transport="http",outcome="refused"}"#),
        refused / 512
    );
    assert!(a.counter("cased_agent_spans_refused_total") <= refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_sink_prints_spans_one_per_line_beside_metrics() {
    use std::io::BufRead;
    let (http, grpc, health) = (free_port(), free_port(), free_port());
    let mut c = agent();
    c.args(["--enable-otel", "--sink", "stdout", "--interval", "1s"])
        .args(["--otel-port", &http.to_string()])
        .args(["--otel-grpc-port", &grpc.to_string()])
        .args(["--health-port", &health.to_string()])
        .args(["--cluster-id", "c-out", "--node-name", "n-out"])
        .env_remove("ENABLE_OTEL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let a = Agent {
        child,
        http,
        grpc,
        health,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", http))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "OTLP port never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = crate::otlp::fixture("examples-HEAD-ac2c4b5/trace.json");
    let resp = http_client()
        .post(format!("http://127.0.0.1:{http}/v1/traces"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // read lines until the span and its service's trace metrics are there
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("\"trace.duration_p99\"");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let lines = tokio::time::timeout(Duration::from_secs(10), lines)
        .await
        .expect("no trace metrics on stdout")
        .unwrap();
    drop(a);
    let spans: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("{\"span\":"))
        .collect();
    assert_eq!(spans.len(), 1, "{lines:?}");
    assert_eq!(
        spans[0].as_str(),
        r#"{"span":{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","parent_span_id":"eee19b7ec3c1b173","service_name":"my.service","span_name":"I'm a server span","span_kind":2,"timestamp":1544712660000,"duration_ns":1000000000,"status_code":0,"status_message":"","attributes":{"my.span.attr":"some value"},"events":"[]","http_method":"","http_status_code":0,"http_url":"","cluster_id":"c-out"}}"#
    );
    // every other line is a metric
    for l in lines.iter().filter(|l| !l.starts_with("{\"span\":")) {
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v["metric_name"].is_string(), "{l}");
    }
    let count = lines
        .iter()
        .find(|l| l.contains("\"trace.span_count\""))
        .unwrap();
    let v: Value = serde_json::from_str(count).unwrap();
    assert_eq!(v["value"], 1.0);
    assert_eq!(v["tags"], json!({"node": "n-out", "service": "my.service"}));
}
