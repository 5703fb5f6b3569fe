//! eBPF HTTP tracing against real servers and clients (Python's
//! `http.server`, nginx, curl, wrk, raw sockets through sendmsg/recvmsg),
//! each in a real v1 cgroup shaped like a kubelet container, with the
//! committed BPF object through the real verifier. Root and BPF needed:
//! under `CI=true` they must run.
//!
//! Every test sees all HTTP on the machine (other tests run at the same
//! time); each counts only the containers it made.
//!
//! Each HTTP test runs in both attach modes (`ebpf::sock::*` on the socket
//! tracepoints, `ebpf::syscalls::*` on the syscall ones, the fallback of
//! kernels before 6.3), each with containers of its own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cased_agent::collect::Collector;
use cased_agent::ebpf::{Attach, HttpCollector, HttpOptions};
use cased_agent::model::{About, Sample};
use cased_agent::telemetry::Telemetry;

use super::cgroup_support::{RealTree, V1_CONTROLLERS, container_id, need_root, pod_uid};
use super::cli::{agent, free_port};

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ebpf")
}

/// Root, and tracefs where aya looks for it (mounted when it is not).
fn need_bpf(what: &str) -> bool {
    if !need_root(what) {
        return false;
    }
    let t = Path::new("/sys/kernel/tracing");
    if !t.join("events").is_dir() {
        let ok = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
            .is_ok_and(|s| s.success());
        // (a test beside this one may have just mounted it)
        assert!(
            ok || t.join("events").is_dir(),
            "{what}: tracefs is not mounted and cannot be mounted"
        );
    }
    true
}

fn need_tool(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is needed (scripts/test.sh installs it: apt-get install {tool})"
    );
}

/// Start `cmd` inside container `rel` of `tree` (a shell puts itself in
/// every controller, then execs), so everything it does is the container's.
fn spawn_in(tree: &RealTree, rel: &str, cmd: &[&str]) -> Command {
    let procs: Vec<String> = V1_CONTROLLERS
        .iter()
        .map(|c| {
            tree.dir(c, rel)
                .join("cgroup.procs")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1"; shift; n=$((n-1)); done; exec "$@""#)
        .arg("sh")
        .arg(procs.len().to_string())
        .args(&procs)
        .args(cmd);
    c
}

/// Run to completion; its stdout.
fn run_in(tree: &RealTree, rel: &str, cmd: &[&str]) -> String {
    let out = spawn_in(tree, rel, cmd)
        .stderr(Stdio::inherit())
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One request by a short-lived curl in the client container.
fn curl_in(p: &Pair, url: &str) {
    run_in(&p.tree, &p.client, &["curl", "-s", "-o", "/dev/null", url]);
}

/// A server container and a client container.
struct Pair {
    tree: RealTree,
    server: String,
    client: String,
    server_id: String,
    client_id: String,
    salt: u32,
}

/// Distinct per test and mode (both modes' tests run at once).
fn pair(tag: &str, salt: u32, mode: Attach) -> Pair {
    let mut tree = RealTree::new(&format!("{tag}-{}", mode.name())).expect("v1 cgroup controllers");
    let salt = salt ^ std::process::id() ^ (u32::from(mode == Attach::Sock) << 20);
    let (server_id, client_id) = (container_id(1, salt), container_id(2, salt));
    let server = tree.add_container("burstable", &pod_uid(1, salt), &server_id);
    let client = tree.add_container("besteffort", &pod_uid(2, salt), &client_id);
    Pair {
        tree,
        server,
        client,
        server_id,
        client_id,
        salt,
    }
}

/// Start `cmd` (a server, in `p`'s server container) that prints its port
/// as its first line; the port. The server stays with `p`.
fn server_port(p: &mut Pair, mut cmd: Command) -> u16 {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    p.tree.children.push(child);
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("server port: {line:?}"))
}

/// The Python server in the server container; its port.
fn python_server(p: &mut Pair, slow_ms: u32) -> u16 {
    let script = scripts().join("server.py");
    let cmd = spawn_in(
        &p.tree,
        &p.server,
        &["python3", script.to_str().unwrap(), &slow_ms.to_string()],
    );
    server_port(p, cmd)
}

/// `tests/ebpf/client.py`'s steps (`plan`) against `port`, in the client
/// container; what it printed.
fn run_clients(p: &Pair, port: u16, plan: &serde_json::Value) -> String {
    let client = scripts().join("client.py");
    run_in(
        &p.tree,
        &p.client,
        &[
            "python3",
            client.to_str().unwrap(),
            &port.to_string(),
            &plan.to_string(),
        ],
    )
}

/// Whether the kernel has the socket path's tracepoints (6.3+); under
/// CI=true it must.
fn need_sock_path(what: &str) -> bool {
    let have = Path::new("/sys/kernel/tracing/events/sock/sock_send_length").is_dir();
    if !have && std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what}: the kernel has no sock_send_length tracepoint, and CI=true requires it");
    }
    if !have {
        eprintln!(
            "{what}: no socket tracepoints (Linux 6.3+) here: not run (under CI=true this is a failure)"
        );
    }
    have
}

