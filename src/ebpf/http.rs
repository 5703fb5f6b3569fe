//! HTTP/1.x as the kernel hands it over: the first bytes of a chunk of
//! socket data (pure; fuzzed by `fuzz/fuzz_targets/http_parse.rs`).
//!
//! - [`requests`] finds the request lines in a chunk that starts with one:
//!   the first, and any pipelined after it (a request without a body, or
//!   with a `Content-Length` body, that ends inside the chunk).
//! - [`statuses`] does the same for status lines.
//! - [`normalize_path`] turns a request target into a low-cardinality path
//!   (the rules are in the README, "eBPF HTTP tracing"):
//!   1. the query string and fragment go; an absolute-form target
//!      (`http://host/p`) keeps only its path; `*` stays `*`;
//!   2. a segment that is an identifier becomes `{id}`: all digits, a UUID,
//!      hex of 16 or more digits, more digits than anything else (`2024-01-02`,
//!      `v1` is kept), or 24 or more characters with a digit in them (tokens);
//!   3. a path longer than [`MAX_PATH`] bytes is cut there and ends in `…`.

/// Methods traced (the kernel side recognises the same ones).
pub const METHODS: [&str; 7] = ["GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS"];

/// The method index of an HTTP/2 request whose method is none of
/// [`METHODS`] (named [`method_name`] `OTHER`).
pub const METHOD_OTHER: u8 = METHODS.len() as u8;

/// The name of method index `i`.
pub fn method_name(i: u8) -> &'static str {
    METHODS.get(usize::from(i)).copied().unwrap_or("OTHER")
}

/// Longest path kept (bytes), before `…`.
pub const MAX_PATH: usize = 128;

/// The identifier placeholder.
pub const ID: &str = "{id}";

/// One request line found in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// Index into [`METHODS`].
    pub method: u8,
    /// The raw request target (not normalized), possibly cut at the end of
    /// the chunk.
    pub target: &'a [u8],
}

impl RequestLine<'_> {
    pub fn method_str(&self) -> &'static str {
        METHODS[self.method as usize]
    }
}

/// The method at the start of `b` (followed by a space): its index and the
/// rest after the space.
fn method(b: &[u8]) -> Option<(u8, &[u8])> {
    for (i, m) in METHODS.iter().enumerate() {
        if let Some(rest) = b.strip_prefix(m.as_bytes())
            && let Some(rest) = rest.strip_prefix(b" ")
        {
            return Some((i as u8, rest));
        }
    }
    None
}

fn is_target_byte(c: u8) -> bool {
    c.is_ascii_graphic()
}

/// The request line at the start of `b`, if it is one; and where the
/// request line ends (or `b.len()` when the chunk ends first).
fn request_at(b: &[u8]) -> Option<(RequestLine<'_>, usize)> {
    let (m, rest) = method(b)?;
    let start = b.len() - rest.len();
    let n = rest.iter().take_while(|&&c| is_target_byte(c)).count();
    if n == 0 {
        return None;
    }
    let target = &rest[..n];
    let after = &rest[n..];
    // a whole line must read " HTTP/1.x"; a chunk that ends inside the
    // line is accepted as it is (the target may be cut)
    if !after.is_empty() {
        let v = after.strip_prefix(b" ")?;
        let want = b"HTTP/1.";
        let k = v.len().min(want.len());
        if v[..k] != want[..k] {
            return None;
        }
    }
    Some((RequestLine { method: m, target }, start + n))
}

/// The searcher for the blank line ending a header block, built once
/// (building one per search cost more than the search).
fn blank_line() -> &'static memchr::memmem::Finder<'static> {
    static F: std::sync::OnceLock<memchr::memmem::Finder<'static>> = std::sync::OnceLock::new();
    F.get_or_init(|| memchr::memmem::Finder::new(b"\r\n\r\n"))
}

fn status_marker() -> &'static memchr::memmem::Finder<'static> {
    static F: std::sync::OnceLock<memchr::memmem::Finder<'static>> = std::sync::OnceLock::new();
    F.get_or_init(|| memchr::memmem::Finder::new(b"HTTP/1."))
}

