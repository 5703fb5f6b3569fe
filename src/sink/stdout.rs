//! The stdout sink: one JSON [`Metric`] per line (NDJSON), written and
//! flushed per batch. Spans received over OTLP are printed too, one per line
//! wrapped as `{"span": StoredSpan}`, so a line is a metric when it has a
//! top-level `metric_name` and a span when its only key is `span`.
//!
//! Broken pipe (stdout closed, as in `cased-agent --once | head -3`): the
//! batch that hit it is a permanent failure (dropped and counted with
//! reason `permanent`), one warning says why, and the sink marks itself
//! closed: every later batch is dropped and counted the same way without
//! touching the descriptor again. Nothing panics (Rust ignores SIGPIPE, so
//! the write returns `EPIPE`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::render::MetricOut;
use super::wire::StoredSpan;
use super::{ContentEncoding, EncodedBatch, PayloadKind, SendError, SinkError};

type Writer = Box<dyn Write + Send>;

#[derive(Clone)]
pub struct StdoutSink {
    out: Arc<Mutex<Writer>>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl StdoutSink {
    pub fn new() -> StdoutSink {
        Self::with_writer(Box::new(std::io::stdout()))
    }

    /// Write somewhere else (tests).
    pub fn with_writer(w: Writer) -> StdoutSink {
        StdoutSink {
            out: Arc::new(Mutex::new(w)),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Write the batch's lines and flush, on a blocking thread.
    pub async fn send(&self, batch: &EncodedBatch) -> Result<(), SendError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed_error());
        }
        let out = self.out.clone();
        let body = batch.body.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
            w.write_all(&body)?;
            w.flush()
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                if !self.closed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "stdout is closed (broken pipe): metrics from now on are dropped"
                    );
                }
                Err(closed_error())
            }
            Ok(Err(e)) => Err(SendError::Permanent {
                status: None,
                reason: format!("writing to stdout: {e}"),
            }),
            Err(e) => Err(SendError::Transient {
                reason: format!("stdout writer task: {e}"),
                retry_after: None,
            }),
        }
    }
}

fn closed_error() -> SendError {
    SendError::Permanent {
        status: None,
        reason: "stdout is closed (broken pipe)".to_string(),
    }
}

/// NDJSON: each metric as one line of JSON, `\n`-terminated.
pub fn encode_ndjson(metrics: &[MetricOut], out: &mut Vec<u8>) {
    for m in metrics {
        m.write_json(out);
        out.push(b'\n');
    }
}

/// One batch for this sink.
pub fn encode_metrics(metrics: &[MetricOut]) -> Result<EncodedBatch, SinkError> {
    let mut body = Vec::with_capacity(metrics.len() * 320);
    encode_ndjson(metrics, &mut body);
    Ok(EncodedBatch {
        kind: PayloadKind::Metrics,
        items: metrics.len() as u64,
        encoding: ContentEncoding::Identity,
        body: Bytes::from(body),
    })
}

/// One batch of spans: `{"span": {...}}` per line.
pub fn encode_spans(spans: &[StoredSpan]) -> Result<EncodedBatch, SinkError> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        span: &'a StoredSpan,
    }
    let mut body = Vec::with_capacity(spans.len() * 512);
    for span in spans {
        serde_json::to_writer(&mut body, &Line { span })?;
        body.push(b'\n');
    }
    Ok(EncodedBatch {
        kind: PayloadKind::Spans,
        items: spans.len() as u64,
        encoding: ContentEncoding::Identity,
        body: Bytes::from(body),
    })
}

/// One batch of spans already encoded ([`super::span_json`]): the bytes
/// [`encode_spans`] gives.
pub fn encode_span_json(spans: &[&[u8]]) -> EncodedBatch {
    EncodedBatch {
        kind: PayloadKind::Spans,
        items: spans.len() as u64,
        encoding: ContentEncoding::Identity,
        body: Bytes::from(super::span_json::ndjson_body(spans)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sink::wire::Metric;

    fn metric(name: &str, pod: &str) -> Metric {
        Metric {
            timestamp: 1_732_650_000_123,
            metric_name: name.to_string(),
            value: 12.5,
            unit: "percent".to_string(),
            tags: BTreeMap::from([("node".to_string(), "n1".to_string())]),
            cluster_id: "prod".to_string(),
            node_name: "n1".to_string(),
            namespace: String::new(),
            pod_name: pod.to_string(),
            container_name: String::new(),
            pod_uid: String::new(),
        }
    }

    struct BrokenPipe;
    impl Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_metric_per_line() {
        let b = encode_metrics(&[metric("a", "").into(), metric("b", "web-0").into()]).unwrap();
        assert_eq!(b.items, 2);
        let text = std::str::from_utf8(&b.body).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"timestamp":1732650000123,"metric_name":"a","value":12.5,"unit":"percent","tags":{"node":"n1"},"cluster_id":"prod","node_name":"n1"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"timestamp":1732650000123,"metric_name":"b","value":12.5,"unit":"percent","tags":{"node":"n1"},"cluster_id":"prod","node_name":"n1","pod_name":"web-0"}"#
        );
        assert_eq!(lines.len(), 2);
        let back: Metric = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(back, metric("b", "web-0"));
        assert!(encode_metrics(&[]).unwrap().body.is_empty());
    }

    #[test]
    fn spans_are_wrapped_one_per_line() {
        let span = StoredSpan {
            trace_id: "5b8efff798038103d269b633813fc60c".into(),
            span_id: "eee19b7ec3c1b174".into(),
            parent_span_id: String::new(),
            service_name: "checkout".into(),
            span_name: "GET /cart".into(),
            span_kind: 2,
            timestamp: 1_732_650_000_123,
            duration_ns: 1_234_567,
            status_code: 0,
            status_message: String::new(),
            attributes: BTreeMap::from([("http.method".to_string(), "GET".to_string())]).into(),
            events: "[]".into(),
            http_method: "GET".into(),
            http_status_code: 200,
            http_url: "/cart".into(),
            cluster_id: "prod".into(),
        };
        let b = encode_spans(&[span.clone(), span]).unwrap();
        assert_eq!(b.kind, PayloadKind::Spans);
        assert_eq!(b.items, 2);
        let text = std::str::from_utf8(&b.body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"span":{"trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174","parent_span_id":"","service_name":"checkout","span_name":"GET /cart","span_kind":2,"timestamp":1732650000123,"duration_ns":1234567,"status_code":0,"status_message":"","attributes":{"http.method":"GET"},"events":"[]","http_method":"GET","http_status_code":200,"http_url":"/cart","cluster_id":"prod"}}"#
        );
    }

    #[tokio::test]
    async fn broken_pipe_is_permanent_and_closes() {
        let s = StdoutSink::with_writer(Box::new(BrokenPipe));
        let b = encode_metrics(&[metric("a", "").into()]).unwrap();
        for _ in 0..2 {
            match s.send(&b).await {
                Err(SendError::Permanent {
                    status: None,
                    reason,
                }) => {
                    assert!(reason.contains("broken pipe"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(s.closed.load(Ordering::Relaxed));
    }
}
