//! Agent configuration from flags and `VSTATS_*` environment variables.
//! A flag wins over its variable; a wrong flag or value is a [`ConfigError`]
//! that the binary turns into exit code 2.

use super::collect::Paths;
use crate::url::{Authority, AuthorityError, authority};
use crate::{LOG_LEVELS, parse_log_level};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use tungstenite::http::Uri;
use tungstenite::http::uri::InvalidUri;

pub const USAGE: &str = "\
vstats-agent: stream this host's metrics to a vstats relay or a vStats server

Usage: vstats-agent --server URL --token TOKEN [options]
       vstats-agent --protocol vstats --server URL --server-id ID --token TOKEN
       vstats-agent --once [options]

Options (each also read from the environment variable shown):
  -s, --server URL          relay: wss://host:3001 (the agent appends /ws/agent)
                            or a full ws:// or wss:// URL; vStats: its
                            dashboard URL, http(s)://host:port   [VSTATS_SERVER]
  -t, --token TOKEN         agent token issued by the relay (or vStats)
                                                                 [VSTATS_TOKEN]
      --token-file FILE     read the token from FILE (keeps it out of ps)
                                                                 [VSTATS_TOKEN_FILE]
      --token-in-query      also send the token as ?token= in the URL, for a
                            server that reads only that (by default it goes
                            only in the Authorization header, which proxies
                            do not log)                  [VSTATS_TOKEN_IN_QUERY=1]
      --full-samples        send every sample whole, for a server that does
                            not take lean patches (by default only the first
                            on a connection is whole)      [VSTATS_FULL_SAMPLES=1]
      --protocol NAME       relay (default): a vstats relay; vstats: a vStats
                            server (zsai001/vstats)           [VSTATS_PROTOCOL]
      --server-id ID        this host's server id in vStats (with --protocol
                            vstats)                          [VSTATS_SERVER_ID]
      --ca-file PEM         also trust this CA (a private relay certificate);
                            Mozilla's roots are always trusted   [VSTATS_CA_FILE]
  -i, --interval SECONDS    seconds between samples, 0.1-3600 (default 1)
                                                                 [VSTATS_INTERVAL]
      --net-interfaces A,B  interfaces counted in network totals (default:
                            those backed by a device)            [VSTATS_NET_INTERFACES]
      --path-procfs DIR     where the host's /proc is (default /proc)
                                                                 [VSTATS_PATH_PROCFS]
      --path-sysfs DIR      where the host's /sys is (default /sys)
                                                                 [VSTATS_PATH_SYSFS]
      --path-rootfs DIR     where the host's / is (default /)    [VSTATS_PATH_ROOTFS]
      --once                print one sample's data as JSON and exit
      --log-level LEVEL     error, warn, info, debug or trace (default info)
                                                                 [VSTATS_LOG_LEVEL]
  -h, --help                print this help
  -V, --version             print the version
";

