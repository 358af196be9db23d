//! Notifications, what they say: the events the engine reports, the
//! [`Notice`] it hands over, the webhook [`Target`]s parsed from
//! `--notify-url` and `--notify-template`, the body each target gets for a
//! notice (the default JSON or a template), and URLs redacted wherever
//! they are shown. [`super::alerts`] decides when; [`super::notify`]
//! delivers.
//!
//! Pure: it does no I/O, starts no thread and reads no clock (a notice
//! carries its time), so all of it is tested on values.

use crate::protocol::{rfc3339, to_json};
use crate::url::{Authority, AuthorityError, authority};
// A checked DNS name or IP address: a value, no TLS in it.
use rustls::pki_types::ServerName;
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;
use tungstenite::http::Uri;
use tungstenite::http::uri::InvalidUri;

/// What happened, as the `event` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Offline,
    Online,
    Threshold,
    /// `vstats-relay notify test`.
    Test,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Offline => "offline",
            Event::Online => "online",
            Event::Threshold => "threshold",
            Event::Test => "test",
        }
    }
}

/// One notification, before it is shaped into a body for a URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub event: Event,
    pub server_id: String,
    pub server_name: String,
    pub server_location: String,
    pub at: SystemTime,
    /// A sentence for people.
    pub message: String,
    /// Threshold events: the rule as written (`disk>=90 for 5m`), the value
    /// that crossed it, and whether it stopped holding.
    pub rule: Option<String>,
    pub value: Option<f64>,
    pub resolved: bool,
}

/// The counts of [`super::notify::NotifyCounters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deliveries {
    pub sent: u64,
    /// Refused for good (a 4xx), or still failing after the retries.
    pub failed: u64,
    /// Pushed out of a full queue, oldest first.
    pub dropped: u64,
}

/// How a notification is shaped for one URL.
#[derive(Debug, Clone, PartialEq)]
enum BodyShape {
    /// The JSON object documented in the README.
    DefaultJson,
    /// `--notify-template` text, with values escaped for the inside of a
    /// JSON string when the template is JSON, raw when it is text.
    Template { json: bool, segments: Vec<Segment> },
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Field(Field),
}

/// A `{{...}}` placeholder of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Event,
    Message,
    At,
    ServerId,
    ServerName,
    ServerLocation,
    Rule,
    Value,
    Resolved,
}

impl Field {
    const ALL: [(&'static str, Field); 9] = [
        ("event", Field::Event),
        ("message", Field::Message),
        ("at", Field::At),
        ("server.id", Field::ServerId),
        ("server.name", Field::ServerName),
        ("server.location", Field::ServerLocation),
        ("rule", Field::Rule),
        ("value", Field::Value),
        ("resolved", Field::Resolved),
    ];

    fn named(name: &str) -> Option<Field> {
        Field::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, field)| *field)
    }

    fn text(self, notice: &Notice) -> Cow<'_, str> {
        match self {
            Field::Event => Cow::Borrowed(notice.event.as_str()),
            Field::Message => Cow::Borrowed(&notice.message),
            Field::At => Cow::Owned(rfc3339(notice.at)),
            Field::ServerId => Cow::Borrowed(&notice.server_id),
            Field::ServerName => Cow::Borrowed(&notice.server_name),
            Field::ServerLocation => Cow::Borrowed(&notice.server_location),
            Field::Rule => Cow::Borrowed(notice.rule.as_deref().unwrap_or("")),
            // Rust's float Display is the shortest text that reads back
            // as the same value: 93.5, and 90 rather than 90.0.
            Field::Value => notice
                .value
                .map_or(Cow::Borrowed(""), |value| Cow::Owned(value.to_string())),
            Field::Resolved => Cow::Borrowed(if notice.resolved { "true" } else { "false" }),
        }
    }
}

