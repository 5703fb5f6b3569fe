//! Metrics as the cycle hands them to delivery: each one's own parts and a
//! shared [`Subject`], the JSON of everything a metric has in common with
//! every other metric of its container (or pod, or the node), rendered once.
//!
//! The bytes are exactly those serde_json writes for the API's
//! [`Metric`] (SPEC §3): same field order, tags sorted by key, the four pod
//! fields left out when empty, serde_json's own string escaping and number
//! formatting. `Metric` stays the reference: the tests encode both.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::ser::{CompactFormatter, Formatter};

use super::wire::Metric;

/// What the metrics of one subject share, as JSON fragments, in one
/// buffer (a thousand containers keep one each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Each tag's key and its `"key":"value"`, then the tail:
    /// `,"cluster_id":…,"node_name":…[,"namespace":…]…}`, the fields after
    /// the tags and the closing brace.
    text: Box<str>,
    /// Where each tag's key and fragment are in `text`, sorted by key,
    /// keys unique.
    tags: Box<[TagAt]>,
    /// Where the tail starts in `text`.
    tail: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TagAt {
    key: (u32, u32),
    frag: (u32, u32),
}

/// The fields of a [`Subject`] before rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectFields<'a> {
    pub tags: BTreeMap<String, String>,
    pub cluster_id: &'a str,
    pub node_name: &'a str,
    pub namespace: &'a str,
    pub pod_name: &'a str,
    pub container_name: &'a str,
    pub pod_uid: &'a str,
}

impl Subject {
    pub fn render(f: &SubjectFields<'_>) -> Subject {
        let mut text = Vec::with_capacity(256);
        let span = |text: &mut Vec<u8>, write: &dyn Fn(&mut Vec<u8>)| {
            let start = text.len();
            write(text);
            (start as u32, (text.len() - start) as u32)
        };
        let tags = f
            .tags
            .iter()
            .map(|(k, v)| TagAt {
                key: span(&mut text, &|t| t.extend_from_slice(k.as_bytes())),
                frag: span(&mut text, &|t| pair(t, k, v)),
            })
            .collect();
        let tail_at = text.len() as u32;
        field(&mut text, "cluster_id", f.cluster_id);
        field(&mut text, "node_name", f.node_name);
        for (k, v) in [
            ("namespace", f.namespace),
            ("pod_name", f.pod_name),
            ("container_name", f.container_name),
            ("pod_uid", f.pod_uid),
        ] {
            if !v.is_empty() {
                field(&mut text, k, v);
            }
        }
        text.push(b'}');
        Subject {
            text: into_string(text).into_boxed_str(),
            tags,
            tail: tail_at,
        }
    }

    /// Bytes this subject holds (for the cache's accounting).
    pub fn heap_bytes(&self) -> usize {
        self.text.len() + self.tags.len() * size_of::<TagAt>()
    }

    fn at(&self, (start, len): (u32, u32)) -> &str {
        self.text
            .get(start as usize..(start + len) as usize)
            .unwrap_or_default()
    }

    /// Each tag's key and `"key":"value"`, in key order.
    fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|t| (self.at(t.key), self.at(t.frag)))
    }

    fn tail(&self) -> &str {
        self.text.get(self.tail as usize..).unwrap_or_default()
    }
}

/// One metric, ready to encode.
#[derive(Debug, Clone)]
pub struct MetricOut {
    /// Unix milliseconds of the collection cycle.
    pub timestamp: i64,
    pub name: Cow<'static, str>,
    pub value: f64,
    pub unit: Cow<'static, str>,
    pub subject: Arc<Subject>,
    /// The metric's own tags; a key here wins over the subject's.
    pub tags: Vec<(&'static str, String)>,
}

impl MetricOut {
    /// Append this metric's JSON object to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut f = CompactFormatter;
        out.extend_from_slice(b"{\"timestamp\":");
        // writing to a Vec cannot fail
        let _ = f.write_i64(out, self.timestamp);
        out.extend_from_slice(b",\"metric_name\":");
        string(out, &self.name);
        out.extend_from_slice(b",\"value\":");
        if self.value.is_finite() {
            let _ = f.write_f64(out, self.value);
        } else {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b",\"unit\":");
        string(out, &self.unit);
        out.extend_from_slice(b",\"tags\":{");
        self.write_tags(out);
        out.push(b'}');
        out.extend_from_slice(self.subject.tail().as_bytes());
    }

