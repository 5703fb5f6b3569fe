//! HTTP/2 and gRPC through the frame walk (`h2_walk`), with real servers
//! and clients: nghttpd (nghttp2) in cleartext (h2c, prior knowledge) and
//! over TLS (ALPN h2, through the OpenSSL uprobes) under h2load and nghttp;
//! Python grpcio over an insecure channel (h2c) with OK and non-OK
//! statuses; Go's net/http over TLS. Counts are exact per container,
//! direction, protocol, method and path, and only `h2` series appear.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use cased_agent::ebpf::Attach;
use cased_agent::model::{About, Sample};

use super::tls::{gotls, metric, probed, self_signed, system_libssl, wait_for};
use super::{
    Pair, collect, need_bpf, need_tool, pair, run_in, scripts, spawn_in, start_tracer, tag,
};
use crate::cli::free_port;

/// (direction, method, path) -> metric -> value, of one container's `h2`
/// series; any other protocol's series for it fails the test.
type Series = HashMap<(String, String, String), HashMap<&'static str, f64>>;

fn h2_series(samples: &[Sample], container: &str) -> Series {
    let mut m: Series = HashMap::new();
    for s in samples {
        let About::Container(c) = &s.about else {
            continue;
        };
        if c.container_id != container || !s.name.starts_with("http.") {
            continue;
        }
        assert_eq!(tag(s, "protocol"), "h2", "{s:?}");
        let k = (
            tag(s, "direction").to_string(),
            tag(s, "method").to_string(),
            tag(s, "path").to_string(),
        );
        let prev = m.entry(k).or_default().insert(s.name, s.value);
        assert!(prev.is_none(), "{} twice", s.name);
    }
    m
}

/// On both sides of `p`: exactly the series `want` (method, path, count,
/// error rate); with `slow`, that path's median latency within 10 % of
/// its milliseconds.
fn assert_both_sides(
    samples: &[Sample],
    p: &Pair,
    want: &[(&str, &str, f64, f64)],
    slow: Option<(&str, u32)>,
) {
    for (id, dir) in [(&p.server_id, "server"), (&p.client_id, "client")] {
        let s = h2_series(samples, id);
        for (m, path, n, err) in want {
            let k = (dir.to_string(), m.to_string(), path.to_string());
            let got = s
                .get(&k)
                .map(|v| (v["http.request_count"], v["http.error_rate"]));
            assert_eq!(got, Some((*n, *err)), "{dir} {m} {path}: {s:#?}");
        }
        assert_eq!(s.len(), want.len(), "{dir}: unexpected series {s:#?}");
        if let Some((path, ms)) = slow {
            let k = (dir.to_string(), "POST".to_string(), path.to_string());
            let k = if s.contains_key(&k) {
                k
            } else {
                (dir.to_string(), "GET".to_string(), path.to_string())
            };
            let p50 = s[&k]["http.latency_p50"];
            let ms = f64::from(ms);
            assert!(
                (p50 - ms).abs() <= 0.1 * ms,
                "{dir} {path} p50 {p50} ms, want {ms} ± 10%"
            );
        }
    }
}

/// No event lost. (The drop reasons are the whole node's: tests running
/// at once start mid-connection for each other's tracers, which then
/// rightly count requests as `h2_unknown` or `unanswered`; the exact
/// counts per container are this test's check.)
fn assert_clean(telemetry_text: &str) {
    let m = telemetry_text;
    assert!(m.contains("cased_agent_ebpf_events_lost_total 0"), "{m}");
}

/// A server in the server container that prints its port first.
fn server_port(p: &mut Pair, cmd: &[&str]) -> u16 {
    let c = spawn_in(&p.tree, &p.server, cmd);
    super::server_port(p, c)
}

