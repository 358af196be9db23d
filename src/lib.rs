//! vstats: server monitoring for the smallest hosts.
//!
//! The library holds what the agent and the relay share: the wire protocol
//! ([`protocol`]) and the TLS set-up ([`tls`]), plus the agent itself
//! ([`agent`]) so that its binary stays a thin shell over tested code.
#![forbid(unsafe_code)]

pub mod agent;
#[cfg(any(fuzzing, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod protocol;
pub mod relay;
pub mod tls;
mod url;

/// The version every binary reports, taken from `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The values `--log-level` takes, for both binaries' messages.
pub(crate) const LOG_LEVELS: &str = "off, error, warn, info, debug, trace";

/// `--log-level`: absent means `info`; `None` when the text names no level
/// (each binary's `ConfigError` then says so).
pub fn parse_log_level(text: Option<&str>) -> Option<log::LevelFilter> {
    match text {
        None => Some(log::LevelFilter::Info),
        Some(text) => text.parse().ok(),
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
