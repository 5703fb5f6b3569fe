//! The OTLP protobuf fast path against the reference (issue 16): whatever
//! the body, the fast path never takes one prost refuses, and what both
//! take gives byte-identical span JSON, the same stats, services and
//! rejections (`fast::reference::compare`). First byte: bit 0 a pod index
//! (enrichment on), the rest of the input the body.
#![no_main]
use std::net::IpAddr;
use std::sync::Arc;

use cased_agent::enrich::{Metadata, Peer, PodMeta};
use cased_agent::model::ContainerIdentity;
use cased_agent::otlp::fast::reference::compare;
use libfuzzer_sys::fuzz_target;

struct OnePod(Arc<PodMeta>);

impl Metadata for OnePod {
    fn pod(&self, uid: &str) -> Option<Arc<PodMeta>> {
        (uid == self.0.uid).then(|| self.0.clone())
    }
    fn container(&self, _: &ContainerIdentity) -> Option<(Arc<PodMeta>, String)> {
        None
    }
    fn knows_pods(&self) -> bool {
        true
    }
    fn pod_by_name(&self, ns: &str, name: &str) -> Option<Arc<PodMeta>> {
        (ns == self.0.namespace && name == self.0.name).then(|| self.0.clone())
    }
    fn peer(&self, _: IpAddr) -> Peer {
        Peer::Pod(self.0.clone())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let meta = OnePod(Arc::new(PodMeta {
        namespace: "shop".into(),
        name: "web-1".into(),
        uid: "uid-1".into(),
        workload: "web".into(),
        workload_kind: "Deployment".into(),
        labels: vec![],
        node: "n1".into(),
        containers: vec!["app".into()],
    }));
    let meta: Option<&dyn Metadata> = (mode & 1 == 1).then_some(&meta as &dyn Metadata);
    let peer = Some(IpAddr::from([10, 0, 0, 1]));
    if let Err(e) = compare(body, "fuzz \"cluster\"", meta, peer) {
        panic!("{e}");
    }
});
