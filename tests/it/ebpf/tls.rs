//! HTTPS through the TLS path: uprobes on OpenSSL's `SSL_read`/`SSL_write`
//! (`_ex` too) of every libssl a process maps, with real servers and
//! clients: Python's `ssl` (`SSL_read_ex`/`SSL_write_ex`), curl and wrk
//! (`SSL_read`/`SSL_write`), nginx. Counts are exact per container,
//! direction, method and path: ciphertext counted by the socket or syscall
//! path as well would show up as more.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cased_agent::ebpf::{Attach, HttpCollector};
use cased_agent::model::Sample;

use super::{
    Pair, collect, count_err, key, need_bpf, need_tool, pair, run_in, scripts, series_of, spawn_in,
    start_tracer, tag, wrk_requests,
};
use crate::cli::free_port;

/// A throwaway self-signed certificate and its key in `dir`.
pub(super) fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "openssl req failed");
    (cert, key)
}

/// The system's libssl.
pub(super) fn system_libssl() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "ldconfig -p | grep -o '/.*/libssl.so.3$' | head -1"])
        .output()
        .expect("ldconfig");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!p.is_empty(), "no libssl.so.3 on this machine");
    PathBuf::from(p)
}

/// A copy of the system's libssl in a directory of its own: a file no
/// other process maps, as a container image's own libssl is. Its
/// directory (for LD_LIBRARY_PATH) and its path.
fn libssl_copy(dir: &Path) -> (PathBuf, PathBuf) {
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let copy = lib.join("libssl.so.3");
    std::fs::copy(system_libssl(), &copy).unwrap();
    (lib, copy)
}

pub(super) fn probed(tracer: &HttpCollector, path: &Path) -> bool {
    let p = path.to_string_lossy();
    tracer.tls_files().iter().any(|(_, at)| *at == p)
}