/// A wrong flag or value, worded for the person who typed it; the binary
/// exits with code 2 on it.
#[derive(Debug)]
pub enum ConfigError {
    /// The arguments do not parse: an unknown flag, a flag without its
    /// value, text that is not UTF-8.
    Args(lexopt::Error),
    /// `--interval` is not a number.
    IntervalNotANumber(String),
    /// `--interval` is outside 0.1 to 3600 seconds.
    IntervalOutOfRange(String),
    /// `--log-level` names no level.
    LogLevel(String),
    /// Streaming, but no `--server`.
    NoServer,
    /// `--server` does not parse as a URL.
    NotAUrl { url: String, source: InvalidUri },
    /// `--server` is a URL, but not `ws://` or `wss://`.
    NotWebSocket(String),
    /// `--server` has no host.
    NoHost(String),
    /// `--server` has a host that is neither a DNS name nor an IP address
    /// (which the `http` crate's lenient URL parser lets through).
    BadHost(String),
    /// `--server` has a port that is not a number from 1 to 65535.
    BadPort(String),
    /// `--protocol vstats`, but `--server` is not an `http(s)://` or
    /// `ws(s)://` URL.
    NotDashboardUrl(String),
    /// `--protocol` names no protocol.
    Protocol(String),
    /// `--protocol vstats` without `--server-id`.
    NoServerId,
    /// `--server-id` without `--protocol vstats`: our relay knows a host by
    /// its token alone.
    ServerIdWithoutVstats,
    /// `--token-in-query` with `--protocol vstats`, whose token goes in the
    /// `auth` frame and never in the URL.
    TokenInQueryWithVstats,
    /// `--protocol vstats` in a build without the `vstats-compat` feature.
    VstatsNotBuilt,
    /// `--server` has user information (`user:password@`), likely the
    /// token; the message does not repeat it.
    CredentialsInUrl,
    /// `--token-file` could not be read.
    TokenFile { path: String, source: io::Error },
    /// Streaming, but neither `--token` nor `--token-file`.
    NoToken,
    /// The token is blank.
    EmptyToken,
    /// The token has a character an HTTP header cannot carry (a space, a
    /// control character, non-ASCII): it could not be sent.
    TokenNotPrintable,
    /// An on/off variable (`VSTATS_TOKEN_IN_QUERY`, `VSTATS_FULL_SAMPLES`)
    /// is neither a yes nor a no.
    NotASwitch {
        variable: &'static str,
        text: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Args(e) => write!(f, "{e}"),
            ConfigError::IntervalNotANumber(text) => {
                write!(f, "--interval: '{text}' is not a number of seconds")
            }
            ConfigError::IntervalOutOfRange(text) => write!(
                f,
                "--interval: {text} is out of range (0.1 to 3600 seconds)"
            ),
            ConfigError::LogLevel(text) => {
                write!(f, "--log-level: '{text}' is not one of {LOG_LEVELS}")
            }
            ConfigError::NoServer => {
                f.write_str("no relay given: pass --server wss://HOST:3001 (or set VSTATS_SERVER)")
            }
            ConfigError::NotAUrl { url, source } => {
                write!(f, "--server: '{url}' is not a URL: {source}")
            }
            ConfigError::NotWebSocket(url) => write!(
                f,
                "--server: '{url}': the URL must start with ws:// or wss://"
            ),
            ConfigError::NoHost(url) => write!(f, "--server: '{url}' has no host"),
            ConfigError::BadHost(url) => write!(
                f,
                "--server: '{url}': the host is not a DNS name or an IP address"
            ),
            ConfigError::BadPort(url) => write!(
                f,
                "--server: '{url}': the port is not a number from 1 to 65535"
            ),
            ConfigError::NotDashboardUrl(url) => write!(
                f,
                "--server: '{url}': a vStats dashboard URL starts with http://, https://, ws:// or wss://"
            ),
            ConfigError::Protocol(text) => {
                write!(f, "--protocol: '{text}' is not relay or vstats")
            }
            ConfigError::NoServerId => f.write_str(
                "--protocol vstats needs --server-id (or VSTATS_SERVER_ID): the id vStats gave this host",
            ),
            ConfigError::ServerIdWithoutVstats => f.write_str(
                "--server-id is for --protocol vstats; a vstats relay knows the host by its token",
            ),
            ConfigError::TokenInQueryWithVstats => f.write_str(
                "--token-in-query: with --protocol vstats the token goes in the auth frame, never in the URL",
            ),
            ConfigError::VstatsNotBuilt => f.write_str(
                "--protocol vstats: this vstats-agent was built without it (cargo feature vstats-compat; the release builds have it)",
            ),
            ConfigError::CredentialsInUrl => {
                f.write_str("--server: put the token in --token, not in the URL")
            }
            ConfigError::TokenFile { path, source } => {
                write!(f, "--token-file: cannot read {path}: {source}")
            }
            ConfigError::NoToken => {
                f.write_str("no token given: pass --token or --token-file (or set VSTATS_TOKEN)")
            }
            ConfigError::EmptyToken => f.write_str("the token is empty"),
            ConfigError::TokenNotPrintable => f.write_str(
                "the token may hold only printable ASCII without spaces, as the relay issues it",
            ),
            ConfigError::NotASwitch { variable, text } => write!(
                f,
                "{variable}: '{text}' is not 1 or 0 (true/false, yes/no, on/off)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Args(e) => Some(e),
            ConfigError::NotAUrl { source, .. } => Some(source),
            ConfigError::TokenFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<lexopt::Error> for ConfigError {
    fn from(e: lexopt::Error) -> Self {
        ConfigError::Args(e)
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Stream to the relay until SIGTERM or SIGINT.
    Run(Config, RelayTarget),
    /// Print one sample and exit.
    Once(Config),
    Help,
    Version,
}

/// Settings shared by streaming and `--once`.
#[derive(Debug, PartialEq)]
pub struct Config {
    pub interval: Duration,
    pub counted_interfaces: Option<Vec<String>>,
    pub paths: Paths,
    pub log_level: log::LevelFilter,
}

/// Which kind of server the agent reports to, and so what it speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Protocol {
    /// A vstats relay (docs/PROTOCOL.md): the token in the upgrade request,
    /// then lean samples.
    Relay,
    /// A vStats server (zsai001/vstats): an `auth` frame with the server id
    /// and token, then whole samples in vStats' own field names
    /// (docs/PROTOCOL.md, "vStats compatibility"). Only in a build with the
    /// `vstats-compat` feature, as the release builds are.
    #[cfg(feature = "vstats-compat")]
    Vstats { server_id: String },
}

/// Where to stream and how to prove who we are.
#[derive(PartialEq)]
pub struct RelayTarget {
    pub endpoint: Endpoint,
    pub protocol: Protocol,
    pub token: String,
    pub ca_file: Option<PathBuf>,
    /// Also send the token as the `token` query parameter, not only in the
    /// `Authorization` header.
    pub token_in_query: bool,
    /// Send a whole sample every time, never a `patch`: for a server that
    /// follows the seed's protocol only.
    pub full_samples: bool,
}

impl RelayTarget {
    /// The URL to request. The token stays out of it unless asked for:
    /// reverse proxies log request targets, not `Authorization` headers.
    pub fn request_url(&self) -> String {
        if self.token_in_query {
            self.endpoint.url_with_token(&self.token)
        } else {
            self.endpoint.to_string()
        }
    }
}

impl fmt::Debug for RelayTarget {
    // The token never reaches a log, not even through a Debug print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayTarget")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("token", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("token_in_query", &self.token_in_query)
            .field("full_samples", &self.full_samples)
            .finish()
    }
}

/// A relay's `/ws/agent` URL, without the token.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, e.g. `/ws/agent`.
    pub path_and_query: String,
}

impl Endpoint {
    /// Accepts `wss://host[:port]` (path `/ws/agent` appended) or a full
    /// `ws://`/`wss://` URL with its own path.
    pub fn parse(text: &str) -> Result<Endpoint, ConfigError> {
        Endpoint::parse_as(text, false)
    }

