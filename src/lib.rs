//! vstats: server monitoring for the smallest hosts.
//!
//! The library holds what the agent and the relay share: the wire protocol
//! ([`protocol`]) and the TLS set-up ([`tls`]), plus the agent itself
//! ([`agent`]) so that its binary stays a thin shell over tested code.
#![forbid(unsafe_code)]

pub mod agent;
pub mod protocol;
pub mod relay;
pub mod tls;

/// The version every binary reports, taken from `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A wrong flag or value, worded for the person who typed it; the binaries
/// exit with code 2 on it.
#[derive(Debug, PartialEq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<lexopt::Error> for ConfigError {
    fn from(e: lexopt::Error) -> Self {
        ConfigError(e.to_string())
    }
}

/// `--log-level`; absent means `info`.
pub fn parse_log_level(text: Option<&str>) -> Result<log::LevelFilter, ConfigError> {
    match text {
        None => Ok(log::LevelFilter::Info),
        Some(text) => text.parse().map_err(|_| {
            ConfigError(format!(
                "--log-level: '{text}' is not one of off, error, warn, info, debug, trace"
            ))
        }),
    }
}

/// Logs to stderr, where journald and procd's logd collect them.
pub fn init_logging(level: log::LevelFilter) {
    // Only the first logger installed counts; each binary installs one.
    let _ = simple_logger::SimpleLogger::new().with_level(level).init();
}

/// An environment of just these variables, for configuration tests.
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}