    /// The subject's tags and the metric's own, merged in key order.
    fn write_tags(&self, out: &mut Vec<u8>) {
        let mut own: Vec<&(&'static str, String)> = self.tags.iter().collect();
        // stable: of equal keys the last one wins, as a map insert would
        own.sort_by_key(|(k, _)| *k);
        let mut own = own.into_iter().peekable();
        let mut subject = self.subject.tags().peekable();
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        loop {
            match (own.peek(), subject.peek()) {
                (Some((k, v)), s) if s.is_none_or(|(sk, _)| k <= sk) => {
                    let (k, v) = (*k, v.as_str());
                    own.next();
                    if own.peek().is_some_and(|(next, _)| *next == k) {
                        continue;
                    }
                    if subject.peek().is_some_and(|(sk, _)| *sk == k) {
                        subject.next();
                    }
                    sep(out);
                    pair(out, k, v);
                }
                (_, Some((_, frag))) => {
                    sep(out);
                    out.extend_from_slice(frag.as_bytes());
                    subject.next();
                }
                (_, None) => break,
            }
        }
    }

    /// This metric in the API's owned shape (tests, and readers of it).
    pub fn to_metric(&self) -> Metric {
        let mut body = Vec::new();
        self.write_json(&mut body);
        serde_json::from_slice(&body).expect("the encoder writes valid JSON")
    }
}

impl From<&Metric> for MetricOut {
    /// Everything of `m` as its subject (no own tags).
    fn from(m: &Metric) -> MetricOut {
        let subject = Subject::render(&SubjectFields {
            tags: m.tags.clone(),
            cluster_id: &m.cluster_id,
            node_name: &m.node_name,
            namespace: &m.namespace,
            pod_name: &m.pod_name,
            container_name: &m.container_name,
            pod_uid: &m.pod_uid,
        });
        MetricOut {
            timestamp: m.timestamp,
            name: Cow::Owned(m.metric_name.clone()),
            value: m.value,
            unit: Cow::Owned(m.unit.clone()),
            subject: Arc::new(subject),
            tags: Vec::new(),
        }
    }
}

impl From<Metric> for MetricOut {
    fn from(m: Metric) -> MetricOut {
        MetricOut::from(&m)
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    // serde_json's own escaping (writing a str to a Vec cannot fail)
    let _ = serde_json::to_writer(out, s);
}

/// `"k":"v"`
fn pair(out: &mut Vec<u8>, k: &str, v: &str) {
    string(out, k);
    out.push(b':');
    string(out, v);
}

/// `,"k":"v"`
fn field(out: &mut Vec<u8>, k: &str, v: &str) {
    out.push(b',');
    pair(out, k, v);
}

fn into_string(v: Vec<u8>) -> String {
    // every piece written is valid UTF-8 (escaped &strs and ASCII)
    String::from_utf8(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(tags: &[(&str, &str)], pod: &str, value: f64) -> Metric {
        Metric {
            timestamp: 1_732_650_000_123,
            metric_name: "container.cpu.usage".into(),
            value,
            unit: "percent".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cluster_id: "prod \"eu\"".into(),
            node_name: "n1".into(),
            namespace: if pod.is_empty() { "" } else { "shop" }.into(),
            pod_name: pod.into(),
            container_name: "web".into(),
            pod_uid: String::new(),
        }
    }

    fn json(m: &MetricOut) -> String {
        let mut out = Vec::new();
        m.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_what_serde_writes_for_the_api_shape() {
        let odd = "tab\t, quote \", slash \\, bell \u{7}, é, 🦀";
        for (tags, pod, value) in [
            (vec![], "", 0.0),
            (vec![("node", "n1")], "web-0", 12.5),
            (vec![("a", odd), ("node", "n1"), ("z", "")], "", 1e-9),
            (vec![(odd, "v"), ("container", "c")], "p", -3.0),
            (vec![("x", "1")], "", f64::MAX),
        ] {
            let m = metric(&tags, pod, value);
            let out = MetricOut::from(&m);
            assert_eq!(json(&out), serde_json::to_string(&m).unwrap());
            assert_eq!(out.to_metric(), m);
        }
        // non-finite: null, as serde writes it (delivery drops them first)
        let m = metric(&[], "", f64::NAN);
        assert_eq!(
            json(&MetricOut::from(&m)),
            serde_json::to_string(&m).unwrap()
        );
    }

    #[test]
    fn own_tags_merge_in_order_and_win() {
        let subject = metric(&[("b", "1"), ("d", "2"), ("node", "n1")], "", 1.0);
        let mut out = MetricOut::from(&subject);
        out.tags = vec![
            ("node", "mine".into()),
            ("a", "x".into()),
            ("c", "y".into()),
            ("e", "first".into()),
            ("e", "last".into()),
        ];
        let mut want = subject.clone();
        for (k, v) in &out.tags {
            want.tags.insert(k.to_string(), v.clone());
        }
        assert_eq!(json(&out), serde_json::to_string(&want).unwrap());
        assert_eq!(want.tags["node"], "mine");
        assert_eq!(want.tags["e"], "last");
        assert_eq!(want.tags.len(), 6);
    }

    #[test]
    fn merge_matches_a_map_on_every_small_case() {
        // every subset of 4 subject keys against every sequence of up to 3
        // own tags from 5 keys (duplicates included)
        let keys = ["a", "b", "c", "d", "e"];
        for mask in 0u32..16 {
            let subj: Vec<(&str, &str)> = (0..4)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| (keys[i + 1], "s"))
                .collect();
            for n in 0..=3u32 {
                for pick in 0..5u32.pow(n) {
                    let own: Vec<(&'static str, String)> = (0..n)
                        .map(|j| (keys[(pick / 5u32.pow(j) % 5) as usize], format!("o{j}")))
                        .collect();
                    let base = metric(&subj, "", 1.0);
                    let mut out = MetricOut::from(&base);
                    out.tags = own.clone();
                    let mut want = base.clone();
                    for (k, v) in own {
                        want.tags.insert(k.to_string(), v);
                    }
                    assert_eq!(json(&out), serde_json::to_string(&want).unwrap());
                }
            }
        }
    }
}
