//! HPACK decoding, the userspace cost of an HTTP/2 header block: the
//! agent's own decoder (`src/ebpf/h2/hpack.rs`) against the two crates its
//! tests take as references, `httlib-hpack` and the maintained fork of
//! `hpack` (`loona-hpack`), on blocks as real peers send
//! them: a connection's first request with Huffman literals (indexed),
//! then a steady-state request (dynamic-table hits) and response (a
//! Huffman `date` each time, as nghttpd and Go send). One iteration is one
//! connection: a fresh decoder and the three blocks. Run:
//! `cargo bench --bench hpack`.

use cased_agent::ebpf::h2::conn::TAGS;
use cased_agent::ebpf::h2::hpack::Decoder;
use criterion::{Criterion, Throughput};
use httlib_hpack::Encoder;

type Field = (&'static [u8], &'static [u8]);

fn blocks() -> Vec<Vec<u8>> {
    let request: [Field; 7] = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/demo.Greeter/SayHello"),
        (b":authority", b"127.0.0.1:43211"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (
            b"user-agent",
            b"grpc-python/1.85.3 grpc-c/52.0.0 (linux; chttp2)",
        ),
    ];
    let response: [Field; 3] = [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"date", b"Mon, 07 Dec 2026 17:22:01 GMT"),
    ];
    let mut enc = Encoder::with_dynamic_size(4096);
    let mut block = |fields: &[Field], flags: u8| {
        let mut b = Vec::new();
        for (n, v) in fields {
            enc.encode((n.to_vec(), v.to_vec(), flags), &mut b).unwrap();
        }
        b
    };
    let indexed = Encoder::BEST_FORMAT | Encoder::HUFFMAN_VALUE | Encoder::WITH_INDEXING;
    let first = block(&request, indexed);
    let again = block(&request, indexed);
    let resp = block(&response[..2], indexed);
    let mut resp2 = resp.clone();
    resp2.extend(block(&response[2..], Encoder::HUFFMAN_VALUE));
    vec![first, again, resp2]
}

fn main() {
    let blocks = blocks();
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("hpack_connection");
    g.throughput(Throughput::Elements(blocks.len() as u64));
    g.bench_function("cased_agent", |b| {
        b.iter(|| {
            let mut d = Decoder::new(16 * 1024, &TAGS);
            let mut n = 0;
            for block in &blocks {
                d.decode(block, |_, _, v| n += v.len()).unwrap();
            }
            n
        })
    });
    g.bench_function("httlib_hpack", |b| {
        b.iter(|| {
            let mut d = httlib_hpack::Decoder::with_dynamic_size(16 * 1024);
            let mut n = 0;
            for block in &blocks {
                let mut out = Vec::new();
                d.decode(&mut block.clone(), &mut out).unwrap();
                n += out.len();
            }
            n
        })
    });
    g.bench_function("loona_hpack", |b| {
        b.iter(|| {
            let mut d = loona_hpack::Decoder::new();
            let mut n = 0;
            for block in &blocks {
                d.decode_with_cb(block, |_, _| n += 1).unwrap();
            }
            n
        })
    });
    g.finish();
    c.final_summary();
}
