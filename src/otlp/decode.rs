//! OTLP/HTTP request bodies → `ExportTraceServiceRequest` (SPEC §6): the
//! content type, the content encoding (gzip, or deflate as the Python SDK
//! can send, inflated with a hard limit so a bomb costs at most `limit`
//! bytes), binary protobuf or OTLP/JSON.
//!
//! Pure: bytes and header values in, a typed request or a typed error out.
//! Each error knows its HTTP status ([`DecodeError::status`]).
//!
//! OTLP/JSON is the proto3 JSON mapping with OTLP's exceptions, as the
//! `opentelemetry-proto` types implement it: hex trace/span ids, 64-bit
//! integers as strings or numbers, enums as numbers (an enum given by name
//! is a 400, never silently dropped). Unknown keys are ignored, as the OTLP
//! spec asks, except that a JSON object with keys but no `resourceSpans`
//! (`{"resourceMetrics": …}`, `{"hello": 1}`) is not a trace export: 400
//! rather than an empty success. `{}` is a valid empty export.

use std::io::Read;

use flate2::read::{MultiGzDecoder, ZlibDecoder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Default limit on a request body after decompression (SPEC §6).
pub const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content type {0:?}: send application/x-protobuf or application/json")]
    ContentType(String),
    #[error("unsupported content encoding {0:?}: send gzip, deflate or no encoding")]
    ContentEncoding(String),
    #[error("body over the limit of {limit} bytes (after decompression)")]
    TooLarge { limit: usize },
    #[error("invalid gzip or deflate body: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("invalid protobuf ExportTraceServiceRequest: {0}")]
    Protobuf(#[source] prost::DecodeError),
    #[error("invalid OTLP/JSON ExportTraceServiceRequest: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not an OTLP trace export: a JSON object without resourceSpans (keys: {0})")]
    NotTraceExport(String),
}

impl DecodeError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            DecodeError::ContentType(_) | DecodeError::ContentEncoding(_) => 415,
            DecodeError::TooLarge { .. } => 413,
            DecodeError::Gzip(_)
            | DecodeError::Protobuf(_)
            | DecodeError::Json(_)
            | DecodeError::NotTraceExport(_) => 400,
        }
    }
}

/// The encoding a `Content-Type` value names (parameters such as
/// `charset` are ignored, case-insensitively).
pub fn encoding_of(content_type: Option<&str>) -> Result<Encoding, DecodeError> {
    let raw = content_type.unwrap_or("");
    let essence = raw.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-protobuf")
        || essence.eq_ignore_ascii_case("application/protobuf")
    {
        Ok(Encoding::Protobuf)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Ok(Encoding::Json)
    } else {
        Err(DecodeError::ContentType(raw.to_string()))
    }
}

/// Undo `Content-Encoding` (none, `identity`, `gzip` or `deflate`), refusing anything
/// that is, or would inflate to, more than `limit` bytes.
pub fn inflate(
    body: bytes::Bytes,
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<bytes::Bytes, DecodeError> {
    let enc = content_encoding.unwrap_or("").trim();
    if enc.is_empty() || enc.eq_ignore_ascii_case("identity") {
        if body.len() > limit {
            return Err(DecodeError::TooLarge { limit });
        }
        return Ok(body);
    }
    let mut out = Vec::with_capacity((body.len() * 4).min(limit + 1));
    // one byte past the limit tells "exactly at the limit" from "over"
    let cap = limit as u64 + 1;
    let read = if enc.eq_ignore_ascii_case("gzip") || enc.eq_ignore_ascii_case("x-gzip") {
        MultiGzDecoder::new(&body[..])
            .take(cap)
            .read_to_end(&mut out)
    } else if enc.eq_ignore_ascii_case("deflate") {
        // HTTP's "deflate" is the zlib format (RFC 9110 §8.4.1.2)
        ZlibDecoder::new(&body[..]).take(cap).read_to_end(&mut out)
    } else {
        return Err(DecodeError::ContentEncoding(enc.to_string()));
    };
    read.map_err(DecodeError::Gzip)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out.into())
}

/// Decode a (decompressed) body.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportTraceServiceRequest, DecodeError> {
    match encoding {
        Encoding::Protobuf => {
            ExportTraceServiceRequest::decode(body).map_err(DecodeError::Protobuf)
        }
        Encoding::Json => {
            let req: ExportTraceServiceRequest =
                serde_json::from_slice(body).map_err(DecodeError::Json)?;
            if req.resource_spans.is_empty() {
                // only now, so the common case parses once
                check_trace_export(body)?;
            }
            Ok(req)
        }
    }
}

