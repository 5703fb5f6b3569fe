//! The collection loop: every interval run each collector, enrich, hand the
//! batch to delivery. Also `--once`, readiness, and shutdown on signals.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::collect::Collector;
use crate::collect::cgroup::CgroupCollector;
use crate::collect::node::NodeCollector;
use crate::config::Config;
use crate::delivery::backoff::Backoff;
use crate::delivery::lanes::LaneConfig;
use crate::delivery::{Delivery, DeliveryOptions, Lanes};
use crate::enrich::{CycleContext, Enricher, Metadata, NoMetadata};
use crate::host::HostPaths;
use crate::model::Sample;
use crate::server::{self, Health};
use crate::sink::render::MetricOut;
use crate::telemetry::Telemetry;

/// How long `--once` waits between the priming sample and the real one.
const PRIME_GAP: Duration = Duration::from_secs(1);

/// One collection cycle's worth of state: the collectors (with their rate
/// state) and what turns samples into wire metrics.
pub struct Cycle {
    collectors: Vec<Box<dyn Collector>>,
    meta: Arc<dyn Metadata>,
    telemetry: Arc<Telemetry>,
    node: String,
    cluster_id: String,
    samples: Vec<Sample>,
    enricher: Enricher,
}

impl Cycle {
    pub fn new(
        collectors: Vec<Box<dyn Collector>>,
        meta: Arc<dyn Metadata>,
        telemetry: Arc<Telemetry>,
        node: String,
        cluster_id: String,
    ) -> Self {
        Cycle {
            collectors,
            meta,
            telemetry,
            node,
            cluster_id,
            samples: Vec::new(),
            enricher: Enricher::default(),
        }
    }

    /// The collectors of a host: node and containers.
    pub fn host_collectors(
        host: &HostPaths,
        telemetry: &Arc<Telemetry>,
    ) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(NodeCollector::new(host.clone())),
            Box::new(CgroupCollector::new(host.clone(), telemetry.clone())),
        ]
    }

    /// Run every collector once. A collector that fails (or panics) loses its
    /// part of this cycle only. Wire metrics are built `chunk` at a time and
    /// handed to `emit`, so a large node never holds a whole cycle of them
    /// (only its samples); `emit` says how many of them count as produced
    /// (delivery drops non-finite values). Returns how many were produced.
    pub fn collect(
        &mut self,
        now: Instant,
        timestamp_ms: i64,
        chunk: usize,
        mut emit: impl FnMut(Vec<MetricOut>) -> usize,
    ) -> usize {
        let started = Instant::now();
        self.samples.clear();
        for c in &mut self.collectors {
            let before = self.samples.len();
            let result =
                std::panic::catch_unwind(AssertUnwindSafe(|| c.collect(now, &mut self.samples)));
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => {
                    // a panic may leave a half-written part: drop it
                    self.samples.truncate(before);
                    Some("collector panicked".to_string())
                }
            };
            if let Some(err) = failure {
                self.telemetry.cycle.collector_failed(c.name(), &err);
            }
        }
        let ctx = CycleContext {
            node: &self.node,
            cluster_id: &self.cluster_id,
            timestamp_ms,
        };
        let chunk = chunk.max(1);
        let mut emitted = 0;
        let mut samples = std::mem::take(&mut self.samples);
        let mut rest = samples.drain(..);
        self.enricher.begin_cycle();
        loop {
            let mut out = Vec::with_capacity(chunk.min(rest.len()));
            self.enricher.to_wire(
                rest.by_ref().take(chunk),
                &ctx,
                self.meta.as_ref(),
                &mut out,
            );
            if out.is_empty() && rest.len() == 0 {
                break;
            }
            if !out.is_empty() {
                emitted += emit(out);
            }
        }
        drop(rest);
        self.enricher.end_cycle();
        // keep the allocation for the next cycle, unless it was a spike
        if samples.capacity() <= 4 * emitted.max(1024) {
            self.samples = samples;
        }
        self.telemetry.cycle.completed(
            emitted as u64,
            started.elapsed().as_secs_f64(),
            unix_ms() as f64 / 1000.0,
        );
        emitted
    }
}

