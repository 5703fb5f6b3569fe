//! The binary from outside: bad input exits 2 with one line naming the
//! flag, `--once` prints metrics, the health port answers, SIGTERM exits 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cased-agent"));
    // the environment of the test runner must not leak into the agent
    for v in [
        "CASED_API_ENDPOINT",
        "CASED_API_KEY",
        "CASED_CLUSTER_ID",
        "NODE_NAME",
        "CASED_INTERVAL",
        "CASED_BATCH_SIZE",
        "CASED_SINK",
        "HEALTH_PORT",
        "RUST_LOG",
    ] {
        c.env_remove(v);
    }
    c
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

#[test]
fn bad_values_exit_2_with_one_line() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--interval", "fast"], &[], "--interval"),
        (&["--interval", "0s"], &[], "--interval"),
        (&[], &[("CASED_INTERVAL", "15")], "--interval"),
        (&["--batch-size", "0"], &[], "--batch-size"),
        (&["--batch-size", "-3"], &[], "--batch-size"),
        (&["--otel-port", "65536"], &[], "--otel-port"),
        (&["--health-port", "http"], &[], "--health-port"),
        (&["--otel-grpc-port", "0"], &[], "--otel-grpc-port"),
        (&["--endpoint", "app.cased.com"], &[], "--endpoint"),
        (&["--endpoint", "ftp://app.cased.com"], &[], "--endpoint"),
        (&["--sink", "cased", "--cluster-id", "c"], &[], "--api-key"),
        (
            &["--sink", "cased", "--api-key", "k-SECRET-1"],
            &[],
            "--cluster-id",
        ),
        (&[], &[("CASED_API_KEY", "k-SECRET-2")], "--cluster-id"),
        (&["--enable-ebpf=yes"], &[], "--enable-ebpf"),
        (&[], &[("ENABLE_OTEL", "on")], "--enable-otel"),
        (&["--compression", "zip"], &[], "--compression"),
        (&["--log-format", "xml"], &[], "--log-format"),
        (&["--buffer-max-bytes", "lots"], &[], "--buffer-max-bytes"),
        (&["--sink", "kafka"], &[], "--sink"),
    ];
    for (args, env, flag) in cases {
        let mut c = agent();
        c.args(*args).arg("--once");
        for (k, v) in *env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?}: {stderr} should name {flag}"
        );
        assert!(!stderr.contains("SECRET"), "API key leaked: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn flag_beats_variable() {
    let out = agent()
        .args([
            "--once",
            "--node-name",
            "from-flag",
            "--proc-path",
            "/nonexistent-proc",
        ])
        .env("NODE_NAME", "from-env")
        .env("CASED_CLUSTER_ID", "c-env")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // nothing can be read from a missing /proc, but what is printed carries the flag's name
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["node_name"], "from-flag");
        assert_eq!(v["cluster_id"], "c-env");
    }
}

#[test]
fn once_prints_node_metrics_as_json_lines() {
    let out = agent()
        .args(["--once", "--node-name", "n-test"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["node_name"], "n-test");
        assert_eq!(v["cluster_id"], "local");
        assert!(v["value"].is_number());
        assert!(v["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
        names.insert(v["metric_name"].as_str().unwrap().to_string());
    }
    // the priming sample makes rates present in a one-shot run
    for n in [
        "node.cpu.usage_percent",
        "node.cpu.user_percent",
        "node.memory.total",
        "node.network.rx_bytes_per_sec",
        "node.load.1",
    ] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
}

#[test]
fn health_ready_metrics_and_sigterm() {
    let port = free_port();
    let mut child = agent()
        .args(["--interval", "200ms", "--health-port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ready = None;
    while Instant::now() < deadline {
        if let Some((200, _)) = http_get(port, "/readyz") {
            ready = Some(());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready.is_some(), "never ready");
    let (status, _) = http_get(port, "/healthz").unwrap();
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(700));
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let cycles: f64 = body
        .lines()
        .find(|l| l.starts_with("cased_agent_cycles_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("cycles counter");
    assert!(cycles >= 3.0, "only {cycles} cycles in ~0.9 s at 200ms");
    assert!(body.contains("cased_agent_metrics_produced_total"));
    assert!(body.contains("cased_agent_queue_bytes"));
    let (status, _) = http_get(port, "/nope").unwrap();
    assert_eq!(status, 404);

    let t = Instant::now();
    unsafe_kill(child.id(), 15);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(5));
}

pub fn unsafe_kill(pid: u32, sig: i32) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
