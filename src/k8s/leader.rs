//! Leader election for the events watcher: one `coordination.k8s.io/v1`
//! Lease in the agent's namespace, taken and renewed with optimistic
//! concurrency (`resourceVersion`; a `409 Conflict` means another agent
//! wrote first).
//!
//! Expiry is judged the way client-go judges it: by how long the Lease has
//! gone unchanged *as this agent observed it* (its monotonic clock), not by
//! comparing the holder's `renewTime` with the local wall clock, so clock
//! skew between nodes cannot make two leaders. A leader that cannot renew
//! within `renew_deadline` (two thirds of the lease duration) stops counting
//! before anyone else may take over.
//!
//! The holder renews with one PUT per period (a third of the duration);
//! followers watch the one Lease object instead of polling it, and read it
//! only when it would expire, so 5,000 followers cost the API server a watch
//! each (re-opened every few minutes), not a GET every few seconds.
//!
//! Every renewal also writes the events checkpoint (the resourceVersion the
//! leader has counted up to) into the Lease's annotation, and only then are
//! those counts released to the collection cycle (see [`super::events`]).

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

// tokio's clock (std's outside a runtime): tests pause and advance it
use tokio::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::events::{EventCounts, Leadership};
use crate::telemetry::Telemetry;

/// Annotation on the Lease holding the events checkpoint.
pub const CHECKPOINT_ANNOTATION: &str = "cased.com/events-resource-version";
/// Name of the Lease.
pub const LEASE_NAME: &str = "cased-agent-events";

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This agent's `holderIdentity` (unique per process).
    pub identity: String,
    pub duration: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, node: &str, duration: Duration) -> Self {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: LEASE_NAME.to_string(),
            identity: format!("{node}-{:08x}", rand::random::<u32>()),
            duration,
        }
    }

    /// How often the holder renews and followers look.
    pub fn retry(&self) -> Duration {
        self.duration / 3
    }

    /// A holder that could not renew for this long stops acting as leader.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// None exists: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds it.
    Follow,
}

/// The decision, given the Lease (if any), whether we are leading, and
/// whether it has gone unrenewed for its duration as we observed it.
pub fn decide(lease: Option<&Lease>, me: &str, leading: bool, expired: bool) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("");
    if holder == me && leading {
        Decision::Renew
    } else if holder.is_empty() || holder == me || expired {
        Decision::TakeOver
    } else {
        Decision::Follow
    }
}

/// How long a Lease has gone unchanged, as seen from here.
#[derive(Debug, Default)]
pub struct Observed {
    last: Option<(String, Instant)>,
}

impl Observed {
    /// Note the Lease's resourceVersion at `now`; true when it has not
    /// changed for `duration`.
    pub fn expired(&mut self, rv: &str, duration: Duration, now: Instant) -> bool {
        match &self.last {
            Some((seen, at)) if seen == rv => now.duration_since(*at) >= duration,
            _ => {
                self.last = Some((rv.to_string(), now));
                false
            }
        }
    }

    /// Time left until the observed Lease would expire.
    pub fn remaining(&self, duration: Duration, now: Instant) -> Option<Duration> {
        self.last
            .as_ref()
            .map(|(_, at)| duration.saturating_sub(now.duration_since(*at)))
    }
}

enum Step {
    /// Holding the Lease; `checkpoint` is what the Lease carried when taken.
    Leading {
        acquired: bool,
        checkpoint: Option<String>,
    },
    Following,
}

struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    counts: Arc<EventCounts>,
    tx: watch::Sender<Leadership>,
    telemetry: Arc<Telemetry>,
    leading: bool,
    term: u64,
    last_renew: Instant,
    observed: Observed,
    /// Duration of the Lease as its holder wrote it.
    observed_duration: Duration,
    /// The Lease as we last wrote it (renewals need no GET).
    current: Option<Lease>,
}

