//! A test Kubernetes API server: the part of the real one the agent uses,
//! with the real one's semantics where the agent depends on them.
//!
//! - One global resourceVersion (like etcd's revision) stamped on every
//!   write; a change log that answers `watch` from any resourceVersion and
//!   `list` at an exact resourceVersion (`resourceVersionMatch=Exact`), with
//!   `limit` / `continue` paging.
//! - Watches stream newline-delimited `{"type":…,"object":…}`, with
//!   `BOOKMARK`s when asked (`allowWatchBookmarks`), end at `timeoutSeconds`.
//! - [`FakeApi::expire_watches`] compacts the history: every open watch gets
//!   the real `410 Expired` ERROR event and ends, and older resourceVersions
//!   answer 410 from then on.
//! - `fieldSelector` on any `a.b=value` path (`spec.nodeName=...`).
//! - Leases: create (409 AlreadyExists), replace with `resourceVersion`
//!   (409 Conflict when stale), get (404).
//! - [`FakeApi::stop`] drops the server and every connection (the port
//!   refuses); [`FakeApi::start_again`] serves the same state on the same
//!   port.
//! - Every request is counted by verb and collection ([`FakeApi::requests`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::SinkExt;
use serde_json::{Value, json};

type Key = (String, String);
/// A collection as of one resourceVersion.
type Snapshot = Arc<BTreeMap<Key, Value>>;

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    coll: &'static str,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    uid: u64,
    objects: HashMap<&'static str, BTreeMap<Key, Value>>,
    log: Vec<Change>,
    compacted: u64,
    expire_epoch: u64,
    requests: HashMap<String, u64>,
    /// The last past state a list was read at (the pages of one list read
    /// the same state: replayed once, not once per page).
    snapshot: Option<(&'static str, u64, Snapshot)>,
    /// Every request answered 503 (counted) while set ([`FakeApi::fail`]).
    failing: bool,
}

struct Shared {
    store: Mutex<Store>,
    /// bumped on every change (and expiry): wakes the watches
    tick: tokio::sync::watch::Sender<u64>,
}

pub struct FakeApi {
    shared: Arc<Shared>,
    port: u16,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

/// (collection, kind of its objects, kind of its list, apiVersion)
const COLLS: [(&str, &str, &str); 5] = [
    ("pods", "Pod", "v1"),
    ("events", "Event", "events.k8s.io/v1"),
    ("leases", "Lease", "coordination.k8s.io/v1"),
    ("replicasets", "ReplicaSet", "apps/v1"),
    ("jobs", "Job", "batch/v1"),
];

fn coll_name(c: &str) -> &'static str {
    COLLS
        .iter()
        .find(|x| x.0 == c)
        .map(|x| x.0)
        .expect("known collection")
}

fn kind_of(coll: &str) -> (&'static str, &'static str) {
    let c = COLLS
        .iter()
        .find(|x| x.0 == coll)
        .expect("known collection");
    (c.1, c.2)
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
        "message": message, "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn key_of(v: &Value) -> Key {
    (
        v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        v["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

/// `a.b=x,c=y`: every path equals its value.
fn matches(selector: Option<&str>, v: &Value) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let Some((path, want)) = term.split_once('=') else {
            return false;
        };
        let got = path.split('.').fold(v, |v, k| &v[k]);
        got.as_str().unwrap_or("") == want
    })
}

impl Store {
    fn write(&mut self, coll: &'static str, kind: &'static str, mut obj: Value) -> Value {
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj["metadata"]["uid"].as_str().is_none() {
            self.uid += 1;
            obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uid));
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!("2026-11-26T22:00:00Z");
        }
        let key = key_of(&obj);
        let objects = self.objects.entry(coll).or_default();
        if kind != "DELETED" {
            objects.insert(key, obj.clone());
        } else {
            objects.remove(&key);
        }
        self.log.push(Change {
            rv,
            coll,
            kind,
            object: obj.clone(),
        });
        obj
    }

    /// The collection as it was at `rv` (replaying the log).
    fn at(&self, coll: &str, rv: u64) -> BTreeMap<Key, Value> {
        let mut out = BTreeMap::new();
        for c in self
            .log
            .iter()
            .take_while(|c| c.rv <= rv)
            .filter(|c| c.coll == coll)
        {
            if c.kind == "DELETED" {
                out.remove(&key_of(&c.object));
            } else {
                out.insert(key_of(&c.object), c.object.clone());
            }
        }
        out
    }

    /// [`Store::at`], remembered for the next page of the same list.
    fn snapshot_at(&mut self, coll: &'static str, rv: u64) -> Snapshot {
        match &self.snapshot {
            Some((c, r, snap)) if *c == coll && *r == rv => snap.clone(),
            _ => {
                let snap = Arc::new(self.at(coll, rv));
                self.snapshot = Some((coll, rv, snap.clone()));
                snap
            }
        }
    }

    fn count(&mut self, what: String) {
        *self.requests.entry(what).or_default() += 1;
    }
}