/// Wait (the tracer's reader thread works meanwhile) until `cond` holds.
pub(super) fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The HTTPS Python server in the server container, with its libssl from
/// `libdir` (else the system's); its port.
fn python_tls_server(
    p: &mut Pair,
    slow_ms: u32,
    cert: &(PathBuf, PathBuf),
    libdir: Option<&Path>,
) -> u16 {
    let script = scripts().join("server.py");
    let mut cmd = spawn_in(
        &p.tree,
        &p.server,
        &[
            "python3",
            script.to_str().unwrap(),
            &slow_ms.to_string(),
            cert.0.to_str().unwrap(),
            cert.1.to_str().unwrap(),
        ],
    );
    if let Some(dir) = libdir {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    super::server_port(p, cmd)
}

/// Run `cmd` in the client container with `env`; its stdout.
fn client_with(p: &Pair, env: &[(&str, &Path)], cmd: &[&str]) -> String {
    let out = spawn_in(&p.tree, &p.client, cmd)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server and its clients that start after the tracer, on a libssl of
/// their own: the file is found when the server starts to listen, every
/// exchange counted exactly on both sides (Python's `http.client` keep-alive
/// and one-shot, a pipelined raw TLS socket, curl), the slow endpoint's
/// latency within 10 %, and the file's probes gone once no process maps it.
fn python_and_curl_over_https_counted_exactly(mode: Attach) {
    if !need_bpf("eBPF TLS tracing") {
        return;
    }
    for t in ["curl", "openssl"] {
        need_tool(t);
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path());
    let (libdir, copy) = libssl_copy(dir.path());
    let mut p = pair("ebpf-tls", 0x61, mode);
    let (mut tracer, telemetry) = start_tracer(mode);
    collect(&mut tracer);
    assert!(!probed(&tracer, &copy), "nothing maps the copy yet");

    let slow_ms = 200;
    let port = python_tls_server(&mut p, slow_ms, &cert, Some(&libdir));
    wait_for("the server's libssl probed", Duration::from_secs(3), || {
        probed(&tracer, &copy)
    });
    let plan = serde_json::json!([
        ["keepalive", "GET", "/ok/{i}?page=2", 20],
        ["keepalive", "GET", "/missing", 5],
        ["keepalive", "POST", "/items", 4],
        ["keepalive", "GET", "/slow", 5],
        ["oneshot", "GET", "/fail/{i}", 4],
        ["pipeline", ["/pipe/a", "/pipe/b", "/pipe/c"]],
    ]);
    let client = scripts().join("client.py");
    let tls_env: [(&str, &Path); 2] =
        [("LD_LIBRARY_PATH", &libdir), ("CLIENT_TLS", Path::new("1"))];
    let out = client_with(
        &p,
        &tls_env,
        &[
            "python3",
            client.to_str().unwrap(),
            &port.to_string(),
            &plan.to_string(),
        ],
    );
    assert!(out.contains("pipeline [200, 404, 500]"), "{out}");
    for i in 0..6 {
        let url = format!("https://127.0.0.1:{port}/missing?i={i}");
        client_with(&p, &tls_env[..1], &["curl", "-sk", "-o", "/dev/null", &url]);
    }
    let samples = collect(&mut tracer);
    let want = [
        ("GET", "/ok/{id}", 20.0, 0.0),
        ("GET", "/missing", 11.0, 100.0),
        ("POST", "/items", 4.0, 0.0),
        ("GET", "/slow", 5.0, 0.0),
        ("GET", "/fail/{id}", 4.0, 100.0),
        ("GET", "/pipe/a", 1.0, 0.0),
        ("GET", "/pipe/b", 1.0, 100.0),
        ("GET", "/pipe/c", 1.0, 100.0),
    ];
    assert_both_sides(&samples, &p, &want, slow_ms);
    // every series says its protocol
    assert!(
        samples
            .iter()
            .filter(|s| s.name.starts_with("http."))
            .all(|s| tag(s, "protocol") == "http/1.1")
    );
    let m = telemetry.encode();
    assert!(m.contains("cased_agent_ebpf_events_lost_total 0"), "{m}");
    assert!(!m.contains("reason=\"tls_no_socket\""), "{m}");
    // a request and a response read and written on each side, but the
    // pipelined three: one write and one read of all three requests
    let tls_events = metric(&m, "cased_agent_ebpf_tls_events_total");
    assert!(
        tls_events >= 4.0 * 44.0 + 6.0,
        "{tls_events} TLS events: {m}"
    );

    // the server exits (its clients did): the copy's probes go, no error
    for c in &mut p.tree.children {
        let _ = c.kill();
        let _ = c.wait();
    }
    // (after a grace of 10 s: a short-lived client run again finds them on)
    wait_for(
        "the copy's probes detached",
        Duration::from_secs(30),
        || !probed(&tracer, &copy),
    );
    collect(&mut tracer);
    let m = telemetry.encode();
    assert_eq!(
        metric(&m, "cased_agent_ebpf_tls_attach_errors_total"),
        0.0,
        "{m}"
    );
}

/// On both sides of `p`: exactly the series `want` (method, path, count,
/// error rate), and `/slow`'s median latency within 10 % of `slow_ms`.
fn assert_both_sides(samples: &[Sample], p: &Pair, want: &[(&str, &str, f64, f64)], slow_ms: u32) {
    for (id, dir) in [(&p.server_id, "server"), (&p.client_id, "client")] {
        let s = series_of(samples, id);
        for (m, path, n, err) in want {
            assert_eq!(
                count_err(&s, dir, m, path),
                (*n, *err),
                "{dir} {m} {path}: {s:#?}"
            );
        }
        assert_eq!(s.len(), want.len(), "{dir}: unexpected series {s:#?}");
        let p50 = s[&key(dir, "GET", "/slow")]["http.latency_p50"];
        assert!(
            (p50 - f64::from(slow_ms)).abs() <= 0.1 * f64::from(slow_ms),
            "{dir} /slow p50 {p50} ms, want {slow_ms} ± 10%"
        );
    }
}

/// The value of an unlabelled metric in a Prometheus text.
pub(super) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// nginx over HTTPS (the system's libssl, mapped before the tracer
/// starts: found by the look at every process at start) under wrk, and
/// curl: the same counts on both sides as in plaintext.
fn nginx_over_https_under_wrk_and_curl(mode: Attach) {
    if !need_bpf("eBPF TLS tracing (nginx)") {
        return;
    }
    for t in ["nginx", "wrk", "curl", "openssl"] {
        need_tool(t);
    }
    let mut p = pair("ebpf-tls-nginx", 0x62, mode);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let port = free_port();
    let tls = format!(
        " ssl; ssl_certificate {}; ssl_certificate_key {}",
        cert.display(),
        key.display()
    );
    let conf = super::nginx_conf(dir.path(), port, &tls);
    let nginx = spawn_in(
        &p.tree,
        &p.server,
        &["nginx", "-c", conf.to_str().unwrap(), "-g", "daemon off;"],
    )
    .spawn()
    .expect("nginx");
    p.tree.children.push(nginx);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut tracer, telemetry) = start_tracer(mode);
    let lib = std::fs::canonicalize(system_libssl()).unwrap();
    let libs = tracer.tls_files();
    assert!(
        libs.iter()
            .any(|(_, at)| std::fs::canonicalize(at).is_ok_and(|at| at == lib)),
        "the running nginx's libssl is probed at start: {libs:?}"
    );
    collect(&mut tracer);
    let url = format!("https://127.0.0.1:{port}/small.html");
    let lua = scripts().join("delay.lua");
    let conns = 4.0;
    let out = run_in(
        &p.tree,
        &p.client,
        &[
            "wrk",
            "-t1",
            "-c4",
            "-d2s",
            "-s",
            lua.to_str().unwrap(),
            &url,
        ],
    );
    let wrk = wrk_requests(&out);
    for i in 0..5 {
        let url = format!("https://127.0.0.1:{port}/nope/{i}.html");
        run_in(
            &p.tree,
            &p.client,
            &["curl", "-sk", "-o", "/dev/null", &url],
        );
    }
    let samples = collect(&mut tracer);
    let server = series_of(&samples, &p.server_id);
    let client = series_of(&samples, &p.client_id);
    let (s, s_err) = count_err(&server, "server", "GET", "/small.html");
    let (c, c_err) = count_err(&client, "client", "GET", "/small.html");
    assert!(wrk > 100.0, "wrk made only {wrk} requests: {out}");
    // as in plaintext: wrk stops with up to a request per connection in
    // flight, answered (and traced) on the server, not read by the client
    assert!(
        c <= s && s <= c + conns,
        "server {s}, client {c}, wrk {wrk}"
    );
    assert!((c - wrk).abs() <= conns, "client {c}, wrk {wrk}");
    assert_eq!((s_err, c_err), (0.0, 0.0));
    for i in 0..5 {
        let path = format!("/nope/{i}.html");
        assert_eq!(
            count_err(&server, "server", "GET", &path),
            (1.0, 100.0),
            "{server:#?}"
        );
        assert_eq!(
            count_err(&client, "client", "GET", &path),
            (1.0, 100.0),
            "{client:#?}"
        );
    }
    let m = telemetry.encode();
    assert!(m.contains("cased_agent_ebpf_events_lost_total 0"), "{m}");
}

/// With `--ebpf-tls=false` nothing of HTTPS is seen: not the plaintext
/// (no uprobes) and not the ciphertext (never HTTP to the socket path).
fn without_tls_https_is_not_counted(mode: Attach) {
    if !need_bpf("eBPF without TLS") {
        return;
    }
    for t in ["curl", "openssl"] {
        need_tool(t);
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path());
    let mut p = pair("ebpf-notls", 0x63, mode);
    let (mut tracer, _t) = super::tracer_with(mode, true, false);
    assert!(tracer.tls_files().is_empty());
    let port = python_tls_server(&mut p, 10, &cert, None);
    collect(&mut tracer);
    for i in 0..4 {
        let url = format!("https://127.0.0.1:{port}/ok/{i}");
        client_with(&p, &[], &["curl", "-sk", "-o", "/dev/null", &url]);
    }
    let samples = collect(&mut tracer);
    assert!(series_of(&samples, &p.server_id).is_empty());
    assert!(series_of(&samples, &p.client_id).is_empty());
    assert!(tracer.tls_files().is_empty());
}

/// The Go test program (`tests/ebpf/gotls.go`), built once per test run
/// with the system's Go (stdlib only, no modules).
pub(super) fn gotls() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gotls");
            let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gocache");
            let ok = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(scripts().join("gotls.go"))
                .env("GO111MODULE", "off")
                .env("GOCACHE", &cache)
                .env("HOME", env!("CARGO_TARGET_TMPDIR"))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "go build tests/ebpf/gotls.go failed");
            out
        })
        .clone()
}