/// The end of the header block that starts at `from` (index just past the
/// blank line), and the `Content-Length` it declares. `None` when the chunk
/// ends before the blank line, or nothing follows it (the common case: one
/// message per chunk, no header parsed).
fn headers_end(b: &[u8], from: usize) -> Option<(usize, u64)> {
    let rest = b.get(from..)?;
    let end = blank_line().find(rest)? + 4;
    if from + end >= b.len() {
        return None;
    }
    let mut len = 0u64;
    for line in rest[..end].split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(i) = line.iter().position(|&c| c == b':')
            && line[..i].eq_ignore_ascii_case(b"content-length")
        {
            let v = std::str::from_utf8(&line[i + 1..]).ok()?.trim();
            len = v.parse().ok()?;
        }
    }
    Some((from + end, len))
}

/// Where the next message starts after the one whose line ended at
/// `line_end`: past its headers and its `Content-Length` body, when both
/// are inside `b`.
fn next_message(b: &[u8], line_end: usize) -> Option<usize> {
    let (hend, body) = headers_end(b, line_end)?;
    let next = hend.checked_add(usize::try_from(body).ok()?)?;
    (next < b.len()).then_some(next)
}

/// The request lines of a chunk that starts with one, in order (at most
/// `max`). Empty when the chunk does not start with a request line.
pub fn requests(b: &[u8], max: usize) -> Vec<RequestLine<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < max {
        let Some((req, line_end)) = b.get(at..).and_then(request_at) else {
            break;
        };
        out.push(req);
        match next_message(b, at + line_end) {
            Some(n) => at = n,
            None => break,
        }
    }
    out
}

/// The status code of the status line at the start of `b`, and where the
/// line's code ends.
fn status_at(b: &[u8]) -> Option<(u16, usize)> {
    let rest = b.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    if !minor.is_ascii_digit() {
        return None;
    }
    let rest = rest.strip_prefix(b" ")?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // after the code: a space, CR, or the end of the chunk
    if let Some(&c) = rest.get(3)
        && c != b' '
        && c != b'\r'
    {
        return None;
    }
    let v = code
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&v) {
        return None;
    }
    Some((v, b.len() - rest.len() + 3))
}

/// The status codes of a chunk that starts with a status line, in order (at
/// most `max`).
pub fn statuses(b: &[u8], max: usize) -> Vec<u16> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < max {
        let Some((code, end)) = b.get(at..).and_then(status_at) else {
            break;
        };
        out.push(code);
        // another response must start with "HTTP/1." somewhere after this
        // one: without it, no header is parsed (the usual case: a response
        // and its body, alone in the chunk)
        if status_marker().find(&b[at + end..]).is_none() {
            break;
        }
        // a 1xx has no body; others: Content-Length (or nothing inside b)
        match next_message(b, at + end) {
            Some(n) => at = n,
            None => break,
        }
    }
    out
}

