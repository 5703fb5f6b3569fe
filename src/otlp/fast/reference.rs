//! The fast path held to the reference: one body through both [`super::encode`]
//! and prost + [`crate::otlp::convert`] + `serde_json`, every difference an
//! error. Used by the unit tests and the `otlp_fast` fuzz target.

use std::net::IpAddr;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::{Encoded, encode};
use crate::enrich::Metadata;
use crate::otlp::convert::{Converted, convert_with};
use crate::otlp::pods::Resolver;

/// How the two paths agreed on a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// Both took it, with the same output.
    Same,
    /// prost took it, the fast path left it to prost (allowed: the
    /// receiver then uses prost).
    LeftToProst,
    /// Both refused it.
    BothRefused,
}

/// Run `body` through both paths (pods from `meta`, the sender at `peer`)
/// and compare spans (byte for byte), stats, services, pods, rejections
/// and what the resolvers counted.
pub fn compare(
    body: &[u8],
    cluster_id: &str,
    meta: Option<&dyn Metadata>,
    peer: Option<IpAddr>,
) -> Result<Agreement, String> {
    let mut fast_pods = meta.map(|m| Resolver::new(m, peer));
    let spans = crate::otlp::scan::scan_protobuf(body).map_or(0, |s| s.spans);
    let fast = encode(body, cluster_id, fast_pods.as_mut(), spans);
    let req = ExportTraceServiceRequest::decode(body);
    let (req, fast) = match (req, fast) {
        (Err(_), Err(_)) => return Ok(Agreement::BothRefused),
        (Err(e), Ok(_)) => return Err(format!("the fast path took a body prost refuses: {e}")),
        (Ok(_), Err(_)) => return Ok(Agreement::LeftToProst),
        (Ok(req), Ok(fast)) => (req, fast),
    };
    let mut ref_pods = meta.map(|m| Resolver::new(m, peer));
    let reference = convert_with(req, cluster_id, ref_pods.as_mut());
    same_output(&fast, &reference)?;
    let counts = |r: Option<Resolver<'_>>| r.map(|r| r.counts);
    if counts(fast_pods) != counts(ref_pods) {
        return Err("the resolvers counted differently".into());
    }
    Ok(Agreement::Same)
}

fn same_output(fast: &Encoded, reference: &Converted) -> Result<(), String> {
    if fast.spans.len() != reference.spans.len() {
        return Err(format!(
            "{} spans, the reference has {}",
            fast.spans.len(),
            reference.spans.len()
        ));
    }
    for (i, (got, want)) in fast.spans.iter().zip(&reference.spans).enumerate() {
        let want = serde_json::to_vec(want).map_err(|e| e.to_string())?;
        if got != want {
            return Err(format!(
                "span {i}:\n fast {}\n  ref {}",
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(&want)
            ));
        }
    }
    let stats_eq = fast.stats.len() == reference.stats.len()
        && fast.stats.iter().zip(&reference.stats).all(|(a, b)| {
            a.service == b.service
                && a.error == b.error
                && a.duration_ms.to_bits() == b.duration_ms.to_bits()
        });
    if !stats_eq {
        return Err(format!("stats {:?} vs {:?}", fast.stats, reference.stats));
    }
    if fast.services != reference.services || fast.pods != reference.pods {
        return Err(format!(
            "services {:?} vs {:?} (or their pods)",
            fast.services, reference.services
        ));
    }
    if (fast.rejected, &fast.reject_reason) != (reference.rejected, &reference.reject_reason) {
        return Err(format!(
            "rejected {} {:?} vs {} {:?}",
            fast.rejected, fast.reject_reason, reference.rejected, reference.reject_reason
        ));
    }
    Ok(())
}
