use super::*;
use crate::ebpf::h2::wire::encode;

/// A header block of literals without indexing (RFC 7541 §6.2.2), names
/// as strings.
fn literal(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0x00);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn frame(kind: u8, flags: u8, stream: u32, len: usize) -> Item<'static> {
    Item::Frame(Frame {
        len: len as u32,
        kind,
        flags,
        stream,
    })
}

fn headers(stream: u32, end: bool, block: &[u8]) -> Vec<u8> {
    let flags = END_HEADERS | if end { END_STREAM } else { 0 };
    encode(&[
        frame(HEADERS, flags, stream, block.len()),
        Item::Bytes(block),
    ])
}

struct Run {
    c: H2Conn,
    out: Vec<Exchange>,
    dropped: Dropped,
}

impl Run {
    fn new() -> Run {
        Run {
            c: H2Conn::new(0),
            out: Vec::new(),
            dropped: Dropped::default(),
        }
    }

    fn feed(&mut self, write: bool, ts: u64, data: &[u8]) {
        let mut out = |x| self.out.push(x);
        let mut s = Sink {
            tgid: 9,
            out: &mut out,
            dropped: &mut self.dropped,
        };
        self.c.feed(write, ts, data, &mut s);
    }
}

#[test]
fn server_pairs_streams_out_of_order_with_the_dynamic_table() {
    let mut r = Run::new();
    r.feed(false, 10, &encode(&[Item::Preface]));
    // stream 1: :method GET (static 2), :path /users/42 as a literal with
    // incremental indexing (name: static 4) -> dynamic entry 62
    let mut b1 = vec![0x82, 0x44, 9];
    b1.extend_from_slice(b"/users/42");
    r.feed(false, 100, &headers(1, true, &b1));
    // stream 3: GET and dynamic entry 62, the same path again
    r.feed(false, 150, &headers(3, true, &[0x82, 0xbe]));
    // answered 3 first (:status 200 is static 8), then 1 with 404 (static 13)
    r.feed(true, 400, &headers(3, false, &[0x88]));
    r.feed(true, 410, &encode(&[frame(DATA, END_STREAM, 3, 5)]));
    r.feed(true, 700, &headers(1, true, &[0x8d]));
    assert_eq!(r.out.len(), 2, "{:?}", r.dropped);
    let (a, b) = (&r.out[0], &r.out[1]);
    assert_eq!((a.direction, a.protocol), (Direction::Server, Protocol::H2));
    assert_eq!(
        (&*a.path, a.status, a.error, a.latency_ns),
        ("/users/{id}", 200, false, 250)
    );
    assert_eq!(
        (&*b.path, b.status, b.error, b.latency_ns),
        ("/users/{id}", 404, true, 600)
    );
    assert_eq!((a.method, a.tgid), (0, 9));
    assert_eq!(r.dropped, Dropped::default());
    assert_eq!(r.c.waiting(), 0);
}

#[test]
fn grpc_method_whole_and_status_from_trailers() {
    let mut r = Run::new();
    r.feed(true, 0, &encode(&[Item::Preface]));
    let req = literal(&[
        (":method", "POST"),
        (
            ":path",
            "/demo.Greeter/SayHello123456789012345678901234567890",
        ),
        ("content-type", "application/grpc"),
    ]);
    for (id, code) in [(1u32, "0"), (3, "5")] {
        r.feed(true, 1000 * u64::from(id), &headers(id, false, &req));
        r.feed(
            true,
            1000 * u64::from(id) + 1,
            &encode(&[frame(DATA, END_STREAM, id, 7)]),
        );
        let resp = literal(&[(":status", "200"), ("content-type", "application/grpc")]);
        r.feed(false, 1000 * u64::from(id) + 50, &headers(id, false, &resp));
        let trailers = literal(&[("grpc-status", code), ("grpc-message", "x")]);
        r.feed(
            false,
            1000 * u64::from(id) + 90,
            &headers(id, true, &trailers),
        );
    }
    assert_eq!(r.out.len(), 2);
    for (x, error) in r.out.iter().zip([false, true]) {
        assert_eq!(x.direction, Direction::Client);
        assert_eq!(
            &*x.path,
            "/demo.Greeter/SayHello123456789012345678901234567890"
        );
        assert_eq!(
            (x.method, x.status, x.error, x.latency_ns),
            (1, 200, error, 50)
        );
    }
}

