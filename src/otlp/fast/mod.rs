//! The OTLP/HTTP protobuf fast path (issue 16): an export request read
//! straight from its body, each span's API JSON (SPEC §3) written into one
//! buffer ([`JsonSpans`]) with nothing owned per span, for the delivery
//! queue to batch as it is.
//!
//! The output is, byte for byte, what [`super::convert`] and the sinks'
//! `serde_json` encoding give for the request prost decodes (the tests and
//! the `otlp_fast` fuzz target hold it to that), with the same ids
//! rejected, the same services, pods and [`SpanStat`]s. Resources, being
//! few, are decoded by prost (after a check), so service names and pod
//! enrichment run the reference's own code.
//!
//! Whatever this path does not take exactly as prost would ([`NotFast`]:
//! malformed bodies, a value's oneof set twice, nesting past
//! [`check::MAX_DEPTH`], groups) goes to prost, which decides and says
//! why: the accept/reject decision is always prost's.

mod attrs;
pub mod check;
mod json;
pub mod reader;
pub mod reference;
mod span;

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

pub use reader::NotFast;

use self::attrs::Attrs;
use self::check::Msg;
use self::reader::Reader;
use self::span::SpanView;
use super::convert::{self, SpanStat, check_id_bytes};
use super::pods::{Resolver, span_attributes};
use crate::enrich::PodMeta;
use crate::sink::span_json::JsonSpans;

/// One export request, encoded: [`super::convert::Converted`] with the
/// spans as JSON.
#[derive(Debug, Default)]
pub struct Encoded {
    pub spans: JsonSpans,
    pub services: Vec<String>,
    pub pods: Vec<Option<Arc<PodMeta>>>,
    pub stats: Vec<SpanStat>,
    pub rejected: u64,
    pub reject_reason: Option<String>,
}

/// What every span of one resource shares, JSON-ready.
struct ResourceCtx {
    service: u32,
    /// The service name as a JSON string.
    service_json: Vec<u8>,
    /// The pod's attributes: key, and `"key":"value"`.
    added: Vec<(String, Vec<u8>)>,
}

/// Per-span scratch, reused.
#[derive(Default)]
struct Scratch<'a> {
    attrs: Attrs<'a>,
    event_attrs: Attrs<'a>,
    events: Vec<&'a [u8]>,
    events_json: Vec<u8>,
}

/// Encode every span of a protobuf `ExportTraceServiceRequest` of about
/// `spans` spans (the scan's count: it sizes the buffer), each resource's
/// pod found by `pods`.
pub fn encode(
    body: &[u8],
    cluster_id: &str,
    mut pods: Option<&mut Resolver<'_>>,
    spans: u64,
) -> Result<Encoded, NotFast> {
    // about 650 bytes of JSON a typical span; never more than the scan's
    // bound charges a span (the otlp_bound fuzz target found a body of no
    // spans whose buffer, sized from its length, was over it)
    let n = usize::try_from(spans).unwrap_or(usize::MAX).min(1 << 20);
    let mut out = Encoded {
        spans: JsonSpans::with_capacity(n, n.saturating_mul(700).min(1 << 20)),
        ..Encoded::default()
    };
    let mut cluster_json = Vec::new();
    json::string(&mut cluster_json, cluster_id.as_bytes());
    let mut index: HashMap<(String, String), u32> = HashMap::new();
    let mut scratch = Scratch::default();
    let mut r = Reader::new(body);
    while let Some((n, v)) = r.next_field()? {
        if n == 1 {
            let rs = v.bytes()?;
            let ctx = resource(rs, pods.as_deref_mut(), &mut index, &mut out)?;
            scope_spans(rs, &ctx, &cluster_json, &mut scratch, &mut out)?;
        }
    }
    Ok(out)
}

/// A `ResourceSpans`' resource (decoded by prost once checked: merged when
/// given twice), its service and pod, as convert.rs finds them.
fn resource(
    rs: &[u8],
    pods: Option<&mut Resolver<'_>>,
    index: &mut HashMap<(String, String), u32>,
    out: &mut Encoded,
) -> Result<ResourceCtx, NotFast> {
    let mut res: Option<Resource> = None;
    let mut r = Reader::new(rs);
    while let Some((n, v)) = r.next_field()? {
        match n {
            1 => {
                let b = v.bytes()?;
                check::check(b, Msg::Resource, 2)?;
                let res = res.get_or_insert_default();
                res.merge(b).map_err(|_| NotFast)?;
            }
            2 => {
                v.bytes()?;
            }
            3 => {
                v.str()?;
            }
            _ => {}
        }
    }
    let service = convert::service_name(res.as_ref());
    let attrs = res.as_ref().map_or(&[][..], |r| &r.attributes[..]);
    let pod = pods.and_then(|r| r.resolve(attrs));
    let added = pod
        .as_ref()
        .map(|p| span_attributes(p, attrs))
        .unwrap_or_default();
    let added = added
        .into_iter()
        .map(|(k, v)| {
            let mut m = Vec::with_capacity(k.len() + v.len() + 8);
            json::string(&mut m, k.as_bytes());
            m.push(b':');
            json::string(&mut m, v.as_bytes());
            (k, m)
        })
        .collect();
    let mut service_json = Vec::with_capacity(service.len() + 2);
    json::string(&mut service_json, service.as_bytes());
    let key = (
        service,
        pod.as_ref().map(|p| p.uid.clone()).unwrap_or_default(),
    );
    let idx = match index.get(&key) {
        Some(&i) => i,
        None => {
            let i = out.services.len() as u32;
            out.services.push(key.0.clone());
            out.pods.push(pod);
            index.insert(key, i);
            i
        }
    };
    Ok(ResourceCtx {
        service: idx,
        service_json,
        added,
    })
}