/// Wall-clock Unix milliseconds (the cycle's timestamp on the wire).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Run the collection on a blocking thread (file reads are synchronous),
/// hand its metrics to delivery batch by batch (when given), and hand the
/// cycle back.
async fn collect_blocking(
    mut cycle: Cycle,
    delivery: Option<Delivery>,
    batch_size: usize,
) -> (Cycle, usize) {
    let now = Instant::now();
    let ts = unix_ms();
    let joined = tokio::task::spawn_blocking(move || {
        let n = cycle.collect(now, ts, batch_size, |metrics| match &delivery {
            Some(d) => d.submit_metrics(metrics),
            None => metrics.len(),
        });
        (cycle, n)
    })
    .await;
    match joined {
        Ok(r) => r,
        // collect() catches collector panics; this is unreachable in practice
        Err(e) => panic!("collection thread failed: {e}"),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        r = tokio::signal::ctrl_c() => {
            if r.is_ok() { tracing::info!("SIGINT received, shutting down") }
        }
    }
}

/// The delivery lanes: a disk queue each with `--buffer-path` (memory, with
/// an error logged and counted, when that directory is unusable), the
/// bounds split between metrics and spans when OTLP is on.
fn build_queue(cfg: &Config, telemetry: &Arc<Telemetry>, otel: bool) -> Lanes {
    let lanes = LaneConfig {
        queue_max_bytes: cfg.queue_max_bytes,
        buffer: cfg
            .buffer_path
            .clone()
            .map(|dir| (dir, cfg.buffer_max_bytes)),
        spans: otel,
    };
    Lanes::open(&lanes, telemetry)
}

/// The eBPF HTTP collector, when the kernel takes the program (a kernel
/// that refuses it costs HTTP tracing only: logged).
fn start_ebpf(cfg: &Config, telemetry: &Arc<Telemetry>) -> Option<Box<dyn Collector>> {
    let opts = crate::ebpf::HttpOptions {
        proc_path: cfg.proc_path.clone(),
        cgroup_path: cfg.cgroup_path.clone(),
        max_paths: crate::ebpf::aggregate::DEFAULT_MAX_PATHS,
        attach: cfg.ebpf_attach,
        max_sock_state: crate::ebpf::DEFAULT_MAX_SOCK_STATE,
        tls: cfg.ebpf_tls,
        reader_thread: true,
    };
    match crate::ebpf::HttpCollector::start(&opts, telemetry.clone()) {
        Ok(c) => Some(Box::new(c)),
        Err(e) => {
            tracing::error!(
                error = %e,
                "--enable-ebpf: eBPF HTTP tracing unavailable, running without it (needs Linux 5.8+ with BTF, CAP_BPF + CAP_PERFMON or root, tracefs)"
            );
            None
        }
    }
}

