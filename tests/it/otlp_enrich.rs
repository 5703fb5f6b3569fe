//! Pod metadata on OTLP spans and metrics, through the agent binary (root).
//!
//! The fake API server holds four pods of the node: `web-a` (StatefulSet
//! `db`, one container) at 10.231.1.2, `web-b` (DaemonSet `agentd`, two
//! containers) at 10.231.2.2, `named-c` (namespace `other`, StatefulSet
//! `cache`) at an address nobody uses, and a host-network pod at
//! 10.231.1.1, the host's end of the first veth. The test makes three
//! network namespaces, each with a veth pair to the host (10.231.N.2 in the
//! namespace, 10.231.N.1 on the host), and runs the Python OTel SDK in them
//! against the agent (listening on 0.0.0.0 in the host): from namespace 1
//! (web-a) over HTTP and gRPC, from namespace 2 (web-b) over HTTP and again
//! with a resource naming `other/named-c`, from namespace 3 (an address no
//! pod has), and from the host itself to 10.231.1.1 (the node's address).
//! Each client sends one trace export and one metrics export.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cgroup_support::need_root;
use crate::fakeapi::FakeApi;
use crate::otlp_clients::{Agent, wait_until};
use crate::support::receiver::Receiver;

const NODE: &str = "n-otlp";
const SPANS: u64 = 7;

/// One trace export of `n` spans and one metrics export (an up-down
/// counter at `n`), both flushed at shutdown (exactly one request each).
const CLIENT: &str = r#"
import json, sys
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
proto, host, port, service, n, extra = sys.argv[1:7]
n = int(n)
attrs = {"service.name": service}
attrs.update(json.loads(extra))
res = Resource.create(attrs)
if proto == "http":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    spans = OTLPSpanExporter(endpoint=f"http://{host}:{port}/v1/traces")
    points = OTLPMetricExporter(endpoint=f"http://{host}:{port}/v1/metrics")
else:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    spans = OTLPSpanExporter(endpoint=f"{host}:{port}", insecure=True)
    points = OTLPMetricExporter(endpoint=f"{host}:{port}", insecure=True)
tp = TracerProvider(resource=res)
tp.add_span_processor(BatchSpanProcessor(spans, schedule_delay_millis=60000))
tracer = tp.get_tracer("enrich")
for i in range(n):
    with tracer.start_as_current_span(f"op{i}") as s:
        s.set_attribute("i", i)
        if service == "svc-named":
            s.set_attribute("k8s.namespace.name", "mine")
tp.shutdown()
reader = PeriodicExportingMetricReader(points, export_interval_millis=600000)
mp = MeterProvider(resource=res, metric_readers=[reader])
mp.get_meter("enrich").create_up_down_counter("queue.depth").add(n)
mp.shutdown()
"#;

fn pod(name: &str, ns: &str, ip: &str, owner: (&str, &str), containers: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
            "resourceVersion": "1",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                "uid": "99999999-0000-0000-0000-000000000001", "controller": true}]},
        "spec": {"nodeName": NODE,
            "containers": containers.iter().map(|c| json!({"name": c, "image": "x"})).collect::<Vec<_>>()},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "hostIP": "10.231.9.9", "hostIPs": [{"ip": "10.231.9.9"}]}
    })
}

/// Network namespaces and veths made by the test; deleted on drop.
struct Nets(Vec<String>, Vec<String>);

impl Drop for Nets {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        for l in &self.1 {
            // usually gone with its namespace already
            let _ = Command::new("ip")
                .args(["link", "del", l])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}: {st}");
}