/// Every span of a `ResourceSpans`' scopes, in order.
fn scope_spans<'a>(
    rs: &'a [u8],
    ctx: &ResourceCtx,
    cluster_json: &[u8],
    scratch: &mut Scratch<'a>,
    out: &mut Encoded,
) -> Result<(), NotFast> {
    let mut r = Reader::new(rs);
    while let Some((n, v)) = r.next_field()? {
        if n != 2 {
            continue;
        }
        let mut s = Reader::new(v.bytes()?);
        while let Some((n, v)) = s.next_field()? {
            match n {
                1 => check::check(v.bytes()?, Msg::Scope, 3)?,
                2 => one_span(v.bytes()?, ctx, cluster_json, scratch, out)?,
                3 => {
                    v.str()?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// One span: rejected for its ids, or written with its stat.
fn one_span<'a>(
    buf: &'a [u8],
    ctx: &ResourceCtx,
    cluster_json: &[u8],
    scratch: &mut Scratch<'a>,
    out: &mut Encoded,
) -> Result<(), NotFast> {
    let sp = span::read(buf, &mut scratch.attrs, &mut scratch.events)?;
    events_json(scratch)?;
    let parent = match check_id_bytes(sp.trace_id, sp.span_id, sp.parent_span_id) {
        Ok(true) => &[][..],
        Ok(false) => sp.parent_span_id,
        Err(why) => {
            out.rejected += 1;
            out.reject_reason.get_or_insert(why);
            return Ok(());
        }
    };
    write_span(out.spans.buf(), &sp, parent, ctx, cluster_json, scratch);
    out.spans.end_span();
    let duration_ns = sp.end.saturating_sub(sp.start);
    out.stats.push(SpanStat {
        service: ctx.service,
        duration_ms: duration_ns as f64 / 1e6,
        error: sp.status_code == 2,
    });
    Ok(())
}

/// The span's events as convert.rs's JSON text, into `events_json`.
fn events_json(scratch: &mut Scratch<'_>) -> Result<(), NotFast> {
    let out = &mut scratch.events_json;
    out.clear();
    out.push(b'[');
    for (i, ev) in scratch.events.iter().enumerate() {
        let (name, time) = span::event(ev, &mut scratch.event_attrs)?;
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"name\":");
        json::string(out, name.as_bytes());
        out.extend_from_slice(b",\"time_unix_nano\":");
        json::uint(out, time);
        out.extend_from_slice(b",\"attributes\":{");
        scratch.event_attrs.write_members(out);
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
    Ok(())
}

/// The span's object, in `StoredSpan`'s field order.
fn write_span(
    out: &mut Vec<u8>,
    sp: &SpanView<'_>,
    parent: &[u8],
    ctx: &ResourceCtx,
    cluster_json: &[u8],
    scratch: &Scratch<'_>,
) {
    let a = &scratch.attrs;
    out.extend_from_slice(b"{\"trace_id\":");
    json::hex_string(out, sp.trace_id);
    out.extend_from_slice(b",\"span_id\":");
    json::hex_string(out, sp.span_id);
    out.extend_from_slice(b",\"parent_span_id\":");
    json::hex_string(out, parent);
    out.extend_from_slice(b",\"service_name\":");
    out.extend_from_slice(&ctx.service_json);
    out.extend_from_slice(b",\"span_name\":");
    json::string(out, sp.name.as_bytes());
    out.extend_from_slice(b",\"span_kind\":");
    json::int(out, i64::from(sp.kind));
    out.extend_from_slice(b",\"timestamp\":");
    json::int(out, (sp.start / 1_000_000) as i64);
    out.extend_from_slice(b",\"duration_ns\":");
    json::uint(out, sp.end.saturating_sub(sp.start));
    out.extend_from_slice(b",\"status_code\":");
    json::int(out, i64::from(sp.status_code));
    out.extend_from_slice(b",\"status_message\":");
    json::string(out, sp.status_message.as_bytes());
    out.extend_from_slice(b",\"attributes\":{");
    let mut any = a.write_members(out);
    for (key, member) in &ctx.added {
        if a.get(key).is_none() {
            if any {
                out.push(b',');
            }
            out.extend_from_slice(member);
            any = true;
        }
    }
    out.extend_from_slice(b"},\"events\":");
    json::string(out, &scratch.events_json);
    write_http(out, a);
    out.extend_from_slice(b",\"cluster_id\":");
    out.extend_from_slice(cluster_json);
    out.push(b'}');
}

/// `http_method`, `http_status_code`, `http_url`, as convert.rs picks them.
fn write_http(out: &mut Vec<u8>, a: &Attrs<'_>) {
    let [method, status, url] = a.first_of([
        convert::HTTP_METHOD,
        convert::HTTP_STATUS_CODE,
        convert::HTTP_URL,
    ]);
    let method = method.unwrap_or_default();
    let status = status
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let url = url.unwrap_or_default();
    out.extend_from_slice(b",\"http_method\":");
    json::string(out, method.as_bytes());
    out.extend_from_slice(b",\"http_status_code\":");
    json::int(out, status);
    out.extend_from_slice(b",\"http_url\":");
    json::string(out, url.as_bytes());
}

#[cfg(test)]
mod tests;
