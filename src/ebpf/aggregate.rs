//! HTTP golden signals per owner (container), direction, method and path,
//! per interval (SPEC §4 "HTTP through eBPF"), with percentiles from the
//! same [`Sketch`] as the OTLP part.
//!
//! Cardinality is bounded per owner: at most `max_paths` distinct paths
//! are kept; a request on any further path counts under
//! [`OVERFLOW_PATH`]. A path frees its slot after [`PATH_IDLE_INTERVALS`]
//! intervals without a request, so the set follows what a container serves
//! now. Owners with no request for as long are forgotten.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::http::method_name;
use super::owner::Owner;
use super::track::{Direction, Exchange, Protocol};
use crate::model::{About, Sample, unit};
use crate::sketch::Sketch;

/// The path of requests beyond an owner's cap.
pub const OVERFLOW_PATH: &str = "/{other}";
/// Default cap on distinct paths per container.
pub const DEFAULT_MAX_PATHS: usize = 100;
/// Intervals after which an unused path (or owner) is forgotten.
pub const PATH_IDLE_INTERVALS: u64 = 10;

#[derive(Debug, Default)]
struct Stats {
    count: u64,
    errors: u64,
    sum_ms: f64,
    sketch: Sketch,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    direction: Direction,
    protocol: Protocol,
    method: u8,
    path: Arc<str>,
}

#[derive(Debug)]
struct OwnerState {
    owner: Arc<Owner>,
    /// Known paths and the interval they were last used in.
    paths: FxHashMap<Arc<str>, u64>,
    series: FxHashMap<SeriesKey, Stats>,
    last_interval: u64,
}

/// One series' numbers for one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub owner: Arc<Owner>,
    pub direction: Direction,
    pub protocol: Protocol,
    pub method: &'static str,
    pub path: Arc<str>,
    pub count: u64,
    pub errors: u64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Per-interval numbers. Owners are keyed by their `Arc`'s address
/// ([`super::owner::Owners`] hands out one `Arc` per distinct owner; the
/// state holds a clone, so the address stays theirs).
#[derive(Debug)]
pub struct HttpAggregate {
    owners: FxHashMap<usize, OwnerState>,
    max_paths: usize,
    interval: u64,
    overflow: Arc<str>,
}

impl HttpAggregate {
    pub fn new(max_paths: usize) -> Self {
        HttpAggregate {
            owners: FxHashMap::default(),
            max_paths,
            interval: 0,
            overflow: Arc::from(OVERFLOW_PATH),
        }
    }

    pub fn record(&mut self, owner: &Arc<Owner>, x: Exchange) {
        let interval = self.interval;
        let st = self
            .owners
            .entry(Arc::as_ptr(owner) as usize)
            .or_insert_with(|| OwnerState {
                owner: owner.clone(),
                paths: FxHashMap::default(),
                series: FxHashMap::default(),
                last_interval: interval,
            });
        st.last_interval = interval;
        let path = match st.paths.get_mut(&*x.path) {
            Some(seen) => {
                *seen = interval;
                x.path
            }
            None => {
                if st.paths.len() >= self.max_paths {
                    st.paths
                        .retain(|_, seen| interval - *seen < PATH_IDLE_INTERVALS);
                }
                if st.paths.len() < self.max_paths {
                    st.paths.insert(x.path.clone(), interval);
                    x.path
                } else {
                    self.overflow.clone()
                }
            }
        };
        let s = st
            .series
            .entry(SeriesKey {
                direction: x.direction,
                protocol: x.protocol,
                method: x.method,
                path,
            })
            .or_default();
        let ms = x.latency_ns as f64 / 1e6;
        s.count += 1;
        s.errors += u64::from(x.error);
        s.sum_ms += ms;
        s.sketch.add(ms);
    }

    /// Take the interval's numbers (sorted) and start the next interval.
    pub fn drain(&mut self) -> Vec<Summary> {
        let mut out = Vec::new();
        let interval = self.interval;
        for st in self.owners.values_mut() {
            let owner = &st.owner;
            for (k, s) in st.series.drain() {
                let n = s.count.max(1) as f64;
                let q = |p: f64| s.sketch.quantile(p).unwrap_or(0.0);
                out.push(Summary {
                    owner: owner.clone(),
                    direction: k.direction,
                    protocol: k.protocol,
                    method: method_name(k.method),
                    path: k.path,
                    count: s.count,
                    errors: s.errors,
                    avg_ms: s.sum_ms / n,
                    p50_ms: q(0.50),
                    p95_ms: q(0.95),
                    p99_ms: q(0.99),
                });
            }
        }
        self.owners
            .retain(|_, st| interval - st.last_interval < PATH_IDLE_INTERVALS);
        self.interval += 1;
        out.sort_by(|a, b| {
            (a.direction, a.protocol, a.method, &a.path).cmp(&(
                b.direction,
                b.protocol,
                b.method,
                &b.path,
            ))
        });
        out
    }
}

