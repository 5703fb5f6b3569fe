//! Cost per connection of the eBPF connection table past its cap (issue
//! 11): 100,000 short connections, each traced at both ends (4 records: the
//! client writes the request, the server reads it, writes the response, the
//! client reads it), none closed — their processes exit, or the close is
//! lost — and 1 ms apart, so none is idle: past 32,768 connections (65,536
//! sockets) every new socket has to make room. Prints the userspace cost
//! per connection of the first and the last 10,000 and their ratio, and
//! what was paired or dropped. No kernel involved.
//! Run: `cargo bench --bench ebpf_conns`.

use std::path::Path;
use std::time::Instant;

use cased_agent::ebpf::event::{Kind, encode};
use cased_agent::ebpf::pipeline::Pipeline;
use cased_agent::ebpf::track::Limits;

const CONNS: u32 = 100_000;
const WINDOW: u32 = 10_000;

/// A fake /proc: the server (tgid 100) in a container, the client (200) not.
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

/// Connection `i`'s four records; each end a socket of its own (fd `i`).
fn records(i: u32) -> [Vec<u8>; 4] {
    let ts = u64::from(i) * 1_000_000;
    let req = b"GET /api/items HTTP/1.1\r\nHost: svc\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let fd = 1000 + i;
    [
        encode(ts, 200, fd, Kind::Write, req.len() as u32, req),
        encode(ts + 10_000, 100, fd, Kind::Read, req.len() as u32, req),
        encode(ts + 60_000, 100, fd, Kind::Write, resp.len() as u32, resp),
        encode(ts + 70_000, 200, fd, Kind::Read, resp.len() as u32, resp),
    ]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    fake_proc(dir.path());
    // built beforehand: only the pipeline is timed
    let recs: Vec<[Vec<u8>; 4]> = (0..CONNS).map(records).collect();
    let mut p = Pipeline::new(dir.path().to_path_buf(), None, None, 100, Limits::default());
    let mut window_ns = Vec::new();
    let mut started = Instant::now();
    for (i, r) in recs.iter().enumerate() {
        for rec in r {
            p.event(rec);
        }
        let i = i as u32 + 1;
        // a cycle every 15 s of connections, as the agent's default interval
        if i.is_multiple_of(15_000) {
            p.finish_interval(u64::from(i) * 1_000_000);
        }
        if i.is_multiple_of(WINDOW) {
            window_ns.push(started.elapsed().as_nanos() as f64 / f64::from(WINDOW));
            started = Instant::now();
        }
    }
    for (w, ns) in window_ns.iter().enumerate() {
        println!(
            "connections {:>6}..{:>6}: {ns:>9.0} ns per connection",
            w as u32 * WINDOW,
            (w as u32 + 1) * WINDOW
        );
    }
    let (first, last) = (window_ns[0], window_ns[window_ns.len() - 1]);
    let d = p.dropped();
    println!("last/first: {:.2}", last / first);
    println!(
        "requests paired: {} of {} (both ends); dropped: conn_limit {}, unanswered {}, unmatched {}, pending_limit {}; tracked at the end: {}",
        p.requests,
        2 * CONNS,
        d.conn_limit,
        d.unanswered,
        d.unmatched,
        d.pending_limit,
        p.connections()
    );
}
