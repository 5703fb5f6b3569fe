//! The ring buffer's records (`struct http_event` of `bpf/http.bpf.c`),
//! decoded from bytes (pure, no `unsafe`). The offsets here and the
//! `_Static_assert`s there are the same layout.

/// Bytes of data an event carries at most (`HTTP_MAX_BUF`).
pub const MAX_BUF: usize = 256;
/// Size of one record.
pub const EVENT_LEN: usize = HEADER + MAX_BUF;
const HEADER: usize = at::BUF;

/// Byte offsets of `struct http_event`'s fields: the one definition on
/// this side; the C side asserts the same (`_Static_assert`), and a test
/// reads them back from the object's BTF.
mod at {
    pub const TS: usize = 0;
    pub const TGID: usize = 8;
    pub const FD: usize = 12;
    pub const BYTES: usize = 16;
    pub const LEN: usize = 20;
    pub const KIND: usize = 22;
    pub const FLAGS: usize = 23;
    pub const CGROUP_V2: usize = 24;
    pub const CGROUP_CPU: usize = 32;
    pub const SOCK: usize = 40;
    pub const START: usize = 48;
    pub const BUF: usize = 56;
}

/// (C field name, byte offset) of every field, in order.
pub const LAYOUT: [(&str, usize); 12] = [
    ("ts", at::TS),
    ("tgid", at::TGID),
    ("fd", at::FD),
    ("bytes", at::BYTES),
    ("len", at::LEN),
    ("kind", at::KIND),
    ("flags", at::FLAGS),
    ("cgroup_v2", at::CGROUP_V2),
    ("cgroup_cpu", at::CGROUP_CPU),
    ("sock", at::SOCK),
    ("start", at::START),
    ("buf", at::BUF),
];

/// Bytes of items an HTTP/2 record carries at most (`H2_BUF`).
pub const MAX_H2_BUF: usize = 1024;

/// What the syscall did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Data arrived (read, recvfrom, readv, recvmsg); stamped at return.
    Read,
    /// Data left (write, sendto, writev, sendmsg); stamped at entry.
    Write,
    /// The last fd of a socket that carried HTTP was closed (or the socket
    /// became a new connection).
    Close,
}

/// `flags`: the plaintext came through a TLS library's uprobes (`F_TLS`).
const F_TLS: u8 = 1;

/// A record about a process rather than a connection: the loader finds
/// TLS libraries with them (src/ebpf/tls.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The process began to listen or connect over TCP (`EV_PROC`).
    Talks(u32),
    /// A process known to map a TLS library exited (`EV_EXIT`).
    Exited(u32),
}

/// The [`Control`] a record is, `None` for connection events.
pub fn control(b: &[u8]) -> Option<Control> {
    if b.len() < HEADER {
        return None;
    }
    let tgid = u32_at(b, at::TGID);
    match b[at::KIND] {
        4 => Some(Control::Talks(tgid)),
        5 => Some(Control::Exited(tgid)),
        _ => None,
    }
}

/// One event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub tgid: u32,
    pub fd: u32,
    /// The socket (its inode number): the connection, whichever fd or
    /// process the syscall used.
    pub sock: u64,
    /// The process's start (boot-time ns; 0 on [`Kind::Close`]): with
    /// `tgid`, the process, even when its pid is reused.
    pub start_ns: u64,
    pub kind: Kind,
    /// Bytes the syscall moved (not only what is in `data`).
    pub bytes: u32,
    /// On a connection's first event: the process's cgroup2 id and its v1
    /// `cpu` cgroup's id (directory inode numbers); 0 otherwise.
    pub cgroup_v2: u64,
    pub cgroup_cpu: u64,
    /// The first bytes of the data (empty for [`Kind::Close`]).
    pub data: &'a [u8],
    /// The data is plaintext read off a TLS library call.
    pub tls: bool,
    /// The data is HTTP/2 items (`EV_H2_*`, see [`super::h2::wire`]), not
    /// the first bytes of the data.
    pub h2: bool,
}