/// Pod metadata and the events collector when there are Kubernetes
/// credentials (local mode without), and what gives the Lease up.
async fn connect_k8s(
    cfg: &Config,
    telemetry: &Arc<Telemetry>,
    collectors: &mut Vec<Box<dyn Collector>>,
) -> (Arc<dyn Metadata>, Option<crate::k8s::leader::LeaseRelease>) {
    match crate::k8s::connect(telemetry).await {
        Ok(Some(client)) => {
            // --once runs no leader election: one cycle cannot count events
            let k = crate::k8s::start(
                client,
                &cfg.node_name,
                &cfg.namespace,
                !cfg.once,
                telemetry.clone(),
            );
            collectors.push(Box::new(k.collector));
            (k.meta, k.release)
        }
        Ok(None) => {
            tracing::info!(
                "no Kubernetes credentials (in-cluster or kubeconfig): local mode, no pod metadata"
            );
            (Arc::new(NoMetadata), None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up the Kubernetes client: local mode, no pod metadata");
            (Arc::new(NoMetadata), None)
        }
    }
}

/// The delivery lanes ([`build_queue`]) and their senders.
fn start_delivery(
    sink: crate::sink::AnySink,
    cfg: &Config,
    telemetry: &Arc<Telemetry>,
    otel: bool,
) -> (Delivery, tokio::task::JoinHandle<()>) {
    let opts = DeliveryOptions {
        batch_size: cfg.batch_size,
        queue_max_bytes: cfg.queue_max_bytes,
        request_timeout: cfg.request_timeout,
        compression: cfg.compression,
    };
    let lanes = build_queue(cfg, telemetry, otel);
    Delivery::start_lanes(sink, opts, Backoff::default(), lanes, telemetry.clone())
}

/// The OTLP receiver, its spans into `delivery`, enriched from `meta`;
/// `None` (logged) when it cannot listen.
async fn start_otlp(
    cfg: &Config,
    delivery: &Delivery,
    telemetry: &Arc<Telemetry>,
    meta: &Arc<dyn Metadata>,
    shutdown: &CancellationToken,
) -> Option<crate::otlp::OtlpHandles> {
    let ocfg = crate::otlp::OtlpConfig::from_config(cfg);
    let sink = Arc::new(delivery.clone());
    let (t, m, stop) = (telemetry.clone(), meta.clone(), shutdown.clone());
    match crate::otlp::start_with(&ocfg, sink, t, m, stop).await {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the OTLP receiver");
            None
        }
    }
}

/// The whole agent: returns the process exit code.
pub async fn run(cfg: Config) -> ExitCode {
    let telemetry = Arc::new(Telemetry::new());
    let host = HostPaths::new(&cfg.proc_path, &cfg.cgroup_path);
    let sink = match crate::sink::build(&cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up the sink");
            return ExitCode::from(1);
        }
    };
    // the OTLP receiver runs in the loop only (--once has no time to receive)
    let otel = cfg.enable_otel && !cfg.once;
    let (delivery, delivery_task) = start_delivery(sink, &cfg, &telemetry, otel);
    let mut collectors = Cycle::host_collectors(&host, &telemetry);
    // the one shutdown signal: cancelled on SIGTERM/SIGINT (or after
    // --once), seen by the servers and the OTLP receiver
    let shutdown = CancellationToken::new();
    // the pod cache first: the OTLP receiver enriches from it
    let (meta, lease_release) = connect_k8s(&cfg, &telemetry, &mut collectors).await;
    let mut otlp = None;
    if otel {
        let started = start_otlp(&cfg, &delivery, &telemetry, &meta, &shutdown).await;
        let Some(h) = started else {
            if let Some(r) = lease_release {
                r.release(Duration::from_secs(2)).await;
            }
            return ExitCode::from(1);
        };
        collectors.push(Box::new(h.metrics.clone()));
        collectors.push(Box::new(h.otel_metrics.clone()));
        otlp = Some(h);
    }
    if cfg.enable_ebpf {
        collectors.extend(start_ebpf(&cfg, &telemetry));
    }
    let cycle = Cycle::new(
        collectors,
        meta,
        telemetry.clone(),
        cfg.node_name.clone(),
        cfg.cluster_id.clone(),
    );
    tracing::info!(
        node = %cfg.node_name,
        cluster = %cfg.cluster_id,
        interval = ?cfg.interval,
        sink = ?cfg.sink,
        proc = %cfg.proc_path.display(),
        cgroup = %cfg.cgroup_path.display(),
        "cased-agent starting"
    );
    if cfg.enable_otel && cfg.once {
        tracing::info!("--enable-otel: no OTLP receiver with --once");
    }

    let (code, stopping) = if cfg.once {
        let code = run_once(cycle, &delivery, &cfg, &telemetry).await;
        (code, Instant::now())
    } else {
        run_loop(cycle, &delivery, &cfg, telemetry, &shutdown).await
    };
    // everything below ends by --shutdown-grace + 1 s after the signal,
    // whatever the peers do (Kubernetes SIGKILLs at its own grace period)
    let deadline = stopping + cfg.shutdown_grace + SHUTDOWN_SLACK;
    let left = || deadline.saturating_duration_since(Instant::now());
    shutdown.cancel();
    if let Some(h) = otlp {
        h.join(left().min(SERVER_DRAIN)).await;
    }
    if let Some(r) = lease_release {
        // a successor takes over now rather than when the Lease expires
        r.release(left().min(Duration::from_secs(2))).await;
    }
    let _ = tokio::time::timeout(left().min(Duration::from_secs(1)), delivery_task).await;
    code
}