impl FakeApi {
    pub fn start() -> Arc<FakeApi> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = Arc::new(FakeApi {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::default()),
                tick: tokio::sync::watch::channel(0).0,
            }),
            port,
            runtime: Mutex::new(None),
        });
        api.start_again();
        api
    }

    /// Answer every request 503 (still counted) while `on`.
    pub fn fail(&self, on: bool) {
        self.shared.store.lock().unwrap().failing = on;
    }

    /// A client of this API in the test's own process, without a socket:
    /// requests go straight to the handler, so a test on a paused tokio
    /// clock controls every timer on both sides.
    pub fn in_process_client(&self) -> kube::Client {
        let app = Router::new()
            .fallback(handle)
            .with_state(self.shared.clone());
        kube::Client::new(app, "default")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig in `dir` that points at this server.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let p = dir.join("kubeconfig");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 current-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\n",
                self.url()
            ),
        )
        .unwrap();
        p
    }

    /// Serve (again) on the same port.
    pub fn start_again(&self) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = self.shared.clone();
        let port = self.port;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let listener = loop {
                match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let _ = ready_tx.send(());
            let app = Router::new().fallback(handle).with_state(shared);
            let _ = axum::serve(listener, app).await;
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake API bound");
        *self.runtime.lock().unwrap() = Some(rt);
    }

    /// Drop the server and every open connection.
    pub fn stop(&self) {
        if let Some(rt) = self.runtime.lock().unwrap().take() {
            rt.shutdown_background();
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    fn wake(&self) {
        self.shared.tick.send_modify(|t| *t += 1);
    }

    /// Create or update an object; returns it as stored.
    pub fn put(&self, coll: &str, obj: Value) -> Value {
        let coll = coll_name(coll);
        let exists = self
            .store()
            .objects
            .get(coll)
            .is_some_and(|o| o.contains_key(&key_of(&obj)));
        let kind = if exists { "MODIFIED" } else { "ADDED" };
        let v = self.store().write(coll, kind, obj);
        self.wake();
        v
    }

    /// Create many objects at once (one lock, one wake-up).
    pub fn put_all(&self, coll: &str, objs: impl IntoIterator<Item = Value>) {
        let coll = coll_name(coll);
        {
            let mut s = self.store();
            for obj in objs {
                let exists = s
                    .objects
                    .get(coll)
                    .is_some_and(|o| o.contains_key(&key_of(&obj)));
                s.write(coll, if exists { "MODIFIED" } else { "ADDED" }, obj);
            }
        }
        self.wake();
    }

    pub fn delete(&self, coll: &str, ns: &str, name: &str) -> Option<Value> {
        let coll = coll_name(coll);
        let old = self
            .store()
            .objects
            .get(coll)
            .and_then(|o| o.get(&(ns.to_string(), name.to_string())).cloned())?;
        let v = self.store().write(coll, "DELETED", old);
        self.wake();
        Some(v)
    }

    pub fn get(&self, coll: &str, ns: &str, name: &str) -> Option<Value> {
        self.store()
            .objects
            .get(coll)
            .and_then(|o| o.get(&(ns.to_string(), name.to_string())).cloned())
    }

    /// Compact the history at the current resourceVersion: open watches
    /// get `410 Expired` and end; older resourceVersions answer 410.
    pub fn expire_watches(&self) {
        {
            let mut s = self.store();
            s.compacted = s.rv;
            s.expire_epoch += 1;
        }
        self.wake();
    }

    /// Requests seen, by `"<verb> <collection>"` (verbs: list, watch, get,
    /// create, update).
    pub fn requests(&self, what: &str) -> u64 {
        self.store().requests.get(what).copied().unwrap_or(0)
    }

    pub fn all_requests(&self) -> HashMap<String, u64> {
        self.store().requests.clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

fn query(uri: &Uri) -> HashMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn handle(
    AxState(shared): AxState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let q = query(&uri);
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segs.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    };
    let (ns, coll, name) = match rest {
        [coll] => (None, *coll, None),
        ["namespaces", ns, coll] => (Some(*ns), *coll, None),
        ["namespaces", ns, coll, name] => (Some(*ns), *coll, Some(*name)),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    };
    let Some(&(coll, _, _)) = COLLS.iter().find(|c| c.0 == coll) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, name, watch) {
        (&Method::GET, None, true) => "watch",
        (&Method::GET, None, false) => "list",
        (&Method::GET, Some(_), _) => "get",
        (&Method::POST, None, _) => "create",
        (&Method::PUT, Some(_), _) => "update",
        _ => return status(405, "MethodNotAllowed", "method not allowed"),
    };
    {
        let mut store = shared.store.lock().unwrap();
        store.count(format!("{verb} {coll}"));
        if store.failing {
            return status(503, "ServiceUnavailable", "the server is failing (test)");
        }
    }
    match verb {
        "watch" => watch_response(shared, coll, ns, &q),
        "list" => list(&shared, coll, ns, &q),
        "get" => get(
            &shared,
            coll,
            ns.unwrap_or(""),
            name.unwrap_or(""),
            &headers,
        ),
        "create" | "update" => write(&shared, coll, ns.unwrap_or(""), name, &body),
        _ => unreachable!(),
    }
}

fn list(
    shared: &Shared,
    coll: &'static str,
    ns: Option<&str>,
    q: &HashMap<String, String>,
) -> Response {
    let mut s = shared.store.lock().unwrap();
    let sel = q.get("fieldSelector").map(String::as_str);
    let (at, offset) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, off) = token.split_once(':').unwrap_or(("0", "0"));
            (
                rv.parse::<u64>().unwrap_or(0),
                off.parse::<usize>().unwrap_or(0),
            )
        }
        None => {
            let exact = q.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
            match q.get("resourceVersion").and_then(|r| r.parse::<u64>().ok()) {
                Some(rv) if exact => (rv, 0),
                _ => (s.rv, 0),
            }
        }
    };
    if at < s.compacted || at > s.rv {
        return status(
            410,
            "Expired",
            &format!("too old resource version: {at} ({})", s.compacted),
        );
    }
    let past = (at != s.rv).then(|| s.snapshot_at(coll, at));
    let empty = BTreeMap::new();
    let all = match &past {
        Some(p) => &**p,
        None => s.objects.get(coll).unwrap_or(&empty),
    };
    let items: Vec<&Value> = all
        .values()
        .filter(|v| ns.is_none_or(|n| v["metadata"]["namespace"] == n))
        .filter(|v| matches(sel, v))
        .collect();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = items
        .iter()
        .skip(offset)
        .take(limit)
        .map(|v| {
            // list items carry no kind/apiVersion, as from the real server
            let mut v = (*v).clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            v
        })
        .collect();
    let next = offset + page.len();
    let (kind, api_version) = kind_of(coll);
    let mut meta = json!({"resourceVersion": at.to_string()});
    if next < items.len() {
        meta["continue"] = json!(format!("{at}:{next}"));
        meta["remainingItemCount"] = json!(items.len() - next);
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": format!("{kind}List"), "apiVersion": api_version, "metadata": meta, "items": page}),
    )
}