impl Event<'_> {
    /// The connection it belongs to.
    pub fn conn(&self) -> u64 {
        self.sock
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn kind_byte(k: Kind) -> u8 {
    match k {
        Kind::Read => 1,
        Kind::Write => 2,
        Kind::Close => 3,
    }
}

/// Decode one record; `None` when it is too short or of an unknown kind.
pub fn decode(b: &[u8]) -> Option<Event<'_>> {
    if b.len() < HEADER {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([b[at::LEN], b[at::LEN + 1]]));
    let (kind, h2) = match b[at::KIND] {
        1 => (Kind::Read, false),
        2 => (Kind::Write, false),
        3 => (Kind::Close, false),
        6 => (Kind::Read, true),
        7 => (Kind::Write, true),
        _ => return None,
    };
    let max = if h2 { MAX_H2_BUF } else { MAX_BUF };
    let data = b.get(HEADER..HEADER + len.min(max))?;
    Some(Event {
        ts_ns: u64_at(b, at::TS),
        tgid: u32_at(b, at::TGID),
        fd: u32_at(b, at::FD),
        kind,
        bytes: u32_at(b, at::BYTES),
        cgroup_v2: u64_at(b, at::CGROUP_V2),
        cgroup_cpu: u64_at(b, at::CGROUP_CPU),
        sock: u64_at(b, at::SOCK),
        start_ns: u64_at(b, at::START),
        data,
        tls: b[at::FLAGS] & F_TLS != 0,
        h2,
    })
}

/// The events of one ring-buffer record: a record is one event, or on the
/// socket path two (a request held back in the kernel until the next
/// message of its connection, then both: `struct http_event[2]`).
/// An HTTP/2 record is one event of its own length.
pub fn records(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let whole = matches!(raw.get(at::KIND), Some(6 | 7));
    raw.chunks(if whole { raw.len().max(1) } else { EVENT_LEN })
}

/// The bytes of a record (tests and benches build events with it).
pub fn encode_event(e: &Event<'_>) -> Vec<u8> {
    let n = e.data.len().min(if e.h2 { MAX_H2_BUF } else { MAX_BUF });
    let mut b = vec![0u8; if e.h2 { HEADER + n } else { EVENT_LEN }];
    let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
    put(at::TS, &e.ts_ns.to_le_bytes());
    put(at::TGID, &e.tgid.to_le_bytes());
    put(at::FD, &e.fd.to_le_bytes());
    put(at::BYTES, &e.bytes.to_le_bytes());
    put(at::LEN, &(n as u16).to_le_bytes());
    put(at::KIND, &[kind_byte(e.kind) + if e.h2 { 5 } else { 0 }]);
    put(at::FLAGS, &[if e.tls { F_TLS } else { 0 }]);
    put(at::CGROUP_V2, &e.cgroup_v2.to_le_bytes());
    put(at::CGROUP_CPU, &e.cgroup_cpu.to_le_bytes());
    put(at::SOCK, &e.sock.to_le_bytes());
    put(at::START, &e.start_ns.to_le_bytes());
    b[HEADER..HEADER + n].copy_from_slice(&e.data[..n]);
    b
}

/// An event of process `tgid` (started at 0) on its `fd`, which is a
/// socket of its own (id `tgid << 32 | fd`).
pub fn event<'a>(
    ts_ns: u64,
    tgid: u32,
    fd: u32,
    kind: Kind,
    bytes: u32,
    data: &'a [u8],
) -> Event<'a> {
    Event {
        ts_ns,
        tgid,
        fd,
        sock: (u64::from(tgid) << 32) | u64::from(fd),
        start_ns: 0,
        kind,
        bytes,
        cgroup_v2: 0,
        cgroup_cpu: 0,
        data,
        tls: false,
        h2: false,
    }
}

/// The record of [`event`].
pub fn encode(ts_ns: u64, tgid: u32, fd: u32, kind: Kind, bytes: u32, data: &[u8]) -> Vec<u8> {
    encode_event(&event(ts_ns, tgid, fd, kind, bytes, data))
}

