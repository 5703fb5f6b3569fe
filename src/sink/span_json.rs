//! Spans already encoded as the API's JSON objects (SPEC §3), one after the
//! other in one buffer: what the OTLP fast path ([`crate::otlp::fast`])
//! writes straight from a request body, and how a batch of them becomes
//! the API's `{"spans":[...]}` body or stdout's `{"span": ...}` lines.
//!
//! Each object is byte-identical to `serde_json`'s encoding of the
//! [`super::wire::StoredSpan`] it stands for, so a batch body is too.

/// Span objects back to back; `ends[i]` is where span `i` ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonSpans {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl JsonSpans {
    /// Room for about `spans` spans of `bytes` bytes of JSON in all.
    pub fn with_capacity(spans: usize, bytes: usize) -> Self {
        JsonSpans {
            buf: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(spans),
        }
    }

    /// The buffer to append the next span's object to; [`JsonSpans::end_span`]
    /// marks where it ends.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes written since the last span ended (a span being written).
    pub fn open_len(&self) -> usize {
        self.buf.len() - self.ends.last().copied().unwrap_or(0)
    }

    /// The object written since the last one is a span.
    pub fn end_span(&mut self) {
        self.ends.push(self.buf.len());
    }

    /// Drop what was written since the last span ended.
    pub fn discard_open(&mut self) {
        self.buf.truncate(self.ends.last().copied().unwrap_or(0));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of JSON of every span.
    pub fn bytes(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Each span's object, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.buf[s..e])
    }

    /// Each span's object, as a list (for batching).
    pub fn slices(&self) -> Vec<&[u8]> {
        self.iter().collect()
    }
}

/// `{"spans":[a,b,...]}`: the API's body of one batch.
pub fn api_body(spans: &[&[u8]]) -> Vec<u8> {
    let len: usize = spans.iter().map(|s| s.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 12);
    out.extend_from_slice(b"{\"spans\":[");
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(s);
    }
    out.extend_from_slice(b"]}");
    out
}

/// `{"span":a}\n{"span":b}\n...`: stdout's lines of one batch.
pub fn ndjson_body(spans: &[&[u8]]) -> Vec<u8> {
    let len: usize = spans.iter().map(|s| s.len() + 10).sum();
    let mut out = Vec::with_capacity(len);
    for s in spans {
        out.extend_from_slice(b"{\"span\":");
        out.extend_from_slice(s);
        out.extend_from_slice(b"}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_delimited_and_batched() {
        let mut j = JsonSpans::default();
        j.buf().extend_from_slice(b"{\"a\":1}");
        j.end_span();
        j.buf().extend_from_slice(b"{\"b\":2}");
        assert_eq!(j.open_len(), 7);
        j.discard_open();
        j.buf().extend_from_slice(b"{}");
        j.end_span();
        assert_eq!((j.len(), j.bytes()), (2, 9));
        let s = j.slices();
        assert_eq!(s, [&b"{\"a\":1}"[..], b"{}"]);
        assert_eq!(api_body(&s), b"{\"spans\":[{\"a\":1},{}]}");
        assert_eq!(ndjson_body(&s), b"{\"span\":{\"a\":1}}\n{\"span\":{}}\n");
        assert_eq!(api_body(&[]), b"{\"spans\":[]}");
    }
}
