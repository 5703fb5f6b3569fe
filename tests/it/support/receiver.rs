//! A local stand-in for the Cased API: an HTTP/1.1 server on loopback that
//! records every request (method, path, headers, body — gunzipped when
//! `Content-Encoding: gzip`) and answers from a script, `200` once the
//! script is used up.
//!
//! ```ignore
//! let rx = Receiver::start().await;
//! rx.script([Reply::status(500), Reply::Close]);
//! // point the agent at rx.url() ...
//! let reqs = rx.wait_for(3, Duration::from_secs(5)).await;
//! // per path: 503 on spans for ever, whatever the script says
//! rx.always_path("/api/v1/telemetry/spans", Some(Reply::status(503)));
//! ```

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// What the receiver does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status, headers and body.
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Wait this long, then answer 200 (a hung server, for timeouts).
    Hang(Duration),
    /// Read the request, then close the connection without answering.
    Close,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Status {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.to_string(), value.to_string()));
                Reply::Status {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }

    pub fn with_body(self, text: &str) -> Reply {
        match self {
            Reply::Status {
                status, headers, ..
            } => Reply::Status {
                status,
                headers,
                body: text.to_string(),
            },
            other => other,
        }
    }
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body as sent.
    pub raw_body: Vec<u8>,
    /// The body after undoing `Content-Encoding: gzip`.
    pub body: Vec<u8>,
    /// When the request was complete.
    pub at: Instant,
    /// The status answered (`None`: a hang or a close).
    pub status: Option<u16>,
}

impl Recorded {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    /// Answered with a 2xx: the API kept it.
    pub fn accepted(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// A path suffix, its script, what it answers once that is used up.
type PathScript = (String, VecDeque<Reply>, Option<Reply>);

struct Inner {
    script: Mutex<VecDeque<Reply>>,
    /// Per path (the end of the request path): its own script, and what
    /// it answers once that is used up; before the common script.
    paths: Mutex<Vec<PathScript>>,
    seen: Mutex<Vec<Recorded>>,
    arrived: Notify,
}

/// Stops serving when dropped.
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct CloseConnection;
impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted close")
    }
}
impl std::error::Error for CloseConnection {}

impl Receiver {
    /// Listen on 127.0.0.1, a free port.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Inner {
            script: Mutex::new(VecDeque::new()),
            paths: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            // connection tasks live in the set, so aborting this task ends them
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while conns.try_join_next().is_some() {}
                let inner = shared.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(inner.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { addr, inner, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Append replies for the next requests.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    /// Append replies for the next requests whose path ends with `path`
    /// (other paths use the common script).
    pub fn script_path(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.with_path(path, |s, _| s.extend(replies));
    }

    /// Once its script is used up, `path` answers `reply` for ever
    /// (`None`: back to the common script).
    pub fn always_path(&self, path: &str, reply: Option<Reply>) {
        self.with_path(path, |_, a| *a = reply);
    }

    fn with_path(&self, path: &str, f: impl FnOnce(&mut VecDeque<Reply>, &mut Option<Reply>)) {
        let mut paths = self.inner.paths.lock().unwrap();
        if !paths.iter().any(|p| p.0 == path) {
            paths.push((path.to_string(), VecDeque::new(), None));
        }
        let p = paths.iter_mut().find(|p| p.0 == path).unwrap();
        f(&mut p.1, &mut p.2);
    }

    /// Requests whose path ends with `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with(path))
            .collect()
    }

    /// Every span the API kept (requests answered 2xx), in arrival order.
    pub fn accepted_spans(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|r| r.accepted())
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .filter_map(|v| v.get("spans").and_then(|m| m.as_array()).cloned())
            .flatten()
            .collect()
    }

    /// Everything recorded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// Every metric of every request so far, in arrival order (bodies that
    /// are not `{"metrics": [...]}` are skipped).
    pub fn all_metrics(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
            .filter_map(|v| v.get("metrics").and_then(|m| m.as_array()).cloned())
            .flatten()
            .collect()
    }

    /// Wait until at least `n` requests arrived or `timeout` passed; return
    /// what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.arrived.notified();
            {
                let seen = self.inner.seen.lock().unwrap();
                if seen.len() >= n {
                    return seen.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.requests();
            }
        }
    }
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let (parts, body) = req.into_parts();
    let raw = match body.collect().await {
        Ok(c) => c.to_bytes().to_vec(),
        Err(_) => return Err(CloseConnection),
    };
    let gzipped = parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = if gzipped {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .expect("gzip body decodes");
        out
    } else {
        raw.clone()
    };
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        raw_body: raw,
        body,
        at: Instant::now(),
        status: None,
    };
    let mut rec = rec;
    let by_path = {
        let mut paths = inner.paths.lock().unwrap();
        paths
            .iter_mut()
            .find(|p| rec.path.ends_with(p.0.as_str()))
            .and_then(|p| p.1.pop_front().or_else(|| p.2.clone()))
    };
    let reply = by_path.or_else(|| inner.script.lock().unwrap().pop_front());
    let reply = reply.unwrap_or_else(|| Reply::status(200));
    if let Reply::Status { status, .. } = &reply {
        rec.status = Some(*status);
    }
    inner.seen.lock().unwrap().push(rec);
    inner.arrived.notify_waiters();
    match reply {
        Reply::Close => Err(CloseConnection),
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            Ok(respond(200, &[], ""))
        }
        Reply::Status {
            status,
            headers,
            body,
        } => Ok(respond(status, &headers, &body)),
    }
}

fn respond(status: u16, headers: &[(String, String)], body: &str) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (n, v) in headers {
        b = b.header(n, v);
    }
    b.body(Full::new(Bytes::from(body.to_string())))
        .expect("valid scripted response")
}
