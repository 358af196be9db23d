//! The relay's front door: request heads parsed with `httparse`, routes, and
//! the few responses the relay writes itself (plain pages and the WebSocket
//! upgrade). Pure functions over bytes; the event loop does the I/O.

use std::borrow::Cow;

/// A request head larger than this is refused (`431`).
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// What the relay needs to know of a request head.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub origin: Option<String>,
    pub authorization: Option<String>,
    /// `Upgrade: websocket` with `Connection: upgrade`.
    pub websocket: bool,
    pub websocket_key: Option<String>,
    pub websocket_version: Option<String>,
    /// `Accept-Encoding` names gzip (with a quality above 0).
    pub accepts_gzip: bool,
}

/// The outcome of feeding the bytes received so far.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// Need more bytes.
    Partial,
    /// A whole head of `len` bytes; what follows belongs to the next layer.
    Complete(Box<Head>, usize),
    /// Not HTTP, or too large: answer with this status and close.
    Refuse(u16),
}

/// A request head as the relay's engine is handed it: complete, or refused
/// while parsing. (Waiting for more bytes is the reader's business.)
#[derive(Debug, PartialEq)]
pub enum Request {
    Complete(Box<Head>),
    Refuse(u16),
}

pub fn parse_head(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => Parsed::Complete(Box::new(head_of(&request)), len),
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => Parsed::Refuse(431),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::Refuse(431),
        Err(_) => Parsed::Refuse(400),
    }
}

fn head_of(request: &httparse::Request) -> Head {
    let target = request.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let mut head = Head {
        method: request.method.unwrap_or_default().to_owned(),
        path: path.to_owned(),
        query,
        ..Head::default()
    };
    let mut upgrade = false;
    let mut connection_upgrade = false;
    for header in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else {
            continue;
        };
        let value = value.trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            head.host = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade = value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.websocket_key = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.websocket_version = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            head.accepts_gzip |= accepts_gzip(value);
        }
    }
    head.websocket = upgrade && connection_upgrade;
    head
}

/// Whether an `Accept-Encoding` value allows gzip: `gzip` (or `x-gzip`)
/// listed without `q=0`. A `*` is not taken as gzip: a client that names
/// no encoding gets the page as it is.
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let refused = parts.any(|param| {
            let (name, q) = param.split_once('=').unwrap_or((param, ""));
            name.trim().eq_ignore_ascii_case("q") && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip")) && !refused
    })
}

impl Head {
    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| percent_decode(value).into_owned())
        })
    }

    /// The credential the client offers: `Authorization: Bearer T` is
    /// preferred (it stays out of proxy logs), else the `token` parameter.
    pub fn token(&self) -> Option<String> {
        let bearer = self.authorization.as_deref().and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
        bearer.or_else(|| self.query_param("token"))
    }

    /// Whether a browser's `Origin` may open the dashboard stream: absent
    /// (not a browser), the relay's own `Host`, or one the operator allowed.
    pub fn origin_allowed(&self, allowed: &[String]) -> bool {
        let Some(origin) = &self.origin else {
            return true;
        };
        if allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        match (authority, &self.host) {
            (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
            _ => false,
        }
    }
}