#[test]
fn frames_split_across_records_with_continuation_padding_and_priority() {
    let mut r = Run::new();
    r.feed(false, 0, &encode(&[Item::Preface]));
    let block = literal(&[(":method", "PUT"), (":path", "/a?b=1")]);
    let (x, y) = block.split_at(5);
    // HEADERS: padded (2 bytes) and with priority (5 bytes); the payload
    // arrives in two records, then a CONTINUATION ends the block
    let mut p = vec![2u8];
    p.extend_from_slice(&[0, 0, 0, 0, 16]);
    p.extend_from_slice(x);
    p.extend_from_slice(&[0, 0]);
    let h = frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, p.len());
    r.feed(false, 10, &encode(&[h, Item::Bytes(&p[..4])]));
    r.feed(false, 11, &encode(&[Item::Bytes(&p[4..])]));
    r.feed(
        false,
        12,
        &encode(&[frame(CONTINUATION, END_HEADERS, 5, y.len()), Item::Bytes(y)]),
    );
    r.feed(true, 30, &headers(5, true, &literal(&[(":status", "100")])));
    assert!(r.out.is_empty(), "interim answers nothing");
    r.feed(true, 40, &headers(5, true, &literal(&[(":status", "201")])));
    assert_eq!(r.out.len(), 1, "{:?}", r.dropped);
    assert_eq!(
        (r.out[0].method, &*r.out[0].path, r.out[0].latency_ns),
        (2, "/a", 28)
    );
}

#[test]
fn unknown_when_the_start_was_not_seen_or_the_kernel_lost_frames() {
    // no preface: nothing decoded, each request counted once
    let mut r = Run::new();
    let req = literal(&[(":method", "GET"), (":path", "/x")]);
    r.feed(false, 0, &headers(1, true, &req));
    assert!(r.out.is_empty());
    assert_eq!(
        r.dropped.h2_unknown, 0,
        "no side known: no request to count"
    );
    // with its start seen, then lost: what waits and what follows
    let mut r = Run::new();
    r.feed(false, 0, &encode(&[Item::Preface]));
    r.feed(false, 1, &headers(1, true, &req));
    r.feed(false, 2, &headers(3, true, &req));
    r.feed(true, 3, &encode(&[Item::Lost]));
    r.feed(false, 4, &headers(5, true, &req));
    r.feed(false, 5, &headers(5, true, &req));
    r.feed(true, 6, &headers(1, true, &[0x88]));
    assert!(r.out.is_empty());
    assert_eq!(r.dropped.h2_unknown, 3);
    // an undecodable block (index 70 with an empty dynamic table) loses it
    let mut r = Run::new();
    r.feed(false, 0, &encode(&[Item::Preface]));
    r.feed(false, 1, &headers(1, true, &[0x80 | 70]));
    r.feed(false, 2, &headers(3, true, &req));
    assert_eq!(r.dropped.h2_unknown, 1);
    assert!(r.out.is_empty());
}

#[test]
fn resets_bounds_and_unmatched() {
    let mut r = Run::new();
    r.feed(false, 0, &encode(&[Item::Preface]));
    let req = literal(&[(":method", "GET"), (":path", "/x")]);
    for id in 0..(MAX_STREAMS as u32 + 3) {
        r.feed(false, 1, &headers(2 * id + 1, true, &req));
    }
    assert_eq!(r.c.waiting(), MAX_STREAMS);
    assert_eq!(r.dropped.pending_limit, 3);
    r.feed(true, 2, &encode(&[frame(RST_STREAM, 0, 1, 4)]));
    assert_eq!(r.dropped.unanswered, 1);
    r.feed(true, 3, &headers(999_999, true, &[0x88]));
    assert_eq!(r.dropped.unmatched, 1);
    // a payload longer than its frame said loses the connection
    r.feed(
        true,
        4,
        &encode(&[
            frame(HEADERS, END_HEADERS, 3, 1),
            Item::Bytes(&[0x88, 0x88]),
        ]),
    );
    assert_eq!(r.dropped.h2_unknown, MAX_STREAMS as u64 - 1);
    assert!(r.out.is_empty());
}