fn start_tracer(mode: Attach) -> (HttpCollector, Arc<Telemetry>) {
    tracer(mode, true)
}

fn tracer(mode: Attach, reader_thread: bool) -> (HttpCollector, Arc<Telemetry>) {
    tracer_with(mode, reader_thread, true)
}

/// With TLS (`--ebpf-tls`) or without.
fn tracer_with(mode: Attach, reader_thread: bool, tls: bool) -> (HttpCollector, Arc<Telemetry>) {
    tracer_capped_with(
        mode,
        reader_thread,
        cased_agent::ebpf::DEFAULT_MAX_SOCK_STATE,
        tls,
    )
}

fn tracer_capped(
    mode: Attach,
    reader_thread: bool,
    max_sock_state: u64,
) -> (HttpCollector, Arc<Telemetry>) {
    tracer_capped_with(mode, reader_thread, max_sock_state, true)
}

fn tracer_capped_with(
    mode: Attach,
    reader_thread: bool,
    max_sock_state: u64,
    tls: bool,
) -> (HttpCollector, Arc<Telemetry>) {
    let t = Arc::new(Telemetry::new());
    let c = HttpCollector::start(
        &HttpOptions {
            proc_path: "/proc".into(),
            cgroup_path: "/sys/fs/cgroup".into(),
            max_paths: 100,
            attach: mode,
            max_sock_state,
            tls,
            reader_thread,
        },
        t.clone(),
    )
    .unwrap_or_else(|e| panic!("the kernel refused the eBPF program ({mode:?}): {e}"));
    assert_eq!(c.attach(), mode, "the mode asked for is the one loaded");
    (c, t)
}

/// `auto` loads the socket path exactly where the kernel is 6.3+ (it has
/// `sock_send_length`/`sock_recv_length`), else the syscall fallback.
#[test]
fn auto_mode_follows_the_kernel() {
    if !need_bpf("eBPF attach mode") {
        return;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    let want = if version >= (6, 3) {
        Attach::Sock
    } else {
        Attach::Syscalls
    };
    let t = Arc::new(Telemetry::new());
    let opts = HttpOptions {
        proc_path: "/proc".into(),
        cgroup_path: "/sys/fs/cgroup".into(),
        max_paths: 100,
        attach: Attach::Auto,
        max_sock_state: cased_agent::ebpf::DEFAULT_MAX_SOCK_STATE,
        tls: true,
        reader_thread: false,
    };
    let c = HttpCollector::start(&opts, t).expect("the eBPF program loads");
    assert_eq!(c.attach(), want, "kernel {release}");
}

/// Each test of the list, once per attach mode: `sock::<name>` and
/// `syscalls::<name>`.
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod sock {
            $(#[test]
            fn $name() {
                super::$name(super::Attach::Sock)
            })*
        }
        mod syscalls {
            $(#[test]
            fn $name() {
                super::$name(super::Attach::Syscalls)
            })*
        }
    };
}

in_both_modes!(
    short_lived_clients_are_placed_after_they_exit,
    committed_object_passes_the_verifier,
    python_server_and_clients_counted_exactly_per_container,
    nginx_under_wrk_and_curl,
    agent_binary_reports_http_and_survives_a_refusal,
    forking_servers_on_stdin_and_stdout_counted_on_both_sides,
    a_reused_pid_counts_for_its_new_container,
    loading_peaks_little_above_the_attached_agent,
);

