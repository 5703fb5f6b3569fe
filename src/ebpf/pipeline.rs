//! Userspace from raw ring-buffer records to per-interval summaries (no
//! kernel involved: the loader feeds it, benches and tests feed it too).

use std::path::PathBuf;

use super::aggregate::{HttpAggregate, Summary};
use super::event::{Kind, decode, records};
use super::owner::Owners;
use super::track::{Dropped, Limits, Tracker};

pub struct Pipeline {
    tracker: Tracker,
    owners: Owners,
    agg: HttpAggregate,
    /// Ring-buffer records read, since start.
    pub records: u64,
    /// Events in them (one or two a record), since start.
    pub events: u64,
    /// Requests paired with their response, since start.
    pub requests: u64,
    /// Events read off TLS library calls, since start.
    pub tls_events: u64,
}

impl Pipeline {
    /// `unified`, `cpu`: the cgroup2 and v1 `cpu` mounts (see [`Owners`]).
    pub fn new(
        proc_path: PathBuf,
        unified: Option<PathBuf>,
        cpu: Option<PathBuf>,
        max_paths: usize,
        limits: Limits,
    ) -> Self {
        Pipeline {
            tracker: Tracker::new(limits),
            owners: Owners::new(proc_path, unified, cpu),
            agg: HttpAggregate::new(max_paths),
            records: 0,
            events: 0,
            requests: 0,
            tls_events: 0,
        }
    }

    /// One ring-buffer record: one event, or two in order (the socket path
    /// pairs a request with the message after it, see [`records`]).
    pub fn event(&mut self, raw: &[u8]) {
        self.records += 1;
        for one in records(raw) {
            self.one(one);
        }
    }

    fn one(&mut self, raw: &[u8]) {
        self.events += 1;
        let Some(e) = decode(raw) else {
            return;
        };
        self.tls_events += u64::from(e.tls);
        let Pipeline {
            tracker,
            owners,
            agg,
            requests,
            ..
        } = self;
        if e.kind == Kind::Close {
            tracker.handle(&e, &mut |_| {});
            return;
        }
        // look the process up at its first event, while it exists: a
        // short-lived client may be gone by the time its response is read
        // (cached per process); an exchange completes on this event's tgid
        let owner = owners.get(e.tgid, e.start_ns, (e.cgroup_v2, e.cgroup_cpu));
        tracker.handle(&e, &mut |x| {
            *requests += 1;
            agg.record(&owner, x);
        });
    }

    /// Close the interval: forget idle connections, take the numbers.
    pub fn finish_interval(&mut self, now_ns: u64) -> Vec<Summary> {
        self.tracker.expire(now_ns);
        let out = self.agg.drain();
        self.owners.next_interval();
        out
    }

    pub fn dropped(&self) -> Dropped {
        self.tracker.dropped
    }

    pub fn connections(&self) -> usize {
        self.tracker.conns()
    }
}