fn get(shared: &Shared, coll: &'static str, ns: &str, name: &str, headers: &HeaderMap) -> Response {
    let s = shared.store.lock().unwrap();
    let Some(v) = s
        .objects
        .get(coll)
        .and_then(|o| o.get(&(ns.to_string(), name.to_string())))
    else {
        let (kind, _) = kind_of(coll);
        return status(
            404,
            "NotFound",
            &format!("{}s \"{name}\" not found", kind.to_lowercase()),
        );
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("");
    if accept.contains("as=PartialObjectMetadata") {
        return json_response(
            StatusCode::OK,
            &json!({"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata": v["metadata"]}),
        );
    }
    json_response(StatusCode::OK, v)
}

fn write(
    shared: &Shared,
    coll: &'static str,
    ns: &str,
    name: Option<&str>,
    body: &[u8],
) -> Response {
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "body is not JSON");
    };
    obj["metadata"]["namespace"] = json!(ns);
    let key = key_of(&obj);
    if let Some(n) = name
        && n != key.1
    {
        return status(
            400,
            "BadRequest",
            "the name of the object does not match the name on the URL",
        );
    }
    let (kind, api_version) = kind_of(coll);
    obj["kind"] = json!(kind);
    obj["apiVersion"] = json!(api_version);
    let mut s = shared.store.lock().unwrap();
    let current = s.objects.get(coll).and_then(|o| o.get(&key)).cloned();
    let written = match (name, current) {
        (None, Some(_)) => {
            return status(
                409,
                "AlreadyExists",
                &format!("{coll}.{api_version} \"{}\" already exists", key.1),
            );
        }
        (None, None) => {
            obj["metadata"]
                .as_object_mut()
                .map(|m| m.remove("resourceVersion"));
            (StatusCode::CREATED, s.write(coll, "ADDED", obj))
        }
        (Some(_), None) => {
            return status(404, "NotFound", &format!("{coll} \"{}\" not found", key.1));
        }
        (Some(_), Some(cur)) => {
            let want = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if !want.is_empty() && want != cur["metadata"]["resourceVersion"].as_str().unwrap_or("")
            {
                return status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {coll} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                        key.1
                    ),
                );
            }
            obj["metadata"]["uid"] = cur["metadata"]["uid"].clone();
            obj["metadata"]["creationTimestamp"] = cur["metadata"]["creationTimestamp"].clone();
            (StatusCode::OK, s.write(coll, "MODIFIED", obj))
        }
    };
    drop(s);
    shared.tick.send_modify(|t| *t += 1);
    json_response(written.0, &written.1)
}

