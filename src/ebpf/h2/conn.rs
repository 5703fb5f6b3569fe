//! One HTTP/2 connection as the kernel's items tell it (pure): a header
//! block per direction put together from HEADERS and CONTINUATION frames,
//! decoded with that direction's HPACK decoder ([`super::hpack`], which
//! lends each field rather than allocating it), and streams paired by id
//! into [`Exchange`]s.
//!
//! Nothing is guessed: a connection whose preface was not seen, or whose
//! frames or HPACK state were lost, decodes nothing more; what waited on it
//! and every request it carries afterwards counts as
//! [`Dropped::h2_unknown`]. Which side is the client of a connection first
//! seen mid-stream is learnt from its first new stream: the first HEADERS
//! on a stream above every one seen before is a request (the very first
//! stream seen may have begun before, and is not counted).

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::hpack::{Decoder, Tags};
use super::wire::{
    CONTINUATION, DATA, END_HEADERS, END_STREAM, Frame, HEADERS, Item, PADDED, PRIORITY,
    RST_STREAM, items,
};
use crate::ebpf::http::{MAX_PATH, METHOD_OTHER, METHODS, normalize_path};
use crate::ebpf::track::{Direction, Dropped, Exchange, LastPath, Protocol};

/// Streams waiting for their response on one connection, at most.
pub const MAX_STREAMS: usize = 128;
/// A header block's bytes, at most (a larger one loses the connection).
pub const MAX_BLOCK: usize = 16 * 1024;
/// The HPACK dynamic table a peer may ask for, at most (bytes).
pub const MAX_TABLE: usize = 16 * 1024;

/// One direction: its decoder and the frame and block being gathered.
struct Half {
    dec: Decoder,
    /// The HEADERS or CONTINUATION frame whose payload is arriving.
    frame: Option<Frame>,
    payload: Vec<u8>,
    /// The header block so far (fragments without padding or priority).
    block: Vec<u8>,
    /// The last request's `:path`, its buffer kept for the next.
    path: Vec<u8>,
    /// The block's stream and whether its HEADERS ended the stream; `None`
    /// when no block is open.
    open: Option<(u32, bool)>,
}

impl Half {
    fn new() -> Half {
        Half {
            dec: Decoder::new(MAX_TABLE, &TAGS),
            frame: None,
            payload: Vec::new(),
            block: Vec::new(),
            path: Vec::new(),
            open: None,
        }
    }
}

#[derive(Debug)]
struct Stream {
    req_ns: u64,
    method: u8,
    path: Arc<str>,
    grpc: bool,
    /// The response's `:status` (0 until its headers came) and when.
    status: u16,
    resp_ns: u64,
    grpc_status: Option<u32>,
}

/// What a decoded header block says (the fields this tracer keeps).
#[derive(Debug, Default)]
struct Fields {
    method: Option<u8>,
    /// `:path`, when `has_path`.
    path: Vec<u8>,
    has_path: bool,
    status: Option<u16>,
    grpc: bool,
    grpc_status: Option<u32>,
}

pub struct H2Conn {
    /// The traced process's side, from the way the preface went.
    role: Option<Direction>,
    /// [read, write].
    halves: [Half; 2],
    streams: FxHashMap<u32, Stream>,
    /// Decoding stopped for good (see the module's doc).
    lost: bool,
    /// Highest request stream seen, so a lost connection counts each of
    /// its later requests once.
    last_stream: u32,
    /// [URL paths, gRPC methods]
    paths: [LastPath; 2],
    pub last_ns: u64,
}

/// Where a connection's exchanges and drops go.
pub struct Sink<'a, F: FnMut(Exchange)> {
    pub tgid: u32,
    pub out: &'a mut F,
    pub dropped: &'a mut Dropped,
}

impl H2Conn {
    pub fn new(now_ns: u64) -> H2Conn {
        H2Conn {
            role: None,
            halves: [Half::new(), Half::new()],
            streams: FxHashMap::default(),
            lost: false,
            last_stream: 0,
            paths: Default::default(),
            last_ns: now_ns,
        }
    }

    /// Streams waiting for their response.
    pub fn waiting(&self) -> usize {
        self.streams.len()
    }

