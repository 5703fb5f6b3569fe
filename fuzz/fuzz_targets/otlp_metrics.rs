//! OTLP metrics bodies: inflate (bounded), bound the cost (protobuf and
//! JSON scans), decode, convert and fold into the series state, then end
//! an interval: no input may panic.
#![no_main]
use cased_agent::otlp::decode;
use cased_agent::otlp::metrics::{self, convert, scan, state};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let encoding = match mode & 0b11 {
        0 => None,
        1 => Some("gzip"),
        2 => Some("deflate"),
        _ => Some("identity"),
    };
    let Ok(body) = decode::inflate(bytes::Bytes::copy_from_slice(body), encoding, 1 << 20) else {
        return;
    };
    let enc = if mode & 0b100 != 0 {
        decode::Encoding::Json
    } else {
        decode::Encoding::Protobuf
    };
    let shape = match enc {
        decode::Encoding::Json => scan::scan_json(&body),
        decode::Encoding::Protobuf => scan::scan_protobuf(&body),
    };
    let _ = shape.map(|s| s.cost());
    if let Ok(req) = metrics::decode(&body, enc) {
        let n = convert::point_count(&req);
        let c = convert::convert(req);
        assert!(c.points.len() as u64 + c.rejected <= n as u64);
        let mut st = state::State::new(4, 2);
        st.apply(c);
        let mut out = Vec::new();
        st.drain(&mut out);
    }
});