/// The socket path keeps kernel state for at most `max_sock_state`
/// sockets (memory charged to the agent); past it a connection's messages
/// go one record each, and every exchange is still counted exactly.
///
/// The tracer counts the records of every socket on the node, and the
/// cap is node-wide: another test's connections would take and free slots
/// and pair their own messages. So it runs alone, after the suite
/// (`scripts/test.sh`).
#[test]
#[ignore = "counts the whole node's records: scripts/test.sh runs it alone"]
fn past_the_socket_state_cap_messages_go_alone_and_count_exactly() {
    if !need_bpf("eBPF socket-state cap") || !need_sock_path("eBPF socket-state cap") {
        return;
    }
    let mut p = pair("ebpf-cap", 0x57, Attach::Sock);
    let port = python_server(&mut p, 50);
    // two sockets of the whole node may hold state; this test alone has
    // ten (five connections, both ends)
    let (mut tracer, telemetry) = tracer_capped(Attach::Sock, true, 2);
    collect(&mut tracer);
    let plan = serde_json::json!([
        ["parallel", "/ok/{i}", 5, 8],
        ["parallel", "/missing", 3, 5],
        ["pipeline", ["/pipe/a", "/pipe/b", "/pipe/c"]],
    ]);
    let out = run_clients(&p, port, &plan);
    assert!(out.contains("pipeline [200, 404, 500]"), "{out}");
    let samples = collect(&mut tracer);
    for (id, dir) in [(&p.server_id, "server"), (&p.client_id, "client")] {
        let s = series_of(&samples, id);
        assert_eq!(count_err(&s, dir, "GET", "/ok/{id}"), (40.0, 0.0), "{s:#?}");
        assert_eq!(count_err(&s, dir, "GET", "/missing"), (15.0, 100.0));
        assert_eq!(count_err(&s, dir, "GET", "/pipe/b"), (1.0, 100.0));
    }
    // two sockets at a time held state: of the five connections' ten
    // sockets two paired their 8 exchanges, of the three's six two their 5,
    // and the pipelined connection's two their one pair each; every other
    // message went alone (uncapped, about half as many records as events)
    let (records, events) = tracer.records_and_events();
    // (and some were: the two sockets with state paired theirs)
    let paired_at_most = 2 * 8 + 2 * 5 + 2;
    assert!(
        events >= 4 * (40 + 15) + 4 && records + paired_at_most >= events && records < events,
        "records {records}, events {events}"
    );
    let m = telemetry.encode();
    assert!(m.contains("cased_agent_ebpf_events_lost_total 0"), "{m}");
}

/// Per (direction, method, path) of one container: the metrics of one
/// interval.
type Series = HashMap<(String, String, String), HashMap<&'static str, f64>>;

