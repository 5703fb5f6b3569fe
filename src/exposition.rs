//! What `/metrics` answers: the OpenMetrics text the registry encodes, or
//! the same samples in the classic Prometheus text format (0.0.4), as the
//! scraper's `Accept` header asks.
//!
//! The OpenMetrics body is served exactly as `prometheus-client` writes it.
//! The classic body is derived from it line by line: classic parsers know a
//! family by its sample name (`x_total` for a counter, `x_info` for an info
//! metric), have no `# UNIT` and no `# EOF`, and escape only `\` and newline
//! in help text.

/// Content type of the OpenMetrics body.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the classic Prometheus text body.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two bodies `/metrics` can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::PrometheusText => PROMETHEUS_TEXT,
        }
    }
}

/// The format an `Accept` header prefers. OpenMetrics 1.0.0 only when asked
/// for (by type, `application/*`) at least as strongly as the classic text;
/// the classic text otherwise, also with no `Accept` or one that names
/// neither (as Prometheus' own client libraries do).
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::PrometheusText;
    };
    let (mut om, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut version = None;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.parse().unwrap_or(0.0),
                "version" => version = Some(v.to_string()),
                _ => {}
            }
        }
        let q = q.clamp(0.0, 1.0);
        match media.as_str() {
            "application/openmetrics-text" if version.as_deref().is_none_or(|v| v == "1.0.0") => {
                om = om.max(q);
            }
            "application/*" => om = om.max(q),
            "text/plain" if version.as_deref().is_none_or(|v| v == "0.0.4") => {
                text = text.max(q);
            }
            "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    }
}

/// The body of `openmetrics` in `format`.
pub fn render(openmetrics: String, format: Format) -> String {
    match format {
        Format::OpenMetrics => openmetrics,
        Format::PrometheusText => to_prometheus_text(&openmetrics),
    }
}

/// One family's metadata while its lines are read.
#[derive(Default)]
struct Family<'a> {
    name: &'a str,
    /// The classic family name (sample name for counters and info).
    classic: String,
    counter: bool,
}

/// The classic Prometheus text (0.0.4) of an OpenMetrics text body.
/// Counter `_created` samples have no place in it and are left out, as are
/// exemplars. Help lines are moved under the family's classic name.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    let mut family = Family::default();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, om_type) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, classic_type) = classic_type(om_type);
            family = Family {
                name,
                classic: format!("{name}{suffix}"),
                counter: om_type == "counter",
            };
            if let Some((_, text)) = help.take().filter(|(h, _)| *h == name) {
                out.push_str("# HELP ");
                out.push_str(&family.classic);
                out.push(' ');
                out.push_str(&escape_help(&unescape_om(text)));
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(&family.classic);
            out.push(' ');
            out.push_str(classic_type);
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            // no such lines in the classic format
        } else if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
            out.push('\n');
        } else {
            let sample = strip_exemplar(line);
            if family.counter && sample_name(sample) == format!("{}_created", family.name) {
                continue;
            }
            out.push_str(sample);
            out.push('\n');
        }
    }
    out
}

/// Suffix of the classic family name and the classic type of an
/// OpenMetrics type.
fn classic_type(om_type: &str) -> (&'static str, &'static str) {
    match om_type {
        "counter" => ("_total", "counter"),
        "info" => ("_info", "gauge"),
        "gauge" | "stateset" => ("", "gauge"),
        "histogram" => ("", "histogram"),
        "summary" => ("", "summary"),
        _ => ("", "untyped"),
    }
}

fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// A sample line without its exemplar (` # {...} value`), which only
/// OpenMetrics has. A `#` inside a quoted label value is not one.
fn strip_exemplar(line: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '#' if !quoted => return line[..i].trim_end(),
            _ => {}
        }
    }
    line
}

/// OpenMetrics escapes `\`, `"` and newline in help; a lone backslash is
/// kept as it is.
fn unescape_om(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(e @ ('\\' | '"')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The classic format escapes `\` and newline in help, nothing else.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "\
# HELP agent_cycles Collection cycles completed.
# TYPE agent_cycles counter
agent_cycles_total 3
agent_cycles_created 1700000000.0
# HELP agent_up Build \"x\" \\ info.
# TYPE agent_up info
agent_up_info{version=\"1 # 2\"} 1
# HELP agent_wait_seconds Wait time.
# TYPE agent_wait_seconds gauge
# UNIT agent_wait_seconds seconds
agent_wait_seconds 0.5
# HELP agent_req Requests.
# TYPE agent_req counter
agent_req_total{kind=\"a\\\"b\"} 2 # {trace_id=\"x\"} 1.0
# TYPE agent_odd unknown
agent_odd 1
# EOF
";

    #[test]
    fn classic_text_names_families_by_their_samples() {
        let want = "\
# HELP agent_cycles_total Collection cycles completed.
# TYPE agent_cycles_total counter
agent_cycles_total 3
# HELP agent_up_info Build \"x\" \\\\ info.
# TYPE agent_up_info gauge
agent_up_info{version=\"1 # 2\"} 1
# HELP agent_wait_seconds Wait time.
# TYPE agent_wait_seconds gauge
agent_wait_seconds 0.5
# HELP agent_req_total Requests.
# TYPE agent_req_total counter
agent_req_total{kind=\"a\\\"b\"} 2
# TYPE agent_odd untyped
agent_odd 1
";
        assert_eq!(to_prometheus_text(OM), want);
    }

    #[test]
    fn openmetrics_body_is_left_as_it_is() {
        assert_eq!(render(OM.to_string(), Format::OpenMetrics), OM);
    }

    #[test]
    fn accept_headers() {
        use Format::*;
        // Prometheus 2.x
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let cases = [
            (None, PrometheusText),
            (Some(prom), OpenMetrics),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("application/openmetrics-text; version=\"1.0.0\""),
                OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;version=0.0.1"),
                PrometheusText,
            ),
            (Some("text/plain"), PrometheusText),
            (Some("text/plain;version=0.0.4"), PrometheusText),
            (Some("*/*"), PrometheusText),
            (
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.8"),
                PrometheusText,
            ),
            (Some("text/plain;q=0.5, application/*"), OpenMetrics),
            (Some("application/openmetrics-text;q=0"), PrometheusText),
            (Some("application/json"), PrometheusText),
            (Some(""), PrometheusText),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn real_registry_converts() {
        let t = crate::telemetry::Telemetry::new();
        t.cycle.cycles.inc();
        let om = t.encode();
        assert!(om.ends_with("# EOF\n"));
        let text = to_prometheus_text(&om);
        assert!(
            text.contains("# TYPE cased_agent_cycles_total counter\ncased_agent_cycles_total 1\n")
        );
        assert!(text.contains("# HELP cased_agent_cycles_total Collection cycles completed.\n"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        // every TYPE line is followed by samples of that name only
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# TYPE")).count(),
            om.lines().filter(|l| l.starts_with("# TYPE")).count()
        );
    }
}