fn watch_response(
    shared: Arc<Shared>,
    coll: &'static str,
    ns: Option<&str>,
    q: &HashMap<String, String>,
) -> Response {
    let sel = q.get("fieldSelector").cloned();
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let from = q
        .get("resourceVersion")
        .and_then(|r| r.parse::<u64>().ok())
        .unwrap_or(0);
    let ns = ns.map(str::to_string);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let mut tick = shared.tick.subscribe();
    tokio::spawn(async move {
        let started = Instant::now();
        let (kind, api_version) = kind_of(coll);
        let mut lines: Vec<String> = Vec::new();
        let start = {
            let s = shared.store.lock().unwrap();
            if from != 0 && from < s.compacted {
                Err(gone_line(from, s.compacted))
            } else if from == 0 {
                // no resourceVersion: the current state as ADDED, then changes
                for v in s
                    .objects
                    .get(coll)
                    .map(|o| o.values())
                    .into_iter()
                    .flatten()
                {
                    if ns
                        .as_deref()
                        .is_none_or(|n| v["metadata"]["namespace"] == n)
                        && matches(sel.as_deref(), v)
                    {
                        lines.push(json!({"type":"ADDED","object":v}).to_string() + "\n");
                    }
                }
                Ok((s.rv, s.expire_epoch))
            } else {
                Ok((from, s.expire_epoch))
            }
        };
        let (mut cursor, epoch) = match start {
            Ok(c) => c,
            Err(line) => {
                let _ = tx.send(Ok(Bytes::from(line))).await;
                return;
            }
        };
        let mut last_bookmark = Instant::now();
        loop {
            {
                let s = shared.store.lock().unwrap();
                if s.expire_epoch != epoch {
                    lines.push(gone_line(cursor, s.compacted));
                    break;
                }
                let start = s.log.partition_point(|c| c.rv <= cursor);
                for c in &s.log[start..] {
                    if c.coll == coll
                        && ns
                            .as_deref()
                            .is_none_or(|n| c.object["metadata"]["namespace"] == n)
                        && matches(sel.as_deref(), &c.object)
                    {
                        lines.push(json!({"type": c.kind, "object": c.object}).to_string() + "\n");
                    }
                }
                cursor = s.rv;
            }
            if lines.is_empty()
                && bookmarks
                && last_bookmark.elapsed() >= Duration::from_millis(250)
            {
                lines.push(
                    json!({"type":"BOOKMARK","object":{"kind": kind, "apiVersion": api_version,
                        "metadata":{"resourceVersion": cursor.to_string()}}})
                    .to_string()
                        + "\n",
                );
                last_bookmark = Instant::now();
            }
            for l in lines.drain(..) {
                if tx.send(Ok(Bytes::from(l))).await.is_err() {
                    return;
                }
            }
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return;
            }
            tokio::select! {
                r = tick.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(left.min(Duration::from_millis(250))) => {}
            }
        }
        // expired: the 410 ERROR, then the end of the stream
        for l in lines.drain(..) {
            let _ = tx.send(Ok(Bytes::from(l))).await;
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(rx))
        .unwrap()
}

fn gone_line(rv: u64, compacted: u64) -> String {
    json!({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
        "message": format!("too old resource version: {rv} ({compacted})"),"reason":"Expired","code":410}})
    .to_string()
        + "\n"
}