/// An empty decode is real only when the object is `{}` or names
/// `resourceSpans`.
fn check_trace_export(body: &[u8]) -> Result<(), DecodeError> {
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(DecodeError::Json)?;
    if obj.is_empty() || obj.contains_key("resourceSpans") {
        return Ok(());
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).take(5).collect();
    Err(DecodeError::NotTraceExport(keys.join(", ")))
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error response (and, with
/// a `RetryInfo` detail, of a gRPC refusal). Not an OTLP type, so not in
/// `opentelemetry-proto`; three fields.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    #[serde(skip)]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo` (its one field, a `google.protobuf.Duration`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// An error body in the request's encoding.
pub fn status_body(encoding: Encoding, code: i32, message: &str) -> Vec<u8> {
    let st = RpcStatus {
        code,
        message: message.to_string(),
        details: Vec::new(),
    };
    match encoding {
        Encoding::Protobuf => st.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&st).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const FIX: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/otlp/opentelemetry-proto"
    );

    fn fixture(rel: &str) -> Vec<u8> {
        std::fs::read(format!("{FIX}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn gzip(data: &[u8]) -> bytes::Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap().into()
    }

    /// The protocol's own example span, as every fixture encodes it.
    fn assert_example_span(req: &ExportTraceServiceRequest) {
        let rs = &req.resource_spans[0];
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(attrs[0].key, "service.name");
        let sp = &rs.scope_spans[0].spans[0];
        assert_eq!(
            super::super::convert::hex(&sp.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(super::super::convert::hex(&sp.span_id), "eee19b7ec3c1b174");
        assert_eq!(
            super::super::convert::hex(&sp.parent_span_id),
            "eee19b7ec3c1b173"
        );
        assert_eq!(sp.name, "I'm a server span");
        assert_eq!(sp.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(sp.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(sp.kind, 2);
        assert_eq!(sp.attributes[0].key, "my.span.attr");
    }

    #[test]
    fn every_trace_fixture_decodes() {
        for rel in [
            "examples-HEAD-ac2c4b5/trace.json",
            "examples-ca6170e/trace.json",
        ] {
            let req =
                decode(&fixture(rel), Encoding::Json).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_example_span(&req);
        }
        let req = decode(
            &fixture("examples-f6bb641/trace.protobuf-bin"),
            Encoding::Protobuf,
        )
        .unwrap();
        assert_example_span(&req);
    }

    #[test]
    fn other_signals_are_not_trace_exports() {
        for rel in [
            "examples-HEAD-ac2c4b5/metrics.json",
            "examples-HEAD-ac2c4b5/logs.json",
            "examples-2487cf3/metrics.json",
        ] {
            let e = decode(&fixture(rel), Encoding::Json).unwrap_err();
            assert_eq!(e.status(), 400, "{rel}");
        }
        for body in [
            &b"[1]"[..],
            b"[]",
            b"\"x\"",
            b"{\"resourceSpans\": 5}",
            b"{\"hello\": 1}",
            b"not json",
        ] {
            let e = decode(body, Encoding::Json).unwrap_err();
            assert_eq!(e.status(), 400, "{}", String::from_utf8_lossy(body));
        }
        for empty in [&b"{}"[..], b"{\"resourceSpans\": []}"] {
            assert!(
                decode(empty, Encoding::Json)
                    .unwrap()
                    .resource_spans
                    .is_empty()
            );
        }
    }

    #[test]
    fn enum_names_are_refused_not_dropped() {
        let text = String::from_utf8(fixture("examples-HEAD-ac2c4b5/trace.json"))
            .unwrap()
            .replace("\"kind\": 2", "\"kind\": \"SPAN_KIND_SERVER\"");
        assert!(text.contains("SPAN_KIND_SERVER"));
        assert_eq!(
            decode(text.as_bytes(), Encoding::Json)
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn truncated_and_garbage_protobuf() {
        let bin = fixture("examples-f6bb641/trace.protobuf-bin");
        let e = decode(&bin[..bin.len() - 7], Encoding::Protobuf).unwrap_err();
        assert!(matches!(e, DecodeError::Protobuf(_)));
        let e = decode(b"this is not protobuf at all", Encoding::Protobuf).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            encoding_of(Some("application/x-protobuf")).unwrap(),
            Encoding::Protobuf
        );
        assert_eq!(
            encoding_of(Some("Application/JSON; charset=utf-8")).unwrap(),
            Encoding::Json
        );
        for bad in [
            Some("text/plain"),
            Some(""),
            None,
            Some("application/jsonx"),
        ] {
            assert_eq!(encoding_of(bad).unwrap_err().status(), 415);
        }
    }

    #[test]
    fn gzip_within_and_over_the_limit() {
        let bin = fixture("examples-f6bb641/trace.protobuf-bin");
        let out = inflate(gzip(&bin), Some("gzip"), 214).unwrap();
        assert_eq!(&out[..], &bin[..]);
        assert_eq!(out.len(), 214);
        let e = inflate(gzip(&bin), Some("gzip"), 213).unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge { limit: 213 }));
        // identity: the raw length counts
        assert_eq!(
            inflate(bin.clone().into(), None, 213).unwrap_err().status(),
            413
        );
        assert_eq!(
            inflate(bin.into(), Some("identity"), 214).unwrap().len(),
            214
        );
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        // 16 MiB of zeros deflate to ~16 KiB; the limit is 1 MiB
        let zeros = vec![0u8; 16 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 64 << 10);
        let e = inflate(bomb, Some("gzip"), 1 << 20).unwrap_err();
        assert_eq!(e.status(), 413);
    }

    #[test]
    fn deflate_is_zlib() {
        let bin = fixture("examples-f6bb641/trace.protobuf-bin");
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&bin).unwrap();
        let z: bytes::Bytes = e.finish().unwrap().into();
        assert_eq!(
            &inflate(z.clone(), Some("deflate"), 214).unwrap()[..],
            &bin[..]
        );
        assert_eq!(inflate(z, Some("deflate"), 213).unwrap_err().status(), 413);
    }

    #[test]
    fn bad_encodings() {
        assert_eq!(
            inflate(b"abc"[..].into(), Some("br"), 10)
                .unwrap_err()
                .status(),
            415
        );
        let e = inflate(b"not gzip"[..].into(), Some("gzip"), 100).unwrap_err();
        assert!(matches!(e, DecodeError::Gzip(_)));
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn status_bodies() {
        let pb = status_body(Encoding::Protobuf, 3, "bad");
        let st = RpcStatus::decode(&pb[..]).unwrap();
        assert_eq!((st.code, st.message.as_str()), (3, "bad"));
        let js = status_body(Encoding::Json, 3, "bad");
        assert_eq!(js, br#"{"code":3,"message":"bad"}"#);
    }
}
