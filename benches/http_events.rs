//! Userspace cost of eBPF HTTP tracing per traced request: ring-buffer
//! records (as the kernel writes them) through decode, pairing, owner
//! lookup and aggregation ([`Pipeline`]), no kernel involved. A request
//! traced on one side is two records (request, response); a loopback
//! request traced at both ends is four. Run: `cargo bench --bench http_events`.

use std::path::Path;

use cased_agent::ebpf::event::{Kind, encode};
use cased_agent::ebpf::pipeline::Pipeline;
use cased_agent::ebpf::track::Limits;
use criterion::{Criterion, Throughput};

const CONNS: u32 = 64;

/// A fake /proc: tgid 100 in a container, 200 a plain process.
fn fake_proc(dir: &Path) {
    let id = "c".repeat(64);
    for (tgid, cg) in [
        (
            100,
            format!(
                "0::/kubepods.slice/kubepods-pod0b1c2d3e_0000_4000_8000_000000000001.slice/cri-containerd-{id}.scope\n"
            ),
        ),
        (
            200,
            "0::/user.slice/user-0.slice/session-1.scope\n".to_string(),
        ),
    ] {
        std::fs::create_dir_all(dir.join(tgid.to_string())).unwrap();
        std::fs::write(dir.join(format!("{tgid}/cgroup")), cg).unwrap();
    }
}

/// One keep-alive request on each side: server (tgid 100) reads the
/// request and writes the response; client (tgid 200) the other way.
fn records(paths: &[String]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut ts = 1_000_000u64;
    for (i, p) in paths.iter().enumerate() {
        let fd = 10 + (i as u32 % CONNS);
        let req = format!("GET {p} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: wrk\r\n\r\n");
        // headers and a body in one chunk, as a client reads them
        let resp = format!(
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 100\r\n\r\n{}",
            "x".repeat(100)
        );
        let resp = resp.as_bytes();
        out.push(encode(
            ts,
            200,
            fd,
            Kind::Write,
            req.len() as u32,
            req.as_bytes(),
        ));
        out.push(encode(
            ts + 10_000,
            100,
            fd,
            Kind::Read,
            req.len() as u32,
            req.as_bytes(),
        ));
        out.push(encode(ts + 60_000, 100, fd, Kind::Write, 200, resp));
        out.push(encode(ts + 70_000, 200, fd, Kind::Read, 200, resp));
        ts += 100_000;
    }
    out
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    fake_proc(dir.path());
    let mut g = c.benchmark_group("http_events");
    for (name, paths) in [
        (
            "same_path",
            (0..1000)
                .map(|_| "/small.html".to_string())
                .collect::<Vec<_>>(),
        ),
        (
            "id_paths",
            (0..1000)
                .map(|i| format!("/users/{i}/orders?page={i}"))
                .collect(),
        ),
    ] {
        let recs = records(&paths);
        // both sides of each request traced: per request, four records
        g.throughput(Throughput::Elements(paths.len() as u64));
        let mut p = Pipeline::new(dir.path().to_path_buf(), None, None, 100, Limits::default());
        g.bench_function(name, |b| {
            b.iter(|| {
                for r in &recs {
                    p.event(r);
                }
                p.finish_interval(0).len()
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
