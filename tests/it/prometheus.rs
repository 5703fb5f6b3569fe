//! `/metrics` as scrapers read it: the OpenMetrics body for a scraper that
//! asks for it, the classic Prometheus text (0.0.4) otherwise, each checked
//! with Debian's `promtool check metrics`, and a real Prometheus scraping
//! the agent's health port (through a relay that records what it asked for
//! and got) and answering over its HTTP API. Without
//! `promtool`/`prometheus` (Debian package `prometheus`) the tests fail
//! under `CI=true` and skip otherwise.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{agent, free_port};

/// The header Prometheus 2.x scrapes with.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The tool on PATH, or `None` (skip) outside CI.
fn need_tool(tool: &str) -> Option<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{tool} is missing (Debian package prometheus), and CI=true requires it");
    }
    eprintln!("{tool} not installed: skipped (under CI=true this is a failure)");
    None
}

/// HTTP/1.0 GET (no chunked answers): (status, head, body).
fn get(port: u16, path: &str, accept: Option<&str>) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_string()))
}

fn content_type(head: &str) -> &str {
    head.lines()
        .find_map(|l| l.strip_prefix("content-type:"))
        .map_or("", str::trim)
}

/// `promtool check metrics` of a body: its complaints, one a line.
fn promtool(body: &str) -> Vec<String> {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(out.status.success(), lines.is_empty(), "{text}");
    lines
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent in local mode, `--interval 1s`, its health port.
fn start_agent(home: &std::path::Path) -> (Killed, u16) {
    let port = free_port();
    let child = agent()
        .args(["--sink", "stdout", "--interval", "1s"])
        .args(["--health-port", &port.to_string()])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while get(port, "/readyz", None).is_none_or(|r| r.0 != 200) {
        assert!(t.elapsed() < Duration::from_secs(20), "agent never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Killed(child), port)
}

#[test]
fn metrics_bodies_by_accept_pass_promtool() {
    if need_tool("promtool").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let (_agent, port) = start_agent(home.path());
    // no Accept, or only text/plain: the classic text
    for accept in [None, Some("text/plain"), Some("text/plain;version=0.0.4")] {
        let (status, head, body) = get(port, "/metrics", accept).unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            content_type(&head),
            "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(!body.contains("# EOF") && !body.contains("# UNIT"));
        assert!(body.contains("# TYPE cased_agent_cycles_total counter\n"));
        assert!(body.contains("# HELP cased_agent_cycles_total "));
        assert!(body.contains("# TYPE cased_agent_queue_bytes gauge\n"));
        assert_eq!(promtool(&body), Vec::<String>::new(), "{accept:?}");
    }
    // what Prometheus asks for: OpenMetrics, as prometheus-client wrote it
    let (status, head, body) = get(port, "/metrics", Some(PROMETHEUS_ACCEPT)).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        content_type(&head),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(head.contains("vary: accept"));
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE cased_agent_cycles counter\ncased_agent_cycles_total "));
    // promtool 2.42 lints the classic format only: read as that, an
    // OpenMetrics counter's samples have no help of their own; nothing else
    let counters = body
        .lines()
        .filter(|l| l.starts_with("# TYPE ") && l.ends_with(" counter"))
        .count();
    let complaints = promtool(&body);
    assert_eq!(complaints.len(), counters, "{complaints:?}");
    assert!(
        complaints
            .iter()
            .all(|c| c.starts_with("cased_agent_") && c.ends_with("_total no help text")),
        "{complaints:?}"
    );
}

/// Prometheus' JSON answer to an API path.
fn api(port: u16, path: &str) -> Option<Value> {
    let (status, _, body) = get(port, path, None)?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn wait_api(what: &str, port: u16, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let v = api(port, path);
        if let Some(v) = v.as_ref().filter(|v| ok(v)) {
            return v.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what}: last answer {v:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// What went through a [`relay`]: the first bytes Prometheus sent and the
/// first bytes it got back, over every connection.
type Seen = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;

/// A TCP relay to `port` on loopback that keeps the first 64 KiB of each
/// direction (the scrape requests' and answers' heads); its port.
fn relay(port: u16) -> (u16, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let me = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for down in l.incoming() {
            let Ok(down) = down else { break };
            let Ok(up) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            pipe(down.try_clone().unwrap(), up.try_clone().unwrap(), &s, 0);
            pipe(up, down, &s, 1);
        }
    });
    (me, seen)
}

fn pipe(mut from: TcpStream, mut to: TcpStream, seen: &Seen, dir: usize) {
    let seen = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            {
                let mut s = seen.lock().unwrap();
                let v = if dir == 0 { &mut s.0 } else { &mut s.1 };
                if v.len() < 1 << 16 {
                    v.extend_from_slice(&buf[..n]);
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// Prometheus 2.x asks for OpenMetrics first: it gets that, labelled as
/// such (before, the OpenMetrics body came as `text/plain; version=0.0.4`
/// and went to the classic parser), the target is up, the cycle counter is
/// queryable and typed `counter` under its family name.
#[test]
fn real_prometheus_scrapes_types_and_counters() {
    if need_tool("prometheus").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_agent, agent_port) = start_agent(dir.path());
    // Prometheus scrapes through a relay that keeps what it asked and got
    let (port, seen) = relay(agent_port);
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: agent\n    static_configs:\n      \
             - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let targets = wait_api("the target up", web, "/api/v1/targets", |v| {
        v["data"]["activeTargets"][0]["health"] == "up"
    });
    assert_eq!(targets["data"]["activeTargets"][0]["lastError"], "");
    let q = wait_api(
        "cased_agent_cycles_total",
        web,
        "/api/v1/query?query=cased_agent_cycles_total",
        |v| !v["data"]["result"].as_array().is_none_or(|r| r.is_empty()),
    );
    let value: f64 = q["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(value >= 1.0, "cycles {value}");
    // it asked for OpenMetrics first and got it, labelled as such
    {
        let s = seen.lock().unwrap();
        let asked = String::from_utf8_lossy(&s.0).to_ascii_lowercase();
        let got = String::from_utf8_lossy(&s.1).to_ascii_lowercase();
        assert!(
            asked.contains("\r\naccept: application/openmetrics-text;version=1.0.0"),
            "{asked}"
        );
        assert!(
            got.contains(
                "\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{got}"
        );
        assert!(!got.contains("content-type: text/plain"), "{got}");
    }
    // the types Prometheus keeps: the counter under its family name, and
    // its samples not left untyped
    let meta = wait_api(
        "metadata",
        web,
        "/api/v1/targets/metadata?match_target=%7Bjob%3D%22agent%22%7D",
        |v| {
            v["data"]
                .as_array()
                .is_some_and(|a| a.iter().any(|m| m["metric"] == "cased_agent_cycles"))
        },
    );
    let type_of = |name: &str| -> Vec<String> {
        meta["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["metric"] == name)
            .map(|m| m["type"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(type_of("cased_agent_cycles"), vec!["counter"]);
    assert_eq!(type_of("cased_agent_cycles_total"), Vec::<String>::new());
    assert_eq!(type_of("cased_agent_queue_bytes"), vec!["gauge"]);
    assert!(
        meta["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["type"] != "unknown"),
        "{meta}"
    );
}