/// Namespace `i` (1-based) with 10.231.i.2/24, its host end 10.231.i.1/24.
fn make_nets(tag: &str) -> (Nets, Vec<String>) {
    let mut nets = Nets(Vec::new(), Vec::new());
    let mut names = Vec::new();
    for i in 1..=3 {
        let ns = format!("cased-enr{i}-{tag}");
        let (host, inner) = (format!("cen{i}h{tag}"), format!("cen{i}n{tag}"));
        ip(&["netns", "add", &ns]);
        nets.0.push(ns.clone());
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &ns,
        ]);
        nets.1.push(host.clone());
        ip(&["addr", "add", &format!("10.231.{i}.1/24"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.231.{i}.2/24"),
            "dev",
            &inner,
        ]);
        ip(&["-n", &ns, "link", "set", &inner, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        names.push(ns);
    }
    (nets, names)
}

/// The k8s.* attributes of a span.
fn k8s_attrs(span: &Value) -> BTreeMap<String, String> {
    span["attributes"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("k8s."))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The pod tags of every metric `name` of `service`, and their values' sum.
fn pod_tags_of(rx: &Receiver, service: &str, name: &str) -> (Vec<BTreeMap<String, String>>, f64) {
    let ms: Vec<Value> = rx
        .all_metrics()
        .into_iter()
        .filter(|m| m["metric_name"] == name && m["tags"]["service"] == service)
        .collect();
    let keys = ["namespace", "pod", "workload", "workload_kind", "pod_uid"];
    let tags = ms
        .iter()
        .map(|m| {
            let t = m["tags"].as_object().unwrap();
            keys.iter()
                .filter_map(|k| Some((k.to_string(), t.get(*k)?.as_str()?.to_string())))
                .collect()
        })
        .collect();
    (tags, ms.iter().map(|m| m["value"].as_f64().unwrap()).sum())
}

/// The Python SDK's venv (tests/otlp/setup.sh), or `None` (skip) outside
/// CI when it is missing.
fn python() -> Option<std::path::PathBuf> {
    let python = std::env::var_os("CASED_OTLP_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/otlp-venv/bin/python").into()
        });
    let ok = Command::new(&python)
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let why = format!(
        "the Python OTel SDK is missing at {}: run tests/otlp/setup.sh",
        python.display()
    );
    assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{why}");
    eprintln!("SKIP: {why}");
    None
}

fn start_api() -> std::sync::Arc<FakeApi> {
    let api = FakeApi::start();
    api.put_all(
        "pods",
        [
            pod(
                "web-a",
                "shop",
                "10.231.1.2",
                ("StatefulSet", "db"),
                &["app"],
            ),
            pod(
                "web-b",
                "shop",
                "10.231.2.2",
                ("DaemonSet", "agentd"),
                &["app", "sidecar"],
            ),
            pod(
                "named-c",
                "other",
                "10.231.7.7",
                ("StatefulSet", "cache"),
                &["redis"],
            ),
            {
                let mut p = pod(
                    "proxy",
                    "kube-system",
                    "10.231.1.1",
                    ("DaemonSet", "proxy"),
                    &["p"],
                );
                p["spec"]["hostNetwork"] = json!(true);
                p
            },
        ],
    );
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_carry_their_pods_metadata() {
    if !need_root("OTLP enrichment test") {
        return;
    }
    let Some(python) = python() else { return };
    let tag = format!("{}", std::process::id() % 10000);
    let (_nets, ns) = make_nets(&tag);
    let api = start_api();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let rx = Receiver::start().await;
    let a = Agent::start_env(
        &rx.url(),
        &["--cluster-id", "c-enrich", "--interval", "1s"],
        &[("KUBECONFIG", kubeconfig.as_os_str())],
    )
    .await;
    wait_until("the pod cache", Duration::from_secs(20), || {
        a.counter("cased_agent_k8s_pods_cached") == 4
    })
    .await;
    run_clients(&python, &script, &ns, &a).await;
    let services = [
        "svc-a-http",
        "svc-a-grpc",
        "svc-b",
        "svc-named",
        "svc-unknown",
        "svc-host",
    ];
    wait_until(
        "every span, trace and OTLP metric",
        Duration::from_secs(30),
        || {
            rx.accepted_spans().len() as u64 == 6 * SPANS
                && services.iter().all(|s| {
                    pod_tags_of(&rx, s, "trace.span_count").1 == SPANS as f64
                        && !pod_tags_of(&rx, s, "queue.depth").0.is_empty()
                })
        },
    )
    .await;
    check_spans(&rx);
    check_metrics(&rx);
    for (result, n) in [
        ("peer", 3),
        ("resource", 1),
        ("host_network", 1),
        ("unknown", 1),
    ] {
        let name = format!("cased_agent_otlp_enrichment_total{{result=\"{result}\"}}");
        // one trace and one metrics resource per client
        assert_eq!(a.counter(&name), 2 * n, "{name}");
    }
}

/// Every client, one after the other: (namespace or the host, protocol,
/// the agent's address, service, resource attributes).
async fn run_clients(python: &std::path::Path, script: &std::path::Path, ns: &[String], a: &Agent) {
    let (http, grpc) = (a.http.to_string(), a.grpc.to_string());
    let named = r#"{"k8s.pod.name": "named-c", "k8s.namespace.name": "other"}"#;
    // (namespace or host, proto, agent address, service, resource)
    let runs = [
        (Some(&ns[0]), "http", "10.231.1.1", "svc-a-http", "{}"),
        (Some(&ns[0]), "grpc", "10.231.1.1", "svc-a-grpc", "{}"),
        (Some(&ns[1]), "http", "10.231.2.1", "svc-b", "{}"),
        (Some(&ns[1]), "http", "10.231.2.1", "svc-named", named),
        (Some(&ns[2]), "grpc", "10.231.3.1", "svc-unknown", "{}"),
        (None, "http", "10.231.1.1", "svc-host", "{}"),
    ];
    for (netns, proto, addr, service, extra) in runs {
        let mut c = match netns {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n]).arg(python);
                c
            }
            None => Command::new(python),
        };
        let port = if proto == "http" { &http } else { &grpc };
        c.arg(script)
            .args([proto, addr, port, service, &SPANS.to_string(), extra]);
        let out = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{service}: {stderr}");
        assert!(
            !stderr.contains("rror"),
            "{service} logged an error: {stderr}"
        );
    }
}