/// A webhook: where to POST, and how to shape the body.
///
/// Debug is written by hand: a derived one would print the path and query,
/// where webhook URLs keep their secret.
#[derive(Clone, PartialEq)]
pub struct Target {
    tls: bool,
    /// Without brackets, as a socket address takes an IPv6 address.
    host: String,
    /// Checked at parse time, so that a typo fails at start and not at the
    /// first alert.
    server_name: ServerName<'static>,
    port: u16,
    /// The secret, more often than not: never logged.
    path_and_query: String,
    shape: BodyShape,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.redacted())
            .field("shape", &self.shape)
            .finish()
    }
}

/// A `--notify-url` or `--notify-template` that cannot be used. Messages
/// quote a URL only in its redacted form (scheme, host and port).
#[derive(Debug, Clone, PartialEq)]
pub enum TargetError {
    /// The text does not parse as a URL.
    NotAUrl { url: String, reason: String },
    /// A URL, but not `http://` or `https://`.
    NotHttp(String),
    /// No host, or `[]`.
    NoHost(String),
    /// A host that is neither a DNS name nor an IP address (which the
    /// `http` crate's lenient parser lets through).
    BadHost(String),
    /// A port that is not a number from 1 to 65535.
    BadPort(String),
    /// `user:password@` in the URL: likely a secret, so not repeated.
    Credentials,
    /// A template of nothing but spaces: almost surely a mistake.
    EmptyTemplate,
    /// A `{{name}}` the renderer does not know.
    UnknownPlaceholder(String),
    /// A `{{` without its `}}`; holds the text from the `{{` on (shortened).
    UnclosedPlaceholder(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::NotAUrl { url, reason } => {
                write!(f, "--notify-url: '{url}' is not a URL: {reason}")
            }
            TargetError::NotHttp(url) => {
                write!(f, "--notify-url: '{url}' is not an http:// or https:// URL")
            }
            TargetError::NoHost(url) => write!(f, "--notify-url: '{url}' has no host"),
            TargetError::BadHost(url) => write!(
                f,
                "--notify-url: '{url}': the host is not a DNS name or an IP address"
            ),
            TargetError::BadPort(url) => write!(
                f,
                "--notify-url: '{url}': the port is not a number from 1 to 65535"
            ),
            TargetError::Credentials => f.write_str(
                "--notify-url: user:password@ in the URL is not supported \
                 (the URL is not repeated here: it may hold a secret)",
            ),
            TargetError::EmptyTemplate => f.write_str(
                "--notify-template is empty: leave it out (or give 'json') for the default JSON body",
            ),
            TargetError::UnknownPlaceholder(name) => {
                write!(f, "--notify-template: unknown placeholder {{{{{name}}}}}; known:")?;
                for (known, _) in Field::ALL {
                    write!(f, " {{{{{known}}}}}")?;
                }
                Ok(())
            }
            TargetError::UnclosedPlaceholder(from) => write!(
                f,
                "--notify-template: '{from}': a {{{{ without its }}}}"
            ),
        }
    }
}

impl std::error::Error for TargetError {}

/// What of a URL that did not parse may be shown: the scheme and the
/// authority without user information, never the path or query.
fn redact_text(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let hidden = if authority_end < rest.len() {
        "/…"
    } else {
        ""
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{hidden}"),
        None => format!("{host}{hidden}"),
    }
}

