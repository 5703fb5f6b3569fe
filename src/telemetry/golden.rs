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

const KINDS: [&str; 2] = ["metrics", "spans"];

/// Every family, each label value its call sites use; values differ so a
/// sample that moves to another family or label shows.
fn drive(t: &Telemetry) {
    drive_cycle(t);
    drive_delivery(t);
    drive_otlp(t);
    drive_buffer(t);
    drive_k8s(t);
    drive_ebpf(t);
}

fn drive_cycle(t: &Telemetry) {
    t.cycles.inc_by(3);
    t.cycle_duration_seconds.set(0.25);
    t.last_cycle_timestamp_seconds.set(1_700_000_000.5);
    t.metrics_produced.inc_by(120);
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
            t.collector_error(c);
        }
    }
    t.container_errors.inc_by(2);
    t.containers.set(17);
}

fn drive_delivery(t: &Telemetry) {
    for (i, k) in (1..).zip(KINDS) {
        let l = KindLabel {
            kind: k.to_string(),
        };
        t.batches_sent.get_or_create(&l).inc_by(10 * i);
        t.items_sent.get_or_create(&l).inc_by(1000 * i);
        t.batches_retried.get_or_create(&l).inc_by(20 * i);
        for (j, reason) in (1..).zip(["permanent", "queue_full", "shutdown"]) {
            t.drop_items(k, reason, i * j, 100 * i * j + 1);
        }
    }
    for (i, k) in (1..).zip(KINDS) {
        t.drop_items(k, "corrupt", 4 * i, 400 * i + 1);
    }
    t.drop_items("metrics", "non_finite", 0, 9);
    t.queue_bytes.set(4096);
    t.queue_batches.set(3);
    t.queue_capacity_bytes.set(1 << 20);
}

/// Outcomes by transport, as the receivers count them (gRPC has no
/// `timeout`: tonic's own limits answer those).
const HTTP_OUTCOMES: [&str; 6] = [
    "accepted",
    "unsupported",
    "timeout",
    "malformed",
    "too_large",
    "refused",
];
const GRPC_OUTCOMES: [&str; 5] = [
    "accepted",
    "malformed",
    "unsupported",
    "too_large",
    "refused",
];

fn drive_otlp(t: &Telemetry) {
    for (i, o) in (1..).zip(HTTP_OUTCOMES) {
        for _ in 0..i {
            t.otlp_request("http", o);
            t.otel_metrics_request("http", o);
        }
    }
    t.otel_metrics_request("http", "logs_not_accepted");
    for (i, o) in (1..).zip(GRPC_OUTCOMES) {
        for _ in 0..(10 + i) {
            t.otlp_request("grpc", o);
            t.otel_metrics_request("grpc", o);
        }
    }
    t.spans_received.inc_by(40);
    t.spans_refused.inc_by(4);
    t.otel_points_received.inc_by(30);
    t.otel_points_rejected.inc_by(2);
    t.otel_points_overflow.inc_by(3);
    t.otel_series.set(11);
    t.otel_series_freed.inc_by(1);
}

fn drive_buffer(t: &Telemetry) {
    t.buffer_disk_bytes.set(2048);
    t.buffer_fallback(true);
    t.buffer_recovered_batches.inc_by(4);
    t.buffer_corrupt_records.inc_by(1);
    t.buffer_corrupt_bytes.inc_by(77);
    let ops = ["open", "write", "sync", "read", "cursor", "delete"];
    for (i, op) in ops.into_iter().enumerate() {
        for _ in 0..=i {
            t.buffer_error(op);
        }
    }
}

fn drive_k8s(t: &Telemetry) {
    t.k8s_watch_error("pods");
    t.k8s_watch_error("pods");
    for _ in 0..3 {
        t.k8s_watch_error("events");
    }
    t.k8s_watch_state("pods", true);
    t.k8s_relist("pods");
    t.k8s_relist("events");
    t.k8s_relist("events");
    t.k8s_pods_cached.set(9);
    t.k8s_owner_lookups.inc_by(4);
    t.k8s_leader.set(1);
    t.k8s_leader_transitions.inc_by(1);
    t.k8s_events_seen.inc_by(12);
}

fn drive_ebpf(t: &Telemetry) {
    t.ebpf_up.set(1);
    t.ebpf_events.inc_by(1000);
    t.ebpf_events_lost.inc_by(5);
    t.ebpf_connections.set(6);
    t.http_requests.inc_by(300);
    let reasons = ["unanswered", "unmatched", "pending_limit", "conn_limit"];
    for (i, r) in (1..).zip(reasons) {
        t.http_dropped(r, i);
    }
}