    /// Feed one record's items, read (`write` false) or written at `ts`.
    pub fn feed<F: FnMut(Exchange)>(
        &mut self,
        write: bool,
        ts: u64,
        data: &[u8],
        s: &mut Sink<'_, F>,
    ) {
        self.last_ns = ts;
        let mut first = true;
        for item in items(data) {
            if first && self.role.is_none() && !matches!(item, Item::Preface | Item::Midstream) {
                // its start was not seen: nothing on it can be decoded
                self.lose(s.dropped);
            }
            first = false;
            match item {
                Item::Preface => {
                    // the connection starts (again: a server may write its
                    // SETTINGS before it reads the client's preface, which
                    // then looked like a connection seen mid-stream)
                    *self = H2Conn::new(ts);
                    self.role = Some(if write {
                        Direction::Client
                    } else {
                        Direction::Server
                    });
                }
                Item::Midstream => self.lose(s.dropped),
                Item::Lost => self.lose(s.dropped),
                Item::Frame(f) => self.frame(write, ts, f, s),
                Item::Bytes(b) => self.bytes(write, ts, b, s),
            }
        }
    }

    /// Whether `write` carries requests (a client's writes, a server's reads).
    fn requests_go(&self, write: bool) -> bool {
        match self.role {
            Some(Direction::Client) => write,
            Some(Direction::Server) => !write,
            None => false,
        }
    }

    fn lose(&mut self, dropped: &mut Dropped) {
        if !self.lost {
            self.lost = true;
            dropped.h2_unknown += self.streams.len() as u64;
            self.streams.clear();
            // the tables are no use any more
            self.halves = [Half::new(), Half::new()];
        }
    }

    fn frame<F: FnMut(Exchange)>(&mut self, write: bool, ts: u64, f: Frame, s: &mut Sink<'_, F>) {
        if self.lost {
            self.unknown_request(write, f, s.dropped);
            return;
        }
        let h = &mut self.halves[usize::from(write)];
        if h.frame.is_some() {
            // a frame header where the last frame's payload was due
            return self.lose(s.dropped);
        }
        match f.kind {
            HEADERS | CONTINUATION => {
                let fits = match (f.kind, h.open) {
                    (HEADERS, None) => {
                        h.open = Some((f.stream, f.flags & END_STREAM != 0));
                        h.block.clear();
                        true
                    }
                    (CONTINUATION, Some((id, _))) => id == f.stream,
                    _ => false,
                };
                if !fits {
                    return self.lose(s.dropped);
                }
                h.frame = Some(f);
                h.payload.clear();
                if f.len == 0 {
                    self.frame_done(write, ts, s);
                }
            }
            DATA if f.flags & END_STREAM != 0 && !self.requests_go(write) => {
                self.complete(f.stream, s);
            }
            RST_STREAM if self.streams.remove(&f.stream).is_some() => {
                s.dropped.unanswered += 1;
            }
            _ => {}
        }
    }

    /// On a connection that cannot be decoded: a request is counted (its
    /// side learnt from the first new stream when the start was not seen).
    fn unknown_request(&mut self, write: bool, f: Frame, dropped: &mut Dropped) {
        if f.kind != HEADERS || f.stream <= self.last_stream {
            return;
        }
        let first = self.last_stream == 0;
        self.last_stream = f.stream;
        if self.role.is_none() {
            if first {
                return;
            }
            self.role = Some(if write {
                Direction::Client
            } else {
                Direction::Server
            });
        }
        if self.requests_go(write) {
            dropped.h2_unknown += 1;
        }
    }

    fn bytes<F: FnMut(Exchange)>(&mut self, write: bool, ts: u64, b: &[u8], s: &mut Sink<'_, F>) {
        if self.lost {
            return;
        }
        let h = &mut self.halves[usize::from(write)];
        let Some(f) = h.frame else {
            return self.lose(s.dropped);
        };
        if h.payload.len() + b.len() > (f.len as usize).min(MAX_BLOCK) {
            return self.lose(s.dropped);
        }
        h.payload.extend_from_slice(b);
        if h.payload.len() == f.len as usize {
            self.frame_done(write, ts, s);
        }
    }

    /// A HEADERS or CONTINUATION frame's payload is whole.
    fn frame_done<F: FnMut(Exchange)>(&mut self, write: bool, ts: u64, s: &mut Sink<'_, F>) {
        let h = &mut self.halves[usize::from(write)];
        let Some(f) = h.frame.take() else { return };
        let Some(fragment) = fragment(&f, &h.payload) else {
            return self.lose(s.dropped);
        };
        if h.block.len() + fragment.len() > MAX_BLOCK {
            return self.lose(s.dropped);
        }
        h.block.extend_from_slice(fragment);
        super::empty(&mut h.payload);
        if f.flags & END_HEADERS == 0 {
            return;
        }
        let Some((stream, end)) = h.open.take() else {
            return;
        };
        // (the path's buffer is lent to the fields and comes back)
        let mut fields = Fields {
            path: std::mem::take(&mut h.path),
            ..Fields::default()
        };
        let decoded = h.dec.decode(&h.block, |t, _, v| fields.take(t, v));
        super::empty(&mut h.block);
        if decoded.is_err() {
            h.path = fields.path;
            return self.lose(s.dropped);
        }
        self.headers(write, ts, stream, end, &fields, s);
        // (its contents are in the path cache by now)
        super::empty(&mut fields.path);
        self.halves[usize::from(write)].path = fields.path;
    }

