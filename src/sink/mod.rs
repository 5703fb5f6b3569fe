//! Where batches go: the Cased API ([`cased`]) or stdout ([`stdout`]).
//!
//! A sink does two things: it encodes a slice of [`wire::Metric`]s into the
//! bytes it will send ([`AnySink::encode_metrics`], called on the cycle's
//! thread so the delivery queue holds finished bytes), and it sends one such
//! [`EncodedBatch`] ([`AnySink::send`]), reporting success, a transient
//! failure (retry) or a permanent one (drop). The wire structs of SPEC §3
//! live in [`wire`] and nowhere else.

pub mod cased;
pub mod render;
#[cfg(test)]
pub mod scripted;
pub mod span_json;
pub mod stdout;
pub mod wire;

use std::time::Duration;

use bytes::Bytes;

use crate::config::{Compression, Config, SinkKind};

/// What a batch carries; decides the API path and the telemetry label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    Metrics,
    Spans,
}

impl PayloadKind {
    /// The `kind` label of the delivery counters.
    pub fn as_str(self) -> &'static str {
        self.label().as_str()
    }

    /// The `kind` label of the delivery families.
    pub fn label(self) -> crate::telemetry::Kind {
        match self {
            PayloadKind::Metrics => crate::telemetry::Kind::Metrics,
            PayloadKind::Spans => crate::telemetry::Kind::Spans,
        }
    }

    /// Path under the API endpoint.
    pub fn api_path(self) -> &'static str {
        match self {
            PayloadKind::Metrics => "api/v1/telemetry/metrics",
            PayloadKind::Spans => "api/v1/telemetry/spans",
        }
    }
}

/// Body encoding of an [`EncodedBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
}

/// One batch, encoded and ready to send: what the delivery queue holds.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    pub kind: PayloadKind,
    /// Number of metrics (or spans) inside.
    pub items: u64,
    pub encoding: ContentEncoding,
    pub body: Bytes,
}

impl EncodedBatch {
    /// Bytes this batch costs in the queue.
    pub fn size(&self) -> u64 {
        self.body.len() as u64
    }
}

/// How one send attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 408, 429, 5xx or a transport error: try again later.
    #[error("transient: {reason}")]
    Transient {
        /// `status 503`, `timeout`, `connect: ...` — for logs.
        reason: String,
        /// The server's `Retry-After`, when it gave one (not yet capped).
        retry_after: Option<Duration>,
    },
    /// Any other 4xx (or a failure that retrying cannot fix): drop the batch.
    #[error("permanent: {reason}")]
    Permanent {
        /// HTTP status, when there was one.
        status: Option<u16>,
        /// Status and the first bytes of the body — for logs.
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot encode a batch: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot compress a batch: {0}")]
    Compress(#[from] std::io::Error),
}

/// The configured sink.
#[derive(Debug, Clone)]
pub enum AnySink {
    Cased(cased::CasedSink),
    Stdout(stdout::StdoutSink),
    #[cfg(test)]
    Scripted(scripted::ScriptedSink),
}

/// Build the sink `cfg.sink` names.
pub fn build(cfg: &Config) -> Result<AnySink, SinkError> {
    Ok(match cfg.sink {
        SinkKind::Cased => AnySink::Cased(cased::CasedSink::new(
            &cfg.endpoint,
            cfg.api_key.expose(),
            &cfg.cluster_id,
            cfg.request_timeout,
        )?),
        SinkKind::Stdout => AnySink::Stdout(stdout::StdoutSink::new()),
    })
}

impl AnySink {
    /// Encode one batch of metrics in this sink's format. `compression`
    /// applies to the API only; stdout is always plain NDJSON.
    pub fn encode_metrics(
        &self,
        metrics: &[render::MetricOut],
        compression: Compression,
    ) -> Result<EncodedBatch, SinkError> {
        match self {
            AnySink::Cased(s) => s.encode_metrics(metrics, compression),
            AnySink::Stdout(_) => stdout::encode_metrics(metrics),
            #[cfg(test)]
            AnySink::Scripted(_) => stdout::encode_metrics(metrics),
        }
    }

    /// Encode one batch of spans in this sink's format (see
    /// [`AnySink::encode_metrics`]).
    pub fn encode_spans(
        &self,
        spans: &[wire::StoredSpan],
        compression: Compression,
    ) -> Result<EncodedBatch, SinkError> {
        match self {
            AnySink::Cased(s) => s.encode_spans(spans, compression),
            AnySink::Stdout(_) => stdout::encode_spans(spans),
            #[cfg(test)]
            AnySink::Scripted(_) => stdout::encode_spans(spans),
        }
    }

    /// Encode one batch of spans already encoded as JSON objects
    /// ([`span_json`]): the same bytes as [`AnySink::encode_spans`] gives
    /// for the spans they stand for.
    pub fn encode_span_json(
        &self,
        spans: &[&[u8]],
        compression: Compression,
    ) -> Result<EncodedBatch, SinkError> {
        match self {
            AnySink::Cased(_) => cased::encode_span_json(spans, compression),
            AnySink::Stdout(_) => Ok(stdout::encode_span_json(spans)),
            #[cfg(test)]
            AnySink::Scripted(_) => Ok(stdout::encode_span_json(spans)),
        }
    }

    /// Send one batch; `timeout` bounds the whole attempt.
    pub async fn send(&self, batch: &EncodedBatch, timeout: Duration) -> Result<(), SendError> {
        match self {
            AnySink::Cased(s) => s.send(batch, timeout).await,
            AnySink::Stdout(s) => s.send(batch).await,
            #[cfg(test)]
            AnySink::Scripted(s) => s.send(batch).await,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            AnySink::Cased(_) => "cased",
            AnySink::Stdout(_) => "stdout",
            #[cfg(test)]
            AnySink::Scripted(_) => "scripted",
        }
    }
}