impl Head {
    /// Whether the `Host` the client asked for may be served the fleet's
    /// data without a viewer token: an IP literal, `localhost` (or a name
    /// under it), or a name the operator allowed (`--allowed-host`). A
    /// page on an attacker's domain that resolves to the relay (DNS
    /// rebinding) is same-origin to its own name, so the `Origin` check
    /// passes; its `Host` is that name, which this refuses. No `Host` at
    /// all is not a browser.
    pub fn host_allowed(&self, allowed: &[String]) -> bool {
        let Some(host) = &self.host else {
            return true;
        };
        let name = host_name(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        // Compared as bytes: a `Host` may hold any UTF-8, and a string cut
        // inside a character would panic (and, built to abort, end the
        // relay).
        let suffix = b".localhost";
        let localhost = name.eq_ignore_ascii_case("localhost")
            || name.len() > suffix.len()
                && name.as_bytes()[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
        localhost || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}

/// A DNS name as a `Host` header carries it: labels of letters, digits,
/// `-` and `_`, 1 to 63 bytes each, 253 in all, and an optional final dot.
pub fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A `Host` value without its port: `relay.lan:3001` -> `relay.lan`,
/// `[::1]:3001` -> `::1`.
pub fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(inside, _)| inside);
    }
    match host.rsplit_once(':') {
        // One colon: a port. More (a bare IPv6 literal) are left whole.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Page,
    Servers,
    /// `/api/servers/{id}/history`: the id is [`history_server`]'s.
    History,
    Metrics,
    Health,
    DashboardStream,
    AgentStream,
    /// A vStats agent: upgraded without a token, it authenticates in its
    /// first frame (see [`super::compat`]).
    CompatAgentStream,
    /// A file of the release directory (`--dist-dir`): its name.
    Dist,
    NotFound,
    MethodNotAllowed,
}

pub fn route(head: &Head) -> Route {
    let route = match head.path.as_str() {
        "/" | "/index.html" => Route::Page,
        "/api/servers" => Route::Servers,
        path if history_server(path).is_some() => Route::History,
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Health,
        "/ws" => Route::DashboardStream,
        "/ws/agent" => Route::AgentStream,
        // A vStats agent's `dashboard_url` of `http(s)://relay:3001/compat`
        // plus its fixed `/ws/agent`.
        "/compat/ws/agent" => Route::CompatAgentStream,
        path if dist_file(path).is_some() => Route::Dist,
        _ => return Route::NotFound,
    };
    match head.method.as_str() {
        "GET" => route,
        // HEAD gets the same answer without a body; the caller drops it.
        "HEAD"
            if !matches!(
                route,
                Route::DashboardStream | Route::AgentStream | Route::CompatAgentStream
            ) =>
        {
            route
        }
        _ => Route::MethodNotAllowed,
    }
}

/// The server whose history `/api/servers/{id}/history` asks for. Ids are
/// the registry's (hex), so no decoding is needed.
pub fn history_server(path: &str) -> Option<&str> {
    let id = path
        .strip_prefix("/api/servers/")?
        .strip_suffix("/history")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The release file a path asks for: `/install.sh`, or `/dl/NAME` where
/// NAME is a plain file name (no directories, nothing hidden).
pub fn dist_file(path: &str) -> Option<&str> {
    if path == "/install.sh" {
        return Some("install.sh");
    }
    let name = path.strip_prefix("/dl/")?;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    plain.then_some(name)
}

/// A complete response that closes the connection.
pub fn response(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = response_head(status, content_type, body.len() as u64);
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The head of a response whose `content_length` bytes of body follow,
/// closing the connection after them.
pub fn response_head(status: u16, content_type: &str, content_length: u64) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        reason(status),
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The dashboard page. Its policy lets it run its own inline script and
/// style and talk to its own origin, and nothing else; no referrer, so a
/// viewer token in the page's URL goes nowhere.
/// `gzipped`: the body is gzip-compressed, for a client that accepts it.
pub fn page_response(body: &[u8], gzipped: bool, head_only: bool) -> Vec<u8> {
    let mut out = response(200, "text/html; charset=utf-8", body, head_only);
    let mut headers = String::from(
        "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
         style-src 'unsafe-inline'; img-src data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n\
         Referrer-Policy: no-referrer\r\nVary: Accept-Encoding\r\n",
    );
    if gzipped {
        headers.push_str("Content-Encoding: gzip\r\n");
    }
    // Just before the blank line that ends the head.
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 2;
    out.splice(end..end, headers.bytes());
    out
}

/// A short plain-text error or status response.
pub fn text_response(status: u16, text: &str) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        format!("{text}\n").as_bytes(),
        false,
    )
}

/// The `101` that completes a WebSocket upgrade, or the refusal to send
/// when the request is not a valid one.
pub fn upgrade_response(head: &Head) -> Result<Vec<u8>, Vec<u8>> {
    let key = match (&head.websocket_key, head.websocket_version.as_deref()) {
        (Some(key), Some("13")) if head.websocket => key,
        _ => {
            return Err(text_response(
                400,
                "expected a WebSocket upgrade (version 13)",
            ));
        }
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws/agent?token=a%2Bb HTTP/1.1\r\nHost: relay:3001\r\n\
        Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nEXTRA";

    #[test]
    fn an_upgrade_head_parses_and_leaves_the_rest() {
        let Parsed::Complete(head, len) = parse_head(UPGRADE) else {
            panic!("not complete");
        };
        assert_eq!(&UPGRADE[len..], b"EXTRA");
        assert_eq!(head.path, "/ws/agent");
        assert!(head.websocket);
        assert_eq!(head.token().as_deref(), Some("a+b"));
        assert_eq!(route(&head), Route::AgentStream);
        // RFC 6455 section 1.3's example key and answer.
        let response = String::from_utf8(upgrade_response(&head).unwrap()).unwrap();
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn partial_large_and_garbage_heads() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        );
        let mut large = b"GET / HTTP/1.1\r\nX: ".to_vec();
        large.resize(MAX_HEAD, b'a');
        assert_eq!(parse_head(&large), Parsed::Refuse(431));
        assert_eq!(
            parse_head(b"\x16\x03\x01\x02\x00garbage\r\n\r\n"),
            Parsed::Refuse(400)
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many), Parsed::Refuse(431));
    }

    #[test]
    fn bearer_wins_over_the_query() {
        let head = Head {
            query: Some("token=query".into()),
            authorization: Some("Bearer header".into()),
            ..Head::default()
        };
        assert_eq!(head.token().as_deref(), Some("header"));
        let head = Head {
            query: Some("x=1&token=%E4%B8%8A".into()),
            ..Head::default()
        };
        assert_eq!(head.token().as_deref(), Some("上"));
        assert_eq!(Head::default().token(), None);
    }