    /// A vStats dashboard URL, as their agent's `dashboard_url` holds it:
    /// `http://` becomes `ws://`, `https://` `wss://` (`ws(s)://` taken as
    /// is), and `/ws/agent` goes after its path, as their agent puts it,
    /// unless the path already ends so.
    pub fn parse_vstats(text: &str) -> Result<Endpoint, ConfigError> {
        Endpoint::parse_as(text, true)
    }

    fn parse_as(text: &str, vstats: bool) -> Result<Endpoint, ConfigError> {
        // User information may be the token: checked first, so that no
        // message repeats the URL that holds it.
        if crate::url::has_credentials(text) {
            return Err(ConfigError::CredentialsInUrl);
        }
        let uri: Uri = text.parse().map_err(|source| ConfigError::NotAUrl {
            url: text.to_owned(),
            source,
        })?;
        let tls = match (uri.scheme_str(), vstats) {
            (Some("wss"), _) | (Some("https"), true) => true,
            (Some("ws"), _) | (Some("http"), true) => false,
            (_, false) => return Err(ConfigError::NotWebSocket(text.to_owned())),
            (_, true) => return Err(ConfigError::NotDashboardUrl(text.to_owned())),
        };
        let Authority { host, port, .. } = authority(&uri).map_err(|e| match e {
            AuthorityError::NoHost => ConfigError::NoHost(text.to_owned()),
            AuthorityError::BadHost => ConfigError::BadHost(text.to_owned()),
            AuthorityError::BadPort => ConfigError::BadPort(text.to_owned()),
        })?;
        let given = uri.path_and_query();
        let path_and_query = if vstats {
            let path = given.map_or("", |p| p.path()).trim_end_matches('/');
            let agent = if path.ends_with("/ws/agent") {
                ""
            } else {
                "/ws/agent"
            };
            match given.and_then(|p| p.query()) {
                Some(query) => format!("{path}{agent}?{query}"),
                None => format!("{path}{agent}"),
            }
        } else {
            match given.map(|p| p.as_str()) {
                None | Some("") | Some("/") => "/ws/agent".to_owned(),
                Some(p) => p.to_owned(),
            }
        };
        Ok(Endpoint {
            tls,
            host: host.to_owned(),
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            path_and_query,
        })
    }

