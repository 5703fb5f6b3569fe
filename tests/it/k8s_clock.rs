//! The Kubernetes side on a clock the test controls (tokio's, paused),
//! against the fake API server in this process (no socket, so no timer runs
//! on a clock the test does not control): the events leader election's
//! takeover after a crash and handover on release, and the pod watch's
//! backoff while the API server fails. Measured in virtual time, exactly,
//! however loaded the machine is.

use std::sync::Arc;
use std::time::Duration;

use cased_agent::enrich::Metadata;
use cased_agent::k8s::events::{EventCounts, Leadership};
use cased_agent::k8s::leader::{self, LeaseConfig, LeaseRelease};
use cased_agent::telemetry::Telemetry;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fakeapi::FakeApi;
use crate::k8s::{DB_UID, NODE, load_cluster};

const DURATION: Duration = Duration::from_secs(15);

struct Elector {
    rx: watch::Receiver<Leadership>,
    release: LeaseRelease,
    task: tokio::task::JoinHandle<()>,
}

fn elector(api: &FakeApi, node: &str) -> Elector {
    let (tx, rx) = watch::channel(Leadership::Follower);
    let (release, release_rx) = LeaseRelease::new();
    let task = tokio::spawn(leader::run(
        api.in_process_client(),
        LeaseConfig::new("cased-system", node, DURATION),
        Arc::new(EventCounts::default()),
        tx,
        Arc::new(Telemetry::new()),
        release_rx,
    ));
    Elector { rx, release, task }
}

fn leads(e: &Elector) -> bool {
    matches!(*e.rx.borrow(), Leadership::Leader { .. })
}

/// Virtual time until `e` leads (at most `limit`).
async fn until_leader(e: &mut Elector, limit: Duration) -> Duration {
    let t = Instant::now();
    tokio::time::timeout(
        limit,
        e.rx.wait_for(|l| matches!(l, Leadership::Leader { .. })),
    )
    .await
    .expect("became leader in time")
    .expect("elector alive");
    t.elapsed()
}

/// A leader that crashes (no release) is replaced once its Lease expires
/// as the follower observed it: 15 s after the last renewal it saw (so
/// 10–15 s after the crash, renewals being 5 s apart), not before.
#[tokio::test(start_paused = true)]
async fn a_crashed_leader_is_replaced_when_its_lease_expires() {
    let api = FakeApi::start();
    let mut a = elector(&api, "node-a");
    assert_eq!(
        until_leader(&mut a, Duration::from_secs(1)).await,
        Duration::ZERO
    );
    let mut b = elector(&api, "node-b");
    // a renews every 5 s; b only watches
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(leads(&a) && !leads(&b), "one leader for a minute");
    let renewals = api.requests("update leases");
    assert!((11..=12).contains(&renewals), "{renewals} renewals in 60 s");
    // the crash: right after a renewal (a renews at 60 s, then every 5 s)
    a.task.abort();
    let waited = until_leader(&mut b, Duration::from_secs(60)).await;
    eprintln!("takeover {waited:?} after the crash, {renewals} renewals in 60 s");
    assert!(
        waited >= DURATION - Duration::from_secs(5)
            && waited <= DURATION + Duration::from_millis(100),
        "b took over {waited:?} after the crash"
    );
    let _ = b.release;
}

/// A leader that stops releases its Lease: the follower, watching it,
/// takes over at once instead of waiting for the expiry.
#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_over_at_once() {
    let api = FakeApi::start();
    let mut a = elector(&api, "node-a");
    until_leader(&mut a, Duration::from_secs(1)).await;
    let mut b = elector(&api, "node-b");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!leads(&b));
    a.release.release(Duration::from_secs(1)).await;
    a.task.await.unwrap();
    let waited = until_leader(&mut b, Duration::from_secs(60)).await;
    eprintln!("handover {waited:?} after the release");
    assert!(
        waited <= Duration::from_millis(100),
        "handover took {waited:?}"
    );
}

/// While the API server answers 503, the pod watch retries on the one
/// backoff (250 ms doubling to 15 s, jittered down by at most 25 %), not
/// in a loop; the cache keeps what it had, and the first retry after the
/// server is back relists it.
#[tokio::test(start_paused = true)]
async fn the_pod_watch_backs_off_while_the_api_server_fails() {
    let api = FakeApi::start();
    load_cluster(&api);
    let tel = Arc::new(Telemetry::new());
    let k = cased_agent::k8s::start(api.in_process_client(), NODE, "cased-system", false, tel);
    while !k.meta.is_ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pods = k.meta.len();
    api.fail(true);
    api.expire_watches();
    let lists = api.requests("list pods");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let retries = api.requests("list pods") - lists;
    // delays 0.25, 0.5, 1, 2, 4, 8, 15, 15, ... s (each × 0.75..1): 9 to 11
    // attempts fit in 60 s
    eprintln!("{retries} lists in 60 s of failure");
    assert!((9..=11).contains(&retries), "{retries} lists in 60 s");
    assert_eq!(k.meta.len(), pods, "the cache keeps what it had");
    api.delete("pods", "shop", "db-0");
    api.fail(false);
    let t = Instant::now();
    while k.meta.pod(DB_UID).is_some() {
        assert!(
            t.elapsed() <= Duration::from_secs(15),
            "not relisted in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(k.meta.len(), pods - 1);
}