fn tag<'a>(s: &'a Sample, k: &str) -> &'a str {
    s.tags
        .iter()
        .find(|(t, _)| *t == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn series_of(samples: &[Sample], container: &str) -> Series {
    let mut m: Series = HashMap::new();
    for s in samples {
        if let About::Container(c) = &s.about
            && c.container_id == container
        {
            let k = (
                tag(s, "direction").to_string(),
                tag(s, "method").to_string(),
                tag(s, "path").to_string(),
            );
            let prev = m.entry(k).or_default().insert(s.name, s.value);
            assert!(prev.is_none(), "{} twice", s.name);
        }
    }
    m
}

fn collect(c: &mut HttpCollector) -> Vec<Sample> {
    let mut out = Vec::new();
    c.collect(Instant::now(), &mut out).unwrap();
    out
}

fn key(d: &str, m: &str, p: &str) -> (String, String, String) {
    (d.to_string(), m.to_string(), p.to_string())
}

/// `(count, error_rate)` of a series, `(0, 0)` when absent.
fn count_err(s: &Series, d: &str, m: &str, p: &str) -> (f64, f64) {
    s.get(&key(d, m, p)).map_or((0.0, 0.0), |v| {
        (v["http.request_count"], v["http.error_rate"])
    })
}

fn short_lived_clients_are_placed_after_they_exit(mode: Attach) {
    if !need_bpf("eBPF HTTP tracing (exited clients)") {
        return;
    }
    need_tool("curl");
    let mut p = pair("ebpf-gone", 0x54, mode);
    let port = python_server(&mut p, 10);
    // no reader thread: nothing is read before every curl has exited, so
    // /proc/<pid>/cgroup is gone and the kernel's cgroup ids must do
    let (mut tracer, _t) = tracer(mode, false);
    collect(&mut tracer);
    for i in 0..6 {
        curl_in(&p, &format!("http://127.0.0.1:{port}/fail/{i}"));
    }
    let samples = collect(&mut tracer);
    let client = series_of(&samples, &p.client_id);
    assert_eq!(
        count_err(&client, "client", "GET", "/fail/{id}"),
        (6.0, 100.0),
        "{client:#?}"
    );
    // the server is alive and placed through /proc as usual
    let server = series_of(&samples, &p.server_id);
    assert_eq!(
        count_err(&server, "server", "GET", "/fail/{id}"),
        (6.0, 100.0)
    );
}

fn committed_object_passes_the_verifier(mode: Attach) {
    if !need_bpf("eBPF program load") {
        return;
    }
    let (mut c, t) = start_tracer(mode);
    let m = t.encode();
    assert!(m.contains("cased_agent_ebpf_up 1"), "{m}");
    // nothing traced yet is fine; a cycle works
    collect(&mut c);
    let m = t.encode();
    assert!(m.contains("cased_agent_ebpf_events_lost_total 0"), "{m}");
}

fn python_server_and_clients_counted_exactly_per_container(mode: Attach) {
    if !need_bpf("eBPF HTTP tracing") {
        return;
    }
    need_tool("curl");
    let mut p = pair("ebpf-py", 0x51, mode);
    let slow_ms = 200;
    let port = python_server(&mut p, slow_ms);
    let (mut tracer, telemetry) = start_tracer(mode);
    collect(&mut tracer);

    let plan = serde_json::json!([
        ["keepalive", "GET", "/ok/{i}?page=2&q=x", 30],
        ["keepalive", "GET", "/missing", 10],
        ["keepalive", "GET", "/fail/7f9c2a1b3d4e5f60a1b2", 5],
        ["keepalive", "POST", "/items", 6],
        ["keepalive", "GET", "/slow", 5],
        ["pipeline", ["/pipe/a", "/pipe/b", "/pipe/c"]],
        ["msg", "/msg/123e4567-e89b-12d3-a456-426614174000", 4],
        // pipelined in sends of their own, and a 100 Continue before each
        // final response with the body sent after it: on the socket path a
        // request held in the kernel pairs with the next request, with the
        // interim response, and a body sent on its own is no message
        ["pipeline_sends", ["/pipe/a", "/pipe/b", "/pipe/c"]],
        ["continue", "/upload", 3],
    ]);
    let out = run_clients(&p, port, &plan);
    assert!(out.contains("pipeline [200, 404, 500]"), "{out}");
    assert!(out.contains("pipeline_sends [200, 404, 500]"), "{out}");
    // one-shot connections from short-lived processes
    for i in 0..8 {
        curl_in(
            &p,
            &format!("http://127.0.0.1:{port}/ok/{}?x={i}", 1000 + i),
        );
    }
    let samples = collect(&mut tracer);
    let server = series_of(&samples, &p.server_id);
    let client = series_of(&samples, &p.client_id);

    for (dir, s) in [("server", &server), ("client", &client)] {
        let want = [
            ("GET", "/ok/{id}", 38.0, 0.0),
            ("GET", "/missing", 10.0, 100.0),
            ("GET", "/fail/{id}", 5.0, 100.0),
            ("POST", "/items", 6.0, 0.0),
            ("GET", "/slow", 5.0, 0.0),
            ("GET", "/pipe/a", 2.0, 0.0),
            ("GET", "/pipe/b", 2.0, 100.0),
            ("GET", "/pipe/c", 2.0, 100.0),
            ("GET", "/msg/{id}", 4.0, 0.0),
            ("POST", "/upload", 3.0, 0.0),
        ];
        for (m, path, n, err) in want {
            assert_eq!(
                count_err(s, dir, m, path),
                (n, err),
                "{dir} {m} {path}: {s:#?}"
            );
        }
        assert_eq!(s.len(), want.len(), "{dir}: unexpected series {s:#?}");
        let slow = &s[&key(dir, "GET", "/slow")];
        let p50 = slow["http.latency_p50"];
        assert!(
            (p50 - f64::from(slow_ms)).abs() <= 0.1 * f64::from(slow_ms),
            "{dir} /slow p50 {p50} ms, want {slow_ms} ± 10%"
        );
        assert!(slow["http.latency_avg"] >= f64::from(slow_ms) * 0.99);
        // fast paths are fast
        assert!(s[&key(dir, "GET", "/ok/{id}")]["http.latency_p50"] < 50.0);
    }
    // the server never shows as a client, nor the client as a server
    assert!(server.keys().all(|(d, _, _)| d == "server"));
    assert!(client.keys().all(|(d, _, _)| d == "client"));
    // the next interval starts from zero
    let again = collect(&mut tracer);
    assert!(series_of(&again, &p.server_id).is_empty());
    let m = telemetry.encode();
    assert!(m.contains("cased_agent_ebpf_events_lost_total 0"), "{m}");
}

/// An nginx config in `dir` serving `dir/www/small.html` (100 bytes) on
/// `port`, one worker, keep-alive; `tls` after the address (` ssl`
/// and the certificate's lines for HTTPS). Its path.
fn nginx_conf(dir: &Path, port: u16, tls: &str) -> PathBuf {
    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("small.html"), "x".repeat(100)).unwrap();
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; keepalive_requests 1000000; \
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; \
             uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp; \
             server {{ listen 127.0.0.1:{port}{tls}; root {}; }} }}\n",
            root.display()
        ),
    )
    .unwrap();
    conf
}

