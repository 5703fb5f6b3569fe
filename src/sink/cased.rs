//! The Cased API sink: JSON over HTTPS with a bearer token (SPEC §3).
//!
//! Owns the URL join, the request headers, gzip, and the classification of
//! a response into success / transient / permanent. Retrying is not done
//! here: [`crate::delivery`] decides when to try again.

use std::io::Write;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::render::MetricOut;
use super::wire::{SpansBatch, StoredSpan};
use super::{ContentEncoding, EncodedBatch, PayloadKind, SendError, SinkError};
use crate::config::Compression;

/// Bytes of an error response body that go into the log line.
const BODY_PREFIX: usize = 200;

/// Sends batches to `{endpoint}/api/v1/telemetry/{metrics,spans}`.
#[derive(Clone)]
pub struct CasedSink {
    client: reqwest::Client,
    target: std::sync::Arc<Target>,
}

struct Target {
    metrics_url: url::Url,
    spans_url: url::Url,
    cluster_id: String,
    /// Kept to scrub it from any echoed response body before logging.
    api_key: String,
}

impl std::fmt::Debug for CasedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CasedSink")
            .field("metrics_url", &self.target.metrics_url.as_str())
            .field("cluster_id", &self.target.cluster_id)
            .finish_non_exhaustive()
    }
}

/// `base` + `path`, whether `base` has a trailing slash, a base path, or
/// neither. Query and fragment of `base` are dropped.
pub fn join_endpoint(base: &url::Url, path: &str) -> url::Url {
    let mut u = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    u.set_path(&joined);
    u.set_query(None);
    u.set_fragment(None);
    u
}

/// Install rustls' ring provider once; reqwest panics without one.
fn install_crypto_provider() {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl CasedSink {
    /// `connect_timeout` bounds connection set-up; the whole attempt is
    /// bounded per request by [`CasedSink::send`]'s `timeout`.
    pub fn new(
        endpoint: &url::Url,
        api_key: &str,
        cluster_id: &str,
        connect_timeout: Duration,
    ) -> Result<CasedSink, SinkError> {
        install_crypto_provider();
        let mut auth = HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| {
            SinkError::Client("the API key has characters not allowed in a header".to_string())
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let client = reqwest::Client::builder()
            .user_agent(concat!("cased-agent/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(connect_timeout)
            // POST bodies survive only 307/308; a 301/302 would turn the
            // request into a GET. Stop there and report it.
            .redirect(reqwest::redirect::Policy::custom(|a| {
                let keeps_body = matches!(a.status().as_u16(), 307 | 308);
                if keeps_body && a.previous().len() < 5 {
                    a.follow()
                } else {
                    a.stop()
                }
            }))
            .build()
            .map_err(|e| SinkError::Client(e.to_string()))?;
        Ok(CasedSink {
            client,
            target: std::sync::Arc::new(Target {
                metrics_url: join_endpoint(endpoint, PayloadKind::Metrics.api_path()),
                spans_url: join_endpoint(endpoint, PayloadKind::Spans.api_path()),
                cluster_id: cluster_id.to_string(),
                api_key: api_key.to_string(),
            }),
        })
    }

    pub fn url(&self, kind: PayloadKind) -> &url::Url {
        match kind {
            PayloadKind::Metrics => &self.target.metrics_url,
            PayloadKind::Spans => &self.target.spans_url,
        }
    }

    /// `{"metrics":[...],"cluster_id":"..."}`, gzipped when asked.
    pub fn encode_metrics(
        &self,
        metrics: &[MetricOut],
        compression: Compression,
    ) -> Result<EncodedBatch, SinkError> {
        let mut body = Vec::with_capacity(64 + metrics.len() * 320);
        body.extend_from_slice(b"{\"metrics\":[");
        for (i, m) in metrics.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            m.write_json(&mut body);
        }
        body.extend_from_slice(b"],\"cluster_id\":");
        serde_json::to_writer(&mut body, &self.target.cluster_id)?;
        body.push(b'}');
        let (encoding, body) = compress(body, compression)?;
        Ok(EncodedBatch {
            kind: PayloadKind::Metrics,
            items: metrics.len() as u64,
            encoding,
            body,
        })
    }

    /// `{"spans":[...]}` (SPEC §3), gzipped when asked.
    pub fn encode_spans(
        &self,
        spans: &[StoredSpan],
        compression: Compression,
    ) -> Result<EncodedBatch, SinkError> {
        // one allocation, no regrowth (a fixed guess per span regrew the
        // buffer for spans with pod metadata: a copy of the whole batch)
        let hint: usize = spans.iter().map(StoredSpan::json_len_hint).sum();
        let mut body = Vec::with_capacity(64 + hint);
        serde_json::to_writer(
            &mut body,
            &SpansBatch {
                spans: std::borrow::Cow::Borrowed(spans),
            },
        )?;
        let (encoding, body) = compress(body, compression)?;
        Ok(EncodedBatch {
            kind: PayloadKind::Spans,
            items: spans.len() as u64,
            encoding,
            body,
        })
    }

    /// One attempt: POST the batch, classify the answer.
    pub async fn send(&self, batch: &EncodedBatch, timeout: Duration) -> Result<(), SendError> {
        let mut req = self
            .client
            .post(self.url(batch.kind).clone())
            .timeout(timeout)
            .body(batch.body.clone());
        if batch.encoding == ContentEncoding::Gzip {
            req = req.header(header::CONTENT_ENCODING, "gzip");
        }
        let resp = req.send().await.map_err(transport_error)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            // read the (small) body so the connection can be reused; the
            // status already says the batch was taken
            let _ = resp.bytes().await;
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let prefix = body_prefix(resp).await;
        let key = &self.target.api_key;
        let prefix = if key.is_empty() {
            prefix
        } else {
            prefix.replace(key.as_str(), "***")
        };
        if is_transient_status(status) {
            return Err(SendError::Transient {
                reason: format!("status {status}"),
                retry_after,
            });
        }
        let mut reason = format!("status {status}: {prefix:?}");
        if let Some(loc) = location {
            reason.push_str(&format!(" (redirect to {loc:?}: point --endpoint there)"));
        }
        Err(SendError::Permanent {
            status: Some(status),
            reason,
        })
    }
}

/// `{"spans":[...]}` of spans already encoded ([`super::span_json`]),
/// gzipped when asked: the bytes [`CasedSink::encode_spans`] gives.
pub fn encode_span_json(
    spans: &[&[u8]],
    compression: Compression,
) -> Result<EncodedBatch, SinkError> {
    let (encoding, body) = compress(super::span_json::api_body(spans), compression)?;
    Ok(EncodedBatch {
        kind: PayloadKind::Spans,
        items: spans.len() as u64,
        encoding,
        body,
    })
}

/// 408, 429 and 5xx are worth another try; other non-2xx are not.
pub fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

fn compress(
    body: Vec<u8>,
    compression: Compression,
) -> Result<(ContentEncoding, Bytes), SinkError> {
    match compression {
        Compression::None => Ok((ContentEncoding::Identity, Bytes::from(body))),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4 + 64),
                flate2::Compression::default(),
            );
            enc.write_all(&body)?;
            Ok((ContentEncoding::Gzip, Bytes::from(enc.finish()?)))
        }
    }
}