    #[test]
    fn origins() {
        let head = |origin: Option<&str>| Head {
            host: Some("relay.lan:3001".into()),
            origin: origin.map(str::to_owned),
            ..Head::default()
        };
        let allowed = ["https://grafana.lan".to_owned()];
        assert!(head(None).origin_allowed(&[]));
        assert!(head(Some("http://relay.lan:3001")).origin_allowed(&[]));
        assert!(head(Some("https://RELAY.lan:3001")).origin_allowed(&[]));
        assert!(!head(Some("https://evil.example")).origin_allowed(&allowed));
        assert!(!head(Some("http://relay.lan:3002")).origin_allowed(&[]));
        assert!(head(Some("https://grafana.lan")).origin_allowed(&allowed));
        assert!(!head(Some("null")).origin_allowed(&[]));
    }

    #[test]
    fn hosts_without_a_viewer_token_are_ip_literals_localhost_or_allowed_names() {
        let head = |host: Option<&str>| Head {
            host: host.map(str::to_owned),
            ..Head::default()
        };
        let allowed = ["relay.lan".to_owned(), "stats.example.com".to_owned()];
        for yes in [
            None,
            Some("127.0.0.1"),
            Some("127.0.0.1:3001"),
            Some("192.168.1.5:3001"),
            Some("[::1]:3001"),
            Some("[fe80::1]"),
            Some("::1"),
            Some("localhost:3001"),
            Some("LOCALHOST"),
            Some("localhost."),
            Some("pi.localhost:3001"),
            Some("relay.lan:3001"),
            Some("RELAY.LAN"),
            Some("relay.lan.:3001"),
            Some("stats.example.com"),
        ] {
            assert!(head(yes).host_allowed(&allowed), "{yes:?}");
        }
        for no in [
            Some("evil.example"),
            Some("evil.example:3001"),
            Some("relay.lan.evil.example"),
            Some("evil-relay.lan"),
            Some("localhost.evil.example"),
            Some("notlocalhost"),
            Some("127.0.0.1.evil.example"),
            Some(""),
            Some("[::1"),
            Some("relay.lan:notaport"),
            // Ten bytes from the end fall inside a character.
            Some("€€€€"),
            Some("€€€€:3001"),
            Some("x€localhost"),
        ] {
            assert!(!head(no).host_allowed(&allowed), "{no:?}");
        }
        assert!(!head(Some("relay.lan")).host_allowed(&[]));
    }

    #[test]
    fn routes_and_methods() {
        let head = |method: &str, path: &str| Head {
            method: method.into(),
            path: path.into(),
            ..Head::default()
        };
        assert_eq!(route(&head("GET", "/healthz")), Route::Health);
        assert_eq!(route(&head("HEAD", "/")), Route::Page);
        assert_eq!(
            route(&head("POST", "/api/servers")),
            Route::MethodNotAllowed
        );
        assert_eq!(route(&head("GET", "/nope")), Route::NotFound);
        assert_eq!(route(&head("HEAD", "/ws")), Route::MethodNotAllowed);
        assert_eq!(
            route(&head("GET", "/compat/ws/agent")),
            Route::CompatAgentStream
        );
        assert_eq!(
            route(&head("HEAD", "/compat/ws/agent")),
            Route::MethodNotAllowed
        );
    }

    #[test]
    fn the_page_carries_its_policy_in_the_head() {
        let out = String::from_utf8(page_response(b"<p>hi", false, false)).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("\r\nContent-Security-Policy: default-src 'none';"));
        assert!(head.contains("\r\nReferrer-Policy: no-referrer\r\n"));
        assert!(head.ends_with("Vary: Accept-Encoding"), "{head}");
        assert_eq!(body, "<p>hi");
        let gzipped = String::from_utf8(page_response(b"x", true, false)).unwrap();
        assert!(gzipped.contains("\r\nContent-Encoding: gzip\r\n\r\nx"));
    }

    #[test]
    fn gzip_is_accepted_when_named_without_a_zero_quality() {
        for yes in [
            "gzip",
            "gzip, deflate, br, zstd",
            "br;q=1.0, GZIP;q=0.5",
            "x-gzip",
        ] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip; q=0.000",
            "*",
            "gzipped",
        ] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }

    #[test]
    fn dist_files_are_plain_names() {
        assert_eq!(dist_file("/install.sh"), Some("install.sh"));
        assert_eq!(
            dist_file("/dl/vstats-agent-linux-armv7"),
            Some("vstats-agent-linux-armv7")
        );
        assert_eq!(dist_file("/dl/SHA256SUMS"), Some("SHA256SUMS"));
        for refused in [
            "/dl/",
            "/dl/../state.json",
            "/dl/a/b",
            "/dl/.hidden",
            "/dl/%2e%2e",
            "/x.sh",
        ] {
            assert_eq!(dist_file(refused), None, "{refused}");
        }
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decode("a%41+b"), "aA b");
    }
}
