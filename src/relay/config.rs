//! Relay flags and `VSTATS_*` environment variables. A flag wins over its
//! variable; a wrong flag or value is a [`ConfigError`] (exit code 2).

use super::alerts::{DEFAULT_RULES, Rule};
use super::http::is_host_name;
use super::notice::Target;
use super::rollup::Retention;
use crate::{LOG_LEVELS, parse_log_level};
use std::ffi::OsString;
use std::fmt;
use std::net::{AddrParseError, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
vstats-relay: admit vstats agents by token and stream their metrics to dashboards

Usage: vstats-relay [options]
       vstats-relay server add|list|remove|rotate-token ...   (see: vstats-relay server --help)
       vstats-relay notify test [options]   send a test notification to each --notify-url

Options (each also read from the environment variable shown):
      --listen ADDR            address to serve on (default 0.0.0.0:3001)   [VSTATS_LISTEN]
      --state FILE             the server registry (default ./vstats-relay.json)
                                                                          [VSTATS_STATE]
      --tls-cert PEM           serve wss:// and https:// with this certificate chain
                                                                          [VSTATS_TLS_CERT]
      --tls-key PEM            ... and this private key; both reloaded on SIGHUP
                                                                          [VSTATS_TLS_KEY]
      --allow-origin ORIGIN    a browser origin besides the relay's own that may open
                               /ws, e.g. https://grafana.lan (repeatable)  [VSTATS_ALLOW_ORIGIN, comma-separated]
      --viewer-token TOKEN     require this token of dashboards (/ws?token=, Bearer), of
                               /api/servers and of /metrics             [VSTATS_VIEWER_TOKEN]
      --allowed-host NAME      without a viewer token, serve the page, /ws, /api and /metrics
                               to requests for this host name too, besides IP addresses
                               and localhost (repeatable)     [VSTATS_ALLOWED_HOSTS, comma-separated]
      --agent-timeout SECONDS  an agent silent this long is offline (default 90)
                                                                          [VSTATS_AGENT_TIMEOUT]
      --agent-max-rate N       samples a second one agent may send; more are dropped and
                               counted (default 20)                      [VSTATS_AGENT_MAX_RATE]
      --max-connections N      refuse connections beyond N (default: what the open-files
                               limit allows)                             [VSTATS_MAX_CONNECTIONS]
      --dist-dir DIR           serve release files: DIR/install.sh at /install.sh and
                               DIR/NAME at /dl/NAME (a LAN's own install source)
                                                                          [VSTATS_DIST_DIR]
      --notify-url URL         POST a notification here when a server goes offline, comes
                               back, or holds a threshold (repeatable)  [VSTATS_NOTIFY_URL, comma-separated]
      --notify-template TEXT   the body for the --notify-url in the same place (one for all
                               if given once): {{message}}, {{event}}, {{server.name}}, ...;
                               'json' for the default JSON body       [VSTATS_NOTIFY_TEMPLATE]
      --notify-after SECONDS   notify a server offline this long (default 60; a shorter
                               absence sends nothing)                   [VSTATS_NOTIFY_AFTER]
      --notify-ca-file PEM     also trust this CA for https:// notification URLs
                                                                          [VSTATS_NOTIFY_CA_FILE]
      --alert RULE             a threshold that notifies, like 'disk>=90 for 5m' (repeatable;
                               'off' for none; default: disk>=90, memory>=90 and cpu>=95,
                               each for 5m)                          [VSTATS_ALERTS, comma-separated]
      --history-db PATH        the history database, SQLite (default: NAME.db beside the
                               --state file NAME.json); 'off' keeps 1 h and 24 h in memory
                                                                          [VSTATS_HISTORY_DB]
      --history-keep STEP=AGE  how long the database keeps each step: 1m=24h, 15m=31d,
                               1h=366d and 1d=731d (the days' traffic) are the defaults
                               (repeatable)           [VSTATS_HISTORY_KEEP, comma-separated]
      --log-level LEVEL        error, warn, info (default), debug or trace [VSTATS_LOG_LEVEL]
  -h, --help                   print this help
  -V, --version                print the version

Signals: SIGHUP reloads the registry and the certificate; SIGTERM and SIGINT close every
connection (1001) and exit 0. The registry file is also re-read within 2 s of a change.
";

/// A wrong flag or value, worded for the person who typed it; the binary
/// exits with code 2 on it.
#[derive(Debug)]
pub enum ConfigError {
    /// The arguments do not parse: an unknown flag, a flag without its
    /// value, text that is not UTF-8.
    Args(lexopt::Error),
    /// `--listen` is not a socket address.
    Listen {
        value: String,
        source: AddrParseError,
    },
    /// Only one of `--tls-cert` and `--tls-key`.
    TlsPair,
    /// An `--allow-origin` that is not `http://` or `https://`.
    Origin(String),
    /// An `--allowed-host` that is not a host name.
    AllowedHost(String),
    /// `--agent-timeout` is not 1 to 86400 seconds.
    AgentTimeout(String),
    /// `--agent-max-rate` is not 1 to 100000 samples a second.
    AgentMaxRate(String),
    /// `--max-connections` is not a positive number.
    MaxConnections(String),
    /// `--log-level` names no level.
    LogLevel(String),
    /// A `--notify-url` or `--notify-template` that does not parse.
    Notify(super::notice::TargetError),
    /// Templates neither one nor one per URL.
    TemplateCount { urls: usize, templates: usize },
    /// `--notify-after` is not 0 to 86400 seconds.
    NotifyAfter(String),
    /// An `--alert` rule that does not parse.
    Alert(super::alerts::RuleError),
    /// `notify` without `test`.
    NotifyCommand,
    /// A `--history-keep` that is not `STEP=AGE` with a known step and an
    /// age of an hour to a hundred years.
    HistoryKeep(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Args(e) => write!(f, "{e}"),
            ConfigError::Listen { value, .. } => write!(
                f,
                "--listen: '{value}' is not an address like 0.0.0.0:3001 or [::]:3001"
            ),
            ConfigError::TlsPair => f.write_str("--tls-cert and --tls-key go together"),
            ConfigError::Origin(origin) => write!(
                f,
                "--allow-origin: '{origin}' is not an origin like https://host[:port]"
            ),
            ConfigError::AllowedHost(host) => write!(
                f,
                "--allowed-host: '{host}' is not a host name like relay.example.com \
                 (no scheme, no port)"
            ),
            ConfigError::AgentTimeout(text) => write!(
                f,
                "--agent-timeout: '{text}' is not a number of seconds from 1 to 86400"
            ),
            ConfigError::AgentMaxRate(text) => write!(
                f,
                "--agent-max-rate: '{text}' is not a number of samples a second from 1 to 100000"
            ),
            ConfigError::MaxConnections(text) => {
                write!(f, "--max-connections: '{text}' is not a positive number")
            }
            ConfigError::LogLevel(text) => {
                write!(f, "--log-level: '{text}' is not one of {LOG_LEVELS}")
            }
            ConfigError::Notify(e) => write!(f, "{e}"),
            ConfigError::TemplateCount { urls, templates } => write!(
                f,
                "--notify-template: {templates} given for {urls} --notify-url; give one for all, \
                 or one per URL in the same order ('json' for the default body)"
            ),
            ConfigError::NotifyAfter(text) => write!(
                f,
                "--notify-after: '{text}' is not a number of seconds from 0 to 86400"
            ),
            ConfigError::Alert(e) => write!(f, "{e}"),
            ConfigError::NotifyCommand => {
                f.write_str("'notify' takes one command: test (vstats-relay notify test)")
            }
            ConfigError::HistoryKeep(text) => write!(
                f,
                "--history-keep: '{text}' is not STEP=AGE with STEP one of 1m, 15m, 1h, 1d \
                 and AGE from 1h to 100y, like 1m=48h or 1h=2y"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Args(e) => Some(e),
            ConfigError::Listen { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<lexopt::Error> for ConfigError {
    fn from(e: lexopt::Error) -> Self {
        ConfigError::Args(e)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub state: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub allowed_origins: Vec<String>,
    /// Host names besides IP literals and `localhost` that may be served
    /// the page, `/ws`, `/api` and `/metrics` without a viewer token.
    pub allowed_hosts: Vec<String>,
    pub viewer_token: Option<String>,
    pub agent_timeout: Duration,
    /// Samples a second one agent may send on average (and at once).
    pub agent_max_rate: f64,
    pub max_connections: Option<usize>,
    pub dist_dir: Option<PathBuf>,
    pub log_level: log::LevelFilter,
    /// Where notifications go; none means they are only logged.
    pub notify: Vec<Target>,
    pub notify_after: Duration,
    pub notify_ca_file: Option<PathBuf>,
    pub alert_rules: Vec<Rule>,
    pub history_db: HistoryDb,
    pub history_keep: Retention,
}

/// Where the history database is.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryDb {
    /// `NAME.db` beside the state file `NAME.json`.
    BesideState,
    At(PathBuf),
    /// None: the last hour and day in memory only.
    Off,
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Serve(Config),
    /// `server ...`: the registry subcommands, with their arguments.
    Registry(Vec<OsString>),
    /// `notify test`, with the relay's configuration.
    NotifyTest(Config),
    Help,
    Version,
}

pub fn parse(
    args: Vec<OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, ConfigError> {
    use lexopt::prelude::*;
    if args.first().is_some_and(|first| first == "server") {
        return Ok(Command::Registry(args[1..].to_vec()));
    }
    if args.first().is_some_and(|first| first == "notify") {
        if args.get(1).is_none_or(|command| command != "test") {
            return Err(ConfigError::NotifyCommand);
        }
        return match parse(args[2..].to_vec(), env)? {
            Command::Serve(config) => Ok(Command::NotifyTest(config)),
            other => Ok(other),
        };
    }
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let mut listen = env("VSTATS_LISTEN");
    let mut state = env("VSTATS_STATE");
    let mut cert = env("VSTATS_TLS_CERT");
    let mut key = env("VSTATS_TLS_KEY");
    let mut origins: Vec<String> = list(env("VSTATS_ALLOW_ORIGIN"));
    let mut allowed_hosts: Vec<String> = list(env("VSTATS_ALLOWED_HOSTS"));
    let mut hosts_from_flags = Vec::new();
    let mut viewer_token = env("VSTATS_VIEWER_TOKEN");
    let mut agent_timeout = env("VSTATS_AGENT_TIMEOUT");
    let mut agent_max_rate = env("VSTATS_AGENT_MAX_RATE");
    let mut max_connections = env("VSTATS_MAX_CONNECTIONS");
    let mut log_level = env("VSTATS_LOG_LEVEL");
    let mut dist_dir = env("VSTATS_DIST_DIR");
    let mut origins_from_flags = Vec::new();
    let mut notify_urls = list(env("VSTATS_NOTIFY_URL"));
    let mut notify_templates: Vec<String> = env("VSTATS_NOTIFY_TEMPLATE").into_iter().collect();
    let mut notify_after = env("VSTATS_NOTIFY_AFTER");
    let mut notify_ca_file = env("VSTATS_NOTIFY_CA_FILE");
    let mut alerts = env("VSTATS_ALERTS").map(|rules| list(Some(rules)));
    let mut history_db = env("VSTATS_HISTORY_DB");
    let mut history_keep = list(env("VSTATS_HISTORY_KEEP"));
    let mut keep_from_flags = Vec::new();
    let (mut urls_from_flags, mut templates_from_flags, mut alerts_from_flags) =
        (Vec::new(), Vec::new(), Vec::new());

    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("allow-origin") => origins_from_flags.push(parser.value()?.string()?),
            Long("allowed-host") => hosts_from_flags.push(parser.value()?.string()?),
            Long("listen") => listen = Some(parser.value()?.string()?),
            Long("state") => state = Some(parser.value()?.string()?),
            Long("tls-cert") => cert = Some(parser.value()?.string()?),
            Long("tls-key") => key = Some(parser.value()?.string()?),
            Long("viewer-token") => viewer_token = Some(parser.value()?.string()?),
            Long("agent-timeout") => agent_timeout = Some(parser.value()?.string()?),
            Long("agent-max-rate") => agent_max_rate = Some(parser.value()?.string()?),
            Long("max-connections") => max_connections = Some(parser.value()?.string()?),
            Long("log-level") => log_level = Some(parser.value()?.string()?),
            Long("dist-dir") => dist_dir = Some(parser.value()?.string()?),
            Long("notify-url") => urls_from_flags.push(parser.value()?.string()?),
            Long("notify-template") => templates_from_flags.push(parser.value()?.string()?),
            Long("notify-after") => notify_after = Some(parser.value()?.string()?),
            Long("notify-ca-file") => notify_ca_file = Some(parser.value()?.string()?),
            Long("alert") => alerts_from_flags.push(parser.value()?.string()?),
            Long("history-db") => history_db = Some(parser.value()?.string()?),
            Long("history-keep") => keep_from_flags.push(parser.value()?.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    // Repeatable flags replace their variable's list; they do not add to it.
    if !origins_from_flags.is_empty() {
        origins = origins_from_flags;
    }
    if !hosts_from_flags.is_empty() {
        allowed_hosts = hosts_from_flags;
    }
    if let Some(host) = allowed_hosts.iter().find(|host| !is_host_name(host)) {
        return Err(ConfigError::AllowedHost(host.clone()));
    }
    // Compared without the dot that may end a fully qualified name.
    for host in &mut allowed_hosts {
        if host.ends_with('.') {
            host.pop();
        }
    }
    if !urls_from_flags.is_empty() {
        notify_urls = urls_from_flags;
    }
    if !templates_from_flags.is_empty() {
        notify_templates = templates_from_flags;
    }
    if !alerts_from_flags.is_empty() {
        alerts = Some(alerts_from_flags);
    }
    if !keep_from_flags.is_empty() {
        history_keep = keep_from_flags;
    }
    let listen = listen.as_deref().unwrap_or("0.0.0.0:3001");
    let listen = listen.parse().map_err(|source| ConfigError::Listen {
        value: listen.to_owned(),
        source,
    })?;
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (None, None) => None,
        _ => return Err(ConfigError::TlsPair),
    };
    if let Some(origin) = origins
        .iter()
        .find(|o| !(o.starts_with("http://") || o.starts_with("https://")))
    {
        return Err(ConfigError::Origin(origin.clone()));
    }
    let agent_timeout = match agent_timeout {
        None => Duration::from_secs(90),
        Some(text) => match text.parse::<f64>() {
            Ok(seconds) if (1.0..=86_400.0).contains(&seconds) => Duration::from_secs_f64(seconds),
            _ => return Err(ConfigError::AgentTimeout(text)),
        },
    };
    let agent_max_rate = match agent_max_rate {
        None => 20.0,
        Some(text) => match text.parse::<f64>() {
            Ok(rate) if (1.0..=100_000.0).contains(&rate) => rate,
            _ => return Err(ConfigError::AgentMaxRate(text)),
        },
    };
    let max_connections = match max_connections {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(ConfigError::MaxConnections(text)),
        },
    };
    let log_level = parse_log_level(log_level.as_deref())
        .ok_or_else(|| ConfigError::LogLevel(log_level.unwrap_or_default()))?;
    let templates = match (notify_urls.len(), notify_templates.len()) {
        (_, 0) => vec![None; notify_urls.len()],
        (urls, 1) => vec![Some(notify_templates[0].as_str()); urls],
        (urls, templates) if urls == templates => {
            notify_templates.iter().map(|t| Some(t.as_str())).collect()
        }
        (urls, templates) => return Err(ConfigError::TemplateCount { urls, templates }),
    };
    let notify = notify_urls
        .iter()
        .zip(templates)
        .map(|(url, template)| Target::parse(url, template))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConfigError::Notify)?;
    let notify_after = match notify_after {
        None => Duration::from_secs(60),
        Some(text) => match text.parse::<f64>() {
            Ok(seconds) if (0.0..=86_400.0).contains(&seconds) => Duration::from_secs_f64(seconds),
            _ => return Err(ConfigError::NotifyAfter(text)),
        },
    };
    let alert_rules = match alerts {
        None => DEFAULT_RULES.iter().map(|rule| Rule::parse(rule)).collect(),
        Some(rules) if rules.iter().any(|rule| rule == "off") => Ok(Vec::new()),
        Some(rules) => rules.iter().map(|rule| Rule::parse(rule)).collect(),
    }
    .map_err(ConfigError::Alert)?;
    let history_db = match history_db.as_deref() {
        None => HistoryDb::BesideState,
        Some("off") => HistoryDb::Off,
        Some(path) => HistoryDb::At(PathBuf::from(path)),
    };
    let mut retention = Retention::default();
    for keep in history_keep {
        let age = |text: &str| {
            humantime::parse_duration(text)
                .ok()
                .filter(|age| (3600..=100 * 366 * 86_400).contains(&age.as_secs()))
        };
        let kept = match keep.split_once('=') {
            Some(("1m", text)) => age(text).map(|age| retention.minutes = age),
            Some(("15m", text)) => age(text).map(|age| retention.quarters = age),
            Some(("1h", text)) => age(text).map(|age| retention.hours = age),
            Some(("1d", text)) => age(text).map(|age| retention.days = age),
            _ => None,
        };
        if kept.is_none() {
            return Err(ConfigError::HistoryKeep(keep));
        }
    }
    Ok(Command::Serve(Config {
        listen,
        state: PathBuf::from(state.unwrap_or_else(|| "./vstats-relay.json".into())),
        tls,
        allowed_origins: origins,
        allowed_hosts,
        viewer_token,
        agent_timeout,
        agent_max_rate,
        max_connections,
        dist_dir: dist_dir.map(PathBuf::from),
        log_level,
        notify,
        notify_after,
        notify_ca_file: notify_ca_file.map(PathBuf::from),
        alert_rules,
        history_db,
        history_keep: retention,
    }))
}

/// A comma-separated variable's items, trimmed, the empty ones left out.
fn list(variable: Option<String>) -> Vec<String> {
    variable
        .iter()
        .flat_map(|list| list.split(','))
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, ConfigError> {
        parse(
            args.iter().map(OsString::from).collect(),
            crate::test_env(env),
        )
    }

    #[test]
    fn defaults() {
        let Ok(Command::Serve(config)) = parse_with(&[], &[]) else {
            panic!()
        };
        assert_eq!(config.listen.to_string(), "0.0.0.0:3001");
        assert_eq!(config.state, PathBuf::from("./vstats-relay.json"));
        assert_eq!(config.agent_timeout, Duration::from_secs(90));
        assert_eq!(config.agent_max_rate, 20.0);
        assert_eq!(config.tls, None);
        assert_eq!(config.history_db, HistoryDb::BesideState);
        assert_eq!(config.history_keep, Retention::default());
    }

    #[test]
    fn the_history_database_and_its_retention_come_from_flags_or_the_environment() {
        let Ok(Command::Serve(config)) = parse_with(
            &[
                "--history-db",
                "/var/lib/h.db",
                "--history-keep",
                "1m=48h",
                "--history-keep",
                "1h=2y",
            ],
            &[("VSTATS_HISTORY_KEEP", "15m=1d")],
        ) else {
            panic!()
        };
        assert_eq!(config.history_db, HistoryDb::At("/var/lib/h.db".into()));
        let keep = config.history_keep;
        assert_eq!(keep.minutes, Duration::from_secs(48 * 3600));
        assert_eq!(keep.hours.as_secs(), 2 * 31_557_600);
        // The flags replace the variable's list.
        assert_eq!(keep.quarters, Retention::default().quarters);
        let Ok(Command::Serve(config)) = parse_with(
            &[],
            &[
                ("VSTATS_HISTORY_DB", "off"),
                ("VSTATS_HISTORY_KEEP", "15m=7d, 1d=30d"),
            ],
        ) else {
            panic!()
        };
        assert_eq!(config.history_db, HistoryDb::Off);
        assert_eq!(
            config.history_keep.quarters,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(config.history_keep.days, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn flags_win_and_origins_repeat() {
        let Ok(Command::Serve(config)) = parse_with(
            &[
                "--listen",
                "127.0.0.1:0",
                "--allow-origin",
                "https://a",
                "--allow-origin",
                "http://b:8",
                "--agent-max-rate",
                "2.5",
            ],
            &[
                ("VSTATS_ALLOW_ORIGIN", "https://env"),
                ("VSTATS_AGENT_TIMEOUT", "5"),
                ("VSTATS_AGENT_MAX_RATE", "50"),
            ],
        ) else {
            panic!()
        };
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.allowed_origins, ["https://a", "http://b:8"]);
        assert_eq!(config.agent_timeout, Duration::from_secs(5));
        assert_eq!(config.agent_max_rate, 2.5);
    }

    #[test]
    fn allowed_hosts_repeat_or_come_from_the_environment_and_are_host_names() {
        let env = [("VSTATS_ALLOWED_HOSTS", "relay.lan, stats.example.com.")];
        let Ok(Command::Serve(config)) = parse_with(&[], &env) else {
            panic!()
        };
        assert_eq!(config.allowed_hosts, ["relay.lan", "stats.example.com"]);
        let flags = ["--allowed-host", "a.lan", "--allowed-host", "b_1.lan"];
        let Ok(Command::Serve(config)) = parse_with(&flags, &env) else {
            panic!()
        };
        assert_eq!(config.allowed_hosts, ["a.lan", "b_1.lan"]);
        // Hostile values: too long in all, a label too long, and many.
        let long = format!("{}.lan", "a.".repeat(130));
        let label = format!("{}.lan", "a".repeat(64));
        for bad in [
            long.as_str(),
            label.as_str(),
            "relay lan",
            "relay.lan/x",
            "é.lan",
        ] {
            assert!(parse_with(&["--allowed-host", bad], &[]).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..5000).map(|i| format!("host{i}.lan")).collect();
        let env = [("VSTATS_ALLOWED_HOSTS", many.join(","))];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let Ok(Command::Serve(config)) = parse_with(&[], &env) else {
            panic!()
        };
        assert_eq!(config.allowed_hosts.len(), 5000);
    }

    #[test]
    fn server_subcommand_passes_through() {
        let Ok(Command::Registry(args)) = parse_with(&["server", "list", "--json"], &[]) else {
            panic!()
        };
        assert_eq!(args, ["list", "--json"]);
    }

    #[test]
    fn notify_urls_templates_and_rules_come_from_flags_or_the_environment() {
        let env = [
            ("VSTATS_NOTIFY_URL", "http://a/, https://b/x?t=1"),
            ("VSTATS_NOTIFY_TEMPLATE", "{{message}}"),
            ("VSTATS_ALERTS", "disk>=80 for 1m, load1>4"),
            ("VSTATS_NOTIFY_AFTER", "0"),
        ];
        let Ok(Command::Serve(config)) = parse_with(&[], &env) else {
            panic!()
        };
        let template = Some("{{message}}");
        assert_eq!(
            config.notify,
            [
                Target::parse("http://a/", template).unwrap(),
                Target::parse("https://b/x?t=1", template).unwrap()
            ]
        );
        let rules: Vec<&str> = config.alert_rules.iter().map(|r| r.text()).collect();
        assert_eq!(rules, ["disk>=80 for 1m", "load1>4"]);
        assert_eq!(config.notify_after, Duration::ZERO);

        let flags = [
            "--notify-url",
            "http://c/",
            "--notify-url",
            "http://d/",
            "--notify-template",
            "json",
            "--notify-template",
            "{{event}}",
            "--alert",
            "off",
        ];
        let Ok(Command::Serve(config)) = parse_with(&flags, &env) else {
            panic!()
        };
        assert_eq!(
            config.notify,
            [
                Target::parse("http://c/", None).unwrap(),
                Target::parse("http://d/", Some("{{event}}")).unwrap()
            ]
        );
        assert!(config.alert_rules.is_empty());

        let Ok(Command::Serve(config)) = parse_with(&[], &[]) else {
            panic!()
        };
        let rules: Vec<&str> = config.alert_rules.iter().map(|r| r.text()).collect();
        assert_eq!(rules, DEFAULT_RULES);
        assert_eq!(config.notify_after, Duration::from_secs(60));
        assert!(config.notify.is_empty());
    }

    #[test]
    fn notify_test_takes_the_relay_flags() {
        let Ok(Command::NotifyTest(config)) =
            parse_with(&["notify", "test", "--notify-url", "http://a/"], &[])
        else {
            panic!()
        };
        assert_eq!(config.notify.len(), 1);
        for args in [&["notify"][..], &["notify", "send"]] {
            let error = parse_with(args, &[]).unwrap_err().to_string();
            assert!(
                error.contains("'notify' takes one command: test"),
                "{error}"
            );
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (args, expected) in [
            (&["--listen", "3001"][..], "--listen"),
            (&["--tls-cert", "c.pem"][..], "go together"),
            (&["--allow-origin", "grafana.lan"][..], "--allow-origin"),
            (
                &["--allowed-host", "http://relay.lan"][..],
                "--allowed-host: 'http://relay.lan'",
            ),
            (&["--allowed-host", "relay.lan:3001"][..], "no port"),
            (&["--allowed-host", ""][..], "--allowed-host: ''"),
            (&["--allowed-host", "a..b"][..], "--allowed-host"),
            (&["--agent-timeout", "0"][..], "--agent-timeout"),
            (&["--agent-max-rate", "0.5"][..], "--agent-max-rate"),
            (&["--agent-max-rate", "fast"][..], "--agent-max-rate"),
            (&["--max-connections", "lots"][..], "--max-connections"),
            (&["--frobnicate"][..], "--frobnicate"),
            (&["--notify-after", "86401"][..], "--notify-after"),
            (&["--alert", "disk=90"][..], "--alert: 'disk=90'"),
            (&["--history-keep", "5m=1d"][..], "--history-keep: '5m=1d'"),
            (
                &["--history-keep", "1m=59m"][..],
                "--history-keep: '1m=59m'",
            ),
            (&["--history-keep", "1h=1000y"][..], "--history-keep"),
            (&["--history-keep", "1h"][..], "--history-keep"),
            (
                &[
                    "--notify-url",
                    "http://a/",
                    "--notify-template",
                    "x",
                    "--notify-template",
                    "y",
                ][..],
                "2 given for 1 --notify-url",
            ),
            (
                &["--log-level", "loud"][..],
                "--log-level: 'loud' is not one of",
            ),
        ] {
            let err = parse_with(args, &[]).unwrap_err();
            assert!(err.to_string().contains(expected), "{args:?}: {err}");
        }
    }
}