/// A Go HTTPS server and Go clients (net/http over crypto/tls, HTTP/1.1),
/// started after the tracer: the binary is found when the server listens
/// (probes on both functions' entries and every return instruction), and
/// each exchange is counted exactly on both sides; curl (OpenSSL) against
/// the Go server too. The slow endpoint's latency within 10 %.
fn go_server_and_client_over_https_counted_exactly(mode: Attach) {
    if !need_bpf("eBPF Go TLS tracing") {
        return;
    }
    for t in ["go", "curl", "openssl"] {
        need_tool(t);
    }
    let bin = gotls();
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path());
    let mut p = pair("ebpf-gotls", 0x64, mode);
    let (mut tracer, telemetry) = start_tracer(mode);
    collect(&mut tracer);
    let slow_ms = 150;
    let cmd = spawn_in(
        &p.tree,
        &p.server,
        &[
            bin.to_str().unwrap(),
            "server",
            cert.0.to_str().unwrap(),
            cert.1.to_str().unwrap(),
            &slow_ms.to_string(),
        ],
    );
    let port = super::server_port(&mut p, cmd).to_string();
    wait_for("the Go binary probed", Duration::from_secs(3), || {
        probed(&tracer, &bin)
    });
    // curl's libssl may be mapped by no process yet: the first process to
    // map a file is found when it connects, and a short-lived one can be
    // done before its probes are on (README); one request first, in an
    // interval of its own
    // (a curl gone before the agent reads its maps leaves nothing to find:
    // the next one is looked at in turn)
    let warm = format!("https://127.0.0.1:{port}/warm");
    let lib = std::fs::canonicalize(system_libssl()).unwrap();
    let libssl_probed = || {
        tracer
            .tls_files()
            .iter()
            .any(|(_, at)| std::fs::canonicalize(at).is_ok_and(|at| at == lib))
    };
    wait_for("curl's libssl probed", Duration::from_secs(20), || {
        run_in(
            &p.tree,
            &p.client,
            &["curl", "-sk", "-o", "/dev/null", &warm],
        );
        std::thread::sleep(Duration::from_millis(200));
        libssl_probed()
    });
    collect(&mut tracer);
    for (path, n) in [("/ok/{i}", "10"), ("/missing", "4"), ("/slow", "3")] {
        let out = run_in(
            &p.tree,
            &p.client,
            &[bin.to_str().unwrap(), "client", &port, path, n],
        );
        assert!(out.contains("done"), "{out}");
    }
    for i in 0..3 {
        let url = format!("https://127.0.0.1:{port}/fail/{i}");
        run_in(
            &p.tree,
            &p.client,
            &["curl", "-sk", "-o", "/dev/null", &url],
        );
    }
    let samples = collect(&mut tracer);
    let want = [
        ("GET", "/ok/{id}", 10.0, 0.0),
        ("GET", "/missing", 4.0, 100.0),
        ("GET", "/slow", 3.0, 0.0),
        ("GET", "/fail/{id}", 3.0, 100.0),
    ];
    assert_both_sides(&samples, &p, &want, slow_ms);
    let m = telemetry.encode();
    assert!(m.contains("cased_agent_ebpf_events_lost_total 0"), "{m}");
    assert!(!m.contains("reason=\"tls_no_socket\""), "{m}");
}

