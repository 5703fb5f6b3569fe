//! Pairing requests with responses per connection (pure: events in,
//! completed exchanges out).
//!
//! A connection is a socket (the kernel's id for it, whichever fd or
//! process reads or writes it: a forking server reads on fd 0 and writes on
//! fd 1 of a child). Requests read on it make it a server
//! connection, requests written a client one; each request waits in the
//! connection's FIFO until a response goes the other way (written by a
//! server, read by a client), so keep-alive connections carry many requests
//! and pipelined ones are answered in order. `1xx` interim responses
//! (except `101`) answer nothing. Memory is bounded: at most
//! [`MAX_PENDING`] requests wait per connection and [`Limits::max_conns`]
//! connections are tracked; what falls out is counted in [`Dropped`].
//!
//! The table is kept in order of last activity (an LRU), so finding what
//! to forget costs O(1) per connection: idle ones leave from the old end,
//! and a new connection in a full table pushes out the least recently
//! active one (most likely of a process that exited without closing it,
//! whose close the kernel never reports).

use std::collections::VecDeque;
use std::sync::Arc;

use lru::LruCache;
use rustc_hash::FxBuildHasher;

use super::event::{Event, Kind};
use super::h2::{H2Conn, Sink};
use super::http::{normalize_path, requests, statuses};

/// Requests waiting on one connection, at most.
pub const MAX_PENDING: usize = 64;
/// Messages looked for in one chunk, at most.
const MAX_PER_CHUNK: usize = 16;

/// Which side of the connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Server,
    Client,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Server => "server",
            Direction::Client => "client",
        }
    }
}

/// The protocol an exchange went over (the `protocol` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http1,
    H2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1.1",
            Protocol::H2 => "h2",
        }
    }
}

/// One request and its response.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub tgid: u32,
    pub direction: Direction,
    pub protocol: Protocol,
    /// Index into [`super::http::METHODS`] ([`super::http::METHOD_OTHER`]
    /// for any other HTTP/2 method).
    pub method: u8,
    /// Normalized path (a gRPC call's: its method, whole).
    pub path: Arc<str>,
    pub status: u16,
    /// A 4xx or 5xx status, or a gRPC call whose `grpc-status` is not 0.
    pub error: bool,
    pub latency_ns: u64,
}

/// What was given up on, by reason (counted, never silent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Requests whose connection closed or went idle unanswered.
    pub unanswered: u64,
    /// Responses with no request waiting (the request came before tracing
    /// started, or was dropped).
    pub unmatched: u64,
    /// Requests pushed out of a full FIFO.
    pub pending_limit: u64,
    /// Connections forgotten before their idle time because the table was
    /// full (the least recently active one goes; its waiting requests also
    /// count as unanswered).
    pub conn_limit: u64,
    /// HTTP/2 requests that could not be decoded: on a connection whose
    /// start was not seen, or whose frames or HPACK state were lost.
    pub h2_unknown: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_conns: usize,
    /// HTTP/2 connections decoded at once (each holds two HPACK tables).
    pub max_h2_conns: usize,
    /// A connection with no event for this long is forgotten.
    pub idle_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: 65536,
            max_h2_conns: 1024,
            idle_ns: 300 * 1_000_000_000,
        }
    }
}

#[derive(Debug)]
struct Pending {
    ts_ns: u64,
    direction: Direction,
    method: u8,
    path: Arc<str>,
}

#[derive(Debug, Default)]
struct Conn {
    pending: VecDeque<Pending>,
    last_ns: u64,
    last_path: LastPath,
}

impl Conn {
    fn path(&mut self, target: &[u8]) -> Arc<str> {
        self.last_path.get(target, normalize_path)
    }
}

/// The last request target and the path made of it: a keep-alive
/// connection mostly asks for the same few, so most requests cost no
/// normalization and no allocation (HTTP/1.x connections; HTTP/2 ones, one
/// per kind of path).
#[derive(Debug, Default)]
pub(super) struct LastPath(Option<(Box<[u8]>, Arc<str>)>);

impl LastPath {
    pub(super) fn get(&mut self, target: &[u8], make: fn(&[u8]) -> String) -> Arc<str> {
        if let Some((t, p)) = &self.0
            && **t == *target
        {
            return p.clone();
        }
        let p: Arc<str> = Arc::from(make(target));
        self.0 = Some((target.into(), p.clone()));
        p
    }
}