/// wrk's "N requests in" line.
fn wrk_requests(out: &str) -> f64 {
    out.lines()
        .find_map(|l| {
            let l = l.trim();
            l.split_once(" requests in ")
                .and_then(|(n, _)| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no request count in wrk output: {out}"))
}

fn nginx_under_wrk_and_curl(mode: Attach) {
    if !need_bpf("eBPF HTTP tracing (nginx)") {
        return;
    }
    for t in ["nginx", "wrk", "curl"] {
        need_tool(t);
    }
    let mut p = pair("ebpf-nginx", 0x52, mode);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = nginx_conf(dir.path(), port, "");
    let (mut tracer, telemetry) = start_tracer(mode);
    let nginx = spawn_in(
        &p.tree,
        &p.server,
        &["nginx", "-c", conf.to_str().unwrap(), "-g", "daemon off;"],
    )
    .spawn()
    .expect("nginx");
    p.tree.children.push(nginx);
    let url = format!("http://127.0.0.1:{port}/small.html");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    collect(&mut tracer);
    let conns = 4.0;
    // about 2,000 requests/s: bounded, so tests running beside this one
    // (each with its own tracer) are not flooded
    let lua = scripts().join("delay.lua");
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
        curl_in(&p, &format!("http://127.0.0.1:{port}/nope/{i}.html"));
    }
    let samples = collect(&mut tracer);
    let server = series_of(&samples, &p.server_id);
    let client = series_of(&samples, &p.client_id);
    let (s, s_err) = count_err(&server, "server", "GET", "/small.html");
    let (c, c_err) = count_err(&client, "client", "GET", "/small.html");
    assert!(wrk > 100.0, "wrk made only {wrk} requests: {out}");
    // wrk stops with up to one request in flight per connection: answered
    // (and traced) on the server, not read by the client
    assert!(
        c <= s && s <= c + conns,
        "server {s}, client {c}, wrk {wrk}"
    );
    assert!((c - wrk).abs() <= conns, "client {c}, wrk {wrk}");
    assert_eq!((s_err, c_err), (0.0, 0.0));
    assert_eq!(
        count_err(&server, "server", "GET", "/nope/{id}.html"),
        (0.0, 0.0)
    );
    // `{i}.html` is not an identifier (mostly letters): one path per file
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
    // the socket path holds a request back until its response and sends
    // both in one record: one record per exchange and side (a close goes
    // alone), where the syscall path sends one per message. Other tests'
    // traffic on the node is traced too, hence a bound, not equality.
    let (records, events) = tracer.records_and_events();
    let exchanges = s + c + 10.0;
    match tracer.attach() {
        Attach::Sock => assert!(
            (records as f64) < 0.55 * events as f64 + 30.0 && (records as f64) >= exchanges,
            "records {records}, events {events}, exchanges {exchanges}"
        ),
        _ => assert_eq!(records, events),
    }
}

fn agent_binary_reports_http_and_survives_a_refusal(mode: Attach) {
    if !need_bpf("eBPF HTTP tracing (binary)") {
        return;
    }
    need_tool("curl");
    let mut p = pair("ebpf-bin", 0x53, mode);
    let port = python_server(&mut p, 10);
    let mut a: Child = agent()
        .args(["--enable-ebpf", "--interval", "1s", "--sink", "stdout"])
        .args(["--ebpf-attach", mode.name()])
        .args(["--health-port", &free_port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = a.stdout.take().unwrap();
    let stderr = a.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let err_lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // wait for the first cycle (attached by then), then make requests
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("agent output");
    assert!(first.contains("metric_name"), "{first}");
    for _ in 0..5 {
        curl_in(&p, &format!("http://127.0.0.1:{port}/missing/42"));
    }
    let mut server_count = 0.0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while server_count < 5.0 && Instant::now() < deadline {
        let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        let t = &v["tags"];
        if v["metric_name"] == "http.request_count"
            && t["container_id"] == p.server_id.as_str()
            && t["direction"] == "server"
        {
            assert_eq!(t["method"], "GET");
            assert_eq!(t["path"], "/missing/{id}");
            assert!(t["cgroup"].as_str().unwrap().ends_with(&p.server_id));
            assert_eq!(v["pod_uid"], pod_uid(1, p.salt));
            server_count += v["value"].as_f64().unwrap();
        }
    }
    super::cli::unsafe_kill(a.id(), libc::SIGTERM);
    assert!(a.wait().unwrap().success());
    assert_eq!(server_count, 5.0);
    let err = err_lines.join().unwrap().join("\n");
    let attached = format!("eBPF HTTP tracing attached: {}", mode.name());
    assert!(err.contains(&attached), "{err}");

    // without the privilege: the reason is said, everything else runs
    let bin = tempfile::tempdir().unwrap();
    let exe = bin.path().join("cased-agent");
    std::fs::copy(env!("CARGO_BIN_EXE_cased-agent"), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .args(["--once", "--enable-ebpf", "--sink", "stdout"])
        .env_remove("CASED_API_KEY")
        .output()
        .expect("setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("eBPF HTTP tracing unavailable")
            && stderr.contains("Operation not permitted"),
        "{stderr}"
    );
    assert!(stdout.contains("\"node.cpu.usage_percent\""), "{stdout}");
    assert!(stdout.contains("\"node.memory.total\""), "{stdout}");
}

/// Wait until something listens on `port`.
fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 12 (group 4): servers whose per-connection child reads the request
/// on fd 0 and writes the response on fd 1 (busybox httpd; inetd-style,
/// fork + dup2 + exec) were counted on the client side only: connections
/// were (pid, fd). Now they are sockets, and closing fd 0 while fd 1 still
/// holds the socket (the Python handler does) does not end it.
fn forking_servers_on_stdin_and_stdout_counted_on_both_sides(mode: Attach) {
    if !need_bpf("eBPF HTTP tracing (forking servers)") {
        return;
    }
    for t in ["curl", "busybox"] {
        need_tool(t);
    }
    let mut p = pair("ebpf-fork", 0x55, mode);
    let script = scripts().join("fork_server.py");
    let mut child = spawn_in(&p.tree, &p.server, &["python3", script.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    p.tree.children.push(child);
    let py: u16 = line.trim().parse().expect("server port");
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "x".repeat(100)).unwrap();
    let bb = free_port();
    let listen = format!("127.0.0.1:{bb}");
    let httpd = spawn_in(
        &p.tree,
        &p.server,
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            &listen,
            "-h",
            www.path().to_str().unwrap(),
        ],
    )
    .spawn()
    .expect("busybox httpd");
    p.tree.children.push(httpd);
    wait_listening(bb, "busybox httpd");
    let (mut tracer, telemetry) = start_tracer(mode);
    collect(&mut tracer);
    let plan = [
        (py, "/f/ok", 7),
        (py, "/missing", 3),
        (bb, "/index.html", 5),
        (bb, "/nope.html", 4),
    ];
    for (port, path, n) in plan {
        for _ in 0..n {
            curl_in(&p, &format!("http://127.0.0.1:{port}{path}"));
        }
    }
    let samples = collect(&mut tracer);
    let server = series_of(&samples, &p.server_id);
    let client = series_of(&samples, &p.client_id);
    for (dir, s) in [("server", &server), ("client", &client)] {
        for (_, path, n) in plan {
            let err = if path == "/f/ok" || path == "/index.html" {
                0.0
            } else {
                100.0
            };
            assert_eq!(
                count_err(s, dir, "GET", path),
                (f64::from(n), err),
                "{dir} {path}: {s:#?}"
            );
        }
        assert_eq!(s.len(), plan.len(), "{dir}: unexpected series {s:#?}");
    }
    // (no machine-wide `unmatched` check: the tracer sees every process,
    // and other tests' keep-alive connections begun before it attached
    // leave unmatched responses; the exact counts above are the check)
    let m = telemetry.encode();
    assert!(m.contains("cased_agent_ebpf_events_lost_total 0"), "{m}");
}

/// Issue 11: a pid reused by a process of another container kept the first
/// one's owner. Two short-lived clients with the same pid (the second one
/// given it through `ns_last_pid`), in two containers, one interval.
fn a_reused_pid_counts_for_its_new_container(mode: Attach) {
    if !need_bpf("eBPF HTTP tracing (pid reuse)") {
        return;
    }
    need_tool("curl");
    let mut p = pair("ebpf-pid", 0x56, mode);
    let salt = p.salt;
    let other_id = container_id(3, salt);
    let other = p
        .tree
        .add_container("besteffort", &pod_uid(3, salt), &other_id);
    let port = python_server(&mut p, 10);
    // no reader thread: both processes are read at the collect
    let (mut tracer, _t) = tracer(mode, false);
    collect(&mut tracer);
    let url = |i: u32| format!("http://127.0.0.1:{port}/reuse/{i}");
    let (u1, u2, u3) = (url(1), url(2), url(3));
    let first = spawn_in(
        &p.tree,
        &p.client,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &u1,
            &u2,
            &u3,
        ],
    )
    .spawn()
    .expect("curl");
    let pid = first.id();
    assert!(first.wait_with_output().unwrap().status.success());
    let mut got = false;
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        // only the process that got the pid makes requests
        let script =
            format!("[ $$ = {pid} ] || exit 3; exec curl -s -o /dev/null -o /dev/null {u1} {u2}");
        let out = spawn_in(&p.tree, &other, &["sh", "-c", &script])
            .output()
            .expect("sh");
        if out.status.success() {
            got = true;
            break;
        }
        assert_eq!(out.status.code(), Some(3), "{out:?}");
    }
    assert!(got, "pid {pid} was never handed out again");
    let samples = collect(&mut tracer);
    let first = series_of(&samples, &p.client_id);
    let second = series_of(&samples, &other_id);
    assert_eq!(
        count_err(&first, "client", "GET", "/reuse/{id}"),
        (3.0, 0.0),
        "{first:#?}"
    );
    assert_eq!(
        count_err(&second, "client", "GET", "/reuse/{id}"),
        (2.0, 0.0),
        "{second:#?}"
    );
}

/// `kB` of a `/proc/<pid>/status` line.
fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{key} in {s}"))
}

/// The load reads the kernel's BTF (5.5 MB on 6.18) but hands aya only an
/// extract (src/ebpf/btf_extract.rs): the peak when the agent has just
/// attached is within a few MiB of what it then holds (3.7 MiB on 6.18,
/// `sock`, debug build). One parse of the whole BTF by aya puts it 12.5 MiB
/// above (debug; 18 MiB release); two, as before the extract, 29 (release).
fn loading_peaks_little_above_the_attached_agent(mode: Attach) {
    if !need_bpf("eBPF load peak") {
        return;
    }
    let mut a: Child = agent()
        .args(["--enable-ebpf", "--interval", "1s", "--sink", "stdout"])
        .args(["--ebpf-attach", mode.name()])
        .args(["--health-port", &free_port().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = a.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let attached = lines.find(|l| l.contains("took_ms"));
    let (hwm, rss) = (status_kb(a.id(), "VmHWM:"), status_kb(a.id(), "VmRSS:"));
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(attached.is_some(), "the agent did not attach");
    eprintln!(
        "{}: VmHWM {hwm} kB, VmRSS {rss} kB at the attach",
        mode.name()
    );
    assert!(
        hwm < rss + 8 * 1024,
        "VmHWM {hwm} kB against VmRSS {rss} kB just after the attach"
    );
}

mod h2;
mod tls;
