//! OTLP/HTTP request bodies: inflate (gzip/deflate, bounded), decode as
//! protobuf and as OTLP/JSON, and convert what decodes into StoredSpans.
#![no_main]
use cased_agent::otlp::{convert, decode};
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
    let as_json = mode & 0b100 != 0;
    let enc = if as_json {
        decode::Encoding::Json
    } else {
        decode::Encoding::Protobuf
    };
    if let Ok(req) = decode::decode(&body, enc) {
        let n = convert::span_count(&req);
        let out = convert::convert(req, "fuzz");
        let _ = (n, out);
    }
});