    fn headers<F: FnMut(Exchange)>(
        &mut self,
        write: bool,
        ts: u64,
        stream: u32,
        end: bool,
        f: &Fields,
        s: &mut Sink<'_, F>,
    ) {
        if self.requests_go(write) {
            self.last_stream = self.last_stream.max(stream);
            // a request's trailers add nothing
            if self.streams.contains_key(&stream) {
                return;
            }
            let (Some(method), true) = (f.method, f.has_path) else {
                return;
            };
            if self.streams.len() >= MAX_STREAMS {
                s.dropped.pending_limit += 1;
                return;
            }
            let make = if f.grpc { grpc_method } else { normalize_path };
            let path = self.paths[usize::from(f.grpc)].get(&f.path, make);
            self.streams.insert(
                stream,
                Stream {
                    req_ns: ts,
                    method,
                    path,
                    grpc: f.grpc,
                    status: 0,
                    resp_ns: 0,
                    grpc_status: None,
                },
            );
            return;
        }
        let Some(st) = self.streams.get_mut(&stream) else {
            if f.status.is_some_and(|c| !(100..200).contains(&c)) {
                s.dropped.unmatched += 1;
            }
            return;
        };
        if st.status == 0 {
            match f.status {
                // interim: the real response follows
                Some(c) if (100..200).contains(&c) => return,
                Some(c) => {
                    st.status = c;
                    st.resp_ns = ts;
                }
                None => return self.lose(s.dropped),
            }
        }
        if f.grpc_status.is_some() {
            st.grpc_status = f.grpc_status;
        }
        if end {
            self.complete(stream, s);
        }
    }

    /// The response on `stream` ended: its exchange goes out.
    fn complete<F: FnMut(Exchange)>(&mut self, stream: u32, s: &mut Sink<'_, F>) {
        let Some(st) = self.streams.remove(&stream) else {
            return;
        };
        if st.status == 0 {
            s.dropped.unmatched += 1;
            return;
        }
        let Some(direction) = self.role else { return };
        let error = st.status >= 400 || (st.grpc && st.grpc_status != Some(0));
        (s.out)(Exchange {
            tgid: s.tgid,
            direction,
            protocol: Protocol::H2,
            method: st.method,
            path: st.path,
            status: st.status,
            error,
            latency_ns: st.resp_ns.saturating_sub(st.req_ns),
        });
    }
}

/// A HEADERS frame's block fragment: without its padding and priority
/// fields (RFC 9113 §6.2); a CONTINUATION's is all of it.
fn fragment<'a>(f: &Frame, p: &'a [u8]) -> Option<&'a [u8]> {
    if f.kind != HEADERS {
        return Some(p);
    }
    let (pad, p) = if f.flags & PADDED != 0 {
        let (&n, rest) = p.split_first()?;
        (usize::from(n), rest)
    } else {
        (0, p)
    };
    let p = if f.flags & PRIORITY != 0 {
        p.get(5..)?
    } else {
        p
    };
    p.get(..p.len().checked_sub(pad)?)
}

/// A gRPC method (`/pkg.Service/Method`) as its path: kept whole (the path
/// rules are for URLs), cut at [`MAX_PATH`] bytes like any path.
fn grpc_method(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    if s.len() <= MAX_PATH {
        return s.into_owned();
    }
    let mut end = MAX_PATH;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The fields this tracer keeps, as the HPACK decoder tags them.
const METHOD: u8 = 1;
const PATH: u8 = 2;
const STATUS: u8 = 3;
const CONTENT_TYPE: u8 = 4;
const GRPC_STATUS: u8 = 5;

/// The tracer's tags, for every connection's decoders.
pub static TAGS: Tags = Tags::new(tag);

fn tag(name: &[u8]) -> u8 {
    match name {
        b":method" => METHOD,
        b":path" => PATH,
        b":status" => STATUS,
        b"content-type" => CONTENT_TYPE,
        b"grpc-status" => GRPC_STATUS,
        _ => 0,
    }
}

impl Fields {
    fn take(&mut self, tag: u8, v: &[u8]) {
        match tag {
            METHOD => {
                let i = METHODS.iter().position(|m| m.as_bytes() == v);
                self.method = Some(i.map_or(METHOD_OTHER, |i| i as u8));
            }
            PATH => {
                self.path.clear();
                self.path.extend_from_slice(v);
                self.has_path = true;
            }
            STATUS => self.status = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
            CONTENT_TYPE => self.grpc = v.starts_with(b"application/grpc"),
            GRPC_STATUS => {
                self.grpc_status = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