    /// The URL to request, with the token as the `token` query parameter.
    pub fn url_with_token(&self, token: &str) -> String {
        let separator = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{self}{separator}token={}",
            percent_encode_query_value(token)
        )
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        let host = &self.host;
        if host.contains(':') {
            write!(
                f,
                "{scheme}://[{host}]:{}{}",
                self.port, self.path_and_query
            )
        } else {
            write!(f, "{scheme}://{host}:{}{}", self.port, self.path_and_query)
        }
    }
}

fn percent_encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Raw settings before validation; each starts from its environment variable.
#[derive(Default)]
struct Raw {
    server: Option<String>,
    token: Option<String>,
    token_file: Option<String>,
    ca_file: Option<String>,
    interval: Option<String>,
    net_interfaces: Option<String>,
    procfs: Option<String>,
    sysfs: Option<String>,
    rootfs: Option<String>,
    log_level: Option<String>,
    token_in_query: Option<String>,
    full_samples: Option<String>,
    protocol: Option<String>,
    server_id: Option<String>,
}

/// Parses the arguments (without the program name) against an environment.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, ConfigError> {
    use lexopt::prelude::*;
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let mut raw = Raw {
        server: env("VSTATS_SERVER"),
        token: env("VSTATS_TOKEN"),
        token_file: env("VSTATS_TOKEN_FILE"),
        ca_file: env("VSTATS_CA_FILE"),
        interval: env("VSTATS_INTERVAL"),
        net_interfaces: env("VSTATS_NET_INTERFACES"),
        procfs: env("VSTATS_PATH_PROCFS"),
        sysfs: env("VSTATS_PATH_SYSFS"),
        rootfs: env("VSTATS_PATH_ROOTFS"),
        log_level: env("VSTATS_LOG_LEVEL"),
        token_in_query: env("VSTATS_TOKEN_IN_QUERY"),
        full_samples: env("VSTATS_FULL_SAMPLES"),
        protocol: env("VSTATS_PROTOCOL"),
        server_id: env("VSTATS_SERVER_ID"),
    };
    let mut once = false;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        let slot = match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("once") => {
                once = true;
                continue;
            }
            Long("token-in-query") => {
                raw.token_in_query = Some("1".to_owned());
                continue;
            }
            Long("full-samples") => {
                raw.full_samples = Some("1".to_owned());
                continue;
            }
            Short('s') | Long("server") => &mut raw.server,
            Short('t') | Long("token") => &mut raw.token,
            Long("token-file") => &mut raw.token_file,
            Long("ca-file") => &mut raw.ca_file,
            Short('i') | Long("interval") => &mut raw.interval,
            Long("net-interfaces") => &mut raw.net_interfaces,
            Long("path-procfs") => &mut raw.procfs,
            Long("path-sysfs") => &mut raw.sysfs,
            Long("path-rootfs") => &mut raw.rootfs,
            Long("log-level") => &mut raw.log_level,
            Long("protocol") => &mut raw.protocol,
            Long("server-id") => &mut raw.server_id,
            _ => return Err(arg.unexpected().into()),
        };
        *slot = Some(parser.value()?.string()?);
    }
    let config = validate_common(&raw)?;
    if once {
        return Ok(Command::Once(config));
    }
    let relay = validate_relay(raw)?;
    Ok(Command::Run(config, relay))
}

fn validate_common(raw: &Raw) -> Result<Config, ConfigError> {
    let interval = match &raw.interval {
        None => Duration::from_secs(1),
        Some(text) => parse_interval(text)?,
    };
    let counted_interfaces = raw.net_interfaces.as_ref().map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let defaults = Paths::default();
    let path =
        |given: &Option<String>, default: PathBuf| given.as_ref().map_or(default, PathBuf::from);
    let log_level = parse_log_level(raw.log_level.as_deref())
        .ok_or_else(|| ConfigError::LogLevel(raw.log_level.clone().unwrap_or_default()))?;
    Ok(Config {
        interval,
        counted_interfaces,
        paths: Paths {
            procfs: path(&raw.procfs, defaults.procfs),
            sysfs: path(&raw.sysfs, defaults.sysfs),
            rootfs: path(&raw.rootfs, defaults.rootfs),
        },
        log_level,
    })
}