#[test]
fn midstream_counts_requests_from_the_first_new_stream_never_decoding() {
    let mut r = Run::new();
    let req = literal(&[(":method", "GET"), (":path", "/x")]);
    // the server side of a connection seen first mid-stream: a response on
    // stream 7 (begun before), then requests 9 and 11 read, answered
    r.feed(true, 0, &encode(&[Item::Midstream]));
    r.feed(true, 1, &headers(7, true, &[0x88]));
    for id in [9, 11] {
        r.feed(false, 2, &headers(id, true, &req));
        r.feed(true, 3, &headers(id, true, &[0x88]));
    }
    assert!(r.out.is_empty());
    assert_eq!(r.dropped.h2_unknown, 2);
    assert_eq!(r.c.waiting(), 0);
    // the client side: its first new stream is a write
    let mut r = Run::new();
    r.feed(false, 0, &encode(&[Item::Midstream]));
    r.feed(false, 1, &headers(3, true, &[0x88]));
    r.feed(true, 2, &headers(5, true, &req));
    r.feed(false, 3, &headers(5, true, &[0x88]));
    r.feed(true, 4, &headers(7, true, &req));
    assert_eq!(r.dropped.h2_unknown, 2);
    assert!(r.out.is_empty());
}

#[test]
fn a_preface_after_frames_starts_the_connection_afresh() {
    // a server writes its SETTINGS first (whole frames: seen as mid-stream
    // by the kernel), then reads the client's preface
    let mut r = Run::new();
    r.feed(true, 0, &encode(&[Item::Midstream]));
    r.feed(false, 1, &encode(&[Item::Preface]));
    r.feed(
        false,
        2,
        &headers(1, true, &literal(&[(":method", "GET"), (":path", "/a")])),
    );
    r.feed(true, 3, &headers(1, true, &[0x88]));
    assert_eq!(r.out.len(), 1);
    assert_eq!(
        (r.out[0].direction, r.dropped.h2_unknown),
        (Direction::Server, 0)
    );
}

/// A block cut anywhere inside a representation loses the connection,
/// never panics it; one cut between representations decodes.
#[test]
fn cut_blocks_lose_the_connection() {
    let block = literal(&[(":method", "GET"), (":path", "/a")]);
    for cut in 1..block.len() {
        let mut r = Run::new();
        r.feed(false, 0, &encode(&[Item::Preface]));
        r.feed(false, 1, &headers(1, true, &block[..cut]));
        r.feed(true, 2, &headers(1, true, &[0x88]));
        assert!(r.out.is_empty(), "{cut}");
        // whole after its first literal (13 bytes): a request without a
        // path, which is not counted
        let lost = cut != 13;
        assert_eq!(r.c.lost, lost, "{cut}");
    }
}

/// A 2,000-byte `:path` is counted cut to `MAX_PATH`, and the buffers it
/// grew (the block's, the decoder's, the path's) are given back: an idle
/// connection keeps at most `KEEP` bytes in each.
#[test]
fn a_long_path_leaves_no_large_buffer_behind() {
    let mut block = literal(&[(":method", "GET")]);
    // `:path` as a raw string, its length 2,000 as a 7-bit-prefix integer
    block.extend([0x00, 5]);
    block.extend(b":path");
    block.extend([0x7f, 0xd1, 0x0e]);
    block.extend(b"/ab".repeat(666));
    block.extend(b"/x");
    let mut r = Run::new();
    r.feed(false, 0, &encode(&[Item::Preface]));
    r.feed(false, 1, &headers(1, true, &block));
    r.feed(true, 2, &headers(1, true, &[0x88]));
    assert_eq!(r.out.len(), 1);
    let path = &r.out[0].path;
    assert_eq!(path.len(), MAX_PATH + '…'.len_utf8(), "{path}");
    for h in &r.c.halves {
        for buf in [&h.payload, &h.block, &h.path] {
            assert!(buf.capacity() <= super::super::KEEP, "{}", buf.capacity());
        }
    }
}
