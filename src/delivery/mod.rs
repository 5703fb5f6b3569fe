//! Bounded queue between the cycle and the sink, with retries.
//! TEMPORARY STUB (stdout only) until the delivery branch lands.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Compression;
use crate::sink::AnySink;
use crate::sink::wire::Metric;
use crate::telemetry::Telemetry;

pub struct DeliveryOptions {
    pub batch_size: usize,
    pub queue_max_bytes: u64,
    pub request_timeout: Duration,
    pub compression: Compression,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    pub delivered_batches: u64,
    pub dropped_batches: u64,
    pub pending_batches: u64,
}

#[derive(Clone)]
pub struct Delivery {
    batch_size: usize,
}

impl Delivery {
    pub fn start(
        _sink: AnySink,
        opts: DeliveryOptions,
        _telemetry: Arc<Telemetry>,
    ) -> (Delivery, tokio::task::JoinHandle<()>) {
        (
            Delivery {
                batch_size: opts.batch_size,
            },
            tokio::spawn(async {}),
        )
    }

    pub fn submit_metrics(&self, metrics: Vec<Metric>) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for chunk in metrics.chunks(self.batch_size) {
            for m in chunk {
                let _ = serde_json::to_writer(&mut out, m);
                let _ = out.write_all(b"\n");
            }
        }
        let _ = out.flush();
    }

    pub async fn flush(&self, _timeout: Duration) -> FlushReport {
        FlushReport::default()
    }

    pub async fn shutdown(&self, _grace: Duration) -> FlushReport {
        FlushReport::default()
    }
}