/// Asks the election task to give the Lease up and leave the election
/// (on shutdown), so a successor need not wait for it to expire.
#[derive(Debug, Clone)]
pub struct LeaseRelease {
    tx: mpsc::Sender<oneshot::Sender<()>>,
}

impl LeaseRelease {
    /// A handle and the receiving end [`run`] takes.
    pub fn new() -> (LeaseRelease, mpsc::Receiver<oneshot::Sender<()>>) {
        let (tx, rx) = mpsc::channel(1);
        (LeaseRelease { tx }, rx)
    }

    /// Release the Lease if held; waits at most `limit`.
    pub async fn release(&self, limit: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(done).await.is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}

/// Run the election until released, telling the events watcher through `tx`.
///
/// The holder renews with one PUT per period. Followers do not poll: they
/// watch the one Lease object (a watch per follower, re-opened every few
/// minutes) and read it again only when it would expire, so a large
/// cluster's followers cost the API server no requests while the holder is
/// alive.
pub async fn run(
    client: Client,
    cfg: LeaseConfig,
    counts: Arc<EventCounts>,
    tx: watch::Sender<Leadership>,
    telemetry: Arc<Telemetry>,
    mut release: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut e = Elector {
        api: Api::namespaced(client, &cfg.namespace),
        observed_duration: cfg.duration,
        cfg,
        counts,
        tx,
        telemetry,
        leading: false,
        term: 0,
        last_renew: Instant::now(),
        observed: Observed::default(),
        current: None,
    };
    tracing::info!(lease = %e.cfg.name, namespace = %e.cfg.namespace, identity = %e.cfg.identity, "joining the events leader election");
    loop {
        let asked = tokio::select! {
            _ = async {
                if e.leading {
                    tokio::time::sleep(e.cfg.retry()).await;
                    e.renew().await;
                } else {
                    let wait = e.round().await;
                    if !e.leading {
                        e.follow(wait).await;
                    }
                }
            } => None,
            r = release.recv() => Some(r),
        };
        if let Some(done) = asked {
            e.release().await;
            if let Some(done) = done {
                let _ = done.send(());
            }
            return;
        }
    }
}

impl Elector {
    /// Give the Lease up: no holder, the checkpoint kept. What was counted
    /// after the checkpoint is left to the successor.
    async fn release(&mut self) {
        if !self.leading {
            return;
        }
        let current = match self.current.take() {
            Some(l) => Some(l),
            None => self.api.get_opt(&self.cfg.name).await.ok().flatten(),
        };
        self.step_down("shutting down");
        let Some(mut l) = current else { return };
        if let Some(spec) = l.spec.as_mut() {
            if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
                return;
            }
            spec.holder_identity = Some(String::new());
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &l)
            .await
        {
            Ok(_) => tracing::info!("events Lease released"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release the events Lease; it expires on its own")
            }
        }
    }