fn transport_error(e: reqwest::Error) -> SendError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // the error's chain names the URL and the cause, never the headers
    let mut reason = format!("{kind}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        reason.push_str(&format!(": {s}"));
        src = s.source();
    }
    SendError::Transient {
        reason,
        retry_after: None,
    }
}

/// Up to [`BODY_PREFIX`] bytes of the body, lossily decoded.
async fn body_prefix(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < BODY_PREFIX {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    buf.truncate(BODY_PREFIX);
    String::from_utf8_lossy(&buf).into_owned()
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3),
/// relative to `now`. A date in the past is zero; garbage is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // too many digits for u64 is still "a very long time"
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_endpoint_forms() {
        for (base, want) in [
            (
                "https://app.cased.com",
                "https://app.cased.com/api/v1/telemetry/metrics",
            ),
            (
                "https://app.cased.com/",
                "https://app.cased.com/api/v1/telemetry/metrics",
            ),
            (
                "http://h:8080/base",
                "http://h:8080/base/api/v1/telemetry/metrics",
            ),
            (
                "http://h:8080/base/",
                "http://h:8080/base/api/v1/telemetry/metrics",
            ),
            (
                "http://h/a/b//?x=1#f",
                "http://h/a/b/api/v1/telemetry/metrics",
            ),
        ] {
            let u = url::Url::parse(base).unwrap();
            assert_eq!(
                join_endpoint(&u, PayloadKind::Metrics.api_path()).as_str(),
                want,
                "{base}"
            );
        }
        let u = url::Url::parse("https://x/p/").unwrap();
        assert_eq!(
            join_endpoint(&u, PayloadKind::Spans.api_path()).as_str(),
            "https://x/p/api/v1/telemetry/spans"
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn status_classes() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 422, 301, 302] {
            assert!(!is_transient_status(s), "{s}");
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let u = url::Url::parse("https://x").unwrap();
        let s = CasedSink::new(&u, "topsecret", "c", Duration::from_secs(1)).unwrap();
        assert!(!format!("{s:?}").contains("topsecret"));
    }

    #[test]
    fn gzip_roundtrip() {
        let (enc, b) = compress(b"{\"a\":1}".to_vec(), Compression::Gzip).unwrap();
        assert_eq!(enc, ContentEncoding::Gzip);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&b[..]), &mut out).unwrap();
        assert_eq!(out, "{\"a\":1}");
    }
}
