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