/// Whether a path segment is an identifier.
fn is_identifier(seg: &[u8]) -> bool {
    if seg.is_empty() {
        return false;
    }
    let digits = seg.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == seg.len() {
        return true;
    }
    if is_uuid(seg) {
        return true;
    }
    if seg.len() >= 16 && seg.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    if digits * 2 > seg.len() {
        return true;
    }
    seg.len() >= 24 && digits > 0
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A request target as a low-cardinality path (see the module doc).
pub fn normalize_path(target: &[u8]) -> String {
    let mut t = target;
    if let Some(i) = t.iter().position(|&c| c == b'?' || c == b'#') {
        t = &t[..i];
    }
    if t == b"*" {
        return "*".to_string();
    }
    // absolute form: scheme://authority/path
    if let Some(i) = t.windows(3).position(|w| w == b"://") {
        let after = &t[i + 3..];
        t = match after.iter().position(|&c| c == b'/') {
            Some(j) => &after[j..],
            None => b"/",
        };
    }
    let mut out = String::with_capacity(t.len().min(MAX_PATH) + 4);
    if !t.starts_with(b"/") {
        out.push('/');
    }
    for (i, seg) in t.split(|&c| c == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_identifier(seg) {
            out.push_str(ID);
        } else {
            // targets are ASCII graphic (checked by the parser)
            out.extend(seg.iter().map(|&c| c as char));
        }
        if out.len() > MAX_PATH {
            break;
        }
    }
    if out.len() > MAX_PATH {
        let mut cut = MAX_PATH;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(b: &[u8]) -> Vec<(&'static str, String)> {
        requests(b, 16)
            .iter()
            .map(|r| (r.method_str(), normalize_path(r.target)))
            .collect()
    }

    #[test]
    fn request_lines() {
        let b = b"GET /users/42?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(paths(b), vec![("GET", "/users/{id}".to_string())]);
        assert_eq!(
            paths(b"DELETE /a/b HTTP/1.0\r\n\r\n"),
            vec![("DELETE", "/a/b".to_string())]
        );
        assert_eq!(
            paths(b"OPTIONS * HTTP/1.1\r\n\r\n"),
            vec![("OPTIONS", "*".to_string())]
        );
        // cut by the end of the chunk: accepted as far as it goes
        assert_eq!(paths(b"GET /abc/de"), vec![("GET", "/abc/de".to_string())]);
        assert_eq!(paths(b"GET /abc H"), vec![("GET", "/abc".to_string())]);
        // not HTTP
        for b in [
            &b"GET /x SMTP/1.0\r\n"[..],
            b"GETX /x HTTP/1.1\r\n",
            b"GET  HTTP/1.1",
            b"get /x HTTP/1.1",
            b"CONNECT a:443 HTTP/1.1",
            b"",
            b"GET ",
        ] {
            assert!(
                requests(b, 4).is_empty(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn pipelined_requests_in_order() {
        let b = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b/7 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPUT /c HTTP/1.1\r\n\r\nGET /d";
        assert_eq!(
            paths(b),
            vec![
                ("GET", "/a".to_string()),
                ("POST", "/b/{id}".to_string()),
                ("PUT", "/c".to_string()),
                ("GET", "/d".to_string())
            ]
        );
        // a body that runs past the chunk hides what follows
        let b = b"POST /a HTTP/1.1\r\nContent-Length: 500\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(paths(b).len(), 1);
        assert_eq!(
            requests(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 1).len(),
            1
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            statuses(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", 8),
            vec![200]
        );
        assert_eq!(statuses(b"HTTP/1.0 404", 8), vec![404]);
        assert_eq!(
            statuses(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 204 No\r\n\r\n",
                8
            ),
            vec![100, 500, 204]
        );
        for b in [
            &b"HTTP/2 200 OK"[..],
            b"HTTP/1.1 20",
            b"HTTP/1.1 2000",
            b"HTTP/1.1 099 x",
            b"HTTP/1.1 abc",
            b"HTTP/1.x 200",
        ] {
            assert!(
                statuses(b, 4).is_empty(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn identifiers_collapse() {
        let cases = [
            (
                "/users/42/orders/7f9c2a1b3d4e5f60",
                "/users/{id}/orders/{id}",
            ),
            ("/u/123e4567-e89b-12d3-a456-426614174000/x", "/u/{id}/x"),
            ("/v1/items", "/v1/items"),
            ("/api/v2/a1", "/api/v2/a1"),
            ("/d/2024-01-02", "/d/{id}"),
            ("/t/eyJhbGciOiJIUzI1NiJ9abcdefgh", "/t/{id}"),
            (
                "/t/averyveryverylongwordwithoutdigits",
                "/t/averyveryverylongwordwithoutdigits",
            ),
            ("/deadbeef", "/deadbeef"),
            ("/", "/"),
            ("/a/", "/a/"),
            ("http://example.com/x/9?q", "/x/{id}"),
            ("http://example.com", "/"),
            ("relative/5", "/relative/{id}"),
        ];
        for (t, want) in cases {
            assert_eq!(normalize_path(t.as_bytes()), want, "{t}");
        }
        let long = format!("/{}", "z".repeat(300));
        let n = normalize_path(long.as_bytes());
        assert!(n.ends_with('…'));
        assert_eq!(n.len(), MAX_PATH + '…'.len_utf8());
    }
}