in_both_modes!(
    go_server_and_client_over_https_counted_exactly,
    python_and_curl_over_https_counted_exactly,
    nginx_over_https_under_wrk_and_curl,
    without_tls_https_is_not_counted,
);

/// As the DaemonSet runs it: the agent binary in a network and mount
/// namespace of its own, the host's `/proc` and cgroup tree read-only at
/// other paths, uid 0 with only the capabilities the chart gives with
/// `enableEbpf` and `ebpfTls` (its eBPF set plus SYS_ADMIN). An
/// HTTPS server on a libssl of its own, started after the agent, is found
/// through those paths and counted exactly on both sides. Without
/// CAP_SYS_ADMIN the kernel refuses the uprobes, and the agent says so.
#[test]
fn https_traced_as_deployed() {
    if !need_bpf("eBPF TLS as deployed") {
        return;
    }
    for t in ["curl", "openssl", "setpriv", "unshare"] {
        need_tool(t);
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path());
    let (libdir, copy) = libssl_copy(dir.path());
    let mut p = pair("ebpf-tls-deployed", 0x65, Attach::Auto);
    let mut a = deployed_agent(&dir.path().join("pod"), DAEMONSET_TLS_CAPS);
    let stdout = a.stdout.take().unwrap();
    let stderr = a.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log_w = log.clone();
    let err_lines = std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            log_w.lock().unwrap().push(l);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("agent output");
    assert!(first.contains("metric_name"), "{first}");
    let port = python_tls_server(&mut p, 10, &cert, Some(&libdir));
    // found when it listens: the agent says so on stderr
    let attached = format!("TLS uprobes attached to {}", copy.display());
    wait_for(
        "the deployed agent probes the copy",
        Duration::from_secs(15),
        || log.lock().unwrap().iter().any(|l| l.contains(&attached)),
    );
    let plan = serde_json::json!([
        ["keepalive", "GET", "/ok/{i}", 12],
        ["oneshot", "GET", "/missing", 3],
    ]);
    let client = scripts().join("client.py");
    let tls_env: [(&str, &Path); 2] =
        [("LD_LIBRARY_PATH", &libdir), ("CLIENT_TLS", Path::new("1"))];
    client_with(
        &p,
        &tls_env,
        &[
            "python3",
            client.to_str().unwrap(),
            &port.to_string(),
            &plan.to_string(),
        ],
    );
    let mut counts: std::collections::HashMap<(String, String), f64> = Default::default();
    let want = |c: &std::collections::HashMap<(String, String), f64>| {
        let get = |d: &str, path: &str| c.get(&(d.to_string(), path.to_string())).copied();
        ["server", "client"]
            .iter()
            .all(|d| get(d, "/ok/{id}") >= Some(12.0) && get(d, "/missing") >= Some(3.0))
    };
    // every request count seen, of any container (for a failure's message)
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !want(&counts) && Instant::now() < deadline {
        let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        let t = &v["tags"];
        if v["metric_name"] == "http.request_count" {
            seen.push(format!("{} {}", t, v["value"]));
        }
        let (dir, id) = match t["direction"].as_str() {
            Some("server") => ("server", &p.server_id),
            Some("client") => ("client", &p.client_id),
            _ => continue,
        };
        if v["metric_name"] == "http.request_count" && t["container_id"] == id.as_str() {
            assert_eq!(t["protocol"], "http/1.1");
            let path = t["path"].as_str().unwrap_or("").to_string();
            *counts.entry((dir.to_string(), path)).or_default() += v["value"].as_f64().unwrap();
        }
    }
    super::super::cli::unsafe_kill(a.id(), libc::SIGTERM);
    let _ = a.wait();
    err_lines.join().unwrap();
    let err = log.lock().unwrap().join("\n");
    assert!(
        err.contains("TLS uprobes attached to") && err.contains(copy.to_str().unwrap()),
        "{err}"
    );
    for d in ["server", "client"] {
        for (path, n) in [("/ok/{id}", 12.0), ("/missing", 3.0)] {
            let got = counts.get(&(d.to_string(), path.to_string())).copied();
            assert_eq!(
                got,
                Some(n),
                "{d} {path}: {counts:?}\nall request counts: {seen:#?}\n{err}"
            );
        }
    }
    assert!(!err.contains("TLS: attaching"), "{err}");

    // without CAP_SYS_ADMIN (the chart's ebpfTls=false set, TLS asked
    // for all the same): refused, said once, plaintext HTTP still traced
    let no_admin = DAEMONSET_TLS_CAPS.trim_end_matches(",+sys_admin");
    let mut a = deployed_agent(&dir.path().join("pod2"), no_admin);
    let stderr = a.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok);
    let said = lines.find(|l| l.contains("eBPF TLS: the kernel refuses uprobes"));
    super::super::cli::unsafe_kill(a.id(), libc::SIGTERM);
    let _ = a.wait();
    let said = said.expect("the refusal is logged");
    assert!(said.contains("CAP_SYS_ADMIN"), "{said}");
}

