//! HTTP/2 records as the kernel's frame walk hands them over (items:
//! preface, frame headers, header-block bytes, lost), fed to one
//! connection's decoder: never a panic, waiting streams and paths stay
//! within their bounds, and what comes out is whole.
#![no_main]
use cased_agent::ebpf::h2::conn::{H2Conn, MAX_STREAMS, Sink};
use cased_agent::ebpf::http::MAX_PATH;
use cased_agent::ebpf::track::{Dropped, Exchange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut c = H2Conn::new(0);
    let mut dropped = Dropped::default();
    let mut out: Vec<Exchange> = Vec::new();
    // each 0xfe byte ends a record; a record's first byte: its direction
    for (ts, rec) in data.split(|&b| b == 0xfe).enumerate() {
        let Some((&h, items)) = rec.split_first() else {
            continue;
        };
        let mut push = |x| out.push(x);
        let mut s = Sink {
            tgid: 1,
            out: &mut push,
            dropped: &mut dropped,
        };
        c.feed(h & 1 == 1, ts as u64, items, &mut s);
        assert!(c.waiting() <= MAX_STREAMS);
    }
    for x in &out {
        assert!(x.status != 0, "{x:?}");
        assert!(x.path.len() <= MAX_PATH + '…'.len_utf8(), "{x:?}");
    }
});