pub struct Tracker {
    /// Least recently active first.
    conns: LruCache<u64, Conn, FxBuildHasher>,
    /// HTTP/2 connections, apart: their state is per stream.
    h2: LruCache<u64, H2Conn, FxBuildHasher>,
    limits: Limits,
    pub dropped: Dropped,
    /// Connections looked at to find what to forget, since start (its
    /// growth per new connection is the cost of eviction).
    visited: u64,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("conns", &self.conns.len())
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new(Limits::default())
    }
}

impl Tracker {
    pub fn new(limits: Limits) -> Self {
        Tracker {
            conns: LruCache::unbounded_with_hasher(FxBuildHasher),
            h2: LruCache::unbounded_with_hasher(FxBuildHasher),
            limits,
            dropped: Dropped::default(),
            visited: 0,
        }
    }

    /// Connections tracked now.
    pub fn conns(&self) -> usize {
        self.conns.len() + self.h2.len()
    }

    /// Connections looked at by eviction and expiry, since start.
    pub fn visited(&self) -> u64 {
        self.visited
    }

    /// Feed one event; completed exchanges go to `out`.
    pub fn handle(&mut self, e: &Event<'_>, out: &mut impl FnMut(Exchange)) {
        let key = e.conn();
        if e.kind == Kind::Close {
            if let Some(c) = self.conns.pop(&key) {
                self.dropped.unanswered += c.pending.len() as u64;
            }
            if let Some(c) = self.h2.pop(&key) {
                self.dropped.unanswered += c.waiting() as u64;
            }
            return;
        }
        if e.h2 {
            return self.handle_h2(e, out);
        }
        let reqs = requests(e.data, MAX_PER_CHUNK);
        if !reqs.is_empty() {
            let direction = match e.kind {
                Kind::Read => Direction::Server,
                _ => Direction::Client,
            };
            let conn = self.conn(key, e.ts_ns);
            let mut pushed_out = 0;
            for r in reqs {
                if conn.pending.len() == MAX_PENDING {
                    conn.pending.pop_front();
                    pushed_out += 1;
                }
                let path = conn.path(r.target);
                conn.pending.push_back(Pending {
                    ts_ns: e.ts_ns,
                    direction,
                    method: r.method,
                    path,
                });
            }
            self.dropped.pending_limit += pushed_out;
            return;
        }
        let codes = statuses(e.data, MAX_PER_CHUNK);
        if codes.is_empty() {
            return;
        }
        // a server writes its responses, a client reads them
        let direction = match e.kind {
            Kind::Write => Direction::Server,
            _ => Direction::Client,
        };
        // (a lookup marks it the most recently active)
        let Some(conn) = self.conns.get_mut(&key) else {
            self.dropped.unmatched += codes.iter().filter(|c| !interim(**c)).count() as u64;
            return;
        };
        conn.last_ns = e.ts_ns;
        for code in codes {
            if interim(code) {
                continue;
            }
            match conn.pending.front() {
                Some(p) if p.direction == direction => {
                    let Some(p) = conn.pending.pop_front() else {
                        break;
                    };
                    out(Exchange {
                        tgid: e.tgid,
                        direction,
                        protocol: Protocol::Http1,
                        method: p.method,
                        path: p.path,
                        status: code,
                        error: code >= 400,
                        latency_ns: e.ts_ns.saturating_sub(p.ts_ns),
                    });
                }
                _ => self.dropped.unmatched += 1,
            }
        }
    }

    /// An HTTP/2 record: to its connection's decoder (made room for in a
    /// full table as [`Tracker::conn`] does).
    fn handle_h2(&mut self, e: &Event<'_>, out: &mut impl FnMut(Exchange)) {
        let key = e.conn();
        if !self.h2.contains(&key) {
            while self.h2.len() >= self.limits.max_h2_conns.max(1) {
                let Some((_, c)) = self.h2.pop_lru() else {
                    break;
                };
                self.visited += 1;
                self.dropped.unanswered += c.waiting() as u64;
                if e.ts_ns.saturating_sub(c.last_ns) < self.limits.idle_ns {
                    self.dropped.conn_limit += 1;
                }
            }
        }
        let c = self.h2.get_or_insert_mut(key, || H2Conn::new(e.ts_ns));
        let mut sink = Sink {
            tgid: e.tgid,
            out,
            dropped: &mut self.dropped,
        };
        c.feed(e.kind == Kind::Write, e.ts_ns, e.data, &mut sink);
    }