    /// The holder's renewal: one PUT of the Lease as last written, with the
    /// events checkpoint. On a conflict, read it again and decide.
    async fn renew(&mut self) {
        let Some(mut l) = self.current.take() else {
            self.round().await;
            return;
        };
        let seal = self.counts.seal(self.term);
        self.renewed(&mut l, Timestamp::now(), seal);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &l)
            .await
        {
            Ok(written) => {
                self.current = Some(written);
                self.last_renew = Instant::now();
                self.counts.commit(self.term);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // written by someone else since: look at it
                self.round().await;
            }
            Err(err) => {
                self.current = Some(l);
                crate::warn_limited!("k8s:lease", error = %err, "cannot renew the events Lease; retrying");
                if self.last_renew.elapsed() >= self.cfg.renew_deadline() {
                    self.step_down("could not renew the Lease in time");
                    self.current = None;
                }
            }
        }
    }

    /// As a follower: watch the Lease until it would expire as observed
    /// (or is gone, or free), at most `first` when nothing was observed.
    async fn follow(&mut self, first: Duration) {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", self.cfg.name));
        let stream = super::backoff::backed_off(watcher::watcher(self.api.clone(), cfg));
        let mut stream = pin!(stream);
        let mut deadline = tokio::time::Instant::now() + first;
        let mut seen_in_list = false;
        loop {
            tokio::select! {
                ev = stream.next() => match ev {
                    Some(Ok(Event::Apply(l) | Event::InitApply(l))) => {
                        seen_in_list = true;
                        let free = l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).unwrap_or("").is_empty();
                        if free {
                            return;
                        }
                        self.observe(&l);
                        let left = self.observed.remaining(self.observed_duration, Instant::now()).unwrap_or(first);
                        deadline = tokio::time::Instant::now() + left;
                    }
                    Some(Ok(Event::Init)) => seen_in_list = false,
                    Some(Ok(Event::InitDone)) => {
                        if !seen_in_list {
                            return;
                        }
                    }
                    Some(Ok(Event::Delete(_))) | None => return,
                    Some(Err(err)) => {
                        crate::warn_limited!("k8s:lease-watch", error = %err, "cannot watch the events Lease; retrying");
                    }
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    fn observe(&mut self, l: &Lease) {
        self.observed_duration = l
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .map_or(self.cfg.duration, |s| Duration::from_secs(s.max(0) as u64));
        self.observed.expired(
            &l.resource_version().unwrap_or_default(),
            self.observed_duration,
            Instant::now(),
        );
    }

    /// One look at the Lease (GET, then create / renew / take over / follow);
    /// returns how long to wait before the next.
    async fn round(&mut self) -> Duration {
        let retry = self.cfg.retry();
        let seal = if self.leading {
            self.counts.seal(self.term)
        } else {
            None
        };
        match self.step(seal).await {
            Ok(Step::Leading {
                acquired,
                checkpoint,
            }) => {
                self.last_renew = Instant::now();
                if acquired || !self.leading {
                    self.term += 1;
                    self.leading = true;
                    self.counts.begin(self.term);
                    self.telemetry.k8s.leading(true);
                    tracing::info!(identity = %self.cfg.identity, checkpoint = ?checkpoint, "became the events leader");
                    self.tx.send_replace(Leadership::Leader {
                        term: self.term,
                        checkpoint,
                    });
                } else {
                    self.counts.commit(self.term);
                }
                retry
            }
            Ok(Step::Following) => {
                if self.leading {
                    self.step_down("another agent holds the Lease");
                }
                self.observed
                    .remaining(self.observed_duration, Instant::now())
                    .unwrap_or(retry)
                    .max(Duration::from_millis(20))
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // another agent wrote first: look again soon
                if self.leading && self.last_renew.elapsed() >= self.cfg.renew_deadline() {
                    self.step_down("could not renew the Lease in time");
                }
                Duration::from_millis(20)
            }
            Err(err) => {
                crate::warn_limited!("k8s:lease", error = %err, "cannot read or write the events Lease; retrying");
                if self.leading && self.last_renew.elapsed() >= self.cfg.renew_deadline() {
                    self.step_down("could not renew the Lease in time");
                }
                retry
            }
        }
    }

    fn step_down(&mut self, why: &str) {
        self.leading = false;
        self.current = None;
        self.counts.discard();
        self.telemetry.k8s.leading(false);
        tracing::warn!(identity = %self.cfg.identity, why, "no longer the events leader");
        self.tx.send_replace(Leadership::Follower);
    }

    /// `l` renewed by us at `now`: our spec, keeping its acquire time,
    /// transitions and the fields we do not own, plus the events checkpoint
    /// when there is a new one.
    fn renewed(&self, l: &mut Lease, now: Timestamp, seal: Option<String>) {
        let old = l.spec.take().unwrap_or_default();
        let mut spec = self.spec(
            now,
            old.acquire_time.map(|t| t.0),
            old.lease_transitions.unwrap_or(0),
        );
        spec.preferred_holder = old.preferred_holder;
        spec.strategy = old.strategy;
        l.spec = Some(spec);
        if let Some(rv) = seal {
            l.annotations_mut()
                .insert(CHECKPOINT_ANNOTATION.to_string(), rv);
        }
    }

    fn spec(&self, now: Timestamp, acquire: Option<Timestamp>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.duration.as_secs().max(1) as i32),
            acquire_time: acquire.map(MicroTime),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn step(&mut self, seal: Option<String>) -> Result<Step, kube::Error> {
        let lease = self.api.get_opt(&self.cfg.name).await?;
        let now = Instant::now();
        let expired = match &lease {
            Some(l) => {
                self.observe(l);
                self.observed.expired(
                    &l.resource_version().unwrap_or_default(),
                    self.observed_duration,
                    now,
                )
            }
            None => false,
        };
        let ts = Timestamp::now();
        match (
            decide(lease.as_ref(), &self.cfg.identity, self.leading, expired),
            lease,
        ) {
            (Decision::Create, _) => {
                let l = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(ts, Some(ts), 0)),
                };
                self.current = Some(self.api.create(&PostParams::default(), &l).await?);
                Ok(Step::Leading {
                    acquired: true,
                    checkpoint: None,
                })
            }
            (Decision::Renew, Some(mut l)) => {
                self.renewed(&mut l, ts, seal);
                self.current = Some(
                    self.api
                        .replace(&self.cfg.name, &PostParams::default(), &l)
                        .await?,
                );
                Ok(Step::Leading {
                    acquired: false,
                    checkpoint: None,
                })
            }
            (Decision::TakeOver, Some(mut l)) => {
                let old = l.spec.take().unwrap_or_default();
                let same = old.holder_identity.as_deref() == Some(self.cfg.identity.as_str());
                let transitions = old.lease_transitions.unwrap_or(0) + i32::from(!same);
                l.spec = Some(self.spec(ts, Some(ts), transitions));
                let checkpoint = l
                    .metadata
                    .annotations
                    .as_ref()
                    .unwrap_or(&BTreeMap::new())
                    .get(CHECKPOINT_ANNOTATION)
                    .cloned();
                let written = self
                    .api
                    .replace(&self.cfg.name, &PostParams::default(), &l)
                    .await?;
                self.current = Some(written);
                Ok(Step::Leading {
                    acquired: true,
                    checkpoint,
                })
            }
            _ => Ok(Step::Following),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", false, false), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"))), "a", true, false),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"))), "a", false, false),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&lease(Some("b"))), "a", true, false),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&lease(Some("b"))), "a", false, true),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None)), "a", false, false),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some(""))), "a", false, false),
            Decision::TakeOver
        );
        // ours, but we had stepped down: take it again as a new term
        assert_eq!(
            decide(Some(&lease(Some("a"))), "a", false, false),
            Decision::TakeOver
        );
    }

    #[test]
    fn expiry_is_observed_locally() {
        let d = Duration::from_secs(15);
        let t0 = Instant::now();
        let mut o = Observed::default();
        assert!(!o.expired("5", d, t0));
        assert!(!o.expired("5", d, t0 + Duration::from_secs(14)));
        assert_eq!(
            o.remaining(d, t0 + Duration::from_secs(14)),
            Some(Duration::from_secs(1))
        );
        assert!(o.expired("5", d, t0 + Duration::from_secs(15)));
        // a renewal (new resourceVersion) restarts the clock
        assert!(!o.expired("6", d, t0 + Duration::from_secs(16)));
        assert!(!o.expired("6", d, t0 + Duration::from_secs(30)));
        assert!(o.expired("6", d, t0 + Duration::from_secs(31)));
    }

    #[test]
    fn timing() {
        let c = LeaseConfig::new("cased-system", "n1", Duration::from_secs(15));
        assert_eq!(c.retry(), Duration::from_secs(5));
        assert_eq!(c.renew_deadline(), Duration::from_secs(10));
        assert!(c.identity.starts_with("n1-"));
        assert_eq!(c.identity.len(), "n1-".len() + 8);
    }
}