fn pod_a() -> BTreeMap<String, String> {
    map(&[
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "web-a"),
        ("k8s.pod.uid", "uid-web-a"),
        ("k8s.node.name", NODE),
        ("k8s.statefulset.name", "db"),
        ("k8s.container.name", "app"),
    ])
}

fn check_spans(rx: &Receiver) {
    let want_b = map(&[
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "web-b"),
        ("k8s.pod.uid", "uid-web-b"),
        ("k8s.node.name", NODE),
        ("k8s.daemonset.name", "agentd"),
    ]);
    // the span's own k8s.namespace.name stays; the rest is named-c's
    let want_named = map(&[
        ("k8s.namespace.name", "mine"),
        ("k8s.pod.name", "named-c"),
        ("k8s.pod.uid", "uid-named-c"),
        ("k8s.node.name", NODE),
        ("k8s.statefulset.name", "cache"),
        ("k8s.container.name", "redis"),
    ]);
    let mut per_service: BTreeMap<String, u64> = BTreeMap::new();
    for s in rx.accepted_spans() {
        let svc = s["service_name"].as_str().unwrap().to_string();
        let want = match svc.as_str() {
            "svc-a-http" | "svc-a-grpc" => pod_a(),
            "svc-b" => want_b.clone(),
            "svc-named" => want_named.clone(),
            "svc-unknown" | "svc-host" => BTreeMap::new(),
            other => panic!("unexpected service {other}"),
        };
        assert_eq!(k8s_attrs(&s), want, "{svc}: {s}");
        assert!(s["attributes"]["i"].is_string(), "{s}");
        *per_service.entry(svc).or_default() += 1;
    }
    assert!(per_service.values().all(|n| *n == SPANS), "{per_service:?}");
    assert_eq!(per_service.len(), 6);
}

fn check_metrics(rx: &Receiver) {
    let tags = |pairs: &[(&str, &str)]| vec![map(pairs)];
    let a = [
        ("namespace", "shop"),
        ("pod", "web-a"),
        ("workload", "db"),
        ("workload_kind", "StatefulSet"),
    ];
    let b = [
        ("namespace", "shop"),
        ("pod", "web-b"),
        ("workload", "agentd"),
        ("workload_kind", "DaemonSet"),
    ];
    let c = [
        ("namespace", "other"),
        ("pod", "named-c"),
        ("workload", "cache"),
        ("workload_kind", "StatefulSet"),
    ];
    for (svc, want) in [
        ("svc-a-http", tags(&a)),
        ("svc-a-grpc", tags(&a)),
        ("svc-b", tags(&b)),
        ("svc-named", tags(&c)),
        ("svc-unknown", tags(&[])),
        ("svc-host", tags(&[])),
    ] {
        for name in ["trace.span_count", "trace.duration_p99", "queue.depth"] {
            let (got, sum) = pod_tags_of(rx, svc, name);
            // one series per service here, in one interval
            assert_eq!(got, want, "{svc} {name}");
            if name != "trace.duration_p99" {
                assert_eq!(sum, SPANS as f64, "{svc} {name}");
            }
        }
    }
}