    /// The connection for a new request, created if it is new: in a full
    /// table the least recently active connection makes room.
    fn conn(&mut self, key: u64, now_ns: u64) -> &mut Conn {
        if !self.conns.contains(&key) {
            while self.conns.len() >= self.limits.max_conns.max(1) {
                let Some((_, c)) = self.conns.pop_lru() else {
                    break;
                };
                self.visited += 1;
                self.dropped.unanswered += c.pending.len() as u64;
                if now_ns.saturating_sub(c.last_ns) < self.limits.idle_ns {
                    self.dropped.conn_limit += 1;
                }
            }
        }
        let c = self.conns.get_or_insert_mut(key, Conn::default);
        c.last_ns = now_ns;
        c
    }

    /// Forget connections idle for longer than the limit (their process may
    /// have exited without closing them); their waiting requests count as
    /// unanswered. Only the idle ones (at the old end) are looked at, and
    /// the first active one.
    pub fn expire(&mut self, now_ns: u64) {
        let idle = self.limits.idle_ns;
        while let Some((_, c)) = self.conns.peek_lru() {
            self.visited += 1;
            if now_ns.saturating_sub(c.last_ns) < idle {
                break;
            }
            let pending = c.pending.len() as u64;
            self.conns.pop_lru();
            self.dropped.unanswered += pending;
        }
        while let Some((_, c)) = self.h2.peek_lru() {
            self.visited += 1;
            if now_ns.saturating_sub(c.last_ns) < idle {
                break;
            }
            let waiting = c.waiting() as u64;
            self.h2.pop_lru();
            self.dropped.unanswered += waiting;
        }
    }
}