fn wait_listening(port: u16) {
    wait_for("the server listening", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// The `requests: N total, N started, N done, N succeeded` line of h2load.
fn h2load_succeeded(out: &str) -> f64 {
    let l = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("h2load: {out}"));
    let n = l.split(',').find(|f| f.contains("succeeded")).unwrap_or("");
    n.split_whitespace().next().unwrap().parse().unwrap()
}

/// nghttpd serving a directory, in cleartext (h2c) and over TLS, under
/// h2load (many streams at once on several connections) and nghttp:
/// every request counted on both sides, 404s as errors.
fn nghttpd_h2c_and_tls_under_h2load_and_nghttp(mode: Attach) {
    if !need_bpf("eBPF HTTP/2 (nghttpd)") {
        return;
    }
    for t in ["nghttpd", "h2load", "nghttp", "openssl"] {
        need_tool(t);
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello\n".repeat(100)).unwrap();
    let mut p = pair("ebpf-h2-nghttpd", 0x71, mode);
    let (mut tracer, telemetry) = start_tracer(mode);
    let (plain, tls) = (free_port(), free_port());
    let root_s = root.to_str().unwrap();
    for args in [
        vec!["nghttpd", "--no-tls", "-d", root_s, &plain.to_string()],
        vec![
            "nghttpd",
            "-d",
            root_s,
            &tls.to_string(),
            key.to_str().unwrap(),
            cert.to_str().unwrap(),
        ],
    ] {
        let child = spawn_in(&p.tree, &p.server, &args)
            .stdout(Stdio::null())
            .spawn()
            .expect("nghttpd");
        p.tree.children.push(child);
    }
    wait_listening(plain);
    wait_listening(tls);
    let lib = std::fs::canonicalize(system_libssl()).unwrap();
    wait_for("nghttpd's libssl probed", Duration::from_secs(5), || {
        tracer
            .tls_files()
            .iter()
            .any(|(_, at)| std::fs::canonicalize(at).is_ok_and(|at| at == lib))
    });
    collect(&mut tracer);
    let mut total = 0.0;
    for (url, n, c, m) in [
        (format!("http://127.0.0.1:{plain}/index.html"), 300, 3, 5),
        (format!("https://127.0.0.1:{tls}/index.html"), 200, 2, 4),
    ] {
        let out = run_in(
            &p.tree,
            &p.client,
            &[
                "h2load",
                "-n",
                &n.to_string(),
                "-c",
                &c.to_string(),
                "-m",
                &m.to_string(),
                &url,
            ],
        );
        assert_eq!(h2load_succeeded(&out), f64::from(n), "{out}");
        total += f64::from(n);
    }
    for (port, scheme, n) in [(plain, "http", 3), (tls, "https", 2)] {
        for i in 0..n {
            let url = format!("{scheme}://127.0.0.1:{port}/nope/{i}");
            // nghttp exits non-zero on a 404: only its run matters
            let _ = spawn_in(&p.tree, &p.client, &["nghttp", "-n", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    let samples = collect(&mut tracer);
    let want = [
        ("GET", "/index.html", total, 0.0),
        ("GET", "/nope/{id}", 5.0, 100.0),
    ];
    assert_both_sides(&samples, &p, &want, None);
    assert_clean(&telemetry.encode());
}

/// The grpcio virtualenv's python (tests/otlp/setup.sh installs grpcio
/// with the OpenTelemetry exporters).
fn grpc_python() -> PathBuf {
    let py = std::env::var_os("CASED_OTLP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/otlp-venv/bin/python"
            ))
        });
    let ok = Command::new(&py)
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "grpcio missing in {}: run tests/otlp/setup.sh",
        py.display()
    );
    py
}

/// A grpcio server and client on one insecure channel (h2c with prior
/// knowledge): each method's calls counted exactly on both sides as POST
/// of the method's full name (no path rules), non-OK `grpc-status` as
/// errors although every HTTP status is 200, and the slow method's
/// latency within 10 %.
fn grpc_over_h2c_ok_and_non_ok_statuses(mode: Attach) {
    if !need_bpf("eBPF gRPC") {
        return;
    }
    let py = grpc_python();
    let script = scripts().join("grpc_demo.py");
    let mut p = pair("ebpf-grpc", 0x72, mode);
    let (mut tracer, telemetry) = start_tracer(mode);
    let slow_ms = 150;
    let port = server_port(
        &mut p,
        &[
            py.to_str().unwrap(),
            script.to_str().unwrap(),
            "server",
            &slow_ms.to_string(),
        ],
    );
    collect(&mut tracer);
    let plan = r#"[["Ok", 12], ["Missing", 3], ["Fail", 2], ["Slow", 4], ["Ok", 3]]"#;
    let out = run_in(
        &p.tree,
        &p.client,
        &[
            py.to_str().unwrap(),
            script.to_str().unwrap(),
            "client",
            &port.to_string(),
            plan,
        ],
    );
    assert!(
        out.contains("Missing ['NOT_FOUND', 'NOT_FOUND', 'NOT_FOUND']"),
        "{out}"
    );
    assert!(out.contains("Fail ['INTERNAL', 'INTERNAL']"), "{out}");
    let samples = collect(&mut tracer);
    let want = [
        ("POST", "/demo.Greeter/Ok", 15.0, 0.0),
        ("POST", "/demo.Greeter/Missing", 3.0, 100.0),
        ("POST", "/demo.Greeter/Fail", 2.0, 100.0),
        ("POST", "/demo.Greeter/Slow", 4.0, 0.0),
    ];
    assert_both_sides(&samples, &p, &want, Some(("/demo.Greeter/Slow", slow_ms)));
    assert_clean(&telemetry.encode());
}

/// A Go HTTPS server and client that negotiate h2 (net/http's own HTTP/2
/// over crypto/tls, Go's TLS probes): counted exactly on both sides, the
/// slow endpoint within 10 %.
fn go_h2_over_tls_counted_exactly(mode: Attach) {
    if !need_bpf("eBPF Go HTTP/2") {
        return;
    }
    for t in ["go", "openssl"] {
        need_tool(t);
    }
    let bin = gotls();
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path());
    let mut p = pair("ebpf-goh2", 0x73, mode);
    let (mut tracer, telemetry) = start_tracer(mode);
    let slow_ms = 120;
    let b = bin.to_str().unwrap();
    let port = server_port(
        &mut p,
        &[
            b,
            "server",
            cert.0.to_str().unwrap(),
            cert.1.to_str().unwrap(),
            &slow_ms.to_string(),
            "h2",
        ],
    );
    wait_for("the Go binary probed", Duration::from_secs(3), || {
        probed(&tracer, &bin)
    });
    collect(&mut tracer);
    for (path, n) in [
        ("/ok/{i}", "9"),
        ("/missing", "3"),
        ("/slow", "3"),
        ("/fail/{i}", "2"),
    ] {
        let out = run_in(
            &p.tree,
            &p.client,
            &[b, "client", &port.to_string(), path, n, "h2"],
        );
        assert!(out.contains("done"), "{out}");
    }
    let samples = collect(&mut tracer);
    let want = [
        ("GET", "/ok/{id}", 9.0, 0.0),
        ("GET", "/missing", 3.0, 100.0),
        ("GET", "/slow", 3.0, 0.0),
        ("GET", "/fail/{id}", 2.0, 100.0),
    ];
    assert_both_sides(&samples, &p, &want, Some(("/slow", slow_ms)));
    let m = telemetry.encode();
    assert_clean(&m);
    assert!(metric(&m, "cased_agent_ebpf_tls_events_total") > 0.0, "{m}");
}

/// A gRPC connection opened before the tracer (its preface unseen):
/// nothing on it is decoded or given a method or path; on the socket path
/// it is recognised by its whole frames and each request after the first
/// new stream counts as `h2_unknown` (the syscall path does not recognise
/// it at all).
fn grpc_connection_opened_before_the_tracer_is_unknown(mode: Attach) {
    if !need_bpf("eBPF gRPC mid-stream") {
        return;
    }
    let py = grpc_python();
    let script = scripts().join("grpc_demo.py");
    let mut p = pair("ebpf-grpc-mid", 0x74, mode);
    let port = server_port(
        &mut p,
        &[
            py.to_str().unwrap(),
            script.to_str().unwrap(),
            "server",
            "10",
        ],
    );
    let plan = r#"[["Ok", 2], ["wait", 0], ["Ok", 6], ["Fail", 2]]"#;
    let mut client = spawn_in(
        &p.tree,
        &p.client,
        &[
            py.to_str().unwrap(),
            script.to_str().unwrap(),
            "client",
            &port.to_string(),
            plan,
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("grpc client");
    let mut out = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("waiting") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "the client ended before waiting");
    }
    let (mut tracer, telemetry) = start_tracer(mode);
    collect(&mut tracer);
    let before = dropped(&telemetry.encode(), "h2_unknown");
    std::io::Write::write_all(client.stdin.as_mut().unwrap(), b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(client.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("Fail ['INTERNAL', 'INTERNAL']"), "{rest}");
    let samples = collect(&mut tracer);
    for id in [&p.server_id, &p.client_id] {
        assert!(h2_series(&samples, id).is_empty(), "nothing guessed");
    }
    let unknown = dropped(&telemetry.encode(), "h2_unknown") - before;
    if mode == Attach::Sock {
        // 8 calls after the wait, on each side but its first stream seen
        assert!(unknown >= 14.0, "h2_unknown {unknown}");
    }
}

/// `cased_agent_http_dropped_total{reason}`, 0 when absent.
fn dropped(text: &str, reason: &str) -> f64 {
    let l = format!("cased_agent_http_dropped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|x| x.strip_prefix(&l)?.trim().parse().ok())
        .unwrap_or(0.0)
}

in_both_modes!(
    nghttpd_h2c_and_tls_under_h2load_and_nghttp,
    grpc_over_h2c_ok_and_non_ok_statuses,
    go_h2_over_tls_counted_exactly,
    grpc_connection_opened_before_the_tracer_is_unknown,
);