fn parse_interval(text: &str) -> Result<Duration, ConfigError> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| ConfigError::IntervalNotANumber(text.to_owned()))?;
    if !(0.1..=3600.0).contains(&seconds) {
        return Err(ConfigError::IntervalOutOfRange(text.to_owned()));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn validate_relay(raw: Raw) -> Result<RelayTarget, ConfigError> {
    let protocol = validate_protocol(raw.protocol.as_deref(), raw.server_id.as_deref())?;
    let vstats = protocol != Protocol::Relay;
    let server = raw.server.ok_or(ConfigError::NoServer)?;
    let endpoint = if vstats {
        Endpoint::parse_vstats(&server)?
    } else {
        Endpoint::parse(&server)?
    };
    let token = match (raw.token, raw.token_file) {
        (Some(token), _) => token,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::TokenFile { path, source })?,
        (None, None) => return Err(ConfigError::NoToken),
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(ConfigError::EmptyToken);
    }
    // It goes in an `Authorization` header, which takes nothing else (a
    // vStats token goes in a JSON string, which takes anything).
    if !vstats && !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(ConfigError::TokenNotPrintable);
    }
    let token_in_query = switch("VSTATS_TOKEN_IN_QUERY", raw.token_in_query.as_deref())?;
    if vstats && token_in_query {
        return Err(ConfigError::TokenInQueryWithVstats);
    }
    Ok(RelayTarget {
        endpoint,
        protocol,
        token,
        ca_file: raw.ca_file.map(PathBuf::from),
        token_in_query,
        full_samples: switch("VSTATS_FULL_SAMPLES", raw.full_samples.as_deref())?,
    })
}

/// `--protocol` and `--server-id`, which come together or not at all.
fn validate_protocol(name: Option<&str>, server_id: Option<&str>) -> Result<Protocol, ConfigError> {
    let server_id = server_id.map(str::trim).filter(|id| !id.is_empty());
    match name.map(str::trim) {
        None | Some("relay") if server_id.is_some() => Err(ConfigError::ServerIdWithoutVstats),
        None | Some("relay") => Ok(Protocol::Relay),
        Some("vstats") => vstats(server_id),
        Some(other) => Err(ConfigError::Protocol(other.to_owned())),
    }
}

#[cfg(feature = "vstats-compat")]
fn vstats(server_id: Option<&str>) -> Result<Protocol, ConfigError> {
    let server_id = server_id.ok_or(ConfigError::NoServerId)?;
    Ok(Protocol::Vstats {
        server_id: server_id.to_owned(),
    })
}

#[cfg(not(feature = "vstats-compat"))]
fn vstats(_server_id: Option<&str>) -> Result<Protocol, ConfigError> {
    Err(ConfigError::VstatsNotBuilt)
}

/// An on/off setting: off unless given; a flag gives it as `1`.
fn switch(variable: &'static str, given: Option<&str>) -> Result<bool, ConfigError> {
    match given.map(str::trim) {
        None => Ok(false),
        Some(text) => parse_switch(text).ok_or_else(|| ConfigError::NotASwitch {
            variable,
            text: text.to_owned(),
        }),
    }
}

