//! `/metrics` against a golden file: every family driven to a sample with
//! every label value the code produces, so a restructuring that renames,
//! reorders or relabels anything shows here.
//!
//! Regenerate (only when the exposition is meant to change):
//! `CASED_UPDATE_GOLDEN=1 cargo test --lib telemetry::golden`.

use super::*;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/telemetry/metrics.golden"
);

/// prometheus-client keeps a family's samples in a `HashMap`, so their
/// order changes from run to run: the samples of each family are sorted.
/// Everything else (names, HELP, TYPE, family order, values) is as encoded.
fn canonical(text: &str) -> String {
    let mut out = String::new();
    let mut samples: Vec<&str> = Vec::new();
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        samples.sort_unstable();
        for s in samples.drain(..) {
            out.push_str(s);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

#[test]
fn exposition_matches_golden() {
    let t = Telemetry::new();
    drive(&t);
    let got = canonical(&t.encode());
    if std::env::var_os("CASED_UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &got).expect("write the golden file");
    }
    let want = std::fs::read_to_string(GOLDEN).expect("read the golden file");
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "/metrics differs from {GOLDEN} at line {}:\n got: {:?}\nwant: {:?}",
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

use super::delivery::Undelivered;
use super::ebpf::HttpDrop;
use super::k8s::Step;

const KINDS: [Kind; 2] = [Kind::Metrics, Kind::Spans];
const ERR: &str = "injected";

/// Every family, each label value its call sites use; values differ so a
/// sample that moves to another family or label shows.
fn drive(t: &Telemetry) {
    drive_cycle(&t.cycle);
    drive_delivery(&t.delivery);
    drive_otlp(&t.otlp);
    drive_buffer(&t.buffer);
    drive_k8s(&t.k8s);
    drive_ebpf(&t.ebpf);
}

fn drive_cycle(t: &CycleTelemetry) {
    t.completed(40, 0.25, 1_700_000_000.5);
    t.completed(40, 0.25, 1_700_000_000.5);
    t.completed(40, 0.25, 1_700_000_000.5);
    let collectors = [
        "node",
        "cgroup",
        "http",
        "otlp",
        "otlp_metrics",
        "k8s_events",
    ];
    for (i, c) in collectors.into_iter().enumerate() {
        for _ in 0..=i {
            t.collector_failed(c, &ERR);
        }
    }
    t.container_failed(&"c", &ERR);
    t.container_failed(&"c", &ERR);
    t.containers.set(17);
}

fn drive_delivery(t: &DeliveryTelemetry) {
    for (i, k) in (1..).zip(KINDS) {
        for _ in 0..10 * i {
            t.sent(k, 100);
        }
        for _ in 0..20 * i {
            t.retrying(k, "cased", std::time::Duration::ZERO, 1, &ERR);
        }
        t.refused(k, "cased", 100 * i + 1, &ERR);
        for _ in 1..i {
            t.encode_failed(k, 0, &ERR);
        }
        t.evicted(k, 2 * i, 200 * i + 1, 1 << 20);
        t.grace_over(k, 3 * i, 300 * i + 1);
    }
    for (i, k) in (1..).zip(KINDS) {
        t.dropped(k, Undelivered::Corrupt, 4 * i, 400 * i + 1);
    }
    t.non_finite(9);
    t.queue_bytes.set(4096);
    t.queue_batches.set(3);
    t.queue_capacity_bytes.set(1 << 20);
}

/// Outcomes by transport, as the receivers count them (gRPC has no
/// `timeout`: tonic's own limits answer those).
const HTTP_OUTCOMES: [Outcome; 6] = [
    Outcome::Accepted,
    Outcome::Unsupported,
    Outcome::Timeout,
    Outcome::Malformed,
    Outcome::TooLarge,
    Outcome::Refused,
];
const GRPC_OUTCOMES: [Outcome; 5] = [
    Outcome::Accepted,
    Outcome::Malformed,
    Outcome::Unsupported,
    Outcome::TooLarge,
    Outcome::Refused,
];

fn drive_otlp(t: &OtlpTelemetry) {
    for (i, o) in (1..).zip(HTTP_OUTCOMES) {
        for _ in 0..i {
            t.request(Transport::Http, o);
            t.metrics_request(Transport::Http, o);
        }
    }
    t.metrics_request(Transport::Http, Outcome::LogsNotAccepted);
    for (i, o) in (1..).zip(GRPC_OUTCOMES) {
        for n in 0..(10 + i) {
            if o == Outcome::Refused && n == 0 {
                t.span_buffer_full(Transport::Grpc);
            } else {
                t.request(Transport::Grpc, o);
            }
            t.metrics_request(Transport::Grpc, o);
        }
    }
    t.spans_received.inc_by(40);
    t.spans_refused.inc_by(4);
    for (n, e) in (6..).zip([
        Enrichment::Resource,
        Enrichment::Peer,
        Enrichment::HostNetwork,
        Enrichment::Unknown,
    ]) {
        t.enriched(e, n);
    }
    t.points(30, 3, 2);
    t.series_after_interval(11, 1);
}

fn drive_buffer(t: &BufferTelemetry) {
    let p = std::path::Path::new("/b");
    t.disk_bytes.set(2048);
    t.recovered(4);
    t.corrupt_region(p, 0, 77);
    let io = || std::io::Error::other(ERR);
    t.open_failed(p, &ERR);
    for _ in 0..2 {
        t.write_failed(p, &io(), 1);
    }
    t.fallback_left();
    for _ in 0..3 {
        t.sync_failed(p, &ERR);
    }
    t.segment_open_failed(p, &ERR);
    for _ in 0..3 {
        t.record_read_failed(p, &ERR);
    }
    for _ in 0..5 {
        t.cursor_failed(p, &ERR);
    }
    for _ in 0..6 {
        t.delete_failed(p, &ERR);
    }
}

fn drive_k8s(t: &K8sTelemetry) {
    t.pod_watch_failed(&ERR);
    t.pod_watch_failed(&ERR);
    t.event_watch_failed(Step::List, &ERR);
    t.event_watch_failed(Step::Watch, &ERR);
    t.event_watch_failed(Step::Watch, &ERR);
    t.watch_state(Watch::Pods, true);
    t.relisted(Watch::Pods);
    t.relisted(Watch::Events);
    t.relisted(Watch::Events);
    t.pods_cached.set(9);
    t.owner_lookups.inc_by(4);
    t.leading(true);
    t.events_seen.inc_by(12);
}

fn drive_ebpf(t: &EbpfTelemetry) {
    t.up.set(1);
    t.events.inc_by(1000);
    t.events_lost(5);
    t.connections.set(6);
    t.http_requests.inc_by(300);
    let reasons = [
        HttpDrop::Unanswered,
        HttpDrop::Unmatched,
        HttpDrop::PendingLimit,
        HttpDrop::ConnLimit,
        HttpDrop::TlsNoSocket,
    ];
    for (i, r) in (1..).zip(reasons) {
        t.http_dropped(r, i);
    }
    t.tls_libraries.set(2);
    t.tls_attach_errors.inc_by(1);
    t.tls_events.inc_by(40);
}

/// Every family registered is in the golden file (so `drive` gave it a
/// sample: an empty family is not encoded at all). Counts the
/// `r.register(` calls of the subsystem files (each names its registry `r`).
#[test]
fn golden_has_every_registered_family() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/telemetry");
    let mut registered = 0;
    for e in std::fs::read_dir(dir).expect("src/telemetry") {
        let path = e.expect("entry").path();
        if path.file_name().is_some_and(|n| n != "golden.rs") {
            let src = std::fs::read_to_string(&path).expect("source");
            registered += src.matches("r.register(").count();
        }
    }
    let golden = std::fs::read_to_string(GOLDEN).expect("read the golden file");
    let families = golden.lines().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(families, registered);
}