/// 1xx responses precede the real one (`101` switches protocols: final).
fn interim(code: u16) -> bool {
    (100..200).contains(&code) && code != 101
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::event::{Kind, decode, encode};

    fn feed(t: &mut Tracker, ts: u64, fd: u32, kind: Kind, data: &[u8]) -> Vec<Exchange> {
        let b = encode(ts, 100, fd, kind, data.len() as u32, data);
        let e = decode(&b).unwrap();
        let mut out = Vec::new();
        t.handle(&e, &mut |x| out.push(x));
        out
    }

    #[test]
    fn keep_alive_server_and_client() {
        let mut t = Tracker::new(Limits::default());
        // server: two requests in turn on fd 5
        assert!(feed(&mut t, 1_000, 5, Kind::Read, b"GET /a/1 HTTP/1.1\r\n\r\n").is_empty());
        let x = feed(&mut t, 4_000, 5, Kind::Write, b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(x.len(), 1);
        assert_eq!(
            (
                x[0].direction,
                x[0].method,
                &*x[0].path,
                x[0].status,
                x[0].latency_ns
            ),
            (Direction::Server, 0, "/a/{id}", 200, 3_000)
        );
        feed(&mut t, 10_000, 5, Kind::Read, b"POST /b HTTP/1.1\r\n\r\n");
        let x = feed(&mut t, 10_500, 5, Kind::Write, b"HTTP/1.1 500 Oops\r\n\r\n");
        assert_eq!((x[0].method, x[0].status, x[0].latency_ns), (1, 500, 500));
        // client: request written, response read, on fd 6
        feed(&mut t, 20_000, 6, Kind::Write, b"GET /c HTTP/1.1\r\n\r\n");
        // a response written on a client connection answers nothing
        assert!(feed(&mut t, 20_100, 6, Kind::Write, b"HTTP/1.1 200 OK\r\n").is_empty());
        let x = feed(&mut t, 25_000, 6, Kind::Read, b"HTTP/1.1 404 NF\r\n\r\n");
        assert_eq!(
            (x[0].direction, x[0].status, x[0].latency_ns),
            (Direction::Client, 404, 5_000)
        );
        assert_eq!(t.dropped.unmatched, 1);
    }

    #[test]
    fn pipelined_in_order_and_interim() {
        let mut t = Tracker::new(Limits::default());
        feed(
            &mut t,
            100,
            7,
            Kind::Read,
            b"GET /1 HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\nGET /three HTTP/1.1\r\n\r\n",
        );
        let x = feed(
            &mut t,
            200,
            7,
            Kind::Write,
            b"HTTP/1.1 100 Continue\r\n\r\n",
        );
        assert!(x.is_empty());
        let x = feed(
            &mut t,
            300,
            7,
            Kind::Write,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 201 C\r\n\r\n",
        );
        assert_eq!(
            x.iter().map(|e| (&*e.path, e.status)).collect::<Vec<_>>(),
            vec![("/{id}", 200), ("/two", 201)]
        );
        let x = feed(&mut t, 400, 7, Kind::Write, b"HTTP/1.1 204 N\r\n\r\n");
        assert_eq!((&*x[0].path, x[0].latency_ns), ("/three", 300));
        assert_eq!(t.dropped, Dropped::default());
    }

    #[test]
    fn close_expiry_and_limits_count() {
        let mut t = Tracker::new(Limits {
            max_conns: 2,
            max_h2_conns: 2,
            idle_ns: 1_000,
        });
        feed(&mut t, 0, 1, Kind::Read, b"GET /a HTTP/1.1\r\n\r\n");
        feed(&mut t, 0, 1, Kind::Read, b"GET /b HTTP/1.1\r\n\r\n");
        feed(&mut t, 0, 1, Kind::Close, b"");
        assert_eq!(t.dropped.unanswered, 2);
        assert_eq!(t.conns(), 0);
        // a response after close matches nothing
        feed(&mut t, 1, 1, Kind::Write, b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(t.dropped.unmatched, 1);
        feed(&mut t, 10, 2, Kind::Read, b"GET /a HTTP/1.1\r\n\r\n");
        feed(&mut t, 10, 3, Kind::Read, b"GET /a HTTP/1.1\r\n\r\n");
        // 2 is touched last: 3 is the least recently active
        feed(&mut t, 15, 2, Kind::Read, b"GET /a HTTP/1.1\r\n\r\n");
        feed(&mut t, 20, 4, Kind::Read, b"GET /a HTTP/1.1\r\n\r\n");
        assert_eq!((t.dropped.conn_limit, t.dropped.unanswered), (1, 3));
        let x = feed(&mut t, 30, 2, Kind::Write, b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(x.len(), 1, "2 is still tracked");
        assert!(feed(&mut t, 30, 3, Kind::Write, b"HTTP/1.1 200 OK\r\n\r\n").is_empty());
        // past the idle time the old ones go (not counted as conn_limit)
        feed(&mut t, 5_000, 5, Kind::Read, b"GET /a HTTP/1.1\r\n\r\n");
        t.expire(5_000);
        assert_eq!(t.conns(), 1);
        assert_eq!((t.dropped.conn_limit, t.dropped.unanswered), (1, 5));
        for i in 0..MAX_PENDING + 3 {
            feed(
                &mut t,
                5_000 + i as u64,
                5,
                Kind::Read,
                b"GET /a HTTP/1.1\r\n\r\n",
            );
        }
        assert_eq!(t.dropped.pending_limit, 4);
    }

    /// One short connection of its own socket: request read, response
    /// written, never closed (its process exited).
    fn short_conn(t: &mut Tracker, i: u64, n: &mut u64) {
        let ts = i * 1_000_000;
        let sock = 1 << 40 | i;
        for (dt, kind, data) in [
            (0, Kind::Read, &b"GET /x HTTP/1.1\r\n\r\n"[..]),
            (1_000, Kind::Write, &b"HTTP/1.1 200 OK\r\n\r\n"[..]),
        ] {
            let b = crate::ebpf::event::encode_event(&crate::ebpf::event::Event {
                sock,
                ..crate::ebpf::event::event(ts + dt, 100, 3, kind, 20, data)
            });
            t.handle(&decode(&b).unwrap(), &mut |_| *n += 1);
        }
    }

    /// Issue 11: a full table made every new connection scan all of it.
    /// 100,000 connections past the 65,536 cap (none idle: 1 ms apart):
    /// each one looks at a bounded number of others.
    #[test]
    fn eviction_visits_a_bounded_number_per_new_connection() {
        let mut t = Tracker::default();
        let cap = Limits::default().max_conns as u64;
        let mut n = 0;
        for i in 0..cap {
            short_conn(&mut t, i, &mut n);
        }
        assert_eq!((t.conns() as u64, t.visited()), (cap, 0));
        for i in cap..cap + 100_000 {
            short_conn(&mut t, i, &mut n);
            t.expire(i * 1_000_000);
        }
        let per_conn = t.visited() as f64 / 100_000.0;
        assert!(
            per_conn <= 2.0,
            "{per_conn} connections visited per new one"
        );
        assert_eq!(t.conns() as u64, cap);
        assert_eq!(n, cap + 100_000, "every exchange completed");
        let d = t.dropped;
        assert_eq!((d.conn_limit, d.unanswered, d.unmatched), (100_000, 0, 0));
        // idle ones leave from the old end, a bounded number looked at each
        t.expire((cap + 100_000 + 300_000) * 1_000_000);
        assert_eq!(t.conns(), 0);
        assert!(t.visited() as f64 <= 2.0 * 100_000.0 + cap as f64 + 1.0);
    }
}