/// [`encode`] with `(cgroup_v2, cgroup_cpu)` ids.
pub fn encode_with_cgroups(
    ts_ns: u64,
    tgid: u32,
    fd: u32,
    kind: Kind,
    bytes: u32,
    cgroups: (u64, u64),
    data: &[u8],
) -> Vec<u8> {
    encode_event(&Event {
        cgroup_v2: cgroups.0,
        cgroup_cpu: cgroups.1,
        ..event(ts_ns, tgid, fd, kind, bytes, data)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let b = encode(7, 42, 5, Kind::Write, 1000, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(b.len(), EVENT_LEN);
        let e = decode(&b).unwrap();
        assert_eq!((e.ts_ns, e.tgid, e.fd, e.bytes), (7, 42, 5, 1000));
        assert_eq!(e.kind, Kind::Write);
        assert_eq!(e.data, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(e.conn(), (42u64 << 32) | 5);
        assert!(decode(&b[..HEADER - 1]).is_none());
        let c = encode_with_cgroups(1, 2, 3, Kind::Read, 4, (77, 88), b"GET / HTTP/1.1");
        let e = decode(&c).unwrap();
        assert_eq!(
            (e.cgroup_v2, e.cgroup_cpu, e.data),
            (77, 88, &b"GET / HTTP/1.1"[..])
        );
        let mut bad = b.clone();
        bad[22] = 9;
        assert!(decode(&bad).is_none());
        // a length past the record is refused, not read past
        let mut long = b.clone();
        long[20..22].copy_from_slice(&300u16.to_le_bytes());
        assert_eq!(decode(&long).unwrap().data.len(), MAX_BUF);
        assert!(decode(&long[..100]).is_none());
    }

    #[test]
    fn a_paired_record_is_its_two_events_in_order() {
        let req = encode(1, 2, 3, Kind::Read, 40, b"GET /a HTTP/1.1\r\n\r\n");
        let resp = encode(5, 2, 3, Kind::Write, 19, b"HTTP/1.1 204 No\r\n\r\n");
        let pair = [req.clone(), resp.clone()].concat();
        let got: Vec<_> = records(&pair).map(|r| decode(r).unwrap()).collect();
        assert_eq!(got, vec![decode(&req).unwrap(), decode(&resp).unwrap()]);
        assert_eq!(records(&req).count(), 1);
        // a short second half is no event, not a read past the record
        let cut = &pair[..EVENT_LEN + HEADER - 1];
        let got: Vec<_> = records(cut).map(decode).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_some() && got[1].is_none());
    }

    #[test]
    fn socket_and_start_at_the_kernel_offsets() {
        let e = Event {
            sock: 0x1122_3344_5566_7788,
            start_ns: 0x0102_0304_0506_0708,
            ..event(1, 2, 3, Kind::Read, 4, b"GET / HTTP/1.1")
        };
        let b = encode_event(&e);
        // offsetof(struct http_event, sock) == 40, start == 48, buf == 56
        assert_eq!(b[40..48], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(b[48..56], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[56..70], b"GET / HTTP/1.1");
        assert_eq!(decode(&b), Some(e));
        assert_eq!(decode(&b).unwrap().conn(), 0x1122_3344_5566_7788);
        let t = encode_event(&Event { tls: true, ..e });
        assert_eq!(t[23], 1);
        assert!(decode(&t).unwrap().tls);
        assert_eq!(control(&t), None);
    }

    #[test]
    fn process_records_are_controls_not_events() {
        let mut b = encode(1, 4242, 0, Kind::Read, 0, b"");
        b[22] = 4;
        assert_eq!(control(&b), Some(Control::Talks(4242)));
        assert!(decode(&b).is_none());
        b[22] = 5;
        assert_eq!(control(&b), Some(Control::Exited(4242)));
        assert_eq!(control(&b[..HEADER - 1]), None);
    }
}