impl Target {
    /// An `http://` or `https://` URL and an optional body template
    /// (`None` or `"json"` for the default JSON body).
    pub fn parse(url: &str, template: Option<&str>) -> Result<Target, TargetError> {
        // User information may be a secret: checked first, so that no
        // message repeats the URL that holds it.
        if crate::url::has_credentials(url) {
            return Err(TargetError::Credentials);
        }
        let shown = redact_text(url);
        let uri: Uri = url.parse().map_err(|e: InvalidUri| TargetError::NotAUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(TargetError::NotHttp(shown)),
        };
        let Authority {
            host,
            server_name,
            port,
        } = authority(&uri).map_err(|e| match e {
            AuthorityError::NoHost => TargetError::NoHost(shown.clone()),
            AuthorityError::BadHost => TargetError::BadHost(shown.clone()),
            AuthorityError::BadPort => TargetError::BadPort(shown.clone()),
        })?;
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        // The `http` crate leaves a fragment out of the path and query: a
        // fragment is the browser's, never sent.
        let path_and_query = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_owned(),
            Some(p) => p.to_owned(),
        };
        Ok(Target {
            tls,
            host: host.to_owned(),
            server_name,
            port,
            path_and_query,
            shape: parse_shape(template)?,
        })
    }

    /// `scheme://host:port/…`: how every log line and message names this
    /// URL. The path and query are left out because that is where
    /// webhooks keep their secret (Discord, Slack and Telegram tokens in
    /// the path, Gotify's `?token=`).
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}/…", self.bracketed_host(), self.port)
    }

    /// Whether this is an `https://` URL.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The host to connect to (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// What a TLS connection is asked to verify, checked at parse time.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// The port to connect to: the URL's, or the scheme's own.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the request line asks for; the secret, more often than not:
    /// never logged.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The host as a URL writes it: an IPv6 address in brackets.
    fn bracketed_host(&self) -> Cow<'_, str> {
        if self.host.contains(':') {
            Cow::Owned(format!("[{}]", self.host))
        } else {
            Cow::Borrowed(&self.host)
        }
    }

    /// The `Host` header: the port only when it is not the scheme's own.
    pub fn host_header(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            self.bracketed_host().into_owned()
        } else {
            format!("{}:{}", self.bracketed_host(), self.port)
        }
    }

    /// The content type and body POSTed for `notice`.
    pub fn body(&self, notice: &Notice) -> (&'static str, Vec<u8>) {
        match &self.shape {
            BodyShape::DefaultJson => ("application/json", default_body(notice)),
            BodyShape::Template { json, segments } => {
                let mut out = String::new();
                for segment in segments {
                    match segment {
                        Segment::Text(text) => out.push_str(text),
                        Segment::Field(field) if *json => {
                            out.push_str(&json_string_inside(&field.text(notice)));
                        }
                        Segment::Field(field) => out.push_str(&field.text(notice)),
                    }
                }
                let content_type = if *json {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                (content_type, out.into_bytes())
            }
        }
    }
}

fn parse_shape(template: Option<&str>) -> Result<BodyShape, TargetError> {
    let template = match template {
        None => return Ok(BodyShape::DefaultJson),
        Some(text) if text.trim() == "json" => return Ok(BodyShape::DefaultJson),
        Some(text) if text.trim().is_empty() => return Err(TargetError::EmptyTemplate),
        Some(text) => text,
    };
    let mut segments = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            segments.push(Segment::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            let from: String = rest[open..].chars().take(24).collect();
            return Err(TargetError::UnclosedPlaceholder(from));
        };
        // `{{ message }}` is forgiven its spaces.
        let name = after[..close].trim();
        let field =
            Field::named(name).ok_or_else(|| TargetError::UnknownPlaceholder(name.to_owned()))?;
        segments.push(Segment::Field(field));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest.to_owned()));
    }
    // `{{message}}` starts with a brace too, but a placeholder, not JSON.
    let trimmed = template.trim_start();
    let json = trimmed.starts_with('[') || (trimmed.starts_with('{') && !trimmed.starts_with("{{"));
    Ok(BodyShape::Template { json, segments })
}

/// `text` escaped as JSON would write it inside a string, without the
/// quotes, so that a template says `"{{message}}"` itself.
fn json_string_inside(text: &str) -> String {
    // Serializing a str cannot fail.
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

#[derive(Serialize)]
struct DefaultBody<'a> {
    event: &'static str,
    server: ServerFields<'a>,
    at: String,
    message: &'a str,
    /// Threshold events only.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    threshold: Option<ThresholdFields<'a>>,
}