/// An on/off environment variable, in the spellings systemd and shells use.
fn parse_switch(text: &str) -> Option<bool> {
    const ON: [&str; 4] = ["1", "true", "yes", "on"];
    const OFF: [&str; 4] = ["0", "false", "no", "off"];
    if ON.iter().any(|word| text.eq_ignore_ascii_case(word)) {
        Some(true)
    } else if OFF.iter().any(|word| text.eq_ignore_ascii_case(word)) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, ConfigError> {
        parse(args.iter().map(OsString::from), crate::test_env(env))
    }

    fn run_config(args: &[&str], env: &[(&str, &str)]) -> (Config, RelayTarget) {
        match parse_with(args, env) {
            Ok(Command::Run(config, relay)) => (config, relay),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn bare_server_gets_the_agent_path() {
        let endpoint = Endpoint::parse("wss://relay.example:3001").unwrap();
        assert_eq!(endpoint.to_string(), "wss://relay.example:3001/ws/agent");
        assert_eq!(
            endpoint.url_with_token("a+b/c"),
            "wss://relay.example:3001/ws/agent?token=a%2Bb%2Fc"
        );
    }

    #[test]
    fn full_url_keeps_its_path_and_query() {
        let endpoint = Endpoint::parse("ws://[::1]:8080/vstats/ws/agent?x=1").unwrap();
        assert_eq!(endpoint.host, "::1");
        assert!(!endpoint.tls);
        assert_eq!(endpoint.to_string(), "ws://[::1]:8080/vstats/ws/agent?x=1");
        assert_eq!(
            endpoint.url_with_token("t"),
            "ws://[::1]:8080/vstats/ws/agent?x=1&token=t"
        );
        assert_eq!(Endpoint::parse("wss://h").unwrap().port, 443);
    }

    // fuzz/regressions/agent_config/empty-brackets-host: `ws://[]` was taken
    // as the host "", and the agent asked for `ws://:80/...` forever.
    #[test]
    fn a_host_of_empty_brackets_is_no_host() {
        for url in ["ws://[]", "ws://[]:80/ws/agent", "ws://[]i:/x"] {
            let err = Endpoint::parse(url).unwrap_err().to_string();
            assert!(err.contains("has no host"), "{url}: {err}");
        }
    }

    // fuzz/regressions/agent_config/host-not-a-name: `ws://;[::1)...]:80800x`
    // passed the URL parser as host ";[" on port 80.
    #[test]
    fn a_host_that_is_no_name_or_address_is_refused() {
        for url in [
            "ws://;[::1))]:80800vstatagent?x=1",
            "ws://a b:1",
            "wss://-/x",
        ] {
            let err = Endpoint::parse(url)
                .map(|e| e.host)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("the host is not") || err.contains("not a URL"),
                "{url}: {err}"
            );
        }
        for (url, host) in [
            ("ws://relay_1:3001", "relay_1"),
            ("ws://10.0.0.1", "10.0.0.1"),
        ] {
            assert_eq!(Endpoint::parse(url).unwrap().host, host);
        }
    }

    // A port out of range was read as no port, and the agent went to 80.
    #[test]
    fn a_port_that_is_not_a_number_from_1_to_65535_is_refused() {
        for url in ["ws://relay:80800", "ws://relay:0/ws/agent", "wss://[::1]:x"] {
            let err = Endpoint::parse(url)
                .map(|e| e.port)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("port") || err.contains("not a URL"),
                "{url}: {err}"
            );
        }
        assert_eq!(Endpoint::parse("ws://relay:").unwrap().port, 80);
        assert_eq!(Endpoint::parse("wss://[::1]:65535").unwrap().port, 65535);
    }

    #[test]
    fn wrong_urls_are_refused_with_the_reason() {
        for (url, reason) in [
            ("https://h:3001", "ws:// or wss://"),
            ("relay:3001", "ws:// or wss://"),
            ("wss://user:pw@h:3001", "--token"),
            ("ws://tok@h:3001/ws/agent", "--token"),
            ("tok@relay:3001", "--token"),
            ("ws:// ", "not a URL"),
        ] {
            let err = Endpoint::parse(url).unwrap_err().to_string();
            assert!(err.starts_with("--server: "), "{url}: {err}");
            assert!(err.contains(reason), "{url}: {err}");
        }
        // What may be a token is not repeated.
        let err = Endpoint::parse("wss://secret@h").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        // An @ past the host is the relay's business.
        assert!(Endpoint::parse("ws://h:3001/a@b?c=d@e").is_ok());
    }

    #[test]
    fn flags_win_over_environment() {
        let (config, relay) = run_config(
            &["--server", "ws://127.0.0.1:9/", "-i", "2.5"],
            &[
                ("VSTATS_SERVER", "wss://ignored"),
                ("VSTATS_TOKEN", "secret"),
                ("VSTATS_INTERVAL", "10"),
                ("VSTATS_NET_INTERFACES", "eth0, wlan0,"),
            ],
        );
        assert_eq!(relay.endpoint.to_string(), "ws://127.0.0.1:9/ws/agent");
        assert_eq!(relay.token, "secret");
        assert_eq!(config.interval, Duration::from_millis(2500));
        assert_eq!(
            config.counted_interfaces,
            Some(vec!["eth0".to_owned(), "wlan0".to_owned()])
        );
        assert!(!format!("{relay:?}").contains("secret"));
    }

    #[test]
    fn the_token_goes_in_the_url_only_when_asked() {
        let server = ("VSTATS_SERVER", "ws://h:1");
        let token = ("VSTATS_TOKEN", "a+b");
        let (_, relay) = run_config(&[], &[server, token]);
        assert!(!relay.token_in_query);
        assert_eq!(relay.request_url(), "ws://h:1/ws/agent");
        let (_, relay) = run_config(&["--token-in-query"], &[server, token]);
        assert_eq!(relay.request_url(), "ws://h:1/ws/agent?token=a%2Bb");
        for (value, expected) in [("1", true), ("Yes", true), ("0", false), ("off", false)] {
            let (_, relay) = run_config(&[], &[server, token, ("VSTATS_TOKEN_IN_QUERY", value)]);
            assert_eq!(relay.token_in_query, expected, "{value}");
        }
        // The flag can only turn it on.
        let off = ("VSTATS_TOKEN_IN_QUERY", "0");
        let (_, relay) = run_config(&["--token-in-query"], &[server, token, off]);
        assert!(relay.token_in_query);
        let err = parse_with(&[], &[server, token, ("VSTATS_TOKEN_IN_QUERY", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("VSTATS_TOKEN_IN_QUERY: 'maybe'"), "{err}");
    }

    #[test]
    fn whole_samples_only_when_asked() {
        let server = ("VSTATS_SERVER", "ws://h:1");
        let token = ("VSTATS_TOKEN", "t");
        assert!(!run_config(&[], &[server, token]).1.full_samples);
        assert!(
            run_config(&["--full-samples"], &[server, token])
                .1
                .full_samples
        );
        let on = ("VSTATS_FULL_SAMPLES", "true");
        assert!(run_config(&[], &[server, token, on]).1.full_samples);
        let err = parse_with(&[], &[server, token, ("VSTATS_FULL_SAMPLES", "2")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("VSTATS_FULL_SAMPLES: '2'"), "{err}");
    }

    fn relay_of(args: &[&str], env: &[(&str, &str)]) -> RelayTarget {
        let (_, relay) = run_config(args, env);
        relay
    }

    #[test]
    fn the_relay_protocol_is_the_default() {
        let relay = relay_of(&["-s", "ws://h:1", "-t", "t"], &[]);
        assert_eq!(relay.protocol, Protocol::Relay);
        let relay = relay_of(&["-s", "ws://h:1", "-t", "t", "--protocol", "relay"], &[]);
        assert_eq!(relay.protocol, Protocol::Relay);
    }

    #[cfg(feature = "vstats-compat")]
    #[test]
    fn vstats_takes_a_server_id_from_a_flag_or_the_environment() {
        let vstats = Protocol::Vstats {
            server_id: "srv-1".to_owned(),
        };
        let relay = relay_of(
            &["--protocol", "vstats", "--server-id", "srv-1"],
            &[("VSTATS_SERVER", "http://dash:3001"), ("VSTATS_TOKEN", "t")],
        );
        assert_eq!(relay.protocol, vstats);
        let relay = relay_of(
            &[],
            &[
                ("VSTATS_PROTOCOL", "vstats"),
                ("VSTATS_SERVER_ID", "srv-1"),
                ("VSTATS_SERVER", "http://dash:3001"),
                ("VSTATS_TOKEN", "t"),
            ],
        );
        assert_eq!(relay.protocol, vstats);
        assert_eq!(relay.request_url(), "ws://dash:3001/ws/agent");
        assert!(format!("{relay:?}").contains("srv-1"));
        // The token goes in a JSON string: a space is no problem there.
        let relay = relay_of(
            &[
                "--protocol",
                "vstats",
                "--server-id",
                "s",
                "-s",
                "http://d",
                "-t",
                "a b",
            ],
            &[],
        );
        assert_eq!(relay.token, "a b");
    }

    #[test]
    fn a_dashboard_url_becomes_its_agent_websocket() {
        for (dashboard, agent) in [
            (
                "http://dash.example:3001",
                "ws://dash.example:3001/ws/agent",
            ),
            (
                "http://dash.example:3001/",
                "ws://dash.example:3001/ws/agent",
            ),
            ("https://dash.example", "wss://dash.example:443/ws/agent"),
            (
                "https://example.org/vstats/",
                "wss://example.org:443/vstats/ws/agent",
            ),
            ("ws://10.0.0.2:3001", "ws://10.0.0.2:3001/ws/agent"),
            (
                "wss://dash.example/ws/agent",
                "wss://dash.example:443/ws/agent",
            ),
            ("http://[::1]:3001/x?y=1", "ws://[::1]:3001/x/ws/agent?y=1"),
        ] {
            let endpoint = Endpoint::parse_vstats(dashboard).unwrap();
            assert_eq!(endpoint.to_string(), agent, "{dashboard}");
            // What the fuzzer checks: the URL parses back the same.
            assert_eq!(Endpoint::parse(agent).unwrap(), endpoint, "{agent}");
        }
        assert_eq!(Endpoint::parse_vstats("http://d").unwrap().port, 80);
        for (url, reason) in [
            ("ftp://dash", "http://, https://, ws:// or wss://"),
            ("dash:3001", "http://, https://, ws:// or wss://"),
            ("http://tok@dash", "--token"),
        ] {
            let err = Endpoint::parse_vstats(url).unwrap_err().to_string();
            assert!(err.contains(reason), "{url}: {err}");
        }
    }

    #[test]
    fn protocol_mistakes_are_named() {
        let server = ("VSTATS_SERVER", "http://dash:3001");
        let token = ("VSTATS_TOKEN", "t");
        for (args, env, expected) in [
            (
                &["--server-id", "srv-1"][..],
                &[server, token][..],
                "--server-id is for --protocol vstats",
            ),
            (
                &["--protocol", "relay", "--server-id", "srv-1"],
                &[server, token],
                "--server-id is for",
            ),
            (
                &[],
                &[server, token, ("VSTATS_SERVER_ID", "srv-1")],
                "--server-id is for",
            ),
            (
                &["--protocol", "nezha"],
                &[server, token],
                "'nezha' is not relay or vstats",
            ),
            // Without vstats, an http:// URL is still refused.
            (&[], &[server, token], "ws:// or wss://"),
        ] {
            let err = parse_with(args, env).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{args:?} {env:?}: {err}"
            );
        }
    }

    #[cfg(feature = "vstats-compat")]
    #[test]
    fn vstats_mistakes_are_named() {
        let server = ("VSTATS_SERVER", "http://dash:3001");
        let token = ("VSTATS_TOKEN", "t");
        for (args, env, expected) in [
            (
                &["--protocol", "vstats"][..],
                &[server, token][..],
                "needs --server-id",
            ),
            (
                &["--protocol", "vstats", "--server-id", " "],
                &[server, token],
                "needs --server-id",
            ),
            (
                &[],
                &[server, token, ("VSTATS_PROTOCOL", "vstats")],
                "needs --server-id",
            ),
            (
                &[
                    "--protocol",
                    "vstats",
                    "--server-id",
                    "s",
                    "--token-in-query",
                ],
                &[server, token],
                "never in the URL",
            ),
        ] {
            let err = parse_with(args, env).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{args:?} {env:?}: {err}"
            );
        }
    }

    #[cfg(not(feature = "vstats-compat"))]
    #[test]
    fn a_build_without_vstats_says_so() {
        let args = [
            "--protocol",
            "vstats",
            "--server-id",
            "s",
            "-s",
            "http://d",
            "-t",
            "t",
        ];
        let err = parse_with(&args, &[]).unwrap_err().to_string();
        assert!(err.contains("feature vstats-compat"), "{err}");
    }

    #[test]
    fn once_needs_no_relay() {
        let Ok(Command::Once(config)) = parse_with(&["--once", "--path-procfs", "/x/proc"], &[])
        else {
            panic!("expected Once");
        };
        assert_eq!(config.paths.procfs, PathBuf::from("/x/proc"));
        assert_eq!(config.paths.sysfs, PathBuf::from("/sys"));
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!("vstats-token-{}", std::process::id()));
        std::fs::write(&path, "tok\n").unwrap();
        let (_, relay) = run_config(
            &["-s", "ws://h:1", "--token-file", path.to_str().unwrap()],
            &[],
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(relay.token, "tok");
    }

    #[test]
    fn mistakes_are_named() {
        for (args, expected) in [
            (&["--bogus"][..], "--bogus"),
            (&["--interval"][..], "--interval"),
            (&["--interval", "0"][..], "out of range"),
            (&["--interval", "soon"][..], "not a number"),
            (&["--log-level", "loud"][..], "--log-level"),
            (&["--token", "t"][..], "no relay given"),
            (&["--server", "ws://h:1"][..], "no token given"),
            (&["--server", "ws://h:1", "--token", " "][..], "empty"),
            (
                &["--server", "ws://h:1", "--token", "to ken"][..],
                "printable ASCII",
            ),
            (
                &["--server", "ws://h:1", "--token", "tok\u{7}"][..],
                "printable ASCII",
            ),
            (
                &["--server", "ws://h:1", "--token-file", "/nonexistent/t"][..],
                "--token-file: cannot read /nonexistent/t",
            ),
        ] {
            let err = parse_with(args, &[]).unwrap_err();
            assert!(err.to_string().contains(expected), "{args:?}: {err}");
        }
    }
}