impl Summary {
    /// The six samples of SPEC §4 for this series.
    pub fn samples(&self, out: &mut Vec<Sample>) {
        let about = match &self.owner.container {
            Some(id) => About::Container(id.clone()),
            None => About::Tags,
        };
        let cgroup = &self.owner.cgroup;
        let n = self.count.max(1) as f64;
        let values = [
            ("http.request_count", self.count as f64, unit::COUNT),
            (
                "http.error_rate",
                self.errors as f64 * 100.0 / n,
                unit::PERCENT,
            ),
            ("http.latency_avg", self.avg_ms, unit::MS),
            ("http.latency_p50", self.p50_ms, unit::MS),
            ("http.latency_p95", self.p95_ms, unit::MS),
            ("http.latency_p99", self.p99_ms, unit::MS),
        ];
        for (name, value, u) in values {
            let mut s = Sample::new(name, value, u, about.clone());
            s.tags.push(("method", self.method.to_string()));
            s.tags
                .push(("protocol", self.protocol.as_str().to_string()));
            s.tags.push(("path", self.path.to_string()));
            s.tags
                .push(("direction", self.direction.as_str().to_string()));
            if !cgroup.is_empty() {
                s.tags.push(("cgroup", cgroup.to_string()));
            }
            out.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(path: &str, status: u16, ms: u64, dir: Direction) -> Exchange {
        Exchange {
            tgid: 1,
            direction: dir,
            protocol: Protocol::Http1,
            method: 0,
            path: Arc::from(path),
            status,
            error: status >= 400,
            latency_ns: ms * 1_000_000,
        }
    }

    #[test]
    fn counts_errors_and_percentiles() {
        let mut a = HttpAggregate::new(10);
        let o = Arc::new(Owner {
            container: None,
            cgroup: Arc::from("/x"),
        });
        for i in 0..100u64 {
            let status = if i % 4 == 0 { 500 } else { 200 };
            a.record(&o, x("/a", status, i + 1, Direction::Server));
        }
        a.record(&o, x("/a", 404, 7, Direction::Client));
        let d = a.drain();
        assert_eq!(d.len(), 2);
        let s = &d[0];
        assert_eq!(
            (s.direction, s.count, s.errors),
            (Direction::Server, 100, 25)
        );
        assert!((s.avg_ms - 50.5).abs() < 1e-9);
        assert!((s.p50_ms - 50.0).abs() <= 0.5 + 1e-9, "{}", s.p50_ms);
        assert!((s.p99_ms - 99.0).abs() <= 1.0, "{}", s.p99_ms);
        assert_eq!(
            (d[1].direction, d[1].count, d[1].errors),
            (Direction::Client, 1, 1)
        );
        let mut out = Vec::new();
        s.samples(&mut out);
        assert_eq!(out.len(), 6);
        assert_eq!(out[1].name, "http.error_rate");
        assert_eq!(out[1].value, 25.0);
        assert!(out[0].tags.contains(&("cgroup", "/x".to_string())));
        assert!(out[0].tags.contains(&("direction", "server".to_string())));
        // nothing carries over
        assert!(a.drain().is_empty());
    }

    #[test]
    fn path_cap_overflows_then_frees_idle_paths() {
        let mut a = HttpAggregate::new(3);
        let o = Arc::new(Owner::unknown());
        for p in ["/a", "/b", "/c", "/d", "/e", "/a"] {
            a.record(&o, x(p, 200, 1, Direction::Server));
        }
        let d = a.drain();
        let got: Vec<(&str, u64)> = d.iter().map(|s| (&*s.path, s.count)).collect();
        assert_eq!(got, vec![("/a", 2), ("/b", 1), ("/c", 1), ("/{other}", 2)]);
        // /a stays in use; /b and /c go idle and free their slots
        for _ in 0..PATH_IDLE_INTERVALS {
            a.record(&o, x("/a", 200, 1, Direction::Server));
            a.drain();
        }
        a.record(&o, x("/d", 200, 1, Direction::Server));
        a.record(&o, x("/e", 200, 1, Direction::Server));
        a.record(&o, x("/f", 200, 1, Direction::Server));
        let got: Vec<(String, u64)> = a
            .drain()
            .iter()
            .map(|s| (s.path.to_string(), s.count))
            .collect();
        assert_eq!(
            got,
            vec![("/d".into(), 1), ("/e".into(), 1), ("/{other}".into(), 1)]
        );
    }
}
