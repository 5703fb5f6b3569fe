//! The eBPF HTTP tracer: whether it runs, ring buffer events, and the
//! requests it paired or gave up on.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::label::label_values;

label_values! {
    /// Why the tracer gave up on a request or response.
    pub enum HttpDrop {
        /// The connection closed or idled with requests waiting.
        Unanswered => "unanswered",
        /// A response with no request.
        Unmatched => "unmatched",
        PendingLimit => "pending_limit",
        ConnLimit => "conn_limit",
        /// TLS plaintext whose socket the kernel never saw (a library
        /// doing its own I/O through a memory BIO).
        TlsNoSocket => "tls_no_socket",
        /// HTTP/2 requests that could not be decoded (the connection's
        /// start was not seen, or its frames or HPACK state were lost).
        H2Unknown => "h2_unknown",
        /// HTTP/2 connection directions whose frame boundaries the kernel
        /// lost (a record the ring had no room for, or too many frames in
        /// one buffer): their later requests count as `h2_unknown`.
        H2Lost => "h2_lost",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: HttpDrop,
}

pub struct EbpfTelemetry {
    pub up: Gauge,
    pub events: Counter,
    pub events_lost: Counter,
    pub connections: Gauge,
    pub http_requests: Counter,
    pub http_dropped: Family<ReasonLabel, Counter>,
    pub tls_libraries: Gauge,
    pub tls_attach_errors: Counter,
    pub tls_events: Counter,
}

impl EbpfTelemetry {
    pub(super) fn register(r: &mut Registry) -> Self {
        let t = EbpfTelemetry {
            up: Gauge::default(),
            events: Counter::default(),
            events_lost: Counter::default(),
            connections: Gauge::default(),
            http_requests: Counter::default(),
            http_dropped: Family::default(),
            tls_libraries: Gauge::default(),
            tls_attach_errors: Counter::default(),
            tls_events: Counter::default(),
        };
        r.register(
            "ebpf_tls_libraries",
            "Files (libssl, binaries with OpenSSL's symbols) with the TLS uprobes attached",
            t.tls_libraries.clone(),
        );
        r.register(
            "ebpf_tls_attach_errors",
            "TLS library files whose uprobes could not be attached",
            t.tls_attach_errors.clone(),
        );
        r.register(
            "ebpf_tls_events",
            "HTTP events read as plaintext off TLS library calls",
            t.tls_events.clone(),
        );
        r.register(
            "ebpf_up",
            "1 when the eBPF HTTP tracer is loaded and attached",
            t.up.clone(),
        );
        r.register(
            "ebpf_events",
            "Events read from the eBPF ring buffer",
            t.events.clone(),
        );
        r.register(
            "ebpf_events_lost",
            "eBPF events lost because the ring buffer was full",
            t.events_lost.clone(),
        );
        r.register(
            "ebpf_connections",
            "Connections the HTTP tracer follows",
            t.connections.clone(),
        );
        r.register(
            "http_requests_traced",
            "HTTP requests paired with their response by the eBPF tracer",
            t.http_requests.clone(),
        );
        r.register(
            "http_dropped",
            "HTTP requests or responses the tracer gave up on, by reason",
            t.http_dropped.clone(),
        );
        t
    }

    /// Events the kernel could not put in the full ring buffer.
    pub fn events_lost(&self, lost: u64) {
        if lost == 0 {
            return;
        }
        self.events_lost.inc_by(lost);
        crate::warn_limited!(
            "ebpf_lost",
            lost,
            "eBPF ring buffer full: HTTP events lost (counted in cased_agent_ebpf_events_lost_total)"
        );
    }

    pub fn http_dropped(&self, reason: HttpDrop, n: u64) {
        self.http_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }
}
