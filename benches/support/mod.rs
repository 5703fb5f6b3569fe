//! What the OTLP load benches share: a minimal API to forward to, the
//! agent started pinned to CPU 0, and its CPU and memory from `/proc`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// A minimal Cased API on loopback: answers every POST 200 and adds to
/// `seen` how often `needle` occurs in its body (one per span or metric).
pub async fn api(needle: &'static [u8], seen: Arc<AtomicU64>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            let n = body.windows(needle.len()).filter(|w| *w == needle).count();
                            seen.fetch_add(n as u64, Ordering::Relaxed);
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// (utime + stime) in seconds, RSS and peak RSS in KiB.
pub fn usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 of the whole line are 12 and 13 after the name
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (ticks as f64 / 100.0, kib("VmRSS:"), kib("VmHWM:"))
}

pub struct Agent(pub Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pin_self(cpu: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
}

pub fn start_agent(api: SocketAddr, otel: u16, extra: &[&str]) -> Agent {
    // CASED_AGENT_BIN: another build (e.g. the previous commit's) for a
    // before/after pair in one session
    let bin = std::env::var("CASED_AGENT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_cased-agent").to_string());
    let mut c = Command::new("taskset");
    c.args(["-c", "0", &bin])
        .args(["--enable-otel", "--otel-port", &otel.to_string()])
        .args(["--otel-grpc-port", &free_port().to_string()])
        .args(["--health-port", &free_port().to_string()])
        .args([
            "--endpoint",
            &format!("http://{api}"),
            "--api-key",
            "bench",
            "--cluster-id",
            "bench",
        ])
        .args(["--interval", "15s"])
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let a = Agent(c.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", otel)).is_err() {
        assert!(Instant::now() < deadline, "agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    a
}

/// The generator's runtime (one worker), this process pinned to CPU 1
/// (the agent runs on CPU 0), TLS provider installed for reqwest.
pub fn generator_runtime() -> tokio::runtime::Runtime {
    pin_self("1");
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}