#[derive(Serialize)]
struct ServerFields<'a> {
    id: &'a str,
    name: &'a str,
    location: &'a str,
}

#[derive(Serialize)]
struct ThresholdFields<'a> {
    rule: &'a str,
    value: Option<f64>,
    resolved: bool,
}

fn default_body(notice: &Notice) -> Vec<u8> {
    let body = DefaultBody {
        event: notice.event.as_str(),
        server: ServerFields {
            id: &notice.server_id,
            name: &notice.server_name,
            location: &notice.server_location,
        },
        at: rfc3339(notice.at),
        message: &notice.message,
        threshold: notice.rule.as_deref().map(|rule| ThresholdFields {
            rule,
            value: notice.value,
            resolved: notice.resolved,
        }),
    };
    // Strings, a float and a bool: nothing here can fail to serialize.
    to_json(&body).unwrap_or_default().into_bytes()
}

/// The tests' helpers are shared with the delivery tests in `notify`.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn notice(event: Event) -> Notice {
        Notice {
            event,
            server_id: "web-1".to_owned(),
            server_name: "Web 1".to_owned(),
            server_location: "Frankfurt".to_owned(),
            at: humantime::parse_rfc3339("2026-12-02T01:03:04Z").unwrap(),
            message: "Web 1 is offline".to_owned(),
            rule: None,
            value: None,
            resolved: false,
        }
    }

    fn threshold(value: Option<f64>, resolved: bool) -> Notice {
        Notice {
            rule: Some("disk>=90 for 5m".to_owned()),
            value,
            resolved,
            message: "disk at 93.5% on Web 1".to_owned(),
            ..notice(Event::Threshold)
        }
    }

    pub(crate) fn target(url: &str) -> Target {
        Target::parse(url, None).unwrap()
    }

    pub(crate) fn json(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
    }

    #[test]
    fn urls_parse_to_host_port_and_path() {
        let t = target("http://hooks.example/notify");
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path_and_query.as_str()),
            (false, "hooks.example", 80, "/notify")
        );
        let t = target("https://ntfy.sh");
        assert_eq!((t.tls, t.port, t.path_and_query.as_str()), (true, 443, "/"));
        let t = target("https://gotify.example:8443/message?token=APPTOKEN#top");
        assert_eq!(t.port, 8443);
        assert_eq!(
            t.path_and_query, "/message?token=APPTOKEN",
            "query kept, fragment dropped"
        );
        let t = target("http://[::1]:8080/hook?x=1");
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(target("http://10.0.0.2/").host, "10.0.0.2");
    }

    #[test]
    fn bad_urls_are_refused_without_their_secret() {
        let refused = |url: &str| Target::parse(url, None).unwrap_err();
        assert_eq!(
            refused("ftp://files.example/SECRET"),
            TargetError::NotHttp("ftp://files.example/…".to_owned())
        );
        assert_eq!(
            refused("ftp://files.example/SECRET").to_string(),
            "--notify-url: 'ftp://files.example/…' is not an http:// or https:// URL"
        );
        assert_eq!(
            refused("https://user:SECRET@h.example/"),
            TargetError::Credentials
        );
        for port in ["0", "70000", "abc", "-1"] {
            let error = refused(&format!("https://h.example:{port}/SECRET"));
            assert!(
                matches!(error, TargetError::BadPort(_) | TargetError::NotAUrl { .. }),
                "{port}: {error:?}"
            );
        }
        assert_eq!(
            refused("https://h.example:0/SECRET").to_string(),
            "--notify-url: 'https://h.example:0/…': the port is not a number from 1 to 65535"
        );
        for no_host in ["http:///SECRET", "http://[]/SECRET", "http://"] {
            let error = refused(no_host);
            assert!(
                matches!(error, TargetError::NoHost(_) | TargetError::NotAUrl { .. }),
                "{no_host}: {error:?}"
            );
        }
        assert!(matches!(
            refused("https://a_b!/SECRET"),
            TargetError::BadHost(_) | TargetError::NotAUrl { .. }
        ));
        assert!(matches!(
            refused("discord.com/api/webhooks/1/SECRET"),
            TargetError::NotHttp(_) | TargetError::NotAUrl { .. }
        ));
        for url in [
            "ftp://files.example/SECRET",
            "https://user:SECRET@h.example/",
            "https://h.example:abc/SECRET",
            "http://[]/SECRET",
            "https://h.example/has space/SECRET",
            "discord.com/api/webhooks/1/SECRET",
            "https://h.example/?token=SECRET\u{0}",
        ] {
            let message = refused(url).to_string();
            assert!(!message.contains("SECRET"), "{url}: {message}");
        }
    }

    #[test]
    fn redaction_shows_scheme_host_and_port_only() {
        for (url, shown) in [
            (
                "https://discord.com/api/webhooks/ID/SECRET",
                "https://discord.com:443/…",
            ),
            (
                "https://gotify.example/message?token=SECRET",
                "https://gotify.example:443/…",
            ),
            (
                "http://[fd00::1]:8080/SECRET?x=SECRET",
                "http://[fd00::1]:8080/…",
            ),
            ("http://10.0.0.2", "http://10.0.0.2:80/…"),
        ] {
            let t = target(url);
            assert_eq!(t.redacted(), shown);
            assert!(!format!("{t:?}").contains("SECRET"), "{t:?}");
        }
    }

    #[test]
    fn templates_with_unknown_or_unclosed_placeholders_are_refused() {
        let refused =
            |template: &str| Target::parse("https://h.example/", Some(template)).unwrap_err();
        assert_eq!(
            refused("{{mesage}}"),
            TargetError::UnknownPlaceholder("mesage".to_owned())
        );
        assert!(refused("{{mesage}}").to_string().contains("{{mesage}}"));
        assert!(
            refused("{{mesage}}")
                .to_string()
                .contains("{{server.name}}")
        );
        assert_eq!(
            refused("{{server}}"),
            TargetError::UnknownPlaceholder("server".to_owned())
        );
        assert_eq!(
            refused("{\"text\": \"{{message\"}"),
            TargetError::UnclosedPlaceholder("{{message\"}".to_owned())
        );
        assert_eq!(refused("  "), TargetError::EmptyTemplate);
        // Spaces inside the braces are forgiven; a lone `}}` is text.
        let t = Target::parse("https://h.example/", Some("{{ event }} }}")).unwrap();
        assert_eq!(t.body(&notice(Event::Online)).1, b"online }}");
        assert_eq!(
            Target::parse("https://h.example/", Some("json")).unwrap(),
            target("https://h.example/")
        );
    }

    #[test]
    fn the_default_body_has_the_documented_fields() {
        let (content_type, body) = target("https://h.example/").body(&notice(Event::Offline));
        assert_eq!(content_type, "application/json");
        assert_eq!(
            json(&body),
            serde_json::json!({
                "event": "offline",
                "server": {"id": "web-1", "name": "Web 1", "location": "Frankfurt"},
                "at": "2026-12-02T01:03:04Z",
                "message": "Web 1 is offline",
            })
        );
        // In the documented order, for people reading a request bin.
        assert!(
            String::from_utf8(body)
                .unwrap()
                .starts_with(r#"{"event":"offline","server":{"id""#)
        );

        let (_, body) = target("https://h.example/").body(&threshold(Some(93.5), false));
        let value = json(&body);
        assert_eq!(value["rule"], "disk>=90 for 5m");
        assert_eq!(value["value"], 93.5);
        assert_eq!(value["resolved"], false);
        assert_eq!(value.as_object().unwrap().len(), 7);
        let (_, body) = target("https://h.example/").body(&threshold(None, true));
        let value = json(&body);
        assert_eq!(
            (value["value"].is_null(), &value["resolved"]),
            (true, &serde_json::json!(true))
        );
    }

    #[test]
    fn json_templates_escape_values_and_text_templates_do_not() {
        let awkward = Notice {
            message: "say \"hi\" \\ then\nnewline in 上海\u{1}".to_owned(),
            ..notice(Event::Offline)
        };
        let t = Target::parse(
            "https://h.example/",
            Some(r#"  {"content": "{{message}}"}"#),
        )
        .unwrap();
        let (content_type, body) = t.body(&awkward);
        assert_eq!(content_type, "application/json");
        assert_eq!(json(&body)["content"], awkward.message.as_str());

        let t = Target::parse(
            "https://h.example/",
            Some("{{event}} {{server.id}}/{{server.name}}@{{server.location}} {{at}}: {{message}} [{{rule}}|{{value}}|{{resolved}}]"),
        )
        .unwrap();
        let (content_type, body) = t.body(&awkward);
        assert_eq!(content_type, "text/plain; charset=utf-8");
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!(
                "offline web-1/Web 1@Frankfurt 2026-12-02T01:03:04Z: {} [||false]",
                awkward.message
            )
        );
        let (_, body) = t.body(&threshold(Some(93.5), true));
        assert!(
            String::from_utf8(body)
                .unwrap()
                .ends_with("[disk>=90 for 5m|93.5|true]")
        );
        let (_, body) = t.body(&threshold(Some(90.0), false));
        assert!(
            String::from_utf8(body)
                .unwrap()
                .ends_with("[disk>=90 for 5m|90|false]")
        );
        // A JSON array template is JSON too.
        let t = Target::parse("https://h.example/", Some(r#"["{{value}}"]"#)).unwrap();
        assert_eq!(t.body(&threshold(Some(93.5), false)).0, "application/json");
    }

    /// The templates the README shows, each rendered as its service reads it.
    #[test]
    fn the_readme_templates_work() {
        let offline = Notice {
            message: "Web \"1\" is offline".to_owned(),
            ..notice(Event::Offline)
        };
        let render = |url: &str, template: &str| {
            let t = Target::parse(url, Some(template)).unwrap();
            assert!(!t.redacted().contains("TOKEN"), "{}", t.redacted());
            t.body(&offline)
        };
        let (content_type, body) = render("https://ntfy.sh/mytopic", "{{message}}");
        assert_eq!(
            (content_type, body.as_slice()),
            ("text/plain; charset=utf-8", offline.message.as_bytes())
        );

        let (content_type, body) = render(
            "https://gotify.example/message?token=APPTOKEN",
            r#"{"title": "vstats: {{event}}", "message": "{{message}}", "priority": 5}"#,
        );
        assert_eq!(content_type, "application/json");
        assert_eq!(
            json(&body),
            serde_json::json!({"title": "vstats: offline", "message": offline.message, "priority": 5})
        );

        let (_, body) = render(
            "https://discord.com/api/webhooks/ID/TOKEN",
            r#"{"content": "{{message}}"}"#,
        );
        assert_eq!(json(&body), serde_json::json!({"content": offline.message}));

        let (_, body) = render(
            "https://hooks.slack.com/services/T/B/X",
            r#"{"text": "{{message}}"}"#,
        );
        assert_eq!(json(&body), serde_json::json!({"text": offline.message}));

        let (_, body) = render(
            "https://api.telegram.org/botTOKEN/sendMessage",
            r#"{"chat_id": "123456789", "text": "{{message}}"}"#,
        );
        assert_eq!(
            json(&body),
            serde_json::json!({"chat_id": "123456789", "text": offline.message})
        );
    }

    #[test]
    fn the_host_header_has_the_port_only_when_not_the_default() {
        assert_eq!(target("http://[::1]:8080/hook").host_header(), "[::1]:8080");
        assert_eq!(target("https://h.example:443/").host_header(), "h.example");
        assert_eq!(
            target("http://h.example:443/").host_header(),
            "h.example:443"
        );
    }
}
