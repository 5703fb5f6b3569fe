//! Pairing requests with responses per connection (pure: events in,
//! completed exchanges out).
//!
//! A connection is `(tgid, fd)`. Requests read on it make it a server
//! connection, requests written a client one; each request waits in the
//! connection's FIFO until a response goes the other way (written by a
//! server, read by a client), so keep-alive connections carry many requests
//! and pipelined ones are answered in order. `1xx` interim responses
//! (except `101`) answer nothing. Memory is bounded: at most
//! [`MAX_PENDING`] requests wait per connection and [`Limits::max_conns`]
//! connections are tracked; what falls out is counted in [`Dropped`].

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::event::{Event, Kind};
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

/// One request and its response.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub tgid: u32,
    pub direction: Direction,
    /// Index into [`super::http::METHODS`].
    pub method: u8,
    /// Normalized path.
    pub path: Arc<str>,
    pub status: u16,
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
    /// Connections not tracked because the table was full.
    pub conn_limit: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_conns: usize,
    /// A connection with no event for this long is forgotten.
    pub idle_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: 65536,
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
    /// The last request target and its normalized path: a keep-alive
    /// connection mostly asks for the same few, so most requests cost no
    /// normalization and no allocation.
    last_path: Option<(Box<[u8]>, Arc<str>)>,
}

impl Conn {
    fn path(&mut self, target: &[u8]) -> Arc<str> {
        if let Some((t, p)) = &self.last_path
            && **t == *target
        {
            return p.clone();
        }
        let p: Arc<str> = Arc::from(normalize_path(target));
        self.last_path = Some((target.into(), p.clone()));
        p
    }
}

#[derive(Debug, Default)]
pub struct Tracker {
    conns: FxHashMap<u64, Conn>,
    limits: Limits,
    pub dropped: Dropped,
}

impl Tracker {
    pub fn new(limits: Limits) -> Self {
        Tracker {
            conns: FxHashMap::default(),
            limits,
            dropped: Dropped::default(),
        }
    }

    /// Connections tracked now.
    pub fn conns(&self) -> usize {
        self.conns.len()
    }

    /// Feed one event; completed exchanges go to `out`.
    pub fn handle(&mut self, e: &Event<'_>, out: &mut impl FnMut(Exchange)) {
        let key = e.conn();
        if e.kind == Kind::Close {
            if let Some(c) = self.conns.remove(&key) {
                self.dropped.unanswered += c.pending.len() as u64;
            }
            return;
        }
        let reqs = requests(e.data, MAX_PER_CHUNK);
        if !reqs.is_empty() {
            let direction = match e.kind {
                Kind::Read => Direction::Server,
                _ => Direction::Client,
            };
            let Some(conn) = self.conn(key, e.ts_ns) else {
                return;
            };
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
                        method: p.method,
                        path: p.path,
                        status: code,
                        latency_ns: e.ts_ns.saturating_sub(p.ts_ns),
                    });
                }
                _ => self.dropped.unmatched += 1,
            }
        }
    }

    /// The connection for a new request, created if there is room.
    fn conn(&mut self, key: u64, now_ns: u64) -> Option<&mut Conn> {
        if !self.conns.contains_key(&key) && self.conns.len() >= self.limits.max_conns {
            self.expire(now_ns);
            if self.conns.len() >= self.limits.max_conns {
                self.dropped.conn_limit += 1;
                return None;
            }
        }
        let c = self.conns.entry(key).or_default();
        c.last_ns = now_ns;
        Some(c)
    }

    /// Forget connections idle for longer than the limit (their process may
    /// have exited without closing them); their waiting requests count as
    /// unanswered.
    pub fn expire(&mut self, now_ns: u64) {
        let idle = self.limits.idle_ns;
        let mut lost = 0;
        self.conns.retain(|_, c| {
            let keep = now_ns.saturating_sub(c.last_ns) < idle;
            if !keep {
                lost += c.pending.len() as u64;
            }
            keep
        });
        self.dropped.unanswered += lost;
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
        feed(&mut t, 20, 4, Kind::Read, b"GET /a HTTP/1.1\r\n\r\n");
        assert_eq!(t.dropped.conn_limit, 1);
        // past the idle time the old ones go, and the new one fits
        feed(&mut t, 5_000, 4, Kind::Read, b"GET /a HTTP/1.1\r\n\r\n");
        assert_eq!(t.conns(), 1);
        assert_eq!(t.dropped.unanswered, 4);
        for i in 0..MAX_PENDING + 3 {
            feed(
                &mut t,
                5_000 + i as u64,
                4,
                Kind::Read,
                b"GET /a HTTP/1.1\r\n\r\n",
            );
        }
        assert_eq!(t.dropped.pending_limit, 4);
    }
}