/// The capabilities of the chart's DaemonSet with `enableEbpf` and
/// `ebpfTls`, as a `setpriv --bounding-set` list.
const DAEMONSET_TLS_CAPS: &str =
    "-all,+sys_ptrace,+dac_read_search,+bpf,+perfmon,+sys_resource,+sys_chroot,+sys_admin";

/// The agent binary as the DaemonSet runs it (see `https_traced_as_deployed`)
/// with the capabilities `caps`, from the mounts it makes under `root`.
fn deployed_agent(root: &Path, caps: &str) -> std::process::Child {
    let r = root.display();
    let script = format!(
        r#"set -eu
mkdir -p {r}/host/proc {r}/host/sys/fs/cgroup
mount --rbind /proc {r}/host/proc
mount -o remount,bind,ro {r}/host/proc
mount --rbind /sys/fs/cgroup {r}/host/sys/fs/cgroup
test "$(ip -o link | wc -l)" = 1
exec setpriv --bounding-set={caps} \
  "$0" --enable-ebpf --interval 1s --sink stdout --node-name n-deployed \
  --proc-path {r}/host/proc --cgroup-path {r}/host/sys/fs/cgroup
"#
    );
    Command::new("unshare")
        .args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_cased-agent"))
        .env_remove("CASED_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare")
}