/// Past `--shutdown-grace`, what the servers and the Lease release may
/// still take (the process is gone by grace + 1 s).
const SHUTDOWN_SLACK: Duration = Duration::from_millis(800);
/// How long the servers' in-flight requests may finish on shutdown.
const SERVER_DRAIN: Duration = Duration::from_secs(1);

async fn run_once(
    cycle: Cycle,
    delivery: &Delivery,
    cfg: &Config,
    telemetry: &Telemetry,
) -> ExitCode {
    // priming sample: counters need two reads for a rate
    let (cycle, _) = collect_blocking(cycle, None, cfg.batch_size).await;
    tokio::time::sleep(PRIME_GAP).await;
    let (_, n) = collect_blocking(cycle, Some(delivery.clone()), cfg.batch_size).await;
    let report = delivery
        .shutdown(cfg.shutdown_grace.max(cfg.request_timeout))
        .await;
    let dropped = telemetry.delivery.undelivered_batches();
    if dropped == 0 && report.dropped_batches == 0 && report.pending_batches == 0 {
        tracing::info!(metrics = n, "delivered");
        ExitCode::SUCCESS
    } else {
        tracing::error!(
            metrics = n,
            dropped_batches = dropped.max(report.dropped_batches),
            pending_batches = report.pending_batches,
            "not everything was delivered"
        );
        ExitCode::from(1)
    }
}

async fn run_loop(
    mut cycle: Cycle,
    delivery: &Delivery,
    cfg: &Config,
    telemetry: Arc<Telemetry>,
    shutdown: &CancellationToken,
) -> (ExitCode, Instant) {
    let health = Arc::new(Health::new(cfg.interval));
    let listener = match server::bind(cfg.health_port).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(port = cfg.health_port, error = %e, "cannot listen on the health port (--health-port)");
            return (ExitCode::from(1), Instant::now());
        }
    };
    let mut server_task = {
        let health = health.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            // serve() drains for at most server::HEALTH_LIMITS.drain
            if let Err(e) = server::serve(listener, health, telemetry, stop).await {
                tracing::error!(error = %e, "health server failed");
            }
        })
    };

    let mut ticker = tokio::time::interval(cfg.interval);
    // a slow cycle skips ticks rather than bunching them up: cadence holds
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = ticker.tick() => {
                (cycle, _) = collect_blocking(cycle, Some(delivery.clone()), cfg.batch_size).await;
                health.cycle_done();
            }
        }
    }
    let stopping = Instant::now();
    // no new requests: the servers drain while delivery flushes
    shutdown.cancel();
    // delivery logs and counts what the grace period could not deliver
    delivery.shutdown(cfg.shutdown_grace).await;
    let left = (stopping + cfg.shutdown_grace + SHUTDOWN_SLACK)
        .saturating_duration_since(Instant::now())
        .min(SERVER_DRAIN);
    if tokio::time::timeout(left, &mut server_task).await.is_err() {
        server_task.abort();
    }
    tracing::info!("stopped");
    (ExitCode::SUCCESS, stopping)
}
